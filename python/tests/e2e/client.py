"""A client writing through the coordinator while the cluster switches over."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import List, Optional

import psycopg

from .patroni_cluster import Member


@dataclass
class Insert:
    key: int
    started: float
    finished: float
    error: Optional[str] = None


class Writer:
    """A client inserting rows through the coordinator into a group's shards (with the
    emulation, `citus_emulation.shard_<group>`, which a pause of that group blocks), one
    autocommitted statement at a time, until stopped."""

    def __init__(self, coordinator: Member, group: int, tag: str) -> None:
        self.tag = tag
        self.table = f"citus_emulation.shard_{group}"
        self.inserts: List[Insert] = []
        self._stop = threading.Event()
        self._conn = psycopg.connect(coordinator.dsn("e2e-client"), autocommit=True)
        # Bounded: a write blocked longer than this is a failure, not a hang.
        self._conn.execute("SET statement_timeout = '60s'")
        self._thread = threading.Thread(target=self._run, name=f"writer-{tag}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        key = 0
        while not self._stop.is_set():
            key += 1
            started = time.time()
            try:
                self._conn.execute(f"INSERT INTO {self.table} (key, value) VALUES (%s, %s)",
                                   (key, self.tag))
                self.inserts.append(Insert(key, started, time.time()))
            except psycopg.Error as e:
                self.inserts.append(Insert(key, started, time.time(), repr(e)))
                if self._conn.broken:
                    return
            self._stop.wait(0.02)

    def stop(self) -> List[Insert]:
        self._stop.set()
        self._thread.join(70)
        self._conn.close()
        return self.inserts

    def held_across(self, at: float) -> List[Insert]:
        """The inserts that were sent before `at` and finished after it."""
        return [i for i in self.inserts if i.started < at < i.finished]
