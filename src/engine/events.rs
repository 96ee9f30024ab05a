//! Kill events: a waiter's registration in the side table, its polls and
//! its blocking waits.

use std::task::Waker;

use super::{table, Shared};
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
    /// statement `target`.
    pub(crate) fn register(&self, target: Option<StatementId>) -> Registration {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let id = table.next_waiter();
        // An RMW, never a load (`StateCell::register_waiter`): either the
        // kill sees the waiter and wakes it, or it sees the kill here.
        let prev = self.state.register_waiter();
        let statement = target.unwrap_or(self.statement_id(prev));
        let outcome = match prev.signal() {
            _ if prev.is_closed() || !self.is_current(statement, prev) => Some(WaitOutcome::Reset),
            Some(signal) if !prev.is_immune() => Some(WaitOutcome::Killed(signal)),
            // Not killed yet, or killed inside a kill-immune section: the
            // kill, the reset or the section's end will complete us.
            _ => {
                table.waiters.push(Waiter {
                    id,
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
    pub(crate) fn poll_event(
        &self,
        registration: &mut Registration,
        register: Register<'_>,
    ) -> Option<WaitOutcome> {
        if registration.outcome.is_some() {
            return registration.outcome;
        }
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let index = table
            .waiter(registration.id)
            .expect("a kill event without an outcome stays registered");
        let waiters = &mut table.waiters;
        if let Some(outcome) = waiters[index].outcome {
            let done = waiters.swap_remove(index);
            drop(side);
            drop(done);
            registration.outcome = Some(outcome);
            return Some(outcome);
        }
        let wake = match register {
            Register::Keep => return None,
            Register::Thread => Wake::Thread(thread::current()),
            // The same task polling again: keep its waker (no clone).
            Register::Task(waker) => match &waiters[index].wake {
                Wake::Task(current) if current.will_wake(waker) => return None,
                _ => Wake::Task(waker.clone()),
            },
        };
        let old = std::mem::replace(&mut waiters[index].wake, wake);
        drop(side);
        drop(old);
        None
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
        drop(removed);
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
