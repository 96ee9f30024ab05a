//! Kill events: block a thread or a task until the statement is killed or ends.
//!
//! [`KillEvent`] borrows the killer; [`OwnedKillEvent`] holds a reference
//! count of it, so it can move into a spawned task. Both are the same
//! registration ([`Registration`]) in the side table.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use crate::clock::WaitDeadline;
use crate::engine::{Register, Registration, Shared};
use crate::{KillHandle, SqlKiller, StatementId, WaitOutcome};

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
        KillEvent::new(&self.shared, None)
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
        KillEvent::new(&self.shared, Some(statement))
    }

    /// As [`kill_event`](SqlKiller::kill_event), owning a reference to the
    /// killer: the event can move into a spawned task.
    pub fn kill_event_owned(&self) -> OwnedKillEvent {
        OwnedKillEvent::new(&self.shared, None)
    }

    /// As [`kill_event_for`](SqlKiller::kill_event_for), owning a reference
    /// to the killer.
    pub fn kill_event_owned_for(&self, statement: StatementId) -> OwnedKillEvent {
        OwnedKillEvent::new(&self.shared, Some(statement))
    }
}

impl KillHandle {
    /// As [`SqlKiller::kill_event`].
    pub fn kill_event(&self) -> KillEvent<'_> {
        KillEvent::new(&self.shared, None)
    }

    /// As [`SqlKiller::kill_event_for`].
    pub fn kill_event_for(&self, statement: StatementId) -> KillEvent<'_> {
        KillEvent::new(&self.shared, Some(statement))
    }

    /// As [`SqlKiller::kill_event_owned`].
    pub fn kill_event_owned(&self) -> OwnedKillEvent {
        OwnedKillEvent::new(&self.shared, None)
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
        OwnedKillEvent::new(&self.shared, Some(statement))
    }
}

impl KillEvent<'_> {
    fn new(shared: &Shared, target: Option<StatementId>) -> KillEvent<'_> {
        KillEvent {
            shared,
            registration: shared.register(target, false),
        }
    }
}

impl OwnedKillEvent {
    fn new(shared: &Arc<Shared>, target: Option<StatementId>) -> OwnedKillEvent {
        OwnedKillEvent {
            registration: shared.register(target, false),
            shared: Arc::clone(shared),
        }
    }
}

/// The methods of both event types, written once.
macro_rules! event_methods {
    ($event:ty, $name:literal, $example:literal) => {
        impl $event {
            /// The statement this event is bound to.
            pub fn statement(&self) -> StatementId {
                self.registration.statement()
            }

            /// The outcome, if the statement was already killed or ended;
            /// never blocks.
            pub fn try_outcome(&mut self) -> Option<WaitOutcome> {
                self.shared
                    .poll_event(&mut self.registration, Register::Keep)
            }

            /// Blocks until the statement is killed or ends.
            pub fn wait(&mut self) -> WaitOutcome {
                let outcome = self
                    .shared
                    .wait_event(&mut self.registration, WaitDeadline::NONE);
                outcome.expect("a wait without a deadline ends with an outcome")
            }

            /// Blocks until the statement is killed or ends, or `timeout`
            /// passes: `None` then. The event stays registered, so waiting
            /// again still sees a kill that happened in between.
            ///
            #[doc = $example]
            pub fn wait_timeout(&mut self, timeout: Duration) -> Option<WaitOutcome> {
                let deadline = WaitDeadline::after(timeout);
                self.shared.wait_event(&mut self.registration, deadline)
            }
        }

        impl Future for $event {
            type Output = WaitOutcome;

            /// Completes with `Killed` or `Reset`; for a deadline, use your
            /// runtime's timeout.
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
                let this = self.get_mut();
                match this
                    .shared
                    .poll_event(&mut this.registration, Register::Task(cx.waker()))
                {
                    Some(outcome) => Poll::Ready(outcome),
                    None => Poll::Pending,
                }
            }
        }

        impl Drop for $event {
            fn drop(&mut self) {
                self.shared.deregister(&self.registration);
            }
        }

        impl std::fmt::Debug for $event {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($name)
                    .field("statement", &self.registration.statement())
                    .field("outcome", &self.registration.known_outcome())
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
