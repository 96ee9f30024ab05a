//! The end of a statement (`reset`, and the owner's drop, which closes the
//! session), and how the owner waits for a kill in flight: spin a little,
//! then block until the kill (or the hook runner) wakes it.
//!
//! Two things make the owner wait:
//!
//! - **A kill still publishing** (`Killing`). The owner parks with an RMW
//!   on the word while it holds the side-table lock, and blocks on
//!   `progress` only if that RMW still read `Killing`. The winner's
//!   `KILLED` RMW is later in the word's order, so it sees the owner
//!   parked, and takes the lock before it notifies: the owner either saw
//!   `KILLED` (and never blocked) or is already waiting when the
//!   notification comes. Model: `hook_races_reset`.
//! - **A hook taken out of the table and still running** (`hook_runners`
//!   above zero, e.g. a hook run at install on another thread). Both sides
//!   work under the side-table lock: the owner sets `owner_parked` and
//!   waits; the runner's guard lowers the count and notifies when it
//!   reaches zero. Model: `hook_run_at_install_races_reset`.
//!
//! Both waits spin with `crossbeam_utils::Backoff` first (a short hook is
//! over before a syscall would be), then block without a timeout until
//! woken. Under loom the backoff is always completed, so the models check
//! the blocking path. A thread serving this killer's kill never waits for
//! it (`callback.rs`): `reset` panics there, and the drop closes the
//! session without waiting.

use std::sync::Arc;

use super::{table, Shared};
use crate::callback::{self, FirstPanic, WAIT_FROM_OWN_CALLBACK};
use crate::log;
use crate::loom::{lock, wait, Backoff};
use crate::state::Snapshot;
use crate::table::Leftovers;
use crate::KillSignal;

impl Shared {
    pub(crate) fn reset(self: &Arc<Self>) -> Option<KillSignal> {
        let (cleared, panics) = self.end_statement(false);
        panics.resume();
        cleared
    }

    /// The owner's drop: ends the statement as `reset` does, drops what a
    /// kill-immune section still owed, and marks the session closed. A
    /// panic of user code on the way is contained: a destructor must not
    /// panic while unwinding.
    ///
    /// Then the session lets go of what only it needed: the finish
    /// function and the liveness probe are dropped (so one that captured
    /// this session's own `KillHandle` is no reference cycle), and its
    /// entry leaves the timer's queue.
    pub(crate) fn close(self: &Arc<Self>) {
        let (_cleared, panics) = self.end_statement(true);
        drop(panics); // contained (`FirstPanic`'s drop): a destructor must not unwind
        let (finish, probe) = {
            let mut side = lock(&self.side);
            match side.as_mut() {
                Some(table) => {
                    // A run in progress drops its function instead of
                    // putting it back.
                    table.finish.version += 1;
                    self.state.remove_probe();
                    (table.finish.func.take(), table.probe.probe.take())
                }
                None => (None, None),
            }
        };
        self.leave_timer();
        callback::drop_contained(finish);
        callback::drop_contained(probe);
    }

    /// Ends the current statement: `reset`, or with `close` the owner's
    /// drop. Returns the cleared signal and the first panic of user code
    /// run on the way, for the caller to resume or contain.
    fn end_statement(self: &Arc<Self>, close: bool) -> (Option<KillSignal>, FirstPanic) {
        // The common case first: nothing touched the statement since the
        // last one ended, so the word still equals the owner's hint and one
        // CAS ends it. A failed CAS returns the word, where the loop starts.
        let mut current = match self.state.try_next_statement_from_hint(close) {
            Ok(ended) => return self.finish_statement(ended, close, None, FirstPanic::default()),
            Err(actual) => actual,
        };
        // A panic of user code run from here (an owed hook, a waker) is
        // kept until the statement has ended.
        let mut panics = FirstPanic::default();
        loop {
            if current.is_killing() {
                if close && self.serving_own_kill() {
                    return (None, self.close_without_waiting(panics));
                }
                // The winner is publishing; it holds nothing we hold.
                current = self.wait_while_killing(current);
                continue;
            }
            if current.is_owed() && !close {
                // A kill inside a kill-immune section left its waiters and
                // hook to the owner's next operation: this one.
                panics.run(|| self.deliver_owed());
                current = self.state.load_for_update();
                continue;
            }
            // Generation-local data in the side table is cleared under its
            // lock, in the same critical section as the CAS that ends the
            // generation (I4).
            let mut side = current.has_side_data().then(|| lock(&self.side));
            if side
                .as_mut()
                .is_some_and(|side| table(side).hook_runners > 0)
            {
                // A hook of this statement is running on another thread
                // (or on this one, further down the stack): wait for it.
                drop(side);
                if close && self.serving_own_kill() {
                    return (None, self.close_without_waiting(panics));
                }
                self.wait_for_hook_runners();
                current = self.state.load_for_update();
                continue;
            }
            if let Err(actual) = self.state.transition_to_next_statement(current, close) {
                current = actual;
                continue;
            }
            let leftovers = side
                .as_mut()
                .and_then(|side| side.as_mut())
                .map(|table| table.end_generation(current.has_waiters()));
            drop(side);
            return self.finish_statement(current, close, leftovers, panics);
        }
    }

