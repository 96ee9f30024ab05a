//! Serving a kill: waking its waiters, running its cancel hooks, and the
//! kill-immune sections that defer both.

use std::task::{Poll, Waker};

use super::{table, Shared};
use crate::callback::{self, FirstPanic, Kind};
use crate::loom::atomic::Ordering::Relaxed;
use crate::loom::lock;
use crate::state::{Owed, Snapshot};
use crate::table::{CancelHook, Hooks, SessionHook, SideTable, Wake, WakeList};
use crate::{HookStatus, KillSignal, StatementId, WaitOutcome};

/// Delivers one wake-up. A task's waker is user code and may panic.
pub(super) fn wake(wake: Wake) {
    match wake {
        Wake::Nobody => {}
        Wake::Thread(thread) => thread.unpark(),
        Wake::Task(waker) => waker.wake(),
    }
}

impl Shared {
    /// Wakes the current statement's waiters with `Killed(signal)` and runs
    /// its cancel hooks, for the flags set in `flags`, inside a `Kill`
    /// frame of this killer. No flag, no lock: a kill nobody waits for
    /// touches nothing but the state word.
    ///
    /// Every wake-up is delivered and every hook runs even if a waker
    /// panics; the first panic is then resumed, after all of them, so it
    /// reaches the thread that served the kill.
    pub(super) fn serve_kill(&self, signal: KillSignal, flags: Snapshot) {
        if !flags.has_subscribers() {
            return;
        }
        let _kill = callback::enter(self.id, Kind::Kill);
        let mut wakes = WakeList::default();
        let hooks = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if flags.has_waiters() {
                table.complete_waiters(WaitOutcome::Killed(signal), &mut wakes);
            }
            let mut hooks = if flags.has_hook() {
                table.take_hooks()
            } else {
                Hooks::default()
            };
            if flags.has_session_hook() && table.session_served != Some(flags.generation()) {
                table.session_served = Some(flags.generation());
                hooks.session = table
                    .session_hook
                    .clone()
                    .map(|hook| -> CancelHook { Box::new(move || hook(signal)) });
            }
            // Counted and guarded before the lock is dropped and before any
            // user code runs.
            (!hooks.is_empty()).then(|| HookRun::counted(self, table, hooks))
        };
        let mut panics = FirstPanic::default();
        for waker in wakes {
            // Wakers are user code too (an executor may poll inline); a
            // waker must not block (for a deadline it runs on the timer).
            let _frame = callback::enter(self.id, Kind::Waker);
            panics.run(|| wake(waker));
        }
        if let Some(run) = hooks {
            panics.run(|| run.run());
        }
        panics.resume();
    }

    /// Installs the cancel hook of the current statement (`target: None`)
    /// or of statement `target` only.
    pub(crate) fn install_hook(&self, target: Option<StatementId>, hook: CancelHook) -> HookStatus {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        // An RMW under the lock (`StateCell::arm_hook`): the hook is either
        // in the table for a later kill, or ours to run. The generation is
        // compared with the word it returns, so a stale install cannot land
        // on the next statement.
        let prev = self.state.arm_hook();
        // (The idle phase runs no statement: a hook for it would only be
        // dropped at the next start.)
        if prev.is_closed()
            || prev.is_between()
            || target.is_some_and(|id| !self.is_current(id, prev))
        {
            drop(side);
            drop(hook);
            return HookStatus::Stale;
        }
        match prev.signal() {
            None => {
                let replaced = table.hook.replace(hook);
                drop(side);
                drop(replaced);
                HookStatus::Armed
            }
            Some(_) if prev.is_immune() => {
                // Owed when the section ends, after any owed already.
                table.owe_hook(hook);
                HookStatus::Armed
            }
            Some(_) => {
                // Counted and guarded before the lock is dropped, so `reset`
                // waits for it and a panic lowers the count.
                let run = HookRun::counted(self, table, Hooks::one(hook));
                drop(side);
                run.run();
                HookStatus::Ran
            }
        }
    }

    /// Installs (`Some`) or removes the session-wide cancel hook. A kill
    /// of the current statement whose CAS came before and so did not see
    /// it runs it here, at once, on this thread.
    pub(crate) fn set_session_hook(&self, hook: Option<SessionHook>) -> HookStatus {
        let mut side = lock(&self.side);
        let table = table(&mut side);
        let Some(hook) = hook else {
            self.state.disarm_session_hook();
            let old = table.session_hook.take();
            drop(side);
            drop(old);
            return HookStatus::Stale;
        };
        let old = table.session_hook.replace(hook.clone());
        // An RMW under the lock, as for a statement's hook: a later kill's
        // CAS sees `SESSION_HOOK`, an earlier one is served here.
        let prev = self.state.arm_session_hook();
        if prev.is_closed() {
            self.state.disarm_session_hook();
            table.session_hook = None;
            drop(side);
            drop(old);
            return HookStatus::Stale;
        }
        match prev.signal() {
            // Killed, and the kill has not run a session hook (its CAS came
            // first and saw none, or it has not been served yet): run the
            // new one here, once. Inside a kill-immune section it is owed.
            Some(signal)
                if !prev.is_immune() && table.session_served != Some(prev.generation()) =>
            {
                table.session_served = Some(prev.generation());
                let run = HookRun::counted(self, table, Hooks::one(Box::new(move || hook(signal))));
                drop(side);
                drop(old);
                run.run();
                HookStatus::Ran
            }
            _ => {
                drop(side);
                drop(old);
                HookStatus::Armed
            }
        }
    }

    /// Enters a kill-immune section (owner); sections nest.
    pub(crate) fn enter_section(&self) {
        if let Some(prev) = self.begin_section() {
            if prev.is_killing() {
                self.wait_while_killing(prev);
            }
            if prev.has_hook() {
                self.wait_for_hook_runners();
            }
        }
    }

    /// Enters a kill-immune section without waiting: returns the word the
    /// outermost entry found if a kill that won before may still be
    /// publishing, for the caller to wait for (so nothing of it runs inside
    /// the section) -- unless this thread is serving it.
    pub(crate) fn begin_section(&self) -> Option<Snapshot> {
        if self.immune_depth.load(Relaxed) == 0 {
            // What an earlier section deferred is served before this one
            // begins (a panic from it leaves us outside any section).
            self.deliver_owed();
        }
        // An RMW, although only the owner counts: owner operations called
        // from two threads at once (a misuse `Sync` cannot rule out) then
        // still pair every enter with one leave and the count never wraps;
        // every thread that sets `IMMUNE` clears it after, so it is clear
        // once every guard is gone. (Sections that overlap on two threads
        // may run without `IMMUNE` meanwhile: see `SqlKiller`'s docs.)
        let depth = self.immune_depth.fetch_add(1, Relaxed);
        if depth == u16::MAX {
            self.immune_depth.fetch_sub(1, Relaxed);
            panic!("kill-immune sections nested more than {} deep", u16::MAX);
        }
        if depth != 0 {
            return None;
        }
        let prev = self.state.enter_section();
        (!self.serving_own_kill() && (prev.is_killing() || prev.has_hook())).then_some(prev)
    }

    /// The async form of the wait in [`enter_section`](Self::enter_section).
    pub(crate) fn poll_section_entered(&self, prev: Snapshot, waker: &Waker) -> Poll<()> {
        if prev.is_killing() && self.poll_while_killing(prev, waker).is_pending() {
            return Poll::Pending;
        }
        if prev.has_hook() {
            return self.poll_hook_runners(waker);
        }
        Poll::Ready(())
    }

    /// Leaves a kill-immune section (a guard's drop). Runs no user code:
    /// what a kill inside the section deferred becomes owed to the owner's
    /// next operation.
    pub(crate) fn leave_section(&self) {
        if self.immune_depth.fetch_sub(1, Relaxed) == 1 {
            self.state.leave_section();
        }
    }

    /// After a guard's explicit `release`: serves what the section owed if
    /// it was the last guard.
    pub(crate) fn after_release(&self) {
        if self.immune_depth.load(Relaxed) == 0 {
            self.deliver_owed();
        }
    }

    pub(crate) fn immune_depth(&self) -> u32 {
        u32::from(self.immune_depth.load(Relaxed))
    }

    /// Serves the waiters and hooks that a kill inside a kill-immune
    /// section deferred, if the section has ended and they are still owed
    /// (owner only). One RMW claims them, so they are served once.
    pub(super) fn deliver_owed(&self) {
        if let Owed::Serve(signal, flags) = self.state.claim_owed() {
            self.serve_kill(signal, flags);
        }
    }
}

