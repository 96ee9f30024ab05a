//! The side table: what a kill publishes besides the state word, as plain data.
//!
//! One slot per side channel. Generation-local entries (reason, waiters,
//! hook) are valid only while the matching flag of the state word is set,
//! and a generation with one of those flags ends only under the side-table
//! lock (`state.rs`). This file runs no user code, touches no atomic and
//! takes no lock: the engine does all three, and drops user values only
//! after it has released the lock.

use std::task::Waker;

use crate::loom::thread;
use crate::{KillSignal, ProbeId, WaitOutcome};

pub(crate) type CancelHook = Box<dyn FnOnce() + Send>;
pub(crate) type FinishFn = Box<dyn FnMut() + Send>;
pub(crate) type Probe = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;
pub(crate) type SessionHook = std::sync::Arc<dyn Fn(KillSignal) + Send + Sync>;

/// How to wake one waiter.
pub(crate) enum Wake {
    /// Registered, nobody blocked yet (or the last wait timed out).
    Nobody,
    /// A thread blocked in `KillEvent::wait`.
    Thread(thread::Thread),
    /// A task polling the `KillEvent` future.
    Task(Waker),
}

/// One registered kill event. Entries whose `outcome` is `None` belong to
/// the current generation: the end of the statement completes them all.
pub(crate) struct Waiter {
    pub(crate) id: u64,
    /// A ticket: completes when the statement ends, not when it is killed.
    pub(crate) until_end: bool,
    pub(crate) outcome: Option<WaitOutcome>,
    pub(crate) wake: Wake,
}

/// Wake-ups collected under the lock, delivered after it is dropped. The
/// first one is kept inline: the usual single waiter costs no allocation.
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Wake>,
    rest: Vec<Wake>,
}

impl WakeList {
    pub(crate) fn push(&mut self, wake: Wake) {
        match wake {
            Wake::Nobody => {}
            wake if self.first.is_none() => self.first = Some(wake),
            wake => self.rest.push(wake),
        }
    }
}

impl IntoIterator for WakeList {
    type Item = Wake;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Wake>, std::vec::IntoIter<Wake>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// The finish function and whether a run of it is in progress.
#[derive(Default)]
pub(crate) struct FinishSlot {
    pub(crate) func: Option<FinishFn>,
    /// A run is in progress (the function is taken out of `func`).
    pub(crate) running: bool,
    /// Bumped by every set and clear: a run puts its function back only if
    /// nobody replaced or cleared it meanwhile.
    pub(crate) version: u64,
}

/// The liveness probe and its id.
#[derive(Default)]
pub(crate) struct ProbeSlot {
    pub(crate) probe: Option<Probe>,
    /// The id of `probe`; the last id handed out.
    pub(crate) id: u64,
}

impl ProbeSlot {
    /// Installs `probe` under a new id; returns the one it replaced.
    pub(crate) fn install(&mut self, probe: Probe) -> (ProbeId, Option<Probe>) {
        self.id += 1;
        (ProbeId::new(self.id), self.probe.replace(probe))
    }

    /// Whether probe `id` is the installed one.
    pub(crate) fn is(&self, id: ProbeId) -> bool {
        self.probe.is_some() && self.id == id.get()
    }
}

/// Data too big for the state word, behind the side-table lock.
#[derive(Default)]
pub(crate) struct SideTable {
    /// The winning kill's reason text; valid while `REASON` is set.
    pub(crate) reason: String,
    /// Registered kill events; pending ones are valid while `WAITERS` is set.
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) next_waiter_id: u64,
    /// The current statement's cancel hook; valid while `HOOK` is set.
    /// Hooks installed after a kill inside a kill-immune section are all
    /// owed: the first here, the rest in `owed_hooks`, run in order.
    pub(crate) hook: Option<CancelHook>,
    pub(crate) owed_hooks: Vec<CancelHook>,
    /// Hooks taken out of the table and running now; the statement's end
    /// waits for zero. Raised under the lock by whoever takes a hook out,
    /// lowered by that run's guard, which exists before any user code runs.
    pub(crate) hook_runners: u32,
    /// The owner is blocked until `hook_runners` is zero.
    pub(crate) owner_parked: bool,
    pub(crate) finish: FinishSlot,
    pub(crate) probe: ProbeSlot,
    /// The owner's task, when an `_async` owner operation waits for a kill
    /// to publish or for `hook_runners` to reach zero (the async twin of
    /// `owner_parked` and the `PARKED` flag).
    pub(crate) owner_waker: Option<Waker>,
    /// The session-wide cancel hook; valid while `SESSION_HOOK` is set.
    pub(crate) session_hook: Option<SessionHook>,
    /// The session kill's reason text; valid once the word has a session
    /// signal (never cleared after).
    pub(crate) session_reason: String,
    /// The generation whose kill last ran the session hook: the hook runs
    /// once per killed statement, however often the kill is served (a
    /// kill-immune section entered after it serves it again at its end).
    pub(crate) session_served: Option<u64>,
    /// Waiters for the session kill (`SqlKiller::session_killed`).
    pub(crate) session_waiters: Vec<(u64, Wake)>,
}

