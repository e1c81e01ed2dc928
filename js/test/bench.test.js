// `citus-ha bench --json`: the three lines every host's bench prints, on a small fixture (the
// figures themselves are read in BENCHMARKS.md, never asserted).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { CLI } from './helpers.js';

test('bench --quick --json prints heartbeat_steady, heartbeat_new and drain, one object a line', async () => {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'bench', '--quick', '--json', '--groups', '20']);
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((l) => l.bench), ['heartbeat_steady_20', 'heartbeat_new_20', 'drain_20']);
  for (const l of lines) {
    assert.ok(Number.isInteger(l.median_ns) && l.median_ns > 0, JSON.stringify(l));
    assert.equal(l.host, 'js');
    assert.equal(l.samples, 7);
  }
});
