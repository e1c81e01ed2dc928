/**
 * Where the policy's statements run: the coordinator's metadata session.
 *
 * A session runs a batch in order and stops after the first statement that fails (having
 * discarded the open transaction, as the policy expects). `PgSession` is a real coordinator
 * through `pg` on one dedicated connection, every value a bound parameter; `SimSession` is the
 * simulator component; `FaultySession` injects failures (replay's `fail` step).
 * @module
 */

import pg from 'pg';
import { Simulator } from './sim.js';
import { Batch, KINDS, Results, endsBatch, kindOf, rowFromList } from './statements.js';

/** @typedef {import('./statements.js').Statement} Statement */
/** @typedef {import('./statements.js').StatementResult} StatementResult */
/** @typedef {import('./statements.js').PgDistRow} PgDistRow */

/**
 * Runs the policy's statements.
 * @typedef {object} Session
 * @property {(batch: Batch) => Promise<Results>} execute runs the batch in order, up to and
 *   including the first statement that fails
 * @property {() => Promise<PgDistRow[]>} rows pg_dist_node as this session sees it
 *   (uncommitted changes included)
 * @property {() => Promise<void>} lose drops the session: an open transaction is rolled back
 */

/** The simulator component as a session: the batch's text in, the results' text out, neither read here. */
export class SimSession {
  /** @param {Simulator} sim */
  constructor(sim) {
    this.sim = sim;
  }

  /** A session on a fresh bundled simulator. */
  static async create() { return new SimSession(await Simulator.load()); }

  /** @param {Batch} batch */
  async execute(batch) { return new Results({ text: this.sim.execute(batch.text) }); }

  async rows() { return this.sim.rows(); }

  /** An outside change of the committed rows. @param {PgDistRow[]} rows */
  setRows(rows) { this.sim.setRows(rows); }

  async lose() { this.sim.loseSession(); }
}

/**
 * Wraps a session: the next statement of an armed kind fails with the given error, has no
 * effect, and the session is lost (replay's `fail` step).
 * @template {Session} S
 */
export class FaultySession {
  /** @param {S} inner */
  constructor(inner) {
    this.inner = inner;
    /** @type {[string, string][]} */
    this.armed = [];
  }

  /** The next statement of `kind` (`citus_update_node`, `BEGIN`, ...) fails with `error`. @param {string} kind @param {string} error */
  arm(kind, error) {
    if (!KINDS.includes(kind)) throw new TypeError(`unknown statement kind ${JSON.stringify(kind)}`);
    this.armed.push([kind, error]);
  }

  /** @param {Batch} batch */
  async execute(batch) {
    if (this.armed.length === 0) return this.inner.execute(batch);
    /** @type {StatementResult[]} */
    const out = [];
    for (const stmt of batch.statements) {
      const hit = this.armed.findIndex(([k]) => k === kindOf(stmt));
      if (hit >= 0) {
        const [[, error]] = this.armed.splice(hit, 1);
        await this.inner.lose();
        out.push({ result: 'failed', message: error, sqlstate: null, connection_lost: true });
        break;
      }
      const [r] = (await this.inner.execute(Batch.of([stmt]))).results;
      out.push(r);
      if (endsBatch(r)) break;
    }
    return new Results({ results: out });
  }

  rows() { return this.inner.rows(); }

  lose() { return this.inner.lose(); }
}

const LOAD_SQL = 'SELECT nodeid, groupid, nodename, nodeport, noderole::text FROM pg_catalog.pg_dist_node ORDER BY nodeid';
const ADD_SQL = "SELECT pg_catalog.citus_add_node($1::text, $2::int, $3::int, $4::text::noderole, 'default')";
const UPDATE_SQL = 'SELECT pg_catalog.citus_update_node($1::int, $2::text, $3::int, $4::bool, $5::int)';
const REMOVE_SQL = 'SELECT pg_catalog.citus_remove_node($1::text, $2::int)';

class Lost extends Error {}

/**
 * Client-side bounds: the server's `statement_timeout` stays 0 (a forced update legitimately
 * waits out its cooldown), so these keep a coordinator that never answers from freezing the
 * agent.
 * @typedef {{ connectTimeoutMs?: number, statementTimeoutMs?: number }} PgLimits
 */

/**
 * A real coordinator: one dedicated `pg` connection to its Citus database, with the same
 * session settings as the Rust host (no statement or idle-in-transaction timeout: a pause may
 * last as long as a switchover; application_name citus-ha). Transactions are the policy's
 * BEGIN/COMMIT; every value is a bound parameter. After losing the connection it reconnects on
 * the next statement, with backoff, and a statement that would have run inside a transaction
 * that died with the connection is reported lost rather than run autocommitted.
 */
export class PgSession {
  /** @param {string} url a libpq URL or key=value string @param {PgLimits} [limits] */
  constructor(url, { connectTimeoutMs = 10_000, statementTimeoutMs = 10_000 } = {}) {
    this.url = url;
    this.connectTimeoutMs = connectTimeoutMs;
    this.statementTimeoutMs = statementTimeoutMs;
    /** @type {pg.Client | null} */
    this.client = null;
    this.closed = false;
    this.inTxn = false;
    this.backoffMs = 0;
  }

