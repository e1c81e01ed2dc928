// The pure functions, the view text, the statements' lines and the Handler, against the
// bundled build.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Batch, InvalidInput, Policy, Results, ViewWriter, clusterFromDcs, statementLine, viewText,
} from '../src/index.js';
import { capMemory } from '../src/runtime/wasm.js';

const CONFIG = { group: 0, database: 'citus' };
const URL = 'postgres://10.0.0.1:5432/postgres';

/** @param {string} name @param {string} host @param {string} role */
const m = (name, host, role) => ({ name, connUrl: `postgres://${host}:5432/postgres`, role, state: 'running' });
const view = (/** @type {string} */ w1host = '10.0.1.1') => ({
  coordinator: { leader: 'coord1', members: [m('coord1', '10.0.0.1', 'primary')] },
  workers: new Map([[1, { leader: 'w1', members: [m('w1', w1host, 'primary'), m('w1r', '10.0.1.9', 'replica')] }]]),
});

test('validateConfig: a valid section, and InvalidInput naming the field', async () => {
  const p = await Policy.bundled();
  assert.deepEqual(await p.validateConfig({ group: 2, database: 'citus' }), { group: 2, database: 'citus' });
  assert.deepEqual(await p.validateConfig('{"group":"0","database":"d"}'), { group: 0, database: 'd' });
  await assert.rejects(p.validateConfig({ group: 'x', database: 'citus' }), (e) => {
    assert.ok(e instanceof InvalidInput && e instanceof Error);
    assert.equal(e.field, 'citus.group');
    assert.match(e.reason, /decimal/);
    return true;
  });
  assert.match(await p.version(), /^citus-ha-policy /);
});

test('adjustGucs, keepReplicationSlot, bootstrapPlan', async () => {
  const p = await Policy.bundled();
  const gucs = await p.adjustGucs({ shared_preload_libraries: 'pg_stat_statements', max_prepared_transactions: 0, max_connections: 100, wal_level: 'replica' }, '10.0.0.1');
  assert.match(gucs.shared_preload_libraries, /^citus,pg_stat_statements$/);
  assert.ok(Number(gucs.max_prepared_transactions) >= 200, JSON.stringify(gucs));
  await assert.rejects(p.adjustGucs({ max_connections: 'lots' }), InvalidInput);
  assert.equal(await p.keepReplicationSlot(CONFIG, true, { name: 'citus_shard_move_slot_1_2_3', slotType: 'logical', database: 'citus', plugin: 'pgoutput' }), true);
  assert.equal(await p.keepReplicationSlot(CONFIG, false, { name: 'citus_shard_move_slot_1_2_3', slotType: 'logical', database: 'citus', plugin: 'pgoutput' }), false);
  assert.equal(await p.keepReplicationSlot(CONFIG, true, { name: 'patroni_slot', slotType: 'physical' }), false);
  const plan = await p.bootstrapPlan(CONFIG, 'postgres', { password: 'pw' }, URL);
  assert.deepEqual(plan.map((s) => s.step), ['create-database', 'create-extension', 'insert-authinfo', 'set-coordinator-host']);
  assert.deepEqual(plan[3], { step: 'set-coordinator-host', host: '10.0.0.1', port: 5432 });
  assert.deepEqual(plan[0], { step: 'create-database', name: 'citus' });
});

test('the view text: COPY escapes, byte lengths, `=` only for what the previous view had', () => {
  const v = {
    coordinator: { leader: 'c', members: [{ name: 'c\tx', connUrl: null, connKwargs: { host: 'h', port: '5432' }, role: 'primary', state: 'running', noloadbalance: true }] },
    workers: { 2: { leader: null, members: [] }, 1: { leader: 'é', members: [] } },
  };
  assert.equal(viewText(v), 'CHV2\t0\t\\N\n0\t+\t36\tc\tc\\tx\t\\N\tk\th\t5432\tprimary\trunning\t1\n1\t+\t2\té\n2\t+\t2\t\\N\n');
  const w = new ViewWriter();
  const first = w.write(v);
  assert.match(first, /^CHV2\t\d+\t\\N\n/);
  const seq = Number(first.split('\t')[1]);
  const second = w.write({ ...v, workers: { 1: { leader: 'other', members: [] }, 2: { leader: null, members: [] } } });
  assert.equal(second.split('\n')[0], `CHV2\t${seq + 1}\t${seq}`);
  assert.deepEqual(second.split('\n').slice(1, 4).map((l) => l.split('\t')[1]), ['=', '+', '=']);
  w.reset();
  assert.match(w.write(v), /\t\\N\n0\t\+/);
});

