// `citus-ha replay` in Node prints what the Rust host's prints, byte for byte, for every
// scenario of the library, and exits as it does; the batch mode writes the same bytes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { parseScenario, ScenarioError } from '../src/replay.js';
import { parse, stringify } from '../src/json.js';
import { CLI, SCENARIOS, rustBin } from './helpers.js';

const run = promisify(execFile);
const LIBRARY = [
  ...readdirSync(SCENARIOS).filter((f) => f.endsWith('.jsonl')).map((f) => join(SCENARIOS, f)),
  ...readdirSync(join(SCENARIOS, 'reference')).filter((f) => f.endsWith('.jsonl')).map((f) => join(SCENARIOS, 'reference', f)),
].sort();

/** @param {string[]} args */
async function cli(...args) {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args], { maxBuffer: 1 << 26, env: { ...process.env, RUST_LOG: 'off' } });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const x = /** @type {any} */ (e);
    if (typeof x.code !== 'number') throw e;
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** @param {string} bin @param {string[]} args */
async function rust(bin, ...args) {
  try {
    const { stdout } = await run(bin, args, { maxBuffer: 1 << 26, env: { ...process.env, RUST_LOG: 'off' } });
    return { code: 0, stdout };
  } catch (e) {
    const x = /** @type {any} */ (e);
    return { code: x.code, stdout: x.stdout };
  }
}

const EDGE = readdirSync(join(import.meta.dirname, 'scenarios')).filter((f) => f.endsWith('.jsonl'))
  .map((f) => join(import.meta.dirname, 'scenarios', f)).sort();

test('edge cases of the format: the Rust host\'s bytes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-edge-'));
  const r = await cli('replay', '--out-dir', dir, ...EDGE);
  assert.equal(r.code, 0, r.stderr);
  for (const f of EDGE) {
    assert.equal(readFileSync(join(dir, `${basename(f, '.jsonl')}.out`), 'utf8'), readFileSync(f.replace(/\.jsonl$/, '.expected'), 'utf8'), basename(f));
  }
});

test('the library is there', () => {
  assert.ok(LIBRARY.length >= 24, `${LIBRARY.length} scenarios`);
});

test('every library scenario: the batch mode prints each .expected byte for byte, in one process', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-replay-'));
  const r = await cli('replay', '--out-dir', dir, ...LIBRARY);
  assert.equal(r.code, 0, r.stderr);
  for (const f of LIBRARY) {
    const got = readFileSync(join(dir, `${basename(f, '.jsonl')}.out`), 'utf8');
    assert.equal(got, readFileSync(f.replace(/\.jsonl$/, '.expected'), 'utf8'), basename(f));
    assert.equal(readFileSync(join(dir, `${basename(f, '.jsonl')}.code`), 'utf8'), '0\n');
  }
});

test('one scenario on its own: the same bytes as .expected and as the Rust host', async (t) => {
  const f = join(SCENARIOS, 'worker_switchover_with_pause.jsonl');
  const r = await cli('replay', f);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, readFileSync(f.replace(/\.jsonl$/, '.expected'), 'utf8'));
  const bin = rustBin();
  if (!bin) { t.skip('citus-ha is not built (cargo build -p citus-ha)'); return; }
  assert.deepEqual(await rust(bin, 'replay', f), { code: 0, stdout: r.stdout });
});

test('every library scenario: the same bytes as the Rust host', async (t) => {
  const bin = rustBin();
  if (!bin) { t.skip('citus-ha is not built (cargo build -p citus-ha)'); return; }
  const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-replay-'));
  await cli('replay', '--out-dir', dir, ...LIBRARY);
  for (const f of LIBRARY) {
    const r = await rust(bin, 'replay', f);
    assert.equal(readFileSync(join(dir, `${basename(f, '.jsonl')}.out`), 'utf8'), r.stdout, basename(f));
  }
});

const CONFIG = '{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"postgres://h/d"}\n';
const MALFORMED = [
  ['{"op":"run"}\n', 1],
  [`${CONFIG}# comment\n\n{"op":"jump"}\n`, 4],
  [`${CONFIG}{"op":"fail","match":"x","error":"e"}\n`, 2],
  [`${CONFIG}{"op":"advance","seconds":"1"}\n`, 2],
  [`${CONFIG}{"op":"advance","seconds":-1}\n`, 2],
  [`${CONFIG}{"op":"metadata","rows":[[1,0,"h",5432,"primary"],[1,1,"i",5432,"primary"]]}\n`, 2],
  [`${CONFIG}{"op":"metadata","rows":[[1.5,0,"h",5432,"primary"]]}\n`, 2],
  [`${CONFIG}{"op":"sync","cluster":{"members":[{"name":5}]}}\n`, 2],
  [`${CONFIG}{"op":"sync","cluster":{"workers":{"01":{}}}}\n`, 2],
  [`${CONFIG}{`, 2],
  ['{"op":"config","citus":{"group":"x","database":"c"},"name":"c","conn_url":"postgres://h/d"}\n', 1],
  ['{"op":"config","citus":{"group":0,"database":"c"},"name":"c","conn_url":"nonsense"}\n', 1],
  [`${CONFIG}${CONFIG}`, 2],
  ['{"op":"config","citus":{"group":0,"database":"c","extra":1.0},"name":"c","conn_url":"postgres://h/d"}\n', 1],
  ['# nothing\n', 0],
];

