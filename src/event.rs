//! Kill events: block a thread or a task until the statement is killed or ends.
//!
//! [`KillEvent`] borrows the killer; [`OwnedKillEvent`] holds a reference
//! count of it, so it can move into a spawned task. Both are the same
//! registration ([`Registration`]) in the side table.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::killer::Shared;
use crate::loom::atomic::Ordering::AcqRel;
use std::sync::Arc;

use crate::loom::{lock, thread};
use crate::side::{table, Waiter, Wake};
use crate::state::State;
use crate::time::WaitDeadline;
use crate::{KillHandle, KillSignal, SqlKiller, StatementId};

/// How a kill event ended.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The statement was killed with this signal.
    Killed(KillSignal),
    /// The statement ended (`reset`, or the session closed) without being
    /// killed — or it had already ended when the event was created.
    Reset,
}

/// A handle on one statement's kill (TiDB `GetKillEventChan`), borrowing
/// the killer. [`OwnedKillEvent`] is the same without the borrow.
///
/// Bound to the statement current when it was created (or named by
/// [`kill_event_for`](SqlKiller::kill_event_for)), registered at once, so
/// no kill or reset of that statement can slip past it. Wait for it from
/// any thread with [`wait`](KillEvent::wait) or
/// [`wait_timeout`](KillEvent::wait_timeout), or `.await` it: it is a
/// `Future` that needs no particular runtime.
///
/// Inside a [kill-immune section](SqlKiller::kill_immune) a kill completes
/// the event only when the section ends (and not at all if the statement is
/// reset first).
///
/// ```
/// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
///
/// let killer = SqlKiller::new();
/// std::thread::scope(|s| {
///     let mut event = killer.kill_event();
///     s.spawn(move || {
///         // e.g. a thread blocked on a network read, waiting to abort it
///         assert_eq!(event.wait(), WaitOutcome::Killed(KillSignal::QueryInterrupted));
///     });
///     let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
/// });
/// ```
#[must_use = "a kill event does nothing unless waited on or polled"]
pub struct KillEvent<'a> {
    shared: &'a Shared,
    registration: Registration,
}

/// A kill event that owns a reference to its killer: `Send + 'static`, so
/// it can move into `tokio::spawn` or another thread (like tokio-util's
/// `CancellationToken::cancelled_owned`). Made by
/// [`kill_event_owned`](SqlKiller::kill_event_owned) and
/// [`kill_event_owned_for`](SqlKiller::kill_event_owned_for), on the owner
/// or on a [`KillHandle`]. Otherwise exactly a [`KillEvent`].
///
/// ```
/// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
///
/// let killer = SqlKiller::new();
/// let mut event = killer.kill_event_owned();
/// let waiter = std::thread::spawn(move || event.wait());
/// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
/// assert_eq!(waiter.join().unwrap(), WaitOutcome::Killed(KillSignal::QueryInterrupted));
/// ```
#[must_use = "a kill event does nothing unless waited on or polled"]
pub struct OwnedKillEvent {
    shared: Arc<Shared>,
    registration: Registration,
}

/// One waiter's entry in the side table, seen from the waiter's side.
struct Registration {
    statement: StatementId,
    id: u64,
    /// Known outcome; once set the entry is out of the table.
    outcome: Option<WaitOutcome>,
}

/// What a poll does with the waiter's wake-up.
enum Register<'w> {
    Keep,
    Thread,
    Task(&'w Waker),
}

