"""The turn loop an HA manager reuses: heartbeats and worker events in, statements run on the
metadata session, tickets waited for, the state snapshotted after every turn (so a trap loses
nothing), policy swaps between two turns. The clock is passed in: `now` is milliseconds on
any monotonic clock the caller keeps (simulated in replay)."""

from __future__ import annotations

import logging
from typing import Callable, Mapping, Optional, Union

from .errors import PolicyTrap
from .policy import CitusConfig, EventOutcome, Handler, Policy, Queued
from .session import Session
from .statements import Statement, StatementResult
from .view import ClusterView

log = logging.getLogger("citus_ha")

Seen = Callable[[Statement, StatementResult], None]


class Agent:
    """Drives a `Handler` against a `Session`.

    Every method that calls the policy may raise `PolicyTrap`; the handler has then already
    been restored in a fresh instance and the agent keeps serving (the caller logs it).
    """

    def __init__(self, handler: Handler, session: Session, seen: Optional[Seen] = None) -> None:
        self.handler = handler
        self.session = session
        #: Called with every statement run and its result (a log, a metric), unless a turn is
        #: given its own.
        self.seen = seen
        self.turns = 0

    @classmethod
    def start(cls, config: Union[CitusConfig, Mapping[str, object]], name: str,
              connect_url: str, session: Session, policy: Optional[Policy] = None) -> Agent:
        """An agent for this node around the bundled (or given) policy build."""
        policy = policy or Policy.load()
        if not isinstance(config, CitusConfig):
            config = policy.validate_config(config)
        return cls(policy.handler(config, name, connect_url), session)

    def heartbeat(self, now: int, view: ClusterView) -> None:
        self.handler.heartbeat(now, view)

    def event(self, now: int, view: ClusterView, body: Union[str, Mapping[str, object]]
              ) -> EventOutcome:
        return self.handler.event(now, view, body)

    def schedule_reload(self) -> None:
        self.handler.schedule_reload()

    def demote(self) -> None:
        """This coordinator was demoted: its session (and open transaction) is gone."""
        self.session.lose()
        self.handler.demote()

    def run_turn(self, now: int, seen: Optional[Seen] = None) -> None:
        """One turn of the metadata loop: batches until the policy has none. Each statement
        run and its result go to `seen` (or the agent's own `seen`)."""
        seen = seen or self.seen
        try:
            batch = self.handler.poll_statements(now)
            while batch:
                results = self.session.execute(batch)
                if seen is not None:
                    for stmt, r in zip(batch.statements, results.results):
                        seen(stmt, r)
                batch = self.handler.handle_results(now, results)
        except PolicyTrap:
            # The handler was restored from the snapshot of the last turn; what the session
            # holds open is unknown to it now.
            self.session.lose()
            raise
        self.turns += 1
        try:
            self.handler.snapshot()
        except PolicyTrap:
            self.session.lose()
            raise

    def wait_for(self, ticket: int, now: Callable[[], int], deadline: int,
                 sleep: Callable[[float], None]) -> bool:
        """Runs turns until the event's task with `ticket` is processed (True) or `now()`
        passes `deadline` (False): what a `before_demote` answer waits for."""
        while True:
            self.run_turn(now())
            if ticket in self.handler.poll_completed():
                return True
            t = now()
            if t >= deadline:
                return False
            # Until the policy wants a turn (a retry, a deadline), at most until ours.
            wake = self.handler.poll_timeout()
            until = deadline if wake is None else min(wake, deadline)
            sleep(max(0, until - t) / 1000)

    def handle_event(self, now: Callable[[], int], view: ClusterView,
                     body: Union[str, Mapping[str, object]], timeout_ms: int,
                     sleep: Callable[[float], None]) -> EventOutcome:
        """A worker event answered the way Patroni's REST API answers it: queued events run
        at once, and the call returns when the task is processed or `timeout_ms` passed."""
        outcome = self.event(now(), view, body)
        if isinstance(outcome, Queued):
            self.wait_for(outcome.ticket, now, now() + timeout_ms, sleep)
        return outcome

    def swap(self, policy: Policy) -> None:
        """Hot swap between two turns (`SwapRefused`: the running build keeps running)."""
        self.handler.replace(policy)


