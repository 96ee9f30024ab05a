//! Session kills (`KILL CONNECTION`), the session's cancel hook, and
//! waiting for a session kill.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::WaitDeadline;
use crate::engine::{Register, SessionWait, Shared};
use crate::{HookStatus, KillError, KillHandle, KillOutcome, KillSignal, SqlKiller};

impl SqlKiller {
    /// Kills the session (`KILL CONNECTION`): its running statement, if
    /// any, with `signal` (a statement already killed keeps its first
    /// signal), and every statement after it: a later
    /// [`start_statement`](SqlKiller::start_statement) fails with this
    /// kill's error, a later `reset` starts a statement that is killed from
    /// birth. [`session_killed`](SqlKiller::session_killed) waiters are
    /// woken.
    ///
    /// `Sent` if this call killed the session, `AlreadyKilled` with the
    /// first session kill's signal if one came before (severity never goes
    /// down: statement kills never replace it), `Stale` if the owner was
    /// dropped. The session is not closed for you: the server still owns
    /// its connection and drops the killer when it has hung up.
    ///
    /// ```
    /// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.start_statement()?;
    /// let handle = killer.handle();
    /// assert_eq!(handle.kill_session(KillSignal::QueryInterrupted, "KILL 7"), KillOutcome::Sent);
    /// assert_eq!(killer.end_statement().unwrap_err().code(), 1317);
    /// assert!(killer.start_statement().is_err());
    /// assert!(killer.is_idle());
    /// # Ok::<(), sqlkiller::KillError>(())
    /// ```
    pub fn kill_session(&self, signal: KillSignal, reason: &str) -> KillOutcome {
        self.shared.kill_session(signal, reason).0
    }

    /// Whether the session has been killed ([`kill_session`](SqlKiller::kill_session)).
    pub fn is_session_killed(&self) -> bool {
        self.shared.session_signal().is_some()
    }

    /// Waits for this session to be killed: blocking, with a timeout, or
    /// as a `Future` (for a connection task that `select!`s between the
    /// client and a `KILL CONNECTION`).
    pub fn session_killed(&self) -> SessionKilled {
        SessionKilled::new(&self.shared)
    }

    /// Installs a cancel hook for the whole session: it runs for a kill of
    /// any statement of this session, beside that statement's own hooks
    /// (before them), on the thread that serves the kill (deferred to the
    /// end of a kill-immune section, as statement hooks are). It stays
    /// until replaced, cleared or the owner is dropped. Replaces the
    /// previous session hook.
    ///
    /// Use it for what never changes between statements, e.g. SQLite's
    /// `InterruptHandle::interrupt`. The hook must be quick and must not
    /// block: for a `max_execution_time` kill it runs on the timer thread
    /// itself, which serves every session (a statement's own hook gets a
    /// thread of its own there). Its panic reaches the killer as a
    /// statement hook's does (contained on the timer).
    ///
    /// It runs once per killed statement, whoever serves the kill. Once
    /// this returns, later kills run the new hook; a kill being served on
    /// another thread at this moment may still run the old one, once.
    ///
    /// `Armed`; or `Ran` if the current statement had been killed and its
    /// kill had not run a session hook (the new one runs at once, here).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let interrupts = Arc::new(AtomicUsize::new(0));
    /// let seen = Arc::clone(&interrupts);
    /// let _ = killer.set_session_cancel_hook(move |_signal| {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    /// });
    /// for _ in 0..3 {
    ///     killer.start_statement()?;
    ///     let _ = killer.handle().send_kill_signal(KillSignal::QueryInterrupted);
    ///     let _ = killer.end_statement();
    /// }
    /// assert_eq!(interrupts.load(Ordering::Relaxed), 3);
    /// # Ok::<(), sqlkiller::KillError>(())
    /// ```
    pub fn set_session_cancel_hook(
        &self,
        hook: impl Fn(KillSignal) + Send + Sync + 'static,
    ) -> HookStatus {
        self.shared.set_session_hook(Some(Arc::new(hook)))
    }

    /// Removes the session's cancel hook. A kill being served on another
    /// thread at this moment may still run it once (it holds its own
    /// reference, dropped there); later kills do not.
    pub fn clear_session_cancel_hook(&self) {
        let _ = self.shared.set_session_hook(None);
    }
}

impl KillHandle {
    /// [`SqlKiller::kill_session`], from a killer's side.
    pub fn kill_session(&self, signal: KillSignal, reason: &str) -> KillOutcome {
        self.shared.kill_session(signal, reason).0
    }

    /// Whether the session has been killed.
    pub fn is_session_killed(&self) -> bool {
        self.shared.session_signal().is_some()
    }

    /// [`SqlKiller::session_killed`], from a killer's side.
    pub fn session_killed(&self) -> SessionKilled {
        SessionKilled::new(&self.shared)
    }
}

/// Waits for a session kill: `Some(error)` once the session is killed,
/// `None` if its owner was dropped without one. `Send + 'static`.
///
/// ```
/// use sqlkiller::{KillSignal, SqlKiller};
///
/// let killer = SqlKiller::new();
/// let mut killed = killer.session_killed();
/// assert_eq!(killed.try_outcome(), None);
/// let _ = killer.handle().kill_session(KillSignal::QueryInterrupted, "");
/// assert_eq!(killed.wait().map(|e| e.code()), Some(1317));
/// ```
#[must_use = "a session-kill wait does nothing unless waited on or polled"]
pub struct SessionKilled {
    shared: Arc<Shared>,
    wait: SessionWait,
}

impl SessionKilled {
    fn new(shared: &Arc<Shared>) -> SessionKilled {
        SessionKilled {
            shared: Arc::clone(shared),
            wait: SessionWait::default(),
        }
    }

    /// The outcome if the session was killed (`Some(Some)`) or closed
    /// (`Some(None)`); never blocks.
    pub fn try_outcome(&mut self) -> Option<Option<KillError>> {
        self.shared
            .poll_session_kill(&mut self.wait, Register::Keep)
    }

    /// Blocks until the session is killed (`Some`) or closed (`None`).
    pub fn wait(&mut self) -> Option<KillError> {
        let done = self
            .shared
            .wait_session_kill(&mut self.wait, WaitDeadline::NONE);
        done.expect("a wait without a deadline ends with an outcome")
    }

    /// Blocks until the session is killed or closed, or `timeout` passes
    /// (`None` then).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Option<KillError>> {
        self.shared
            .wait_session_kill(&mut self.wait, WaitDeadline::after(timeout))
    }
}

impl Future for SessionKilled {
    type Output = Option<KillError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<KillError>> {
        let this = self.get_mut();
        match this
            .shared
            .poll_session_kill(&mut this.wait, Register::Task(cx.waker()))
        {
            Some(done) => Poll::Ready(done),
            None => Poll::Pending,
        }
    }
}

impl Drop for SessionKilled {
    fn drop(&mut self) {
        self.shared.forget_session_wait(&mut self.wait);
    }
}

impl std::fmt::Debug for SessionKilled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKilled")
            .field("session_killed", &self.shared.session_signal())
            .finish()
    }
}
