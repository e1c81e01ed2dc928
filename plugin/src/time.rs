//! Time on the host's clock, as types: a moment ([`Instant`]) and a length ([`Duration`]), both
//! in milliseconds, so a deadline, a timeout and a Citus cooldown (an `i32` of milliseconds that
//! only Citus reads) cannot be mixed up. The policy has no clock: every `Instant` comes from
//! the host with an input. The public API takes and gives plain milliseconds (as the WIT does);
//! these types live behind it.

use std::ops::Add;

/// A moment on the host's clock, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

/// Deadlines far in the future (a huge timeout) stay at the end of time instead of wrapping.
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

/// A length of time, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }
    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}
