/**
 * `citus-ha bench [--quick] [--json]`: the JavaScript host's cost of the three hot paths, on
 * the fixture every host's bench uses: a coordinator `coord-0` with two replicas and N worker
 * groups, each a primary and two running replicas.
 *
 * - `heartbeat_steady_N`: one heartbeat whose view matches the handler's cache, timed from the
 *   JavaScript `ClusterView` to the answer (the view is written as text every time and crosses
 *   to the policy's worker thread and back);
 * - `heartbeat_new_N`: one heartbeat that queues N tasks (the cache holds only the coordinator);
 * - `drain_N`: the turn that processes those N tasks against the simulator component (5
 *   statements per group), batches and results crossing as text.
 *
 * Wall time (`process.hrtime.bigint`), median of the samples, after three warm-up runs.
 * @module
 */

import { parseArgs } from 'node:util';
import { Policy } from './policy.js';
import { SimSession } from './session.js';

const NAME = 'coord-0';
const CONNECT_URL = 'postgres://10.0.0.1:5432/postgres';
const CONFIG = { group: 0, database: 'citus' };

/** @typedef {import('./policy.js').Handler} Handler */
/** @typedef {import('./view.js').ClusterView} ClusterView */
/** @typedef {import('./view.js').GroupView} GroupView */
/** @typedef {import('./statements.js').PgDistRow} PgDistRow */

/** @param {number} g @param {number} m */
export const hostOf = (g, m) => `10.${g >> 8}.${g & 255}.${m}`;

/** @param {string} name @param {string} host @param {string} role */
const member = (name, host, role) => ({ name, connUrl: `postgres://${host}:5432/postgres`, role, state: 'running' });

/** The fixture's DCS view with `n` worker groups. @param {number} n @returns {ClusterView} */
export function fixture(n) {
  /** @type {Map<number, GroupView>} */
  const workers = new Map();
  for (let g = 1; g <= n; g++) {
    workers.set(g, {
      leader: `g${g}-m1`,
      members: [1, 2, 3].map((m) => member(`g${g}-m${m}`, hostOf(g, m), m === 1 ? 'primary' : 'replica')),
    });
  }
  return {
    coordinator: {
      leader: NAME,
      members: [member(NAME, '10.0.0.1', 'primary'), member('coord-1', '10.0.0.2', 'replica'), member('coord-2', '10.0.0.3', 'replica')],
    },
    workers,
  };
}

/** @returns {PgDistRow[]} */
const coordinatorRows = () => [1, 2, 3].map((m) => ({
  nodeid: m, groupid: 0, nodename: hostOf(0, m), nodeport: 5432, noderole: m === 1 ? 'primary' : 'secondary',
}));

/** @param {PgDistRow[]} rows */
async function simWith(rows) {
  const s = await SimSession.create();
  s.setRows(rows);
  return s;
}

/**
 * One turn against the simulator (the loop `Agent.runTurn` runs, without its snapshot); how
 * many statements ran.
 * @param {Handler} h @param {SimSession} session @param {number} now
 */
export async function turn(h, session, now) {
  let n = 0;
  let batch = await h.pollStatements(now);
  while (!batch.empty) {
    const results = await session.execute(batch);
    n += results.text.split('\n').length - 1;
    batch = await h.handleResults(now, results);
  }
  return n;
}

const WARMUP = 3;

/** @param {boolean} ok @param {string} what */
function check(ok, what) {
  if (!ok) throw new Error(`bench fixture check failed: ${what}`);
}

/** @param {Handler} h */
async function resetToCoordinator(h) {
  await h.heartbeat(0, fixture(0));
  await h.demote();
  check(await turn(h, await simWith(coordinatorRows()), 0) === 1, 'a reset is one load');
}

/**
 * @template T
 * @param {() => Promise<T>} prepare @param {(s: T) => Promise<void>} run
 * @param {(s: T) => Promise<void>} verify @param {number} samples
 */
