//! Timing: warm-up, then the median of many samples. A sample times a batch of calls and
//! divides; operations that consume their input time a batch of prepared states, prepared
//! outside the timed region (as the reference's `run_batched` does).
//!
//! The clock is the measuring thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): everything the
//! operation costs, in user and kernel mode (page faults included), but not the time the thread
//! waited for a core that other work on a shared 2-core machine held. Wall time is used where
//! waiting is the point (cold start, event to statement).

use std::hint::black_box;
use std::time::Duration;

/// A point on this thread's CPU-time clock.
#[derive(Clone, Copy)]
pub struct Instant(Duration);

impl Instant {
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out-pointer.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
        Instant(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    pub fn elapsed(&self) -> Duration {
        Instant::now().0.saturating_sub(self.0)
    }
}

/// How hard to measure.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// Samples of a cheap, repeatable operation.
    pub samples: usize,
    /// How long one sample of a repeatable operation should last.
    pub sample_target: Duration,
    /// How long to run an operation before measuring it.
    pub warmup: Duration,
    /// The most samples of an operation that needs prepared state.
    pub max_prepared_samples: usize,
    /// Time budget for the samples of one prepared operation (more samples while it lasts).
    pub prepared_budget: Duration,
}

impl Effort {
    pub fn new(quick: bool) -> Self {
        if quick {
            Effort {
                samples: 21,
                sample_target: Duration::from_micros(500),
                warmup: Duration::from_millis(20),
                max_prepared_samples: 15,
                prepared_budget: Duration::from_millis(300),
            }
        } else {
            Effort {
                samples: 101,
                sample_target: Duration::from_millis(2),
                warmup: Duration::from_millis(100),
                max_prepared_samples: 101,
                prepared_budget: Duration::from_secs(3),
            }
        }
    }
}

/// The median of per-operation times in ns (and the spread, for the JSON line).
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub samples: usize,
}

pub fn stats(mut samples: Vec<f64>) -> Stats {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let at = |q: f64| samples[((n - 1) as f64 * q).round() as usize];
    let median_ns = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Stats {
        median_ns,
        p10_ns: at(0.1),
        p90_ns: at(0.9),
        samples: n,
    }
}

fn run_batch(f: &mut dyn FnMut(), batch: u64) -> Duration {
    let t0 = Instant::now();
    for _ in 0..batch {
        f();
    }
    t0.elapsed()
}

/// A cheap operation that leaves the state as it found it (it can run back to back).
pub fn repeat(effort: &Effort, mut f: impl FnMut()) -> Stats {
    let f: &mut dyn FnMut() = &mut f;
    // Warm-up, which also finds a batch size that lasts about `sample_target`.
    let t_start = Instant::now();
    let mut batch: u64 = 1;
    loop {
        let d = run_batch(f, batch);
        if d * 4 >= effort.sample_target && t_start.elapsed() >= effort.warmup {
            let per = d.as_nanos().max(1) as f64 / batch as f64;
            batch = ((effort.sample_target.as_nanos() as f64 / per).ceil() as u64).max(1);
            break;
        }
        if d * 4 < effort.sample_target {
            batch *= 2;
        }
    }
    let samples = (0..effort.samples)
        .map(|_| run_batch(f, batch).as_nanos() as f64 / batch as f64)
        .collect();
    stats(samples)
}

/// An operation that consumes prepared state: `prepare` builds one state (untimed), `run` is
/// the timed operation on it, `check` verifies the state afterwards and disposes of it
/// (untimed, every sample).
/// A sample runs `k` prepared states back to back, `k` chosen so a sample lasts at least
/// ~200 us (fast operations) and 1 for slow ones.
pub fn prepared<S>(
    effort: &Effort,
    mut prepare: impl FnMut() -> S,
    mut run: impl FnMut(&mut S),
    mut check: impl FnMut(S),
) -> Stats {
    // Warm-up and sizing: a few untimed rounds of the whole cycle.
    let mut one = Duration::ZERO;
    for _ in 0..3 {
        let mut s = prepare();
        let t0 = Instant::now();
        run(&mut s);
        one = t0.elapsed();
        check(s);
    }
    let k = (Duration::from_micros(200).as_nanos() / one.as_nanos().max(1)).clamp(1, 32) as usize;
    let per_sample = one * k as u32;
    let by_budget = (effort.prepared_budget.as_nanos() / per_sample.as_nanos().max(1)) as usize;
    let n = by_budget.clamp(5, effort.max_prepared_samples);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let mut states: Vec<S> = (0..k).map(|_| prepare()).collect();
        let t0 = Instant::now();
        for s in states.iter_mut() {
            run(s);
        }
        let d = t0.elapsed();
        black_box(&states);
        for s in states {
            check(s);
        }
        samples.push(d.as_nanos() as f64 / k as f64);
    }
    stats(samples)
}
