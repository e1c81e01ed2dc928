//! `citus-ha bench`: every operation measured twice in one run, through the Wasm component in
//! this host (the embedded policy, loaded and sandboxed exactly as `run` does it) and natively
//! (the same policy crate linked into this binary), warm-up first, then the median of many
//! samples. Also the policy swap, the cold start, the guest's peak linear memory at N=10000 and
//! this process's peak RSS; with `--db`, the latency from a worker's `before_demote` to the
//! `-demoted` update arriving at a real PostgreSQL.
//!
//! What each figure measures (N = worker groups, each a primary and two replicas):
//! - `call_overhead`: `poll-timeout` on an idle handler, the cheapest export;
//! - `validate_config`, `adjust_gucs` (16 parameters), `slot_filter_match`/`_nomatch`: one
//!   call of the pure function, arguments crossing the boundary both ways;
//! - `transition_*`: a handler whose cache holds the old group has the new group's task queued
//!   (by an untimed heartbeat); timed is the turn that plans the transition and runs it
//!   against the simulator: `poll_statement`/`handle_result` until the turn ends;
//! - `heartbeat_steady_N`: one heartbeat whose view matches the cache (no task results); the
//!   view crosses the boundary on every call, as in `run`;
//! - `heartbeat_new_N`: one heartbeat with a cache holding only the coordinator: N tasks queued;
//! - `drain_N`: the turn that processes those N queued tasks against the in-memory simulator
//!   (5 statements per group: BEGIN, 3 x citus_add_node, COMMIT);
//! - `swap`: load a new policy build (its precompiled artifact cached) and hand it the state of
//!   a handler holding 1000 groups (`Agent::swap`: export, import, warm-up) until it answers;
//! - `cold_start`: wall time from spawning this binary to its exit after one decision (load the
//!   embedded policy from the artifact cache, one heartbeat, the turn up to the first
//!   `citus_add_node` it decides);
//! - `event_to_statement` (`--db`): HTTP `before_demote` on loopback to the `-demoted` update
//!   arriving at the PostgreSQL server (p50 and p99), through the real `citus-ha run`.
//!
//! In-process figures are the measuring thread's CPU time (see `harness`), so another tenant of
//! a shared machine holding a core does not count; `cold_start` and `event_to_statement` are
//! wall time. BENCHMARKS.md has a run with the reference's figures beside it.

mod cold;
mod event;
mod fixtures;
mod harness;

use crate::agent::{Agent, Identity};
use crate::policy::native::{NativeFunctions, NativeHandler};
use crate::policy::{Functions, Handler, LoadedPolicy, PolicyEngine, PolicyLimits, WasmHandler};
use crate::session::sim::SimSession;
use citus_ha_policy::dcs::ClusterView;
use fixtures::*;
use harness::{Effort, Stats};
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub use cold::cold_start_child;

/// `citus-ha bench` options.
#[derive(Clone, Debug, Default)]
pub struct BenchArgs {
    /// A smoke run: fewer samples, no drain_10000; under a minute.
    pub quick: bool,
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// A PostgreSQL (with Citus or the CI emulation) for `event_to_statement`.
    pub db: Option<String>,
    /// Only the operations whose name contains this (for profiling one of them).
    pub only: Option<String>,
    /// A component for the Wasm side instead of the embedded one.
    pub policy: Option<PathBuf>,
}

/// One result line.
struct Line {
    name: String,
    wasm: Option<Stats>,
    native: Option<Stats>,
    extra: Map<String, Value>,
}

impl Line {
    fn new(name: impl Into<String>) -> Self {
        Line {
            name: name.into(),
            wasm: None,
            native: None,
            extra: Map::new(),
        }
    }
    fn with(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.extra.insert(k.into(), v.into());
        self
    }
    fn ratio(&self) -> Option<f64> {
        match (&self.wasm, &self.native) {
            (Some(w), Some(n)) if n.median_ns > 0.0 => Some(w.median_ns / n.median_ns),
            _ => None,
        }
    }
    fn json(&self) -> Value {
        let mut o = Map::new();
        o.insert("bench".into(), self.name.clone().into());
        if let Some(w) = &self.wasm {
            o.insert("wasm_ns".into(), round1(w.median_ns));
        }
        if let Some(n) = &self.native {
            o.insert("native_ns".into(), round1(n.median_ns));
        }
        if let Some(r) = self.ratio() {
            o.insert("ratio".into(), json!((r * 100.0).round() / 100.0));
        }
        if let Some(w) = &self.wasm {
            o.insert(
                "wasm_p10_p90_ns".into(),
                json!([round1(w.p10_ns), round1(w.p90_ns)]),
            );
            o.insert("samples".into(), w.samples.into());
        }
        for (k, v) in &self.extra {
            o.insert(k.clone(), v.clone());
        }
        Value::Object(o)
    }
}

