//! `SqlKiller`: the owner's side of a session's killer.

use std::sync::Arc;

use crate::clock::Timer;
use crate::engine::Shared;
use crate::{KillError, KillHandle, KillOutcome, KillPhase, KillSignal, ManualClock, StatementId};

/// The query killer of one SQL session: the owner's side.
///
/// The session (the *owner*: a thread, or an async task that may move
/// between threads) owns the `SqlKiller`. It calls [`handle_signal`] at
/// checkpoints and [`reset`] at every statement boundary, and enters
/// [kill-immune sections](SqlKiller::kill_immune); only the owner can,
/// because only `SqlKiller` has those methods. Everyone else — a `KILL
/// QUERY` handler, a watchdog, a memory arbitrator, an RPC thread, a
/// parallel worker of the statement — gets a [`KillHandle`] from
/// [`handle`](SqlKiller::handle): cheap to clone, `Send + Sync + 'static`.
///
/// The hot path, [`handle_signal`] when nothing happened, is one atomic load
/// and a mask test.
///
/// Dropping the `SqlKiller` closes the session: its current statement ends
/// as with `reset` (waiters complete with [`WaitOutcome::Reset`], the hook
/// is dropped un-run), and from then on every kill through a handle is
/// [`KillOutcome::Stale`] and every new kill event completes at once.
///
/// # One owner at a time
///
/// The owner's operations (`handle_signal`, `reset`, `kill_immune`, the
/// session settings) keep a little owner-local state (the depth of
/// kill-immune sections, the deadlines), in atomics only so that
/// `SqlKiller` can be `Sync` and a guard `Send`. An async owner that
/// moves between threads is fine: the executor's hand-off (a queue with
/// Release and Acquire, as every executor has) orders its operations.
/// Calling them from two threads at once is a misuse that `Sync` cannot
/// rule out; it stays harmless: memory-safe, no panic, and the session
/// settles (the section depth never wraps, and `is_kill_immune` is false
/// once every guard is gone). But two sections that overlap in time on two
/// threads are not guaranteed kill-immune while they overlap, and deadlines
/// follow whichever `reset` came last.
///
/// [`handle_signal`]: SqlKiller::handle_signal
/// [`reset`]: SqlKiller::reset
/// [`WaitOutcome::Reset`]: crate::WaitOutcome::Reset
///
/// ```
/// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
///
/// let killer = SqlKiller::new();
/// killer.set_conn_id(7);
///
/// // A KILL QUERY from another connection's thread.
/// let handle = killer.handle();
/// std::thread::spawn(move || handle.send_kill_signal(KillSignal::QueryInterrupted))
///     .join()
///     .unwrap();
///
/// // The session notices at its next checkpoint...
/// let err = killer.handle_signal().unwrap_err();
/// assert_eq!(err.code(), 1317);
/// // ...and the statement boundary clears it.
/// assert_eq!(killer.reset(), Some(KillSignal::QueryInterrupted));
/// assert!(killer.handle_signal().is_ok());
/// ```
///
/// The owner's operations are not on the handle:
///
/// ```compile_fail
/// let killer = sqlkiller::SqlKiller::new();
/// let handle = killer.handle();
/// handle.reset(); // a KILL handler cannot end the session's statement
/// ```
///
/// ```compile_fail
/// let killer = sqlkiller::SqlKiller::new();
/// let handle = killer.handle();
/// let _guard = handle.kill_immune(); // nor enter a kill-immune section
/// ```
pub struct SqlKiller {
    pub(crate) shared: Arc<Shared>,
}

impl SqlKiller {
    /// A killer at its first statement, not killed, connection id 0.
    ///
    /// Allocates once: the block that the owner and its handles share
    /// (384 bytes on x86_64: the state word has a 128-byte cache line to
    /// itself). Per-statement operations allocate nothing.
    pub fn new() -> SqlKiller {
        SqlKiller {
            shared: Shared::new(Timer::Real),
        }
    }

    /// A killer whose deadlines and probe schedule follow `clock` instead
    /// of the real clock: for tests (see [`ManualClock`]).
    pub fn with_clock(clock: &ManualClock) -> SqlKiller {
        SqlKiller {
            shared: Shared::new(clock.timer()),
        }
    }

