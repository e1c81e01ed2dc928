"""`python -m citus_ha replay FILE` (or `--out-dir DIR FILE...`) and `python -m citus_ha bench`."""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "replay":
        from .replay import main as replay

        return replay(args[1:])
    if args and args[0] == "bench":
        from .bench import main as bench

        return bench(args[1:])
    sys.stderr.write(
        "usage: python -m citus_ha replay FILE [--db URL] [--db-timeout S] [--policy W]\n"
        "       python -m citus_ha replay --out-dir DIR FILE... [same options]\n"
        "       python -m citus_ha bench [--quick] [--json]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
