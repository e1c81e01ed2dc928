"""A real Patroni Citus cluster on loopback: one etcd, Patroni 4.1.x members that each run their
own PostgreSQL 15, and what the cases observe it with (pg_dist_node, the members' REST API,
PostgreSQL's logs).

Everything listens on 127.0.0.1 on ports picked free at start. Every wait is bounded. PostgreSQL
refuses to run as root, so when the tests run as root Patroni runs as the `postgres` user; its
files live in one scratch directory per run (see `processes.new_run_dir`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import psycopg

from .pglog import LOG_LINE_PREFIX, LogEntry, read_pg_log
from .processes import (
    HOST,
    RunAs,
    free_ports,
    kill_postmaster,
    new_run_dir,
    orphan_guard,
    stop_process,
    wait_for,
)

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
ETCD_BIN = os.environ.get("ETCD_BIN", "etcd")
SCOPE = "e2e"
DATABASE = "citus"
PASSWORD = "e2e-secret"
# Patroni's lower bounds (ttl 20, loop_wait 1, retry_timeout 3) keep
# loop_wait + 2 * retry_timeout <= ttl. ttl is also the workers' before_demote timeout, so it
# is the deadline of a pause that is never finished.
TTL = 20
LOOP_WAIT = 1
RETRY_TIMEOUT = 5


# --- etcd -------------------------------------------------------------------------------------

class Etcd:
    """One etcd 3.4 member (v3 API) on free loopback ports with its own data directory."""

    def __init__(self, base: Path) -> None:
        self.client_port, self.peer_port = free_ports(2)
        self.data = base / "etcd"
        self.log_path = base / "etcd.log"
        peer = f"http://{HOST}:{self.peer_port}"
        client = f"http://{HOST}:{self.client_port}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*orphan_guard(), ETCD_BIN, "--name", "e2e", "--data-dir", str(self.data),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"e2e={peer}", "--initial-cluster-state", "new"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("etcd to answer /health", self._healthy, 20)

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited: {self.log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(f"http://{HOST}:{self.client_port}/health", timeout=2) as r:
            return bool(json.load(r).get("health") == "true")

    def stop(self) -> None:
        stop_process(self.proc, 10)


# --- Patroni members --------------------------------------------------------------------------

@dataclass
class Member:
    """One Patroni member (a node of a Citus group) and the PostgreSQL it runs."""

    name: str
    group: int
    pg_port: int
    api_port: int
    dir: Path
    proc: Optional[subprocess.Popen] = None

    @property
    def config_path(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def patroni_log(self) -> Path:
        return self.dir / "patroni.log"

    @property
    def pg_log(self) -> Path:
        return self.dir / "pglog" / "postgresql.log"

    @property
    def address(self) -> Tuple[str, int]:
        return (HOST, self.pg_port)

    def dsn(self, app: str, dbname: str = DATABASE) -> str:
        return (f"host={HOST} port={self.pg_port} dbname={dbname} user=postgres "
                f"password={PASSWORD} application_name={app} connect_timeout=3")

    def rest(self, path: str = "patroni", timeout: float = 2) -> Dict[str, object]:
        """GET on the member's REST API; Patroni answers 503 with the same body on a replica."""
        url = f"http://{HOST}:{self.api_port}/{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            return json.load(e)

    def state(self) -> Optional[Tuple[str, str]]:
        """(role, state) as the member reports it, or None when its API does not answer."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            info = self.rest()
        except (OSError, ValueError):
            return None
        return str(info.get("role")), str(info.get("state"))

    def config(self, etcd: Etcd) -> Dict[str, object]:
        """Patroni's configuration for this member (JSON is YAML, so it is written as JSON)."""
        coordinator = self.group == 0
        parameters: Dict[str, object] = {
            "max_connections": 30,
            "shared_buffers": "16MB",
            "fsync": "off",
            "wal_log_hints": "on",
            "max_wal_senders": 8,
            "max_replication_slots": 8,
            "unix_socket_directories": str(self.dir),
            "logging_collector": "on",
            "log_directory": str(self.pg_log.parent),
            "log_filename": self.pg_log.name,
            "log_file_mode": "0644",
            "log_timezone": "UTC",
            "log_line_prefix": LOG_LINE_PREFIX,
            # On the coordinator every statement is logged once it has finished, with its
            # parameters: the cases read the metadata transactions from there.
            "log_min_duration_statement": 0 if coordinator else -1,
        }
        return {
            "scope": SCOPE,
            "namespace": "/citus-ha-e2e/",
            "name": self.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{HOST}:{self.api_port}",
                        "connect_address": f"{HOST}:{self.api_port}"},
            "etcd3": {"hosts": [f"{HOST}:{etcd.client_port}"]},
            "citus": {"group": self.group, "database": DATABASE},
            "bootstrap": {
                "dcs": {"ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                        "postgresql": {"use_pg_rewind": True}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "no-sync"],
            },
            "postgresql": {
                "listen": f"{HOST}:{self.pg_port}",
                "connect_address": f"{HOST}:{self.pg_port}",
                "data_dir": str(self.data_dir),
                "bin_dir": str(PG_BIN),
                "pgpass": str(self.dir / "pgpass"),
                # A replica's base backup otherwise waits for a spread checkpoint (minutes).
                "basebackup": [{"checkpoint": "fast"}],
                "authentication": {
                    "superuser": {"username": "postgres", "password": PASSWORD},
                    "replication": {"username": "replicator", "password": PASSWORD},
                    "rewind": {"username": "postgres", "password": PASSWORD},
                },
                "pg_hba": [
                    "local all all trust",
                    f"host replication replicator {HOST}/32 scram-sha-256",
                    f"host all all {HOST}/32 scram-sha-256",
                ],
                "parameters": parameters,
            },
        }


