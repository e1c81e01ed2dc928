/**
 * The policy component in JavaScript's terms: `Policy` (a loaded build and its pure
 * functions) and `Handler` (the coordinator's metadata state machine), each instance in its
 * own worker thread with a deadline on every call, restored after a trap.
 * @module
 */

import { readFile } from 'node:fs/promises';
import { CitusHaError, InvalidInput, PolicyLoadError, PolicyTrap, SwapRefused } from './errors.js';
import { bundledBuild, buildFromBytes, compile } from './runtime/build.js';
import { DEFAULT_LIMITS, Sandbox, defaultLog } from './runtime/sandbox.js';
import { Batch } from './statements.js';
import { ViewWriter, viewText } from './view.js';

export const CONTRACT = '0.4.0';
const IFACE = `citus-ha:policy/policy@${CONTRACT}`;
const HOST_IMPORTS = ['citus-ha:policy/host', 'citus-ha:policy/types'];
/** A build that traps this many times in a row is replaced by the bundled one. */
export const TRAPS_BEFORE_FALLBACK = 2;

/** The validated `citus` config section. @typedef {{ group: number, database: string }} CitusConfig */
/** @typedef {{ name: string, slotType: string, database?: string, plugin?: string }} ReplicationSlot */
/** @typedef {{ password?: string, sslcert?: string, sslkey?: string }} SuperuserAuth */
/**
 * One bootstrap step; the host runs each with bound parameters.
 * @typedef {{ step: 'create-database', name: string } | { step: 'create-extension' }
 *   | { step: 'insert-authinfo', authinfo: string } | { step: 'set-coordinator-host', host: string, port: number }} BootstrapStep
 */
/**
 * What the policy did with a worker event. `ticket` is the opaque u64 `pollCompleted` reports.
 * @typedef {{ outcome: 'queued', ticket: bigint } | { outcome: 'unchanged' } | { outcome: 'discarded', reason: string }} EventOutcome
 */
/**
 * @typedef {object} Metrics
 * @property {number} deadlineRollbacks in-flight transactions rolled back at their deadline
 * @property {number} statements statements issued
 * @property {number} failedStatements and how many of them failed
 * @property {number} syncRetries add/remove refused while metadata was syncing, retried
 * @property {number} expiredEvents pauses dropped because their caller stopped waiting first
 * @property {number} queuedTasks tasks waiting now
 * @property {boolean} inFlight whether a transaction is open
 */
/** @typedef {import('./runtime/sandbox.js').Limits} Limits */
/** @typedef {import('./runtime/sandbox.js').LogSink} LogSink */
/** @typedef {import('./view.js').ClusterView} ClusterView */
/** @typedef {import('./statements.js').Results} Results */

/** @param {{ field: string, reason: string }} e */
const invalid = (e) => new InvalidInput(e.field, e.reason);

/** @param {{ ok?: any, err?: any }} r */
function checked(r) {
  if ('err' in r) throw invalid(r.err);
  return r.ok;
}

/** What a refusal says, without the field an import's refusal is filed under. @param {unknown} e */
const reasonOf = (e) => (e instanceof InvalidInput ? e.reason : /** @type {Error} */ (e).message);

let bundled = /** @type {Promise<Policy> | null} */ (null);

/** A loaded policy build: its pure functions, and handlers that run in its sandbox. */
export class Policy {
  /**
   * @internal
   * @param {import('./runtime/build.js').Build} build
   * @param {Record<string, WebAssembly.Module>} modules
   * @param {Required<Limits>} limits
   * @param {LogSink} log
   */
  constructor(build, modules, limits, log) {
    this.sha256 = build.sha256;
    this.source = build.source;
    this.contract = CONTRACT;
    this.limits = limits;
    this.log = log;
    /** @internal */
    this.js = build.js;
    /** @internal */
    this.modules = modules;
    /** @internal @type {Promise<Sandbox> | null} */
    this.functions = null;
    /** Idle workers of closed handlers, reused (with a fresh instance) by the next one. @internal @type {{ box: Sandbox, fresh: Promise<boolean> }[]} */
    this.idle = [];
    /** @internal */
    this.closed = false;
  }