  async connect() {
    if (this.client && this.closed) {
      this.drop();
      if (this.inTxn) {
        this.inTxn = false;
        throw new Lost('the connection to the coordinator was lost; its open transaction is gone');
      }
    }
    if (this.client) return this.client;
    if (this.backoffMs) await new Promise((r) => setTimeout(r, this.backoffMs));
    const client = new pg.Client({
      connectionString: this.url,
      application_name: 'citus-ha',
      options: '-c statement_timeout=0 -c idle_in_transaction_session_timeout=0',
      connectionTimeoutMillis: this.connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: 5000,
    });
    this.closed = false;
    client.on('error', () => { this.closed = true; });
    client.on('end', () => { this.closed = true; });
    try {
      await client.connect();
    } catch (e) {
      client.end().catch(() => {});
      this.backoffMs = Math.min(Math.max(this.backoffMs * 2, 100), 1000);
      throw new Lost(`cannot connect to the coordinator: ${/** @type {Error} */ (e).message}`);
    }
    this.backoffMs = 0;
    this.client = client;
    return client;
  }

  drop() {
    const c = this.client;
    this.client = null;
    this.closed = false;
    if (c) {
      // Destroying the socket closes at once; the server rolls back what was open on it.
      /** @type {any} */ (c).connection?.stream?.destroy();
      c.end().catch(() => {});
    }
  }

  /** @param {Statement} s @returns {Promise<StatementResult>} */
  async runUnbounded(s) {
    const c = await this.connect();
    switch (s.op) {
      case 'load_metadata': {
        const r = await c.query({ text: LOAD_SQL, rowMode: 'array' });
        return { result: 'metadata', rows: r.rows.map(([a, b, h, p, role]) => [a, b, h, p, role === 'primary' || role === 'secondary' ? role : 'unavailable']) };
      }
      case 'begin': case 'commit': case 'rollback':
        await c.query(s.op.toUpperCase());
        return { result: 'done' };
      case 'add_node': {
        const r = await c.query({ text: ADD_SQL, values: [s.host, s.port, s.groupid, s.role], rowMode: 'array' });
        return { result: 'added', nodeid: Number(r.rows[0][0]) };
      }
      case 'update_node':
        await c.query(UPDATE_SQL, [s.nodeid, s.host, s.port, s.force, s.cooldown_ms]);
        return { result: 'done' };
      case 'remove_node':
        await c.query(REMOVE_SQL, [s.host, s.port]);
        return { result: 'done' };
      default:
        throw new TypeError(`not a statement: ${JSON.stringify(s)}`);
    }
  }

  /**
   * One statement within its client-side bound (a forced update gets its cooldown on top).
   * On expiry the connection is dropped and the loss reported.
   * @param {Statement} s @returns {Promise<StatementResult>}
   */
  async run(s) {
    const bound = this.statementTimeoutMs + (s.op === 'update_node' && s.force ? Math.max(0, s.cooldown_ms) : 0);
    /** @type {NodeJS.Timeout | undefined} */
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Lost(`the coordinator did not answer within ${bound / 1000} s; `
        + 'the connection was dropped (an open transaction is rolled back by the server)')), bound);
    });
    try {
      return await Promise.race([this.runUnbounded(s), expired]);
    } catch (e) {
      if (e instanceof Lost) this.drop();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** @param {Statement} s @returns {Promise<StatementResult>} */
  async one(s) {
    try {
      const r = await this.run(s);
      if (s.op === 'begin') this.inTxn = true;
      else if (s.op === 'commit' || s.op === 'rollback') this.inTxn = false;
      return r;
    } catch (e) {
      const err = /** @type {any} */ (e);
      const lost = e instanceof Lost || this.closed || this.client === null;
      /** @type {StatementResult} */
      const failed = { result: 'failed', message: String(err.message ?? e), sqlstate: lost ? null : (err.code ?? null), connection_lost: lost };
      if (lost) {
        this.drop();
      } else if (this.inTxn || s.op === 'commit') {
        // The transaction is aborted; end it so the session is usable again.
        try {
          await this.run({ op: 'rollback' });
        } catch {
          this.drop();
        }
      }
      this.inTxn = false;
      return failed;
    }
  }

  /** @param {Batch} batch */
  async execute(batch) {
    /** @type {StatementResult[]} */
    const out = [];
    for (const s of batch.statements) {
      const r = await this.one(s);
      out.push(r);
      if (endsBatch(r)) break;
    }
    return new Results({ results: out });
  }

  async rows() {
    try {
      const r = await this.run({ op: 'load_metadata' });
      if (r.result !== 'metadata') throw new Error('not rows');
      return r.rows.map(rowFromList);
    } catch (e) {
      throw new Error(`cannot read pg_dist_node: ${/** @type {Error} */ (e).message}`);
    }
  }

  async lose() {
    this.drop();
    this.inTxn = false;
  }

  /** Closes the connection (the server rolls back what was open). */
  async close() { await this.lose(); }
}
