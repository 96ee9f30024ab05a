//! Time in a session: statement deadlines, the liveness probe and its
//! schedule, and the timer's visits (`clock.rs` owns the clock and queue).

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{table, PublishOnDrop, Shared, SideGuard};
use crate::callback::{self, Kind};
use crate::clock::{nanos, Served, TimerClient, NEVER};
use crate::log;
use crate::loom::atomic::Ordering::*;
use crate::loom::{lock, thread, Mutex};
use crate::state::{KillTransition, Snapshot};
use crate::table::Probe;
use crate::{KillSignal, ProbeId, StatementId};

impl Shared {
    /// Now, on this killer's clock.
    pub(super) fn now(&self) -> u64 {
        self.timer.now()
    }

    pub(crate) fn set_max_execution_time(self: &Arc<Self>, limit: Option<Duration>) {
        let limit = limit.map_or(0, nanos);
        self.max_exec.store(limit, Relaxed);
    }

    pub(crate) fn max_execution_time(&self) -> Option<Duration> {
        match self.max_exec.load(Relaxed) {
            0 => None,
            // Stored saturated: 2^64 ns or more is "never" (see the setter).
            NEVER => Some(Duration::MAX),
            limit => Some(Duration::from_nanos(limit)),
        }
    }

    pub(crate) fn set_statement_timeout(self: &Arc<Self>, timeout: Duration) {
        let at = self.now().saturating_add(nanos(timeout));
        self.arm_deadline(self.state.snapshot().generation(), at);
    }

    /// The session closed: its entry leaves the timer's queue now, so the
    /// queue holds no reference to it (not even a weak one) until a
    /// deadline it will never need.
    pub(super) fn leave_timer(&self) {
        self.timer.forget(&self.timer_entry);
    }

    /// Called after the CAS that ended `ended`: arms the new statement's
    /// deadline (or leaves the old one to fire `Stale`) and starts its
    /// first probe interval. One owner-local load when the session has no
    /// `max_execution_time` and no probe.
    pub(super) fn arm_statement(self: &Arc<Self>, generation: u64, has_probe: bool) {
        let limit = self.max_exec.load(Relaxed);
        if limit == 0 && !has_probe {
            return; // nothing to arm
        }
        if limit != 0 {
            let at = self.now().saturating_add(limit);
            self.arm_deadline(generation, at);
        }
        // Without a limit nothing is armed: a deadline the last statement
        // had (a statement timeout) may still fire, as a kill of that
        // statement, which has ended: `Stale`, no effect.
        if has_probe {
            self.restart_probe_interval(generation);
        }
    }

    /// Arms statement `generation`'s deadline at `at` (`NEVER`: none).
    /// Owner only, while that statement is current.
    fn arm_deadline(self: &Arc<Self>, generation: u64, at: u64) {
        // `at` before `gen`: a timer that reads this `gen` reads this `at`
        // or a later statement's (see `clock.rs`).
        self.deadline_at.store(at, Relaxed);
        self.deadline_gen.store(generation, Release);
        self.schedule(at);
    }

    /// Arms statement `generation`'s next probe at `at`. Owner only.
    fn arm_probe(self: &Arc<Self>, generation: u64, at: u64) {
        self.probe_at.store(at, Relaxed);
        self.probe_gen.store(generation, Release);
        self.schedule(at);
    }

    /// Makes sure the timer looks at this session no later than `at`.
    fn schedule(self: &Arc<Self>, at: u64) {
        if at == NEVER {
            return;
        }
        // An RMW, ordered with the timer's `swap` (`clock.rs`).
        // The timer first: if its thread cannot start, this panics here,
        // before the schedule says a visit is queued.
        self.timer.start();
        if self.timer_sched.fetch_min(at, AcqRel) > at {
            let session: Weak<dyn TimerClient> = Arc::downgrade(self) as Weak<Shared>;
            self.timer.push(at, session, &self.timer_entry);
        }
    }

