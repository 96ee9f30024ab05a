//! Kill events: block a thread or a task until the statement is killed or ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::loom::atomic::Ordering::AcqRel;
use crate::loom::{lock, thread};
use crate::side::{table, Waiter, Wake};
use crate::state::State;
use crate::{KillSignal, SqlKiller, StatementId};

/// How a [`KillEvent`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The statement was killed with this signal.
    Killed(KillSignal),
    /// The statement ended (`reset`) without being killed — or it had
    /// already ended when the event was created.
    Reset,
    /// [`KillEvent::wait`] gave up; the event is still registered and can
    /// be waited on again.
    TimedOut,
}

/// A handle on one statement's kill (TiDB `GetKillEventChan`).
///
/// Bound to the statement current when it was created (or named by
/// [`SqlKiller::kill_event_for`]), registered at once, so no kill or reset
/// of that statement can slip past it. Wait for it from any thread with
/// [`wait`](KillEvent::wait), or `.await` it: it is a `Future` that needs no
/// particular runtime.
///
/// Inside a [kill-immune section](SqlKiller::kill_immune) a kill completes
/// the event only when the last guard drops (and not at all if the
/// statement is reset first).
///
/// ```
/// use std::time::Duration;
/// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
///
/// let killer = SqlKiller::new();
/// std::thread::scope(|s| {
///     let mut event = killer.kill_event();
///     s.spawn(move || {
///         // e.g. a thread blocked on a network read, waiting to abort it
///         assert_eq!(
///             event.wait(Duration::from_secs(10)),
///             WaitOutcome::Killed(KillSignal::QueryInterrupted)
///         );
///     });
///     killer.send_kill_signal(KillSignal::QueryInterrupted);
/// });
/// ```
pub struct KillEvent<'a> {
    killer: &'a SqlKiller,
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
        self.register_event(None)
    }

    /// A kill event for statement `statement`: completes at once with
    /// [`WaitOutcome::Reset`] if that is not the current statement.
    ///
    /// Hand a statement id to another thread and let it create its own
    /// event, without racing the owner's next `reset`.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement();
    /// killer.send_kill_signal(KillSignal::MaxExecTimeExceeded);
    /// let mut event = killer.kill_event_for(stmt);
    /// assert_eq!(event.try_outcome(), Some(WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded)));
    /// killer.reset();
    /// assert_eq!(killer.kill_event_for(stmt).try_outcome(), Some(WaitOutcome::Reset));
    /// ```
    pub fn kill_event_for(&self, statement: StatementId) -> KillEvent<'_> {
        self.register_event(Some(statement))
    }

    fn register_event(&self, target: Option<StatementId>) -> KillEvent<'_> {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let id = table.next_waiter_id;
        table.next_waiter_id += 1;
        // A read-modify-write, never a load: the kill's CAS and this RMW are
        // ordered on one word, so either the kill sees `WAITERS` and wakes
        // us, or we see its signal here (no lost wake-up).
        let prev = State(self.state.fetch_or(State::WAITERS, AcqRel));
        let statement = target.unwrap_or(prev.generation());
        let outcome = match prev.signal() {
            _ if prev.generation() != statement => Some(WaitOutcome::Reset),
            Some(signal) if !prev.has(State::IMMUNE) => Some(WaitOutcome::Killed(signal)),
            // Not killed yet, or killed inside a kill-immune section: the
            // kill, the reset or the guard's drop will complete us.
            _ => {
                table.waiters.push(Waiter {
                    id,
                    outcome: None,
                    wake: Wake::Nobody,
                });
                None
            }
        };
        KillEvent {
            killer: self,
            statement,
            id,
            outcome,
        }
    }
}

impl KillEvent<'_> {
    /// The statement this event is bound to.
    pub fn statement(&self) -> StatementId {
        self.statement
    }

    /// The outcome, if the statement was already killed or ended; never blocks.
    pub fn try_outcome(&mut self) -> Option<WaitOutcome> {
        self.poll_with(Register::Keep)
    }

    /// Blocks until the statement is killed or ends, or `timeout` passes
    /// (`Duration::MAX` waits without a deadline).
    ///
    /// After [`WaitOutcome::TimedOut`] the event stays registered: waiting
    /// again still sees a kill that happened in between.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{SqlKiller, WaitOutcome};
    ///
    /// let killer = SqlKiller::new();
    /// let mut event = killer.kill_event();
    /// assert_eq!(event.wait(Duration::from_millis(1)), WaitOutcome::TimedOut);
    /// ```
    pub fn wait(&mut self, timeout: Duration) -> WaitOutcome {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(outcome) = self.poll_with(Register::Thread) {
                return outcome;
            }
            match deadline {
                // No deadline: a plain park, no kernel timer to arm and cancel.
                None => thread::park(),
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => thread::park_timeout(left),
                    _ => return self.give_up(),
                },
            }
        }
    }

    /// Ends a timed-out wait: unless the outcome arrived meanwhile, keeps
    /// the registration but forgets the parked thread.
    fn give_up(&mut self) -> WaitOutcome {
        if let Some(outcome) = self.poll_with(Register::Keep) {
            return outcome;
        }
        let old = {
            let mut side = lock(&self.killer.side);
            let waiter = table(&mut side)
                .waiters
                .iter_mut()
                .find(|w| w.id == self.id);
            waiter.map(|w| std::mem::replace(&mut w.wake, Wake::Nobody))
        };
        drop(old);
        WaitOutcome::TimedOut
    }

    /// Takes the outcome if there is one, else installs the wake-up.
    fn poll_with(&mut self, register: Register<'_>) -> Option<WaitOutcome> {
        if self.outcome.is_some() {
            return self.outcome;
        }
        let mut side = lock(&self.killer.side);
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
}

impl Future for KillEvent<'_> {
    type Output = WaitOutcome;

    /// Completes with `Killed` or `Reset`, never `TimedOut` (use your
    /// runtime's timeout for that).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WaitOutcome> {
        match self.get_mut().poll_with(Register::Task(cx.waker())) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl Drop for KillEvent<'_> {
    fn drop(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        let removed = {
            let mut side = lock(&self.killer.side);
            let waiters = &mut table(&mut side).waiters;
            let index = waiters.iter().position(|w| w.id == self.id);
            index.map(|i| waiters.swap_remove(i))
        };
        drop(removed);
    }
}

impl std::fmt::Debug for KillEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillEvent")
            .field("statement", &self.statement)
            .field("outcome", &self.outcome)
            .finish()
    }
}
