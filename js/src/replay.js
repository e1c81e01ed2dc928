/**
 * `citus-ha replay FILE`: the scenario format (docs/scenario-format.md) driven through the
 * same `Agent`, `Handler` and simulator component as everything else, printing what the Rust
 * host's `citus-ha replay` prints, byte for byte: one line per statement, `note` lines, the
 * final pg_dist_node; exit status 2 for a malformed scenario, 1 when something outside it
 * failed.
 * @module
 */

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Agent } from './agent.js';
import { CitusHaError, InvalidInput, PolicyTrap } from './errors.js';
import { JsonNumber, parse, stringify } from './json.js';
import { Policy } from './policy.js';
import { FaultySession, PgSession, SimSession } from './session.js';
import { KINDS, rowToList, statementLine } from './statements.js';
import { clusterFromDcs } from './view.js';

/** @typedef {import('./json.js').JsonValue} JsonValue */
/** @typedef {import('./view.js').ClusterView} ClusterView */
/** @typedef {import('./statements.js').PgDistRow} PgDistRow */
/** @typedef {import('./statements.js').Statement} Statement */
/** @typedef {import('./statements.js').StatementResult} StatementResult */

/** A malformed scenario: which line and what is wrong. */
export class ScenarioError extends CitusHaError {
  /** @param {number} line @param {string} message */
  constructor(line, message) {
    super(`line ${line}: ${message}`);
    this.line = line;
    this.detail = message;
  }
}

/**
 * One step of a scenario.
 * @typedef {{ line: number } & ({ op: 'config', citus: JsonValue, name: string, connUrl: string }
 *   | { op: 'metadata', rows: PgDistRow[] } | { op: 'sync', cluster: ClusterView }
 *   | { op: 'event', cluster: ClusterView, event: string } | { op: 'run' | 'demote' | 'rebuild' }
 *   | { op: 'advance', ms: number } | { op: 'fail', kind: string, error: string }
 *   | { op: 'swap', path: string })} Step
 */

/** @param {Record<string, JsonValue>} o @param {string} op @param {string} name */
function field(o, op, name) {
  if (!(name in o)) throw new Error(`\`${op}\` needs the field \`${name}\``);
  return o[name];
}

/** @param {Record<string, JsonValue>} o @param {string} op @param {string} name */
function string(o, op, name) {
  const v = field(o, op, name);
  if (typeof v !== 'string') throw new Error(`\`${op}\`: \`${name}\` must be a string`);
  return v;
}

/** @param {unknown} v */
const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof JsonNumber);

/** Rust's `{:?}` of a string, near enough for a message. @param {string} s */
const debug = (s) => JSON.stringify(s);

/** @param {JsonValue} v @returns {PgDistRow} */
function row(v) {
  if (!Array.isArray(v) || v.length !== 5) throw new Error('must be [nodeid, groupid, "nodename", nodeport, "noderole"]');
  const int = (/** @type {number} */ i, /** @type {string} */ what) => {
    const x = v[i];
    if (!(x instanceof JsonNumber) || !x.integer || x.value < -(2 ** 31) || x.value >= 2 ** 31) {
      throw new Error(`${what} must be an integer`);
    }
    return x.value;
  };
  const role = v[4];
  if (role !== 'primary' && role !== 'secondary' && role !== 'unavailable') {
    throw new Error('noderole must be "primary", "secondary" or "unavailable"');
  }
  const nodeid = int(0, 'nodeid');
  const groupid = int(1, 'groupid');
  if (typeof v[2] !== 'string') throw new Error('nodename must be a string');
  return { nodeid, groupid, nodename: v[2], nodeport: int(3, 'nodeport'), noderole: role };
}

/** @param {JsonValue} v @param {string} op */
function cluster(v, op) {
  try {
    return clusterFromDcs(v);
  } catch (e) {
    if (e instanceof InvalidInput) throw new Error(`\`${op}\`: ${e.message}`);
    throw e;
  }
}

