//! Session kills (`KILL CONNECTION`) and waiting for one.

use std::task::Waker;

use super::{table, PublishOnDrop, Shared};
use crate::callback;
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
            SessionTransition::AlreadyKilled(first) => {
                return (KillOutcome::AlreadyKilled(first), None)
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
        for wake in leftovers.wake {
            callback::contained(|| super::serve::wake(wake));
        }
        if let Some(won) = won {
            self.listing_killed();
            callback::contained(|| log::kill_initiated(self.conn_id(), signal, reason));
            if !won.is_immune() {
                self.serve_kill(signal, won);
            }
        }
        drop(published);
        let running = (!landed.is_between()).then(|| landed.generation());
        (KillOutcome::Sent, running)
    }

    /// The session kill's error if it landed (`Some(Some)`), `Some(None)`
    /// if the session closed without one, else `None` with the wake-up
    /// installed (`waker`, or this thread if `None`).
    pub(crate) fn poll_session_kill(
        &self,
        wait: &mut SessionWait,
        waker: Option<&Waker>,
    ) -> Option<Option<KillError>> {
        // Cloned outside the lock: a waker is user code.
        let wake = match waker {
            Some(waker) => Wake::Task(waker.clone()),
            None => Wake::Thread(thread::current()),
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
        let old = match (done.is_some(), wait.id) {
            (true, Some(id)) => {
                wait.id = None;
                remove(&mut table.session_waiters, id)
            }
            (true, None) => None,
            (false, Some(id)) => match table.session_waiters.iter_mut().find(|(i, _)| *i == id) {
                Some(entry) => Some(std::mem::replace(&mut entry.1, wake)),
                None => {
                    // Taken by a kill or close we then saw: cannot happen
                    // (we would have seen it above); register again.
                    table.session_waiters.push((id, wake));
                    None
                }
            },
            (false, None) => {
                let id = table.next_waiter();
                wait.id = Some(id);
                table.session_waiters.push((id, wake));
                None
            }
        };
        drop(side);
        drop(old);
        done
    }

    /// Blocks until the session is killed or closed, or `deadline` passes.
    pub(crate) fn wait_session_kill(
        &self,
        wait: &mut SessionWait,
        deadline: WaitDeadline,
    ) -> Option<Option<KillError>> {
        loop {
            if let Some(done) = self.poll_session_kill(wait, None) {
                return Some(done);
            }
            match deadline.left() {
                None => thread::park(),
                Some(left) if !left.is_zero() => thread::park_timeout(left),
                Some(_) => return None,
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
