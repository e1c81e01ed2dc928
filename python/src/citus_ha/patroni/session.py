"""The policy's statements on Patroni's own connection to the Citus database.

The connection is the one the reference handler uses: Patroni's connection pool entry
`citus`, with Patroni's connection parameters (superuser, host, port, TLS, as reloaded) and
`dbname` set to the Citus database, in autocommit mode (a pause is the policy's BEGIN ..
COMMIT). Every value is a bound parameter. Unlike the reference, no statement runs unbounded:
`statement_timeout` is set on every new connection (`ttl`, which also bounds a switchover's
pause), while `idle_in_transaction_session_timeout` stays off so that an open pause lasts
exactly as long as the policy keeps it.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional

from .. import sql
from ..statements import (
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
)

log = logging.getLogger("citus_ha.patroni")

#: The name of the connection in Patroni's pool: the reference handler's.
POOL_NAME = "citus"

_TIMEOUT_SQL = "SELECT pg_catalog.set_config('statement_timeout', %s::text, false)"


def sqlstate(e: BaseException) -> Optional[str]:
    """The SQLSTATE of a psycopg 3 or psycopg2 error, if it has one."""
    for attr in ("sqlstate", "pgcode"):
        v = getattr(e, attr, None)
        if isinstance(v, str):
            return v
    diag = getattr(e, "diag", None)
    v = getattr(diag, "sqlstate", None)
    return v if isinstance(v, str) else None


def _message(e: BaseException) -> str:
    diag = getattr(e, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if isinstance(primary, str) and primary:
        return primary
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        return f"{e}: {str(cause).strip()}"
    return str(e).strip() or type(e).__name__


def _is_driver_error(e: BaseException) -> bool:
    """An error of psycopg 3 or psycopg2, whichever Patroni runs on."""
    return type(e).__module__.split(".")[0] in ("psycopg", "psycopg2")


class PatroniSession:
    """A `Session` over a Patroni `NamedConnection` (`connection_pool.get(...)`): `query(sql,
    *params)`, `get()` (the live psycopg connection, reconnecting) and `close()`."""

    def __init__(self, connection: Any, statement_timeout_ms: int) -> None:
        self._nc = connection
        self.statement_timeout_ms = statement_timeout_ms
        #: The psycopg connection the settings were applied to, and the one a BEGIN ran on.
        self._prepared: Any = None
        self._txn_conn: Any = None

    def _conn(self) -> Any:
        """The live connection, set up; raises `_Lost` if an open transaction died with the
        connection it ran on (running on would run the rest unpaused, autocommitted)."""
        try:
            conn = self._nc.get()
        except Exception as e:
            if not _is_driver_error(e):
                raise
            self._txn_conn = None
            raise _Lost(f"cannot connect to the coordinator: {_message(e)}") from e
        if self._txn_conn is not None and conn is not self._txn_conn:
            self._txn_conn = None
            raise _Lost("the connection to the coordinator was lost; its open transaction is gone")
        if conn is not self._prepared:
            self._nc.query(_TIMEOUT_SQL, f"{int(self.statement_timeout_ms)}ms")
            self._prepared = conn
        return conn

    def set_statement_timeout(self, ms: int) -> None:
        """Used from the next new connection, and at once on the live one between statements."""
        if ms != self.statement_timeout_ms:
            self.statement_timeout_ms = ms
            self._prepared = None

    def _run(self, stmt: Statement) -> StatementResult:
        conn = self._conn()
        q = self._nc.query
        if isinstance(stmt, LoadMetadata):
            rows = q(sql.LOAD_METADATA)
            return Metadata(tuple(PgDistRow(int(r[0]), int(r[1]), str(r[2]), int(r[3]),
                                            NodeRole(r[4])) for r in rows))
        if isinstance(stmt, Begin):
            q("BEGIN")
            self._txn_conn = conn
            return Done()
        if isinstance(stmt, (Commit, Rollback)):
            self._txn_conn = None
            q("COMMIT" if isinstance(stmt, Commit) else "ROLLBACK")
            return Done()
        if isinstance(stmt, AddNode):
            rows = q(sql.ADD_NODE, stmt.host, stmt.port, stmt.groupid, stmt.role.value)
            return Added(int(rows[0][0]))
        if isinstance(stmt, UpdateNode):
            q(sql.UPDATE_NODE, stmt.nodeid, stmt.host, stmt.port, stmt.force, stmt.cooldown_ms)
            return Done()
        if isinstance(stmt, RemoveNode):
            q(sql.REMOVE_NODE, stmt.host, stmt.port)
            return Done()
        raise TypeError(f"not a statement: {stmt!r}")

    def _one(self, stmt: Statement) -> StatementResult:
        from patroni.exceptions import PostgresConnectionException

        try:
            return self._run(stmt)
        except _Lost as e:
            return Failed(str(e), None, True)
        except PostgresConnectionException as e:
            # Patroni closed the connection: the server rolls back what was open.
            self._lose()
            return Failed(_message(e), sqlstate(e.__cause__ or e), True)
        except Exception as e:  # psycopg's errors (psycopg2 or psycopg 3, whichever Patroni runs)
            if not _is_driver_error(e):
                raise
            in_txn = self._txn_conn is not None or isinstance(stmt, Commit)
            self._txn_conn = None
            if in_txn:
                # The transaction is aborted; end it so the session is usable again.
                try:
                    self._nc.query("ROLLBACK")
                except Exception:
                    self._lose()
                    return Failed(_message(e), sqlstate(e), True)
            return Failed(_message(e), sqlstate(e), False)

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

    def _lose(self) -> None:
        self._txn_conn = None
        self._prepared = None
        try:
            self._nc.close()
        except Exception as e:  # closing a broken connection must not stop the owner
            log.debug("closing the citus connection: %r", e)

    def lose(self) -> None:
        """Closes the connection: the server rolls back an open transaction."""
        self._lose()


class _Lost(Exception):
    pass
