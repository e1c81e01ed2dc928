// The Agent's turn loop against the simulator component and against a real PostgreSQL 15
// with the Citus emulation: a worker switchover with a registered secondary (the pause in
// place before `before_demote` is answered, one BEGIN and one COMMIT), a failover seen only by
// heartbeats, a deadline rollback while another group waits; and `replay --db` printing
// what the simulator replay and the Rust host's `replay --db` print.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { Agent, Batch, PgSession, SimSession } from '../src/index.js';
import { outputLine } from '../src/replay.js';
import { CLI, PgServer, SCENARIOS, rustBin } from './helpers.js';

const run = promisify(execFile);
const COORD = 'postgres://10.0.0.1:5432/citus';
/** @param {string} name @param {string} host @param {string} role @param {string} [state] */
const m = (name, host, role, state = 'running') => ({ name, connUrl: `postgres://${host}:5432/citus`, role, state });
/** @param {import('../src/index.js').GroupView} g1 @param {import('../src/index.js').GroupView} g2 */
const view = (g1, g2) => ({ coordinator: { leader: 'coord1', members: [m('coord1', '10.0.0.1', 'primary')] }, workers: new Map([[1, g1], [2, g2]]) });
const W1 = { leader: 'w1a', members: [m('w1a', '10.0.1.1', 'primary'), m('w1b', '10.0.1.2', 'replica')] };
const W2 = { leader: 'w2a', members: [m('w2a', '10.0.2.1', 'primary'), m('w2b', '10.0.2.2', 'replica')] };
const MOVED = { leader: 'w1b', members: [m('w1a', '10.0.1.1', 'replica', 'stopped'), m('w1b', '10.0.1.2', 'primary')] };
const BACK = { leader: 'w1b', members: [m('w1a', '10.0.1.1', 'replica'), m('w1b', '10.0.1.2', 'primary')] };

/** @param {import('../src/index.js').Session} session */
async function registered(session) {
  const agent = await Agent.start({ group: 0, database: 'citus' }, 'coord1', COORD, session);
  await agent.heartbeat(0, view(W1, W2));
  await agent.runTurn(0);
  return agent;
}

/**
 * The switchover through `handleEvent` with a clock the test moves; `paused` is asked right
 * after `before_demote` was answered.
 * @param {Agent<any>} agent @param {() => Promise<void>} [paused]
 */
async function switchover(agent, paused) {
  let clock = 1000;
  /** @type {string[]} */
  const seen = [];
  agent.seen = (s, r) => seen.push(outputLine(s, r));
  const outcome = await agent.handleEvent(() => clock, view(W1, W2),
    { type: 'before_demote', group: 1, leader: 'w1a', timeout: 30, cooldown: 10 }, 30_000);
  assert.equal(outcome.outcome, 'queued');
  assert.equal(outcome.done, true);
  assert.ok((await agent.handler.metrics()).inFlight, 'the pause is open');
  await paused?.();
  for (const type of ['before_promote', 'after_promote']) {
    clock += 1000;
    await agent.handleEvent(() => clock, view(MOVED, W2), { type, group: 1, leader: 'w1b', timeout: 30 }, 30_000);
  }
  assert.equal(seen.filter((l) => l === '{"op":"begin"}').length, 1, seen.join('\n'));
  assert.equal(seen.filter((l) => l === '{"op":"commit"}').length, 1, seen.join('\n'));
  await agent.heartbeat(clock, view(BACK, W2));
  await agent.runTurn(clock);
  return seen;
}

/** @param {{ nodeid: number, groupid: number, nodename: string, noderole: string }[]} rows */
const byGroup = (rows) => {
  /** @type {Record<number, [string, string][]>} */
  const out = {};
  for (const r of [...rows].sort((a, b) => a.nodeid - b.nodeid)) (out[r.groupid] ??= []).push([r.nodename, r.noderole]);
  return out;
};

test('against the simulator: a switchover in one transaction, the rows moved', async () => {
  const session = await SimSession.create();
  const agent = await registered(session);
  await switchover(agent);
  assert.deepEqual(byGroup(await session.rows())[1], [['10.0.1.2', 'primary'], ['10.0.1.1', 'secondary']]);
  agent.close();
});

