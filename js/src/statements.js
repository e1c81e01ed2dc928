/**
 * What the policy asks the metadata session to run and what comes back: the contract's JSON
 * Lines (`poll-statements`, `handle-results`), as plain objects of exactly that shape.
 * @module
 */

import { InvalidInput } from './errors.js';

/** @typedef {'primary' | 'secondary' | 'unavailable'} NodeRole */

/**
 * One row of pg_dist_node.
 * @typedef {{ nodeid: number, groupid: number, nodename: string, nodeport: number, noderole: NodeRole }} PgDistRow
 */

/**
 * A statement, as `poll-statements` writes it.
 * @typedef {{ op: 'load_metadata' } | { op: 'begin' } | { op: 'commit' } | { op: 'rollback' }
 *   | { op: 'add_node', host: string, port: number, groupid: number, role: 'primary' | 'secondary' }
 *   | { op: 'update_node', nodeid: number, host: string, port: number, force: boolean, cooldown_ms: number }
 *   | { op: 'remove_node', host: string, port: number }} Statement
 */

/**
 * The result of one statement, as `handle-results` reads it. `failed` means the session has
 * already discarded its open transaction.
 * @typedef {{ result: 'done' } | { result: 'rolled_back' } | { result: 'added', nodeid: number }
 *   | { result: 'metadata', rows: RowList[] }
 *   | { result: 'failed', message: string, sqlstate: string | null, connection_lost: boolean }} StatementResult
 */

/** @typedef {[number, number, string, number, NodeRole]} RowList */

/** Statement kinds as a scenario's `fail` step names them, by `op`. */
export const KIND_OF = Object.freeze({
  load_metadata: 'pg_dist_node',
  begin: 'BEGIN',
  commit: 'COMMIT',
  rollback: 'ROLLBACK',
  add_node: 'citus_add_node',
  update_node: 'citus_update_node',
  remove_node: 'citus_remove_node',
});

/** @type {readonly string[]} */
export const KINDS = Object.freeze(['citus_update_node', 'citus_add_node', 'citus_remove_node',
  'pg_dist_node', 'BEGIN', 'COMMIT', 'ROLLBACK']);

/** @param {Statement} s */
export const kindOf = (s) => KIND_OF[s.op];

/** @param {PgDistRow} r @returns {RowList} */
export const rowToList = (r) => [r.nodeid, r.groupid, r.nodename, r.nodeport, r.noderole];

/** @param {RowList} a @returns {PgDistRow} */
export const rowFromList = ([nodeid, groupid, nodename, nodeport, noderole]) =>
  ({ nodeid, groupid, nodename, nodeport, noderole });

/**
 * A statement as the contract's (and the replay's) JSON line, fields in the documented order.
 * @param {Statement} s
 */
export function statementLine(s) {
  const q = JSON.stringify;
  switch (s.op) {
    case 'add_node':
      return `{"op":"add_node","host":${q(s.host)},"port":${s.port},"groupid":${s.groupid},"role":${q(s.role)}}`;
    case 'update_node':
      return `{"op":"update_node","nodeid":${s.nodeid},"host":${q(s.host)},"port":${s.port},"force":${s.force},"cooldown_ms":${s.cooldown_ms}}`;
    case 'remove_node':
      return `{"op":"remove_node","host":${q(s.host)},"port":${s.port}}`;
    default:
      return `{"op":"${s.op}"}`;
  }
}

/** @param {StatementResult} r */
export function resultLine(r) {
  switch (r.result) {
    case 'added': return `{"result":"added","nodeid":${r.nodeid}}`;
    case 'metadata': return `{"result":"metadata","rows":${JSON.stringify(r.rows)}}`;
    case 'failed':
      return `{"result":"failed","message":${JSON.stringify(r.message)},"sqlstate":${JSON.stringify(r.sqlstate ?? null)},"connection_lost":${!!r.connection_lost}}`;
    default: return `{"result":"${r.result}"}`;
  }
}

/** The statement did not do its work, so the rest of its batch must not run. @param {StatementResult} r */
export const endsBatch = (r) => r.result === 'failed' || r.result === 'rolled_back';

/** @param {string} text */
const lines = (text) => text.split('\n').filter((l) => l !== '');

/**
 * The statements of one `poll-statements`, as the text the policy wrote; parsed only when
 * someone looks (a simulator session passes the text on unread).
 */
export class Batch {
  /** @param {string} text */
  constructor(text) {
    this.text = text;
    /** @type {Statement[] | undefined} */
    this._statements = undefined;
  }

  /** @returns {Statement[]} */
  get statements() {
    if (this._statements === undefined) {
      this._statements = lines(this.text).map((l) => {
        const s = JSON.parse(l);
        if (!(s.op in KIND_OF)) throw new InvalidInput('statements', `unknown op ${JSON.stringify(s.op)}`);
        return s;
      });
    }
    return this._statements;
  }

  get empty() { return this.text === ''; }

  /** @param {Statement[]} statements */
  static of(statements) {
    const b = new Batch(statements.map((s) => `${statementLine(s)}\n`).join(''));
    b._statements = statements;
    return b;
  }
}

/** The results of a batch, as text or objects (each made from the other when first asked). */
export class Results {
  /** @param {{ text?: string, results?: StatementResult[] }} from */
  constructor({ text, results }) {
    if (text === undefined && results === undefined) throw new TypeError('Results needs text or results');
    this._text = text;
    this._results = results;
  }

  /** @returns {string} */
  get text() {
    if (this._text === undefined) {
      this._text = /** @type {StatementResult[]} */ (this._results).map((r) => `${resultLine(r)}\n`).join('');
    }
    return this._text;
  }

  /** @returns {StatementResult[]} */
  get results() {
    if (this._results === undefined) this._results = lines(/** @type {string} */ (this._text)).map((l) => JSON.parse(l));
    return this._results;
  }
}
