//! The side table: what a kill publishes besides the state word, and who serves it.
//!
//! Generation-local entries (reason, waiters, cancel hook) are valid only
//! while the matching flag of the state word is set, and a generation that
//! has one of those flags ends only under the side-table lock (see
//! `state.rs`). Nothing of the user's — hook, waker, finish function,
//! probe — runs or is dropped while the lock is held.

use std::cell::Cell;
use std::task::Waker;

use crate::event::WaitOutcome;
use crate::finish::FinishSlot;
use crate::loom::{lock, thread, thread_local, MutexGuard};
use crate::probe::ProbeSlot;
use crate::state::State;
use crate::{KillSignal, SqlKiller};

pub(crate) type CancelHook = Box<dyn FnOnce() + Send>;

/// How to wake one waiter.
pub(crate) enum Wake {
    /// Registered, nobody blocked yet (or the last wait timed out).
    Nobody,
    /// A thread blocked in `KillEvent::wait`.
    Thread(thread::Thread),
    /// A task polling the `KillEvent` future.
    Task(Waker),
}

impl Wake {
    pub(crate) fn wake(self) {
        match self {
            Wake::Nobody => {}
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

/// One registered kill event. Entries whose `outcome` is `None` belong to
/// the current generation: `reset` completes them all before it ends it.
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) outcome: Option<WaitOutcome>,
    pub(crate) wake: Wake,
}

/// Data too big for the state word, behind `SqlKiller::side`'s lock.
#[derive(Default)]
pub(crate) struct SideTable {
    /// The winning kill's reason text; valid while `REASON` is set.
    pub(crate) reason: String,
    /// Registered kill events; pending ones are valid while `WAITERS` is set.
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) next_waiter_id: u64,
    /// The current statement's cancel hook; valid while `HOOK` is set.
    pub(crate) hook: Option<CancelHook>,
    /// Hooks taken out of the table and running now; `reset` waits for zero.
    pub(crate) hook_runners: u32,
    pub(crate) finish: FinishSlot,
    pub(crate) probe: ProbeSlot,
}

impl SideTable {
    /// Completes every pending waiter with `outcome`, collecting their wakers.
    pub(crate) fn complete_waiters(&mut self, outcome: WaitOutcome, wake: &mut WakeList) {
        for waiter in self.waiters.iter_mut().filter(|w| w.outcome.is_none()) {
            waiter.outcome = Some(outcome);
            wake.push(std::mem::replace(&mut waiter.wake, Wake::Nobody));
        }
    }
}

/// Wake-ups collected under the lock, delivered after it is dropped. The
/// first one is kept inline: the usual single waiter costs no allocation.
#[derive(Default)]
pub(crate) struct WakeList {
    first: Option<Wake>,
    rest: Vec<Wake>,
}

impl WakeList {
    fn push(&mut self, wake: Wake) {
        match wake {
            Wake::Nobody => {}
            wake if self.first.is_none() => self.first = Some(wake),
            wake => self.rest.push(wake),
        }
    }

    pub(crate) fn wake_all(self) {
        for waker in self.first.into_iter().chain(self.rest) {
            waker.wake();
        }
    }
}

/// The table behind a locked guard, created on first use.
pub(crate) fn table<'a>(side: &'a mut MutexGuard<'_, Option<Box<SideTable>>>) -> &'a mut SideTable {
    side.get_or_insert_with(Default::default)
}

/// Restores the outer callback mark when dropped.
struct CallbackMark(usize);

impl Drop for CallbackMark {
    fn drop(&mut self) {
        IN_CALLBACK.with(|current| current.set(self.0));
    }
}

/// What `reset` took out of the side table, released after the lock is dropped.
#[must_use]
pub(crate) struct Leftovers {
    wake: WakeList,
    hook: Option<CancelHook>,
}

impl Leftovers {
    /// Wakes the old statement's waiters and drops its hook un-run.
    pub(crate) fn release(self) {
        self.wake.wake_all();
        drop(self.hook);
    }
}

