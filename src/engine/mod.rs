//! The engine: the one block a session's owner and handles share, and the only code that acts on it.
//!
//! The public types (`SqlKiller`, `KillHandle`, the events, the guard) are
//! thin: each method is one call into here. The engine decides every
//! transition through [`StateCell`](crate::state::StateCell), keeps the
//! side channels' data in the [side table](crate::table), runs user code
//! inside [callback frames](crate::callback), and meets the timer through
//! [`TimerClient`](crate::clock::TimerClient).
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | the block; kills; checkpoints; reads |
//! | `reset.rs` | the end of a statement, the owner's drop, and the owner's waits |
//! | `serve.rs` | serving a kill: waiters, hooks, kill-immune sections |
//! | `events.rs` | kill events: registration, polling, blocking waits |
//! | `timing.rs` | deadlines, the probe and its schedule |
//! | `session.rs` | session kills, the session's hook, tickets |
//! | `listing.rs` | the process list: sessions by connection id, lookups, listings |
//! | `finish.rs` | the finish function |

mod events;
mod finish;
mod listing;
mod reset;
mod serve;
mod session;
mod timing;

use std::sync::Arc;

use crate::callback;
use crate::clock::{nanos, QueueRecord, Timer, NEVER};
use crate::log;
use crate::loom::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::*};
use crate::loom::{lock, Condvar, Mutex, MutexGuard};
use crate::state::{KillTransition, Published, Snapshot, StateCell};
use crate::table::SideTable;
use crate::{KillError, KillOutcome, KillPhase, KillSignal, StatementId, DEFAULT_PROBE_INTERVAL};

pub(crate) use events::{Register, Registration};
pub(crate) use listing::{ListCore, Listing, Row};
pub(crate) use reset::Waiting;
pub(crate) use session::SessionWait;

/// Everything the owner and the handles share, in one allocation.
pub(crate) struct Shared {
    /// The state word (`state.rs`).
    state: StateCell,
    /// This killer's identity, carried by every [`StatementId`] it hands
    /// out and by every callback frame it enters.
    id: u64,
    /// The connection id (TiDB `ConnID`): an atomic, never a plain field (TiDB #55467).
    conn_id: AtomicU64,
    in_write_result_set: AtomicBool,
    /// Generation-local data too big for the word (reason text, waiters,
    /// hooks) and session data (finish function, probe). Allocated on
    /// first use.
    side: Mutex<Option<Box<SideTable>>>,
    /// Signalled, under `side`'s lock, when something the owner or
    /// `clear_finish_func` may block on is over: a kill published (the
    /// owner had parked), the last running hook returned, a finish run ended.
    progress: Condvar,
    /// This session's clock and timer (`clock.rs`).
    timer: Timer,
    /// The current statement's deadline and its generation (`timing.rs`):
    /// written by the owner, `at` then `gen`; read by the timer.
    deadline_at: AtomicU64,
    deadline_gen: AtomicU64,
    /// The current statement's next probe, the same way.
    probe_at: AtomicU64,
    probe_gen: AtomicU64,
    /// When the timer will next look at this session (`NEVER`: it will not).
    timer_sched: AtomicU64,
    /// This session's one entry in the timer's queue (`clock.rs`).
    timer_entry: QueueRecord,
    /// Owner-local: `max_execution_time` in nanoseconds, 0 for none.
    max_exec: AtomicU64,
    /// The probe interval in nanoseconds (0: at every checkpoint).
    probe_interval: AtomicU64,
    /// Owner-local: nesting depth of kill-immune guards (16 bits keep the
    /// block within its 256-byte budget; deeper nesting panics).
    immune_depth: AtomicU16,
    /// The process list this session is registered in, if any.
    listing: Option<Box<Listing>>,
}

// Owner-local state. `immune_depth` and `max_exec` belong to the
// owner: only `SqlKiller`'s methods write them. They are atomics (Relaxed)
// only so that `SqlKiller` can be `Sync` and a `KillImmuneGuard` `Send`.
// When the owner is an async task that moves to another thread between two
// operations, the executor's hand-off (a queue with Release/Acquire, as
// every executor has) orders the two operations, so Relaxed still reads
// the last value the owner wrote.

/// A process-wide counter of killers, for [`Shared::id`]. A plain std
/// atomic, outside the loom facade on purpose: it only hands out distinct
/// numbers and orders nothing.
static NEXT_KILLER_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

type SideGuard<'a> = MutexGuard<'a, Option<Box<SideTable>>>;

