/**
 * The DCS view an HA manager hands the policy, and its text form (contract 0.4.0).
 *
 * The text is PostgreSQL's COPY text format: one line per group (its id, flag and body
 * length, then the body), tab-separated fields, `\N` for an absent value. A `ViewWriter`
 * flags each group whose body did not change since the view it wrote before, so the policy
 * skips what it already settled: a steady heartbeat of 1000 groups is one string, no group
 * decoded.
 * @module
 */

import { InvalidInput } from './errors.js';
import { JsonNumber } from './json.js';

/**
 * One member of a group as the HA manager publishes it. `connKwargs` is for a member that
 * publishes `conn_kwargs` (host and port) instead of a URL.
 * @typedef {{ name: string, connUrl?: string | null, connKwargs?: { host?: string | null, port?: string | null } | null,
 *   role?: string | null, state?: string | null, noloadbalance?: boolean }} Member
 */

/** One group: its leader's name and its members. @typedef {{ leader?: string | null, members?: Member[] }} GroupView */

/**
 * This coordinator's group and the worker groups by id (a `Map` or an object keyed by id).
 * @typedef {{ coordinator: GroupView, workers?: Map<number, GroupView> | Record<number, GroupView> }} ClusterView
 */

const ABSENT = '\\N';
let seqCounter = 0;

/** @param {unknown} v @param {string} path @returns {string | null} */
function optStr(v, path) {
  if (v === undefined || v === null || typeof v === 'string') return v ?? null;
  throw new InvalidInput(path, 'must be a string');
}

/** @param {unknown} v */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof JsonNumber);

/** @param {any} v @param {string} path @returns {Member} */
function member(v, path) {
  if (!isObject(v)) throw new InvalidInput(path, 'must be an object');
  const name = optStr(v.name, `${path}.name`);
  if (name === null) throw new InvalidInput(`${path}.name`, 'is required');
  /** @type {Member['connKwargs']} */
  let connKwargs = null;
  const kw = v.conn_kwargs;
  if (isObject(kw)) {
    const port = kw.port;
    /** @type {string | null} */
    let p = null;
    if (port instanceof JsonNumber) p = port.text;
    else if (typeof port === 'number') p = String(port);
    else if (typeof port === 'string') p = port;
    else if (port !== undefined && port !== null) throw new InvalidInput(`${path}.conn_kwargs.port`, 'must be a number');
    connKwargs = { host: optStr(kw.host, `${path}.conn_kwargs.host`), port: p };
  } else if (kw !== undefined && kw !== null) throw new InvalidInput(`${path}.conn_kwargs`, 'must be an object');
  let noloadbalance = false;
  const tags = v.tags;
  if (isObject(tags)) {
    const t = tags.noloadbalance;
    if (t !== undefined && t !== null && typeof t !== 'boolean') {
      throw new InvalidInput(`${path}.tags.noloadbalance`, 'must be true or false');
    }
    noloadbalance = t === true;
  } else if (tags !== undefined && tags !== null) throw new InvalidInput(`${path}.tags`, 'must be an object');
  return {
    name,
    connUrl: optStr(v.conn_url, `${path}.conn_url`),
    connKwargs,
    role: optStr(v.role, `${path}.role`),
    state: optStr(v.state, `${path}.state`),
    noloadbalance,
  };
}

/** @param {any} v @param {string} path @returns {GroupView} */
function group(v, path) {
  if (!isObject(v)) throw new InvalidInput(path, 'must be an object');
  const leader = optStr(v.leader, `${path}.leader`);
  const ms = v.members ?? [];
  if (!Array.isArray(ms)) throw new InvalidInput(`${path}.members`, 'must be a list');
  return { leader, members: ms.map((m, i) => member(m, `${path}.members[${i}]`)) };
}

/**
 * A view in the HA manager's own shape (the scenario format's CLUSTER, Patroni's members):
 * `{leader, members: [{name, conn_url | conn_kwargs, role, state, tags}], workers: {"1": ...}}`.
 * Anything of the wrong type is refused with `InvalidInput` naming its path.
 * @param {any} v
 * @returns {ClusterView}
 */
