//! The finish function: how a killer releases a statement stuck writing its result set.

use crate::killer::Shared;
use crate::loom::{lock, thread, wait};
use crate::side::table;
use crate::SqlKiller;

pub(crate) type FinishFn = Box<dyn FnMut() + Send>;

/// The installed finish function and who is running it.
#[derive(Default)]
pub(crate) struct FinishSlot {
    func: Option<FinishFn>,
    /// The thread running the function (taken out of `func`), if any.
    runner: Option<thread::ThreadId>,
    /// Bumped by every set and clear: a runner puts its function back only
    /// if nobody replaced or cleared it meanwhile.
    version: u64,
}

/// A finish-function call that would wait for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    /// `finish_result_set` called from inside the running finish function,
    /// on its own thread.
    #[error("finish_result_set called from inside the finish function, which it would wait for")]
    ReentrantFinish,
    /// `clear_finish_func` called from inside the running finish function,
    /// on its own thread: the function is cleared, but is still running.
    #[error("clear_finish_func called from inside the finish function, which it would wait for")]
    ReentrantClear,
}

impl SqlKiller {
    /// Installs the function that releases the statement when it is stuck
    /// writing its result set (TiDB `SetFinishFunc`), replacing any other.
    ///
    /// Never blocks on a running finish function: a call made while one runs
    /// (even from inside it) takes effect when it returns.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// let closed = Arc::new(AtomicBool::new(false));
    /// let c = Arc::clone(&closed);
    /// killer.set_finish_func(move || c.store(true, Ordering::SeqCst));
    /// assert_eq!(killer.finish_result_set(), Ok(true));
    /// assert!(closed.load(Ordering::SeqCst));
    /// killer.clear_finish_func().unwrap();
    /// assert_eq!(killer.finish_result_set(), Ok(false));
    /// ```
    pub fn set_finish_func(&self, func: impl FnMut() + Send + 'static) {
        self.shared.set_finish_func(func)
    }

    /// Removes the finish function (TiDB `ClearFinishFunc`). After it
    /// returns `Ok`, the old function is neither running nor will run (I8):
    /// it waits for a run in progress on another thread.
    ///
    /// # Errors
    ///
    /// [`FinishError::ReentrantClear`] if called from inside the finish
    /// function itself: the function is cleared (it will not run again) but
    /// is still running — the caller is in it.
    pub fn clear_finish_func(&self) -> Result<(), FinishError> {
        self.shared.clear_finish_func()
    }

    /// Runs the finish function (TiDB `FinishResultSet`); `Ok(false)` if none
    /// is installed. Runs wait for each other, as under TiDB's lock, but no
    /// lock is held while the function runs, so it may call back into the
    /// killer.
    ///
    /// A finish function that panics is removed, and its panic reaches this
    /// caller once the run has ended (a waiting `clear_finish_func` is
    /// released); the next `set_finish_func` installs a new one. Whether it
    /// panicked is recorded by the run itself, so a call from a destructor
    /// during an unrelated unwind keeps a function that returned normally.
    ///
    /// # Errors
    ///
    /// [`FinishError::ReentrantFinish`] if called from inside the finish function.
    pub fn finish_result_set(&self) -> Result<bool, FinishError> {
        self.shared.finish_result_set()
    }
}

impl Shared {
    pub(crate) fn set_finish_func(&self, func: impl FnMut() + Send + 'static) {
        let func: FinishFn = Box::new(func);
        let replaced = {
            let mut side = lock(&self.side);
            let slot = &mut table(&mut side).finish;
            slot.version += 1;
            slot.func.replace(func)
        };
        drop(replaced);
    }

    pub(crate) fn clear_finish_func(&self) -> Result<(), FinishError> {
        let me = thread::current().id();
        let mut side = lock(&self.side);
        let slot = &mut table(&mut side).finish;
        slot.version += 1;
        let cleared = slot.func.take();
        let result = if slot.runner == Some(me) {
            Err(FinishError::ReentrantClear)
        } else {
            while table(&mut side).finish.runner.is_some() {
                side = wait(&self.progress, side);
            }
            Ok(())
        };
        drop(side);
        drop(cleared);
        result
    }

    pub(crate) fn finish_result_set(&self) -> Result<bool, FinishError> {
        let me = thread::current().id();
        let mut side = lock(&self.side);
        loop {
            match table(&mut side).finish.runner {
                Some(runner) if runner == me => return Err(FinishError::ReentrantFinish),
                Some(_) => side = wait(&self.progress, side),
                None => break,
            }
        }
        let slot = &mut table(&mut side).finish;
        let Some(func) = slot.func.take() else {
            return Ok(false);
        };
        slot.runner = Some(me);
        let mut run = FinishRun {
            killer: self,
            version: slot.version,
            func: Some(func),
            returned: false,
        };
        drop(side);
        (run.func.as_mut().expect("taken above"))();
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
        let leftover = {
            let mut side = lock(&self.killer.side);
            let slot = &mut table(&mut side).finish;
            slot.runner = None;
            let leftover = if slot.version == self.version && self.returned {
                slot.func = self.func.take();
                None
            } else {
                self.func.take()
            };
            self.killer.progress.notify_all();
            leftover
        };
        drop(leftover);
    }
}