  /**
   * The bundled build, or the component at `path` (transpiled on first use, then cached).
   * Refuses (`PolicyLoadError`) what is not a component of contract 0.4.0 or imports more
   * than the policy's log sink.
   * @param {string | null} [path]
   * @param {{ limits?: Limits, log?: LogSink }} [options]
   * @returns {Promise<Policy>}
   */
  static async load(path = null, { limits = {}, log = defaultLog } = {}) {
    if (path !== null && path !== undefined) {
      let bytes;
      try {
        bytes = new Uint8Array(await readFile(path));
      } catch (e) {
        throw new PolicyLoadError(`cannot read ${path}: ${/** @type {Error} */ (e).message}`);
      }
      return Policy.fromBytes(bytes, String(path), { limits, log });
    }
    return Policy.fromBuild(await bundledBuild('policy'), limits, log);
  }

  /**
   * A build from a component's bytes (`source` names it in messages).
   * @param {Uint8Array} bytes @param {string} source
   * @param {{ limits?: Limits, log?: LogSink }} [options]
   */
  static async fromBytes(bytes, source, { limits = {}, log = defaultLog } = {}) {
    return Policy.fromBuild(await buildFromBytes(bytes, source, 'policy'), limits, log);
  }

  /**
   * @internal
   * @param {import('./runtime/build.js').Build} build @param {Limits} limits @param {LogSink} log
   * @returns {Promise<Policy>}
   */
  static async fromBuild(build, limits, log) {
    if (!build.exports.includes(IFACE)) {
      throw new PolicyLoadError(`${build.source}: exports ${JSON.stringify(build.exports.filter((e) => e.includes(':')))}, `
        + `but this host runs contract ${CONTRACT} (${IFACE})`);
    }
    const extra = build.imports.filter((i) => !HOST_IMPORTS.includes(i.split('@')[0]));
    if (extra.length) {
      throw new PolicyLoadError(`${build.source}: imports ${JSON.stringify(extra)}; a policy may import only citus-ha:policy/host`);
    }
    const all = { ...DEFAULT_LIMITS, ...limits };
    return new Policy(build, await compile(build, all.maxMemoryBytes), all, log);
  }

  /** The bundled build with default limits, loaded once. */
  static bundled() {
    bundled ??= Policy.load().catch((e) => {
      bundled = null; // a later call tries again (e.g. after `npm run build`)
      throw e;
    });
    return bundled;
  }

  get label() { return `${this.contract}@${this.sha256.slice(0, 12)}`; }

  /**
   * A fresh instance in its own worker: an idle one re-instantiated (starting a worker costs
   * 30-150 ms, a new instance in it about 30), or a new worker.
   * @internal
   * @returns {Promise<Sandbox>}
   */
  async instance() {
    for (let idle = this.idle.pop(); idle; idle = this.idle.pop()) {
      if (await idle.fresh) return idle.box;
      idle.box.close();
    }
    return Sandbox.start({ js: this.js, modules: this.modules, iface: IFACE, label: this.label, limits: this.limits, log: this.log });
  }

  /**
   * A handler's worker it no longer needs: kept for reuse unless it trapped, its instance
   * replaced by a fresh one at once (so the old state's memory goes now, and the next handler
   * does not wait for it).
   * @internal @param {Sandbox} box
   */
  release(box) {
    if (box.dead === null && this.idle.length < 2 && !this.closed) {
      // Settled either way, never left rejected: a closed build's idle workers die unawaited.
      const fresh = box.call({ op: 'reset', name: 'reset' }).then(() => true, () => false);
      this.idle.push({ box, fresh });
    } else {
      box.close();
    }
  }

  /** @internal @param {string} name @param {any[]} args */
  async fn(name, ...args) {
    let box = this.functions ? await this.functions.catch(() => null) : null;
    if (!box || box.dead !== null) {
      this.functions = this.instance();
      box = await this.functions;
    }
    return box.call({ op: 'fn', name, args });
  }

  /** Name and version of this build. @returns {Promise<string>} */
  async version() { return (await this.fn('policyVersion')).ok; }

  /**
   * The `citus` config section (an object or its JSON), validated.
   * @param {object | string} section
   * @returns {Promise<CitusConfig>}
   */
  async validateConfig(section) {
    const { group, database } = checked(await this.fn('validateConfig', typeof section === 'string' ? section : JSON.stringify(section)));
    return { group, database };
  }