/** @param {JsonValue} v @param {number} line @returns {Step} */
function step(v, line) {
  if (!isObject(v)) throw new Error('a step must be a JSON object');
  const o = /** @type {Record<string, JsonValue>} */ (v);
  if (!('op' in o)) throw new Error('the step has no `op`');
  const op = o.op;
  if (typeof op !== 'string') throw new Error('`op` must be a string');
  switch (op) {
    case 'config': {
      const citus = field(o, op, 'citus');
      if (!isObject(citus)) throw new Error('`config`: `citus` must be an object');
      const connUrl = string(o, op, 'conn_url');
      return { line, op, citus, connUrl, name: string(o, op, 'name') };
    }
    case 'metadata': {
      const rows = field(o, op, 'rows');
      if (!Array.isArray(rows)) throw new Error('`metadata`: `rows` must be a list');
      const out = rows.map((r, i) => {
        try {
          return row(r);
        } catch (e) {
          throw new Error(`\`metadata\`: rows[${i}]: ${/** @type {Error} */ (e).message}`);
        }
      });
      // pg_dist_node has both as unique keys: such a table cannot exist.
      out.forEach((r, i) => {
        const j = out.slice(0, i).findIndex((x) => x.nodeid === r.nodeid);
        if (j >= 0) throw new Error(`\`metadata\`: rows[${i}] repeats nodeid ${r.nodeid} of rows[${j}]`);
        const k = out.slice(0, i).findIndex((x) => x.nodename === r.nodename && x.nodeport === r.nodeport);
        if (k >= 0) throw new Error(`\`metadata\`: rows[${i}] repeats the address ${r.nodename}:${r.nodeport} of rows[${k}]`);
      });
      return { line, op, rows: out };
    }
    case 'sync':
      return { line, op, cluster: cluster(field(o, op, 'cluster'), op) };
    case 'event':
      return { line, op, cluster: cluster(field(o, op, 'cluster'), op), event: stringify(field(o, op, 'event')) };
    case 'run': case 'demote': case 'rebuild':
      return { line, op };
    case 'advance': {
      const s = field(o, op, 'seconds');
      if (!(s instanceof JsonNumber)) throw new Error('`advance`: `seconds` must be a number');
      if (!(s.value >= 0 && s.value <= 1e9)) throw new Error(`\`advance\`: \`seconds\` must be 0 or more, got ${s.value}`);
      return { line, op, ms: Math.round(s.value * 1000) };
    }
    case 'fail': {
      const kind = string(o, op, 'match');
      if (!KINDS.includes(kind)) throw new Error(`\`fail\`: \`match\` must be one of ${KINDS.join(', ')}, got ${debug(kind)}`);
      return { line, op, kind, error: string(o, op, 'error') };
    }
    case 'swap':
      return { line, op, path: string(o, op, 'path') };
    default:
      throw new Error(`unknown op ${debug(op)}`);
  }
}

/**
 * Parses a whole scenario; the first step must be `config`. Throws `ScenarioError`.
 * @param {string} text
 * @returns {Step[]}
 */
export function parseScenario(text) {
  /** @type {Step[]} */
  const steps = [];
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, i) => {
    const line = i + 1;
    const t = (raw.endsWith('\r') ? raw.slice(0, -1) : raw).trim();
    if (!t || t.startsWith('#')) return;
    let v;
    try {
      v = parse(t);
    } catch (e) {
      throw new ScenarioError(line, `not valid JSON: ${/** @type {Error} */ (e).message}`);
    }
    let s;
    try {
      s = step(v, line);
    } catch (e) {
      throw new ScenarioError(line, /** @type {Error} */ (e).message);
    }
    if (steps.length === 0 && s.op !== 'config') throw new ScenarioError(line, 'the first step must be {"op":"config",...}');
    if (steps.length > 0 && s.op === 'config') throw new ScenarioError(line, '`config` may appear only once, as the first step');
    steps.push(s);
  });
  if (steps.length === 0) throw new ScenarioError(0, 'the scenario has no steps (it must start with a `config` step)');
  return steps;
}

/**
 * The documented output line for a statement and its result.
 * @param {Statement} s @param {StatementResult} r
 */
