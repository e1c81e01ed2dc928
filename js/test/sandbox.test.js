// The sandbox in Node: a looping and an allocating build are stopped within their bounds
// while the main thread keeps answering, and the agent keeps serving; a build that keeps
// trapping falls back to the bundled one; a swap mid-switchover gives the same statements as
// no swap; a bad build is refused and the running one keeps running.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { Agent, Policy, PolicyLoadError, PolicyTrap, SimSession, SwapRefused } from '../src/index.js';
import { stringify } from '../src/json.js';
import { outputLine, parseScenario } from '../src/replay.js';
import { SCENARIOS, policyVariant } from './helpers.js';

const SMALL = { callTimeoutMs: 500, maxMemoryBytes: 64 << 20 };
const SWITCHOVER = join(SCENARIOS, 'worker_switchover_with_pause.jsonl');
const quiet = () => {};

/** @returns {any[]} */
const switchover = () => parseScenario(readFileSync(SWITCHOVER, 'utf8'));

/**
 * The library's switchover through an Agent on the simulator, optionally swapping builds
 * before step `swapAt` (in the middle of the pause).
 * @param {Policy} policy @param {Policy | null} [swapTo] @param {number} [swapAt]
 */
async function drive(policy, swapTo = null, swapAt = -1) {
  const [config, ...steps] = switchover();
  const agent = new Agent(await policy.handler(await policy.validateConfig(stringify(config.citus)), config.name, config.connUrl),
    await SimSession.create());
  /** @type {string[]} */
  const out = [];
  let now = 0;
  for (const [i, step] of steps.entries()) {
    if (i === swapAt && swapTo) {
      assert.ok((await agent.handler.metrics()).inFlight, 'the pause is open');
      await agent.swap(swapTo);
    }
    if (step.op === 'metadata') agent.session.setRows(step.rows);
    else if (step.op === 'sync') await agent.heartbeat(now, step.cluster);
    else if (step.op === 'event') await agent.event(now, step.cluster, step.event);
    else if (step.op === 'run') await agent.runTurn(now, (s, r) => out.push(outputLine(s, r)));
    else if (step.op === 'advance') now += step.ms;
  }
  return { out, agent };
}

for (const [features, why] of /** @type {[string, RegExp][]} */ ([['fault-loop', /time budget/], ['fault-alloc', /unreachable/]])) {
  test(`${features}: stopped within its bound while the main thread keeps answering; the agent keeps serving`, async () => {
    const bad = await Policy.load(policyVariant(features), { limits: SMALL, log: quiet });
    const [config, , sync] = switchover();
    const agent = new Agent(await bad.handler(await bad.validateConfig(stringify(config.citus)), config.name, config.connUrl),
      await SimSession.create());
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 5);
    const t0 = performance.now();
    await assert.rejects(agent.heartbeat(0, sync.cluster), (e) => e instanceof PolicyTrap && why.test(e.message));
    const took = performance.now() - t0;
    clearInterval(timer);
    assert.ok(took < 5000, `stopped after ${took} ms`);
    // The event loop kept turning while the guest ran: a blocked main thread ticks at most once.
    assert.ok(ticks >= Math.min(10, took / 20), `${ticks} ticks in ${took} ms`);
    // Restored in a fresh worker: the handler answers.
    assert.ok(await agent.handler.exportState());
    assert.equal(agent.handler.traps, 1);
    // The second trap in a row falls back to the bundled build, which then serves.
    await assert.rejects(agent.heartbeat(0, sync.cluster), PolicyTrap);
    assert.equal(agent.handler.policy.sha256, (await Policy.bundled()).sha256);
    await agent.heartbeat(0, sync.cluster);
    /** @type {string[]} */
    const seen = [];
    await agent.runTurn(0, (s, r) => seen.push(outputLine(s, r)));
    assert.equal(seen[0], '{"op":"load_metadata"}');
    agent.close();
    await bad.close();
  });
}

test('a swap mid-switchover gives the same statements as no swap', async () => {
  const current = await Policy.bundled();
  const { out: plain, agent: a } = await drive(current);
  a.close();
  const expected = readFileSync(SWITCHOVER.replace(/\.jsonl$/, '.expected'), 'utf8').split('\n').filter(Boolean);
  assert.deepEqual(plain, expected.slice(0, -1));
  assert.equal(plain.filter((l) => l === '{"op":"begin"}').length, 1);
  assert.equal(plain.filter((l) => l === '{"op":"commit"}').length, 1);
  // Another build (same contract, other bytes, reads only JSON state) while the pause is
  // open: after before_demote's turn, before before_promote.
  const other = await Policy.load(policyVariant('state-json-only'));
  assert.notEqual(other.sha256, current.sha256);
  const { out: swapped, agent } = await drive(current, other, 6);
  assert.deepEqual(swapped, plain);
  assert.equal(agent.handler.policy.sha256, other.sha256);
  agent.close();
  await other.close();
});

test('a bad build is refused and the old one keeps running', async () => {
  const current = await Policy.bundled();
  const { agent } = await drive(current);
  for (const f of ['fault-import', 'fault-trap-warmup']) {
    const bad = await Policy.load(policyVariant(f), { log: quiet });
    await assert.rejects(agent.swap(bad), SwapRefused, f);
    await bad.close();
  }
  assert.equal(agent.handler.policy.sha256, current.sha256);
  await agent.runTurn(100_000);
  await assert.rejects(Policy.load(policyVariant('wit-v0_3')), PolicyLoadError);
  await assert.rejects(Policy.load(join(SCENARIOS, 'worker_failover.jsonl')), PolicyLoadError);
  agent.close();
});
