//! Session kills (`KILL CONNECTION`) and waiting for one.

use super::Register;
use super::{table, PublishOnDrop, Shared};
use crate::callback::{self, FirstPanic, Kind};
use crate::clock::WaitDeadline;
use crate::loom::{lock, thread};
use crate::state::SessionTransition;
use crate::table::{Leftovers, Wake};
use crate::{log, KillError, KillOutcome, KillSignal};

/// A waiter for the session kill, seen from the waiter's side.
#[derive(Default)]
pub(crate) struct SessionWait {
    /// Its entry in the side table, once registered.
    id: Option<u64>,
}

impl Shared {
    /// Kills the session: its running statement (if any and not yet
    /// killed) with `signal`, and every later statement start. Returns the
    /// outcome and the generation of the statement that was running.
    pub(crate) fn kill_session(
        &self,
        signal: KillSignal,
        reason: &str,
    ) -> (KillOutcome, Option<u64>) {
        // Always under the lock: the session's reason and its waiters live
        // in the table, and are published with the CAS (as a kill's reason).
        let mut side = lock(&self.side);
        let transition = self
            .state
            .transition_to_session_killed(signal, !reason.is_empty());
        let (won, landed) = match transition {
            SessionTransition::Stale => return (KillOutcome::Stale, None),
            SessionTransition::AlreadyKilled(first, running) => {
                return (KillOutcome::AlreadyKilled(first), running)
            }
            SessionTransition::SessionOnly(now) => (None, now),
            SessionTransition::Won(won) => (Some(won), won),
        };
        // Publishes the statement's kill when dropped, if this call won it.
        let published = won.map(|_| PublishOnDrop(self));
        let table = table(&mut side);
        table.session_reason.clear();
        table.session_reason.push_str(reason);
        if won.is_some() {
            table.reason.clear();
            table.reason.push_str(reason);
        }
        let mut leftovers = Leftovers::default();
        leftovers.wake_session_waiters(table);
        drop(side);
        let mut panics = FirstPanic::default();
        if let Some(won) = won {
            self.listing_killed();
            callback::contained(|| log::kill_initiated(self.conn_id(), signal, reason));
            if !won.is_immune() {
                panics.run(|| self.serve_kill(signal, won));
            }
        }
        // Published before the session's waiters wake: a waiter (say, the
        // connection task) that drops the owner then finds the kill
        // `Killed`, and never waits for the kill this thread is serving.
        drop(published);
        for wake in leftovers.wake {
            let _frame = callback::enter(self.id, Kind::Waker);
            panics.run(|| super::serve::wake(wake));
        }
        panics.resume();
        let running = (!landed.is_between()).then(|| landed.generation());
        (KillOutcome::Sent, running)
    }

    /// The session kill's error if it landed (`Some(Some)`), `Some(None)`
    /// if the session closed without one, else `None` with the wake-up
    /// installed as `register` says (`Keep`: the one already there).
    pub(crate) fn poll_session_kill(
        &self,
        wait: &mut SessionWait,
        register: Register<'_>,
    ) -> Option<Option<KillError>> {
        let (done, replaced) = self.swap_session_wake(wait, register);
        drop(replaced);
        done
    }

    /// [`poll_session_kill`](Self::poll_session_kill), handing back the
    /// wake-up it replaced (for a timed wait to put back).
    fn swap_session_wake(
        &self,
        wait: &mut SessionWait,
        register: Register<'_>,
    ) -> (Option<Option<KillError>>, Option<Wake>) {
        // Cloned outside the lock: a waker is user code.
        let wake = match register {
            Register::Keep => None,
            Register::Task(waker) => Some(Wake::Task(waker.clone())),
            Register::Thread => Some(Wake::Thread(thread::current())),
        };
        let mut side = lock(&self.side);
        let table = table(&mut side);
        // Under the lock: a session kill changes the word and takes the
        // waiters in one critical section, so we see it or it sees us.
        let state = self.state.snapshot();
        let done = match state.session_signal() {
            Some(signal) => Some(Some(KillError::new(
                signal,
                self.conn_id(),
                &table.session_reason,
            ))),
            None if state.is_closed() => Some(None),
            None => None,
        };
        let old = match (done.is_some(), wait.id, wake) {
            (true, Some(id), wake) => {
                wait.id = None;
                (remove(&mut table.session_waiters, id), wake)
            }
            (true, None, wake) | (false, _, wake @ None) => (None, wake),
            (false, Some(id), Some(wake)) => {
                match table.session_waiters.iter_mut().find(|(i, _)| *i == id) {
                    Some(entry) => (Some(std::mem::replace(&mut entry.1, wake)), None),
                    None => {
                        // (Only a kill or a close takes entries, and we
                        // would have seen either above.)
                        table.session_waiters.push((id, wake));
                        (None, None)
                    }
                }
            }
            (false, None, Some(wake)) => {
                let id = table.next_waiter();
                wait.id = Some(id);
                table.session_waiters.push((id, wake));
                (None, None)
            }
        };
        drop(side);
        // (A replaced wake-up, or one left over: `Some` only when the
        // registration already had one.)
        match old {
            (Some(replaced), _) => (done, Some(replaced)),
            (None, unused) => {
                drop(unused);
                (done, None)
            }
        }
    }

    /// Blocks until the session is killed or closed, or `deadline` passes.
    pub(crate) fn wait_session_kill(
        &self,
        wait: &mut SessionWait,
        deadline: WaitDeadline,
    ) -> Option<Option<KillError>> {
        // What this wait replaced (a task's waker from an earlier poll):
        // put back if the wait times out, so that task is still woken.
        let mut before: Option<Wake> = None;
        let mut first = true;
        loop {
            let (done, replaced) = self.swap_session_wake(wait, Register::Thread);
            if first {
                before = replaced;
                first = false;
            } else {
                drop(replaced);
            }
            if let Some(done) = done {
                drop(before);
                return Some(done);
            }
            match deadline.left() {
                None => thread::park(),
                Some(left) if !left.is_zero() => thread::park_timeout(left),
                Some(_) => {
                    // Timed out: keep the registration as it was.
                    let restore = before.unwrap_or(Wake::Nobody);
                    let ours = wait.id.and_then(|id| {
                        let mut side = lock(&self.side);
                        let waiters = &mut table(&mut side).session_waiters;
                        let entry = waiters.iter_mut().find(|(i, _)| *i == id)?;
                        Some(std::mem::replace(&mut entry.1, restore))
                    });
                    drop(ours);
                    return None;
                }
            }
        }
    }

    /// Removes a session-kill waiter (its drop).
    pub(crate) fn forget_session_wait(&self, wait: &mut SessionWait) {
        let Some(id) = wait.id.take() else { return };
        let removed = {
            let mut side = lock(&self.side);
            remove(&mut table(&mut side).session_waiters, id)
        };
        callback::drop_contained(removed);
    }
}

fn remove(waiters: &mut Vec<(u64, Wake)>, id: u64) -> Option<Wake> {
    let index = waiters.iter().position(|(i, _)| *i == id)?;
    Some(waiters.swap_remove(index).1)
}
