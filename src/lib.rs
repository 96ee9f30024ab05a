//! A race-free query killer for SQL sessions, model-checked with `loom`.
//!
//! Every SQL session owns a [`SqlKiller`]. Other threads stop the running
//! statement through it — `KILL QUERY`, the `max_execution_time` watchdog,
//! the memory arbitrator, a dead-connection probe — while the session polls
//! [`SqlKiller::handle_signal`] at checkpoints and calls
//! [`SqlKiller::reset`] at every statement boundary.
//!
//! The whole kill state — statement generation, phase, signal — lives in one
//! atomic word, so every transition is a single CAS and no reader sees a torn
//! state:
//!
//! ```text
//! Idle(g) --kill--> Killing(g, s) --side effects published--> Killed(g, s)
//! Idle(g) | Killed(g, s) --reset--> Idle(g + 1)
//! ```
//!
//! Around the signal sit the side channels TiDB's killer has, each with the
//! same care: [kill events](SqlKiller::kill_event) to block a thread or
//! `.await` a task until the statement is killed or ends, a
//! [cancel hook](SqlKiller::set_cancel_hook) that runs exactly once per
//! killed statement, the [finish function](SqlKiller::set_finish_func), a
//! [liveness probe](SqlKiller::set_connection_alive_probe) polled without
//! reading the clock on every check — and one no peer has,
//! [kill-immune sections](SqlKiller::kill_immune) for work past the point
//! of no return.
//!
//! The same code runs natively and under `loom`, which checks every
//! interleaving of the invariants of the crate's SPEC (§5); the models live
//! in the `loom-tests` workspace member, next to deliberately broken models
//! of TiDB's historic `SQLKiller` bugs that loom must reject.
//!
//! ```
//! use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
//!
//! let killer = SqlKiller::new();
//! let stmt = killer.statement();
//!
//! // A watchdog kills exactly this statement...
//! assert_eq!(killer.kill_statement(stmt, KillSignal::MaxExecTimeExceeded), KillOutcome::Sent);
//! // ...the session sees it at its next checkpoint...
//! assert_eq!(killer.handle_signal().unwrap_err().code(), 3024);
//! // ...and the boundary clears it: the next statement runs.
//! assert_eq!(killer.reset(), Some(KillSignal::MaxExecTimeExceeded));
//! assert!(killer.handle_signal().is_ok());
//! // A late kill aimed at the finished statement changes nothing.
//! assert_eq!(killer.kill_statement(stmt, KillSignal::QueryInterrupted), KillOutcome::Stale);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod event;
mod finish;
mod hook;
mod immune;
mod killer;
mod log;
mod loom;
mod probe;
mod side;
mod signal;
mod state;
mod wait;

pub use error::KillError;
pub use event::{KillEvent, WaitOutcome};
pub use finish::FinishError;
pub use hook::HookStatus;
pub use immune::KillImmuneGuard;
pub use killer::SqlKiller;
pub use probe::{ProbeId, DEFAULT_PROBE_INTERVAL};
pub use signal::{InvalidKillSignal, KillOutcome, KillPhase, KillSignal, StatementId};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn killer_is_send_sync() {
        assert_send_sync::<SqlKiller>();
    }
}