thread_local! {
    /// The killer whose kill callbacks (cancel hook, waker) this thread is
    /// running (its address), or 0.
    // No `const { }` initializer: loom's `thread_local!` does not take one.
    #[allow(clippy::missing_const_for_thread_local)]
    static IN_CALLBACK: Cell<usize> = Cell::new(0);
}

impl SqlKiller {
    /// This killer's identity for the thread-local reentrancy checks.
    pub(crate) fn address(&self) -> usize {
        self as *const SqlKiller as usize
    }

    /// Whether this thread is inside a cancel hook or a waker that one of
    /// this killer's kills is running.
    pub(crate) fn in_own_callback(&self) -> bool {
        IN_CALLBACK.with(Cell::get) == self.address()
    }

    /// Marks this thread as running this killer's callbacks until the mark
    /// is dropped (also while unwinding); marks nest.
    fn callback_mark(&self) -> CallbackMark {
        CallbackMark(IN_CALLBACK.with(|current| current.replace(self.address())))
    }

    /// Side effects of a won kill, run in `Killing` after the reason is
    /// written. `won` is the state our CAS installed: its flags say whom to
    /// serve. Inside a kill-immune section they wait for the guard (I9).
    pub(crate) fn publish_side_effects(&self, signal: KillSignal, won: State) {
        if !won.has(State::IMMUNE) {
            self.serve_kill(signal, won);
        }
    }

    /// Wakes the current statement's waiters with `Killed(signal)` and runs
    /// its cancel hook, for the flags set in `flags`. No flag, no lock: a
    /// kill nobody waits for touches nothing but the state word.
    pub(crate) fn serve_kill(&self, signal: KillSignal, flags: State) {
        if !flags.has(State::WAITERS | State::HOOK) {
            return;
        }
        let mut wake = WakeList::default();
        let hook = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if flags.has(State::WAITERS) {
                table.complete_waiters(WaitOutcome::Killed(signal), &mut wake);
            }
            let hook = if flags.has(State::HOOK) {
                table.hook.take()
            } else {
                None
            };
            if hook.is_some() {
                table.hook_runners += 1;
            }
            hook
        };
        // Wakers are user code too (an executor may poll inline): mark them.
        let mark = self.callback_mark();
        wake.wake_all();
        drop(mark);
        if let Some(hook) = hook {
            self.run_hook(hook);
        }
    }

    /// Runs a hook taken out of the table (the caller counted it in
    /// `hook_runners` under the lock); uncounts it even if it panics.
    pub(crate) fn run_hook(&self, hook: CancelHook) {
        struct Done<'a>(&'a SqlKiller);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                table(&mut lock(&self.0.side)).hook_runners -= 1;
            }
        }
        let _done = Done(self);
        let _mark = self.callback_mark(); // dropped first: the count goes last
        hook();
    }

    /// Whether `reset` must wait before ending the generation: a hook taken
    /// out of the table is still running. Called with the lock held.
    pub(crate) fn hooks_running(&self, side: &MutexGuard<'_, Option<Box<SideTable>>>) -> bool {
        let running = side.as_ref().is_some_and(|table| table.hook_runners > 0);
        assert!(
            !(running && self.in_own_callback()),
            "sqlkiller: reset called from inside this killer's own cancel hook; the hook runs \
             while its statement is being killed, and reset waits for it to return"
        );
        running
    }

    /// Clears generation `ended`'s data; called by `reset` under the lock,
    /// right after its CAS succeeded.
    pub(crate) fn end_generation(
        &self,
        side: &mut MutexGuard<'_, Option<Box<SideTable>>>,
        ended: State,
    ) -> Leftovers {
        let mut leftovers = Leftovers {
            wake: WakeList::default(),
            hook: None,
        };
        if let Some(table) = side.as_mut() {
            table.reason.clear();
            if ended.has(State::WAITERS) {
                table.complete_waiters(WaitOutcome::Reset, &mut leftovers.wake);
            }
            leftovers.hook = table.hook.take();
        }
        leftovers
    }
}
