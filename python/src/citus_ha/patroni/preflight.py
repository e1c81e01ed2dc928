"""What `python -m citus_ha.patroni` checks before Patroni starts: the `citus` section as
Patroni will read it from its configuration file (or directory, or `PATRONI_CONFIGURATION`)
and its `PATRONI_CITUS_*` environment variables. Read without side effects: Patroni itself
consumes those variables when it loads its configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from .section import check_local_section


def _load(path: Path) -> Dict[str, Any]:
    import yaml
    from patroni.utils import patch_config

    files = ([path] if path.is_file() else
             sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml") and p.is_file()))
    config: Dict[str, Any] = {}
    for f in files:
        loaded = yaml.safe_load(f.read_text())
        if isinstance(loaded, dict):
            patch_config(config, loaded)
    return config


def local_configuration(configfile: Optional[str]) -> Optional[Dict[str, Any]]:
    """Patroni's local configuration as it will load it (None: it will find none here)."""
    import yaml
    from patroni.utils import parse_int

    config: Optional[Dict[str, Any]] = None
    if configfile and (Path(configfile).is_file() or Path(configfile).is_dir()):
        config = _load(Path(configfile))
    elif not configfile and os.environ.get("PATRONI_CONFIGURATION"):
        loaded = yaml.safe_load(os.environ["PATRONI_CONFIGURATION"])
        config = loaded if isinstance(loaded, dict) else None
    env: Dict[str, Any] = {}
    if "PATRONI_CITUS_GROUP" in os.environ:
        group = parse_int(os.environ["PATRONI_CITUS_GROUP"])
        if group is not None:
            env["group"] = group
    if "PATRONI_CITUS_DATABASE" in os.environ:
        env["database"] = os.environ["PATRONI_CITUS_DATABASE"]
    if env:
        config = config or {}
        section = config.get("citus")
        config["citus"] = {**(section if isinstance(section, dict) else {}), **env}
    return config


def configfile_of(argv: List[str]) -> Optional[str]:
    """Patroni's positional `configfile` argument, if given."""
    positional = [a for a in argv if not a.startswith("-")]
    return positional[-1] if positional else None


def check(argv: List[str]) -> None:
    """Raises `CitusSectionError` for a `citus` section Patroni would misread or drop."""
    if any(a.startswith("--generate") for a in argv) or "--version" in argv:
        return
    config = local_configuration(configfile_of(argv))
    if config is not None and "citus" in config:
        check_local_section(config["citus"])
