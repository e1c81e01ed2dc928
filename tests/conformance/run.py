"""The conformance suite: every host makes the same decisions, byte for byte.

Replays the scenario library (tests/scenarios, tests/scenarios/reference) and `--count`
scenarios of the seeded generator (generate.py) through each host's `replay` and compares
what they print and how they exit. The first host named is the reference the others are held
to; library scenarios must also match their `.expected`. On a difference it names the
scenario, the host and the first line that differs, writes the scenario and every host's
output under the work directory (the path is printed), and exits 1.

With `--db` the same comparison also runs against a real PostgreSQL 15 with the Citus emulation
(tests/sql/citus_emulation.sql), started here on a free loopback port: each scenario that
qualifies (no `metadata` step but, optionally, one right after `config`, which becomes SQL)
runs in a fresh database copied from a template, once per host; the hosts must agree with each
other and, error texts aside, with the simulator.

    target/venv/bin/python tests/conformance/run.py [--count N] [--seed S] [--db]
        [--hosts rust,python,js]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from generate import generate  # noqa: E402
from pgserver import PgServer, split_initial_metadata  # noqa: E402

LIBRARY = (ROOT / "tests" / "scenarios", ROOT / "tests" / "scenarios" / "reference")
#: Bounds on a host: a whole batch, or one scenario run on its own.
BATCH_TIMEOUT = 600
FILE_TIMEOUT = 60


def _run(host: str, args: List[str], env: Dict[str, str], timeout: int
         ) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"conformance: host {host} did not finish within {timeout} s: "
                         f"{' '.join(args[:8])} ...") from None


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    #: Library scenarios carry the output they must print.
    expected: Optional[Path] = None
    malformed: bool = False
    statements_expected: bool = False

    @property
    def generated(self) -> bool:
        return self.expected is None


@dataclass(frozen=True)
class Outcome:
    code: int
    out: bytes


class Host:
    """One host's replay. `batch` runs files in one process (`--out-dir`); otherwise one
    process per file."""

    def __init__(self, name: str, argv: List[str], batch: bool,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.name, self.argv, self.batch = name, argv, batch
        self.env = {**os.environ, **(env or {})}

    def replay(self, files: Sequence[Tuple[str, Path]], out_dir: Path, jobs: int,
               db: Optional[str] = None) -> Dict[str, Outcome]:
        """Replays `(name, path)` pairs; with `db`, against that URL, where `{name}` stands
        for each file's name (every scenario has a database of its own)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        extra = [] if db is None else ["--db", db]
        if self.batch:
            args = [*self.argv, *extra, "--out-dir", str(out_dir), *(str(p) for _, p in files)]
            r = _run(self.name, args, self.env, BATCH_TIMEOUT)
            if r.returncode != 0:
                raise SystemExit(f"{self.name}: {' '.join(args[:8])} ... exited "
                                 f"{r.returncode}:\n{r.stderr.decode(errors='replace')}")
            return {n: read_outcome(out_dir, self.name, n) for n, _ in files}

        def one(item: Tuple[str, Path]) -> Tuple[str, Outcome]:
            name, path = item
            args = [*self.argv, str(path)]
            if db is not None:
                args += ["--db", db.replace("{name}", name)]
            r = _run(self.name, args, self.env, FILE_TIMEOUT)
            (out_dir / f"{name}.out").write_bytes(r.stdout)
            (out_dir / f"{name}.err").write_bytes(r.stderr)
            (out_dir / f"{name}.code").write_text(f"{r.returncode}\n")
            return name, Outcome(r.returncode, r.stdout)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return dict(pool.map(one, files))


def read_outcome(out_dir: Path, host: str, name: str) -> Outcome:
    try:
        code = (out_dir / f"{name}.code").read_text().strip()
        out = (out_dir / f"{name}.out").read_bytes()
    except OSError as e:
        raise SystemExit(f"{host}: no output for {name} in {out_dir}: {e}") from e
    if not code.lstrip("-").isdigit():
        raise SystemExit(f"{host}: {out_dir / (name + '.code')} holds {code!r}, not a number")
    return Outcome(int(code), out)