/// The table behind a locked guard, created on first use.
fn table<'a>(side: &'a mut SideGuard<'_>) -> &'a mut SideTable {
    side.get_or_insert_with(Default::default)
}

impl Shared {
    pub(crate) fn new(timer: Timer) -> Arc<Shared> {
        Shared::with_listing(timer, None)
    }

    /// A session of a process list: its generations come from the list,
    /// and it starts in the idle phase.
    fn with_listing(timer: Timer, listing: Option<(Box<Listing>, u64)>) -> Arc<Shared> {
        let (listing, state) = match listing {
            Some((listing, generation)) => (Some(listing), StateCell::new_idle(generation)),
            None => (None, StateCell::new()),
        };
        Arc::new(Shared {
            listing,
            state,
            id: NEXT_KILLER_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            conn_id: AtomicU64::new(0),
            in_write_result_set: AtomicBool::new(false),
            side: Mutex::new(None),
            progress: Condvar::new(),
            timer,
            deadline_at: AtomicU64::new(NEVER),
            deadline_gen: AtomicU64::new(0),
            probe_at: AtomicU64::new(NEVER),
            probe_gen: AtomicU64::new(0),
            timer_sched: AtomicU64::new(NEVER),
            timer_entry: QueueRecord::new(),
            max_exec: AtomicU64::new(0),
            probe_interval: AtomicU64::new(nanos(DEFAULT_PROBE_INTERVAL)),
            immune_depth: AtomicU16::new(0),
        })
    }

    /// Stops the current statement (`target: None`) or statement `target`
    /// only, with `signal` and `reason` (empty: none).
    pub(crate) fn kill(
        &self,
        target: Option<StatementId>,
        signal: KillSignal,
        reason: &str,
    ) -> KillOutcome {
        self.kill_and_locate(target, signal, reason).0
    }

    /// [`kill`](Self::kill), also returning the generation of the statement
    /// the kill met (`Sent`, `AlreadyKilled`), for a ticket.
    pub(crate) fn kill_and_locate(
        &self,
        target: Option<StatementId>,
        signal: KillSignal,
        reason: &str,
    ) -> (KillOutcome, Option<u64>) {
        if target.is_some_and(|id| id.killer != self.id) {
            return (KillOutcome::Stale, None); // another session's statement
        }
        // A reason must be in place before anyone can see the signal, and a
        // losing kill must not write one: so hold the side-table lock across
        // the CAS and write the text only if it won (I4). Kills without a
        // reason take no lock at all.
        let mut side = (!reason.is_empty()).then(|| lock(&self.side));
        let generation = target.map(|id| id.generation);
        let won = match self
            .state
            .transition_to_killing(generation, signal, side.is_some())
        {
            KillTransition::Won(won) => won,
            KillTransition::AlreadyKilled(winner, running) => {
                return (KillOutcome::AlreadyKilled(winner), running)
            }
            KillTransition::Stale => return (KillOutcome::Stale, None),
            KillTransition::Idle => return (KillOutcome::Idle, None),
        };
        // We own `Killing(g, signal)`: from here on `reset` waits for us, and
        // the guard moves the state to `Killed` even if a side effect panics.
        let _published = PublishOnDrop(self);
        if let Some(side) = side.as_mut() {
            let table = table(side);
            table.reason.clear();
            table.reason.push_str(reason);
        }
        drop(side);
        self.listing_killed();
        // A log subscriber is user code: its panic must not skip the serving.
        callback::contained(|| log::kill_initiated(self.conn_id(), signal, reason));
        // Inside a kill-immune section the waiters and hook wait for the
        // section's end (I9); otherwise this kill serves them.
        if !won.is_immune() {
            self.serve_kill(signal, won);
        }
        (KillOutcome::Sent, Some(won.generation()))
    }

    /// The id of the statement current in `state`.
    fn statement_id(&self, state: Snapshot) -> StatementId {
        StatementId {
            killer: self.id,
            generation: state.generation(),
        }
    }

    /// This killer's statement number `generation`.
    pub(crate) fn statement_at(&self, generation: u64) -> StatementId {
        StatementId {
            killer: self.id,
            generation,
        }
    }

    /// Whether `id` names the statement current in `state` (of this killer).
    fn is_current(&self, id: StatementId, state: Snapshot) -> bool {
        id.killer == self.id && id.generation == state.generation()
    }

    pub(crate) fn statement(&self) -> StatementId {
        self.statement_id(self.state.snapshot())
    }