class PatroniCommand:
    """How a member's Patroni is started: the drop-in (`python -m citus_ha.patroni`, the
    default) or stock Patroni (`CITUS_HA_E2E_PATRONI=stock`, to compare)."""

    def __init__(self) -> None:
        self.kind = os.environ.get("CITUS_HA_E2E_PATRONI", "drop-in")
        if self.kind not in ("drop-in", "stock"):
            raise ValueError(f"CITUS_HA_E2E_PATRONI must be 'drop-in' or 'stock', not "
                             f"{self.kind!r}")
        self.bin = Path(sys.executable).parent

    def argv(self, config: Path) -> List[str]:
        if self.kind == "stock":
            return [str(self.bin / "patroni"), str(config)]
        return [sys.executable, "-m", "citus_ha.patroni", str(config)]

    def patronictl(self, config: Path, *args: str) -> List[str]:
        return [str(self.bin / "patronictl"), "-c", str(config), *args]


@dataclass
class Cluster:
    """A coordinator group and worker groups of Patroni members sharing one etcd."""

    base: Path
    run_as: RunAs
    command: PatroniCommand
    etcd: Etcd
    members: List[Member] = field(default_factory=list)

    @classmethod
    def prepare(cls, groups: Dict[int, int]) -> Cluster:
        """Starts etcd and writes the configuration of `groups[g]` members for each Citus
        group g; `boot` starts them."""
        run_as = RunAs()
        command = PatroniCommand()
        base = new_run_dir()
        cluster = cls(base, run_as, command, Etcd(base))
        for g, count in sorted(groups.items()):
            for i in range(count):
                pg_port, api_port = free_ports(2)
                m = Member(f"g{g}m{i}", g, pg_port, api_port, base / f"g{g}m{i}")
                m.dir.mkdir()
                (m.dir / "pglog").mkdir()
                for d in (m.dir, m.dir / "pglog"):
                    run_as.own(d)
                m.config_path.write_text(json.dumps(m.config(cluster.etcd), indent=1))
                cluster.members.append(m)
        return cluster

    def boot(self, timeout: float = 120) -> None:
        """Starts every member and waits until the cluster is healthy. The first member of
        each group starts first, so that it wins the bootstrap race and the member names say
        who leads at first."""
        for m in self.members:
            if m.name.endswith("m0"):
                self.start_member(m)
        wait_for("every group's first member to become primary",
                 lambda: all(m.state() == ("primary", "running")
                             for m in self.members if m.name.endswith("m0")), timeout, 0.5)
        for m in self.members:
            if not m.name.endswith("m0"):
                self.start_member(m)
        self.wait_healthy(timeout)

    def start_member(self, m: Member) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(m.dir), "PYTHONUNBUFFERED": "1"}
        with open(m.patroni_log, "ab") as log:
            m.proc = subprocess.Popen([*orphan_guard(), *self.command.argv(m.config_path)],
                                      cwd=m.dir, env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, **self.run_as.popen_kwargs())

    def stop_member(self, m: Member, timeout: float = 40) -> None:
        """Stops a member's Patroni as a service manager would (SIGTERM: it shuts PostgreSQL
        down, telling the coordinator first when it leads a worker group)."""
        if m.proc is not None:
            stop_process(m.proc, timeout)

    def _timed_stop(self, m: Member) -> None:
        started = time.monotonic()
        self.stop_member(m, 30)
        with open(self.base / "teardown.log", "a") as log:
            log.write(f"{m.name} stopped in {time.monotonic() - started:.1f} s\n")

    def group(self, g: int) -> List[Member]:
        return [m for m in self.members if m.group == g]

    def member(self, name: str) -> Member:
        return next(m for m in self.members if m.name == name)

    def leader(self, g: int) -> Member:
        """The member of group g that reports itself running primary (waits up to 30 s)."""
        return wait_for(f"a running primary in group {g}", lambda: next(
            (m for m in self.group(g) if m.state() == ("primary", "running")), None), 30)

    def expected_rows(self, g: int) -> Optional[Dict[Tuple[str, int], str]]:
        """What pg_dist_node should hold for group g according to the members themselves:
        the running primary's address as `primary`, each running replica's as `secondary`.
        None while the group has no running primary or a member is in transition."""
        rows: Dict[Tuple[str, int], str] = {}
        for m in self.group(g):
            s = m.state()
            if s is None:
                continue
            if s == ("primary", "running"):
                rows[m.address] = "primary"
            elif s == ("replica", "running") or s == ("replica", "streaming"):
                rows[m.address] = "secondary"
            else:
                return None
        if list(rows.values()).count("primary") != 1:
            return None
        return rows

    def pg_dist_node(self) -> Dict[int, Dict[Tuple[str, int], str]]:
        """pg_dist_node as the coordinator's primary has committed it: {group: {addr: role}}."""
        coordinator = self.leader(0)
        with psycopg.connect(coordinator.dsn("e2e-probe"), autocommit=True) as c:
            rows = c.execute("SELECT groupid, nodename, nodeport, noderole::text "
                             "FROM pg_catalog.pg_dist_node").fetchall()
        out: Dict[int, Dict[Tuple[str, int], str]] = {}
        for g, host, port, role in rows:
            out.setdefault(g, {})[(host, port)] = role
        return out

    def wait_rows_follow(self, groups: Sequence[int], timeout: float = 60) -> None:
        """Waits until pg_dist_node holds exactly the expected rows of every group named."""
        def probe() -> Optional[bool]:
            actual = self.pg_dist_node()
            for g in groups:
                want = self.expected_rows(g)
                if want is None or actual.get(g) != want:
                    return None
            return True
        try:
            wait_for(f"pg_dist_node to follow groups {list(groups)}", probe, timeout, 0.3)
        except AssertionError as e:
            want = {g: self.expected_rows(g) for g in groups}
            raise AssertionError(f"{e}\nexpected {want}\nactual {self.pg_dist_node()}") from None

    def wait_healthy(self, timeout: float) -> None:
        """Every member running (replicas streaming) and pg_dist_node following every group."""
        wait_for("every member running", lambda: all(
            m.state() in (("primary", "running"), ("replica", "streaming"),
                          ("replica", "running"))
            for m in self.members if m.proc is not None and m.proc.poll() is None), timeout, 0.5)
        self.wait_rows_follow(sorted({m.group for m in self.members}), timeout)

    def patronictl(self, *args: str, timeout: float = 90) -> str:
        """Runs patronictl with the first member's configuration; fails on a non-zero exit."""
        argv = self.command.patronictl(self.members[0].config_path, *args)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "LANG": "C.UTF-8"})
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}):\n"
                                 f"{out.stdout}\n{out.stderr}")
        return out.stdout

    def handler_statements(self, since: float, until: float = float("inf"),
                           members: Optional[Sequence[Member]] = None) -> List[LogEntry]:
        """The finished statements of the coordinator members' Citus metadata sessions (every
        session in the Citus database that is not one of the tests' own) in [since, until],
        from the logs of `members` (default: every coordinator member)."""
        out: List[LogEntry] = []
        for m in members if members is not None else self.group(0):
            out.extend(e for e in read_pg_log(m.pg_log)
                       if e.db == DATABASE and not e.app.startswith("e2e-") and e.sql
                       and since <= e.at <= until)
        return sorted(out, key=lambda e: e.at)

    def shutdowns(self, m: Member, since: float) -> List[Tuple[float, float]]:
        """(asked, done): when member m's PostgreSQL was asked to shut down since then, and
        when it had shut down."""
        asked: List[float] = []
        done: List[float] = []
        for e in read_pg_log(m.pg_log):
            if e.at < since:
                continue
            if re.match(r"received (fast|smart|immediate) shutdown request", e.msg):
                asked.append(e.at)
            elif e.msg == "database system is shut down" and len(done) < len(asked):
                done.append(e.at)
        return list(zip(asked, done))

    def ready(self, m: Member, since: float) -> List[float]:
        """When member m's PostgreSQL began accepting writes (after a start or a promotion)."""
        return [e.at for e in read_pg_log(m.pg_log)
                if e.at >= since and e.msg == "database system is ready to accept connections"]

    def stop(self) -> None:
        """Stops everything, coordinators first (so that the workers' goodbyes find no
        coordinator to wait for), then any PostgreSQL left behind, then etcd."""
        for coordinators in (True, False):
            procs = [m for m in self.members if (m.group == 0) == coordinators]
            threads = [threading.Thread(target=self._timed_stop, args=(m,)) for m in procs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for m in self.members:
            kill_postmaster(m.data_dir)
        self.etcd.stop()

    def remove(self, keep_logs: bool) -> None:
        """Deletes the data directories; the logs too unless `keep_logs`."""
        if not keep_logs:
            shutil.rmtree(self.base, ignore_errors=True)
            return
        dirs = [self.etcd.data] + [m.data_dir for m in self.members]
        threads = [threading.Thread(target=shutil.rmtree, args=(d, True)) for d in dirs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def logs(self, tail: int = 150) -> Iterator[Tuple[str, str]]:
        """(name, last `tail` lines) of every log the cluster wrote, without the statements of
        Patroni's own monitoring (several a second, in the `postgres` database); the files on
        disk keep everything."""
        paths = [self.etcd.log_path]
        for m in self.members:
            paths += [m.patroni_log, m.pg_log]
        for p in paths:
            if p.exists():
                lines = [line for line in p.read_text(errors="replace").splitlines()
                         if "db=postgres app=Patroni" not in line]
                yield str(p), "\n".join(lines[-tail:])