def known_hosts(rust_bin: Path) -> Dict[str, Callable[[], Host]]:
    return {
        "rust": lambda: Host("rust", [str(rust_bin), "replay"], batch=False,
                             env={"RUST_LOG": "warn"}),
        "python": lambda: Host("python", [sys.executable, "-m", "citus_ha", "replay"],
                               batch=True),
        "js": lambda: Host("js", ["node", str(ROOT / "js" / "bin" / "citus-ha.mjs"), "replay"],
                           batch=True),
    }


def host_missing(name: str, rust_bin: Path) -> Optional[str]:
    """Why a host cannot run here, or None."""
    if name == "rust" and not rust_bin.is_file():
        return f"{rust_bin} is not built (cargo build -p citus-ha, or --rust-bin)"
    if name == "python":
        try:
            import citus_ha  # noqa: F401
        except ImportError:
            return f"{sys.executable} cannot import citus_ha (pip install ./python)"
    if name == "js":
        if not (ROOT / "js" / "bin" / "citus-ha.mjs").is_file():
            return "js/bin/citus-ha.mjs is not in this tree"
        if shutil.which("node") is None:
            return "node is not installed"
    return None


def library() -> List[Scenario]:
    out = []
    for d in LIBRARY:
        for p in sorted(d.glob("*.jsonl")):
            out.append(Scenario(p.stem, p, expected=p.with_suffix(".expected")))
    return out


def first_difference(a: bytes, b: bytes) -> Tuple[int, str, str]:
    """The 1-based output line where `a` and `b` first differ, and both lines."""
    la, lb = a.split(b"\n"), b.split(b"\n")
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        if x != y:
            def show(v: Optional[bytes]) -> str:
                return "(no line)" if v is None else v.decode("utf-8", errors="replace")
            return i + 1, show(x), show(y)
    return 0, "", ""


class Disagreement(Exception):
    pass


def compare(scenarios: Sequence[Scenario], results: Dict[str, Dict[str, Outcome]],
            hosts: Sequence[str], mode: str, failing_dir: Path,
            expected: Callable[[Scenario], Optional[bytes]]) -> None:
    """Raises Disagreement at the first scenario where a host differs from the reference
    host (or from the expected output), after writing that scenario and the outputs."""
    ref = hosts[0]
    for s in scenarios:
        want = expected(s)
        base = results[ref][s.name]
        checks: List[Tuple[str, Outcome, str, Outcome]] = []
        if want is not None:
            checks.append(("its .expected", Outcome(0, want), ref, base))
        checks += [(ref, base, h, results[h][s.name]) for h in hosts[1:]]
        for label, theirs, host, mine in checks:
            if mine == theirs:
                continue
            failing_dir.mkdir(parents=True, exist_ok=True)
            kept = failing_dir / f"{s.name}.jsonl"
            shutil.copyfile(s.path, kept)
            for h in hosts:
                o = results[h][s.name]
                (failing_dir / f"{s.name}.{h}.out").write_bytes(o.out)
                (failing_dir / f"{s.name}.{h}.code").write_text(f"{o.code}\n")
            line, x, y = first_difference(theirs.out, mine.out)
            what = (f"exit status ({host} {mine.code}, {label} {theirs.code})"
                    if mine.code != theirs.code else f"output line {line}")
            raise Disagreement(
                f"[{mode}] scenario {s.name} ({s.path}): host {host} differs from {label} "
                f"at {what}:\n  {label}: {x}\n  {host}: {y}\n"
                f"scenario written to {kept}, each host's output beside it "
                f"({s.name}.<host>.out)")


def normalise(out: bytes) -> List[str]:
    """The simulator and a real server word refusals differently: keep only that there was
    an error (the Rust host's --db test compares the same way)."""
    lines = []
    for line in out.decode("utf-8", errors="replace").splitlines():
        i = line.find(',"error":')
        lines.append(line if i < 0 else line[:i] + ',"error":…}')
    return lines


def check_generated(scenarios: Sequence[Scenario], results: Dict[str, Outcome]) -> str:
    """The generator's own claims: malformed scenarios exit 2, the others run to the end, and
    most of those make the coordinator send statements."""
    gen = [s for s in scenarios if s.generated]
    wrong = [s.name for s in gen if results[s.name].code != (2 if s.malformed else 0)]
    if wrong:
        raise SystemExit(f"generated scenarios that exit otherwise than meant: {wrong[:10]} "
                         f"(of {len(wrong)}); the generator or the replay is wrong")
    valid = [s for s in gen if not s.malformed]
    with_statements = [s for s in valid if b'{"op":' in results[s.name].out]
    if valid and len(with_statements) < 0.7 * len(valid):
        raise SystemExit(f"only {len(with_statements)} of {len(valid)} valid generated "
                         "scenarios sent any statement: the generator stopped being useful")
    return (f"generated: {len(valid)} valid (all exit 0, {len(with_statements)} send "
            f"statements), {len(gen) - len(valid)} malformed (all exit 2)")