impl SqlKiller {
    /// A kill event for the current statement.
    ///
    /// ```
    /// use sqlkiller::{SqlKiller, WaitOutcome};
    ///
    /// let killer = SqlKiller::new();
    /// let mut event = killer.kill_event();
    /// killer.reset();
    /// assert_eq!(event.try_outcome(), Some(WaitOutcome::Reset));
    /// ```
    pub fn kill_event(&self) -> KillEvent<'_> {
        self.shared.kill_event(None)
    }

    /// A kill event for statement `statement`: completes at once with
    /// [`WaitOutcome::Reset`] if that is not the current statement (also
    /// for an id of another session).
    ///
    /// Hand a statement id to another thread and let it create its own
    /// event, without racing the owner's next `reset`.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement();
    /// let _ = killer.send_kill_signal(KillSignal::MaxExecTimeExceeded);
    /// let mut event = killer.kill_event_for(stmt);
    /// assert_eq!(event.try_outcome(), Some(WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded)));
    /// killer.reset();
    /// assert_eq!(killer.kill_event_for(stmt).try_outcome(), Some(WaitOutcome::Reset));
    /// ```
    pub fn kill_event_for(&self, statement: StatementId) -> KillEvent<'_> {
        self.shared.kill_event(Some(statement))
    }

    /// As [`kill_event`](SqlKiller::kill_event), owning a reference to the
    /// killer: the event can move into a spawned task.
    pub fn kill_event_owned(&self) -> OwnedKillEvent {
        Shared::kill_event_owned(&self.shared, None)
    }

    /// As [`kill_event_for`](SqlKiller::kill_event_for), owning a reference
    /// to the killer.
    pub fn kill_event_owned_for(&self, statement: StatementId) -> OwnedKillEvent {
        Shared::kill_event_owned(&self.shared, Some(statement))
    }
}

impl KillHandle {
    /// As [`SqlKiller::kill_event`].
    pub fn kill_event(&self) -> KillEvent<'_> {
        self.shared.kill_event(None)
    }

    /// As [`SqlKiller::kill_event_for`].
    pub fn kill_event_for(&self, statement: StatementId) -> KillEvent<'_> {
        self.shared.kill_event(Some(statement))
    }

    /// As [`SqlKiller::kill_event_owned`].
    pub fn kill_event_owned(&self) -> OwnedKillEvent {
        Shared::kill_event_owned(&self.shared, None)
    }

    /// As [`SqlKiller::kill_event_owned_for`]: what a task spawned for
    /// statement `statement` awaits.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement();
    /// let handle = killer.handle();
    /// let mut event = handle.kill_event_owned_for(stmt);
    /// let rpc = std::thread::spawn(move || event.wait());
    /// killer.reset(); // the statement ends unkilled
    /// assert_eq!(rpc.join().unwrap(), WaitOutcome::Reset);
    /// ```
    pub fn kill_event_owned_for(&self, statement: StatementId) -> OwnedKillEvent {
        Shared::kill_event_owned(&self.shared, Some(statement))
    }
}