export function clusterFromDcs(v) {
  if (!isObject(v)) throw new InvalidInput('cluster', 'must be an object');
  const coordinator = group(v, 'cluster');
  /** @type {Map<number, GroupView>} */
  const workers = new Map();
  const w = v.workers;
  if (isObject(w)) {
    for (const k of Object.keys(w).sort()) {
      const id = Number(k);
      if (!/^[1-9]\d*$/.test(k) || id > 2147483647) {
        throw new InvalidInput('cluster.workers', `${JSON.stringify(k)} is not a worker group id (1 or more)`);
      }
      workers.set(id, group(w[k], `cluster.workers.${k}`));
    }
  } else if (w !== undefined && w !== null) {
    throw new InvalidInput('cluster.workers', 'must be an object keyed by group id');
  }
  return { coordinator, workers: new Map([...workers].sort((a, b) => a[0] - b[0])) };
}

const NEEDS_ESCAPE = /[\\\t\n\r]/;
const ESCAPE = /[\\\t\n\r]/g;
/** @type {Record<string, string>} */
const ESCAPES = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** @param {string | null | undefined} s */
function field(s) {
  if (s === null || s === undefined) return ABSENT;
  return NEEDS_ESCAPE.test(s) ? s.replace(ESCAPE, (c) => ESCAPES[c]) : s;
}

/**
 * A group's line after its flag: the leader, then 8 fields per member.
 * @param {GroupView} g
 */
export function groupBody(g) {
  let out = field(g.leader);
  for (const m of g.members ?? []) {
    const kw = m.connKwargs;
    out += `\t${field(m.name)}\t${field(m.connUrl)}\t${kw ? `k\t${field(kw.host)}\t${field(kw.port)}` : '-\t\\N\t\\N'}`
      + `\t${field(m.role)}\t${field(m.state)}\t${m.noloadbalance ? '1' : '0'}`;
  }
  return out;
}

/** @param {ClusterView} view @returns {[number, GroupView][]} */
function groups(view) {
  const w = view.workers ?? new Map();
  /** @type {[number, GroupView][]} */
  const entries = w instanceof Map ? [...w] : Object.entries(w).map(([k, g]) => [Number(k), g]);
  for (let i = 1; i < entries.length; i++) {
    if (entries[i - 1][0] >= entries[i][0]) { entries.sort((a, b) => a[0] - b[0]); break; }
  }
  return [[0, view.coordinator], ...entries];
}

/** @param {number} gid @param {string} flag @param {string} body */
const line = (gid, flag, body) => `${gid}\t${flag}\t${Buffer.byteLength(body)}\t${body}\n`;

/**
 * A view written once, with no base (events, tests).
 * @param {ClusterView} view
 */
export function viewText(view) {
  let out = `CHV2\t0\t${ABSENT}\n`;
  for (const [gid, g] of groups(view)) out += line(gid, '+', groupBody(g));
  return out;
}

/**
 * Writes successive heartbeat views for one handler, flagging (`=`) each group whose body is
 * what it was in the previous view it wrote.
 */
export class ViewWriter {
  constructor() {
    /** @type {number | null} */
    this.seq = null;
    /** @type {Map<number, string>} */
    this.bodies = new Map();
  }

  /** The next view goes with no base (the handler was replaced or refused a view). */
  reset() { this.seq = null; }

  /** @param {ClusterView} view */
  write(view) {
    const base = this.seq;
    const seq = ++seqCounter;
    const prev = base === null ? new Map() : this.bodies;
    const bodies = new Map();
    let out = `CHV2\t${seq}\t${base === null ? ABSENT : base}\n`;
    for (const [gid, g] of groups(view)) {
      const body = groupBody(g);
      bodies.set(gid, body);
      out += line(gid, prev.get(gid) === body ? '=' : '+', body);
    }
    this.bodies = bodies;
    this.seq = seq;
    return out;
  }
}
