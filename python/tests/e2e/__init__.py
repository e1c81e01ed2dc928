"""The real Patroni cluster suite (opt-in: CITUS_HA_E2E=1, which ./dev test sets)."""