async function sample(prepare, run, verify, samples) {
  // Warm-up on the same path: V8 compiles wasm lazily and tiers it (and the JavaScript) up
  // over the first runs; a coordinator's agent is a long-running process, so the steady
  // state is what is timed.
  let state = await prepare();
  await run(state);
  await verify(state);
  for (let i = 0; i < WARMUP - 1; i++) {
    state = await prepare();
    await run(state);
  }
  /** @type {number[]} */
  const out = [];
  for (let i = 0; i < samples; i++) {
    state = await prepare();
    const t = process.hrtime.bigint();
    await run(state);
    out.push(Number(process.hrtime.bigint() - t));
    await verify(state);
  }
  return out;
}

/** @param {Policy} policy @param {number} n @param {number} samples */
async function heartbeatSteady(policy, n, samples) {
  const v = fixture(n);
  const h = await policy.handler(CONFIG, NAME, CONNECT_URL);
  await h.heartbeat(0, v);
  check(await turn(h, await SimSession.create(), 0) === 1 + 5 * (n + 1), 'the first turn registers every group');
  try {
    return await sample(async () => null, async () => { await h.heartbeat(1, v); },
      async () => { check((await h.pollStatements(1)).empty, 'a steady heartbeat queued tasks'); }, samples);
  } finally {
    h.close();
  }
}

/** @param {Policy} policy @param {number} n @param {number} samples */
async function heartbeatNew(policy, n, samples) {
  const v = fixture(n);
  const h = await policy.handler(CONFIG, NAME, CONNECT_URL);
  let verified = false;
  try {
    return await sample(async () => { await resetToCoordinator(h); return h; }, async () => { await h.heartbeat(2, v); },
      async () => {
        if (!verified) {
          check(await turn(h, await simWith(coordinatorRows()), 2) === 5 * n, 'every group queued');
          verified = true;
        }
      }, samples);
  } finally {
    h.close();
  }
}

/** @param {Policy} policy @param {number} n @param {number} samples */
async function drain(policy, n, samples) {
  const v = fixture(n);
  const h = await policy.handler(CONFIG, NAME, CONNECT_URL);
  let ran = 0;
  try {
    return await sample(async () => {
      await resetToCoordinator(h);
      await h.heartbeat(3, v);
      return simWith(coordinatorRows());
    }, async (s) => { ran = await turn(h, s, 3); }, async (s) => {
      check(ran === 5 * n, 'statements of the drain');
      check((await s.rows()).length === 3 * (n + 1), 'rows after the drain');
    }, samples);
  } finally {
    h.close();
  }
}

/** @param {number[]} s sorted @param {number} q */
const quantile = (s, q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];

/**
 * @param {string[]} args
 * @returns {Promise<number>}
 */
export async function main(args) {
  const { values } = parseArgs({
    args,
    options: { quick: { type: 'boolean' }, json: { type: 'boolean' }, policy: { type: 'string' }, groups: { type: 'string' } },
  });
  const n = Number(values.groups ?? 1000);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`citus-ha bench: --groups must be a whole number of 1 or more, got ${values.groups}\n`);
    return 2;
  }
  const policy = await Policy.load(values.policy ?? null, { limits: { callTimeoutMs: 30_000 } });
  const samples = values.quick ? 7 : 31;
  try {
    for (const [name, fn] of /** @type {const} */ ([[`heartbeat_steady_${n}`, heartbeatSteady], [`heartbeat_new_${n}`, heartbeatNew], [`drain_${n}`, drain]])) {
      const s = (await fn(policy, n, samples)).sort((a, b) => a - b);
      const median = s.length % 2 ? s[(s.length - 1) / 2] : Math.round((s[s.length / 2 - 1] + s[s.length / 2]) / 2);
      const rec = {
        bench: name, groups: n, median_ns: median, p10_ns: quantile(s, 0.1), p90_ns: quantile(s, 0.9), min_ns: s[0],
        samples: s.length, host: 'js', contract: policy.contract,
      };
      if (values.json) process.stdout.write(`${JSON.stringify(rec)}\n`);
      else {
        process.stdout.write(`${name.padEnd(24)} ${(median / 1e6).toFixed(3).padStart(9)} ms  (p10 ${(rec.p10_ns / 1e6).toFixed(3)}, `
          + `p90 ${(rec.p90_ns / 1e6).toFixed(3)}, ${s.length} samples)\n`);
      }
    }
  } finally {
    await policy.close();
  }
  return 0;
}
