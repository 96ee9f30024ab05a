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
use std::task::{Poll, Waker};

use super::{table, Shared};
use crate::callback::{self, FirstPanic, WAIT_FROM_OWN_CALLBACK};
use crate::log;
use crate::loom::{lock, wait, Backoff};
use crate::state::{End, Snapshot};
use crate::table::Leftovers;
use crate::{KillError, KillSignal, StatementId};

/// What a statement end found and did.
pub(crate) struct Ended {
    /// The word the CAS ended (its kill, if any).
    pub(crate) ended: Snapshot,
    /// The kill's reason text (empty if none).
    pub(crate) reason: String,
    /// The generation now current.
    pub(crate) generation: u64,
}

/// How the owner waits inside a statement end: blocks the thread, or
/// registers its task's waker and returns `Pending`.
#[derive(Clone, Copy)]
pub(crate) enum Waiting<'w> {
    Block,
    Poll(&'w Waker),
}

impl Shared {
    pub(crate) fn reset(self: &Arc<Self>) -> Option<KillSignal> {
        let mut panics = FirstPanic::default();
        let ended = self.end_blocking(End::Reset, &mut panics);
        panics.resume();
        ended.ended.signal()
    }

    /// Starts a statement: ends the running one (as `reset`), or leaves the
    /// idle phase; refuses, staying idle, once the session is killed.
    pub(crate) fn start_statement(
        self: &Arc<Self>,
        waiting: Waiting<'_>,
        panics: &mut FirstPanic,
    ) -> Poll<Result<StatementId, KillError>> {
        let ended = match self.end(End::Start, waiting, panics) {
            Poll::Ready(ended) => ended,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match ended.ended.session_signal() {
            Some(_) => Err(self.session_error().expect("the session was killed")),
            None => Ok(StatementId {
                killer: self.id,
                generation: ended.generation,
            }),
        })
    }

    /// Ends the running statement and enters the idle phase; returns its
    /// kill's error with the killer's reason.
    pub(crate) fn end_statement(
        self: &Arc<Self>,
        waiting: Waiting<'_>,
        panics: &mut FirstPanic,
    ) -> Poll<Result<(), KillError>> {
        if self.state.snapshot().is_between() {
            return Poll::Ready(Ok(())); // already idle (only the owner leaves it)
        }
        let ended = match self.end(End::Idle, waiting, panics) {
            Poll::Ready(ended) => ended,
            Poll::Pending => return Poll::Pending,
        };
        let ended_inside_section = ended.ended.is_deferred() && ended.ended.is_immune();
        Poll::Ready(match ended.ended.signal() {
            // A kill that landed inside a kill-immune section which is still
            // open: past the point of no return, it is not reported.
            Some(_) if ended_inside_section => Ok(()),
            Some(signal) => Err(KillError::new(signal, self.conn_id(), &ended.reason)),
            None => Ok(()),
        })
    }

    /// The session kill's error, if the session was killed.
    pub(crate) fn session_error(&self) -> Option<KillError> {
        let signal = self.state.snapshot().session_signal()?;
        // The killer held the lock across its CAS and wrote the reason
        // before releasing it: a reader that saw the signal sees the text.
        let side = lock(&self.side);
        let reason = side.as_ref().map_or("", |t| t.session_reason.as_str());
        Some(KillError::new(signal, self.conn_id(), reason))
    }

    /// A statement end that blocks the thread when it must wait.
    fn end_blocking(self: &Arc<Self>, end: End, panics: &mut FirstPanic) -> Ended {
        match self.end(end, Waiting::Block, panics) {
            Poll::Ready(ended) => ended,
            Poll::Pending => unreachable!("a blocking end never returns Pending"),
        }
    }

