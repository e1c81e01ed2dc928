// Shared by the tests: the repository's paths, the test builds of the policy, the Rust host
// to compare with, and a throw-away PostgreSQL 15 with the Citus emulation (started the way
// tests/harness and python/tests/conftest.py start theirs).
import { execFileSync, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const SCENARIOS = join(ROOT, 'tests', 'scenarios');
export const CLI = join(ROOT, 'js', 'bin', 'citus-ha.mjs');
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

/** The Rust host, if built (./dev test builds it before the JS tests). */
export function rustBin() {
  for (const p of [process.env.CITUS_HA_BIN, join(ROOT, 'target/debug/citus-ha'), join(ROOT, 'target/release/citus-ha')]) {
    if (p && existsSync(p)) return p;
  }
  return null;
}

/** @type {Map<string, string>} */
const variants = new Map();

/**
 * A test build of the policy (`fault-loop`, `fault-alloc`, ...), built by cargo into
 * target/guest-variants exactly as the Rust sandbox tests and the Python tests build theirs
 * (cargo rebuilds it when the policy changed). CITUS_HA_VARIANTS names a folder of such
 * builds to use instead (a worktree that does not build Rust).
 * @param {string} features
 */
export function policyVariant(features) {
  let p = variants.get(features);
  if (p) return p;
  const dir = process.env.CITUS_HA_VARIANTS;
  p = dir ? join(dir, `${features}.wasm`)
    : execFileSync('cargo', ['run', '--quiet', '-p', 'citus-ha-guest-build', '--example', 'guest_variant', '--', features],
      { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  variants.set(features, p);
  return p;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/**
 * initdb into a temporary directory, postgres on a free loopback port (as the `postgres`
 * user when running as root), a `citus` database with the Citus emulation.
 */
export class PgServer {
  static available() { return existsSync(join(PG_BIN, 'initdb')); }

  static async start() {
    const s = new PgServer();
    await s.boot();
    return s;
  }

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'citus-ha-js-pg-'));
    this.data = join(this.dir, 'data');
    /** @type {{ uid: number, gid: number } | undefined} */
    this.user = undefined;
    if (process.getuid?.() === 0) {
      const [uid, gid] = execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim().split(' ')
        .concat(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()).map(Number);
      this.user = { uid, gid };
      chownSync(this.dir, uid, gid);
    }
    this.port = 0;
    /** @type {import('node:child_process').ChildProcess | null} */
    this.proc = null;
  }

  async boot() {
    execFileSync(join(PG_BIN, 'initdb'), ['-D', this.data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C'],
      { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'], ...this.user });
    this.port = await freePort();
    this.proc = spawn(join(PG_BIN, 'postgres'), ['-D', this.data, '-p', String(this.port), '-k', this.dir,
      '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_prepared_transactions=10'],
    { stdio: 'ignore', ...this.user });
    const deadline = Date.now() + 30_000;
    for (;;) {
      const c = new pg.Client({ connectionString: this.url('postgres') });
      try {
        await c.connect();
        await c.end();
        break;
      } catch (e) {
        await c.end().catch(() => {});
        if (Date.now() > deadline || this.proc.exitCode !== null) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** @param {string} db */
  url(db) { return `postgresql://postgres@127.0.0.1:${this.port}/${db}`; }

  /** A fresh database (`citus` unless named) with the emulation (no post-commit sync delay). */
  async freshCitus(name = 'citus') {
    const admin = new pg.Client({ connectionString: this.url('postgres') });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await admin.query(`CREATE DATABASE "${name}"`);
    } finally {
      await admin.end();
    }
    const c = new pg.Client({ connectionString: this.url(name) });
    await c.connect();
    try {
      await c.query(readFileSync(join(ROOT, 'tests', 'sql', 'citus_emulation.sql'), 'utf8'));
      await c.query('UPDATE citus_emulation.config SET metadata_sync_delay_ms = 0');
    } finally {
      await c.end();
    }
  }

  async stop() {
    const p = this.proc;
    if (p && p.exitCode === null) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
