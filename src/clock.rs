//! The one door to time: the clock, and the timer that fires statement
//! deadlines and schedules the liveness probe. Nothing else in the crate
//! reads a clock or sleeps on one.
//!
//! # The clock
//!
//! Times are `u64` nanoseconds since an epoch: the first use of the real
//! clock in the process, or the creation of a [`ManualClock`], which tests
//! and loom models advance by hand (`advance` also runs, on the caller's
//! thread, whatever fell due).
//!
//! # The timer
//!
//! One timer per clock: the real one is a single process-wide thread,
//! started on the first deadline or probe ever armed, that sleeps on a
//! condition variable while nothing is due (and without a timeout while
//! nothing is armed: zero cost). It holds only a `Weak` reference to each
//! session, so it never keeps a session alive.
//!
//! Each session has at most one entry in the timer's queue: `timer_sched`
//! says when the timer will next look at the session, and a new, earlier
//! entry replaces the session's old one (found by its time and sequence
//! number), so the queue is bounded by the live sessions however often
//! deadlines move. The entry is recorded under the queue's lock, so two
//! pushes for one session (the owner arming, the timer rescheduling) that
//! reach the lock in either order still leave one entry: the earlier
//! stays, and its visit schedules the rest. A session that closes removes
//! its entry and is never queued again. Arming
//! a deadline or a probe for statement g is two stores on the owner's side,
//! `at` then `gen` (Release), then `timer_sched.fetch_min(at)`; only if that
//! lowered it does the owner push an entry (and lock the queue). So a
//! per-statement `max_execution_time`, whose deadline only moves later, costs
//! a clock read, two stores and one RMW per statement, and no lock.
//!
//! When an entry falls due the timer `swap`s `timer_sched` to `NEVER`, then
//! reads `gen` (Acquire) and `at`. Both sides' RMWs on `timer_sched` are
//! ordered: either the owner's `fetch_min` came second, saw `NEVER` and
//! pushed its own entry, or it came first and the timer's `swap` read it, so
//! the timer sees the owner's new `at` and reschedules for it. No deadline is
//! lost. Model: `deadline_armed_while_timer_fires`.
//!
//! A deadline fires as `kill_statement(g, MaxExecTimeExceeded)`, so it can
//! never kill another statement: if it read `gen` = g, the `at` it read is
//! g's or belongs to a statement that started after g ended (the owner
//! writes `at` before `gen`), and then the kill of g is `Stale`. Models:
//! `deadline_races_reset`; broken twin `broken_deadline_fires_untargeted`.
//! A probe falling due sets `PROBE_DUE` in the state word with a CAS that
//! checks g, and the owner's next `handle_signal` runs the probe (as
//! PostgreSQL's timeout handlers set a flag that `CHECK_FOR_INTERRUPTS`
//! reads), so the checkpoint stays one load and a mask test. Model:
//! `probe_due_races_reset`; broken twin `broken_probe_due_without_generation`.
//!
//! # Where a deadline's side effects run
//!
//! The kill's CAS runs on the timer, so every deadline lands on time. If
//! the statement has a cancel hook, the kill is served (its waiters woken,
//! its hooks run) on a thread spawned for it: a hook is user code and may
//! be slow or block, and on the timer thread it would delay every other
//! session's deadline. Waiters alone are woken on the timer: a waker is
//! meant to be cheap, and the common async shape (a task awaiting a kill
//! event) then costs no thread. The kill stays
//! `Killing` until that thread has served it, exactly as when a `KILL`
//! thread serves its own kill, so `reset` waits for it; the thread
//! contains any panic. A bounded pool would let a few blocking hooks stall
//! the rest again; a thread per hooked deadline costs a spawn only where a
//! hook already cost an allocation. The cost is a thread per hook that is
//! still running: a storm of deadlines whose hooks all block starts as many
//! threads. If no thread can be had, the timer serves the kill itself, and
//! a slow hook then delays the timer again. A manual clock's `advance` joins the
//! threads it started, so tests stay deterministic. Model:
//! `deadline_hook_handed_off_races_reset`; broken twin
//! `broken_handoff_publishes_before_serving`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::callback;
use crate::loom::atomic::{AtomicU64, Ordering::*};
use crate::loom::{lock, Condvar, Mutex};

/// What the timer serves: a session (the engine's shared block). The queue
/// holds it weakly, so the timer never keeps a session alive.
pub(crate) trait TimerClient: Send + Sync {
    /// The timer's visit at `now`; returns the thread serving a deadline's
    /// kill, if one was handed off.
    fn on_timer(self: Arc<Self>, now: u64) -> Option<Served>;
}

