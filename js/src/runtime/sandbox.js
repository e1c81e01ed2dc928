/**
 * The sandbox: a component instance in its own worker thread. V8 has no fuel, epoch or
 * per-instance memory limit, so every call has a deadline after which the worker is
 * terminated, the worker's JavaScript heap is bounded by `resourceLimits`, and the guest's
 * linear memory by the maximum its modules were compiled with. The main thread only ever
 * awaits: a guest that loops or allocates never stops it from answering.
 * @module
 */

import { Worker } from 'node:worker_threads';
import { PolicyTrap } from '../errors.js';

/**
 * Bounds on every instance.
 * @typedef {object} Limits
 * @property {number} [callTimeoutMs] a call's deadline (default 2000 ms: a heartbeat of 1000
 *   groups takes about 20)
 * @property {number} [startTimeoutMs] starting a worker and instantiating (default 10 s)
 * @property {number} [maxMemoryBytes] the guest's linear memory (default 256 MiB)
 * @property {number} [maxHeapMb] the worker's JavaScript heap (default 64 MiB)
 */

/** @type {Required<Limits>} */
export const DEFAULT_LIMITS = Object.freeze({
  callTimeoutMs: 2000, startTimeoutMs: 10_000, maxMemoryBytes: 256 << 20, maxHeapMb: 64,
});

/** @typedef {(level: 'debug' | 'info' | 'warn' | 'error', message: string, build: string) => void} LogSink */

/** Policy log lines at warn and error go to stderr unless the embedder gives a sink. @type {LogSink} */
export const defaultLog = (level, message, build) => {
  if (level === 'warn' || level === 'error') process.stderr.write(`${level}: ${message} (${build})\n`);
};

/**
 * @typedef {object} Call
 * @property {'fn' | 'new' | 'static' | 'method' | 'reset'} op
 * @property {string} name
 * @property {any[]} [args]
 */

export class Sandbox {
  /**
   * @param {Worker} worker @param {string} label @param {Required<Limits>} limits
   */
  constructor(worker, label, limits) {
    this.worker = worker;
    this.label = label;
    this.limits = limits;
    /** Why this sandbox cannot be used any more (null: it can). @type {string | null} */
    this.dead = null;
    this.nextId = 0;
    /** @type {Map<number, { resolve: (v: any) => void, reject: (e: Error) => void, timer: NodeJS.Timeout, name: string }>} */
    this.pending = new Map();
    /** Calls run one after another: a deadline counts only the call's own time. */
    this.tail = Promise.resolve();
  }

  /**
   * Starts a worker with this component instantiated.
   * @param {{ js: string, modules: Record<string, WebAssembly.Module>, iface: string, label: string,
   *   limits: Required<Limits>, log?: LogSink }} o
   * @returns {Promise<Sandbox>}
   */
  static start({ js, modules, iface, label, limits, log = defaultLog }) {
    const worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { js, modules, iface, label },
      resourceLimits: { maxOldGenerationSizeMb: limits.maxHeapMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
      stdout: false, stderr: false,
    });
    const box = new Sandbox(worker, label, limits);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        box.kill(`starting took longer than ${limits.startTimeoutMs} ms`);
        reject(new PolicyTrap(`starting took longer than ${limits.startTimeoutMs} ms`, label));
      }, limits.startTimeoutMs);
      const onStartError = (/** @type {Error} */ e) => {
        clearTimeout(timer);
        box.kill(e.message);
        reject(new PolicyTrap(`cannot start: ${e.message}`, label));
      };
      worker.once('error', onStartError);
      worker.on('message', (m) => {
        if (m.log) {
          log(m.log[0], m.log[1], label);
        } else if (m.ready) {
          clearTimeout(timer);
          worker.off('error', onStartError);
          worker.on('error', (e) => box.kill(`the worker failed: ${e.message}`));
          worker.on('exit', (code) => box.kill(`the worker exited (${code})`));
          worker.unref();
          resolve(box);
        } else if (m.fatal) {
          clearTimeout(timer);
          box.kill(m.fatal);
          reject(new PolicyTrap(`cannot instantiate: ${m.fatal}`, label));
        } else {
          box.settle(m);
        }
      });
    });
  }

  /** @param {{ id: number, value?: any, err?: any, trap?: string }} m */
  settle(m) {
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    clearTimeout(p.timer);
    if (m.trap !== undefined) {
      this.kill(m.trap);
      p.reject(new PolicyTrap(m.trap, this.label, p.name));
    } else if ('err' in m) {
      p.resolve({ err: m.err });
    } else {
      p.resolve({ ok: m.value });
    }
  }

  /**
   * Ends the worker; every call still waiting fails with this reason.
   * @param {string} why
   */
  kill(why) {
    if (this.dead === null) this.dead = why;
    this.worker.terminate().catch(() => {});
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(new PolicyTrap(why, this.label, p.name));
    }
  }

  /**
   * One call, answered `{ok}` or `{err}` (a `result`'s error payload); a trap, a passed
   * deadline or a dead worker rejects with `PolicyTrap` and the sandbox is dead.
   * @param {Call} call
   * @returns {Promise<{ ok?: any, err?: any }>}
   */
  call(call) {
    const run = () => this.post(call);
    const p = this.tail.then(run, run);
    this.tail = p.then(() => {}, () => {});
    return p;
  }

  /** @param {Call} call @returns {Promise<{ ok?: any, err?: any }>} */
  post({ op, name, args = [] }) {
    if (this.dead !== null) {
      return Promise.reject(new PolicyTrap(`this instance is gone (${this.dead})`, this.label, name));
    }
    const id = this.nextId++;
    const ms = this.limits.callTimeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.kill(`call exceeded its time budget (${ms} ms)`);
        reject(new PolicyTrap('call exceeded its time budget', this.label, name));
      }, ms);
      // The deadline's timer keeps the process alive while a call is out; the worker itself
      // never does (it is unref'd), so an idle handler does not hold a CLI open.
      this.pending.set(id, { resolve, reject, timer, name });
      this.worker.postMessage({ id, op, name, args });
    });
  }

  close() {
    this.kill('closed');
  }
}
