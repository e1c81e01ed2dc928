/*
 * citus.c -- the do-nothing shared library of the citus-ha stand-in for the Citus extension.
 *
 * Patroni (and any Citus deployment) puts 'citus' first in shared_preload_libraries; the
 * server refuses to start when no such library exists.  Real Citus cannot be installed from
 * the registries CI may use, so this library only exists to be loadable.  Everything the
 * tests exercise is in the extension's SQL script, generated from tests/sql/citus_emulation.sql.
 *
 * The marker string below is how install.sh tells this stub from a real citus.so, which it
 * never overwrites.
 */
#include "postgres.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

/* Kept in the binary (used below) so that `grep -a` finds it; see install.sh. */
const char citus_ha_stub_marker[] = "citus-ha-citus-stub";

void _PG_init(void);

void
_PG_init(void)
{
	/* Nothing to set up: no hooks, no GUCs, no background workers. */
	(void) citus_ha_stub_marker;
}
