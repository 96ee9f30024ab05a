//! The liveness probe: `handle_signal` asks it, once per interval, whether the client is still there.
//!
//! TiDB reads the clock on every `HandleSignal`. Here the checkpoint reads
//! no clock: the timer (`time.rs`) marks the probe due in the state word
//! when the interval has passed, as PostgreSQL's timeout handlers set a
//! flag for `CHECK_FOR_INTERRUPTS`, and the owner's next `handle_signal`
//! runs it. The first interval of a statement starts at its `reset`
//! (TiDB clears `lastCheckTime` there); each run starts the next interval.
//! A dead client is therefore found at the first checkpoint after one
//! interval, whatever the checkpoint rate was before.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use crate::killer::Shared;
use crate::loom::atomic::Ordering::{AcqRel, Relaxed};
use crate::loom::{lock, thread_local, MutexGuard};
use crate::side::{table, SideTable};
use crate::state::State;
use crate::time::nanos;
use crate::{KillSignal, SqlKiller};

pub(crate) type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// Default probe interval (TiDB's `checkConnectionAliveDur`).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Names one installed liveness probe, so that a cleanup removes only its
/// own probe (see [`SqlKiller::clear_connection_alive_probe_if`]).
///
/// Unique per killer: every install gets a new id.
#[must_use = "keep the id to clear exactly this probe later"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(u64);

#[derive(Default)]
pub(crate) struct ProbeSlot {
    probe: Option<Probe>,
    /// The id of `probe`; the last id handed out.
    id: u64,
}

thread_local! {
    /// The killer whose probe this thread is running (its address), or 0.
    // No `const { }` initializer: loom's `thread_local!` does not take one.
    #[allow(clippy::missing_const_for_thread_local)]
    static PROBING: Cell<usize> = Cell::new(0);
}

impl SqlKiller {
    /// Installs the liveness probe (TiDB `IsConnectionAlive`): a function
    /// that returns `false` once the client connection is gone.
    ///
    /// `handle_signal` then asks it once per probe interval (default 1 s,
    /// see [`set_probe_interval`](SqlKiller::set_probe_interval)): at the
    /// first checkpoint after the interval has passed, whatever the
    /// checkpoint rate was before; and kills the statement with
    /// `QueryInterrupted` when it says `false` — through the same path as
    /// `send_kill_signal`, so waiters wake and the cancel hook runs. The
    /// first interval of each statement starts at its `reset` (here, at the
    /// install). The probe survives `reset`. Installing replaces any other
    /// probe. The checkpoint stays one load and a mask test: the timer marks
    /// the probe due.
    ///
    /// Returns the probe's id, for
    /// [`clear_connection_alive_probe_if`](SqlKiller::clear_connection_alive_probe_if).
    ///
    /// **Panics.** A probe that panics panics the `handle_signal` or
    /// `check_connection_alive` that ran it; the probe stays installed and
    /// the killer usable (the next interval runs it again).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{KillError, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.set_probe_interval(Duration::ZERO); // probe at every checkpoint
    /// killer.set_connection_alive_probe(|| false); // the client hung up
    /// assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    /// ```
    pub fn set_connection_alive_probe(
        &self,
        probe: impl Fn() -> bool + Send + Sync + 'static,
    ) -> ProbeId {
        self.shared.set_connection_alive_probe(probe)
    }

    /// Removes the liveness probe, whichever it is; `handle_signal` is back
    /// to one load. A cleanup that may run after someone else installed a
    /// newer probe should use
    /// [`clear_connection_alive_probe_if`](SqlKiller::clear_connection_alive_probe_if).
    pub fn clear_connection_alive_probe(&self) {
        self.shared.clear_connection_alive_probe()
    }

    /// Removes the liveness probe only if it is still probe `id`, and says
    /// whether it did: a stale cleanup never removes a newer probe (TiDB
    /// clears its alive-callback with a compare-and-swap for this reason).
    ///
    /// ```
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// let old = killer.set_connection_alive_probe(|| true);
    /// let new = killer.set_connection_alive_probe(|| true); // a reconnect replaced it
    /// assert!(!killer.clear_connection_alive_probe_if(old)); // the old cleanup: no effect
    /// assert!(killer.clear_connection_alive_probe_if(new));
    /// assert!(!killer.clear_connection_alive_probe_if(new)); // already gone
    /// ```
    pub fn clear_connection_alive_probe_if(&self, id: ProbeId) -> bool {
        self.shared.clear_connection_alive_probe_if(id)
    }

    /// Sets how often `handle_signal` runs the probe (default 1 s), starting
    /// a new interval now. `Duration::ZERO` probes at every checkpoint and
    /// never reads the clock.
    pub fn set_probe_interval(&self, interval: Duration) {
        self.shared.set_probe_interval(interval)
    }

