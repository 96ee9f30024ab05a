//! How the owner waits for a kill in flight: spin a little, then block until
//! the kill (or the hook runner) wakes it. Nobody burns a core on a slow hook.
//!
//! Two things make `reset` and `kill_immune` wait:
//!
//! - **A kill still publishing** (`Killing`). The owner sets `PARKED` with
//!   an RMW while it holds the side-table lock, and blocks on
//!   `SqlKiller::progress` only if that RMW still read `Killing`. The
//!   winner's `KILLED` RMW is later in the word's order, so it reads
//!   `PARKED`, and then takes the lock before it notifies: the owner
//!   either saw `KILLED` (and never blocked) or is already waiting when the
//!   notification comes. Model: `hook_races_reset`.
//! - **A hook taken out of the table and still running** (`hook_runners`
//!   above zero, e.g. a hook run at install on another thread). Both sides
//!   work under the side-table lock: the owner sets `owner_parked` and
//!   waits; the runner's guard lowers the count and notifies when it
//!   reaches zero. Model: `hook_run_at_install_races_reset`.
//!
//! Both waits spin with `crossbeam_utils::Backoff` first (a short hook is
//! over before a syscall would be), and block once the backoff is
//! completed. Under loom the backoff is always completed, so the models
//! check the blocking path.

use crate::killer::Shared;
use crate::loom::atomic::Ordering::AcqRel;
use crate::loom::{lock, wait, Backoff};
use crate::side::table;
use crate::state::State;

/// The panic message of a `reset` that would wait for the very callback it
/// is called from. (`kill_immune` called from there does not wait: it is
/// part of that kill, and enters the section at once.)
pub(crate) const WAIT_FROM_OWN_CALLBACK: &str =
    "sqlkiller: reset called from inside this killer's own cancel hook or waker; those run \
     while their statement is being killed, and reset waits for that kill to finish";

impl Shared {
    /// Blocks until the kill of `seen`'s generation has published every
    /// side effect (or the generation has ended); returns the word then.
    pub(crate) fn wait_while_killing(&self, seen: State) -> State {
        let backoff = Backoff::new();
        let mut now = seen;
        while now.generation() == seen.generation() && now.is_killing() {
            assert!(!self.in_own_callback(), "{WAIT_FROM_OWN_CALLBACK}");
            if backoff.is_completed() {
                let side = lock(&self.side);
                // An RMW under the lock: see the module docs for why the
                // winner's notification cannot be lost.
                now = State(self.state.fetch_or(State::PARKED, AcqRel));
                if now.generation() == seen.generation() && now.is_killing() {
                    drop(wait(&self.progress, side));
                }
            } else {
                backoff.snooze();
            }
            now = self.load_for_update();
        }
        now
    }

    /// Blocks until no cancel hook taken out of the table is running.
    pub(crate) fn wait_for_hook_runners(&self) {
        let backoff = Backoff::new();
        loop {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if table.hook_runners == 0 {
                return;
            }
            assert!(!self.in_own_callback(), "{WAIT_FROM_OWN_CALLBACK}");
            if backoff.is_completed() {
                table.owner_parked = true;
                drop(wait(&self.progress, side));
            } else {
                drop(side);
                backoff.snooze();
            }
        }
    }

    /// Wakes an owner parked in [`wait_while_killing`](Self::wait_while_killing);
    /// called by the winner after its `KILLED` RMW read `PARKED`.
    pub(crate) fn wake_parked_owner(&self) {
        // Taking the lock orders this after the owner's `wait` released it.
        let _side = lock(&self.side);
        self.progress.notify_all();
    }
}