impl Shared {
    fn kill_event(&self, target: Option<StatementId>) -> KillEvent<'_> {
        KillEvent {
            shared: self,
            registration: self.register(target),
        }
    }

    fn kill_event_owned(this: &Arc<Shared>, target: Option<StatementId>) -> OwnedKillEvent {
        OwnedKillEvent {
            registration: this.register(target),
            shared: Arc::clone(this),
        }
    }

    fn register(&self, target: Option<StatementId>) -> Registration {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let id = table.next_waiter_id;
        table.next_waiter_id += 1;
        // A read-modify-write, never a load: the kill's CAS and this RMW are
        // ordered on one word, so either the kill sees `WAITERS` and wakes
        // us, or we see its signal here (no lost wake-up).
        let prev = State(self.state.fetch_or(State::WAITERS, AcqRel));
        let statement = target.unwrap_or(self.statement_id(prev));
        let outcome = match prev.signal() {
            _ if prev.has(State::CLOSED) || !self.is_current(statement, prev) => {
                Some(WaitOutcome::Reset)
            }
            Some(signal) if !prev.has(State::IMMUNE) => Some(WaitOutcome::Killed(signal)),
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
}

impl Registration {
    /// Takes the outcome if there is one, else installs the wake-up.
    fn poll_with(&mut self, shared: &Shared, register: Register<'_>) -> Option<WaitOutcome> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let mut side = lock(&shared.side);
        let waiters = &mut table(&mut side).waiters;
        let index = waiters
            .iter()
            .position(|w| w.id == self.id)
            .expect("a kill event without an outcome stays registered");
        if let Some(outcome) = waiters[index].outcome {
            let done = waiters.swap_remove(index);
            drop(side);
            drop(done);
            self.outcome = Some(outcome);
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
    fn wait(&mut self, shared: &Shared, deadline: WaitDeadline) -> Option<WaitOutcome> {
        loop {
            if let Some(outcome) = self.poll_with(shared, Register::Thread) {
                return Some(outcome);
            }
            match deadline.left() {
                // No deadline: a plain park, no kernel timer to arm and cancel.
                None => thread::park(),
                Some(left) if !left.is_zero() => thread::park_timeout(left),
                Some(_) => {
                    self.forget_thread(shared);
                    return None;
                }
            }
        }
    }

    /// Ends a timed-out wait: keeps the registration but forgets the
    /// parked thread, so a later kill does not unpark a thread that is no
    /// longer waiting. (An outcome that arrives meanwhile stays in the entry
    /// for the next wait or poll.)
    fn forget_thread(&mut self, shared: &Shared) {
        let old = {
            let mut side = lock(&shared.side);
            let waiter = table(&mut side)
                .waiters
                .iter_mut()
                .find(|w| w.id == self.id);
            waiter.map(|w| std::mem::replace(&mut w.wake, Wake::Nobody))
        };
        drop(old);
    }

    /// Removes the entry, if it is still in the table.
    fn deregister(&mut self, shared: &Shared) {
        if self.outcome.is_some() {
            return;
        }
        let removed = {
            let mut side = lock(&shared.side);
            let waiters = &mut table(&mut side).waiters;
            let index = waiters.iter().position(|w| w.id == self.id);
            index.map(|i| waiters.swap_remove(i))
        };
        drop(removed);
    }
}

/// The methods of both event types, written once.
macro_rules! event_methods {
    ($event:ty, $name:literal, $example:literal) => {
        impl $event {
            /// The statement this event is bound to.
            pub fn statement(&self) -> StatementId {
                self.registration.statement
            }

            /// The outcome, if the statement was already killed or ended;
            /// never blocks.
            pub fn try_outcome(&mut self) -> Option<WaitOutcome> {
                self.registration.poll_with(&self.shared, Register::Keep)
            }

            /// Blocks until the statement is killed or ends.
            pub fn wait(&mut self) -> WaitOutcome {
                let outcome = self.registration.wait(&self.shared, WaitDeadline::NONE);
                outcome.expect("a wait without a deadline ends with an outcome")
            }

            /// Blocks until the statement is killed or ends, or `timeout`
            /// passes: `None` then. The event stays registered, so waiting
            /// again still sees a kill that happened in between.
            ///
            #[doc = $example]
            pub fn wait_timeout(&mut self, timeout: Duration) -> Option<WaitOutcome> {
                let deadline = WaitDeadline::after(timeout);
                self.registration.wait(&self.shared, deadline)
            }
        }

        impl Future for $event {
            type Output = WaitOutcome;

            /// Completes with `Killed` or `Reset`; for a deadline, use your
            /// runtime's timeout.
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
                let this = self.get_mut();
                match this
                    .registration
                    .poll_with(&this.shared, Register::Task(cx.waker()))
                {
                    Some(outcome) => Poll::Ready(outcome),
                    None => Poll::Pending,
                }
            }
        }

        impl Drop for $event {
            fn drop(&mut self) {
                self.registration.deregister(&self.shared);
            }
        }

        impl std::fmt::Debug for $event {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($name)
                    .field("statement", &self.registration.statement)
                    .field("outcome", &self.registration.outcome)
                    .finish()
            }
        }
    };
}

event_methods!(
    KillEvent<'_>,
    "KillEvent",
    "```
use std::time::Duration;
use sqlkiller::SqlKiller;

let killer = SqlKiller::new();
let mut event = killer.kill_event();
assert_eq!(event.wait_timeout(Duration::from_millis(1)), None);
```"
);
event_methods!(
    OwnedKillEvent,
    "OwnedKillEvent",
    "```
use std::time::Duration;
use sqlkiller::SqlKiller;

let killer = SqlKiller::new();
let mut event = killer.kill_event_owned();
assert_eq!(event.wait_timeout(Duration::from_millis(1)), None);
```"
);
