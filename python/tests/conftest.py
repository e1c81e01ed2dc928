"""Shared fixtures: the repository's paths, the test builds of the policy, and a throw-away
PostgreSQL 15 with the Citus emulation (started as tests/harness starts it)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "scenarios"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def citus_ha_bin() -> Optional[Path]:
    """The Rust host built by cargo (./dev test builds it before running pytest)."""
    for p in (os.environ.get("CITUS_HA_BIN"), ROOT / "target/debug/citus-ha",
              ROOT / "target/release/citus-ha"):
        if p and Path(p).is_file():
            return Path(p)
    return None


_VARIANTS: dict = {}


def policy_variant(features: str) -> Path:
    """A test build of the policy (`fault-loop`, `fault-alloc`, ...), built by cargo into
    target/guest-variants exactly as the Rust sandbox tests build theirs (cargo rebuilds it
    when the policy changed), once per test session."""
    if features not in _VARIANTS:
        out = subprocess.run(["cargo", "run", "--quiet", "-p", "citus-ha-guest-build", "--example",
                              "guest_variant", "--", features], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        _VARIANTS[features] = Path(out.stdout.strip())
    return _VARIANTS[features]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """initdb into a temporary directory, postgres on a free loopback port (as the `postgres`
    user when running as root), a `citus` database with the Citus emulation."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL 15 server binaries in {PG_BIN}")
        self.dir = Path(tempfile.mkdtemp(prefix="citus-ha-py-pg-"))
        self.data = self.dir / "data"
        self.user: Optional[str] = None
        if os.getuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                   "postgres", "--no-sync", "-E", "UTF8", "--locale=C"])
        self.port = _free_port()
        log = open(self.dir / "log", "wb")  # noqa: SIM115 - the server writes it until stop()
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k",
             str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "max_prepared_transactions=10"],
            stdout=log, stderr=subprocess.STDOUT, user=self.user)
        log.close()
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as c:
                    c.execute("CREATE DATABASE citus")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError((self.dir / "log").read_text()) from None
                time.sleep(0.1)
        sql = (ROOT / "tests" / "sql" / "citus_emulation.sql").read_text()
        with psycopg.connect(self.url("citus"), autocommit=True) as c:
            c.execute(sql)
            c.execute("UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0")

    def _run(self, cmd: list) -> None:
        subprocess.run(cmd, check=True, user=self.user, cwd=self.dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer()
    try:
        yield server
    finally:
        server.stop()
