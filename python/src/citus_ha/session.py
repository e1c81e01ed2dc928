"""Where the policy's statements run: the coordinator's metadata session.

A `Session` runs a batch in order and stops after the first statement that fails (having
discarded the open transaction, as the policy expects). `PgSession` is a real coordinator
through psycopg 3 on one dedicated connection, every value a bound parameter; `SimSession` is
the in-memory simulator component; `FaultySession` injects failures (replay's `fail` step).
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from typing import Any, List, Optional, Protocol, Tuple

from . import sql
from .statements import (
    KINDS,
    Added,
    AddNode,
    Batch,
    Begin,
    Commit,
    Done,
    Failed,
    LoadMetadata,
    Metadata,
    NodeRole,
    PgDistRow,
    RemoveNode,
    Results,
    Rollback,
    Statement,
    StatementResult,
    UpdateNode,
    ends_batch,
    kind,
    statement_line,
)


class Session(Protocol):
    """Runs the policy's statements."""

    def execute(self, batch: Batch) -> Results:
        """Runs the batch in order, up to and including the first statement that fails."""
        ...

    def rows(self) -> List[PgDistRow]:
        """pg_dist_node as this session sees it (uncommitted changes included)."""
        ...

    def lose(self) -> None:
        """Drops the session: an open transaction is rolled back by the server."""
        ...


class SimSession:
    """The simulator component as a session: the batch's text goes in and the results' text
    comes out, neither read in Python."""

    def __init__(self, simulator: Optional[Any] = None) -> None:
        from .sim import Simulator

        self.sim = simulator if simulator is not None else Simulator.load()

    def execute(self, batch: Batch) -> Results:
        return Results(text=self.sim.execute(batch.text))

    def rows(self) -> List[PgDistRow]:
        return self.sim.rows()

    def set_rows(self, rows: List[PgDistRow]) -> None:
        self.sim.set_rows(rows)

    def lose(self) -> None:
        self.sim.lose_session()


