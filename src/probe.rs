//! The liveness probe: `handle_signal` asks it, at most once per interval, whether the client is still there.
//!
//! TiDB reads the clock on every `HandleSignal`. Here the checkpoint only
//! counts down an owner-local counter; when it reaches zero it reads the
//! clock, and adapts the count so that the clock is read about sixteen
//! times per interval whatever the checkpoint rate is.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::killer::Shared;
use crate::loom::atomic::Ordering::{AcqRel, Relaxed};
use crate::loom::{lock, thread_local, MutexGuard};
use crate::side::{table, SideTable};
use crate::state::State;
use crate::{KillSignal, SqlKiller};

pub(crate) type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// Default probe interval (TiDB's `checkConnectionAliveDur`).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Clock reads per interval the countdown aims at.
const CLOCK_READS_PER_INTERVAL: u32 = 16;
/// The most checkpoints between two clock reads.
const MAX_STRIDE: u32 = 1 << 16;

/// `probe_countdown` values below 2 send the checkpoint to `probe_due`.
const COUNTDOWN_RESTART: u32 = 0;
const COUNTDOWN_DUE: u32 = 1;

/// Names one installed liveness probe, so that a cleanup removes only its
/// own probe (see [`SqlKiller::clear_connection_alive_probe_if`]).
///
/// Unique per killer: every install gets a new id.
#[must_use = "keep the id to clear exactly this probe later"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(u64);

pub(crate) struct ProbeSlot {
    probe: Option<Probe>,
    /// The id of `probe`; the last id handed out.
    id: u64,
    interval: Duration,
    /// When the probe last ran, or when the timer was restarted.
    last_probe: Option<Instant>,
    last_clock: Option<Instant>,
    stride: u32,
}

impl Default for ProbeSlot {
    fn default() -> Self {
        ProbeSlot {
            probe: None,
            id: 0,
            interval: DEFAULT_PROBE_INTERVAL,
            last_probe: None,
            last_clock: None,
            stride: 1,
        }
    }
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
    /// `handle_signal` then asks it at most once per probe interval (default
    /// 1 s, see [`set_probe_interval`](SqlKiller::set_probe_interval)) and
    /// kills the statement with `QueryInterrupted` when it says `false` —
    /// through the same path as `send_kill_signal`, so waiters wake and the
    /// cancel hook runs. The first interval starts at the first checkpoint
    /// of each statement. The probe survives `reset`. Installing replaces
    /// any other probe.
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

    /// Sets how often `handle_signal` may run the probe (default 1 s).
    /// `Duration::ZERO` probes at every checkpoint and never reads the clock.
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
            slot.last_probe = None;
            slot.id += 1;
            let replaced = slot.probe.replace(probe);
            // Under the lock, so the flag and the slot never disagree for long.
            self.state.fetch_or(State::PROBE, AcqRel);
            (replaced, ProbeId(slot.id))
        };
        self.probe_countdown.store(COUNTDOWN_RESTART, Relaxed);
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

    /// Takes the probe out of the slot and clears `PROBE`, under the lock.
    fn remove_probe(&self, side: &mut MutexGuard<'_, Option<Box<SideTable>>>) -> Option<Probe> {
        let removed = table(side).probe.probe.take();
        self.state.fetch_and(!State::PROBE, AcqRel);
        removed
    }

    pub(crate) fn set_probe_interval(&self, interval: Duration) {
        {
            let mut side = lock(&self.side);
            let slot = &mut table(&mut side).probe;
            slot.interval = interval;
            slot.stride = 1;
            slot.last_clock = None;
        }
        self.probe_countdown.store(COUNTDOWN_RESTART, Relaxed);
    }

    pub(crate) fn check_connection_alive(&self) -> bool {
        let probe = table(&mut lock(&self.side)).probe.probe.clone();
        match probe {
            Some(probe) => self.run_probe(&probe),
            None => true,
        }
    }

    /// The checkpoint's probe step, off the fast path: counts down, and when
    /// due reads the clock and maybe probes. Returns the state to act on.
    pub(crate) fn poll_probe(&self, state: State) -> State {
        if !state.has(State::PROBE) || state.signal().is_some() {
            return state;
        }
        let countdown = self.probe_countdown.load(Relaxed);
        if countdown > COUNTDOWN_DUE {
            self.probe_countdown.store(countdown - 1, Relaxed);
            return state;
        }
        match self.probe_due(countdown == COUNTDOWN_RESTART) {
            Some(probe) => {
                self.run_probe(&probe);
                self.load()
            }
            None => state,
        }
    }

    /// The probe, if it should run now; re-arms the countdown.
    fn probe_due(&self, restart: bool) -> Option<Probe> {
        let mut side = lock(&self.side);
        let slot = &mut table(&mut side).probe;
        let probe = slot.probe.clone()?;
        if slot.interval.is_zero() {
            self.probe_countdown.store(COUNTDOWN_DUE, Relaxed);
            return Some(probe);
        }
        let now = Instant::now();
        let target = slot.interval / CLOCK_READS_PER_INTERVAL;
        if let Some(gap) = slot
            .last_clock
            .map(|last| now.saturating_duration_since(last))
        {
            if gap < target / 2 {
                slot.stride = (slot.stride * 2).min(MAX_STRIDE);
            } else if gap > target * 2 {
                slot.stride = (slot.stride / 2).max(1);
            }
        }
        slot.last_clock = Some(now);
        self.probe_countdown.store(slot.stride + 1, Relaxed);
        match slot.last_probe {
            Some(last) if !restart && now.saturating_duration_since(last) >= slot.interval => {
                slot.last_probe = Some(now);
                Some(probe)
            }
            Some(_) if !restart => None,
            _ => {
                slot.last_probe = Some(now);
                None
            }
        }
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

    /// `reset` restarts the probe timer: no probe in the first interval of
    /// the next statement (as TiDB clears `lastCheckTime`).
    pub(crate) fn reset_probe_timer(&self, ended: State) {
        if ended.has(State::PROBE) {
            self.probe_countdown.store(COUNTDOWN_RESTART, Relaxed);
        }
    }
}