    /// Runs the probe now, whatever the interval (TiDB
    /// `CheckConnectionAlive`); if it says the connection is dead, kills the
    /// statement that was current when it started with `QueryInterrupted`.
    /// Returns what the probe said (`true` without a probe).
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert!(killer.check_connection_alive());
    /// killer.set_connection_alive_probe(|| false);
    /// assert!(!killer.check_connection_alive());
    /// assert_eq!(killer.kill_signal(), Some(KillSignal::QueryInterrupted));
    /// ```
    pub fn check_connection_alive(&self) -> bool {
        self.shared.check_connection_alive()
    }
}

impl Shared {
    pub(crate) fn set_connection_alive_probe(
        &self,
        probe: impl Fn() -> bool + Send + Sync + 'static,
    ) -> ProbeId {
        let probe: Probe = Arc::new(probe);
        let (replaced, id) = {
            let mut side = lock(&self.side);
            let slot = &mut table(&mut side).probe;
            slot.id += 1;
            let replaced = slot.probe.replace(probe);
            // Under the lock, so the flag and the slot never disagree for long.
            self.state.fetch_or(State::PROBE, AcqRel);
            (replaced, ProbeId(slot.id))
        };
        self.timed.store(true, Relaxed);
        self.restart_probe_interval(self.load());
        drop(replaced);
        id
    }

    pub(crate) fn clear_connection_alive_probe(&self) {
        let removed = {
            let mut side = lock(&self.side);
            self.remove_probe(&mut side)
        };
        drop(removed);
    }

    pub(crate) fn clear_connection_alive_probe_if(&self, id: ProbeId) -> bool {
        let removed = {
            let mut side = lock(&self.side);
            let slot = &table(&mut side).probe;
            if slot.probe.is_none() || slot.id != id.0 {
                return false;
            }
            self.remove_probe(&mut side)
        };
        drop(removed);
        true
    }

    /// Takes the probe out of the slot and clears `PROBE` and `PROBE_DUE`,
    /// under the lock. A schedule still in the timer finds no `PROBE`.
    fn remove_probe(&self, side: &mut MutexGuard<'_, Option<Box<SideTable>>>) -> Option<Probe> {
        let removed = table(side).probe.probe.take();
        self.state
            .fetch_and(!(State::PROBE | State::PROBE_DUE), AcqRel);
        removed
    }

    pub(crate) fn set_probe_interval(&self, interval: Duration) {
        self.probe_interval.store(nanos(interval), Relaxed);
        let state = self.load();
        if state.has(State::PROBE) {
            self.restart_probe_interval(state);
        }
    }

    /// Starts a probe interval for the statement of `state`: with interval
    /// zero the probe is due at once (and stays due); otherwise the timer
    /// marks it due one interval from now.
    pub(crate) fn restart_probe_interval(&self, state: State) {
        let interval = self.probe_interval.load(Relaxed);
        if interval == 0 {
            self.state.fetch_or(State::PROBE_DUE, AcqRel);
        } else {
            self.state.fetch_and(!State::PROBE_DUE, AcqRel);
            let at = self.now().saturating_add(interval);
            self.arm_probe(state.generation(), at);
        }
    }

    pub(crate) fn check_connection_alive(&self) -> bool {
        let probe = table(&mut lock(&self.side)).probe.probe.clone();
        match probe {
            Some(probe) => self.run_probe(&probe),
            None => true,
        }
    }

    /// The checkpoint's probe step (owner, `PROBE_DUE` set): starts the next
    /// interval, runs the probe, returns the state to act on.
    #[cold]
    pub(crate) fn run_due_probe(&self, state: State) -> State {
        if state.signal().is_some() {
            return state; // killed already: report that, probe later
        }
        self.restart_probe_interval(state);
        let probe = table(&mut lock(&self.side)).probe.probe.clone();
        if let Some(probe) = probe {
            self.run_probe(&probe);
        }
        self.load()
    }

    /// Runs `probe` outside any lock and kills the statement it probed if
    /// the connection is dead. A probe that calls back into `handle_signal`
    /// is not run again from there.
    fn run_probe(&self, probe: &Probe) -> bool {
        if PROBING.with(Cell::get) == self.address() {
            return true;
        }
        struct Done(usize);
        impl Drop for Done {
            fn drop(&mut self) {
                PROBING.with(|probing| probing.set(self.0));
            }
        }
        let statement = self.statement();
        let alive = {
            let _done = Done(PROBING.with(|probing| probing.replace(self.address())));
            probe()
        };
        if !alive {
            // Targeted: a probe racing `reset` never kills the next statement.
            let _ = self.kill_statement(statement, KillSignal::QueryInterrupted);
        }
        alive
    }
}
