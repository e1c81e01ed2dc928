//! Where citus-ha deliberately departs from the reference (Patroni 4.1.5), one switch turns
//! the departures off: a build with `--features reference-port` behaves like the reference at
//! each of those points, so the tests can show that each departure's scenario fails there.

/// True only in the `reference-port` test build.
pub const REFERENCE_PORT: bool = cfg!(feature = "reference-port");
