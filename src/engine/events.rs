//! Kill events: a waiter's registration in the side table, its polls and
//! its blocking waits.

use std::task::Waker;

use super::{table, Shared};
use crate::callback;
use crate::clock::WaitDeadline;
use crate::loom::{lock, thread};
use crate::table::{Waiter, Wake};
use crate::{StatementId, WaitOutcome};

/// One waiter's entry in the side table, seen from the waiter's side.
pub(crate) struct Registration {
    statement: StatementId,
    id: u64,
    /// Known outcome; once set the entry is out of the table.
    outcome: Option<WaitOutcome>,
}

/// What a poll does with the waiter's wake-up.
pub(crate) enum Register<'w> {
    Keep,
    Thread,
    Task(&'w Waker),
}

impl Shared {
    /// Registers a waiter for the current statement (`target: None`) or
    /// statement `target`: a kill event, or with `until_end` a ticket,
    /// which completes only when the statement has ended.
    pub(crate) fn register(&self, target: Option<StatementId>, until_end: bool) -> Registration {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let id = table.next_waiter();
        // An RMW, never a load (`StateCell::register_waiter`): either the
        // kill sees the waiter and wakes it, or it sees the kill here.
        let prev = self.state.register_waiter();
        let statement = target.unwrap_or(self.statement_id(prev));
        let outcome = match prev.signal() {
            _ if prev.is_closed() || !self.is_current(statement, prev) => Some(WaitOutcome::Reset),
            // A ticket for the idle phase: no statement runs, none to end.
            _ if until_end && prev.is_between() => Some(WaitOutcome::Reset),
            Some(signal) if !until_end && !prev.is_immune() => Some(WaitOutcome::Killed(signal)),
            // Not killed yet, or killed inside a kill-immune section: the
            // kill, the reset or the section's end will complete us.
            _ => {
                table.waiters.push(Waiter {
                    id,
                    until_end,
                    outcome: None,
                    wake: Wake::Nobody,
                });
                None
            }
        };
        Registration {
            statement,
            id,
            outcome,
        }
    }

    /// Takes the outcome if there is one, else installs the wake-up.
    ///
    /// No user code runs under the lock: a task's new waker is cloned
    /// outside it, and every replaced waker is dropped outside it.
    /// (`Waker::will_wake` compares two pointers and runs none.) A kill
    /// between the two looks completes the entry, which the second reports.
    pub(crate) fn poll_event(
        &self,
        registration: &mut Registration,
        register: Register<'_>,
    ) -> Option<WaitOutcome> {
        if registration.outcome.is_some() {
            return registration.outcome;
        }
        let waker = {
            let mut side = lock(&self.side);
            let (table, index) = match self.pending(&mut side, registration) {
                Ok(found) => found,
                Err(outcome) => return Some(outcome),
            };
            let slot = &mut table.waiters[index].wake;
            match register {
                Register::Keep => return None,
                Register::Thread => {
                    let old = std::mem::replace(slot, Wake::Thread(thread::current()));
                    drop(side);
                    drop(old);
                    return None;
                }
                // The same task polling again: keep its waker.
                Register::Task(waker) => match slot {
                    Wake::Task(current) if current.will_wake(waker) => return None,
                    _ => waker,
                },
            }
        };
        let wake = Wake::Task(waker.clone());
        let mut side = lock(&self.side);
        let (table, index) = match self.pending(&mut side, registration) {
            Ok(found) => found,
            Err(outcome) => {
                drop(side);
                drop(wake);
                return Some(outcome);
            }
        };
        let old = std::mem::replace(&mut table.waiters[index].wake, wake);
        drop(side);
        drop(old);
        None
    }

    /// The registration's entry, still pending (`Ok`: the table and its
    /// index), or its outcome (`Err`: the entry has left the table).
    fn pending<'g>(
        &self,
        side: &'g mut super::SideGuard<'_>,
        registration: &mut Registration,
    ) -> Result<(&'g mut crate::table::SideTable, usize), WaitOutcome> {
        let table = table(side);
        let index = table
            .waiter(registration.id)
            .expect("a kill event without an outcome stays registered");
        match table.waiters[index].outcome {
            None => Ok((table, index)),
            Some(outcome) => {
                let done = table.waiters.swap_remove(index);
                registration.outcome = Some(outcome);
                // The waker of a completed entry was taken by whoever
                // completed it (`Nobody` is left): dropping it runs nothing.
                drop(done);
                Err(outcome)
            }
        }
    }

    /// Blocks until the outcome is known or `deadline` passes (`None`: no
    /// deadline). After a timeout the registration stays.
    pub(crate) fn wait_event(
        &self,
        registration: &mut Registration,
        deadline: WaitDeadline,
    ) -> Option<WaitOutcome> {
        loop {
            if let Some(outcome) = self.poll_event(registration, Register::Thread) {
                return Some(outcome);
            }
            match deadline.left() {
                // No deadline: a plain park, no kernel timer to arm and cancel.
                None => thread::park(),
                Some(left) if !left.is_zero() => thread::park_timeout(left),
                Some(_) => {
                    self.forget_thread(registration);
                    return None;
                }
            }
        }
    }

    /// Ends a timed-out wait: keeps the registration but forgets the
    /// parked thread, so a later kill does not unpark a thread that is no
    /// longer waiting. (An outcome that arrives meanwhile stays in the entry
    /// for the next wait or poll.)
    fn forget_thread(&self, registration: &Registration) {
        let old = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            let index = table.waiter(registration.id);
            index.map(|i| std::mem::replace(&mut table.waiters[i].wake, Wake::Nobody))
        };
        drop(old);
    }

    /// Removes the entry, if it is still in the table.
    pub(crate) fn deregister(&self, registration: &Registration) {
        if registration.outcome.is_some() {
            return;
        }
        let removed = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            let index = table.waiter(registration.id);
            index.map(|i| table.waiters.swap_remove(i))
        };
        // From a destructor: a waker whose drop panics is contained.
        callback::drop_contained(removed);
    }
}

impl Registration {
    /// The statement this event is bound to.
    pub(crate) fn statement(&self) -> StatementId {
        self.statement
    }

    /// The outcome known so far, without asking the table.
    pub(crate) fn known_outcome(&self) -> Option<WaitOutcome> {
        self.outcome
    }
}
