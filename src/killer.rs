//! `SqlKiller`: the signal itself — kill, check, reset — on the state word of `state.rs`.

use crossbeam_utils::CachePadded;

use crate::log;
use crate::loom::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Weak};

use crate::loom::{lock, Condvar, Mutex};
use crate::probe::DEFAULT_PROBE_INTERVAL;
use crate::side::{FirstPanic, Leftovers, SideTable};
use crate::state::State;
use crate::time::{nanos, Timer, NEVER};
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

/// Everything the owner and the handles share, in one allocation.
pub(crate) struct Shared {
    /// The state word of `state.rs`, alone on its cache line: killers of
    /// other sessions never write near it, and the owner's checks never
    /// share a line with anyone else's writes.
    pub(crate) state: CachePadded<AtomicU64>,
    /// This killer's identity, carried by every [`StatementId`] it hands
    /// out, so an id from another session is never taken for one of ours.
    pub(crate) id: u64,
    /// The connection id (TiDB `ConnID`): an atomic, never a plain field (TiDB #55467).
    conn_id: AtomicU64,
    in_write_result_set: AtomicBool,
    /// Generation-local data that is too big for the word (reason text,
    /// waiters, hooks) and session data (finish function, probe).
    /// Allocated on first use.
    pub(crate) side: Mutex<Option<Box<SideTable>>>,
    /// Signalled, under `side`'s lock, when something the owner or
    /// `clear_finish_func` may block on is over: a kill published (`PARKED`
    /// was set), the last running hook returned, a finish function returned.
    pub(crate) progress: Condvar,
    /// This session's clock and timer (`time.rs`).
    pub(crate) timer: Timer,
    /// A weak reference to this block, for the timer's queue.
    pub(crate) me: Weak<Shared>,
    /// The current statement's deadline and its generation (`time.rs`):
    /// written by the owner, `at` then `gen`; read by the timer.
    pub(crate) deadline_at: AtomicU64,
    pub(crate) deadline_gen: AtomicU64,
    /// The current statement's next probe, the same way.
    pub(crate) probe_at: AtomicU64,
    pub(crate) probe_gen: AtomicU64,
    /// When the timer will next look at this session (`NEVER`: it will not).
    pub(crate) timer_sched: AtomicU64,
    /// Owner-local: `max_execution_time` in nanoseconds, 0 for none.
    pub(crate) max_exec: AtomicU64,
    /// The probe interval in nanoseconds (0: at every checkpoint).
    pub(crate) probe_interval: AtomicU64,
    /// Owner-local: a deadline or probe was ever armed, so `reset` must
    /// arm or disarm the next statement's (one load when never).
    pub(crate) timed: AtomicBool,
    /// Owner-local: nesting depth of kill-immune guards (`immune.rs`).
    pub(crate) immune_depth: AtomicU32,
    /// The state word as the owner's last `reset` left it: where `reset` and
    /// kills start their CAS, so an untouched statement costs one CAS each.
    owner_hint: AtomicU64,
}

// Owner-local state. `immune_depth`, `max_exec`, `timed` and the meaning of
// `owner_hint` belong to the owner: only `SqlKiller`'s methods write them.
// They are atomics (Relaxed) only so that `SqlKiller` can be `Sync` and a
// `KillImmuneGuard` `Send`. When the owner is an async task that moves to
// another thread between two operations, the executor's hand-off (a queue
// with Release/Acquire, as every executor has) orders the two operations,
// so Relaxed still reads the last value the owner wrote. Owner operations
// called concurrently through a shared `&SqlKiller` are a misuse: they stay
// memory-safe and the state word stays consistent, but the depth of
// kill-immune sections and the deadlines may then be off.

