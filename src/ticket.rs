//! Tickets: waiting until a killed statement has ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::WaitDeadline;
use crate::engine::{Register, Registration, Shared};
use crate::{KillHandle, SqlKiller, StatementId};

impl SqlKiller {
    /// A ticket for `statement`'s end (see [`KillHandle::ticket`]).
    pub fn ticket(&self, statement: StatementId) -> Ticket {
        Ticket::new(&self.shared, Some(statement))
    }
}

impl KillHandle {
    /// A ticket that completes when `statement` has ended: its owner
    /// called `end_statement`, `start_statement` or `reset`, or was
    /// dropped. It never waits on a later statement, and is done at once if
    /// `statement` has already ended (or is another session's, or names
    /// the idle phase).
    ///
    /// With a kill, it is ClickHouse's `KILL QUERY SYNC` and PostgreSQL's
    /// `pg_terminate_backend(pid, timeout)`: the kill has taken effect when
    /// the ticket completes.
    ///
    /// Only the session's owner ends its statements: a ticket waited for
    /// on the owner's own thread (or task) for its running statement never
    /// completes. Wait on a killer's thread, or with a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.start_statement()?;
    /// let handle = killer.handle();
    /// let _ = handle.kill_statement(stmt, KillSignal::QueryInterrupted);
    /// let mut ticket = handle.ticket(stmt);
    /// assert!(!ticket.wait_timeout(Duration::from_millis(1)), "still running");
    /// let session = std::thread::spawn(move || {
    ///     assert!(killer.handle_signal().is_err());
    ///     killer.end_statement()
    /// });
    /// ticket.wait();
    /// assert_eq!(session.join().unwrap().unwrap_err().code(), 1317);
    /// # Ok::<(), sqlkiller::KillError>(())
    /// ```
    pub fn ticket(&self, statement: StatementId) -> Ticket {
        Ticket::new(&self.shared, Some(statement))
    }
}

/// Completes when one statement has ended. `Send + 'static`; blocking
/// waits and a `Future`. See [`KillHandle::ticket`].
#[must_use = "a ticket does nothing unless waited on or polled"]
pub struct Ticket {
    inner: Option<(Arc<Shared>, Registration)>,
    statement: Option<StatementId>,
}

impl Ticket {
    pub(crate) fn new(shared: &Arc<Shared>, statement: Option<StatementId>) -> Ticket {
        let registration = shared.register(statement, true);
        let statement = Some(registration.statement());
        Ticket {
            inner: Some((Arc::clone(shared), registration)),
            statement,
        }
    }

    /// A ticket that is already done: nothing was running.
    pub(crate) fn done() -> Ticket {
        Ticket {
            inner: None,
            statement: None,
        }
    }

    /// The statement this ticket waits for (`None`: nothing was running).
    pub fn statement(&self) -> Option<StatementId> {
        self.statement
    }

    /// Whether the statement has ended; never blocks.
    pub fn is_done(&mut self) -> bool {
        self.poll(Register::Keep)
    }

    /// Blocks until the statement has ended.
    pub fn wait(&mut self) {
        if let Some((shared, registration)) = &mut self.inner {
            let done = shared.wait_event(registration, WaitDeadline::NONE);
            debug_assert!(done.is_some());
        }
    }

    /// Blocks until the statement has ended (`true`) or `timeout` passes
    /// (`false`).
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        match &mut self.inner {
            None => true,
            Some((shared, registration)) => shared
                .wait_event(registration, WaitDeadline::after(timeout))
                .is_some(),
        }
    }

    fn poll(&mut self, register: Register<'_>) -> bool {
        match &mut self.inner {
            None => true,
            Some((shared, registration)) => shared.poll_event(registration, register).is_some(),
        }
    }
}

impl Future for Ticket {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.get_mut().poll(Register::Task(cx.waker())) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some((shared, registration)) = &self.inner {
            shared.deregister(registration);
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("statement", &self.statement)
            .field(
                "done",
                &self
                    .inner
                    .as_ref()
                    .map_or(Some(crate::WaitOutcome::Reset), |(_, r)| r.known_outcome())
                    .is_some(),
            )
            .finish()
    }
}