  /**
   * PostgreSQL parameters adjusted for Citus (values as PostgreSQL prints them).
   * @param {Record<string, string | number | boolean>} params
   * @param {string | null} [localHost]
   * @returns {Promise<Record<string, string>>}
   */
  async adjustGucs(params, localHost = null) {
    const text = (/** @type {unknown} */ v) => (typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v));
    const r = checked(await this.fn('adjustGucs', Object.entries(params).map(([k, v]) => [k, text(v)]), localHost ?? undefined));
    return Object.fromEntries(r);
  }

  /**
   * True when this slot belongs to Citus and must never be dropped.
   * @param {CitusConfig} config @param {boolean} isPrimary @param {ReplicationSlot} slot
   * @returns {Promise<boolean>}
   */
  async keepReplicationSlot(config, isPrimary, slot) {
    return (await this.fn('keepReplicationSlot', { group: config.group, database: config.database }, isPrimary,
      { name: slot.name, slotType: slot.slotType, database: slot.database ?? undefined, plugin: slot.plugin ?? undefined })).ok;
  }

  /**
   * The statements that prepare a new node for Citus.
   * @param {CitusConfig} config @param {string} defaultDatabase
   * @param {SuperuserAuth} [auth] @param {string | null} [connectUrl]
   * @returns {Promise<BootstrapStep[]>}
   */
  async bootstrapPlan(config, defaultDatabase, auth = {}, connectUrl = null) {
    const steps = checked(await this.fn('bootstrapPlan', { group: config.group, database: config.database }, defaultDatabase,
      { password: auth.password ?? undefined, sslcert: auth.sslcert ?? undefined, sslkey: auth.sslkey ?? undefined },
      connectUrl ?? undefined));
    return steps.map((/** @type {{ tag: string, val: any }} */ s) => {
      switch (s.tag) {
        case 'create-database': return { step: s.tag, name: s.val };
        case 'insert-authinfo': return { step: s.tag, authinfo: s.val };
        case 'set-coordinator-host': return { step: s.tag, host: s.val[0], port: s.val[1] };
        default: return { step: 'create-extension' };
      }
    });
  }

  /**
   * A fresh state machine for this node.
   * @param {CitusConfig} config @param {string} name @param {string} connectUrl
   */
  handler(config, name, connectUrl) { return Handler.create(this, config, name, connectUrl); }

  /** A state machine continuing from an exported state (`InvalidInput` if refused). @param {string} state */
  importHandler(state) { return Handler.fromState(this, state); }

  /** Stops the worker of the pure functions (handlers have their own). */
  async close() {
    this.closed = true;
    const f = this.functions;
    this.functions = null;
    for (const { box } of this.idle.splice(0)) box.close();
    if (f) (await f.catch(() => null))?.close();
  }
}

/**
 * The coordinator's metadata state machine, in the policy's sandbox.
 *
 * Inputs go in (heartbeats, worker events, results, demote, reload), statements come out.
 * When a call traps or passes its deadline, the Handler rejects with `PolicyTrap` after
 * replacing its worker: restored from its last `snapshot()`, or (without one) a fresh handler
 * that reloads pg_dist_node first; when the build traps twice in a row, from the bundled
 * build instead.
 */
export class Handler {
  /**
   * @internal
   * @param {Policy} policy @param {Sandbox} box
   * @param {{ config: CitusConfig, name: string, connectUrl: string } | null} identity
   */
  constructor(policy, box, identity) {
    /** The build this handler runs now (it changes on a swap or a fallback). */
    this.policy = policy;
    /** @internal */
    this.box = box;
    /** @internal */
    this.identity = identity;
    /** @internal */
    this.writer = new ViewWriter();
    /** @internal @type {string | null} */
    this.lastSnapshot = null;
    /** @internal */
    this.consecutiveTraps = 0;
    /** How many calls trapped since this handler began. */
    this.traps = 0;
    /** The build used when this one keeps trapping (null: the bundled build). @type {Policy | null} */
    this.fallback = null;
  }

  /** @internal @param {Policy} policy @param {CitusConfig} config @param {string} name @param {string} connectUrl */
  static async create(policy, config, name, connectUrl) {
    const box = await policy.instance();
    try {
      await box.call({ op: 'new', name: 'Handler', args: [{ group: config.group, database: config.database }, name, connectUrl] });
    } catch (e) {
      box.close();
      throw e;
    }
    return new Handler(policy, box, { config, name, connectUrl });
  }

