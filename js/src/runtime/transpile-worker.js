// Transpiles components with jco off the main thread (a second or more of CPU each). One
// worker serves every transpile of the process: jco's own bindgen is compiled once, which
// makes the second and later transpiles 3-5x faster than the first.
import { parentPort } from 'node:worker_threads';
import { transpileBytes } from '@bytecodealliance/jco-transpile';

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
port.on('message', async (/** @type {{ id: number, bytes: Uint8Array, name: string }} */ m) => {
  try {
    const r = await transpileBytes(m.bytes, {
      name: m.name, instantiation: 'sync', emitTypescriptDeclarations: false, wasiShim: false,
    });
    port.postMessage({ id: m.id, files: r.files, imports: r.imports, exports: r.exports.map(([n]) => n) });
  } catch (e) {
    port.postMessage({ id: m.id, error: e instanceof Error ? e.message : String(e) });
  }
});
