/**
 * A component build made runnable in Node: jco's transpiled JavaScript and core modules,
 * compiled once with their memory capped. The bundled builds are transpiled by `npm run
 * build` into `generated/`; any other component is transpiled off the main thread on first
 * use and kept under the user's cache directory (keyed by its sha256 and the jco version).
 * @module
 */

import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { PolicyLoadError } from '../errors.js';
import { capMemory } from './wasm.js';

/** jco-transpile's version: transpiled output is only valid for the bindgen that wrote it. */
export const TRANSPILER = 'jco-transpile-0.15.0';
export const GENERATED = fileURLToPath(new URL('../../generated/', import.meta.url));
const TRANSPILE_TIMEOUT_MS = 120_000;

/**
 * @typedef {object} Build
 * @property {string} sha256 of the component's bytes
 * @property {string} source where it came from (`bundled` or a path)
 * @property {string} js the transpiled module's text
 * @property {Record<string, Uint8Array>} cores its core wasm modules by file name
 * @property {string[]} imports interfaces it imports
 * @property {string[]} exports interfaces it exports
 */

/** @param {string} dir @param {string} source @returns {Promise<Build>} */
async function readDir(dir, source) {
  const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8'));
  /** @type {Record<string, Uint8Array>} */
  const cores = {};
  let js = '';
  for (const f of await readdir(dir)) {
    if (f.endsWith('.wasm')) cores[f] = new Uint8Array(await readFile(join(dir, f)));
    else if (f === meta.js) js = await readFile(join(dir, f), 'utf8');
  }
  return { sha256: meta.sha256, source, js, cores, imports: meta.imports, exports: meta.exports };
}

/**
 * Writes a transpiled build into `dir` (replacing it whole), with the meta.json `readDir`
 * reads. Used by `npm run build` and by the cache.
 * @param {string} dir
 * @param {{ files: Record<string, Uint8Array>, imports: string[], exports: string[] }} t
 * @param {string} name the build's base name (`policy`, `sim`)
 * @param {string} sha256
 */
export async function writeBuild(dir, t, name, sha256) {
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  for (const [f, data] of Object.entries(t.files)) {
    if (f.includes('/') || f.endsWith('.d.ts')) continue;
    await writeFile(join(tmp, f), data);
  }
  await writeFile(join(tmp, 'meta.json'), JSON.stringify({
    sha256, js: `${name}.js`, imports: t.imports, exports: t.exports, transpiler: TRANSPILER,
  }, null, 2));
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
}

/** @type {{ worker: Worker, next: number, pending: Map<number, (m: any) => void> } | null} */
let transpiler = null;

function transpileWorker() {
  if (!transpiler) {
    const worker = new Worker(new URL('./transpile-worker.js', import.meta.url));
    /** @type {Map<number, (m: any) => void>} */
    const pending = new Map();
    const t = { worker, next: 0, pending };
    const fail = (/** @type {string} */ why) => {
      if (transpiler === t) transpiler = null;
      for (const done of pending.values()) done({ error: why });
      pending.clear();
    };
    worker.on('message', (m) => {
      const done = pending.get(m.id);
      pending.delete(m.id);
      if (pending.size === 0) worker.unref();
      done?.(m);
    });
    worker.on('error', (e) => fail(`the transpiler failed: ${e.message}`));
    worker.on('exit', () => fail('the transpiler exited'));
    worker.unref();
    transpiler = t;
  }
  return transpiler;
}

/**
 * Transpiles in the shared worker thread, bounded in time.
 * @param {Uint8Array} bytes @param {string} name @param {string} source
 * @returns {Promise<{ files: Record<string, Uint8Array>, imports: string[], exports: string[] }>}
 */
export function transpile(bytes, name, source) {
  const t = transpileWorker();
  const id = t.next++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      t.pending.delete(id);
      t.worker.terminate();
      reject(new PolicyLoadError(`${source}: transpiling took longer than ${TRANSPILE_TIMEOUT_MS / 1000} s`));
    }, TRANSPILE_TIMEOUT_MS);
    t.pending.set(id, (m) => {
      clearTimeout(timer);
      if (m.error) reject(new PolicyLoadError(`${source}: not a component jco can run: ${m.error}`));
      else resolve(m);
    });
    t.worker.ref();
    t.worker.postMessage({ id, bytes, name });
  });
}

function cacheDir() {
  const base = process.env.XDG_CACHE_HOME || (process.env.HOME || homedir() ? join(process.env.HOME || homedir(), '.cache') : null);
  return base ? join(base, 'citus-ha', 'js', TRANSPILER) : null;
}

/**
 * A build from component bytes (transpiled, or read from the cache).
 * @param {Uint8Array} bytes @param {string} source @param {string} name
 * @returns {Promise<Build>}
 */
export async function buildFromBytes(bytes, source, name) {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d
    || bytes[6] !== 1 || bytes[7] !== 0) {
    throw new PolicyLoadError(`${source}: not a WebAssembly component`);
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const cache = cacheDir();
  const dir = cache ? join(cache, `${name}-${sha256}`) : null;
  if (dir) {
    try {
      return { ...(await readDir(dir, source)), sha256 };
    } catch { /* not cached yet */ }
  }
  const t = await transpile(bytes, name, source);
  if (dir) {
    try {
      await writeBuild(dir, t, name, sha256);
      return { ...(await readDir(dir, source)), sha256 };
    } catch { /* an unwritable cache only costs the next load a transpile */ }
  }
  const js = new TextDecoder().decode(t.files[`${name}.js`]);
  /** @type {Record<string, Uint8Array>} */
  const cores = {};
  for (const [f, data] of Object.entries(t.files)) if (f.endsWith('.wasm')) cores[f] = data;
  return { sha256, source, js, cores, imports: t.imports, exports: t.exports };
}

/**
 * The build `npm run build` put in generated/NAME.
 * @param {string} name
 * @returns {Promise<Build>}
 */
export async function bundledBuild(name) {
  try {
    return await readDir(join(GENERATED, name), 'bundled');
  } catch (e) {
    throw new PolicyLoadError(`the bundled ${name} component is missing (${/** @type {Error} */ (e).message}): `
      + 'run `npm run build` in js/ (it transpiles target/guest/*.component.wasm)');
  }
}

/**
 * Its core modules compiled (off the main thread, by V8), every memory capped.
 * @param {Build} build @param {number} maxMemoryBytes
 * @returns {Promise<Record<string, WebAssembly.Module>>}
 */
export async function compile(build, maxMemoryBytes) {
  const pages = Math.max(1, Math.floor(maxMemoryBytes / 65536));
  /** @type {Record<string, WebAssembly.Module>} */
  const out = {};
  for (const [f, bytes] of Object.entries(build.cores)) {
    try {
      out[f] = await WebAssembly.compile(capMemory(bytes, pages));
    } catch (e) {
      throw new PolicyLoadError(`${build.source}: ${f} does not compile: ${/** @type {Error} */ (e).message}`);
    }
  }
  return out;
}