test('clusterFromDcs names the path of what is wrong', () => {
  assert.throws(() => clusterFromDcs({ members: [{ name: 5 }] }), { field: 'cluster.members[0].name', reason: 'must be a string' });
  assert.throws(() => clusterFromDcs({ workers: { 0: {} } }), /worker group id/);
  assert.throws(() => clusterFromDcs({ workers: { 1: { members: [{ name: 'a', tags: { noloadbalance: 'yes' } }] } } }), /noloadbalance/);
  const c = clusterFromDcs({ leader: 'a', members: [{ name: 'a', conn_kwargs: { host: 'h', port: 5433 } }], workers: { 10: {}, 2: {} } });
  assert.deepEqual([.../** @type {Map<number, any>} */ (c.workers).keys()], [2, 10]);
  assert.equal(c.coordinator.members?.[0].connKwargs?.port, '5433');
});

test('statements and results: the contract lines both ways', () => {
  const b = new Batch('{"op":"begin"}\n{"op":"update_node","nodeid":4,"host":"h-demoted","port":5432,"force":true,"cooldown_ms":10000}\n');
  assert.deepEqual(b.statements.map((s) => s.op), ['begin', 'update_node']);
  assert.deepEqual(b.statements.map(statementLine).join('\n') + '\n', b.text);
  const r = new Results({ results: [{ result: 'done' }, { result: 'failed', message: 'boom "x"', sqlstate: null, connection_lost: true }] });
  assert.equal(r.text, '{"result":"done"}\n{"result":"failed","message":"boom \\"x\\"","sqlstate":null,"connection_lost":true}\n');
  assert.deepEqual(new Results({ text: r.text }).results, r.results);
  assert.throws(() => new Batch('{"op":"drop_table"}\n').statements, InvalidInput);
});

test('capMemory puts a maximum on every memory a module defines', () => {
  // (module (memory 1)) and (module (memory 1 100))
  const mod = (/** @type {number[]} */ limits) => new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, limits.length + 1, 1, ...limits]);
  const mem = (/** @type {BufferSource} */ b) => new WebAssembly.Instance(new WebAssembly.Module(b)).exports;
  for (const [limits, max] of /** @type {[number[], number][]} */ ([[[0, 1], 16], [[1, 1, 100], 16], [[1, 1, 8], 8]])) {
    const capped = capMemory(mod(limits), 16);
    assert.ok(WebAssembly.validate(new Uint8Array(capped)));
    const withExport = new Uint8Array([...capped, 7, 5, 1, 1, 0x6d, 2, 0]);
    const memory = /** @type {WebAssembly.Memory} */ (mem(withExport).m);
    assert.throws(() => memory.grow(max), RangeError);
    memory.grow(max - 1);
  }
});

test('a Handler: heartbeat, statements, results, state, metrics, refusals', async () => {
  const p = await Policy.bundled();
  const h = await p.handler(CONFIG, 'coord1', URL);
  await h.heartbeat(0, view());
  let batch = await h.pollStatements(0);
  assert.equal(batch.text, '{"op":"load_metadata"}\n');
  batch = await h.handleResults(0, new Results({ results: [{ result: 'metadata', rows: [[1, 0, '10.0.0.1', 5432, 'primary']] }] }));
  assert.deepEqual(batch.statements.slice(0, 2), [{ op: 'begin' }, { op: 'add_node', host: '10.0.1.1', port: 5432, groupid: 1, role: 'primary' }]);
  await assert.rejects(h.handleResults(0, new Results({ text: 'nonsense\n' })), InvalidInput);
  const state = await h.exportState();
  const json = await h.exportState('json');
  assert.ok(JSON.parse(json));
  const copy = await p.importHandler(state);
  assert.equal(await copy.exportState(), state);
  copy.close();
  await assert.rejects(p.importHandler('garbage'), (e) => e instanceof InvalidInput && e.field === 'state');
  await assert.rejects(h.setConnectUrl('not a url'), (e) => e instanceof InvalidInput && e.field === 'connect-url');
  await h.setConnectUrl('postgres://10.0.0.5:5432/postgres');
  const ev = await h.event(0, view(), { type: 'before_demote', group: 9, leader: 'w9', timeout: 30 });
  assert.equal(ev.outcome, 'discarded');
  await assert.rejects(h.event(0, view(), '{"type":"teleport"}'), InvalidInput);
  const metrics = await h.metrics();
  assert.equal(typeof metrics.statements, 'number');
  assert.equal(metrics.queuedTasks >= 0, true);
  assert.deepEqual(await h.pollCompleted(), []);
  h.close();
});