/// Cancel hooks taken out of the table, counted in `hook_runners`.
///
/// Created under the lock, in the same critical section that raised the
/// count, before any user code runs; dropping it (after the hooks ran, or
/// while unwinding from anything) lowers the count and wakes a parked
/// owner. This is what keeps a panicking waker or hook from wedging
/// `reset` and `kill_immune`.
struct HookRun<'a> {
    killer: &'a Shared,
    hooks: Option<Hooks>,
}

impl<'a> HookRun<'a> {
    /// Takes `hooks` out to run them: raises `hook_runners` in `table`,
    /// which the caller holds locked.
    fn counted(killer: &'a Shared, table: &mut SideTable, hooks: Hooks) -> Self {
        table.hook_runners += 1;
        HookRun {
            killer,
            hooks: Some(hooks),
        }
    }

    /// Runs the hooks in order inside a `Hook` frame, every one even if an
    /// earlier one panics (the first panic is resumed); the count is
    /// lowered when they return or unwind.
    fn run(mut self) {
        let hooks = self.hooks.take().unwrap_or_default();
        let _frame = callback::enter(self.killer.id, Kind::Hook); // dropped before `self`
        let mut panics = FirstPanic::default();
        for hook in hooks {
            panics.run(hook);
        }
        panics.resume();
    }
}

impl Drop for HookRun<'_> {
    fn drop(&mut self) {
        let unrun = self.hooks.take();
        let waker = {
            let mut side = lock(&self.killer.side);
            let table = table(&mut side);
            table.hook_runners -= 1;
            if table.hook_runners == 0 && std::mem::take(&mut table.owner_parked) {
                self.killer.progress.notify_all();
                table.owner_waker.take()
            } else {
                None
            }
        };
        callback::drop_contained(unrun);
        if let Some(waker) = waker {
            // The owner's task, awaiting an `_async` owner operation.
            callback::contained(|| waker.wake());
        }
    }
}
