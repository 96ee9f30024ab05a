//! `KillHandle`: the killers' side of a session's killer.

use std::sync::Arc;

use crate::engine::Shared;
use crate::{HookStatus, KillError, KillOutcome, KillPhase, KillSignal, StatementId};

/// The killers' side of a session's [`SqlKiller`](crate::SqlKiller): what a
/// `KILL QUERY` handler, a `max_execution_time` watchdog, a memory
/// arbitrator, an RPC thread or a parallel worker of the statement holds.
///
/// Made by [`SqlKiller::handle`](crate::SqlKiller::handle); `Clone + Send +
/// Sync + 'static`, one reference count per clone. It can kill, check,
/// install a hook for a named statement and wait for kills, but not end a
/// statement (`reset`) or enter a kill-immune section: those belong to the
/// owner. Once the owner is dropped, every kill through a handle is
/// [`KillOutcome::Stale`].
///
/// A process list keeps one handle per connection:
///
/// ```
/// use std::collections::HashMap;
/// use sqlkiller::{KillHandle, KillOutcome, KillSignal, SqlKiller};
///
/// let session = SqlKiller::new();
/// session.set_conn_id(42);
/// let mut processes: HashMap<u64, KillHandle> = HashMap::new();
/// processes.insert(42, session.handle());
///
/// // SHOW PROCESSLIST read statement `stmt` of connection 42; KILL QUERY 42 follows.
/// let stmt = processes[&42].statement();
/// assert_eq!(processes[&42].kill_statement(stmt, KillSignal::QueryInterrupted), KillOutcome::Sent);
/// assert!(session.handle_signal().is_err());
/// ```
#[derive(Clone)]
pub struct KillHandle {
    pub(crate) shared: Arc<Shared>,
}

impl KillHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> KillHandle {
        KillHandle { shared }
    }

    /// As [`SqlKiller::send_kill_signal`](crate::SqlKiller::send_kill_signal):
    /// stops the current statement, whichever it is.
    pub fn send_kill_signal(&self, signal: KillSignal) -> KillOutcome {
        self.shared.kill(None, signal, "")
    }

    /// As [`SqlKiller::send_kill_signal_with_reason`](crate::SqlKiller::send_kill_signal_with_reason).
    pub fn send_kill_signal_with_reason(&self, signal: KillSignal, reason: &str) -> KillOutcome {
        self.shared.kill(None, signal, reason)
    }

    /// As [`SqlKiller::kill_statement`](crate::SqlKiller::kill_statement):
    /// stops statement `id` only, `Stale` if it has ended.
    pub fn kill_statement(&self, id: StatementId, signal: KillSignal) -> KillOutcome {
        self.shared.kill(Some(id), signal, "")
    }

    /// As [`SqlKiller::kill_statement_with_reason`](crate::SqlKiller::kill_statement_with_reason).
    pub fn kill_statement_with_reason(
        &self,
        id: StatementId,
        signal: KillSignal,
        reason: &str,
    ) -> KillOutcome {
        self.shared.kill(Some(id), signal, reason)
    }

    /// As [`SqlKiller::statement`](crate::SqlKiller::statement).
    pub fn statement(&self) -> StatementId {
        self.shared.statement()
    }

    /// As [`SqlKiller::kill_signal`](crate::SqlKiller::kill_signal).
    pub fn kill_signal(&self) -> Option<KillSignal> {
        self.shared.kill_signal()
    }

    /// As [`SqlKiller::phase`](crate::SqlKiller::phase).
    pub fn phase(&self) -> (StatementId, KillPhase) {
        self.shared.phase()
    }

    /// The checkpoint of a worker of the statement (TiDB's parallel
    /// operators check the session's killer too): `Ok` unless the current
    /// statement was killed, and `Ok` inside a kill-immune section.
    ///
    /// Named apart from the owner's [`SqlKiller::handle_signal`](crate::SqlKiller::handle_signal)
    /// because it does less: it only reads the signal.
    ///
    /// Unlike the owner's [`handle_signal`](crate::SqlKiller::handle_signal)
    /// it never runs the liveness probe, and never serves what a kill-immune
    /// section deferred: those are the owner's. One atomic load and a mask
    /// test when not killed. In a per-row loop, own the handle (move it into
    /// the worker's closure) or take it as an argument, rather than borrow
    /// it from elsewhere: see "In a loop that checks every row" on
    /// [`SqlKiller::handle_signal`](crate::SqlKiller::handle_signal).
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let worker = killer.handle();
    /// assert!(worker.check_signal().is_ok());
    /// let _ = killer.send_kill_signal(KillSignal::QueryMemoryExceeded);
    /// assert_eq!(worker.check_signal().unwrap_err().code(), 8175);
    /// ```
    #[inline(always)]
    #[cfg_attr(feature = "testing", track_caller)]
    pub fn check_signal(&self) -> Result<(), KillError> {
        self.shared.check()
    }

    /// The old name of [`check_signal`](KillHandle::check_signal), which
    /// it calls: it never did what the owner's `handle_signal` does besides
    /// reading the signal (run the probe, serve deferred side effects).
    #[deprecated(
        since = "0.2.0",
        note = "renamed `check_signal`: it does not run the probe nor serve deferred side effects, unlike `SqlKiller::handle_signal`"
    )]
    #[inline(always)]
    #[cfg_attr(feature = "testing", track_caller)]
    pub fn handle_signal(&self) -> Result<(), KillError> {
        self.check_signal()
    }

    /// As [`SqlKiller::conn_id`](crate::SqlKiller::conn_id).
    pub fn conn_id(&self) -> u64 {
        self.shared.conn_id()
    }

    /// As [`SqlKiller::in_write_result_set`](crate::SqlKiller::in_write_result_set).
    pub fn in_write_result_set(&self) -> bool {
        self.shared.in_write_result_set()
    }

    /// As [`SqlKiller::is_kill_immune`](crate::SqlKiller::is_kill_immune).
    pub fn is_kill_immune(&self) -> bool {
        self.shared.is_kill_immune()
    }

    /// As [`SqlKiller::finish_result_set`](crate::SqlKiller::finish_result_set):
    /// releases a statement stuck writing its result set.
    ///
    /// # Errors
    ///
    /// As [`SqlKiller::finish_result_set`](crate::SqlKiller::finish_result_set).
    pub fn finish_result_set(&self) -> Result<bool, crate::FinishError> {
        self.shared.finish_result_set()
    }

    /// As [`SqlKiller::set_cancel_hook_for`](crate::SqlKiller::set_cancel_hook_for):
    /// the hook of statement `statement` only, `Stale` if it has ended. (A
    /// handle has no unscoped `set_cancel_hook`: only the owner knows which
    /// statement is current.)
    pub fn set_cancel_hook_for(
        &self,
        statement: StatementId,
        hook: impl FnOnce() + Send + 'static,
    ) -> HookStatus {
        self.shared.install_hook(Some(statement), Box::new(hook))
    }

    /// As [`SqlKiller::check_connection_alive`](crate::SqlKiller::check_connection_alive):
    /// a dead-connection checker runs the probe now.
    pub fn check_connection_alive(&self) -> bool {
        self.shared.check_connection_alive()
    }
}

impl std::fmt::Debug for KillHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("KillHandle", f)
    }
}
