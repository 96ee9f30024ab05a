//! The cancel hook: user code that a kill runs once, e.g. to cancel an in-flight RPC.

use crate::{HookStatus, SqlKiller, StatementId};

impl SqlKiller {
    /// Installs the cancel hook of whatever statement is current when it
    /// lands (TiDB `ConnCancel`); see [`set_cancel_hook_for`] for the rules.
    ///
    /// Use this only on the owner, which knows which statement is current.
    /// Any other thread (an RPC thread, a parallel worker) should name its
    /// statement with [`set_cancel_hook_for`]: a hook installed just after
    /// the owner's `reset` would otherwise belong to the next statement.
    /// In the idle phase (after [`end_statement`](SqlKiller::end_statement))
    /// no statement runs: the hook is refused as `Stale`. For a hook that
    /// serves every statement, see
    /// [`set_session_cancel_hook`](SqlKiller::set_session_cancel_hook).
    ///
    /// [`set_cancel_hook_for`]: SqlKiller::set_cancel_hook_for
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use sqlkiller::{HookStatus, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let cancelled = Arc::new(AtomicUsize::new(0));
    /// let c = Arc::clone(&cancelled);
    /// let status = killer.set_cancel_hook(move || {
    ///     c.fetch_add(1, Ordering::SeqCst); // e.g. cancel the in-flight RPC
    /// });
    /// assert_eq!(status, HookStatus::Armed);
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted); // AlreadyKilled: no second run
    /// assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    ///
    /// // Installed after the kill won: runs at once.
    /// assert_eq!(killer.set_cancel_hook(|| {}), HookStatus::Ran);
    /// ```
    pub fn set_cancel_hook(&self, hook: impl FnOnce() + Send + 'static) -> HookStatus {
        self.shared.install_hook(None, Box::new(hook))
    }

    /// Installs the cancel hook of statement `statement` only; if that
    /// statement has ended, returns [`HookStatus::Stale`] and drops the hook
    /// un-run, as [`kill_statement`](SqlKiller::kill_statement) refuses a
    /// late kill.
    ///
    /// The hook runs exactly once if and only if its statement is killed:
    /// on the killing thread, while the kill is being published (for a
    /// statement deadline's kill, on a thread started for it, so that a
    /// slow hook delays no other session's deadline; a panic there is
    /// contained); or right
    /// here, if the kill won before the hook was installed (TiDB PR #70608
    /// lost exactly that case). It never runs after the `reset` that ends
    /// the statement has returned, and no lock of the killer is held while
    /// it runs, so it may call back into the killer (except `reset` of this
    /// killer, which would wait for the hook itself: it panics with a clear
    /// message, also when reached through other killers' callbacks;
    /// `kill_immune` there enters without waiting).
    ///
    /// A statement has one hook: installing another before the kill drops
    /// the previous one un-run. Hooks installed after a kill inside a
    /// kill-immune section are all owed, and all run when the section ends
    /// (see [`KillImmuneGuard`](crate::KillImmuneGuard) for where).
    ///
    /// **Panics.** A hook that panics panics the thread that ran it: the
    /// killer's `send_kill_signal` / `kill_statement` (after the kill was
    /// fully published and every waiter woken), this install call, or the
    /// owner operation that delivered a deferred hook. The killer stays
    /// usable, and `reset` does not wait for a hook that panicked.
    ///
    /// Keep it short (cancel a context, close a socket): `reset` of its
    /// statement waits until it returns (blocking, not spinning, once a
    /// short backoff is over).
    ///
    /// ```
    /// use sqlkiller::{HookStatus, KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement(); // an RPC thread was handed this id
    /// killer.reset(); // ...but the statement ended before it got going
    /// assert_eq!(killer.set_cancel_hook_for(stmt, || unreachable!()), HookStatus::Stale);
    ///
    /// // The current statement's hook is untouched by the late install.
    /// let now = killer.statement();
    /// assert_eq!(killer.set_cancel_hook_for(now, || {}), HookStatus::Armed);
    /// assert_eq!(killer.kill_statement(now, KillSignal::QueryInterrupted), KillOutcome::Sent);
    /// ```
    pub fn set_cancel_hook_for(
        &self,
        statement: StatementId,
        hook: impl FnOnce() + Send + 'static,
    ) -> HookStatus {
        self.shared.install_hook(Some(statement), Box::new(hook))
    }
}
