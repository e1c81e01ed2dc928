"""The owner: the one place that calls the policy component and runs its statements.

A wasmtime Store is not to be entered from two threads, and Patroni's heartbeat loop must
never wait on the database, so Patroni's threads only hand inputs over: the latest DCS view
(older ones still waiting are dropped), worker events, demote and reload, and calls of the
policy's pure functions. From the first heartbeat on, a coordinator's owner thread applies
them in order, runs the turn they call for on the metadata session, answers the callers
waiting for an event's task, and wakes on its own for the policy's timers.

Before there is an owner thread (a worker never needs one; a coordinator not yet leading has
no state machine to run) a pure call (GUCs, slots, the bootstrap plan) runs on the thread
that asks, under the owner's lock, so that still only one thread at a time is in the Store.

Every wait has a bound: the owner's (the policy's next timer, `loop_wait`, the view's age
limit `ttl`) and each caller's (its own timeout).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Generic, List, Optional, Tuple, TypeVar, Union

from ..errors import CitusHaError, InvalidInput, PolicyTrap
from ..policy import CitusConfig, Discarded, EventOutcome, Handler, Policy, Queued
from ..session import Session
from ..statements import Batch, Failed, Results, statement_line
from ..view import GroupBodies

log = logging.getLogger("citus_ha.patroni")

T = TypeVar("T")
#: The DCS view at the moment it was handed over, written out on the owner's thread.
ViewSource = Callable[[], GroupBodies]


class OwnerUnavailable(CitusHaError):
    """The owner cannot serve: its policy did not load, or it was stopped."""


class OwnerTimeout(CitusHaError):
    """The owner did not answer within the caller's bound."""


@dataclass(frozen=True)
class Timing:
    """Patroni's `ttl`, `loop_wait` and `retry_timeout`, in seconds."""

    ttl: float = 30.0
    loop_wait: float = 10.0
    retry_timeout: float = 10.0