fn round1(x: f64) -> Value {
    json!((x * 10.0).round() / 10.0)
}

pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn fmt_bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Prints each line as it is measured.
struct Report {
    json: bool,
    header_done: bool,
}

impl Report {
    fn emit(&mut self, line: &Line) {
        let mut out = std::io::stdout().lock();
        if self.json {
            let _ = writeln!(out, "{}", line.json());
        } else {
            if !self.header_done {
                let _ = writeln!(
                    out,
                    "{:<36} {:>12} {:>12} {:>11}  notes",
                    "bench", "wasm", "native", "wasm/native"
                );
                self.header_done = true;
            }
            let w = line.wasm.map(|s| fmt_ns(s.median_ns)).unwrap_or_default();
            let n = line.native.map(|s| fmt_ns(s.median_ns)).unwrap_or_default();
            let r = line.ratio().map(|r| format!("{r:.2}x")).unwrap_or_default();
            let notes: Vec<String> = line
                .extra
                .iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    (k, Value::Number(n)) if k.ends_with("_ns") => {
                        format!("{k}={}", fmt_ns(n.as_f64().unwrap_or(0.0)))
                    }
                    (k, Value::Number(n)) if k.ends_with("bytes") => {
                        format!("{k}={}", fmt_bytes(n.as_u64().unwrap_or(0)))
                    }
                    (k, v) => format!("{k}={v}"),
                })
                .collect();
            let _ = writeln!(
                out,
                "{:<36} {w:>12} {n:>12} {r:>11}  {}",
                line.name,
                notes.join(" ")
            );
        }
        let _ = out.flush();
    }
}

/// Which build of the policy answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Wasm,
    Native,
}

/// A handler of either build, keeping the Wasm one's memory readable.
enum Instance {
    Wasm(Box<WasmHandler>),
    Native(Box<NativeHandler>),
}

impl Instance {
    fn p(&mut self) -> &mut dyn Handler {
        match self {
            Instance::Wasm(w) => w.as_mut(),
            Instance::Native(n) => n.as_mut(),
        }
    }
    fn guest_memory(&self) -> Option<usize> {
        match self {
            Instance::Wasm(w) => Some(w.memory_bytes()),
            Instance::Native(_) => None,
        }
    }
}

struct Bench {
    effort: Effort,
    quick: bool,
    loaded: LoadedPolicy,
    engine: PolicyEngine,
    cache_dir: PathBuf,
    report: Report,
    /// Peak linear memory of the Wasm instances that handled N = 10000.
    guest_peak_10000: usize,
    only: Option<String>,
}

type R<T> = anyhow::Result<T>;

impl Bench {
    fn handler(&self, side: Side) -> R<Instance> {
        Ok(match side {
            Side::Wasm => Instance::Wasm(Box::new(self.loaded.new_handler(
                &config(),
                NAME,
                CONNECT_URL,
            )?)),
            Side::Native => {
                Instance::Native(Box::new(NativeHandler::new(config(), NAME, CONNECT_URL)))
            }
        })
    }

    fn functions(&self, side: Side) -> R<Box<dyn Functions>> {
        Ok(match side {
            Side::Wasm => Box::new(self.loaded.functions()?),
            Side::Native => Box::new(NativeFunctions),
        })
    }

    fn note_memory(&mut self, n: i32, inst: &Instance) {
        if n == 10_000 {
            if let Some(m) = inst.guest_memory() {
                self.guest_peak_10000 = self.guest_peak_10000.max(m);
            }
        }
    }

    fn wanted(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
    }

    /// Measures `f` on both sides and prints the line.
    fn both(&mut self, name: &str, mut f: impl FnMut(&mut Self, Side) -> R<Stats>) -> R<()> {
        if !self.wanted(name) {
            return Ok(());
        }
        let mut line = Line::new(name);
        line.wasm = Some(f(self, Side::Wasm)?);
        line.native = Some(f(self, Side::Native)?);
        self.report.emit(&line);
        Ok(())
    }

    // ----- pure functions and the trivial call -----------------------------------------

