//! The finish function: how a killer releases a statement stuck writing its result set.

use std::task::{Poll, Waker};

use super::{table, Shared};
use crate::callback::{self, Kind};
use crate::loom::{lock, wait};
use crate::table::FinishFn;
use crate::FinishError;

impl Shared {
    pub(crate) fn set_finish_func(&self, func: FinishFn) {
        let replaced = {
            let mut side = lock(&self.side);
            let slot = &mut table(&mut side).finish;
            slot.version += 1;
            slot.func.replace(func)
        };
        drop(replaced);
    }

    /// Clears the finish function without waiting for a run in progress:
    /// `Ok(true)` if one is running (on another thread: await
    /// [`poll_finish_idle`](Self::poll_finish_idle)).
    pub(crate) fn begin_clear_finish_func(&self) -> Result<bool, FinishError> {
        let cleared = {
            let mut side = lock(&self.side);
            let slot = &mut table(&mut side).finish;
            slot.version += 1;
            let running = slot.running;
            (slot.func.take(), running)
        };
        let (func, running) = cleared;
        drop(func);
        if running && callback::finishing(self.id) {
            return Err(FinishError::ReentrantClear);
        }
        Ok(running)
    }

    /// `Ready` once no run of the finish function is in progress; else
    /// `Pending` with `waker` registered, woken by the run's end.
    pub(crate) fn poll_finish_idle(&self, waker: &Waker) -> Poll<()> {
        let ours = waker.clone();
        let old = {
            let mut side = lock(&self.side);
            let table = table(&mut side);
            if !table.finish.running {
                drop(side);
                drop(ours);
                return Poll::Ready(());
            }
            table.owner_waker.replace(ours)
        };
        drop(old);
        Poll::Pending
    }

    pub(crate) fn clear_finish_func(&self) -> Result<(), FinishError> {
        let mut side = lock(&self.side);
        let slot = &mut table(&mut side).finish;
        slot.version += 1;
        let cleared = slot.func.take();
        let result = if callback::finishing(self.id) {
            // This thread is inside the run: waiting would wait for itself.
            Err(FinishError::ReentrantClear)
        } else {
            while table(&mut side).finish.running {
                side = wait(&self.progress, side);
            }
            Ok(())
        };
        drop(side);
        drop(cleared);
        result
    }

    pub(crate) fn finish_result_set(&self) -> Result<bool, FinishError> {
        if callback::finishing(self.id) {
            return Err(FinishError::ReentrantFinish);
        }
        let mut side = lock(&self.side);
        while table(&mut side).finish.running {
            side = wait(&self.progress, side);
        }
        let slot = &mut table(&mut side).finish;
        let Some(func) = slot.func.take() else {
            return Ok(false);
        };
        slot.running = true;
        let mut run = FinishRun {
            killer: self,
            version: slot.version,
            func: Some(func),
            returned: false,
        };
        drop(side);
        {
            let _frame = callback::enter(self.id, Kind::Finish);
            (run.func.as_mut().expect("taken above"))();
        }
        // Recorded here, not asked of `thread::panicking()`: that is also
        // true when we were called from a destructor during an unrelated
        // unwind, and the function did return normally.
        run.returned = true;
        drop(run);
        Ok(true)
    }
}

/// A finish function taken out of the slot while it runs. Dropping it (also
/// while unwinding) ends the run: it puts the function back unless it was
/// replaced, cleared or did not return, and wakes `clear_finish_func`.
struct FinishRun<'a> {
    killer: &'a Shared,
    version: u64,
    func: Option<FinishFn>,
    /// The function returned normally (set by the runner after the call).
    returned: bool,
}

impl Drop for FinishRun<'_> {
    fn drop(&mut self) {
        let (leftover, waker) = {
            let mut side = lock(&self.killer.side);
            let table = table(&mut side);
            // An async owner awaiting `clear_finish_func_async` (a spurious
            // wake-up for any other owner wait: it polls again).
            let waker = table.owner_waker.take();
            let slot = &mut table.finish;
            slot.running = false;
            let leftover = if slot.version == self.version && self.returned {
                slot.func = self.func.take();
                None
            } else {
                self.func.take()
            };
            self.killer.progress.notify_all();
            (leftover, waker)
        };
        callback::drop_contained(leftover);
        if let Some(waker) = waker {
            callback::contained(|| waker.wake());
        }
    }
}