    /// The owner's drop: ends the statement as `reset` does, drops what a
    /// kill-immune section still owed, and marks the session closed. A
    /// panic of user code on the way is contained: a destructor must not
    /// panic while unwinding.
    ///
    /// Then the session lets go of what only it needed: the finish
    /// function, the liveness probe and the session's hook are dropped (so
    /// one that captured this session's own `KillHandle` is no reference
    /// cycle), session-kill waiters are woken, its entry leaves the timer's
    /// queue and the process list.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut panics = FirstPanic::default();
        let _ = self.end_blocking(End::Close, &mut panics);
        let (finish, probe, session_hook, mut leftovers) = {
            let mut side = lock(&self.side);
            match side.as_mut() {
                Some(table) => {
                    // A run in progress drops its function instead of
                    // putting it back.
                    table.finish.version += 1;
                    self.state.remove_probe();
                    self.state.disarm_session_hook();
                    let mut leftovers = Leftovers::default();
                    leftovers.wake_session_waiters(table);
                    (
                        table.finish.func.take(),
                        table.probe.probe.take(),
                        table.session_hook.take(),
                        leftovers,
                    )
                }
                None => (None, None, None, Leftovers::default()),
            }
        };
        self.leave_timer();
        self.leave_list();
        self.release(std::mem::take(&mut leftovers), &mut panics);
        callback::drop_contained(finish);
        callback::drop_contained(probe);
        callback::drop_contained(session_hook);
        drop(panics); // contained (`FirstPanic`'s drop): a destructor must not unwind
    }

    /// Ends the current statement, into `end`: a new statement (`reset`,
    /// `start_statement`), the idle phase (`end_statement`) or a closed
    /// session (the owner's drop). Returns what ended; a panic of user
    /// code run on the way is kept in `panics`, for the caller to resume
    /// or contain. With `Waiting::Poll` it returns `Pending` instead of
    /// blocking, having done nothing that a later call must undo.
    pub(crate) fn end(
        self: &Arc<Self>,
        end: End,
        waiting: Waiting<'_>,
        panics: &mut FirstPanic,
    ) -> Poll<Ended> {
        let close = end == End::Close;
        // The process list hands out the generations of its sessions (one
        // number per end, taken once); others count on.
        let mut listed = None;
        let mut number = |current: Snapshot| match self.listing_number(&mut listed) {
            Some(n) => n,
            None => current.generation().wrapping_add(1),
        };
        // The common case first: nothing touched the statement since the
        // last one ended, so the word still equals the owner's hint and one
        // CAS ends it. A failed CAS returns the word, where the loop starts.
        let hint = self.state.hint_for_owner();
        let generation = number(hint);
        if matches!(end, End::Reset | End::Start) {
            self.listing_will_start(generation);
        }
        let mut current = match self.state.try_next_statement_from_hint(generation, end) {
            Ok(ended) => {
                return Poll::Ready(self.finish_statement(ended, generation, end, None, panics))
            }
            Err(actual) => actual,
        };
        loop {
            if current.is_killing() {
                if close && self.serving_own_kill() {
                    self.close_without_waiting(panics);
                    return Poll::Ready(Ended {
                        ended: current,
                        reason: String::new(),
                        generation: current.generation(),
                    });
                }
                // The winner is publishing; it holds nothing we hold.
                current = match waiting {
                    Waiting::Block => self.wait_while_killing(current),
                    Waiting::Poll(waker) => match self.poll_while_killing(current, waker) {
                        Poll::Ready(now) => now,
                        Poll::Pending => return Poll::Pending,
                    },
                };
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
            // A statement born killed by a session kill is born with its
            // reason too: written under the lock, with the CAS (I4).
            let born_killed = end == End::Reset && current.session_signal().is_some();
            let mut side = (current.has_side_data() || born_killed).then(|| lock(&self.side));
            if side
                .as_mut()
                .is_some_and(|side| table(side).hook_runners > 0)
            {
                // A hook of this statement is running on another thread
                // (or on this one, further down the stack): wait for it.
                drop(side);
                if close && self.serving_own_kill() {
                    self.close_without_waiting(panics);
                    return Poll::Ready(Ended {
                        ended: current,
                        reason: String::new(),
                        generation: current.generation(),
                    });
                }
                match waiting {
                    Waiting::Block => self.wait_for_hook_runners(),
                    Waiting::Poll(waker) => {
                        if self.poll_hook_runners(waker).is_pending() {
                            return Poll::Pending;
                        }
                    }
                }
                current = self.state.load_for_update();
                continue;
            }
            let generation = number(current);
            if born_killed {
                self.listing_killed(); // before the CAS, after the start stamp
            }
            let born_with_reason = match side.as_mut() {
                Some(side) if born_killed => !table(side).session_reason.is_empty(),
                _ => false,
            };
            if let Err(actual) =
                self.state
                    .transition_to_next_statement(current, generation, end, born_with_reason)
            {
                current = actual;
                continue;
            }
            let mut reason = String::new();
            let leftovers = side.as_mut().and_then(|side| side.as_mut()).map(|table| {
                if current.has_reason() {
                    // Handed to whoever ends the statement (the error it
                    // reports), not cleared: the reason survives.
                    reason = std::mem::take(&mut table.reason);
                }
                let leftovers = table.end_generation(current.has_waiters());
                if born_with_reason {
                    table.reason.clone_from(&table.session_reason);
                }
                leftovers
            });
            drop(side);
            let mut ended = self.finish_statement(current, generation, end, leftovers, panics);
            ended.reason = reason;
            return Poll::Ready(ended);
        }
    }

    /// The owner's drop on a thread that is serving this session's kill
    /// (its hook or waker held the last reference to the owner): closes the
    /// session as it is, without waiting for the kill this very thread
    /// runs. The statement keeps its signal; kills are `Stale` from now on,
    /// pending waiters complete with `Reset`, hooks still in the table are
    /// dropped un-run. The reason text stays (the word still says `REASON`).
    fn close_without_waiting(&self, panics: &mut FirstPanic) {
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
            self.release(leftovers, panics);
        }
    }

    /// After the CAS that ended generation `ended` and made `generation`
    /// current: releases what the ended generation left (user code:
    /// wakers, the hooks' drops), then arms the new statement's deadline
    /// and probe (if a statement starts) and logs.
    fn finish_statement(
        self: &Arc<Self>,
        ended: Snapshot,
        generation: u64,
        end: End,
        leftovers: Option<Leftovers>,
        panics: &mut FirstPanic,
    ) -> Ended {
        // The old statement's waiters and hooks first: nothing after may
        // keep them from being released.
        if let Some(leftovers) = leftovers {
            self.release(leftovers, panics);
        }
        let starts = match end {
            End::Reset => true,
            End::Start => ended.session_signal().is_none(),
            End::Idle | End::Close => false,
        };
        if starts {
            // (Can panic only if the timer thread cannot start.)
            panics.run(|| self.arm_statement(generation, ended.has_probe()));
        }
        if let Some(signal) = ended.signal() {
            callback::contained(|| log::kill_finished(self.conn_id(), signal));
        }
        Ended {
            ended,
            reason: String::new(),
            generation,
        }
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

    /// The async twin of [`wait_while_killing`](Self::wait_while_killing):
    /// `Ready` with the word once the kill of `seen`'s generation has
    /// published, else `Pending` with `waker` registered, to be woken by
    /// the winner's `KILLED` RMW (which sees `PARKED`).
    pub(super) fn poll_while_killing(&self, seen: Snapshot, waker: &Waker) -> Poll<Snapshot> {
        assert!(!self.serving_own_kill(), "{WAIT_FROM_OWN_CALLBACK}");
        // Cloned outside the lock: a waker is user code.
        let ours = waker.clone();
        let old = {
            let mut side = lock(&self.side);
            let old = table(&mut side).owner_waker.replace(ours);
            let now = self.state.park_owner();
            if now.generation() == seen.generation() && now.is_killing() {
                drop(side);
                drop(old);
                return Poll::Pending;
            }
            old
        };
        drop(old);
        Poll::Ready(self.state.load_for_update())
    }

    /// The async twin of [`wait_for_hook_runners`](Self::wait_for_hook_runners).
    pub(super) fn poll_hook_runners(&self, waker: &Waker) -> Poll<()> {
        let ours = waker.clone();
        let old = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if table.hook_runners == 0 {
                drop(side);
                drop(ours);
                return Poll::Ready(());
            }
            assert!(!self.serving_own_kill(), "{WAIT_FROM_OWN_CALLBACK}");
            table.owner_parked = true;
            table.owner_waker.replace(ours)
        };
        drop(old);
        Poll::Pending
    }

    /// Wakes an owner parked in [`wait_while_killing`](Self::wait_while_killing)
    /// or awaiting in [`poll_while_killing`](Self::poll_while_killing);
    /// called by the winner after its `KILLED` RMW saw it parked.
    pub(super) fn wake_parked_owner(&self) {
        let waker = {
            // Taking the lock orders this after the owner's `wait` released it.
            let mut side = lock(&self.side);
            self.progress.notify_all();
            side.as_mut().and_then(|table| table.owner_waker.take())
        };
        if let Some(waker) = waker {
            callback::contained(|| waker.wake());
        }
    }
}