export function outputLine(s, r) {
  const line = statementLine(s);
  if (r.result === 'failed') return `${line.slice(0, -1)},"error":${JSON.stringify(r.message)}}`;
  if (r.result === 'rolled_back') return `${line.slice(0, -1)},"error":"COMMIT answered ROLLBACK"}`;
  return line;
}

/** The `final` line: rows sorted by nodeid. @param {PgDistRow[]} rows */
export function finalLine(rows) {
  return `{"final":${JSON.stringify([...rows].sort((a, b) => a.nodeid - b.nodeid).map(rowToList))}}`;
}

/**
 * @typedef {object} ReplayOptions
 * @property {Policy} policy the build to replay with
 * @property {string | null} [db] a PostgreSQL URL instead of the simulator
 * @property {number} [dbTimeoutMs] bound of each connect and statement there
 * @property {(text: string) => void} out stdout
 * @property {(text: string) => void} err stderr
 * @property {Map<string, Policy>} [builds] loaded builds by sha256, reused by `swap` steps
 *   (a batch swaps to the same few builds again and again)
 */

/**
 * Runs a parsed scenario, writing its output. Throws `ScenarioError` for what makes the
 * scenario malformed only once it runs (an invalid config, a `metadata` step with a db).
 * @param {Step[]} steps
 * @param {ReplayOptions} o
 */
export async function replay(steps, { policy, db = null, dbTimeoutMs = 10_000, out, err, builds = new Map() }) {
  if (db !== null) {
    const m = steps.find((s) => s.op === 'metadata');
    if (m) throw new ScenarioError(m.line, 'a `metadata` step only works with the simulator, not with --db');
  }
  const first = /** @type {Extract<Step, { op: 'config' }>} */ (steps[0]);
  let config;
  try {
    config = await policy.validateConfig(stringify(first.citus));
  } catch (e) {
    if (e instanceof InvalidInput) throw new ScenarioError(first.line, `invalid config: ${e.message}`);
    throw e;
  }
  const handler = await policy.handler(config, first.name, first.connUrl);
  try {
    // The coordinator registers its own row from this URL: refuse a bad one as the Rust host
    // does when it parses the scenario.
    await handler.setConnectUrl(first.connUrl);
  } catch (e) {
    handler.close();
    if (e instanceof InvalidInput) throw new ScenarioError(first.line, `\`config\`: \`conn_url\`: ${e.reason}`);
    throw e;
  }
  const inner = db === null ? await SimSession.create() : new PgSession(db, { connectTimeoutMs: dbTimeoutMs, statementTimeoutMs: dbTimeoutMs });
  const session = new FaultySession(inner);
  const agent = new Agent(handler, session);
  const note = (/** @type {string} */ text) => out(`${JSON.stringify({ note: text })}\n`);
  let now = 0;
  try {
    for (const s of steps.slice(1)) {
      try {
        switch (s.op) {
          case 'metadata':
            /** @type {SimSession} */ (session.inner).setRows(s.rows);
            break;
          case 'sync':
            await agent.heartbeat(now, s.cluster);
            break;
          case 'event': {
            let outcome;
            try {
              outcome = await agent.event(now, s.cluster, s.event);
            } catch (e) {
              if (!(e instanceof InvalidInput)) throw e;
              note(`line ${s.line}: event refused: ${e.message}`);
              break;
            }
            if (outcome.outcome === 'discarded') err(`line ${s.line}: event discarded: ${outcome.reason}\n`);
            break;
          }
          case 'run': {
            /** @type {string[]} */
            const lines = [];
            try {
              await agent.runTurn(now, (st, r) => lines.push(outputLine(st, r)));
            } finally {
              for (const l of lines) out(`${l}\n`);
            }
            break;
          }
          case 'advance':
            now += s.ms;
            break;
          case 'fail':
            session.arm(s.kind, s.error);
            break;
          case 'demote':
            await agent.demote();
            break;
          case 'rebuild':
            await agent.scheduleReload();
            break;
          case 'swap':
            try {
              let bytes;
              try {
                bytes = await readFile(s.path);
              } catch (e) {
                note(`line ${s.line}: swap refused: cannot read ${s.path}: ${ioMessage(e)}`);
                break;
              }
              const sha = createHash('sha256').update(bytes).digest('hex');
              let candidate = builds.get(sha) ?? (sha === policy.sha256 ? policy : undefined);
              if (!candidate) {
                candidate = await Policy.fromBytes(new Uint8Array(bytes), s.path, { limits: policy.limits, log: policy.log });
                builds.set(sha, candidate);
              }
              await agent.handler.replace(candidate, agent.lastView ? { now, view: agent.lastView.view } : null);
            } catch (e) {
              if (!(e instanceof CitusHaError) || e instanceof PolicyTrap) throw e;
              note(`line ${s.line}: swap refused: ${swapReason(e)}`);
            }
            break;
          default:
            break;
        }
      } catch (e) {
        if (!(e instanceof PolicyTrap)) throw e;
        note(`line ${s.line}: ${e.message}`);
      }
    }
    out(`${finalLine(await session.rows())}\n`);
  } finally {
    agent.close();
    if (inner instanceof PgSession) await inner.close();
  }
}