    pub(crate) fn set_connection_alive_probe(self: &Arc<Self>, probe: Probe) -> ProbeId {
        let (replaced, id) = {
            let mut side = lock(&self.side);
            let (id, replaced) = table(&mut side).probe.install(probe);
            // Under the lock, so the flag and the slot never disagree for long.
            self.state.set_probe();
            (replaced, id)
        };
        self.restart_probe_interval(self.state.snapshot().generation());
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
            if !table(&mut side).probe.is(id) {
                return false;
            }
            self.remove_probe(&mut side)
        };
        drop(removed);
        true
    }

    /// Takes the probe out of the slot and clears its flags, under the lock.
    fn remove_probe(&self, side: &mut SideGuard<'_>) -> Option<Probe> {
        let removed = table(side).probe.probe.take();
        self.state.remove_probe();
        removed
    }

    pub(crate) fn set_probe_interval(self: &Arc<Self>, interval: Duration) {
        self.probe_interval.store(nanos(interval), Relaxed);
        let state = self.state.snapshot();
        if state.has_probe() {
            self.restart_probe_interval(state.generation());
        }
    }

    /// Starts a probe interval for the statement of `state`: with interval
    /// zero the probe is due at once (and stays due); otherwise the timer
    /// marks it due one interval from now.
    fn restart_probe_interval(self: &Arc<Self>, generation: u64) {
        let interval = self.probe_interval.load(Relaxed);
        if interval == 0 {
            self.state.set_probe_due();
        } else {
            self.state.clear_probe_due();
            let at = self.now().saturating_add(interval);
            self.arm_probe(generation, at);
        }
    }

    pub(crate) fn check_connection_alive(&self) -> bool {
        let probe = table(&mut lock(&self.side)).probe.probe.clone();
        match probe {
            Some(probe) => self.run_probe(&probe),
            None => true,
        }
    }

    /// The checkpoint's probe step (owner, probe due): starts the next
    /// interval, runs the probe, returns the state to act on.
    #[cold]
    pub(super) fn run_due_probe(self: &Arc<Self>, state: Snapshot) -> Snapshot {
        if state.signal().is_some() {
            return state; // killed already: report that, probe later
        }
        self.restart_probe_interval(state.generation());
        let probe = table(&mut lock(&self.side)).probe.probe.clone();
        if let Some(probe) = probe {
            self.run_probe(&probe);
        }
        self.state.snapshot()
    }

    /// Runs `probe` inside a `Probe` frame, outside any lock, and kills the
    /// statement it probed if the connection is dead. A probe that calls
    /// back into `handle_signal` is not run again from there.
    fn run_probe(&self, probe: &Probe) -> bool {
        if callback::probing(self.id) {
            return true;
        }
        let statement = self.statement();
        let alive = {
            let _frame = callback::enter(self.id, Kind::Probe);
            probe()
        };
        if !alive {
            // Targeted: a probe racing `reset` never kills the next statement.
            let _ = self.kill(Some(statement), KillSignal::QueryInterrupted, "");
        }
        alive
    }
}

impl Shared {
    /// A deadline fell due: kills statement `id` (targeted: `Stale` if it
    /// has ended). The kill lands here, on the timer's thread. If the
    /// statement has a cancel hook, the kill is served (waiters woken, the
    /// hook run) on a thread of its own (returned), so a slow or blocking
    /// hook of one session never delays another session's deadline; the
    /// statement stays `Killing` until then, as for any kill, so `reset`
    /// still waits for it; a panic there is contained. Waiters alone are
    /// woken here (wakers are cheap); if no thread can be had, the kill is
    /// served here too.
    fn fire_deadline(self: &Arc<Self>, id: StatementId) -> Option<Served> {
        let signal = KillSignal::MaxExecTimeExceeded;
        let won = match self
            .state
            .transition_to_killing(Some(id.generation), signal, false)
        {
            KillTransition::Won(won) => won,
            _ => return None,
        };
        let published = PublishOnDrop(Arc::clone(self));
        self.listing_killed();
        callback::contained(|| log::kill_initiated(self.conn_id(), signal, ""));
        if won.is_immune() || !won.has_subscribers() {
            return None; // nothing to serve now: published as `published` drops
        }
        if !won.has_hook() {
            // Waiters and the session's hook only: a waker is meant to be
            // cheap and never to block (`Waker::wake`'s contract), and so
            // is a session hook (its contract), so they are served here,
            // with no thread to start (a server whose every statement can
            // time out does not start a thread per timeout).
            serve_published(published, signal, won);
            return None;
        }
        // The guard goes to the serving thread; if no thread can be had,
        // it comes back and the kill is served here.
        let handoff = Arc::new(Mutex::new(Some(published)));
        let theirs = Arc::clone(&handoff);
        let spawned = thread::Builder::new()
            .name("sqlkiller-deadline".into())
            .spawn(move || serve_deadline(&theirs, signal, won));
        match spawned {
            Ok(serving) => Some(serving),
            Err(_) => {
                serve_deadline(&handoff, signal, won);
                None
            }
        }
    }
}

/// Serves a deadline's kill from the guard in `handoff`, if nobody has
/// yet, containing any panic; the guard then publishes the kill.
fn serve_deadline(
    handoff: &Mutex<Option<PublishOnDrop<Arc<Shared>>>>,
    signal: KillSignal,
    won: Snapshot,
) {
    let published = lock(handoff).take();
    if let Some(published) = published {
        serve_published(published, signal, won);
    }
}

/// Serves a deadline's kill, containing any panic; dropping the guard
/// then publishes it.
fn serve_published(published: PublishOnDrop<Arc<Shared>>, signal: KillSignal, won: Snapshot) {
    callback::contained(|| published.0.serve_kill(signal, won));
    // Publishes; may drop the last reference to the session, and with it
    // user values: contained.
    callback::drop_contained(published);
}

impl TimerClient for Shared {
    /// The timer's visit at `now`: fires a due deadline, marks a due probe,
    /// and reschedules for what is left.
    fn on_timer(self: Arc<Self>, now: u64) -> Option<Served> {
        self.timer_sched.swap(NEVER, AcqRel);
        let generation = self.deadline_gen.load(Acquire);
        let at = self.deadline_at.load(Relaxed);
        let mut next = NEVER;
        let mut serving = None;
        if at <= now {
            let id = StatementId {
                killer: self.id,
                generation,
            };
            serving = self.fire_deadline(id);
        } else {
            next = at;
        }
        let generation = self.probe_gen.load(Acquire);
        let at = self.probe_at.load(Relaxed);
        if at <= now {
            self.state.mark_probe_due(generation);
        } else {
            next = next.min(at);
        }
        self.schedule(next);
        serving
    }
}
