//! A race-free query killer for SQL sessions, model-checked with `loom`.
//!
//! Every SQL session owns a [`SqlKiller`]. Other threads stop the running
//! statement through it — `KILL QUERY`, the `max_execution_time` watchdog,
//! the memory arbitrator, a dead-connection probe — while the session polls
//! [`SqlKiller::handle_signal`] at checkpoints and calls
//! [`SqlKiller::reset`] at every statement boundary.
//!
//! The whole kill state — statement generation, phase, signal — lives in one
//! atomic word, so every transition is a single read-modify-write and no
//! reader sees a torn state:
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
//! # Sessions
//!
//! A server's kill path does not end at one statement, and neither does
//! the crate:
//!
//! - **An idle phase.** [`start_statement`](SqlKiller::start_statement) and
//!   [`end_statement`](SqlKiller::end_statement) bracket each statement;
//!   between them the session is idle: a `KILL QUERY` returns
//!   [`KillOutcome::Idle`] and changes nothing, no deadline runs, and the
//!   end returns the kill's error with the killer's reason. Servers that
//!   only mark starts keep calling [`reset`](SqlKiller::reset) (below:
//!   which to use).
//! - **Session kills** (`KILL CONNECTION`): [`kill_session`](SqlKiller::kill_session)
//!   kills the running statement and every later start;
//!   [`session_killed`](SqlKiller::session_killed) waits for it.
//! - **A session-wide cancel hook**, [`set_session_cancel_hook`](SqlKiller::set_session_cancel_hook),
//!   for what serves every statement (SQLite's interrupt handle).
//! - **Tickets**: [`KillHandle::ticket`] completes when a statement has
//!   ended (`KILL QUERY ... SYNC`).
//! - **A process list**, [`ProcessList`]: `KILL QUERY <conn>`, `KILL QUERY
//!   ID <n>`, `KILL <conn>` and `SHOW PROCESSLIST`, each kill decided on
//!   the session's word, so it lands on the statement running when it takes
//!   effect, or on nothing; with a stuck-kill report.
//! - **Async owners**: the `_async` forms of the operations that may wait
//!   for a kill in flight ([`start_statement_async`](SqlKiller::start_statement_async),
//!   [`end_statement_async`](SqlKiller::end_statement_async),
//!   [`kill_immune_async`](SqlKiller::kill_immune_async),
//!   [`clear_finish_func_async`](SqlKiller::clear_finish_func_async)) await
//!   instead of blocking a runtime thread. Every other owner operation is
//!   bounded: it takes at most the side table's lock, which is never held
//!   across user code (and runs the owner's own callbacks, such as a hook
//!   a kill-immune section deferred, on the owner's task). Dropping the
//!   `SqlKiller` ends the statement as `end_statement` does and may wait
//!   the same way: an async owner awaits `end_statement_async()` first,
//!   after which the drop waits for nothing (no kill lands on an idle
//!   session).
//!
//! ## Which to use: `reset`, or `start_statement` and `end_statement`
//!
//! | your server | call | between statements |
//! | --- | --- | --- |
//! | marks only where statements start (TiDB's `ResetContextOfStmt`) | [`reset`](SqlKiller::reset) at each start | the last statement stays current: a late `KILL QUERY` returns `Sent` and kills nothing that runs, and the next `reset` clears it |
//! | knows where statements start **and** end (a protocol loop) | [`start_statement`](SqlKiller::start_statement) and [`end_statement`](SqlKiller::end_statement) | the session is **idle**: a `KILL QUERY` returns [`KillOutcome::Idle`] and changes nothing, no deadline runs, and the end returns the kill's error with its reason |
//!
//! Prefer the second when you can: it is what MySQL and PostgreSQL do (a
//! `KILL QUERY` on an idle connection is skipped "so that it doesn't affect
//! the next command"; a cancel that arrives while PostgreSQL reads a
//! command is ignored), and it is the only way a process list can say that
//! a session is idle. The two mix: `reset` on an idle session starts a
//! statement, `start_statement` on a running one ends it first.
//!
//! The same code runs natively and under `loom`, which checks every
//! interleaving of the crate's invariants (I1 to I9: `docs/VERIFICATION.md`
//! lists them with their models); the models live in the `loom-tests`
//! workspace member, next to deliberately broken models of TiDB's historic
//! `SQLKiller` bugs that loom must reject. It also runs under `shuttle`
//! (the `shuttle-tests` member): scenarios of many sessions, a timer
//! thread, async tasks and the process list, under randomized schedulers
//! with replay.
//!
//! To check your engine's side, that every kill stops a statement cleanly
//! wherever it lands, the `testing` feature adds the `drill` module:
//! a kill at every checkpoint of a statement of yours.
//!
//! # Where user code runs, and where its panics go
//!
//! No lock of the killer is held while user code runs, so every callback
//! may call back into this killer or any other. No destructor of this
//! crate runs user code, except the owner's drop, which ends the statement
//! as `reset` does (it wakes the waiters and drops the hook un-run), and
//! the drop of user values it owns (a `KillEvent` drops its waker). A panic in a callback never wedges
//! `reset`, a kill-immune guard or a waiter, never skips another waiter's
//! wake-up, and never aborts the process; it reaches the caller that ran
//! the callback, as follows.
//!
//! | callback | runs on | a panic |
//! | --- | --- | --- |
//! | cancel hook, and the session's cancel hook | the killing thread ([`send_kill_signal`](SqlKiller::send_kill_signal) and friends, or a probe's kill); the installing thread if the statement was already killed; the owner, for a hook deferred by a kill-immune section | reaches that caller once the kill is published (`Killed`) and every waiter of it woke |
//! | kill event's waker | the thread that killed or reset the statement, or the owner for a deferred kill | the same; the other wakers are still woken, the hook still runs |
//! | liveness probe | the caller of [`handle_signal`](SqlKiller::handle_signal) or [`check_connection_alive`](SqlKiller::check_connection_alive) | reaches that caller; the probe stays installed |
//! | finish function | the caller of [`finish_result_set`](SqlKiller::finish_result_set) | reaches that caller; the function is removed, a waiting [`clear_finish_func`](SqlKiller::clear_finish_func) is released |
//! | a hook's or waker's drop | `reset`, which drops the old statement's hook un-run and wakes its waiters | reaches `reset`'s caller after the statement has ended |
//! | hook or waker of a deadline's kill | a thread of its own (`sqlkiller-deadline`), spawned for a deadline's kill whose statement has a hook, so a slow hook delays no other session's deadline; the kill itself lands on the timer thread (or the caller of [`ManualClock::advance`], which waits for that thread). Without a hook, the waiters are woken on the timer thread itself: a waker must not block | contained: the process's panic hook prints it, then it is dropped (a payload whose own drop panics is contained too); the timer goes on serving every session |
//! | anything run by dropping [`SqlKiller`] | the dropping thread | contained (dropped): a destructor must not panic while unwinding |
//!
//! When several callbacks of one kill panic, the first panic is resumed and
//! the others are dropped. A port to a language where an unrecovered panic
//! ends the process (Go) should instead recover each callback's panic in
//! the runner and report it; `docs/PORTING.md` says how.
//!
//! # Calling back into a killer from its own callbacks
//!
//! A thread that runs user code for killer K is *inside K* from the moment
//! a kill of K starts serving its waiters and hook (whichever thread made
//! the kill: a `KILL` handler, the timer, or the owner itself through
//! `send_kill_signal` or the probe's kill inside `handle_signal`) until
//! they return; likewise while it runs K's probe or finish function. That
//! holds through any other killer in between: when K's hook kills killer
//! B, B's hook is still inside K. Calls that would wait for what this
//! thread is running are decided by one rule:
//!
//! | call on K | from inside K's | does |
//! | --- | --- | --- |
//! | [`reset`](SqlKiller::reset), [`start_statement`](SqlKiller::start_statement), [`end_statement`](SqlKiller::end_statement) and their `_async` forms | kill (its hook or a waker), if it would wait for that kill | panics: "reset called from inside this killer's own cancel hook or waker" |
//! | dropping the [`SqlKiller`] (a callback held the last reference) | kill (its hook or a waker) | closes the session without waiting: kills are `Stale`, pending events complete with `Reset`, un-run hooks are dropped; the running kill completes |
//! | [`kill_immune`](SqlKiller::kill_immune) | kill (its hook or a waker) | enters the section without waiting for the kill |
//! | [`handle_signal`](SqlKiller::handle_signal), [`check_connection_alive`](SqlKiller::check_connection_alive) | probe | the probe is not run again (reported alive) |
//! | [`finish_result_set`](SqlKiller::finish_result_set) | finish function | [`FinishError::ReentrantFinish`] |
//! | [`clear_finish_func`](SqlKiller::clear_finish_func) | finish function | clears it without waiting, [`FinishError::ReentrantClear`] |
//!
//! Everything else (kills, checks, installs, events) works from any callback.
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

