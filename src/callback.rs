//! The one answer to "is this thread inside one of this killer's callbacks?", and the runner that keeps a callback's panic.
//!
//! Every path that runs user code which may call back into a killer and
//! wait enters a [`Frame`] first: a kill serving its side effects (any
//! kill, the owner's own included: the probe's kill inside
//! `handle_signal`, the owner's `send_kill_signal`), a cancel hook, a
//! kill's waker, the liveness probe, the finish function. (User values
//! dropped by the crate, and the wakers a `reset` wakes, run outside any
//! frame: nothing of theirs is waited for.) The frames form a
//! per-thread stack of (killer id, [`Kind`]), and a question is answered
//! by searching the *whole* stack, not its top: killer A's hook may kill
//! killer B, whose hook calls back into A; A is still being served further
//! down the same stack, and waiting for it there would wait for ever.
//!
//! # The policy, in one table
//!
//! | entry point, on killer K | when this thread's stack holds | does |
//! | --- | --- | --- |
//! | `reset` | a `Kill`, `Hook` or `Waker` frame of K, and `reset` would wait (K's kill still publishing, or a hook of K's statement running) | panics with [`WAIT_FROM_OWN_CALLBACK`] |
//! | the owner's drop | the same | does not wait: closes the session as it is (kills `Stale`, waiters `Reset`, the hook dropped); the kill this thread runs completes normally |
//! | `kill_immune` | a `Kill`, `Hook` or `Waker` frame of K | enters the section without waiting for the kill |
//! | the probe (`handle_signal`, `check_connection_alive`) | a `Probe` frame of K | does not run the probe again; reports the connection alive |
//! | `finish_result_set` | a `Finish` frame of K | returns `FinishError::ReentrantFinish` |
//! | `clear_finish_func` | a `Finish` frame of K | clears the function without waiting, returns `FinishError::ReentrantClear` |
//!
//! Anything else may be called from any callback, on any killer. A killer
//! is named by its id (`StatementId` carries the same one).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};

use crate::loom::thread_local;

/// The panic message of a `reset` that would wait for a kill that this
/// thread is serving. (`kill_immune` does not wait there; the owner's drop
/// closes the session without waiting.)
pub(crate) const WAIT_FROM_OWN_CALLBACK: &str =
    "sqlkiller: reset called from inside this killer's own cancel hook or waker; those run \
     while their statement is being killed, and reset waits for that kill to finish";

/// What kind of user code a frame runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A won kill serving its waiters and hook (user code runs inside).
    Kill,
    /// A cancel hook.
    Hook,
    /// A kill event's waker.
    Waker,
    /// The liveness probe.
    Probe,
    /// The finish function.
    Finish,
}

/// Frames kept where they are always reachable; deeper ones spill over.
const NEAR: usize = 32;
/// An unused slot (a `const` item so that the array can repeat it: each
/// slot is its own `Cell`).
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Cell<(u64, Kind)> = Cell::new((0, Kind::Kill));

// No `const { }` initializers: loom's `thread_local!` does not take them.
thread_local! {
    /// How many frames this thread is in.
    #[allow(clippy::missing_const_for_thread_local)]
    static DEPTH: Cell<usize> = Cell::new(0);
    /// The innermost `NEAR` frames' outer part: frame `i` is slot `i`.
    /// Plain `Cell`s, with no destructor, so they stay readable while the
    /// thread's other thread-locals are destroyed at its exit: a killer
    /// used from such a destructor (a session kept in a thread-local) still
    /// finds its frames, and its rule still holds.
    #[allow(clippy::missing_const_for_thread_local)]
    static FRAMES: [Cell<(u64, Kind)>; NEAR] = [EMPTY; NEAR];
    /// Frames from `NEAR` on (a chain of killers whose hooks kill each
    /// other). A `Vec` has a destructor: from another thread-local's
    /// destructor, after this one's, the deep frames are not seen.
    #[allow(clippy::missing_const_for_thread_local)]
    static DEEPER: RefCell<Vec<(u64, Kind)>> = RefCell::new(Vec::new());
}

/// One entry on this thread's stack; leaving it (also while unwinding)
/// pops it and everything a callback inside it left behind.
#[must_use = "the frame is on the stack only while it is held"]
pub(crate) struct Frame {
    depth: usize,
}

impl Drop for Frame {
    fn drop(&mut self) {
        let depth = self.depth;
        DEPTH.with(|now| now.set(now.get().min(depth)));
        // Deep frames above the new depth stay in `DEEPER` until the next
        // deep `enter` overwrites them; `inside` never reads past the depth.
    }
}

/// Enters a frame of killer `killer`, until the frame is dropped.
pub(crate) fn enter(killer: u64, kind: Kind) -> Frame {
    let depth = DEPTH.with(|now| now.replace(now.get() + 1));
    if depth < NEAR {
        FRAMES.with(|frames| frames[depth].set((killer, kind)));
    } else {
        let _ = DEEPER.try_with(|deeper| {
            let mut deeper = deeper.borrow_mut();
            deeper.truncate(depth - NEAR); // what an unseen pop left
            deeper.push((killer, kind));
        });
    }
    Frame { depth }
}

