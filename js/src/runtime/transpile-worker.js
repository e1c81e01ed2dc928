// Transpiles a component with jco off the main thread (it takes a second or more of CPU).
import { parentPort, workerData } from 'node:worker_threads';
import { transpileBytes } from '@bytecodealliance/jco-transpile';

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
try {
  const r = await transpileBytes(workerData.bytes, {
    name: workerData.name, instantiation: 'sync', emitTypescriptDeclarations: false, wasiShim: false,
  });
  port.postMessage({ files: r.files, imports: r.imports, exports: r.exports.map(([n]) => n) });
} catch (e) {
  port.postMessage({ error: e instanceof Error ? e.message : String(e) });
}
