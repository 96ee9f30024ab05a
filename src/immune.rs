//! Kill-immune sections: past the point of no return, a kill must not be reported.

use crate::engine::Shared;
use crate::SqlKiller;

/// Held by the owner across a section that must not be interrupted, such
/// as a COMMIT that has reached storage (MySQL `kill_immunizer`, PostgreSQL
/// `HOLD_INTERRUPTS`). Created by [`SqlKiller::kill_immune`].
///
/// While any guard is held, `handle_signal` returns `Ok` (a due liveness
/// probe still runs; a kill it makes is deferred like any other), and a kill's
/// cancel hook and kill events wait. Kills still win and are remembered:
/// after the last guard ends, a kill of the statement that is still current
/// is reported by the next `handle_signal`. A `reset` inside the section
/// discards it (its waiters see `Reset`, its hook is dropped un-run).
///
/// # Where the deferred side effects run
///
/// Dropping the guard runs no user code, so a guard dropped while unwinding
/// (the COMMIT panicked) can never panic a second time and abort the
/// process. The waiters and hook that a kill inside the section deferred
/// are delivered, on the owner's thread, by whichever comes first:
///
/// - [`release`](KillImmuneGuard::release), the explicit end of the section;
/// - the next [`handle_signal`](SqlKiller::handle_signal) (which then
///   reports the kill), [`reset`](SqlKiller::reset) (before it ends the
///   statement) or [`kill_immune`](SqlKiller::kill_immune).
///
/// A panic of the deferred hook or of a waker reaches the caller of that
/// operation, after every other deferred wake-up was delivered (`reset`
/// still ends the statement first).
///
/// `Send`: an async session may hold it across the COMMIT's `.await`, and
/// the owner task may resume on another thread. The section's depth is
/// owner-local state: only the owner's operations touch it, and the
/// executor's hand-off orders them (see "One owner at a time" on
/// [`SqlKiller`]).
///
/// ```
/// fn assert_send<T: Send>(_: &T) {}
/// let killer = sqlkiller::SqlKiller::new();
/// let guard = killer.kill_immune();
/// assert_send(&guard);
/// ```
#[must_use = "the section is kill-immune only while the guard is held"]
pub struct KillImmuneGuard<'a> {
    killer: &'a Shared,
}

impl SqlKiller {
    /// Enters a kill-immune section (owner only); sections nest.
    ///
    /// If a kill won just before and is still running its side effects,
    /// waits for them (blocking, not spinning, once a short backoff is
    /// over), so that nothing of a kill runs inside the section. Called
    /// from inside this killer's own kill (its hook or waker, anywhere down
    /// this thread's stack), it enters at once: the kill it would wait for
    /// is the one this thread is running. Side
    /// effects still owed by an earlier section are delivered first.
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// let commit = killer.kill_immune();
    /// let _ = killer.send_kill_signal(KillSignal::QueryInterrupted); // arrives mid-COMMIT
    /// assert!(killer.handle_signal().is_ok()); // the COMMIT completes
    /// commit.release(); // the section ends; the kill's hook and waiters are served
    /// assert!(killer.handle_signal().is_err()); // reported after the section
    /// ```
    pub fn kill_immune(&self) -> KillImmuneGuard<'_> {
        self.shared.enter_section();
        KillImmuneGuard {
            killer: &self.shared,
        }
    }

    /// [`kill_immune`](SqlKiller::kill_immune) for an async owner: where
    /// entering would block the thread (a kill that won just before is
    /// still running its hook on another thread), it awaits instead. The
    /// section has begun as soon as this is first polled: dropping the
    /// future before it completes ends it again.
    pub async fn kill_immune_async(&self) -> KillImmuneGuard<'_> {
        let entered = self.shared.begin_section();
        let guard = KillImmuneGuard {
            killer: &self.shared,
        };
        if let Some(prev) = entered {
            std::future::poll_fn(|cx| self.shared.poll_section_entered(prev, cx.waker())).await;
        }
        guard
    }

    /// Whether the owner is inside a kill-immune section.
    pub fn is_kill_immune(&self) -> bool {
        self.shared.is_kill_immune()
    }
}

impl KillImmuneGuard<'_> {
    /// Ends the section now and, if this was the last guard, serves at once
    /// what a kill inside it deferred (the waiters wake, the hook runs on
    /// this thread; a panic of theirs reaches this caller).
    ///
    /// Dropping the guard ends the section too, but leaves that delivery to
    /// the owner's next operation (see [`KillImmuneGuard`]).
    pub fn release(self) {
        let killer = self.killer;
        drop(self);
        killer.after_release();
    }
}

impl Drop for KillImmuneGuard<'_> {
    /// Leaves the section. Runs no user code (see the type's docs).
    fn drop(&mut self) {
        self.killer.leave_section();
    }
}

impl std::fmt::Debug for KillImmuneGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillImmuneGuard")
            .field("depth", &self.killer.immune_depth())
            .finish()
    }
}
