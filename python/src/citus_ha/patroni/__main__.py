"""`python -m citus_ha.patroni [--allow-untested-patroni] PATRONI_ARGS...`: Patroni, with
citus-ha making its Citus decisions. Everything but the one flag goes to Patroni's own `main`
(`patroni.yml`, `--validate-config`, `--version`, ...)."""

from __future__ import annotations

import sys
from typing import List, Optional

from . import ALLOW_UNTESTED_ENV, UntestedPatroni, register
from .section import CitusSectionError

FLAG = "--allow-untested-patroni"


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    allow = FLAG in args
    args = [a for a in args if a != FLAG]
    try:
        register(allow_untested=True if allow else None)
    except UntestedPatroni as e:
        print(f"citus-ha: {e}", file=sys.stderr)
        return 2
    from patroni.__main__ import main as patroni_main

    from . import preflight

    sys.argv = ["patroni", *args]
    try:
        preflight.check(args)
        patroni_main()
    except CitusSectionError as e:
        print(f"citus-ha: refusing to start Patroni: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["ALLOW_UNTESTED_ENV", "main"]
