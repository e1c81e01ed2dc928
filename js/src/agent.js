/**
 * The turn loop an HA manager reuses: heartbeats and worker events in, statements run on the
 * metadata session, tickets waited for, the state snapshotted after every turn (so a trap
 * loses nothing), policy swaps between two turns. The clock is passed in: `now` is
 * milliseconds on any monotonic clock the caller keeps (simulated in replay).
 * @module
 */

import { PolicyTrap } from './errors.js';
import { Policy } from './policy.js';

/** @typedef {import('./policy.js').Handler} Handler */
/** @typedef {import('./policy.js').CitusConfig} CitusConfig */
/** @typedef {import('./policy.js').EventOutcome} EventOutcome */
/** @typedef {import('./session.js').Session} Session */
/** @typedef {import('./view.js').ClusterView} ClusterView */
/** @typedef {import('./statements.js').Statement} Statement */
/** @typedef {import('./statements.js').StatementResult} StatementResult */
/** Called with every statement run and its result (a log, a metric). @typedef {(s: Statement, r: StatementResult) => void} Seen */

/**
 * Drives a `Handler` against a `Session`, one call at a time.
 *
 * Every method that calls the policy may reject with `PolicyTrap`; the handler has then
 * already been restored in a fresh worker and the agent keeps serving (the caller logs it).
 * @template {Session} [S=Session]
 */
export class Agent {
  /** @param {Handler} handler @param {S} session @param {{ seen?: Seen }} [options] */
  constructor(handler, session, { seen } = {}) {
    this.handler = handler;
    this.session = session;
    this.seen = seen;
    this.turns = 0;
    /** The view of the last heartbeat or event: what a swap's warm-up runs on. @type {{ now: number, view: ClusterView } | null} */
    this.lastView = null;
  }

  /**
   * An agent for this node around the bundled (or given) policy build.
   * @template {Session} T
   * @param {CitusConfig | object} config the `citus` section (validated by the policy)
   * @param {string} name @param {string} connectUrl @param {T} session
   * @param {{ policy?: Policy, seen?: Seen }} [options]
   * @returns {Promise<Agent<T>>}
   */
  static async start(config, name, connectUrl, session, { policy, seen } = {}) {
    const p = policy ?? await Policy.bundled();
    const c = await p.validateConfig(config);
    return new Agent(await p.handler(c, name, connectUrl), session, { seen });
  }

  /** @param {number} now @param {ClusterView} view */
  async heartbeat(now, view) {
    this.lastView = { now, view };
    await this.handler.heartbeat(now, view);
  }

  /** @param {number} now @param {ClusterView} view @param {string | object} body */
  event(now, view, body) {
    this.lastView = { now, view };
    return this.handler.event(now, view, body);
  }

  scheduleReload() { return this.handler.scheduleReload(); }

  /** This coordinator was demoted: its session (and open transaction) is gone. */
  async demote() {
    await this.session.lose();
    await this.handler.demote();
  }

  /**
   * One turn of the metadata loop: batches until the policy has none. Each statement run
   * and its result go to `seen` (or the agent's own).
   * @param {number} now @param {Seen} [seen]
   */
  async runTurn(now, seen = this.seen) {
    try {
      let batch = await this.handler.pollStatements(now);
      while (!batch.empty) {
        const results = await this.session.execute(batch);
        if (seen) {
          const rs = results.results;
          batch.statements.slice(0, rs.length).forEach((s, i) => seen(s, rs[i]));
        }
        batch = await this.handler.handleResults(now, results);
      }
      this.turns++;
      await this.handler.snapshot();
    } catch (e) {
      // The handler was restored from the snapshot of the last turn; what the session holds
      // open is unknown to it now.
      if (e instanceof PolicyTrap) await this.session.lose();
      throw e;
    }
  }

  /**
   * Runs turns until the event's task with `ticket` is processed (true) or `now()` passes
   * `deadline` (false): what a `before_demote` answer waits for.
   * @param {bigint} ticket @param {() => number} now @param {number} deadline
   */
  async waitFor(ticket, now, deadline) {
    for (;;) {
      await this.runTurn(now());
      if ((await this.handler.pollCompleted()).includes(ticket)) return true;
      const t = now();
      if (t >= deadline) return false;
      // Until the policy wants a turn (a retry, a deadline), at most until ours.
      const wake = await this.handler.pollTimeout();
      const until = wake === null ? deadline : Math.min(wake, deadline);
      await new Promise((r) => setTimeout(r, Math.max(1, until - t)));
    }
  }

  /**
   * A worker event answered the way Patroni's REST API answers it: a queued event's task runs
   * at once and this resolves when it was processed or `timeoutMs` passed.
   * @param {() => number} now @param {ClusterView} view @param {string | object} body @param {number} timeoutMs
   * @returns {Promise<EventOutcome & { done?: boolean }>}
   */
  async handleEvent(now, view, body, timeoutMs) {
    const outcome = await this.event(now(), view, body);
    if (outcome.outcome !== 'queued') return outcome;
    return { ...outcome, done: await this.waitFor(outcome.ticket, now, now() + timeoutMs) };
  }

  /**
   * Hot swap between two turns: export, import into `policy`, warm up on the last view, then
   * replace. Rejects with `SwapRefused` and the running build keeps running.
   * @param {Policy} policy
   */
  swap(policy) { return this.handler.replace(policy, this.lastView); }

  /** Stops the handler's worker (the session is the caller's). */
  close() { this.handler.close(); }
}