/// A thread serving a deadline's kill (its waiters and hooks).
pub(crate) type Served = crate::loom::thread::JoinHandle<()>;

/// A session as the timer's queue holds it.
pub(crate) type Session = Weak<dyn TimerClient>;

/// Where a session's one entry sits in its timer's queue: the entry's
/// time and sequence number. Written only under the queue's lock (atomics
/// only so that the session is `Sync`); read under it too, except by
/// [`Timer::forget`], whose unlocked "never queued" test is exact (see there).
pub(crate) struct QueueRecord {
    at: AtomicU64,
    seq: AtomicU64,
}

/// `QueueRecord::seq` of a session that closed: nothing is queued for it again.
const CLOSED: u64 = u64::MAX;

impl QueueRecord {
    pub(crate) fn new() -> QueueRecord {
        QueueRecord {
            at: AtomicU64::new(NEVER),
            seq: AtomicU64::new(0),
        }
    }

    fn key(&self) -> (u64, u64) {
        // Relaxed: only touched under the queue's lock, which orders them.
        (self.at.load(Relaxed), self.seq.load(Relaxed))
    }

    fn set(&self, (at, seq): (u64, u64)) {
        self.at.store(at, Relaxed);
        self.seq.store(seq, Relaxed);
    }
}

/// No time: a deadline not armed, a session not scheduled.
pub(crate) const NEVER: u64 = u64::MAX;
/// The last time a clock can show: one short of `NEVER`, so nothing unarmed
/// is ever due.
const LAST: u64 = NEVER - 1;

/// `d` in nanoseconds, saturating: 584 years or more is `NEVER`.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(NEVER)
}

/// Which clock and timer a killer uses.
#[derive(Clone)]
pub(crate) enum Timer {
    /// The real clock and the process-wide timer thread.
    Real,
    /// A [`ManualClock`].
    Manual(Arc<TimerCore>),
}

impl Timer {
    /// Now, in nanoseconds since this clock's epoch.
    pub(crate) fn now(&self) -> u64 {
        match self {
            Timer::Real => real::now(),
            Timer::Manual(core) => core.manual_now.load(Acquire),
        }
    }

    /// Makes the timer look at `session` no later than `at`. A session
    /// has at most one entry (`record`): if it is queued and no later than
    /// `at` it stays, else the new one replaces it. So the queue is bounded
    /// by the live sessions, whatever order concurrent pushes for one
    /// session take the lock in.
    pub(crate) fn push(&self, at: u64, session: Session, record: &QueueRecord) {
        self.core().push(at, session, record);
    }

    /// Removes the session's entry, if queued, and queues nothing for it
    /// again: a closed session's memory is freed at once, not when its
    /// deadline would have passed.
    pub(crate) fn forget(&self, record: &QueueRecord) {
        // Never pushed: nothing is queued, and nothing can be any more (the
        // timer queues a session again only from a visit of its entry), so
        // the lock is not needed and the real timer need not start.
        if record.seq.load(Relaxed) != 0 {
            self.core().forget(record);
        }
    }

    /// Makes sure the timer runs (the real one's thread is started on
    /// first use); panics if its thread cannot be started.
    pub(crate) fn start(&self) {
        let _ = self.core();
    }

    fn core(&self) -> &TimerCore {
        match self {
            Timer::Real => real::core(),
            Timer::Manual(core) => core,
        }
    }
}

/// The queue of one timer: which session to look at when.
pub(crate) struct TimerCore {
    /// Keyed by (time, sequence number): ordered by time, and two entries
    /// for the same time stay two.
    queue: Mutex<Queue>,
    /// Signalled when an entry earlier than all others is pushed.
    earlier: Condvar,
    /// A manual clock's time; unused by the real one.
    manual_now: AtomicU64,
}

#[derive(Default)]
struct Queue {
    entries: BTreeMap<(u64, u64), Session>,
    pushed: u64,
}

impl Queue {
    /// When the earliest entry is due.
    fn first_at(&self) -> Option<u64> {
        self.entries.first_key_value().map(|(&(at, _), _)| at)
    }
}

impl TimerCore {
    fn new() -> TimerCore {
        TimerCore {
            queue: Mutex::new(Queue::default()),
            earlier: Condvar::new(),
            manual_now: AtomicU64::new(0),
        }
    }

    fn push(&self, at: u64, session: Session, record: &QueueRecord) {
        let mut queue = lock(&self.queue);
        let old = record.key();
        if old.1 == CLOSED {
            return;
        }
        let queued = queue.entries.contains_key(&old);
        if queued && old.0 <= at {
            return; // the queued visit comes first; it schedules the rest
        }
        let replaced = if queued {
            queue.entries.remove(&old)
        } else {
            None
        };
        queue.pushed += 1;
        let key = (at, queue.pushed);
        queue.entries.insert(key, session);
        record.set(key);
        // Wake the timer thread only if it now has an earlier entry to sleep to.
        let earliest = queue.entries.first_key_value().map(|(&first, _)| first) == Some(key);
        drop(queue);
        drop(replaced);
        if earliest {
            self.earlier.notify_one();
        }
    }