test('malformed scenarios exit 2 naming the line, as the Rust host does', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-bad-'));
  const files = MALFORMED.map(([text], i) => {
    const f = join(dir, `bad${i}.jsonl`);
    writeFileSync(f, String(text));
    return f;
  });
  const single = await cli('replay', files[1]);
  assert.equal(single.code, 2);
  assert.equal(single.stdout, '');
  assert.match(single.stderr, /: line 4: unknown op "jump"/);
  // The batch mode: each file's own code (and stderr), in one process; the batch itself exits
  // 0 once every output is written.
  const out = join(dir, 'out');
  const good = join(SCENARIOS, 'worker_failover.jsonl');
  const missing = join(dir, 'missing.jsonl');
  const r = await cli('replay', '--out-dir', out, good, ...files, missing);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(join(out, 'worker_failover.code'), 'utf8'), '0\n');
  assert.equal(readFileSync(join(out, 'missing.code'), 'utf8'), '2\n');
  assert.match(readFileSync(join(out, 'missing.err'), 'utf8'), /cannot read/);
  const bin = rustBin();
  for (const [i, [text, line]] of MALFORMED.entries()) {
    assert.equal(readFileSync(join(out, `bad${i}.code`), 'utf8'), '2\n', String(text));
    assert.equal(readFileSync(join(out, `bad${i}.out`), 'utf8'), '');
    const e = readFileSync(join(out, `bad${i}.err`), 'utf8');
    assert.ok(e.includes(`${files[i]}: line ${line}: `), `${text} -> ${e}`);
    if (bin) assert.equal((await rust(bin, 'replay', files[i])).code, 2, String(text));
  }
  // Two files that would write the same outputs are refused.
  const twin = join(dir, 'twin');
  writeFileSync(join(dir, 'bad0'), 'x');
  const dup = await cli('replay', '--out-dir', twin, files[0], join(dir, 'bad0'));
  assert.equal(dup.code, 2);
  assert.match(dup.stderr, /would both write bad0\.out/);
});

test('batch --db: {name} becomes each file\'s name; a policy that cannot be loaded is each file\'s exit 1', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-batch-'));
  const f = join(SCENARIOS, 'worker_failover.jsonl');
  // A metadata step is refused with --db before any connection: exit 2 whatever the URL.
  const r = await cli('replay', '--out-dir', dir, '--db', 'postgresql://127.0.0.1:1/{name}', f);
  assert.equal(r.code, 0);
  assert.equal(readFileSync(join(dir, 'worker_failover.code'), 'utf8'), '2\n');
  const p = await cli('replay', '--out-dir', dir, '--policy', '/nonexistent.wasm', f, join(SCENARIOS, 'worker_switchover_with_pause.jsonl'));
  assert.equal(p.code, 0);
  for (const n of ['worker_failover', 'worker_switchover_with_pause']) {
    assert.equal(readFileSync(join(dir, `${n}.code`), 'utf8'), '1\n');
    assert.match(readFileSync(join(dir, `${n}.err`), 'utf8'), /cannot read \/nonexistent\.wasm/);
  }
});

test('an unusable --policy exits 1', async () => {
  const r = await cli('replay', '--policy', '/nonexistent/policy.wasm', join(SCENARIOS, 'worker_failover.jsonl'));
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot read/);
});

test('the scenario reader keeps numbers as serde_json writes them', () => {
  assert.equal(stringify(parse('{"b":30,"a":30.0,"c":1e3,"d":-0,"e":[1e20,1.5e-7,0.0001,18446744073709551616],"é":"\\u0001"}')),
    '{"a":30.0,"b":30,"c":1000.0,"d":-0.0,"e":[1e20,1.5e-7,0.0001,1.8446744073709552e19],"é":"\\u0001"}');
  const [, ev] = parseScenario(`${CONFIG}{"op":"event","cluster":{},"event":{"type":"before_demote","timeout":30.0,"group":1}}\n`);
  assert.equal(/** @type {any} */ (ev).event, '{"group":1,"timeout":30.0,"type":"before_demote"}');
  assert.throws(() => parseScenario(`${CONFIG}{"op":"advance","seconds":1e400}`), ScenarioError);
});