// The public types: rustdoc, examples, one-line delegations into `engine`.
mod deadline;
mod event;
mod finish;
mod handle;
mod hook;
mod immune;
mod killer;
mod lifecycle;
mod list;
mod probe;
mod session;
mod ticket;

// The engine: the only code that acts on a session's shared block.
mod engine;

// What the engine is built on: the state word, the one reentrancy rule,
// the side table's data, the clock and timer.
mod callback;
mod clock;
mod state;
mod table;

// The kill drill, for integrators' tests (the `testing` feature).
#[cfg(feature = "testing")]
pub mod drill;

// The vocabulary and the facade.
mod error;
mod log;
mod loom;
mod signal;

pub use clock::ManualClock;
pub use error::{FinishError, KillError};
pub use event::{KillEvent, OwnedKillEvent};
pub use handle::KillHandle;
pub use immune::KillImmuneGuard;
pub use killer::SqlKiller;
pub use list::{Kill, ProcessInfo, ProcessList, ProcessListError};
pub use session::SessionKilled;
pub use signal::{
    HookStatus, InvalidKillSignal, KillOutcome, KillPhase, KillSignal, ProbeId, SessionPhase,
    StatementId, WaitOutcome, DEFAULT_PROBE_INTERVAL,
};
pub use ticket::Ticket;

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
        assert_send_sync::<KillHandle>();
        assert_send_sync::<KillImmuneGuard<'static>>();
        fn assert_send_static<T: Send + 'static>() {}
        assert_send_static::<OwnedKillEvent>();
        assert_send_static::<KillHandle>();
    }
}