class FaultySession:
    """Wraps a session: the next statement of an armed kind fails with the given error, has
    no effect, and the session is lost (replay's `fail` step)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._armed: List[Tuple[str, str]] = []

    def arm(self, statement_kind: str, error: str) -> None:
        if statement_kind not in KINDS:
            raise ValueError(f"unknown statement kind {statement_kind!r}")
        self._armed.append((statement_kind, error))

    def execute(self, batch: Batch) -> Results:
        if not self._armed:
            return self.inner.execute(batch)
        out: List[StatementResult] = []
        for stmt in batch.statements:
            k = kind(stmt)
            hit = next((i for i, (a, _) in enumerate(self._armed) if a == k), None)
            if hit is not None:
                _, error = self._armed.pop(hit)
                self.inner.lose()
                out.append(Failed(error, None, True))
                break
            r = self.inner.execute(Batch(statement_line(stmt) + "\n")).results[0]
            out.append(r)
            if ends_batch(r):
                break
        return Results(results=out)

    def rows(self) -> List[PgDistRow]:
        return self.inner.rows()

    def lose(self) -> None:
        self.inner.lose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)




def seconds_text(s: float) -> str:
    """Seconds as the Rust host prints them (`10`, `0.5`), so messages read alike."""
    return str(int(s)) if float(s).is_integer() else repr(float(s))


class PgSession:
    """A real coordinator: one dedicated psycopg connection to its Citus database, in
    autocommit mode (transactions are the policy's BEGIN/COMMIT), with the same session
    settings as the Rust host (no statement or idle-in-transaction timeout: a pause may last
    as long as a switchover). Every value is a bound parameter. After losing the connection it
    reconnects on the next statement, with backoff.

    `connect_timeout` bounds connecting; `statement_timeout` bounds each statement on the
    client side (a forced update gets its cooldown on top), as the Rust host's `--db-timeout`
    does: on expiry the connection is shut down, so an open transaction dies with it and the
    policy sees a lost session, never a frozen one. None waits without a bound."""

    def __init__(self, conninfo: str, connect_timeout: float = 10.0,
                 statement_timeout: Optional[float] = 10.0) -> None:
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._conn: Any = None
        self._in_txn = False
        self._backoff = 0.0

    def _connect(self) -> Any:
        import psycopg

        if self._conn is not None and self._conn.closed:
            self._conn = None
            if self._in_txn:
                # The transaction died with the connection: running the statement on a fresh
                # one would run it unpaused and autocommitted. Report the loss instead.
                self._in_txn = False
                raise _Lost("the connection to the coordinator was lost; "
                            "its open transaction is gone")
        if self._conn is None:
            if self._backoff:
                time.sleep(self._backoff)
            try:
                # libpq takes whole seconds (at least 2); the kernel settings are the Rust
                # host's: a vanished peer is noticed in about idle + interval x count.
                self._conn = psycopg.connect(
                    self.conninfo, autocommit=True, application_name="citus-ha",
                    connect_timeout=max(2, math.ceil(self.connect_timeout)),
                    keepalives=1, keepalives_idle=5, keepalives_interval=2,
                    keepalives_count=3, tcp_user_timeout=int(self.connect_timeout * 1000),
                    options="-c statement_timeout=0 -c idle_in_transaction_session_timeout=0")
            except psycopg.Error as e:
                self._backoff = min(max(self._backoff * 2, 0.1), 1.0)
                raise _Lost(f"cannot connect to the coordinator: {e}") from e
            self._backoff = 0.0
        return self._conn

    def _bound(self, stmt: Statement) -> Optional[float]:
        if self.statement_timeout is None:
            return None
        if isinstance(stmt, UpdateNode) and stmt.force:
            return self.statement_timeout + max(stmt.cooldown_ms, 0) / 1000
        return self.statement_timeout

    def _run_bounded(self, stmt: Statement) -> StatementResult:
        bound = self._bound(stmt)
        conn = self._connect()
        if bound is None:
            return self._run(conn, stmt)
        expired = threading.Event()

        def expire() -> None:
            # Shut the socket down under the waiting call: it fails at once and the server
            # rolls back whatever the connection had open.
            expired.set()
            try:
                with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
                    s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(bound, expire)
        timer.daemon = True
        timer.start()
        try:
            return self._run(conn, stmt)
        except Exception:
            if expired.is_set():
                self._drop()
                raise _Lost(f"the coordinator did not answer within {seconds_text(bound)} s; "
                            "the connection was dropped (an open transaction is rolled back "
                            "by the server)") from None
            raise
        finally:
            timer.cancel()

    def _run(self, conn: Any, stmt: Statement) -> StatementResult:
        with conn.cursor() as cur:
            if isinstance(stmt, LoadMetadata):
                cur.execute(sql.LOAD_METADATA)
                return Metadata(tuple(PgDistRow(r[0], r[1], r[2], r[3], NodeRole(r[4]))
                                      for r in cur.fetchall()))
            if isinstance(stmt, (Begin, Commit, Rollback)):
                cur.execute({Begin: "BEGIN", Commit: "COMMIT", Rollback: "ROLLBACK"}[type(stmt)])
                return Done()
            if isinstance(stmt, AddNode):
                cur.execute(sql.ADD_NODE, (stmt.host, stmt.port, stmt.groupid, stmt.role.value))
                row = cur.fetchone()
                return Added(int(row[0]))
            if isinstance(stmt, UpdateNode):
                cur.execute(sql.UPDATE_NODE, (stmt.nodeid, stmt.host, stmt.port, stmt.force,
                                          stmt.cooldown_ms))
                return Done()
            if isinstance(stmt, RemoveNode):
                cur.execute(sql.REMOVE_NODE, (stmt.host, stmt.port))
                return Done()
        raise TypeError(f"not a statement: {stmt!r}")

    def _one(self, stmt: Statement) -> StatementResult:
        import psycopg

        try:
            r = self._run_bounded(stmt)
        except _Lost as e:
            self._conn = None
            self._in_txn = False
            return Failed(str(e), None, True)
        except psycopg.Error as e:
            conn = self._conn
            lost = conn is None or conn.closed or (isinstance(e, psycopg.OperationalError) and \
                conn.closed)
            diag = getattr(e, "diag", None)
            message = (diag.message_primary if diag is not None and diag.message_primary
                       else str(e).strip())
            sqlstate = getattr(e, "sqlstate", None)
            if lost:
                self._conn = None
            elif self._in_txn or isinstance(stmt, Commit):
                # The transaction is aborted; end it so the session is usable again.
                try:
                    conn.execute("ROLLBACK")
                except psycopg.Error:
                    self._drop()
            self._in_txn = False
            return Failed(message, sqlstate, lost)
        if isinstance(stmt, Begin):
            self._in_txn = True
        elif isinstance(stmt, (Commit, Rollback)):
            self._in_txn = False
        return r

    def execute(self, batch: Batch) -> Results:
        out: List[StatementResult] = []
        for stmt in batch.statements:
            r = self._one(stmt)
            out.append(r)
            if ends_batch(r):
                break
        return Results(results=out)

    def rows(self) -> List[PgDistRow]:
        r = self._one(LoadMetadata())
        if isinstance(r, Metadata):
            return list(r.rows)
        assert isinstance(r, Failed)
        raise RuntimeError(f"cannot read pg_dist_node: {r.message}")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def lose(self) -> None:
        # Closing the connection makes the server roll back what was open.
        self._drop()
        self._in_txn = False

    def close(self) -> None:
        self.lose()


class _Lost(Exception):
    pass