fn inside(killer: u64, kinds: &[Kind]) -> bool {
    let is = |&(id, kind): &(u64, Kind)| id == killer && kinds.contains(&kind);
    let depth = DEPTH.with(Cell::get);
    let near = depth.min(NEAR);
    FRAMES.with(|frames| frames[..near].iter().any(|f| is(&f.get())))
        || (depth > near
            && DEEPER
                .try_with(|deeper| deeper.borrow().iter().take(depth - near).any(is))
                .unwrap_or(false))
}

/// Whether this thread is serving a kill of `killer` anywhere down its
/// stack: the kill itself, its hook or a waker. A wait for that kill would
/// wait for this very thread.
pub(crate) fn serving_kill(killer: u64) -> bool {
    inside(killer, &[Kind::Kill, Kind::Hook, Kind::Waker])
}

/// Whether this thread is running `killer`'s liveness probe.
pub(crate) fn probing(killer: u64) -> bool {
    inside(killer, &[Kind::Probe])
}

/// Whether this thread is running `killer`'s finish function.
pub(crate) fn finishing(killer: u64) -> bool {
    inside(killer, &[Kind::Finish])
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
    /// Runs `callback`, keeping its panic if it is the first; a later
    /// panic's payload is dropped with [`drop_payload`], so a payload whose
    /// own `Drop` panics cannot skip the callbacks still to run.
    pub(crate) fn run(&mut self, callback: impl FnOnce()) {
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(callback)) {
            match self.0 {
                None => self.0 = Some(panic),
                Some(_) => drop_payload(panic),
            }
        }
    }

    /// Re-raises the first panic kept, if any.
    pub(crate) fn resume(mut self) {
        if let Some(panic) = self.0.take() {
            panic::resume_unwind(panic);
        }
    }
}

impl Drop for FirstPanic {
    /// A kept panic that is not resumed is contained: dropping a
    /// `FirstPanic` is how a destructor (the owner's drop) discards what its
    /// callbacks raised, and how a runner that is itself unwinding lets go
    /// of it, never where its payload's `Drop` could abort.
    fn drop(&mut self) {
        if let Some(panic) = self.0.take() {
            drop_payload(panic);
        }
    }
}

/// Runs `f` (user code the caller must not be unwound by, e.g. a `tracing`
/// subscriber writing a log line), containing its panic.
pub(crate) fn contained(f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        drop_payload(payload);
    }
}

/// Drops a user value where its `Drop` cannot unwind into the caller: a
/// panic there is caught and contained.
pub(crate) fn drop_contained<T>(value: T) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
        drop_payload(payload);
    }
}

/// Drops a caught panic's payload where its own drop cannot unwind into
/// the crate: a payload whose `Drop` panics is caught again, and that
/// second payload is leaked rather than dropped.
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_whole_stack_is_searched_and_frames_pop_in_order() {
        assert!(!serving_kill(1));
        let a = enter(1, Kind::Hook);
        let b = enter(2, Kind::Kill);
        let _p = enter(2, Kind::Probe);
        assert!(serving_kill(1), "killer 1 is below killer 2");
        assert!(serving_kill(2) && probing(2) && !probing(1) && !finishing(2));
        drop(b); // pops the probe frame above it too
        assert!(!serving_kill(2) && !probing(2) && serving_kill(1));
        drop(a);
        assert!(!serving_kill(1));
    }

    #[test]
    fn frames_beyond_the_near_slots_are_found_and_popped() {
        let deep = 2 * NEAR as u64;
        let mut frames: Vec<Frame> = (0..deep).map(|k| enter(100 + k, Kind::Hook)).collect();
        assert!(serving_kill(100) && serving_kill(100 + deep - 1));
        assert!(!serving_kill(100 + deep));
        // Leave the five innermost frames, then enter another one there.
        for _ in 0..5 {
            drop(frames.pop());
        }
        assert!(!serving_kill(100 + deep - 1), "a left frame is still seen");
        let again = enter(7, Kind::Probe);
        assert!(probing(7), "a frame entered deep after a pop is seen");
        assert!(!serving_kill(100 + deep - 2));
        drop(again);
        // Outermost first, as a `Vec` drops: the stack empties at the first.
        drop(frames);
        assert!(!serving_kill(100) && !serving_kill(100 + NEAR as u64 + 1));
    }

    #[test]
    fn a_frame_is_left_while_unwinding() {
        let caught = std::panic::catch_unwind(|| {
            let _f = enter(7, Kind::Finish);
            panic!("inside");
        });
        assert!(caught.is_err());
        assert!(!finishing(7));
    }
}
