//! The side table: what a kill publishes besides the state word, and who serves it.
//!
//! Generation-local entries (reason, waiters, cancel hook) are valid only
//! while the matching flag of the state word is set, and a generation that
//! has one of those flags ends only under the side-table lock (see
//! `state.rs`). Nothing of the user's — hook, waker, finish function,
//! probe — runs or is dropped while the lock is held.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::task::Waker;

use crate::event::WaitOutcome;
use crate::finish::FinishSlot;
use crate::killer::Shared;
use crate::loom::{lock, thread, thread_local, MutexGuard};
use crate::probe::ProbeSlot;
use crate::state::State;
use crate::KillSignal;

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
    /// Delivers the wake-up. A task's waker is user code and may panic.
    pub(crate) fn wake(self) {
        match self {
            Wake::Nobody => {}
            Wake::Thread(thread) => thread.unpark(),
            Wake::Task(waker) => waker.wake(),
        }
    }
}

/// Runs several callbacks in a row so that a panic in one never skips the
/// others: each runs under `catch_unwind`, the first panic is kept and
/// resumed by [`FirstPanic::resume`] once all have run; later panics are
/// dropped. The caller resumes only after its own bookkeeping is complete,
/// so the panic reaches the thread that ran the callbacks and leaves the
/// killer consistent.
#[derive(Default)]
#[must_use = "a kept panic must be resumed"]
pub(crate) struct FirstPanic(Option<Box<dyn Any + Send>>);

impl FirstPanic {
    /// Runs `callback`, keeping its panic if it is the first.
    pub(crate) fn run(&mut self, callback: impl FnOnce()) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(callback)) {
            if self.0.is_none() {
                self.0 = Some(panic);
            }
        }
    }

    /// Re-raises the first panic kept, if any.
    pub(crate) fn resume(self) {
        if let Some(panic) = self.0 {
            panic::resume_unwind(panic);
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
    /// Raised under the lock by whoever takes a hook out, and lowered by
    /// that hook's [`HookRun`] guard, which exists before any user code runs.
    pub(crate) hook_runners: u32,
    /// The owner is blocked until `hook_runners` is zero; the last
    /// [`HookRun`] to end notifies `SqlKiller::progress`.
    pub(crate) owner_parked: bool,
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

    /// Delivers every wake-up, even if one of them panics (the first panic
    /// is kept in `panics`).
    pub(crate) fn wake_all(self, panics: &mut FirstPanic) {
        for waker in self.first.into_iter().chain(self.rest) {
            panics.run(|| waker.wake());
        }
    }
}

/// The table behind a locked guard, created on first use.
pub(crate) fn table<'a>(side: &'a mut MutexGuard<'_, Option<Box<SideTable>>>) -> &'a mut SideTable {
    side.get_or_insert_with(Default::default)
}

/// Restores the outer callback mark when dropped.
pub(crate) struct CallbackMark(usize);

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
    /// Wakes the old statement's waiters and drops its hook un-run; a panic
    /// of a waker or of the hook's drop is kept in `panics`, and the rest
    /// is still released.
    pub(crate) fn release(self, panics: &mut FirstPanic) {
        self.wake.wake_all(panics);
        let hook = self.hook;
        panics.run(move || drop(hook));
    }
}

/// A cancel hook taken out of the table, counted in `hook_runners`.
///
/// Created under the lock, in the same critical section that raised the
/// count, before any user code runs; dropping it (after the hook ran, or
/// while unwinding from anything) lowers the count and wakes a parked
/// owner. This is what keeps a panicking waker or hook from wedging
/// `reset` and `kill_immune`.
pub(crate) struct HookRun<'a> {
    killer: &'a Shared,
    hook: Option<CancelHook>,
}

impl<'a> HookRun<'a> {
    /// Takes `hook` out to run it: raises `hook_runners` in `table`, which
    /// the caller holds locked.
    pub(crate) fn counted(killer: &'a Shared, table: &mut SideTable, hook: CancelHook) -> Self {
        table.hook_runners += 1;
        HookRun {
            killer,
            hook: Some(hook),
        }
    }

    /// Runs the hook, marked as this killer's callback; lowers the count
    /// when it returns or unwinds.
    pub(crate) fn run(mut self) {
        let hook = self.hook.take().expect("a hook runs once");
        let _mark = self.killer.callback_mark(); // dropped before `self`: the count goes last
        hook();
    }
}

impl Drop for HookRun<'_> {
    fn drop(&mut self) {
        let unrun = self.hook.take();
        {
            let mut side = lock(&self.killer.side);
            let table = table(&mut side);
            table.hook_runners -= 1;
            if table.hook_runners == 0 && std::mem::take(&mut table.owner_parked) {
                self.killer.progress.notify_all();
            }
        }
        drop(unrun);
    }
}

thread_local! {
    /// The killer whose kill callbacks (cancel hook, waker) this thread is
    /// running (its address), or 0.
    // No `const { }` initializer: loom's `thread_local!` does not take one.
    #[allow(clippy::missing_const_for_thread_local)]
    static IN_CALLBACK: Cell<usize> = Cell::new(0);
}

impl Shared {
    /// This killer's identity for the thread-local reentrancy checks.
    pub(crate) fn address(&self) -> usize {
        self as *const Shared as usize
    }

    /// Whether this thread is inside a cancel hook or a waker that one of
    /// this killer's kills is running.
    pub(crate) fn in_own_callback(&self) -> bool {
        IN_CALLBACK.with(Cell::get) == self.address()
    }

    /// Marks this thread as running this killer's callbacks until the mark
    /// is dropped (also while unwinding); marks nest.
    pub(crate) fn callback_mark(&self) -> CallbackMark {
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
    ///
    /// Every wake-up is delivered and the hook runs even if a waker panics;
    /// the first panic is then resumed, after all of them, so it reaches
    /// the thread that served the kill.
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
            // Counted and guarded before the lock is dropped and before any
            // user code runs.
            hook.map(|hook| HookRun::counted(self, table, hook))
        };
        let mut panics = FirstPanic::default();
        {
            // Wakers are user code too (an executor may poll inline): mark them.
            let _mark = self.callback_mark();
            wake.wake_all(&mut panics);
        }
        if let Some(hook) = hook {
            panics.run(|| hook.run());
        }
        panics.resume();
    }

    /// Whether `reset` must wait before ending the generation: a hook taken
    /// out of the table is still running. Called with the lock held.
    pub(crate) fn hooks_running(&self, side: &MutexGuard<'_, Option<Box<SideTable>>>) -> bool {
        side.as_ref().is_some_and(|table| table.hook_runners > 0)
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