/// What the end of a statement took out of the table, to release after
/// the lock is dropped.
#[must_use]
#[derive(Default)]
pub(crate) struct Leftovers {
    pub(crate) wake: WakeList,
    pub(crate) hooks: Hooks,
}

impl Leftovers {
    /// Adds the wake-ups of every session-kill waiter.
    pub(crate) fn wake_session_waiters(&mut self, table: &mut SideTable) {
        for (_, wake) in table.session_waiters.drain(..) {
            self.wake.push(wake);
        }
    }
}

/// A statement's hooks taken out of the table, in the order they run:
/// the armed one, then those owed by a kill-immune section. Taking them
/// allocates nothing.
#[derive(Default)]
pub(crate) struct Hooks {
    /// The session-wide hook, run first.
    pub(crate) session: Option<CancelHook>,
    first: Option<CancelHook>,
    owed: Vec<CancelHook>,
}

impl Hooks {
    pub(crate) fn one(hook: CancelHook) -> Hooks {
        Hooks {
            session: None,
            first: Some(hook),
            owed: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.session.is_none() && self.first.is_none()
    }
}

impl IntoIterator for Hooks {
    type Item = CancelHook;
    type IntoIter = std::iter::Chain<
        std::iter::Chain<std::option::IntoIter<CancelHook>, std::option::IntoIter<CancelHook>>,
        std::vec::IntoIter<CancelHook>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.session.into_iter().chain(self.first).chain(self.owed)
    }
}

impl SideTable {
    /// Completes every pending waiter with `outcome`, collecting their
    /// wakers; a kill (`Killed`) leaves the tickets, which wait for the
    /// statement's end.
    pub(crate) fn complete_waiters(&mut self, outcome: WaitOutcome, wake: &mut WakeList) {
        let ending = outcome == WaitOutcome::Reset;
        for waiter in self
            .waiters
            .iter_mut()
            .filter(|w| w.outcome.is_none() && (ending || !w.until_end))
        {
            waiter.outcome = Some(outcome);
            wake.push(std::mem::replace(&mut waiter.wake, Wake::Nobody));
        }
    }

    /// Takes the statement's hooks out (the armed one, then the owed ones).
    pub(crate) fn take_hooks(&mut self) -> Hooks {
        Hooks {
            session: None,
            first: self.hook.take(),
            owed: std::mem::take(&mut self.owed_hooks),
        }
    }

    /// Keeps `hook` owed to the end of a kill-immune section, after any
    /// owed already: a list, so any number of installs is fine.
    pub(crate) fn owe_hook(&mut self, hook: CancelHook) {
        match self.hook {
            None => self.hook = Some(hook),
            Some(_) => self.owed_hooks.push(hook),
        }
    }

    /// Ends the statement's generation-local data: the reason is cleared,
    /// pending waiters complete with `Reset` (if `waiters`), the hooks are
    /// taken out un-run.
    pub(crate) fn end_generation(&mut self, waiters: bool) -> Leftovers {
        let mut leftovers = Leftovers::default();
        self.reason.clear();
        if waiters {
            self.complete_waiters(WaitOutcome::Reset, &mut leftovers.wake);
        }
        leftovers.hooks = self.take_hooks();
        leftovers
    }

    /// Registers a pending waiter; returns its id.
    pub(crate) fn next_waiter(&mut self) -> u64 {
        let id = self.next_waiter_id;
        self.next_waiter_id += 1;
        id
    }

    /// The index of waiter `id`, if it is still registered.
    pub(crate) fn waiter(&self, id: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }
}
