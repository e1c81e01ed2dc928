"""citus-ha inside Patroni: an unmodified Patroni 4.1 whose every Citus decision is made by the
citus-ha policy component.

Patroni has no plug-in mechanism for its MPP handler: `patroni.postgresql.mpp.get_mpp` finds
the class in its own package. `register()` replaces that lookup (in memory, no file of
Patroni's is touched) so that a `citus` section gives `citus_ha.patroni.Citus`, whose handler
is `citus_ha.patroni.CitusHandler`; the config key stays `citus` and the type `Citus`, as the
rest of Patroni expects.

    import citus_ha.patroni
    citus_ha.patroni.register()        # before Patroni reads its configuration

or, in a service definition, `python -m citus_ha.patroni patroni.yml` in place of
`patroni patroni.yml`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, Mapping, Optional, Union

from ..errors import CitusHaError
from .section import CitusSection, CitusSectionError, NotCitus, parse_group, read_section

log = logging.getLogger("citus_ha.patroni")

#: Patroni releases this drop-in was tested with (their Citus code is the same).
TESTED_PATRONI = ("4.1.4", "4.1.5")
#: Set to 1 to run on a Patroni release not in TESTED_PATRONI.
ALLOW_UNTESTED_ENV = "CITUS_HA_PATRONI_ALLOW_UNTESTED"

_stock_get_mpp: Optional[Callable[[Any], Any]] = None
_strict = True


class UntestedPatroni(CitusHaError):
    """The installed Patroni is not a release the drop-in was tested with."""


def patroni_version() -> str:
    from patroni.version import __version__

    return str(__version__)


def _allowed_by_env() -> bool:
    return os.environ.get(ALLOW_UNTESTED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def get_mpp(config: Union[Mapping[str, Any], Any]) -> Any:
    """Patroni's `get_mpp`, with `citus` sections going to citus-ha.

    A section stock Patroni would take for Citus runs citus-ha; one with a group it would
    misread raises `CitusSectionError`. One stock Patroni would silently ignore (no group, a
    database that is not a string, ...) raises too when registered strictly (the default),
    and otherwise runs without Citus as stock Patroni does, logged as an error.
    """
    assert _stock_get_mpp is not None, "citus_ha.patroni.get_mpp called before register()"
    if "citus" in config:
        section = config["citus"]
        verdict = read_section(section)
        if isinstance(verdict, CitusSection):
            from .handler import Citus

            return Citus({**section, "group": verdict.group})
        if _strict:
            raise CitusSectionError("citus", f"{verdict.reason}; stock Patroni would run "
                                    "with Citus silently turned off")
        log.error("%s: Citus is OFF on this node (as stock Patroni would run it)",
                  verdict.reason)
    return _stock_get_mpp(config)


def register(*, strict: bool = True, allow_untested: Optional[bool] = None) -> None:
    """Makes Patroni, in this interpreter, use citus-ha for its `citus` section. Call it before
    Patroni reads its configuration; calling it again only updates `strict`.

    `strict` (default): a `citus` section that stock Patroni would silently ignore is an
    error. `allow_untested` (default: the `CITUS_HA_PATRONI_ALLOW_UNTESTED` environment
    variable): run on a Patroni release not in `TESTED_PATRONI`, else `UntestedPatroni`.
    """
    global _stock_get_mpp, _strict
    version = patroni_version()
    allowed = _allowed_by_env() if allow_untested is None else allow_untested
    if version not in TESTED_PATRONI:
        if not allowed:
            raise UntestedPatroni(
                f"Patroni {version} is not a release citus-ha's drop-in was tested with "
                f"({', '.join(TESTED_PATRONI)}); set {ALLOW_UNTESTED_ENV}=1 (or pass "
                "--allow-untested-patroni) to run it anyway")
        log.warning("running citus-ha inside Patroni %s, which it was not tested with", version)
    import patroni.postgresql.mpp as mpp

    _strict = strict
    if _stock_get_mpp is None:
        _stock_get_mpp = mpp.get_mpp
        mpp.get_mpp = get_mpp
        # patronictl imports the name at its import; later importers get the new one.
        ctl = sys.modules.get("patroni.ctl")
        if ctl is not None and getattr(ctl, "get_mpp", None) is _stock_get_mpp:
            ctl.get_mpp = get_mpp  # type: ignore[attr-defined]
        log.debug("citus-ha registered as Patroni %s's Citus handler", version)


def unregister() -> None:
    """Gives Patroni its own lookup back (tests)."""
    global _stock_get_mpp, _strict
    if _stock_get_mpp is None:
        return
    import patroni.postgresql.mpp as mpp

    if mpp.get_mpp is get_mpp:
        mpp.get_mpp = _stock_get_mpp
    ctl = sys.modules.get("patroni.ctl")
    if ctl is not None and getattr(ctl, "get_mpp", None) is get_mpp:
        ctl.get_mpp = _stock_get_mpp  # type: ignore[attr-defined]
    _stock_get_mpp = None
    _strict = True


def is_registered() -> bool:
    import patroni.postgresql.mpp as mpp

    return _stock_get_mpp is not None and mpp.get_mpp is get_mpp


def __getattr__(name: str) -> Any:
    # The handler classes import Patroni's; load them only when asked for.
    if name in ("Citus", "CitusHandler"):
        from . import handler

        return getattr(handler, name)
    raise AttributeError(name)


__all__ = ["ALLOW_UNTESTED_ENV", "TESTED_PATRONI", "Citus", "CitusHandler", "CitusSection",
           "CitusSectionError", "NotCitus", "UntestedPatroni", "get_mpp", "is_registered",
           "parse_group", "read_section", "register", "unregister"]
