"""The real Patroni cluster the end-to-end cases share, and its logs in every failure report.

The suite is opt-in (it starts eleven processes and takes minutes): it runs when
CITUS_HA_E2E=1, which `./dev test` sets. Once opted in, a missing prerequisite is a failure,
not a skip. The logs are kept (and their directory printed) when a case fails or
CITUS_HA_E2E_KEEP=1; CITUS_HA_E2E_PATRONI=stock runs stock Patroni instead of the drop-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Iterator, List

import pytest

from .patroni_cluster import ETCD_BIN, PG_BIN, Cluster, PatroniCommand
from .processes import RunAs

# Coordinator (group 0) and worker group 1 of two members each; group 2, a single member, is
# the group whose primary is shut down mid-pause in case 5.
GROUPS = {0: 2, 1: 2, 2: 1}


def _missing_prerequisites() -> List[str]:
    missing = []
    if not (PG_BIN / "postgres").exists():
        missing.append(f"PostgreSQL 15 server binaries in {PG_BIN}")
    if shutil.which(ETCD_BIN) is None:
        missing.append(f"etcd ({ETCD_BIN}; Debian package etcd-server)")
    share = subprocess.run([str(PG_BIN / "pg_config"), "--sharedir"], capture_output=True,
                           text=True).stdout.strip()
    if not os.path.exists(os.path.join(share, "extension", "citus.control")):
        missing.append("a citus extension (./dev installs tests/citus_stub when real Citus "
                       "is absent)")
    elif _real_citus():
        # The cases' client writes to citus_emulation.shard_<group>, the emulation's stand-in
        # for a group's shards; a distributed table for real Citus is not written yet.
        missing.append("the citus stub: real Citus is installed, and the cases observe the "
                       "write pause through the emulation's shard tables")
    command = PatroniCommand()
    module = "citus_ha.patroni" if command.kind == "drop-in" else "patroni"
    probe = subprocess.run([sys.executable, "-c", f"import patroni, {module}"],
                           capture_output=True, text=True, **RunAs().popen_kwargs())
    if probe.returncode != 0:
        missing.append(f"{module} importable by the user Patroni runs as with {sys.executable} "
                       f"(pip install './python[test,patroni]'; as root the virtualenv must "
                       f"be readable by the postgres user): {probe.stderr.strip()[-300:]}")
    return missing


def _real_citus() -> bool:
    """A citus.so without the stub's marker (tests/citus_stub/install.sh leaves it alone)."""
    libdir = subprocess.run([str(PG_BIN / "pg_config"), "--pkglibdir"], capture_output=True,
                            text=True).stdout.strip()
    try:
        return b"citus-ha-citus-stub" not in open(os.path.join(libdir, "citus.so"), "rb").read()
    except OSError:
        return False


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if not os.environ.get("CITUS_HA_E2E"):
        pytest.skip("the real Patroni cluster suite runs with CITUS_HA_E2E=1 (./dev test)")
    missing = _missing_prerequisites()
    if missing:
        pytest.fail("the Patroni cluster suite needs: " + "; ".join(missing))
    c = Cluster.prepare(GROUPS)
    request.config.stash[_CLUSTER] = c
    try:
        c.boot()
        yield c
    finally:
        c.stop()
        keep = request.session.testsfailed > 0 or bool(os.environ.get("CITUS_HA_E2E_KEEP"))
        c.remove(keep_logs=keep)
        if keep:
            print(f"\nPatroni cluster logs kept in {c.base}", file=sys.stderr)


_CLUSTER = pytest.StashKey[Cluster]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    c = item.config.stash.get(_CLUSTER, None)
    if c is None or not report.failed:
        return
    for name, text in c.logs():
        report.sections.append((f"log {name}", text))