    /// The owner's drop on a thread that is serving this session's kill
    /// (its hook or waker held the last reference to the owner): closes the
    /// session as it is, without waiting for the kill this very thread
    /// runs. The statement keeps its signal; kills are `Stale` from now on,
    /// pending waiters complete with `Reset`, hooks still in the table are
    /// dropped un-run. The reason text stays (the word still says `REASON`).
    fn close_without_waiting(&self, mut panics: FirstPanic) -> FirstPanic {
        let leftovers = {
            let mut side = lock(&self.side);
            let before = self.state.close();
            side.as_mut().map(|table| {
                let mut leftovers = Leftovers::default();
                if before.has_waiters() {
                    table.complete_waiters(crate::WaitOutcome::Reset, &mut leftovers.wake);
                }
                leftovers.hooks = table.take_hooks();
                leftovers
            })
        };
        if let Some(leftovers) = leftovers {
            self.release(leftovers, &mut panics);
        }
        panics
    }

    /// After the CAS that ended generation `ended`: releases what the
    /// generation left (user code: wakers, the hooks' drops), then arms the
    /// next statement's deadline and probe (unless the session `closed`)
    /// and logs.
    fn finish_statement(
        self: &Arc<Self>,
        ended: Snapshot,
        closed: bool,
        leftovers: Option<Leftovers>,
        mut panics: FirstPanic,
    ) -> (Option<KillSignal>, FirstPanic) {
        // The old statement's waiters and hooks first: nothing after may
        // keep them from being released.
        if let Some(leftovers) = leftovers {
            self.release(leftovers, &mut panics);
        }
        if !closed {
            // (Can panic only if the timer thread cannot start.)
            panics.run(|| self.arm_next_statement(ended));
        }
        let cleared = ended.signal();
        if let Some(signal) = cleared {
            callback::contained(|| log::kill_finished(self.conn_id(), signal));
        }
        (cleared, panics)
    }

    /// Wakes an ended statement's waiters and drops its hooks un-run; a
    /// panic of a waker or of a hook's drop is kept in `panics`, and the
    /// rest is still released.
    fn release(&self, leftovers: Leftovers, panics: &mut FirstPanic) {
        for wake in leftovers.wake {
            panics.run(|| super::serve::wake(wake));
        }
        for hook in leftovers.hooks {
            panics.run(move || drop(hook));
        }
    }

    /// Blocks until the kill of `seen`'s generation has published every
    /// side effect (or the generation has ended); returns the word then.
    pub(super) fn wait_while_killing(&self, seen: Snapshot) -> Snapshot {
        let backoff = Backoff::new();
        let mut now = seen;
        while now.generation() == seen.generation() && now.is_killing() {
            assert!(!self.serving_own_kill(), "{WAIT_FROM_OWN_CALLBACK}");
            if backoff.is_completed() {
                let side = lock(&self.side);
                // An RMW under the lock: see the module docs for why the
                // winner's notification cannot be lost.
                now = self.state.park_owner();
                if now.generation() == seen.generation() && now.is_killing() {
                    drop(wait(&self.progress, side));
                }
            } else {
                backoff.snooze();
            }
            now = self.state.load_for_update();
        }
        now
    }

    /// Blocks until no cancel hook taken out of the table is running.
    pub(super) fn wait_for_hook_runners(&self) {
        let backoff = Backoff::new();
        loop {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if table.hook_runners == 0 {
                return;
            }
            assert!(!self.serving_own_kill(), "{WAIT_FROM_OWN_CALLBACK}");
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
    /// called by the winner after its `KILLED` RMW saw it parked.
    pub(super) fn wake_parked_owner(&self) {
        // Taking the lock orders this after the owner's `wait` released it.
        let _side = lock(&self.side);
        self.progress.notify_all();
    }
}