class Reply(Generic[T]):
    """An answer one thread waits for and another gives."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._value: Optional[T] = None
        self._error: Optional[BaseException] = None

    def set(self, value: T) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """True once answered, False when `timeout` seconds passed first."""
        return self._done.wait(max(0.0, timeout))

    def result(self, timeout: float) -> T:
        if not self._done.wait(max(0.0, timeout)):
            raise OwnerTimeout(f"no answer within {timeout:.1f} s")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


@dataclass
class _Heartbeat:
    view: ViewSource
    connect_url: str
    timing: Timing


@dataclass
class _Event:
    view: ViewSource
    body: Any
    reply: Reply[EventOutcome]
    #: How long the caller waits (s): a task still unfinished then is no longer waited for.
    wait: float


@dataclass
class _Call:
    fn: Callable[[Policy], Any]
    reply: Reply[Any]


@dataclass
class _Demote:
    pass


@dataclass
class _Reload:
    pass


@dataclass
class _Stop:
    pass


_Message = Union[_Event, _Call, _Demote, _Reload, _Stop]


@dataclass
class _Waiter:
    reply: Reply[EventOutcome]
    outcome: EventOutcome
    deadline: float


@dataclass
class OwnerStats:
    """What the owner did (for tests, logs and the bench)."""

    heartbeats: int = 0
    events: int = 0
    turns: int = 0
    statements: int = 0
    traps: int = 0
    stale_resets: int = 0
    #: Owner-thread time (s) of the last heartbeat: writing the view, the policy's call and
    #: the turn it called for.
    last_heartbeat_seconds: float = 0.0
    errors: List[str] = field(default_factory=list)


class Owner:
    """One thread owning the policy (its `Policy` and, on a coordinator, its `Handler`) and
    the metadata session. Every public method but `call` returns at once; `call` waits for
    the answer up to its timeout."""

    def __init__(self, config: CitusConfig, name: str, connect_url: str,
                 session: Optional[Session], *, timing: Timing = Timing(),
                 load_policy: Callable[[], Policy] = Policy.load,
                 clock: Callable[[], float] = time.monotonic,
                 seen: Optional[Callable[[str, str], None]] = None) -> None:
        self.config = config
        self.name = name
        self.session = session
        self.timing = timing
        self.stats = OwnerStats()
        self._connect_url = connect_url
        self._load_policy = load_policy
        self._clock = clock
        #: Called on the owner's thread with each statement line run and its result line.
        self._seen = seen
        self._cond = threading.Condition()
        self._inbox: Deque[_Message] = deque()
        self._heartbeat: Optional[_Heartbeat] = None
        self._thread: Optional[threading.Thread] = None
        self._unavailable: Optional[OwnerUnavailable] = None
        self._policy: Optional[Policy] = None
        self._handler: Optional[Handler] = None
        self._waiters: Dict[int, _Waiter] = {}
        self._last_heartbeat: Optional[float] = None
        self._stale = False
        #: True while the owner waits for input (under `_cond`).
        self._waiting = False
        #: Held by whoever is in the policy: the owner thread while it works, or a caller
        #: making a pure call before there is an owner thread.
        self._lock = threading.RLock()

    # ----- any thread ---------------------------------------------------------------------

    @property
    def thread(self) -> Optional[threading.Thread]:
        return self._thread

    def start(self) -> None:
        """Starts the owner thread (once): from then on it makes every call."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="citus-ha-owner",
                                                daemon=True)
                self._thread.start()

    def heartbeat(self, view: ViewSource, connect_url: str, timing: Timing) -> None:
        """The HA loop's DCS view, this node's connection URL and Patroni's timing now. A view
        still waiting is replaced: only the latest one matters."""
        with self._cond:
            self._heartbeat = _Heartbeat(view, connect_url, timing)
            self._cond.notify()

    def event(self, view: ViewSource, body: Any, wait: float) -> Reply[EventOutcome]:
        """A worker's event; the reply comes once its task was processed (or at once when
        nothing was queued). `wait` is how long the caller will wait for it."""
        reply: Reply[EventOutcome] = Reply()
        self._put(_Event(view, body, reply, wait), reply)
        return reply

    @property
    def running(self) -> bool:
        """True once the owner thread was started (by the first heartbeat)."""
        return self._thread is not None

    def demote(self) -> None:
        """This coordinator stops leading: the session and every pending view are dropped.
        (Before the owner thread runs there is nothing to drop.)"""
        with self._cond:
            if self._thread is None:
                return
            self._heartbeat = None
            self._inbox.append(_Demote())
            self._cond.notify()

    def reload(self) -> None:
        """pg_dist_node must be read again before the next decision (a state machine not
        started yet reads it first anyway)."""
        with self._cond:
            if self._thread is None:
                return
            self._inbox.append(_Reload())
            self._cond.notify()

    def call(self, fn: Callable[[Policy], T], timeout: float) -> T:
        """Runs `fn` with the policy: on the owner thread between two statements once it runs,
        else on this thread under the owner's lock. Raises what `fn` raised, or `OwnerTimeout`
        after `timeout` seconds."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            if self._unavailable is not None:
                raise self._unavailable
            if not self._lock.acquire(timeout=max(0.0, timeout)):
                raise OwnerTimeout(f"the policy was busy for {timeout:.1f} s")
            try:
                # Checked again under the lock: the thread may have started meanwhile.
                if self._thread is None or not self._thread.is_alive():
                    return fn(self._loaded())
            finally:
                self._lock.release()
        reply: Reply[T] = Reply()
        self._put(_Call(fn, reply), reply)
        return reply.result(timeout)

    def _loaded(self) -> Policy:
        """The policy, loaded on first use (under the owner's lock)."""
        if self._policy is None:
            try:
                self._policy = self._load_policy()
                self._policy.validate_config({"group": self.config.group,
                                              "database": self.config.database})
            except Exception as e:
                self._policy = None
                why = OwnerUnavailable(f"the citus-ha policy did not start: {e}")
                log.error("%s", why)
                raise why from e
        return self._policy

    def stop(self, timeout: float = 5.0) -> None:
        """Ends the thread after the message it is on (closing the session); waits for it up
        to `timeout` seconds (0: does not wait)."""
        with self._cond:
            self._inbox.append(_Stop())
            self._cond.notify()
            thread = self._thread
        if timeout > 0 and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """True once the owner waits with nothing left to do (tests, the bench); polls."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self._waiting and not self._inbox and self._heartbeat is None:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def _put(self, message: _Message, reply: Reply[Any]) -> None:
        with self._cond:
            if self._unavailable is not None:
                reply.fail(self._unavailable)
                return
            self._inbox.append(message)
            self._cond.notify()

    # ----- the owner's thread -------------------------------------------------------------

    def _ms(self) -> int:
        return int(self._clock() * 1000)

    def _run(self) -> None:
        try:
            with self._lock:
                policy = self._loaded()
                handler = (policy.handler(self.config, self.name, self._connect_url)
                           if self.config.is_coordinator else None)
        except Exception as e:
            why = e if isinstance(e, OwnerUnavailable) else OwnerUnavailable(
                f"the citus-ha policy did not start: {e}")
            with self._cond:
                self._unavailable = why
                pending = list(self._inbox)
                self._inbox.clear()
            for m in pending:
                if isinstance(m, (_Event, _Call)):
                    m.reply.fail(why)
            return
        self._policy, self._handler = policy, handler
        log.info("citus-ha policy %s (%s) owns %s", policy.version(), policy.label,
                 "pg_dist_node" if handler is not None else "this worker's Citus decisions")
        while True:
            try:
                if not self._iteration():
                    break
            except Exception as e:  # the owner must outlive any bug: log, drop the session
                log.exception("citus-ha owner: %r", e)
                self.stats.errors.append(repr(e))
                self._lose_session()
        if self.session is not None:
            self.session.lose()
        with self._cond:
            self._unavailable = OwnerUnavailable("the citus-ha owner was stopped")
            pending = list(self._inbox)
            self._inbox.clear()
        for m in pending:
            if isinstance(m, (_Event, _Call)):
                m.reply.fail(self._unavailable)
        for w in self._waiters.values():
            w.reply.fail(self._unavailable)

    def _next_wake(self) -> float:
        """When to run a turn with no new input (on the owner's clock, seconds)."""
        now = self._clock()
        wake = now + max(0.05, self.timing.loop_wait)
        h = self._handler
        if h is not None:
            try:
                t = h.poll_timeout()
            except PolicyTrap as e:
                self._trapped(e)
                t = None
            if t is not None:
                wake = min(wake, t / 1000)
            if self._last_heartbeat is not None and not self._stale:
                wake = min(wake, self._last_heartbeat + self.timing.ttl)
        for w in self._waiters.values():
            wake = min(wake, w.deadline)
        return wake

    def _iteration(self) -> bool:
        wake = self._next_wake()
        with self._cond:
            while not self._inbox and self._heartbeat is None:
                left = wake - self._clock()
                if left <= 0:
                    break
                self._waiting = True
                self._cond.wait(left)
                self._waiting = False
            messages = list(self._inbox)
            self._inbox.clear()
            heartbeat, self._heartbeat = self._heartbeat, None
        with self._lock:
            for m in messages:
                if isinstance(m, _Stop):
                    return False
                self._apply(m)
            if heartbeat is not None:
                t = time.perf_counter()
                self._apply_heartbeat(heartbeat)
                self._turn()
                self.stats.last_heartbeat_seconds = time.perf_counter() - t
            else:
                self._turn()
            self._expire()
        return True

    def _apply(self, m: _Message) -> None:
        h = self._handler
        if isinstance(m, _Call):
            self._serve(m)
        elif isinstance(m, _Event):
            self.stats.events += 1
            if h is None:
                m.reply.set(Discarded("this node is not the coordinator"))
                return
            try:
                outcome = h.event(self._ms(), m.view(), m.body)
            except PolicyTrap as e:
                self._trapped(e)
                m.reply.fail(e)
                return
            except InvalidInput as e:
                log.warning("event %s refused: %s", m.body, e)
                m.reply.fail(e)
                return
            if isinstance(outcome, Queued):
                self._waiters[outcome.ticket] = _Waiter(m.reply, outcome,
                                                        self._clock() + m.wait)
            else:
                m.reply.set(outcome)
        elif isinstance(m, _Demote):
            self._last_heartbeat = None
            self._lose_session()
            if h is not None:
                self._guard(h.demote)
            for w in self._waiters.values():
                w.reply.set(Discarded("this coordinator was demoted"))
            self._waiters.clear()
        elif isinstance(m, _Reload) and h is not None:
            self._guard(h.schedule_reload)

    def _apply_heartbeat(self, hb: _Heartbeat) -> None:
        self.timing = hb.timing
        setter = getattr(self.session, "set_statement_timeout", None)
        if setter is not None:
            setter(int(hb.timing.ttl * 1000))
        h = self._handler
        if h is None:
            return
        if hb.connect_url != self._connect_url:
            try:
                h.set_connect_url(hb.connect_url)
                self._connect_url = hb.connect_url
            except InvalidInput as e:
                log.error("this node's connection URL %r: %s", hb.connect_url, e)
            except PolicyTrap as e:
                self._trapped(e)
        self.stats.heartbeats += 1
        self._last_heartbeat = self._clock()
        if self._stale:
            log.info("heartbeats are back: pg_dist_node is read again before acting")
            self._stale = False
        try:
            h.heartbeat(self._ms(), hb.view())
        except InvalidInput as e:
            log.error("the policy refused this DCS view: %s", e)
        except PolicyTrap as e:
            self._trapped(e)

    def _serve(self, m: _Call) -> None:
        assert self._policy is not None
        try:
            m.reply.set(m.fn(self._policy))
        except Exception as e:
            m.reply.fail(e)

    def _serve_calls(self) -> None:
        """The pure calls waiting, served between two batches of a turn."""
        with self._cond:
            calls = [m for m in self._inbox if isinstance(m, _Call)]
            if not calls:
                return
            rest = [m for m in self._inbox if not isinstance(m, _Call)]
            self._inbox.clear()
            self._inbox.extend(rest)
        for c in calls:
            self._serve(c)

    def _turn(self) -> None:
        h = self._handler
        # Only while heartbeats come: not before the first, after a demote or when they stopped.
        if h is None or self.session is None or self._last_heartbeat is None or self._stale:
            return
        ran = False
        try:
            batch = h.poll_statements(self._ms())
            while batch:
                ran = True
                results = self._execute(batch)
                self._record(batch, results)
                self._serve_calls()
                batch = h.handle_results(self._ms(), results)
            if ran:
                self.stats.turns += 1
                h.snapshot()
            done = h.poll_completed() if self._waiters else []
        except PolicyTrap as e:
            self._trapped(e)
            return
        except InvalidInput as e:  # results the policy could not read: start over
            log.error("the policy refused the statements' results: %s", e)
            self._lose_session()
            self._guard(h.schedule_reload)
            return
        for ticket in done:
            w = self._waiters.pop(ticket, None)
            if w is not None:
                w.reply.set(w.outcome)

    def _execute(self, batch: Batch) -> Results:
        """The batch's results; a session that raises instead of answering (a bug, a driver
        surprise) is dropped and its batch answered as a lost connection, so the policy
        knows where it stands."""
        assert self.session is not None
        try:
            return self.session.execute(batch)
        except Exception as e:
            log.exception("the metadata session failed: %r", e)
            self.stats.errors.append(repr(e))
            self._lose_session()
            return Results(results=[Failed(f"the metadata session failed: {e!r}", None, True)])

    def _record(self, batch: Batch, results: Results) -> None:
        rs = results.results
        self.stats.statements += len(rs)
        for stmt, r in zip(batch.statements, rs):
            line = statement_line(stmt)
            if isinstance(r, Failed):
                log.warning("pg_dist_node: %s failed: %s", line, r.message)
            else:
                log.debug("pg_dist_node: %s", line)
            if self._seen is not None:
                self._seen(line, Results(results=[r]).text.strip())

    def _expire(self) -> None:
        now = self._clock()
        for ticket in [t for t, w in self._waiters.items() if w.deadline <= now]:
            self._waiters.pop(ticket).reply.fail(
                OwnerTimeout(f"the task of event ticket {ticket} was not done in time"))
        h = self._handler
        if (h is not None and not self._stale and self._last_heartbeat is not None
                and now - self._last_heartbeat > self.timing.ttl):
            # Patroni's loop stopped handing views over for longer than a leader key lives:
            # this node may no longer lead. Act as on demote: nothing is held open.
            log.warning("no heartbeat for %.0f s (ttl): dropping the metadata session and "
                        "what the policy knew", now - self._last_heartbeat)
            self.stats.stale_resets += 1
            self._stale = True
            self._lose_session()
            self._guard(h.demote)

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except PolicyTrap as e:
            self._trapped(e)

    def _trapped(self, e: PolicyTrap) -> None:
        """The handler was restored from its last snapshot: what the session holds open is
        unknown to it, so drop it and read pg_dist_node again."""
        self.stats.traps += 1
        log.error("%s; the handler was restored, pg_dist_node is read again", e)
        self._lose_session()
        if self._handler is not None:
            with contextlib.suppress(PolicyTrap):
                self._handler.schedule_reload()

    def _lose_session(self) -> None:
        if self.session is not None:
            try:
                self.session.lose()
            except Exception as e:
                log.debug("dropping the metadata session: %r", e)


#: No caller waits longer than this for an event's task, whatever its `timeout` says.
MAX_EVENT_WAIT = 600.0


def wait_bound(body: Any, ttl: float) -> float:
    """How long a `before_demote` caller waits: the event's own `timeout` (the worker's
    `ttl`, which is also how long its request waits) when it is a positive number, else this
    node's `ttl`; never more than `MAX_EVENT_WAIT`."""
    t = body.get("timeout") if isinstance(body, dict) else None
    if isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0:
        return float(min(t, MAX_EVENT_WAIT))
    return float(min(ttl, MAX_EVENT_WAIT))


__all__: Tuple[str, ...] = (
    "MAX_EVENT_WAIT",
    "Owner",
    "OwnerStats",
    "OwnerTimeout",
    "OwnerUnavailable",
    "Reply",
    "Timing",
    "ViewSource",
    "wait_bound",
)
