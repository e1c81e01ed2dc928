// `npm run build [-- --policy FILE --sim FILE]`: transpiles the policy and simulator
// components with jco into generated/ (git-ignored), which the package loads as its bundled
// builds. The defaults are what `cargo build -p citus-ha` writes: ../target/guest/*.wasm.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { GENERATED, writeBuild } from '../src/runtime/build.js';

const here = new URL('..', import.meta.url).pathname;
const { values } = parseArgs({
  options: { policy: { type: 'string' }, sim: { type: 'string' } },
});
const inputs = {
  policy: values.policy ?? process.env.CITUS_HA_POLICY_WASM ?? join(here, '../target/guest/citus_ha_policy.component.wasm'),
  sim: values.sim ?? process.env.CITUS_HA_SIM_WASM ?? join(here, '../target/guest/citus_sim.component.wasm'),
};
for (const [name, path] of Object.entries(inputs)) {
  let bytes;
  try {
    bytes = await readFile(resolve(path));
  } catch (e) {
    console.error(`build: cannot read the ${name} component ${path}: ${/** @type {Error} */ (e).message}\n`
      + '(build it with `cargo build -p citus-ha`, or pass --policy/--sim)');
    process.exit(1);
  }
  const t0 = performance.now();
  const r = await transpileBytes(bytes, { name, instantiation: 'sync', emitTypescriptDeclarations: false, wasiShim: false });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  await writeBuild(join(GENERATED, name), { files: r.files, imports: r.imports, exports: r.exports.map(([n]) => n) }, name, sha256);
  console.log(`build: ${name} ${path} -> generated/${name} (${sha256.slice(0, 12)}, ${Math.round(performance.now() - t0)} ms)`);
}
