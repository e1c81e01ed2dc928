#!/usr/bin/env node
// citus-ha for Node: `citus-ha replay ...` and `citus-ha bench ...` (see --help of each).
const [cmd, ...args] = process.argv.slice(2);
let code;
if (cmd === 'replay') {
  const { main } = await import('../src/replay.js');
  code = await main(args);
} else if (cmd === 'bench') {
  const { main } = await import('../src/bench.js');
  code = await main(args);
} else {
  process.stderr.write('usage: citus-ha replay FILE [--db URL] [--db-timeout SECONDS] [--policy COMPONENT.wasm]\n'
    + '       citus-ha replay --out-dir DIR FILE...\n'
    + '       citus-ha bench [--quick] [--json] [--policy COMPONENT.wasm] [--groups N]\n');
  code = 2;
}
process.exitCode = code;
