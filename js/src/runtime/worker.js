// One component instance in a worker thread: the main thread's only way into a guest. It runs
// calls one at a time, answers each with its value, the `err` payload of a `result`, or a
// trap, and refuses every call after a trap (its instance may be half-way through a change).
import { parentPort, workerData } from 'node:worker_threads';

/** @type {{ js: string, modules: Record<string, WebAssembly.Module>, iface: string, label: string }} */
const { js, modules, iface, label } = workerData;
const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);

/** @type {any} */
let exported;
/** @type {any} */
let resource;
/** @type {string | null} */
let dead = null;

/** @param {unknown} e */
function why(e) {
  // jco words traps as wasmtime does (`wasm trap: wasm \`unreachable\` instruction
  // executed`), so every host's notes read alike.
  if (e instanceof WebAssembly.RuntimeError) return e.message.startsWith('wasm trap') ? e.message : `wasm trap: ${e.message}`;
  if (e instanceof RangeError) return `guest stack or memory exhausted: ${e.message}`;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/** @type {any} */
let mod;

/** A fresh instance (fresh linear memory): at start, and when the worker is reused. */
function instantiate() {
  const root = mod.instantiate(
    (/** @type {string} */ name) => {
      const m = modules[name];
      if (!m) throw new Error(`the component asks for a core module ${name} it was not built with`);
      return m;
    },
    {
      'citus-ha:policy/host': {
        log: (/** @type {string} */ level, /** @type {string} */ message) => port.postMessage({ log: [level, message] }),
      },
    },
  );
  exported = root[iface];
  resource = undefined;
  if (!exported) throw new Error(`${label}: does not export ${iface}`);
}

try {
  mod = await import(`data:text/javascript;base64,${Buffer.from(js).toString('base64')}`);
  instantiate();
  port.postMessage({ ready: true });
} catch (e) {
  port.postMessage({ fatal: why(e) });
}

port.on('message', (/** @type {{ id: number, op: string, name?: string, args?: any[] }} */ msg) => {
  const { id, op, name = '', args = [] } = msg;
  if (dead !== null) {
    port.postMessage({ id, trap: `this instance trapped before (${dead}) and cannot be entered` });
    return;
  }
  try {
    let value;
    if (op === 'fn') value = exported[name](...args);
    else if (op === 'reset') { instantiate(); value = null; }
    else if (op === 'new') { resource = new exported[name](...args); value = null; }
    else if (op === 'static') { resource = exported[name.split('.')[0]][name.split('.')[1]](...args); value = null; }
    else if (op === 'method') value = resource[name](...args);
    else throw new TypeError(`unknown op ${op}`);
    port.postMessage({ id, value });
  } catch (e) {
    // jco throws a `result`'s error payload itself (a record or a string; older versions
    // wrap it in a ComponentError with `.payload`); a trap is always an Error.
    if (!(e instanceof Error)) {
      port.postMessage({ id, err: e });
      return;
    }
    if (e.constructor?.name === 'ComponentError' && 'payload' in e) {
      port.postMessage({ id, err: /** @type {any} */ (e).payload });
      return;
    }
    dead = why(e);
    port.postMessage({ id, trap: dead });
  }
});
