//! The statement lifecycle: start, end, and the idle phase between.
//!
//! Every operation here may wait for a kill that is still publishing its
//! side effects (a cancel hook running on the killer's thread). The
//! `_async` forms await that instead of blocking the thread, for owners
//! that are async tasks.

use std::future::poll_fn;

use crate::callback::FirstPanic;
use crate::engine::Waiting;
use crate::{KillError, SqlKiller, StatementId};

impl SqlKiller {
    /// Starts a statement: ends the running one if there is one (as
    /// [`reset`](SqlKiller::reset) does, dropping its kill), leaves the
    /// idle phase, and arms the new statement's `max_execution_time` and
    /// liveness probe.
    ///
    /// Fails with the session kill's error, and stays idle, once the
    /// session has been killed ([`kill_session`](SqlKiller::kill_session)):
    /// a killed connection runs nothing more.
    ///
    /// Waits (blocking the thread) while a kill of the running statement
    /// is still publishing, as `reset` does; see
    /// [`start_statement_async`](SqlKiller::start_statement_async).
    ///
    /// ```
    /// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.start_statement()?;
    /// assert_eq!(killer.statement(), stmt);
    /// killer.end_statement()?;
    /// // Idle: a KILL QUERY for "the current query" finds none.
    /// assert_eq!(killer.send_kill_signal(KillSignal::QueryInterrupted), KillOutcome::Idle);
    /// killer.start_statement()?;
    /// killer.handle_signal()?; // the next statement was not touched
    /// # Ok::<(), sqlkiller::KillError>(())
    /// ```
    pub fn start_statement(&self) -> Result<StatementId, KillError> {
        let mut panics = FirstPanic::default();
        let started = self.shared.start_statement(Waiting::Block, &mut panics);
        panics.resume();
        started.into_ready()
    }

    /// Ends the running statement: the session is idle until the next
    /// [`start_statement`](SqlKiller::start_statement) (or `reset`). Its
    /// deadline will not fire, kills of it are `Stale` from now on, and a
    /// kill of "the current query" is [`KillOutcome::Idle`](crate::KillOutcome::Idle).
    ///
    /// Returns the statement's kill as the error to send to the client,
    /// with the reason the killer published, even if the kill landed after
    /// the statement's last checkpoint. `Ok(())` if it was not killed, or
    /// if the session was already idle, or if the kill landed inside a
    /// kill-immune section that is still open (past the point of no
    /// return, the work completed: a COMMIT's client gets its OK). End the
    /// statement after releasing the section to learn of such a kill.
    ///
    /// ```
    /// use sqlkiller::{KillError, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.start_statement()?;
    /// let _ = killer.handle().send_kill_signal_with_reason(
    ///     KillSignal::KilledByMemArbitrator,
    ///     "pool exhausted",
    /// );
    /// let err = killer.end_statement().unwrap_err();
    /// assert!(err.to_string().contains("[reason=pool exhausted]"));
    /// # Ok::<(), KillError>(())
    /// ```
    pub fn end_statement(&self) -> Result<(), KillError> {
        let mut panics = FirstPanic::default();
        let ended = self.shared.end_statement(Waiting::Block, &mut panics);
        panics.resume();
        ended.into_ready()
    }

    /// [`start_statement`](SqlKiller::start_statement) for an async owner:
    /// where it would block the thread, it awaits. Nothing else differs.
    pub async fn start_statement_async(&self) -> Result<StatementId, KillError> {
        let mut panics = FirstPanic::default();
        let started = poll_fn(|cx| {
            self.shared
                .start_statement(Waiting::Poll(cx.waker()), &mut panics)
        })
        .await;
        panics.resume();
        started
    }

    /// [`end_statement`](SqlKiller::end_statement) for an async owner:
    /// where it would block the thread, it awaits. Nothing else differs.
    ///
    /// ```
    /// # tokio_test_block_on(async {
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.start_statement_async().await?;
    /// let _ = killer.handle().send_kill_signal(KillSignal::QueryInterrupted);
    /// assert_eq!(killer.end_statement_async().await.unwrap_err().code(), 1317);
    /// # Ok::<(), sqlkiller::KillError>(())
    /// # }).unwrap();
    /// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    /// # }
    /// ```
    pub async fn end_statement_async(&self) -> Result<(), KillError> {
        let mut panics = FirstPanic::default();
        let ended = poll_fn(|cx| {
            self.shared
                .end_statement(Waiting::Poll(cx.waker()), &mut panics)
        })
        .await;
        panics.resume();
        ended
    }

    /// Whether the session is idle, between statements.
    ///
    /// A killer from [`SqlKiller::new`] starts *running* its first
    /// statement (as TiDB's does, for servers that only call `reset`). A
    /// server that brackets statements calls `end_statement()` once right
    /// after creating it, so that a `KILL QUERY` before the first statement
    /// finds it idle; sessions from [`ProcessList::register`](crate::ProcessList::register)
    /// start idle.
    pub fn is_idle(&self) -> bool {
        self.shared.is_idle()
    }
}

/// A blocking call's `Poll`, which is always ready.
trait IntoReady<T> {
    fn into_ready(self) -> T;
}

impl<T> IntoReady<T> for std::task::Poll<T> {
    fn into_ready(self) -> T {
        match self {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => unreachable!("a blocking owner operation is always ready"),
        }
    }
}
