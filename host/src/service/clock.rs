//! The service clock.

use std::time::Duration;

/// The service clock: milliseconds since start, monotonic.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
    /// Milliseconds since the start: the `now` of every policy call.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    /// The instant of a policy time (its deadlines), to sleep until.
    pub fn instant(&self, ms: u64) -> tokio::time::Instant {
        self.start + Duration::from_millis(ms)
    }
}