    /// A handle for the killers' side: `KILL QUERY`, watchdogs, RPC threads,
    /// workers of the statement. Cheap to clone, `Send + Sync + 'static`.
    ///
    /// ```
    /// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement();
    /// let watchdog = killer.handle();
    /// std::thread::spawn(move || {
    ///     assert_eq!(watchdog.kill_statement(stmt, KillSignal::MaxExecTimeExceeded), KillOutcome::Sent);
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(killer.handle_signal().unwrap_err().code(), 3024);
    /// ```
    pub fn handle(&self) -> KillHandle {
        KillHandle::new(Arc::clone(&self.shared))
    }

    /// Stops the current statement with `signal`, if no kill beat us to it
    /// (TiDB `SendKillSignal`).
    ///
    /// Exactly one caller per statement gets [`KillOutcome::Sent`]; every
    /// other gets [`KillOutcome::AlreadyKilled`] with the winner's signal.
    /// Never blocks on the owner. If the owner may have moved on to another
    /// statement since you decided to kill, use [`kill_statement`] instead.
    ///
    /// [`kill_statement`]: SqlKiller::kill_statement
    ///
    /// ```
    /// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert_eq!(killer.send_kill_signal(KillSignal::MaxExecTimeExceeded), KillOutcome::Sent);
    /// assert_eq!(
    ///     killer.send_kill_signal(KillSignal::QueryInterrupted),
    ///     KillOutcome::AlreadyKilled(KillSignal::MaxExecTimeExceeded)
    /// );
    /// ```
    pub fn send_kill_signal(&self, signal: KillSignal) -> KillOutcome {
        self.shared.kill(None, signal, "")
    }

    /// As [`send_kill_signal`], publishing `reason` with the signal (TiDB
    /// `SendKillSignalWithKillEventReason`).
    ///
    /// Whoever sees the signal sees this reason — never an older or an empty
    /// one. A losing call publishes nothing. The reason appears in the
    /// messages of [`KillError::RunawayQueryExceeded`] and
    /// [`KillError::KilledByMemArbitrator`].
    ///
    /// [`send_kill_signal`]: SqlKiller::send_kill_signal
    ///
    /// ```
    /// use sqlkiller::{KillError, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.set_conn_id(3);
    /// let _ = killer.send_kill_signal_with_reason(KillSignal::KilledByMemArbitrator, "pool exhausted");
    /// assert_eq!(
    ///     killer.handle_signal(),
    ///     Err(KillError::KilledByMemArbitrator { reason: "pool exhausted".into(), conn_id: 3 })
    /// );
    /// ```
    pub fn send_kill_signal_with_reason(&self, signal: KillSignal, reason: &str) -> KillOutcome {
        self.shared.kill(None, signal, reason)
    }

    /// Kills statement `id` only: if the session has moved on, returns
    /// [`KillOutcome::Stale`] and changes nothing.
    ///
    /// Read `id` with [`statement`] when the statement starts (or when you
    /// decide to kill it); a late `KILL QUERY` then cannot hit the next
    /// statement.
    ///
    /// [`statement`]: SqlKiller::statement
    ///
    /// ```
    /// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let target = killer.statement();
    /// killer.reset(); // the statement ended before the KILL arrived
    /// assert_eq!(killer.kill_statement(target, KillSignal::QueryInterrupted), KillOutcome::Stale);
    /// assert_eq!(killer.kill_signal(), None);
    /// ```
    pub fn kill_statement(&self, id: StatementId, signal: KillSignal) -> KillOutcome {
        self.shared.kill(Some(id), signal, "")
    }

    /// As [`kill_statement`], publishing `reason` with the signal — what a
    /// runaway-query watcher wants: it names the statement it measured.
    ///
    /// [`kill_statement`]: SqlKiller::kill_statement
    ///
    /// ```
    /// use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let stmt = killer.statement();
    /// let outcome = killer.kill_statement_with_reason(
    ///     stmt,
    ///     KillSignal::RunawayQueryExceeded,
    ///     "ExecElapsed > 60s",
    /// );
    /// assert_eq!(outcome, KillOutcome::Sent);
    /// assert_eq!(
    ///     killer.handle_signal().unwrap_err().to_string(),
    ///     "Query execution was interrupted, identified as runaway query [ExecElapsed > 60s]"
    /// );
    /// ```
    pub fn kill_statement_with_reason(
        &self,
        id: StatementId,
        signal: KillSignal,
        reason: &str,
    ) -> KillOutcome {
        self.shared.kill(Some(id), signal, reason)
    }