    fn forget(&self, record: &QueueRecord) {
        let removed = {
            let mut queue = lock(&self.queue);
            let removed = queue.entries.remove(&record.key());
            record.set((NEVER, CLOSED));
            removed
        };
        drop(removed);
    }

    /// Takes the earliest entry out of the queue if it is due at `now`,
    /// and says whether another one is due too. One at a time: firing
    /// allocates nothing.
    fn pop_due(&self, now: u64) -> (Option<Session>, bool) {
        let mut queue = lock(&self.queue);
        if queue.first_at().is_none_or(|first| first > now) {
            return (None, false);
        }
        let session = queue.entries.pop_first().map(|(_, session)| session);
        (session, queue.first_at().is_some_and(|first| first <= now))
    }

    /// Serves the sessions due at `now`, on this thread. A panic of user
    /// code run on the way is contained: the timer serves every session.
    /// With `join`, waits for the threads serving deadlines' kills (a
    /// manual clock's `advance`); the real timer leaves them.
    fn fire(&self, now: u64, join: bool) {
        let mut serving = Vec::new();
        let mut more = true;
        while more {
            let (due, next) = self.pop_due(now);
            more = next;
            let Some(session) = due else { break };
            if let Some(session) = session.upgrade() {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Arc::clone(&session).on_timer(now)
                }));
                match served {
                    Ok(Some(thread)) if join => serving.push(thread),
                    Ok(_) => {}
                    Err(payload) => callback::drop_payload(payload),
                }
                // The last reference to a session that closed meanwhile
                // drops its user values here: contained too.
                callback::drop_contained(session);
            }
        }
        for thread in serving {
            // Its panics are contained where they happen.
            let _ = thread.join();
        }
    }
}