/** @param {Error} e */
function swapReason(e) {
  return e.message;
}

/**
 * An I/O error as Rust's `std::io::Error` prints it (`No such file or directory (os error
 * 2)`), so a refused swap's note reads the same in every host.
 * @param {any} e
 */
export function ioMessage(e) {
  const m = /^[A-Z]+: ([^,]+)/.exec(String(e?.message ?? ''));
  if (!m || typeof e.errno !== 'number') return String(e?.message ?? e);
  return `${m[1][0].toUpperCase()}${m[1].slice(1)} (os error ${-e.errno})`;
}

/**
 * `--out-dir` names: each FILE's name without its directory and `.jsonl` (as every host's
 * batch mode names them); refuses two files that would write the same outputs.
 * @param {string[]} files
 */
export function batchNames(files) {
  const names = files.map((f) => {
    const b = f.split(/[\\/]/).pop() ?? f;
    return b.endsWith('.jsonl') ? b.slice(0, -'.jsonl'.length) : b;
  });
  /** @type {Map<string, string>} */
  const seen = new Map();
  names.forEach((n, i) => {
    const other = seen.get(n);
    if (other !== undefined) throw new Error(`${other} and ${files[i]} would both write ${n}.out`);
    seen.set(n, files[i]);
  });
  return names;
}

/**
 * The `replay` command: `replay FILE [--db URL] [--db-timeout S] [--policy W]`, or the batch
 * mode every host has, `replay --out-dir DIR FILE...`: each FILE in turn in this one process,
 * writing DIR/NAME.out (exactly what `replay FILE` prints), DIR/NAME.err (its diagnostics and
 * the policy's log lines) and DIR/NAME.code (its exit status), NAME being the file's name
 * without `.jsonl`; `{name}` in the --db URL becomes NAME, so each file can have a database
 * of its own. The batch exits 0 once every file's outputs are written.
 * @param {string[]} args
 * @param {{ out?: (t: string) => void, err?: (t: string) => void }} [io]
 * @returns {Promise<number>} the exit status
 */
