//! The cancel hook: user code that a kill runs once, e.g. to cancel an in-flight RPC.

use crate::loom::atomic::Ordering::AcqRel;
use crate::loom::lock;
use crate::side::{table, CancelHook};
use crate::state::State;
use crate::SqlKiller;

/// What [`SqlKiller::set_cancel_hook`] did with the hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookStatus {
    /// Installed: it runs once if this statement is killed (deferred to the
    /// end of a kill-immune section), or is dropped un-run by `reset`.
    Armed,
    /// The statement had already been killed: the hook ran before
    /// `set_cancel_hook` returned.
    Ran,
}

impl SqlKiller {
    /// Installs the current statement's cancel hook (TiDB `ConnCancel`).
    ///
    /// The hook runs exactly once if and only if this statement is killed:
    /// on the killing thread, while the kill is being published; or right
    /// here, if the kill won before the hook was installed (TiDB PR #70608
    /// lost exactly that case). It never runs after the `reset` that ends
    /// the statement has returned, and no lock of the killer is held while
    /// it runs, so it may call back into the killer (except `reset`, which
    /// would wait for the hook itself: that panics with a clear message).
    ///
    /// A statement has one hook: installing another before the kill drops
    /// the previous one un-run. Inside a kill-immune section the hook of a
    /// killed statement waits for the last guard to drop.
    ///
    /// Keep it short (cancel a context, close a socket): `reset` of its
    /// statement spins, yielding, until it returns.
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
    /// killer.send_kill_signal(KillSignal::QueryInterrupted);
    /// killer.send_kill_signal(KillSignal::QueryInterrupted); // AlreadyKilled: no second run
    /// assert_eq!(cancelled.load(Ordering::SeqCst), 1);
    ///
    /// // Installed after the kill won: runs at once.
    /// assert_eq!(killer.set_cancel_hook(|| {}), HookStatus::Ran);
    /// ```
    pub fn set_cancel_hook(&self, hook: impl FnOnce() + Send + 'static) -> HookStatus {
        let hook: CancelHook = Box::new(hook);
        let mut side = lock(&self.side);
        let table = table(&mut side);
        // A read-modify-write under the lock, after which the hook is either
        // in the table (a later kill's CAS sees `HOOK` and takes it) or ours
        // to run (we see the kill's signal). Publishing the hook with a
        // plain store after checking "not killed" is TiDB PR #70608's bug.
        let prev = State(self.state.fetch_or(State::HOOK, AcqRel));
        match prev.signal() {
            None => {
                let replaced = table.hook.replace(hook);
                drop(side);
                drop(replaced);
                HookStatus::Armed
            }
            Some(_) if prev.has(State::IMMUNE) => {
                // Owed when the guard drops; keep a hook that is owed already.
                table.hook = Some(match table.hook.take() {
                    Some(owed) => Box::new(move || {
                        owed();
                        hook();
                    }),
                    None => hook,
                });
                HookStatus::Armed
            }
            Some(_) => {
                // Counted before the lock is dropped, so `reset` waits for it.
                table.hook_runners += 1;
                drop(side);
                self.run_hook(hook);
                HookStatus::Ran
            }
        }
    }
}
