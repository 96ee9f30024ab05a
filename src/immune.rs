//! Kill-immune sections: past the point of no return, a kill must not be reported.

use std::marker::PhantomData;

use crate::loom::atomic::Ordering::{AcqRel, Relaxed};
use crate::loom::{lock, Backoff};
use crate::state::State;
use crate::SqlKiller;

/// Held by the owner across a section that must not be interrupted, such
/// as a COMMIT that has reached storage (MySQL `kill_immunizer`, PostgreSQL
/// `HOLD_INTERRUPTS`). Created by [`SqlKiller::kill_immune`].
///
/// While any guard is held, `handle_signal` returns `Ok`, and a kill's
/// cancel hook and kill events wait. Kills still win and are remembered:
/// when the last guard drops, a kill of the statement that is still current
/// takes effect — the next `handle_signal` reports it, its waiters wake,
/// its hook runs (on the dropping thread). A `reset` in between discards it.
///
/// Not `Send`: it must drop on the owner thread that took it.
#[must_use = "the section is kill-immune only while the guard is held"]
pub struct KillImmuneGuard<'a> {
    killer: &'a SqlKiller,
    _owner_thread: PhantomData<*const ()>,
}

impl SqlKiller {
    /// Enters a kill-immune section (owner only); sections nest.
    ///
    /// If a kill won just before and is still running its side effects,
    /// waits for them, so that nothing of a kill runs inside the section.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// {
    ///     let _commit = killer.kill_immune();
    ///     killer.send_kill_signal(KillSignal::QueryInterrupted); // arrives mid-COMMIT
    ///     assert!(killer.handle_signal().is_ok()); // the COMMIT completes
    /// }
    /// assert!(killer.handle_signal().is_err()); // reported after the section
    /// ```
    pub fn kill_immune(&self) -> KillImmuneGuard<'_> {
        // Owner-only counter: a load and a store, no RMW needed.
        let depth = self.immune_depth.load(Relaxed);
        self.immune_depth.store(depth + 1, Relaxed);
        if depth == 0 {
            // An RMW: a kill's CAS either sees `IMMUNE` and defers its side
            // effects, or happened before, and we wait for them below.
            let prev = State(self.state.fetch_or(State::IMMUNE, AcqRel));
            if !self.in_own_callback() {
                self.wait_for_served_kill(prev);
            }
        }
        KillImmuneGuard {
            killer: self,
            _owner_thread: PhantomData,
        }
    }

    /// Whether the owner is inside a kill-immune section.
    pub fn is_kill_immune(&self) -> bool {
        self.load().has(State::IMMUNE)
    }

    /// Waits until the side effects of the kill seen in `prev` (which won
    /// before the section began) have all run.
    fn wait_for_served_kill(&self, prev: State) {
        let backoff = Backoff::new();
        if prev.is_killing() {
            loop {
                let now = self.load();
                if now.generation() != prev.generation() || !now.is_killing() {
                    break;
                }
                backoff.snooze();
            }
        }
        if prev.has(State::HOOK) {
            while lock(&self.side)
                .as_ref()
                .is_some_and(|t| t.hook_runners > 0)
            {
                backoff.snooze();
            }
        }
    }
}

impl Drop for KillImmuneGuard<'_> {
    fn drop(&mut self) {
        let killer = self.killer;
        let depth = killer.immune_depth.load(Relaxed);
        killer.immune_depth.store(depth - 1, Relaxed);
        if depth == 1 {
            // An RMW: a kill whose CAS saw `IMMUNE` left its waiters and hook
            // to us; a kill after this sees no `IMMUNE` and serves them itself.
            let prev = State(killer.state.fetch_and(!State::IMMUNE, AcqRel));
            if let Some(signal) = prev.signal() {
                killer.serve_kill(signal, prev);
            }
        }
    }
}

impl std::fmt::Debug for KillImmuneGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillImmuneGuard").finish_non_exhaustive()
    }
}
