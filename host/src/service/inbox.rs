//! The messages the HTTP server, the signal handlers and the policy watcher send the owner,
//! and what comes back.

use super::report::SwapReport;
use crate::policy::LoadedPolicy;
use citus_ha_policy::InvalidInput;
use tokio::sync::oneshot;

/// A message to the owner task.
pub enum Input {
    /// A worker event body (already known to be JSON). With `caller_deadline` (a
    /// `before_demote`) the answer waits for its task, and the caller waits until then: the
    /// policy is told the time the caller has left when the owner takes the event up, so a
    /// pause never starts for a caller who has gone.
    Event {
        body: String,
        caller_deadline: Option<tokio::time::Instant>,
        reply: oneshot::Sender<EventAnswer>,
    },
    /// Put this (already compiled) candidate in place of the running policy.
    Swap {
        candidate: Box<LoadedPolicy>,
        origin: String,
        reply: oneshot::Sender<Result<SwapReport, String>>,
    },
}

/// The immediate answer to an event.
pub enum EventAnswer {
    /// The policy (or, when not leading, the policy crate's validator) refused the body.
    Invalid(InvalidInput),
    /// Valid, but this node is not the coordinator leader.
    Ignored(String),
    Discarded(String),
    Unchanged,
    Queued(u64),
    /// Queued; the receiver resolves when its task is done.
    Waiting(u64, oneshot::Receiver<Completion>),
    /// The policy call did not return (trap) or the service is stopping.
    Error(String),
}

/// How a waited-for event ended.
#[derive(Clone, Debug)]
pub enum Completion {
    /// Its statements ran: for `before_demote`, the pause is in place (transaction open).
    Paused,
    /// A statement of the turn that completed it failed; the transaction is gone.
    Failed(String),
    /// The task was dropped before it ran.
    Discarded(String),
}