export async function main(args, io = {}) {
  const out = io.out ?? ((t) => { process.stdout.write(t); });
  const err = io.err ?? ((t) => { process.stderr.write(t); });
  const { parseArgs } = await import('node:util');
  let a;
  try {
    a = parseArgs({
      args, allowPositionals: true,
      options: { db: { type: 'string' }, 'db-timeout': { type: 'string' }, policy: { type: 'string' }, 'out-dir': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    err(`citus-ha replay: ${/** @type {Error} */ (e).message}\n${USAGE}`);
    return 2;
  }
  if (a.values.help) { out(USAGE); return 0; }
  const files = a.positionals;
  const outDir = a.values['out-dir'];
  if (files.length === 0 || (files.length > 1 && outDir === undefined)) {
    err(`citus-ha replay: ${files.length ? 'several files need --out-dir' : 'no scenario file'}\n${USAGE}`);
    return 2;
  }
  let dbTimeoutMs = 10_000;
  if (a.values['db-timeout'] !== undefined) {
    const s = Number(a.values['db-timeout']);
    if (!(Number.isFinite(s) && s > 0 && s <= 86_400)) {
      err(`citus-ha replay: --db-timeout: ${JSON.stringify(a.values['db-timeout'])} is not a number of seconds from 0 to 86400\n`);
      return 2;
    }
    dbTimeoutMs = s * 1000;
  }
  let names;
  try {
    names = batchNames(files);
  } catch (e) {
    err(`citus-ha replay: --out-dir: ${/** @type {Error} */ (e).message}\n`);
    return 2;
  }
  // The policy's log lines go to whichever file is being replayed.
  let logTo = err;
  /** @type {import('./runtime/sandbox.js').LogSink} */
  const log = (level, message, build) => {
    if (level === 'warn' || level === 'error') logTo(`${level}: ${message} (${build})\n`);
  };
  /** @type {Policy | Error} */
  let policy;
  try {
    policy = await Policy.load(a.values.policy ?? null, { log });
  } catch (e) {
    policy = /** @type {Error} */ (e);
  }
  const dbOf = (/** @type {string} */ name) => (a.values.db === undefined ? null : a.values.db.replaceAll('{name}', name));
  /** @type {Map<string, Policy>} */
  const builds = new Map();
  /** @param {string} file @param {string} name @param {(t: string) => void} o @param {(t: string) => void} e */
  const replayOne = (file, name, o, e) => one(file, policy, { db: dbOf(name), dbTimeoutMs, out: o, err: e, builds });
  try {
    if (outDir === undefined) return await replayOne(files[0], names[0], out, err);
    const { mkdir, writeFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    try {
      await mkdir(outDir, { recursive: true });
    } catch (e) {
      err(`citus-ha replay: --out-dir: ${/** @type {Error} */ (e).message}\n`);
      return 2;
    }
    for (const [i, f] of files.entries()) {
      /** @type {string[]} */
      const o = [];
      /** @type {string[]} */
      const e = [];
      logTo = (t) => { e.push(t); };
      const code = await replayOne(f, names[i], (t) => { o.push(t); }, (t) => { e.push(t); });
      logTo = err;
      const base = join(outDir, names[i]);
      try {
        await writeFile(`${base}.out`, o.join(''));
        await writeFile(`${base}.err`, e.join(''));
        await writeFile(`${base}.code`, `${code}\n`);
      } catch (x) {
        err(`citus-ha replay: --out-dir: ${/** @type {Error} */ (x).message}\n`);
        return 1;
      }
    }
    return 0;
  } finally {
    if (!(policy instanceof Error)) await policy.close();
    for (const b of builds.values()) await b.close();
  }
}

const USAGE = 'usage: citus-ha replay FILE [--db URL] [--db-timeout SECONDS] [--policy COMPONENT.wasm]\n'
  + '       citus-ha replay --out-dir DIR FILE... [same options; {name} in --db is each FILE\'s name]\n';

/**
 * One file, in the Rust host's order: unreadable or malformed (2) before a policy that could
 * not be loaded (1).
 * @param {string} file
 * @param {Policy | Error} policy
 * @param {Omit<ReplayOptions, 'policy'>} o
 */
async function one(file, policy, o) {
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    o.err(`citus-ha replay: cannot read ${file}: ${/** @type {Error} */ (e).message}\n`);
    return 2;
  }
  let steps;
  try {
    steps = parseScenario(text);
  } catch (e) {
    if (!(e instanceof ScenarioError)) throw e;
    o.err(`citus-ha replay: ${file}: ${e.message}\n`);
    return 2;
  }
  if (policy instanceof Error) {
    o.err(`citus-ha replay: ${policy.message}\n`);
    return 1;
  }
  try {
    await replay(steps, { ...o, policy });
  } catch (e) {
    if (e instanceof ScenarioError) {
      o.err(`citus-ha replay: ${file}: ${e.message}\n`);
      return 2;
    }
    o.err(`citus-ha replay: ${/** @type {Error} */ (e).message}\n`);
    return 1;
  }
  return 0;
}