    pub(crate) fn kill_signal(&self) -> Option<KillSignal> {
        self.state.snapshot().signal()
    }

    pub(crate) fn phase(&self) -> (StatementId, KillPhase) {
        let state = self.state.snapshot();
        (self.statement_id(state), state.phase())
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state.snapshot().is_between()
    }

    pub(crate) fn session_signal(&self) -> Option<KillSignal> {
        self.state.snapshot().session_signal()
    }

    pub(crate) fn is_kill_immune(&self) -> bool {
        self.state.snapshot().is_immune()
    }

    /// The owner's checkpoint.
    #[inline(always)]
    #[cfg_attr(feature = "testing", track_caller)]
    pub(crate) fn handle_signal(self: &Arc<Self>) -> Result<(), KillError> {
        #[cfg(feature = "testing")]
        let _drill = crate::drill::checkpoint(self.id, std::panic::Location::caller());
        let state = self.state.load_for_check();
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
    fn handle_signal_slow(self: &Arc<Self>, state: Snapshot) -> Result<(), KillError> {
        self.state.acquire();
        let state = if state.probe_due() {
            self.run_due_probe(state)
        } else {
            state
        };
        if state.signal().is_none() || state.is_immune() {
            return Ok(());
        }
        if state.is_owed() {
            // The first check after a kill-immune section delivers what a
            // kill inside it deferred (the hook may panic, into our caller).
            self.deliver_owed();
        }
        self.error_for(state).map_or(Ok(()), Err)
    }

    /// A worker's checkpoint: the signal of the current statement, unless
    /// inside a kill-immune section; no probe, no deferred delivery.
    #[inline(always)]
    #[cfg_attr(feature = "testing", track_caller)]
    pub(crate) fn check(&self) -> Result<(), KillError> {
        #[cfg(feature = "testing")]
        let _drill = crate::drill::checkpoint(self.id, std::panic::Location::caller());
        let state = self.state.load_for_check();
        if state.is_unkilled() {
            return Ok(());
        }
        std::hint::cold_path();
        if state.is_immune() {
            return Ok(());
        }
        self.state.acquire();
        self.error_for(state).map_or(Ok(()), Err)
    }

    /// The error for the kill in `state`, reading its reason consistently
    /// (I4); `None` if the statement ended before the reason could be read
    /// and the new one is not killed.
    fn error_for(&self, mut state: Snapshot) -> Option<KillError> {
        loop {
            let signal = state.signal()?;
            if !state.has_reason() {
                return Some(KillError::new(signal, self.conn_id(), ""));
            }
            let side = lock(&self.side);
            // The reason belongs to this generation only while the word still
            // says so; a generation with `REASON` ends only under this lock.
            let now = self.state.snapshot();
            if now.generation() == state.generation() {
                let reason = side.as_ref().map_or("", |table| table.reason.as_str());
                return Some(KillError::new(signal, self.conn_id(), reason));
            }
            drop(side);
            state = now;
        }
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

    /// `Debug` for the owner and the handles: the state, not the internals.
    pub(crate) fn debug(&self, name: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.snapshot();
        f.debug_struct(name)
            .field("statement", &self.statement_id(state))
            .field("phase", &state.phase())
            .field("conn_id", &self.conn_id())
            .field("kill_immune", &state.is_immune())
            .field("idle", &state.is_between())
            .field("session_killed", &state.session_signal())
            .field("closed", &state.is_closed())
            .finish()
    }

    /// Whether this thread is serving one of this killer's kills (see the
    /// policy table in `callback.rs`).
    fn serving_own_kill(&self) -> bool {
        callback::serving_kill(self.id)
    }
}

/// Moves `Killing` to `Killed` when dropped, also while unwinding (I6),
/// and wakes an owner that blocked waiting for it. Holds the block by
/// reference, or by `Arc` when the serving moves to another thread.
struct PublishOnDrop<S: std::ops::Deref<Target = Shared>>(S);

impl<S: std::ops::Deref<Target = Shared>> Drop for PublishOnDrop<S> {
    fn drop(&mut self) {
        if self.0.state.transition_to_killed() == Published::WakeOwner {
            self.0.wake_parked_owner();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// The block the owner shares with its handles, allocated once per
    /// session: at most 256 bytes on x86_64 (the state word alone takes a
    /// 128-byte padded line).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_shared_block_fits_the_size_budget() {
        let size = std::mem::size_of::<super::Shared>();
        assert!(size <= 256, "{size}");
    }
}