def run_simulator(scenarios: Sequence[Scenario], hosts: Dict[str, Host], work: Path,
                  jobs: int) -> Dict[str, Dict[str, Outcome]]:
    files = [(s.name, s.path) for s in scenarios]
    results = {}
    for name, host in hosts.items():
        t = time.monotonic()
        results[name] = host.replay(files, work / "sim" / name, jobs)
        print(f"  {name}: {len(files)} scenarios in {time.monotonic() - t:.1f} s", flush=True)
    return results


def database_name(scenario: str) -> str:
    return f"c_{scenario}"[:63]


#: Databases the --db pass keeps: each serves one scenario of a chunk for every host in turn,
#: reset in between, then is renamed for the next chunk (a fresh copy costs ~0.2 s and 8 MB).
DB_SLOTS = 40


class DbPass:
    """The --db pass: the server and its databases, prepared in the background while the
    simulator pass runs; then, chunk by chunk, every host replays the chunk's scenarios, each
    in a database of its own that starts from the same rows for every host."""

    def __init__(self, scenarios: Sequence[Scenario], work: Path) -> None:
        self.chosen: List[Scenario] = []
        self.rows: Dict[str, list] = {}
        for s in scenarios:
            if s.malformed:
                # Refused before the database is used, or for its `metadata` step: as is.
                self.chosen.append(s)
                self.rows[s.name] = []
                continue
            split = split_initial_metadata(s.path.read_text(encoding="utf-8"))
            if split is None:
                continue
            body, initial = split
            p = work / "db" / "scenarios" / f"{s.name}.jsonl"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(body, encoding="utf-8")
            self.chosen.append(Scenario(s.name, p, s.expected, s.malformed,
                                        s.statements_expected))
            self.rows[s.name] = initial
        self.slots = [f"slot_{i}" for i in range(min(DB_SLOTS, len(self.chosen)))]
        self.server: Optional[PgServer] = None
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ready = self._pool.submit(self._prepare)

    def _prepare(self) -> str:
        t = time.monotonic()
        self.server = PgServer((ROOT / "tests" / "sql" / "citus_emulation.sql").read_text())
        for name in self.slots:
            self.server.create_database(name)
        return (f"PostgreSQL on 127.0.0.1:{self.server.port}, {len(self.slots)} databases in "
                f"{time.monotonic() - t:.1f} s")

    def run(self, hosts: Dict[str, Host], work: Path, jobs: int, sim: Dict[str, Outcome]
            ) -> Dict[str, Dict[str, Outcome]]:
        print(f"  {self._ready.result()}", flush=True)
        server = self.server
        assert server is not None
        results: Dict[str, Dict[str, Outcome]] = {h: {} for h in hosts}
        spent = dict.fromkeys(hosts, 0.0)
        url = server.url(database_name("{name}"))
        for start in range(0, len(self.chosen), len(self.slots)):
            chunk = self.chosen[start:start + len(self.slots)]
            for i, s in enumerate(chunk):
                server.rename_database(self.slots[i], database_name(s.name))
                self.slots[i] = database_name(s.name)
            files = [(s.name, s.path) for s in chunk]
            for name, host in hosts.items():
                t = time.monotonic()
                for s in chunk:
                    server.reset_database(database_name(s.name), self.rows[s.name])
                results[name].update(host.replay(files, work / "db" / name, jobs, url))
                spent[name] += time.monotonic() - t
        for name in hosts:
            print(f"  {name}: {len(self.chosen)} scenarios in {spent[name]:.1f} s", flush=True)
        ref = next(iter(hosts))
        for s in self.chosen:
            o = results[ref][s.name]
            if o.code != sim[s.name].code or normalise(o.out) != normalise(sim[s.name].out):
                line, x, y = first_difference(
                    "\n".join(normalise(sim[s.name].out)).encode(),
                    "\n".join(normalise(o.out)).encode())
                raise Disagreement(
                    f"[db] scenario {s.name} ({s.path}): PostgreSQL with the emulation and "
                    f"the simulator disagree for host {ref} at line {line} (exit "
                    f"{o.code} vs {sim[s.name].code}):\n  simulator: {x}\n  postgres:  {y}\n"
                    f"outputs in {work / 'db' / ref} and {work / 'sim' / ref}")
        return results

    def close(self) -> None:
        try:
            self._ready.result()
        except Exception:  # reported by run(), where it is waited for
            pass
        finally:
            self._pool.shutdown()
            if self.server is not None:
                self.server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description="Every host's replay, byte for byte.")
    ap.add_argument("--count", type=int, default=200, help="generated scenarios (default 200)")
    ap.add_argument("--seed", type=int, default=1, help="the generator's seed (default 1)")
    ap.add_argument("--db", action="store_true",
                    help="also replay against PostgreSQL 15 with the Citus emulation")
    ap.add_argument("--hosts", default="rust,python,js",
                    help="comma-separated, the first is the reference (default rust,python,js)")
    ap.add_argument("--rust-bin", type=Path,
                    default=Path(os.environ.get("CITUS_HA_BIN", ROOT / "target/debug/citus-ha")))
    ap.add_argument("--work", type=Path, default=None,
                    help="where scenarios and outputs go (default: a new temporary directory)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once for per-file hosts")
    a = ap.parse_args()
    started = time.monotonic()
    names = [h.strip() for h in a.hosts.split(",") if h.strip()]
    hosts_known = known_hosts(a.rust_bin.resolve())
    unknown = [h for h in names if h not in hosts_known]
    if unknown or not names:
        ap.error(f"unknown hosts {unknown}; known: {', '.join(hosts_known)}")
    missing = {h: why for h in names if (why := host_missing(h, a.rust_bin))}
    if missing:
        for h, why in missing.items():
            print(f"conformance: host {h} cannot run: {why}", file=sys.stderr)
        print("conformance: name the hosts to compare with --hosts", file=sys.stderr)
        return 2
    hosts = {h: hosts_known[h]() for h in names}
    work = a.work or Path(tempfile.mkdtemp(prefix="citus-ha-conformance-"))
    if a.work is not None and work.exists():
        shutil.rmtree(work)
    gen_dir = work / "generated"
    gen_dir.mkdir(parents=True)
    scenarios = library()
    swap_component = "python/src/citus_ha/components/policy.wasm"
    for g in generate(a.seed, a.count, swap_component):
        p = gen_dir / f"{g.name}.jsonl"
        p.write_text(g.text, encoding="utf-8")
        scenarios.append(Scenario(g.name, p, None, g.malformed, g.statements_expected))
    n_lib = sum(1 for s in scenarios if not s.generated)
    print(f"conformance: {n_lib} library + {a.count} generated scenarios (seed {a.seed}), "
          f"hosts {', '.join(names)} (reference {names[0]}), work dir {work}", flush=True)
    failing = work / "failing"

    def expected(s: Scenario) -> Optional[bytes]:
        return s.expected.read_bytes() if s.expected else None

    db_pass = DbPass(scenarios, work) if a.db else None
    try:
        print("simulator:", flush=True)
        sim = run_simulator(scenarios, hosts, work, a.jobs)
        compare(scenarios, sim, names, "simulator", failing, expected)
        summary = check_generated(scenarios, sim[names[0]])
        print(f"simulator: {len(scenarios)} scenarios, {len(names)} hosts, identical; {summary}",
              flush=True)
        if db_pass is not None:
            print("postgres:", flush=True)
            db = db_pass.run(hosts, work, a.jobs, sim[names[0]])
            compare(db_pass.chosen, db, names, "db", failing, lambda s: None)
            print(f"postgres: {len(db_pass.chosen)} scenarios, {len(names)} hosts, identical "
                  "(and as the simulator, error texts aside)", flush=True)
    except Disagreement as e:
        print(f"conformance: DIFFERENT\n{e}", file=sys.stderr)
        return 1
    finally:
        if db_pass is not None:
            db_pass.close()
    print(f"conformance: passed in {time.monotonic() - started:.1f} s", flush=True)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
