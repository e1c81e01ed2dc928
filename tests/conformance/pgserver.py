"""A throw-away PostgreSQL 15 for the conformance suite's `--db` pass: initdb into a temporary
directory, postgres on a free loopback port (as the `postgres` user when running as root, which
PostgreSQL insists on), and a template database holding the Citus emulation, so that each
scenario starts from a fresh copy of it."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
TEMPLATE = "conformance_template"
#: How long the server may take to accept connections.
START_TIMEOUT = 30.0

Row = Tuple[int, int, str, int, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scratch() -> Optional[str]:
    """Memory-backed /dev/shm when it has room (the databases are copied and thrown away by
    the dozen; a disk shared with builds makes that slow), else the usual temporary dir."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if st.f_bavail * st.f_frsize > 2 << 30 and os.access("/dev/shm", os.W_OK) \
        else None


class PgServer:
    """A server with trust authentication for `postgres`, stopped by `stop()`."""

    def __init__(self, emulation_sql: str) -> None:
        import psycopg

        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"no PostgreSQL 15 server binaries in {PG_BIN} (set PG_BIN; "
                               "Debian package postgresql-15)")
        self.dir = Path(tempfile.mkdtemp(prefix="citus-ha-conformance-pg-", dir=_scratch()))
        self.user: Optional[str] = None
        if os.getuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                        "postgres", "--no-sync", "-E", "UTF8", "--locale=C"], check=True,
                       user=self.user, cwd=self.dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)
        self.port = _free_port()
        with open(self.dir / "log", "wb") as log:
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-k",
                 str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=100", "-c", "max_wal_size=256MB"],
                stdout=log, stderr=subprocess.STDOUT, user=self.user)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {TEMPLATE}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log_tail()) from None
                time.sleep(0.1)
        with psycopg.connect(self.url(TEMPLATE), autocommit=True) as c:
            c.execute(emulation_sql)
            # The replay contract leaves out Citus's post-commit sync window
            # (docs/scenario-format.md): switched off, as the Rust host's --db test does.
            c.execute("UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0")
        self._admin = psycopg.connect(self.url("postgres"), autocommit=True)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> None:
        """A new database copied from the template."""
        self._admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        # In memory a file copy is cheapest; on a disk, logging the pages beats its checkpoints.
        strategy = "FILE_COPY" if str(self.dir).startswith("/dev/shm/") else "WAL_LOG"
        self._admin.execute(f'CREATE DATABASE "{name}" TEMPLATE {TEMPLATE} STRATEGY {strategy}')

    def rename_database(self, old: str, new: str) -> None:
        if old != new:
            self._admin.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')

    def reset_database(self, name: str, rows: Sequence[Row]) -> None:
        """Puts database `name` back to a fresh copy of the template with `rows` in
        pg_dist_node: the node id sequence after them (at 1 when there are none), no pending
        metadata sync, no shard tables. Cheaper than a new copy, so each scenario's database
        serves every host in turn."""
        import psycopg

        with psycopg.connect(self.url(name), autocommit=True) as c, c.transaction():
            c.execute("TRUNCATE citus_emulation.pending_metadata_sync")
            for (table,) in c.execute(
                    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                    "WHERE schemaname = 'citus_emulation' AND tablename LIKE 'shard\\_%'"
                    ).fetchall():
                c.execute(f"DROP TABLE {table}")
            c.execute("DELETE FROM pg_catalog.pg_dist_node")
            for nodeid, groupid, host, port, role in rows:
                c.execute(
                    "INSERT INTO pg_catalog.pg_dist_node (nodeid, groupid, nodename, nodeport, "
                    "noderole, hasmetadata, metadatasynced) VALUES "
                    "(%s, %s, %s, %s, %s::text::noderole, %s = 'primary', true)",
                    (nodeid, groupid, host, port, role, role))
            if rows:
                c.execute("SELECT setval('pg_catalog.pg_dist_node_nodeid_seq', %s::bigint)",
                          (max(r[0] for r in rows),))
            else:
                c.execute("SELECT setval('pg_catalog.pg_dist_node_nodeid_seq', 1, false)")

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        admin = getattr(self, "_admin", None)
        if admin is not None:
            admin.close()
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            # Immediate shutdown: nothing here is worth a shutdown checkpoint.
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def split_initial_metadata(text: str) -> Optional[Tuple[str, List[Row]]]:
    """A scenario that can run with --db: at most one `metadata` step, right after `config`
    (it becomes SQL before the replay; the line stays, as a comment, so line numbers and
    `note` lines are unchanged). None when it does not qualify."""
    import json

    lines = text.split("\n")
    steps = [i for i, t in enumerate(lines) if t.strip() and not t.strip().startswith("#")]
    rows: List[Row] = []
    out = list(lines)
    for n, i in enumerate(steps):
        try:
            v = json.loads(lines[i])
        except ValueError:
            return None
        if not isinstance(v, dict):
            return None
        if v.get("op") == "metadata":
            if n != 1 or not isinstance(v.get("rows"), list):
                return None
            rows = [tuple(r) for r in v["rows"]]  # type: ignore[misc]
            out[i] = "# metadata inserted with SQL"
    return "\n".join(out), rows
