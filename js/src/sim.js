/**
 * The in-memory pg_dist_node (`citus-sim`) as its capability-free component: the same
 * simulator `citus-ha replay` uses, so a JavaScript replay refuses exactly what Citus refuses.
 * It is this package's own trusted build, so it runs on the calling thread, synchronously.
 * @module
 */

import { InvalidInput } from './errors.js';
import { bundledBuild, buildFromBytes, compile } from './runtime/build.js';
import { readFile } from 'node:fs/promises';
import { rowFromList, rowToList } from './statements.js';

const IFACE = 'citus-ha:sim/simulator@0.1.0';
/** @typedef {import('./statements.js').PgDistRow} PgDistRow */

/** @type {Map<string, Promise<any>>} */
const loaded = new Map();

/** @param {string | null} path */
async function instantiate(path) {
  const build = path === null ? await bundledBuild('sim') : await buildFromBytes(new Uint8Array(await readFile(path)), path, 'sim');
  const modules = await compile(build, 1 << 30);
  const mod = await import(`data:text/javascript;base64,${Buffer.from(build.js).toString('base64')}`);
  const root = mod.instantiate((/** @type {string} */ name) => modules[name], {});
  if (!root[IFACE]) throw new InvalidInput('simulator', `${build.source} does not export ${IFACE}`);
  return root[IFACE];
}

/** @param {() => any} f @param {string} field */
function ok(f, field) {
  try {
    return f();
  } catch (e) {
    if (e instanceof Error) {
      if ('payload' in e) throw new InvalidInput(field, String(e.payload));
      throw e;
    }
    throw new InvalidInput(field, String(e));
  }
}

/** One coordinator's pg_dist_node and its one metadata session. */
export class Simulator {
  /** @param {any} coordinator */
  constructor(coordinator) {
    this.coordinator = coordinator;
  }

  /**
   * A simulator with an empty table (nodeids from 1), from the bundled build or `path`.
   * @param {string | null} [path]
   */
  static async load(path = null) {
    const key = path ?? '';
    if (!loaded.has(key)) loaded.set(key, instantiate(path));
    const iface = await /** @type {Promise<any>} */ (loaded.get(key));
    return new Simulator(new iface.Coordinator());
  }

  /** An outside change: the committed rows become these. @param {PgDistRow[]} rows */
  setRows(rows) {
    ok(() => this.coordinator.setRows(JSON.stringify(rows.map(rowToList))), 'rows');
  }

  /** pg_dist_node as the session sees it (uncommitted changes included). @returns {PgDistRow[]} */
  rows() {
    return JSON.parse(this.coordinator.rows()).map(rowFromList);
  }

  /** Statements (JSON Lines) in, results (JSON Lines) out. @param {string} statements @returns {string} */
  execute(statements) {
    return ok(() => this.coordinator.execute(statements), 'statements');
  }

  /** The session is lost: its open transaction is rolled back. */
  loseSession() {
    this.coordinator.loseSession();
  }
}