/// A clock that only moves when told: for tests and models of deadlines
/// and probes, like `tokio::time::pause`. Killers made with
/// [`SqlKiller::with_clock`](crate::SqlKiller::with_clock) read it, and their
/// deadlines and probe schedule fire inside [`advance`](ManualClock::advance),
/// on the thread that calls it (a deadline's hooks are served on a thread
/// of their own, as on the real clock, which `advance` waits for before it
/// returns; waiters alone are woken on the calling thread).
///
/// ```
/// use std::time::Duration;
/// use sqlkiller::{KillError, ManualClock, SqlKiller};
///
/// let clock = ManualClock::new();
/// let killer = SqlKiller::with_clock(&clock);
/// killer.set_statement_timeout(Duration::from_secs(2));
/// clock.advance(Duration::from_secs(1));
/// assert!(killer.handle_signal().is_ok());
/// clock.advance(Duration::from_secs(1)); // the deadline fires here
/// assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    core: Arc<TimerCore>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> ManualClock {
        ManualClock {
            core: Arc::new(TimerCore::new()),
        }
    }

    /// Moves the clock forward by `by`, then fires every deadline and
    /// probe schedule that fell due, on this thread. The clock stops one
    /// nanosecond short of 2^64 ns (584 years): a deadline of
    /// `Duration::MAX` is no deadline, and the clock never reaches it.
    pub fn advance(&self, by: Duration) {
        let later = |now: u64| now.saturating_add(nanos(by)).min(LAST);
        let before = self
            .core
            .manual_now
            .fetch_update(AcqRel, Acquire, |now| Some(later(now)))
            .expect("the update always succeeds");
        self.core.fire(later(before), true);
    }

    /// The time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.core.manual_now.load(Acquire))
    }

    pub(crate) fn timer(&self) -> Timer {
        Timer::Manual(Arc::clone(&self.core))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

/// The process's monotonic clock, for what is measured and reported but
/// never decides anything (the kill drill's gaps between checkpoints).
/// Time enters the crate here, in this module, and nowhere else.
#[cfg(feature = "testing")]
pub(crate) fn monotonic_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// A deadline of a blocking wait (`KillEvent::wait_timeout`), on the real clock.
pub(crate) struct WaitDeadline(Option<std::time::Instant>);

impl WaitDeadline {
    pub(crate) fn after(timeout: Duration) -> WaitDeadline {
        WaitDeadline(std::time::Instant::now().checked_add(timeout))
    }

    pub(crate) const NONE: WaitDeadline = WaitDeadline(None);

    /// `None`: no deadline. `Some(ZERO)`: passed.
    pub(crate) fn left(&self) -> Option<Duration> {
        self.0
            .map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }
}

#[cfg(not(any(loom, shuttle)))]
mod real {
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use super::TimerCore;
    use crate::loom::lock;

    static EPOCH: OnceLock<Instant> = OnceLock::new();
    static CORE: OnceLock<Arc<TimerCore>> = OnceLock::new();

    pub(super) fn now() -> u64 {
        super::nanos(EPOCH.get_or_init(Instant::now).elapsed())
    }

    /// The process-wide timer, its thread started on first use.
    pub(super) fn core() -> &'static TimerCore {
        CORE.get_or_init(|| {
            let core = Arc::new(TimerCore::new());
            let runner = Arc::clone(&core);
            std::thread::Builder::new()
                .name("sqlkiller-timer".into())
                .spawn(move || run(&runner))
                .expect("sqlkiller: cannot start the timer thread");
            core
        })
    }

    /// The timer thread: sleeps until the earliest entry, fires what is due.
    fn run(core: &TimerCore) -> ! {
        loop {
            let mut queue = lock(&core.queue);
            let now = loop {
                let now = now();
                match queue.first_at() {
                    // Nothing armed: sleep until something is.
                    None => queue = core.earlier.wait(queue).unwrap_or_else(|p| p.into_inner()),
                    Some(first) if first <= now => break now,
                    Some(first) => {
                        let left = Duration::from_nanos(first - now);
                        queue = core
                            .earlier
                            .wait_timeout(queue, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            };
            drop(queue);
            core.fire(now, false);
        }
    }
}

/// loom and shuttle have no clock, and a process-wide timer thread cannot
/// outlive one of their executions: there, time is a [`ManualClock`], and a
/// model's "timer thread" is a thread that advances it.
#[cfg(any(loom, shuttle))]
mod real {
    use super::TimerCore;

    const UNDER_A_CHECKER: &str = "sqlkiller: the real clock is not available under loom or \
                                   shuttle; make the killer with a ManualClock";

    pub(super) fn now() -> u64 {
        panic!("{UNDER_A_CHECKER}")
    }

    pub(super) fn core() -> &'static TimerCore {
        panic!("{UNDER_A_CHECKER}")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Nobody;

    impl TimerClient for Nobody {
        fn on_timer(self: Arc<Self>, _now: u64) -> Option<Served> {
            None
        }
    }

    fn session() -> (Arc<dyn TimerClient>, Session) {
        let strong: Arc<dyn TimerClient> = Arc::new(Nobody);
        let weak = Arc::downgrade(&strong);
        (strong, weak)
    }

    fn queued(core: &TimerCore) -> Vec<u64> {
        lock(&core.queue)
            .entries
            .keys()
            .map(|&(at, _)| at)
            .collect()
    }

    #[test]
    fn a_session_has_one_entry_whatever_order_its_pushes_take() {
        let core = TimerCore::new();
        let record = QueueRecord::new();
        let (_strong, weak) = session();
        // The owner's later push reaches the lock after the timer's earlier one.
        core.push(10, weak.clone(), &record);
        core.push(20, weak.clone(), &record);
        assert_eq!(queued(&core), [10], "the earlier entry stays");
        // An earlier push replaces a later entry.
        core.push(5, weak.clone(), &record);
        assert_eq!(queued(&core), [5]);
        // Once popped, the entry is gone and a push queues a new one.
        assert!(core.pop_due(5).0.is_some());
        core.push(30, weak.clone(), &record);
        assert_eq!(queued(&core), [30]);
    }

    #[test]
    fn a_forgotten_session_leaves_the_queue_and_is_never_queued_again() {
        let core = TimerCore::new();
        let (record, other) = (QueueRecord::new(), QueueRecord::new());
        let (_strong, weak) = session();
        core.push(10, weak.clone(), &record);
        core.push(15, weak.clone(), &other);
        core.forget(&record);
        assert_eq!(
            queued(&core),
            [15],
            "only the other session's entry is left"
        );
        core.push(5, weak, &record);
        assert_eq!(queued(&core), [15], "a closed session is not queued again");
    }

    #[test]
    fn popping_says_whether_another_entry_is_due() {
        let core = TimerCore::new();
        let (a, b) = (QueueRecord::new(), QueueRecord::new());
        let (_strong, weak) = session();
        core.push(10, weak.clone(), &a);
        core.push(20, weak, &b);
        let (first, more) = core.pop_due(20);
        assert!(first.is_some() && more);
        let (second, more) = core.pop_due(20);
        assert!(second.is_some() && !more);
        assert!(core.pop_due(u64::MAX - 1).0.is_none());
    }
}