  /**
   * @internal
   * @param {Policy} policy @param {string} state
   * @param {{ config: CitusConfig, name: string, connectUrl: string } | null} [identity]
   */
  static async fromState(policy, state, identity = null) {
    const box = await policy.instance();
    let r;
    try {
      r = await box.call({ op: 'static', name: 'Handler.importState', args: [state] });
    } catch (e) {
      box.close();
      throw e;
    }
    if ('err' in r) {
      box.close();
      throw new InvalidInput('state', String(r.err));
    }
    const h = new Handler(policy, box, identity);
    h.lastSnapshot = state;
    return h;
  }

  /** @internal @param {string} name @param {any[]} args */
  async call(name, ...args) {
    try {
      return await this.box.call({ op: 'method', name, args });
    } catch (e) {
      if (!(e instanceof PolicyTrap)) throw e;
      this.traps++;
      this.consecutiveTraps++;
      await this.recover();
      throw e;
    }
  }

  /** @internal */
  async recover() {
    let build = this.policy;
    if (this.consecutiveTraps >= TRAPS_BEFORE_FALLBACK) {
      try {
        build = this.fallback ?? await Policy.load(null, { limits: this.policy.limits, log: this.policy.log });
      } catch (e) {
        this.policy.log('error', `no build to fall back to: ${/** @type {Error} */ (e).message}`, this.policy.label);
      }
      if (build.sha256 !== this.policy.sha256) {
        this.policy.log('warn', `the policy keeps trapping; falling back to ${build.source}`, this.policy.label);
      }
    }
    this.writer.reset();
    if (this.lastSnapshot !== null) {
      try {
        this.adopt(await Handler.fromState(build, this.lastSnapshot, this.identity));
        return;
      } catch (e) {
        this.policy.log('error', `cannot restore the last snapshot: ${/** @type {Error} */ (e).message}`, this.policy.label);
      }
    }
    if (!this.identity) throw new CitusHaError('the handler cannot be restored: no snapshot and no identity');
    const { config, name, connectUrl } = this.identity;
    const h = await Handler.create(build, config, name, connectUrl);
    await h.box.call({ op: 'method', name: 'scheduleReload' });
    this.adopt(h);
  }

  /** @internal @param {Handler} other */
  adopt(other) {
    if (other.policy.sha256 !== this.policy.sha256) this.consecutiveTraps = 0;
    this.policy.release(this.box);
    this.policy = other.policy;
    this.box = other.box;
  }

  /**
   * Exports the state and keeps it as the point to restore after a trap (the `Agent` does
   * this after every turn).
   */
  async snapshot() {
    this.lastSnapshot = await this.exportState();
    this.consecutiveTraps = 0;
    return this.lastSnapshot;
  }

  /**
   * Hot swap: export, import into `policy`, warm up, and only then switch. Rejects with
   * `SwapRefused` (this handler keeps running) if any step fails.
   * @param {Policy} policy
   * @param {{ now: number, view: ClusterView } | null} [warmup] a heartbeat the candidate must
   *   take first (on its own copy: the switch happens only if it succeeds)
   */
  async replace(policy, warmup = null) {
    let state;
    try {
      state = await this.exportState();
    } catch (e) {
      throw new SwapRefused(`the running policy could not export its state: ${/** @type {Error} */ (e).message}`, { cause: e });
    }
    let next;
    let accepted = state;
    try {
      next = await Handler.fromState(policy, state, this.identity);
    } catch (first) {
      // A build older than the compact format reads only JSON: offer that.
      try {
        accepted = await this.exportState('json');
        next = await Handler.fromState(policy, accepted, this.identity);
      } catch (e) {
        throw new SwapRefused(`state import failed: ${reasonOf(first)}; as JSON: ${reasonOf(e)}`, { cause: e });
      }
    }
    const refuse = (/** @type {string} */ why, /** @type {unknown} */ e) => {
      policy.release(next.box);
      return new SwapRefused(`warm-up failed: ${why}${reasonOf(e)}`, { cause: e });
    };
    try {
      await next.box.call({ op: 'method', name: 'pollTimeout' });
      await next.box.call({ op: 'fn', name: 'policyVersion' });
    } catch (e) {
      throw refuse('', e);
    }
    if (warmup) {
      // On a copy: the heartbeat's effects (queued tasks) must not reach the real one.
      let probe;
      try {
        probe = await Handler.fromState(policy, accepted, this.identity);
      } catch (e) {
        throw refuse('second import: ', e);
      }
      try {
        await probe.box.call({ op: 'method', name: 'handleHeartbeat', args: [BigInt(warmup.now), viewText(warmup.view)] });
      } catch (e) {
        throw refuse('heartbeat on the current view: ', e);
      } finally {
        policy.release(probe.box);
      }
    }
    this.policy.release(this.box);
    this.policy = policy;
    this.box = next.box;
    this.writer.reset();
    this.lastSnapshot = state;
    this.consecutiveTraps = 0;
  }