/// A process-wide counter of killers, for [`Shared::id`]. A plain std
/// atomic, outside the loom facade on purpose: it only hands out distinct
/// numbers and orders nothing.
static NEXT_KILLER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl SqlKiller {
    /// A killer at its first statement, not killed, connection id 0.
    ///
    /// Allocates once: the block that the owner and its handles share
    /// (about 300 bytes). Per-statement operations allocate nothing.
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
        KillHandle {
            shared: Arc::clone(&self.shared),
        }
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
        self.shared.send_kill_signal(signal)
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
        self.shared.send_kill_signal_with_reason(signal, reason)
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
        self.shared.kill_statement(id, signal)
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
        self.shared.kill_statement_with_reason(id, signal, reason)
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
    /// load: [`KillHandle::handle_signal`] never runs the liveness probe nor
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
    pub fn handle_signal(&self) -> Result<(), KillError> {
        self.shared.handle_signal()
    }

    /// Ends the statement (TiDB `Reset`): advances the generation and returns
    /// the signal it cleared, so the caller can log "kill finished".
    ///
    /// Owner only. If a kill is still publishing its side effects, waits for
    /// it (bounded backoff) so that after `reset` returns no side effect of
    /// the old statement is running or will start. Releases the old
    /// statement's waiters, drops its cancel hook and clears its reason text.
    /// Starts the next statement's clock: its `max_execution_time` deadline
    /// and its first probe interval count from here. A kill racing `reset`
    /// lands on exactly one of the two statements.
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

impl Shared {
    fn new(timer: Timer) -> Arc<Shared> {
        Arc::new_cyclic(|me| Shared {
            timer,
            me: me.clone(),
            deadline_at: AtomicU64::new(NEVER),
            deadline_gen: AtomicU64::new(0),
            probe_at: AtomicU64::new(NEVER),
            probe_gen: AtomicU64::new(0),
            timer_sched: AtomicU64::new(NEVER),
            max_exec: AtomicU64::new(0),
            probe_interval: AtomicU64::new(nanos(DEFAULT_PROBE_INTERVAL)),
            timed: AtomicBool::new(false),
            state: CachePadded::new(AtomicU64::new(State::INITIAL.0)),
            id: NEXT_KILLER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conn_id: AtomicU64::new(0),
            in_write_result_set: AtomicBool::new(false),
            side: Mutex::new(None),
            progress: Condvar::new(),
            immune_depth: AtomicU32::new(0),
            owner_hint: AtomicU64::new(State::INITIAL.0),
        })
    }

    // Orderings on the state word, once for the whole file:
    // - the winning kill CAS is AcqRel: Release publishes the signal (and
    //   whatever the killer wrote before it); Acquire orders it after the
    //   reset that opened the generation.
    // - `statement`, `phase` load with Acquire, and `handle_signal` loads
    //   Relaxed and fences with Acquire when it leaves its fast path, so a
    //   check that sees a kill also sees what the killer wrote before it.
    // - `KILLED` is set with Release and `reset` reads it with Acquire: every
    //   side effect of the kill happens-before `reset` returns.
    // - `reset`'s CAS is AcqRel for the same two reasons as the kill's.

    #[inline(always)]
    pub(crate) fn load(&self) -> State {
        State(self.state.load(Acquire))
    }

    /// Reads the word inside a read-modify-write sequence (a kill whose
    /// hint was off, a `reset` that waited), with an RMW that changes
    /// nothing rather than a load.
    ///
    /// On purpose: loom 0.7's DPOR remembers only the *last* access to an
    /// atomic, so in "load, then CAS" a thread's own load hides every other
    /// thread's earlier load from the CAS, and loom never tries the CAS
    /// first (tokio-rs/loom#392 is one face of it; `loom-tests` asserts that
    /// both orders are explored). The sequences therefore start with a CAS
    /// from the owner's hint, and read with this where they must. Natively
    /// it costs one locked instruction on a path that is about to CAS the
    /// same cache line anyway.
    #[inline]
    pub(crate) fn load_for_update(&self) -> State {
        State(self.state.fetch_or(0, Acquire))
    }

    pub(crate) fn send_kill_signal(&self, signal: KillSignal) -> KillOutcome {
        self.kill(None, signal, "")
    }

    pub(crate) fn send_kill_signal_with_reason(
        &self,
        signal: KillSignal,
        reason: &str,
    ) -> KillOutcome {
        self.kill(None, signal, reason)
    }

    pub(crate) fn kill_statement(&self, id: StatementId, signal: KillSignal) -> KillOutcome {
        self.kill(Some(id), signal, "")
    }

    pub(crate) fn kill_statement_with_reason(
        &self,
        id: StatementId,
        signal: KillSignal,
        reason: &str,
    ) -> KillOutcome {
        self.kill(Some(id), signal, reason)
    }

    fn kill(&self, target: Option<StatementId>, signal: KillSignal, reason: &str) -> KillOutcome {
        // A reason must be in place before anyone can see the signal, and a
        // losing kill must not write one: so hold the side-table lock across
        // the CAS and write the text only if it won (invariant I4). Kills
        // without a reason take no lock at all.
        let mut side = (!reason.is_empty()).then(|| lock(&self.side));
        // Start from the owner's hint (the word as its last `reset` left
        // it), not from a read: if the statement is untouched, the first CAS
        // wins. A hint is never answered from; only a failed CAS or a real
        // read is.
        let mut current = self.owner_hint();
        let mut guessing = true;
        let won = loop {
            if current.has(State::CLOSED) || target.is_some_and(|id| id.killer != self.id) {
                return KillOutcome::Stale; // never a hint: those are not closed
            }
            if target.is_some_and(|id| !self.is_current(id, current)) {
                if guessing {
                    guessing = false;
                    current = self.load_for_update();
                    continue;
                }
                return KillOutcome::Stale;
            }
            if let Some(winner) = current.signal() {
                return KillOutcome::AlreadyKilled(winner); // a hint has no signal
            }
            let mut next = current.killing(signal);
            if side.is_some() {
                next = next.with(State::REASON);
            }
            // A CAS, not a `fetch_or`: the signal may only be installed over
            // `Idle` of the expected generation (I1, I3).
            match self
                .state
                .compare_exchange(current.0, next.0, AcqRel, Acquire)
            {
                Ok(_) => break next,
                Err(actual) => {
                    guessing = false;
                    current = State(actual);
                }
            }
        };
        // We own `Killing(g, signal)`: from here on `reset` waits for us, and
        // the guard moves the state to `Killed` even if a side effect panics.
        let _published = PublishOnDrop(self);
        if let Some(side) = side.as_mut() {
            let table = side.get_or_insert_with(Default::default);
            table.reason.clear();
            table.reason.push_str(reason);
        }
        drop(side);
        log::kill_initiated(self.conn_id(), signal, reason);
        self.publish_side_effects(signal, won);
        KillOutcome::Sent
    }

    pub(crate) fn statement(&self) -> StatementId {
        self.statement_id(self.load())
    }

    /// The id of the statement current in `state`.
    pub(crate) fn statement_id(&self, state: State) -> StatementId {
        StatementId {
            killer: self.id,
            generation: state.generation(),
        }
    }

    /// Whether `id` names the statement current in `state` (of this killer).
    pub(crate) fn is_current(&self, id: StatementId, state: State) -> bool {
        id.killer == self.id && id.generation == state.generation()
    }

    pub(crate) fn kill_signal(&self) -> Option<KillSignal> {
        self.load().signal()
    }

    pub(crate) fn phase(&self) -> (StatementId, KillPhase) {
        let state = self.load();
        (self.statement_id(state), state.phase())
    }

    #[inline(always)]
    pub(crate) fn handle_signal(&self) -> Result<(), KillError> {
        // Relaxed, then an Acquire fence only off the fast path: the same
        // synchronisation as an Acquire load wherever it matters (a kill
        // seen: the fence orders everything after it after the kill's
        // Release), and nothing for the compiler to treat as a barrier in a
        // caller's loop of checks. A check that starts after a kill returned
        // still reads it: coherence, not ordering, guarantees that.
        let state = State(self.state.load(Relaxed));
        if state.is_quiet() {
            return Ok(());
        }
        // Tell the compiler which way the checkpoint goes, so the caller's
        // loop keeps the quiet case on its straight line in every build.
        std::hint::cold_path();
        self.handle_signal_slow(state)
    }

    #[cold]
    #[inline(never)]
    fn handle_signal_slow(&self, state: State) -> Result<(), KillError> {
        fence(Acquire); // see `handle_signal`
        let state = if state.has(State::PROBE_DUE) {
            self.run_due_probe(state)
        } else {
            state
        };
        if state.signal().is_none() || state.has(State::IMMUNE) {
            return Ok(());
        }
        if state.has(State::OWED) {
            // The first check after a kill-immune section delivers what a
            // kill inside it deferred (the hook may panic, into our caller).
            self.deliver_owed();
        }
        match self.error_for(state) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// The error for the kill in `state`, reading its reason consistently
    /// (I4); `None` if the statement ended before the reason could be read
    /// and the new one is not killed.
    pub(crate) fn error_for(&self, mut state: State) -> Option<KillError> {
        loop {
            let signal = state.signal()?;
            if !state.has(State::REASON) {
                return Some(KillError::new(signal, self.conn_id(), ""));
            }
            let side = lock(&self.side);
            // The reason belongs to this generation only while the word still
            // says so; a generation with `REASON` ends only under this lock.
            let now = self.load();
            if now.generation() == state.generation() {
                let reason = side.as_ref().map_or("", |table| table.reason.as_str());
                return Some(KillError::new(signal, self.conn_id(), reason));
            }
            drop(side);
            state = now;
        }
    }

    pub(crate) fn reset(&self) -> Option<KillSignal> {
        let (cleared, panics) = self.end_statement(false);
        panics.resume();
        cleared
    }

    /// Ends the current statement: `reset`, or with `close` the owner's
    /// drop, which also sets `CLOSED` and drops what a kill-immune section
    /// still owed instead of serving it. Returns the cleared signal and the
    /// first panic of user code run on the way, for the caller to resume
    /// (`reset`) or contain (drop).
    fn end_statement(&self, close: bool) -> (Option<KillSignal>, FirstPanic) {
        let closed = if close { State::CLOSED } else { 0 };
        // The common case first: nothing touched the statement since the
        // last reset (no kill, waiter, hook or reason), so the word still
        // equals the owner's hint and one CAS ends it. A failed CAS returns
        // the word as it is, which the loop below starts from.
        let hint = self.owner_hint();
        let next = hint.next_generation().with(closed);
        let mut current = match self.state.compare_exchange(hint.0, next.0, AcqRel, Acquire) {
            Ok(_) => return self.finish_reset(hint, None, FirstPanic::default()),
            Err(actual) => State(actual),
        };
        // A panic of user code run from here (an owed hook, a waker) is
        // kept until the statement has ended.
        let mut panics = FirstPanic::default();
        loop {
            if current.is_killing() {
                // The winner is publishing; it holds nothing we hold.
                current = self.wait_while_killing(current);
                continue;
            }
            if current.has(State::OWED) && !close {
                // A kill inside a kill-immune section left its waiters and
                // hook to the owner's next operation: this one.
                panics.run(|| self.deliver_owed());
                current = self.load_for_update();
                continue;
            }
            // Generation-local data in the side table is cleared under its
            // lock, in the same critical section as the CAS that ends the
            // generation (I4; see `state.rs`).
            let mut side = current.has(State::SIDE_DATA).then(|| lock(&self.side));
            if side.as_ref().is_some_and(|side| self.hooks_running(side)) {
                // A hook installed after the kill is running on another
                // thread; it belongs to this statement, so wait for it.
                drop(side);
                self.wait_for_hook_runners();
                current = self.load_for_update();
                continue;
            }
            // One CAS from the exact state we read: a kill that lands between
            // the read and the CAS makes it fail, so the kill is either
            // returned here or survives into the next generation (#70545).
            let next = current.next_generation().with(closed);
            if let Err(actual) = self
                .state
                .compare_exchange(current.0, next.0, AcqRel, Acquire)
            {
                current = State(actual);
                continue;
            }
            let leftovers = side.as_mut().map(|side| self.end_generation(side, current));
            drop(side);
            return self.finish_reset(current, leftovers, panics);
        }
    }

    /// After the CAS that ended generation `ended`: remembers the new word
    /// as the owner's hint, restarts the probe timer, logs, then releases
    /// what the generation left (user code: wakers, the hook's drop).
    fn finish_reset(
        &self,
        ended: State,
        leftovers: Option<Leftovers>,
        mut panics: FirstPanic,
    ) -> (Option<KillSignal>, FirstPanic) {
        // Relaxed: a hint; every use is checked by a CAS.
        self.owner_hint.store(ended.next_generation().0, Relaxed);
        self.arm_next_statement(ended);
        let cleared = ended.signal();
        if let Some(signal) = cleared {
            log::kill_finished(self.conn_id(), signal);
        }
        if let Some(leftovers) = leftovers {
            leftovers.release(&mut panics);
        }
        (cleared, panics)
    }

    /// A worker's checkpoint: the signal of the current statement, unless
    /// inside a kill-immune section; no probe, no deferred delivery.
    #[inline(always)]
    pub(crate) fn check_signal(&self) -> Result<(), KillError> {
        // Relaxed and a fence, as in `handle_signal`.
        let state = State(self.state.load(Relaxed));
        if state.is_unkilled() {
            return Ok(());
        }
        std::hint::cold_path();
        if state.has(State::IMMUNE) {
            return Ok(());
        }
        fence(Acquire);
        self.error_for(state).map_or(Ok(()), Err)
    }

    /// `Debug` for the owner and the handles: the state, not the internals.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.load();
        f.debug_struct(name)
            .field("statement", &self.statement_id(state))
            .field("phase", &state.phase())
            .field("conn_id", &self.conn_id())
            .field("kill_immune", &state.has(State::IMMUNE))
            .field("closed", &state.has(State::CLOSED))
            .finish()
    }

    /// The owner's guess of the state word: what its last `reset` installed.
    fn owner_hint(&self) -> State {
        State(self.owner_hint.load(Relaxed))
    }

    pub(crate) fn set_conn_id(&self, conn_id: u64) {
        // Relaxed: a lone value, nothing else is published with it.
        self.conn_id.store(conn_id, Relaxed);
    }

    pub(crate) fn conn_id(&self) -> u64 {
        self.conn_id.load(Relaxed)
    }

    pub(crate) fn set_in_write_result_set(&self, writing: bool) {
        // Release/Acquire: a killer that reads `true` also sees what the owner
        // set up before it started writing.
        self.in_write_result_set.store(writing, Release);
    }

    pub(crate) fn in_write_result_set(&self) -> bool {
        self.in_write_result_set.load(Acquire)
    }
}

/// Moves `Killing` to `Killed` when dropped, also while unwinding (I6),
/// and wakes an owner that blocked waiting for it.
struct PublishOnDrop<'a>(&'a Shared);

impl Drop for PublishOnDrop<'_> {
    fn drop(&mut self) {
        // `fetch_or`, not a store: waiters and hooks may set their flags
        // concurrently, and the owner may set `PARKED`. Release: every side
        // effect happens-before the `reset` that sees `KILLED`.
        let prev = State(self.0.state.fetch_or(State::KILLED, Release));
        if prev.has(State::PARKED) {
            self.0.wake_parked_owner();
        }
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
    fn drop(&mut self) {
        let (_cleared, panics) = self.shared.end_statement(true);
        drop(panics); // contained: resuming in a destructor could abort
    }
}

impl std::fmt::Debug for SqlKiller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.shared.debug("SqlKiller", f)
    }
}