    /// The current statement (generation).
    ///
    /// ```
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// let id = killer.statement();
    /// assert_eq!(killer.statement(), id);
    /// ```
    pub fn statement(&self) -> StatementId {
        self.shared.statement()
    }

    /// The signal of the current statement, if it was killed (TiDB `GetKillSignal`).
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert_eq!(killer.kill_signal(), None);
    /// let _ = killer.send_kill_signal(KillSignal::ServerMemoryExceeded);
    /// assert_eq!(killer.kill_signal(), Some(KillSignal::ServerMemoryExceeded));
    /// ```
    pub fn kill_signal(&self) -> Option<KillSignal> {
        self.shared.kill_signal()
    }

    /// The current statement and where it is in its life, read at one instant.
    ///
    /// ```
    /// use sqlkiller::{KillPhase, KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert_eq!(killer.phase().1, KillPhase::Idle);
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    /// // `send_kill_signal` returns only after publishing, so: Killed.
    /// assert_eq!(killer.phase().1, KillPhase::Killed(KillSignal::QueryInterrupted));
    /// ```
    pub fn phase(&self) -> (StatementId, KillPhase) {
        self.shared.phase()
    }

    /// The checkpoint: `Ok` unless the current statement was killed (TiDB `HandleSignal`).
    ///
    /// Not killed and no probe due: one atomic load and a mask test, with or
    /// without a probe or a deadline armed, and no clock read (the timer
    /// marks a probe due in the state word; deadlines fire from the timer).
    /// A probe due runs here, on the owner. Killed: the [`KillError`] of the
    /// signal, with the connection id as of now and the kill's reason text.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert!(killer.handle_signal().is_ok());
    /// let _ = killer.send_kill_signal(KillSignal::MaxExecTimeExceeded);
    /// assert_eq!(killer.handle_signal().unwrap_err().code(), 3024);
    /// ```
    ///
    /// # In a loop that checks every row
    ///
    /// Keep the killer one pointer away from the loop: pass `&SqlKiller` to
    /// the operator as an argument (a worker of the statement moves a
    /// [`KillHandle`] into its closure instead). Then a check costs what a
    /// bare `AtomicBool::load` does (0.97x–1.03x of it, one check per row,
    /// in four builds, `benches/per_call.rs`, docs/BENCHMARKS.md). A
    /// closure that *borrows* the killer, or an `Arc<SqlKiller>`, puts the
    /// state word two dependent loads away, and because the check's slow
    /// path is a call that may write memory, the compiler reloads the
    /// middle pointer on every row: 1.0x–1.9x of the floor in a tight loop,
    /// depending on where the build puts it (a hand-written flag check with
    /// such a slow path pays the same there). At a check per thousand rows,
    /// as in a progress callback that holds an `Arc<SqlKiller>`, this does
    /// not show.
    ///
    /// Do not swap the owner's own checkpoint for a handle's to save that
    /// load: [`KillHandle::check_signal`] never runs the liveness probe nor
    /// what a kill-immune section deferred, so the owner must keep calling
    /// this one.
    ///
    /// ```
    /// use sqlkiller::{KillError, KillSignal, SqlKiller};
    ///
    /// // An operator: the killer is an argument.
    /// fn filter(rows: &[u64], killer: &SqlKiller) -> Result<u64, KillError> {
    ///     let mut hits = 0;
    ///     for &row in rows {
    ///         killer.handle_signal()?;
    ///         if row % 7 == 3 {
    ///             hits += row;
    ///         }
    ///     }
    ///     Ok(hits)
    /// }
    ///
    /// let killer = SqlKiller::new();
    /// assert_eq!(filter(&[3, 10, 4], &killer), Ok(13));
    /// // A worker's callback: it owns a handle.
    /// let handle = killer.handle();
    /// let killed = move || handle.handle_signal().is_err();
    /// assert!(!killed());
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    /// assert!(killed());
    /// assert_eq!(filter(&[3], &killer), Err(KillError::QueryInterrupted));
    /// ```
    #[inline(always)]
    #[cfg_attr(feature = "testing", track_caller)]
    pub fn handle_signal(&self) -> Result<(), KillError> {
        self.shared.handle_signal()
    }