  /**
   * Reconcile with this DCS view (coordinator only).
   * @param {number} now ms on the caller's monotonic clock
   * @param {ClusterView} view
   */
  async heartbeat(now, view) {
    const text = this.writer.write(view);
    let r;
    try {
      r = await this.call('handleHeartbeat', BigInt(now), text);
    } catch (e) {
      this.writer.reset();
      throw e;
    }
    if ('err' in r) {
      this.writer.reset();
      throw invalid(r.err);
    }
  }

  /**
   * A worker's REST event (the JSON body as received, or an object) with the DCS view now.
   * @param {number} now @param {ClusterView} view @param {string | object} body
   * @returns {Promise<EventOutcome>}
   */
  async event(now, view, body) {
    const o = checked(await this.call('handleEvent', BigInt(now), viewText(view), typeof body === 'string' ? body : JSON.stringify(body)));
    if (o.tag === 'queued') return { outcome: 'queued', ticket: o.val };
    if (o.tag === 'discarded') return { outcome: 'discarded', reason: o.val };
    return { outcome: 'unchanged' };
  }

  /** The metadata cache must be reloaded before the next decision. */
  async scheduleReload() { await this.call('scheduleReload'); }

  /** This coordinator stopped being the leader: forget everything. */
  async demote() { await this.call('handleDemote'); }

  /** This node's connection URL changed (used from the next heartbeat on). @param {string} url */
  async setConnectUrl(url) {
    checked(await this.call('setConnectUrl', url));
    if (this.identity) this.identity = { ...this.identity, connectUrl: url };
  }

  /**
   * The first statements of a turn (empty: nothing to do); then each `handleResults`
   * answers with the next batch.
   * @param {number} now
   */
  async pollStatements(now) { return new Batch((await this.call('pollStatements', BigInt(now))).ok); }

  /**
   * The results of the last batch, in order, up to the first that failed; answers with the
   * next batch (empty: this turn is over).
   * @param {number} now @param {Results} results
   */
  async handleResults(now, results) { return new Batch(checked(await this.call('handleResults', BigInt(now), results.text))); }

  /** When the host must run a turn even without new input (ms), or null. @returns {Promise<number | null>} */
  async pollTimeout() {
    const t = (await this.call('pollTimeout')).ok;
    return t === undefined || t === null ? null : Number(t);
  }

  /** Tickets whose tasks were processed since the last call. @returns {Promise<bigint[]>} */
  async pollCompleted() { return [...(await this.call('pollCompleted')).ok]; }

  /** @returns {Promise<Metrics>} */
  async metrics() {
    const m = (await this.call('metrics')).ok;
    return {
      deadlineRollbacks: Number(m.deadlineRollbacks), statements: Number(m.statements),
      failedStatements: Number(m.failedStatements), syncRetries: Number(m.syncRetries),
      expiredEvents: Number(m.expiredEvents), queuedTasks: m.queuedTasks, inFlight: m.inFlight,
    };
  }

  /**
   * The state: `compact` (base64 of state format 2) or `json` (format 1, which every build
   * reads).
   * @param {'compact' | 'json'} [format]
   * @returns {Promise<string>}
   */
  async exportState(format = 'compact') {
    if (format !== 'compact' && format !== 'json') throw new InvalidInput('format', "must be 'compact' or 'json'");
    return (await this.call('exportState', format)).ok;
  }

  /** Ends this handler; its worker goes back to its build for reuse. */
  close() { this.policy.release(this.box); }
}