    fn call_overhead(&mut self, side: Side) -> R<Stats> {
        let mut h = self.handler(side)?;
        let p = h.p();
        assert_eq!(p.poll_timeout()?, None);
        Ok(harness::repeat(&self.effort, || {
            std::hint::black_box(p.poll_timeout().expect("poll_timeout"));
        }))
    }

    fn validate_config(&mut self, side: Side) -> R<Stats> {
        let mut f = self.functions(side)?;
        let p = f.as_mut();
        assert_eq!(p.validate_config(CONFIG_JSON)?, Ok(config()));
        Ok(harness::repeat(&self.effort, || {
            std::hint::black_box(p.validate_config(CONFIG_JSON).expect("call").is_ok());
        }))
    }

    fn adjust_gucs(&mut self, side: Side) -> R<Stats> {
        let mut f = self.functions(side)?;
        let p = f.as_mut();
        let params = typical_params();
        let out = p.adjust_gucs(&params, Some(SOCKET_DIR))?.expect("valid");
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("shared_preload_libraries"),
            Some("citus,pg_stat_statements,auto_explain")
        );
        assert_eq!(get("max_prepared_transactions"), Some("400"));
        assert_eq!(get("citus.local_hostname"), Some(SOCKET_DIR));
        Ok(harness::repeat(&self.effort, || {
            let _ = std::hint::black_box(p.adjust_gucs(&params, Some(SOCKET_DIR)).expect("call"));
        }))
    }

    fn slot_filter(&mut self, side: Side, matching: bool) -> R<Stats> {
        let mut f = self.functions(side)?;
        let p = f.as_mut();
        let slot = if matching {
            slot_match()
        } else {
            slot_nomatch()
        };
        let c = config();
        assert_eq!(p.keep_replication_slot(&c, true, &slot)?, matching);
        Ok(harness::repeat(&self.effort, || {
            std::hint::black_box(p.keep_replication_slot(&c, true, &slot).expect("call"));
        }))
    }

    // ----- transitions -----------------------------------------------------------------

    fn transition(&mut self, side: Side, case: &TransitionCase) -> R<Stats> {
        let pool: RefCell<Vec<Instance>> = RefCell::new(Vec::new());
        let effort = self.effort;
        let prepare = || {
            let mut inst = match pool.borrow_mut().pop() {
                Some(i) => i,
                None => self.handler(side).expect("instantiate"),
            };
            let mut sim = sim_with(case.rows.clone());
            let p = inst.p();
            // The cache holds the old group (one load), then the heartbeat queues the new one.
            p.handle_heartbeat(0, &case.view).expect("heartbeat");
            p.handle_demote().expect("demote");
            assert_eq!(turn(p, &mut sim, 0).expect("turn"), 1);
            p.handle_heartbeat(0, &case.view).expect("heartbeat");
            (inst, sim, 0usize)
        };
        let run = |s: &mut (Instance, SimSession, usize)| {
            s.2 = turn(s.0.p(), &mut s.1, 0).expect("turn");
        };
        let check = |s: (Instance, SimSession, usize)| {
            assert_eq!(s.2, case.statements, "statements of the transition");
            pool.borrow_mut().push(s.0);
        };
        Ok(harness::prepared(&effort, prepare, run, check))
    }

    // ----- heartbeats and the drain ----------------------------------------------------

    /// A handler whose cache matches the view (heartbeat + one turn against the simulator).
    fn steady_handler(&self, side: Side, view: &ClusterView) -> R<(Instance, SimSession)> {
        let mut inst = self.handler(side)?;
        let mut sim = SimSession::default();
        let n = view.workers.len();
        let p = inst.p();
        p.handle_heartbeat(0, view)?;
        let statements = turn(p, &mut sim, 0)?;
        // A load, then BEGIN + 3 adds + COMMIT for the coordinator and for every worker group.
        assert_eq!(statements, 1 + 5 * (n + 1));
        Ok((inst, sim))
    }

    fn heartbeat_steady(&mut self, side: Side, view: &ClusterView) -> R<Stats> {
        let n = view.workers.len() as i32;
        let (mut inst, mut sim) = self.steady_handler(side, view)?;
        let effort = self.samples_for(n);
        let stats = {
            let p = inst.p();
            let s = harness::repeat(&effort, || p.handle_heartbeat(1, view).expect("heartbeat"));
            // Still steady: nothing was queued.
            assert_eq!(turn(p, &mut sim, 1)?, 0, "a steady heartbeat queued tasks");
            s
        };
        self.note_memory(n, &inst);
        Ok(stats)
    }

    /// Fewer samples for big views (each sample lasts long enough on its own).
    fn samples_for(&self, n: i32) -> Effort {
        let mut e = self.effort;
        if n >= 10_000 {
            e.samples = if self.quick { 5 } else { 21 };
            e.warmup = Duration::from_millis(1);
        } else if n >= 1_000 {
            e.samples = if self.quick { 11 } else { 51 };
        }
        e
    }

    fn heartbeat_new(&mut self, side: Side, view: &ClusterView) -> R<Stats> {
        let n = view.workers.len();
        let pool: RefCell<Vec<Instance>> = RefCell::new(Vec::new());
        let coord_only = RefCell::new(sim_with(coordinator_rows()));
        let mut effort = self.samples_for(n as i32);
        effort.max_prepared_samples = effort.max_prepared_samples.min(effort.samples.max(5));
        // The first state is drained once to check that the heartbeat queued all N tasks.
        let verified = RefCell::new(false);
        let stats = {
            let prepare = || {
                let mut inst = match pool.borrow_mut().pop() {
                    Some(i) => i,
                    None => self.handler(side).expect("instantiate"),
                };
                reset_to_coordinator(inst.p(), &mut coord_only.borrow_mut()).expect("reset");
                inst
            };
            let run = |inst: &mut Instance| inst.p().handle_heartbeat(2, view).expect("heartbeat");
            let check = |mut inst: Instance| {
                if !*verified.borrow() {
                    let mut sim = sim_with(coordinator_rows());
                    let statements = turn(inst.p(), &mut sim, 2).expect("turn");
                    assert_eq!(statements, 5 * n, "heartbeat_new queued every group");
                    *verified.borrow_mut() = true;
                }
                pool.borrow_mut().push(inst);
            };
            harness::prepared(&effort, prepare, run, check)
        };
        for inst in pool.borrow().iter() {
            self.note_memory(n as i32, inst);
        }
        Ok(stats)
    }

    fn drain(&mut self, side: Side, view: &ClusterView) -> R<Stats> {
        let n = view.workers.len();
        let pool: RefCell<Vec<Instance>> = RefCell::new(Vec::new());
        let coord_only = RefCell::new(sim_with(coordinator_rows()));
        let mut effort = self.samples_for(n as i32);
        effort.max_prepared_samples = effort.max_prepared_samples.min(effort.samples.max(5));
        let stats = {
            let prepare = || {
                let mut inst = match pool.borrow_mut().pop() {
                    Some(i) => i,
                    None => self.handler(side).expect("instantiate"),
                };
                let p = inst.p();
                reset_to_coordinator(p, &mut coord_only.borrow_mut()).expect("reset");
                p.handle_heartbeat(3, view).expect("heartbeat");
                (inst, sim_with(coordinator_rows()), 0usize)
            };
            let run = |s: &mut (Instance, SimSession, usize)| {
                s.2 = turn(s.0.p(), &mut s.1, 3).expect("turn");
            };
            let check = |s: (Instance, SimSession, usize)| {
                assert_eq!(s.2, 5 * n, "statements of the drain");
                assert_eq!(s.1.sim.rows().len(), 3 * (n + 1), "rows after the drain");
                pool.borrow_mut().push(s.0);
            };
            harness::prepared(&effort, prepare, run, check)
        };
        for inst in pool.borrow().iter() {
            self.note_memory(n as i32, inst);
        }
        Ok(stats)
    }

    // ----- swap and cold start -----------------------------------------------------------

    fn swap(&mut self) -> R<Line> {
        // `Agent::swap` logs every swap at info level; dozens of them would bury the table.
        let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
        let view = view(1000);
        let (inst, sim) = self.steady_handler(Side::Wasm, &view)?;
        let Instance::Wasm(policy) = inst else {
            unreachable!("a Wasm handler")
        };
        let identity = Identity {
            config: config(),
            name: NAME.into(),
            connect_url: CONNECT_URL.into(),
        };
        let mut agent = Agent::new(*policy, identity, sim);
        // A new build: the embedded component with a custom section, so it has its own hash
        // and its own cache entry. Its code is the embedded one's, so its precompiled artifact
        // is seeded from theirs (saves a compile; were it unusable, this first load would
        // compile and cache the candidate instead).
        let candidate = with_custom_section(crate::EMBEDDED_POLICY, "citus-ha-bench", b"swap");
        self.seed_artifact(crate::EMBEDDED_POLICY, &candidate)?;
        let warm = self
            .engine
            .load(&candidate, "bench-candidate")
            .map_err(anyhow::Error::msg)?;
        drop(warm);
        let state_bytes = agent.policy().export_state()?.len();
        // Timed on this thread's CPU clock (the file read is a page-cache copy); the wall time
        // goes along as `wall_ns`.
        let one = |agent: &mut Agent<SimSession>| -> R<(Duration, Duration)> {
            let (t0, w0) = (harness::Instant::now(), Instant::now());
            let c = self
                .engine
                .load(&candidate, "bench-candidate")
                .map_err(anyhow::Error::msg)?;
            ready(agent.swap(c, Some((0, &view))))?;
            Ok((t0.elapsed(), w0.elapsed()))
        };
        for _ in 0..2 {
            one(&mut agent)?;
        }
        let n = if self.quick { 9 } else { 41 };
        let mut samples = Vec::with_capacity(n);
        let mut wall = Vec::with_capacity(n);
        for _ in 0..n {
            let (cpu, w) = one(&mut agent)?;
            samples.push(cpu.as_nanos() as f64);
            wall.push(w.as_nanos() as f64);
        }
        // Where the time goes: the load alone, the state hand-off's two halves, and the
        // warm-up's heartbeat on the current view (on a fresh instance: its first touch of the
        // guest's memory counts), which the swap runs on a second import.
        let mut load = Vec::new();
        let mut export = Vec::new();
        let mut import = Vec::new();
        let mut probe = Vec::new();
        for _ in 0..n {
            let t0 = harness::Instant::now();
            let c = self
                .engine
                .load(&candidate, "bench-candidate")
                .map_err(anyhow::Error::msg)?;
            load.push(t0.elapsed().as_nanos() as f64);
            let t0 = harness::Instant::now();
            let state = agent.policy().export_state()?;
            export.push(t0.elapsed().as_nanos() as f64);
            let t0 = harness::Instant::now();
            let mut p = c.import_handler(&state)?.map_err(anyhow::Error::msg)?;
            import.push(t0.elapsed().as_nanos() as f64);
            let t0 = harness::Instant::now();
            p.handle_heartbeat(0, &view)?;
            probe.push(t0.elapsed().as_nanos() as f64);
            drop(p);
        }
        // The last policy swapped in holds every group: its heartbeat queues nothing.
        let p = agent.policy();
        p.handle_heartbeat(5, &view)?;
        anyhow::ensure!(
            turn(p, &mut SimSession::default(), 5)? == 0,
            "the swapped-in policy lost the state"
        );
        let mut line = Line::new("swap");
        line.wasm = Some(harness::stats(samples));
        Ok(line
            .with("groups", 1000)
            .with("state_bytes", state_bytes as u64)
            .with("wall_ns", round1(harness::stats(wall).median_ns))
            .with("load_ns", round1(harness::stats(load).median_ns))
            .with("export_ns", round1(harness::stats(export).median_ns))
            .with("import_ns", round1(harness::stats(import).median_ns))
            .with(
                "probe_heartbeat_ns",
                round1(harness::stats(probe).median_ns),
            ))
    }

    /// Copies the cached artifact of `from` (`<sha256>-<engine key>.cwasm`, written when the
    /// bench loaded it) to the name `to` would have: the same code under another build's hash.
    fn seed_artifact(&self, from: &[u8], to: &[u8]) -> R<()> {
        use sha2::{Digest, Sha256};
        let (from, to) = (
            hex::encode(Sha256::digest(from)),
            hex::encode(Sha256::digest(to)),
        );
        for entry in std::fs::read_dir(&self.cache_dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some(rest) = name.strip_prefix(&from) {
                if rest.ends_with(".cwasm") {
                    std::fs::copy(
                        self.cache_dir.join(&name),
                        self.cache_dir.join(format!("{to}{rest}")),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn cold_start(&mut self) -> R<Line> {
        let exe = std::env::current_exe()?;
        let run = || -> R<Duration> {
            let t0 = Instant::now();
            let out = std::process::Command::new(&exe)
                .args(["bench", "--cold-start-child"])
                .env(
                    "XDG_CACHE_HOME",
                    self.cache_dir.parent().expect("in the bench dir"),
                )
                .env("RUST_LOG", "error")
                .stdin(std::process::Stdio::null())
                .output()?;
            let d = t0.elapsed();
            anyhow::ensure!(
                out.status.success() && out.stdout.starts_with(cold::FIRST_DECISION.as_bytes()),
                "the cold-start child failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(d)
        };
        // The artifact is cached already (the bench loaded the same component); warm-up runs.
        run()?;
        run()?;
        let n = if self.quick { 7 } else { 31 };
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            samples.push(run()?.as_nanos() as f64);
        }
        let mut line = Line::new("cold_start");
        line.wasm = Some(harness::stats(samples));
        Ok(line)
    }
}

/// Polls a future that never waits (the agent over the simulator) to completion.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the simulator's agent never waits"),
    }
}

/// The same component with one more custom section: a distinct build with the same code.
pub fn with_custom_section(component: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    let mut out = component.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Peak resident set of this process (VmHWM), bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `citus-ha bench`.
pub async fn run(args: BenchArgs) -> ExitCode {
    match run_inner(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("citus-ha bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run_inner(args: &BenchArgs) -> R<()> {
    let started = Instant::now();
    // `<tmp>/citus-ha-bench-PID/citus-ha`: the cold-start child, given XDG_CACHE_HOME =
    // `<tmp>/citus-ha-bench-PID`, finds the same precompiled artifact at its default place.
    let bench_dir = std::env::temp_dir().join(format!("citus-ha-bench-{}", std::process::id()));
    let cache_dir = bench_dir.join("citus-ha");
    std::fs::create_dir_all(&cache_dir)?;
    let _cleanup = RemoveOnDrop(bench_dir.clone());
    let engine = PolicyEngine::new(PolicyLimits::default(), Some(cache_dir.clone()))?;
    let loaded = match &args.policy {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --policy {}: {e}", path.display()))?;
            engine.load(&bytes, &path.display().to_string())
        }
        None => engine.load(crate::EMBEDDED_POLICY, "embedded"),
    }
    .map_err(anyhow::Error::msg)?;
    let mut b = Bench {
        effort: Effort::new(args.quick),
        quick: args.quick,
        loaded,
        engine,
        cache_dir,
        report: Report {
            json: args.json,
            header_done: false,
        },
        guest_peak_10000: 0,
        only: args.only.clone(),
    };
    if args.json {
        let contract = b.loaded.contract.to_string();
        b.report.emit(&meta_line(args).with("contract", contract));
    }

    b.both("call_overhead", |b, s| b.call_overhead(s))?;
    b.both("validate_config", |b, s| b.validate_config(s))?;
    b.both("adjust_gucs", |b, s| b.adjust_gucs(s))?;
    b.both("slot_filter_match", |b, s| b.slot_filter(s, true))?;
    b.both("slot_filter_nomatch", |b, s| b.slot_filter(s, false))?;
    let case = switchover_1_secondary();
    b.both("transition_switchover_1_secondary", |b, s| {
        b.transition(s, &case)
    })?;
    let case = replace_10_of_50_secondaries();
    b.both("transition_50_secondaries_10_replaced", |b, s| {
        b.transition(s, &case)
    })?;
    for n in [10, 100, 1000, 10_000] {
        let v = view(n);
        b.both(&format!("heartbeat_steady_{n}"), |b, s| {
            b.heartbeat_steady(s, &v)
        })?;
        b.both(&format!("heartbeat_new_{n}"), |b, s| b.heartbeat_new(s, &v))?;
        if n >= 1000 && !(args.quick && n > 1000) {
            b.both(&format!("drain_{n}"), |b, s| b.drain(s, &v))?;
        }
    }
    if b.wanted("swap") {
        let line = b.swap()?;
        b.report.emit(&line);
    }
    if b.wanted("cold_start") {
        let line = b.cold_start()?;
        b.report.emit(&line);
    }
    if let (Some(url), true) = (&args.db, b.wanted("event_to_statement")) {
        let line = event::event_to_statement(url, args.quick, &b.cache_dir).await?;
        b.report.emit(&line);
    }
    if b.guest_peak_10000 > 0 {
        let line = Line::new("guest_memory_10000").with("bytes", b.guest_peak_10000 as u64);
        b.report.emit(&line);
    }
    let line = Line::new("host_peak_rss").with("bytes", peak_rss().unwrap_or(0));
    b.report.emit(&line);
    if !args.json {
        println!("(total {:.1} s)", started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn meta_line(args: &BenchArgs) -> Line {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Line::new("meta")
        .with("policy", citus_ha_policy::POLICY_VERSION)
        .with("wasmtime", "48.0.8")
        .with(
            "nproc",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
        )
        .with("cpu", cpu)
        .with("quick", args.quick)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