describe('against PostgreSQL 15 with the Citus emulation', { skip: !PgServer.available() && 'no PostgreSQL 15 server binaries' }, () => {
  /** @type {PgServer} */
  let server;
  before(async () => { server = await PgServer.start(); });
  after(async () => { await server?.stop(); });

  /** A fresh citus database, groups 0-2 registered through the agent, and a probe connection. */
  async function cluster() {
    await server.freshCitus();
    const session = new PgSession(server.url('citus'));
    const agent = await registered(session);
    const probe = new pg.Client({ connectionString: server.url('citus') });
    await probe.connect();
    const rows = async () => byGroup((await probe.query('SELECT nodeid, groupid, nodename, noderole::text AS noderole FROM pg_dist_node')).rows);
    assert.deepEqual(await rows(), {
      0: [['10.0.0.1', 'primary']], 1: [['10.0.1.1', 'primary'], ['10.0.1.2', 'secondary']], 2: [['10.0.2.1', 'primary'], ['10.0.2.2', 'secondary']],
    });
    /** Whether a write to the group's shard waits (the pause holds its lock). @param {number} group */
    const writesBlocked = async (group) => {
      try {
        await probe.query('BEGIN');
        await probe.query("SET LOCAL lock_timeout = '300ms'");
        await probe.query(`INSERT INTO citus_emulation.shard_${group} VALUES (1, 'probe')`);
        return false;
      } catch (e) {
        if (/** @type {any} */ (e).code === '55P03') return true;
        throw e;
      } finally {
        await probe.query('ROLLBACK');
      }
    };
    const done = async () => { agent.close(); await session.close(); await probe.end(); };
    return { agent, session, rows, writesBlocked, done };
  }

  test('a worker switchover pauses writes in one transaction', async () => {
    const c = await cluster();
    try {
      await switchover(c.agent, async () => {
        // before_demote was answered: writes to group 1 wait, group 2's do not.
        assert.equal(await c.writesBlocked(1), true);
        assert.equal(await c.writesBlocked(2), false);
      });
      assert.equal(await c.writesBlocked(1), false);
      assert.deepEqual((await c.rows())[1], [['10.0.1.2', 'primary'], ['10.0.1.1', 'secondary']]);
    } finally {
      await c.done();
    }
  });

  test('the metadata session: its settings, and every value a bound parameter', async () => {
    const c = await cluster();
    try {
      const mine = /** @type {import('pg').Client} */ (c.session.client);
      for (const [setting, value] of [['statement_timeout', '0'], ['idle_in_transaction_session_timeout', '0'], ['application_name', 'citus-ha']]) {
        assert.equal((await mine.query(`SHOW ${setting}`)).rows[0][setting], value);
      }
      const evil = "10.9.9.9'); DELETE FROM pg_dist_node; --";
      const [r] = (await c.session.execute(Batch.of([{ op: 'remove_node', host: evil, port: 5432 }]))).results;
      assert.equal(r.result, 'failed');
      assert.equal(Object.values(await c.rows()).flat().length, 5, 'pg_dist_node untouched');
      const probe = new pg.Client({ connectionString: server.url('citus') });
      await probe.connect();
      const q = await probe.query("SELECT query FROM pg_stat_activity WHERE application_name = 'citus-ha'");
      await probe.end();
      assert.deepEqual(q.rows.map((x) => x.query), ['SELECT pg_catalog.citus_remove_node($1::text, $2::int)']);
    } finally {
      await c.done();
    }
  });

  test('a failover seen only by heartbeats', async () => {
    const c = await cluster();
    try {
      const failed = { leader: 'w2b', members: [m('w2b', '10.0.2.2', 'primary')] };
      await c.agent.heartbeat(5000, view(W1, failed));
      await c.agent.runTurn(5000);
      // The primary row moves at once; the gone replica's row goes on the next turn (Citus
      // refuses a remove in the transaction of an update).
      assert.deepEqual((await c.rows())[2][0], ['10.0.2.2', 'primary']);
      await c.agent.heartbeat(6000, view(W1, failed));
      await c.agent.runTurn(6000);
      assert.deepEqual((await c.rows())[2], [['10.0.2.2', 'primary']]);
    } finally {
      await c.done();
    }
  });

  test('a deadline rollback while another group waits', async () => {
    const c = await cluster();
    try {
      const ev = { type: 'before_demote', group: 1, leader: 'w1a', timeout: 2, cooldown: 10 };
      assert.equal((await c.agent.event(1000, view(W1, W2), ev)).outcome, 'queued');
      await c.agent.runTurn(1000);
      assert.equal(await c.writesBlocked(1), true);
      const failed = { leader: 'w2b', members: [m('w2b', '10.0.2.2', 'primary')] };
      await c.agent.heartbeat(2000, view(W1, failed));
      /** @type {string[]} */
      const seen = [];
      await c.agent.runTurn(2000, (s, r) => seen.push(outputLine(s, r)));
      assert.deepEqual((await c.rows())[2], [['10.0.2.1', 'primary'], ['10.0.2.2', 'secondary']], 'waits');
      const deadline = await c.agent.handler.pollTimeout();
      assert.ok(deadline !== null && deadline <= 3000, String(deadline));
      await c.agent.runTurn(deadline, (s, r) => seen.push(outputLine(s, r)));
      assert.ok(seen.includes('{"op":"rollback"}'), seen.join('\n'));
      assert.equal((await c.agent.handler.metrics()).deadlineRollbacks, 1);
      assert.equal(await c.writesBlocked(1), false);
      assert.deepEqual((await c.rows())[2][0], ['10.0.2.2', 'primary']);
    } finally {
      await c.done();
    }
  });

  test('replay --db prints what the simulator replay and the Rust host print', async (t) => {
    // Each step's time goes to the test's diagnostics: on a loaded machine this test is the
    // slowest of the package (databases created, processes started).
    const timed = async (/** @type {string} */ what, /** @type {() => Promise<any>} */ f) => {
      const t0 = performance.now();
      try {
        return await f();
      } finally {
        t.diagnostic(`${what}: ${Math.round(performance.now() - t0)} ms`);
      }
    };
    const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-db-'));
    // The library's scenario without a metadata step, and the switchover with its seeded rows
    // left out (the first sync registers them).
    const lines = readFileSync(join(SCENARIOS, 'worker_switchover_with_pause.jsonl'), 'utf8').split('\n');
    const noSeed = join(dir, 'switchover_unseeded.jsonl');
    writeFileSync(noSeed, lines.filter((l) => !l.includes('"op":"metadata"')).join('\n'));
    const bin = rustBin();
    for (const f of [join(SCENARIOS, 'new_cluster_with_secondaries.jsonl'), noSeed]) {
      const sim = await timed('replay (simulator)', () => run(process.execPath, [CLI, 'replay', f]));
      await timed('fresh database', () => server.freshCitus());
      const db = await timed('replay --db', () => run(process.execPath, [CLI, 'replay', '--db', server.url('citus'), f]));
      assert.equal(db.stdout, sim.stdout, f);
      if (bin) {
        await timed('fresh database', () => server.freshCitus());
        const r = await timed('Rust replay --db', () => run(bin, ['replay', '--db', server.url('citus'), f], { env: { ...process.env, RUST_LOG: 'off' } }));
        assert.equal(db.stdout, r.stdout, f);
      }
    }
    assert.equal((await run(process.execPath, [CLI, 'replay', join(SCENARIOS, 'new_cluster_with_secondaries.jsonl')])).stdout,
      readFileSync(join(SCENARIOS, 'new_cluster_with_secondaries.expected'), 'utf8'));
    // The batch mode: `{name}` in the URL gives each file a database of its own.
    const out = join(dir, 'out');
    for (const n of ['new_cluster_with_secondaries', 'switchover_unseeded']) await timed('fresh database', () => server.freshCitus(n));
    await timed('batch replay --db', () => run(process.execPath, [CLI, 'replay', '--out-dir', out, '--db', server.url('{name}'),
      join(SCENARIOS, 'new_cluster_with_secondaries.jsonl'), noSeed]));
    for (const [n, f] of [['new_cluster_with_secondaries', join(SCENARIOS, 'new_cluster_with_secondaries.jsonl')], ['switchover_unseeded', noSeed]]) {
      assert.equal(readFileSync(join(out, `${n}.code`), 'utf8'), '0\n');
      assert.equal(readFileSync(join(out, `${n}.out`), 'utf8'), (await run(process.execPath, [CLI, 'replay', f])).stdout, n);
    }
    // A metadata step cannot run against a database: exit 2 naming its line.
    await assert.rejects(run(process.execPath, [CLI, 'replay', '--db', server.url('citus'), join(SCENARIOS, 'worker_failover.jsonl')]),
      (e) => /** @type {any} */ (e).code === 2 && /line \d+: a `metadata` step only works with the simulator/.test(/** @type {any} */ (e).stderr));
    // A database that cannot be used: exit 1.
    await assert.rejects(run(process.execPath, [CLI, 'replay', '--db', 'postgresql://postgres@127.0.0.1:1/citus', '--db-timeout', '2',
      join(SCENARIOS, 'new_cluster_with_secondaries.jsonl')]),
      (e) => /** @type {any} */ (e).code === 1);
    if (!bin) t.diagnostic('the Rust host is not built: compared with the simulator replay only');
  });
});
