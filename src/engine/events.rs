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
    ///
    /// A task's waker is user code in every method (`clone`, `will_wake`,
    /// `drop`), so none of them runs under the lock: the old wake-up is
    /// taken out, compared and cloned outside, and the result put back. A
    /// kill meanwhile completes the entry, which the second look reports.
    pub(crate) fn poll_event(
        &self,
        registration: &mut Registration,
        register: Register<'_>,
    ) -> Option<WaitOutcome> {
        if registration.outcome.is_some() {
            return registration.outcome;
        }
        let old = match self.take_wake(registration, !matches!(register, Register::Keep)) {
            Ok(old) => old,
            Err(outcome) => return Some(outcome),
        };
        let wake = match register {
            Register::Keep => return None,
            Register::Thread => {
                drop(old);
                Wake::Thread(thread::current())
            }
            // The same task polling again: keep its waker (no clone).
            Register::Task(waker) => match old {
                Wake::Task(current) if current.will_wake(waker) => Wake::Task(current),
                old => {
                    drop(old);
                    Wake::Task(waker.clone())
                }
            },
        };
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let index = table
            .waiter(registration.id)
            .expect("a kill event without an outcome stays registered");
        match table.waiters[index].outcome {
            Some(outcome) => {
                let done = table.waiters.swap_remove(index);
                drop(side);
                drop(done);
                drop(wake);
                registration.outcome = Some(outcome);
                Some(outcome)
            }
            None => {
                table.waiters[index].wake = wake; // it held `Nobody`
                None
            }
        }
    }

    /// The entry's outcome if it has one (`Err`, the entry then leaves the
    /// table), else its wake-up, taken out (`Nobody` left in its place)
    /// if `take`.
    fn take_wake(&self, registration: &mut Registration, take: bool) -> Result<Wake, WaitOutcome> {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let index = table
            .waiter(registration.id)
            .expect("a kill event without an outcome stays registered");
        if let Some(outcome) = table.waiters[index].outcome {
            let done = table.waiters.swap_remove(index);
            drop(side);
            drop(done);
            registration.outcome = Some(outcome);
            return Err(outcome);
        }
        Ok(if take {
            std::mem::replace(&mut table.waiters[index].wake, Wake::Nobody)
        } else {
            Wake::Nobody
        })
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