    /// Ends the statement (TiDB `Reset`): advances the generation and returns
    /// the signal it cleared, so the caller can log "kill finished".
    ///
    /// Owner only. Releases the old statement's waiters, drops its cancel
    /// hook un-run and clears its reason text, then starts the next
    /// statement's clock: its `max_execution_time` deadline and its first
    /// probe interval count from here. A kill racing `reset` lands on
    /// exactly one of the two statements.
    ///
    /// **What it waits for.** After `reset` returns, no side effect of the
    /// old statement is running or will start. So if a kill of it is still
    /// publishing (waking waiters, running the cancel hook on the killer's
    /// thread), or a hook of it runs on another thread, `reset` waits until
    /// that is over: it spins briefly with `crossbeam_utils::Backoff`, then
    /// blocks on a condition variable, without a timeout, until the kill or
    /// the hook's runner wakes it. It waits as long as the hook runs and
    /// burns no CPU meanwhile; keep hooks short. What a kill-immune section
    /// deferred is delivered here first, on this thread.
    ///
    /// **Panics** if called from inside one of this killer's own kill
    /// callbacks (a cancel hook or waker of its kill, or anything those
    /// call, on any killer, further up the same thread's stack) while it
    /// would wait: it would wait for itself. A panic of a waker or of a
    /// hook's drop run here reaches the caller after the statement ended.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert_eq!(killer.reset(), None);
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    /// assert_eq!(killer.reset(), Some(KillSignal::QueryInterrupted));
    /// assert_eq!(killer.kill_signal(), None);
    /// ```
    pub fn reset(&self) -> Option<KillSignal> {
        self.shared.reset()
    }

    /// Sets the connection id (TiDB `ConnID`), for error messages and logs.
    ///
    /// Any thread may read it at any time: it is an atomic, which is exactly
    /// what TiDB #55467 lacked.
    ///
    /// ```
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// killer.set_conn_id(1234);
    /// assert_eq!(killer.conn_id(), 1234);
    /// ```
    pub fn set_conn_id(&self, conn_id: u64) {
        self.shared.set_conn_id(conn_id)
    }

    /// The connection id last set by [`set_conn_id`](SqlKiller::set_conn_id).
    pub fn conn_id(&self) -> u64 {
        self.shared.conn_id()
    }

    /// Marks whether the owner is writing the result set to the client (TiDB
    /// `InWriteResultSet`): a killer that finds the query stuck there can
    /// call `finish_result_set` to release it.
    ///
    /// ```
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// killer.set_in_write_result_set(true);
    /// assert!(killer.in_write_result_set());
    /// ```
    pub fn set_in_write_result_set(&self, writing: bool) {
        self.shared.set_in_write_result_set(writing)
    }

    /// Whether the owner is writing the result set (see
    /// [`set_in_write_result_set`](SqlKiller::set_in_write_result_set)).
    pub fn in_write_result_set(&self) -> bool {
        self.shared.in_write_result_set()
    }
}

impl Default for SqlKiller {
    fn default() -> Self {
        SqlKiller::new()
    }
}

impl Drop for SqlKiller {
    /// Closes the session: ends the current statement as `reset` does
    /// (waiters complete with `Reset`, the hook is dropped un-run, and what a
    /// kill-immune section still owed is dropped with it), and marks the
    /// killer closed for its handles. A panic of a waker or of a hook's drop
    /// here is contained: a destructor must not panic while unwinding.
    ///
    /// Dropped inside one of its own kill's callbacks (a hook or waker held
    /// the last `Arc<SqlKiller>`), it does not wait for that kill, which
    /// this very thread is running: it closes the session as it stands
    /// (kills `Stale`, pending waiters `Reset`, un-run hooks dropped) and
    /// the kill completes normally.
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for SqlKiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("SqlKiller", f)
    }
}
