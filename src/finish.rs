//! The finish function: how a killer releases a statement stuck writing its result set.

use crate::{FinishError, SqlKiller};

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
        self.shared.set_finish_func(Box::new(func))
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

    /// [`clear_finish_func`](SqlKiller::clear_finish_func) for an async
    /// owner: where it would block the thread on a run of the finish
    /// function in progress on another thread, it awaits. The function is
    /// cleared at the first poll.
    ///
    /// # Errors
    ///
    /// As `clear_finish_func`.
    pub async fn clear_finish_func_async(&self) -> Result<(), FinishError> {
        if self.shared.begin_clear_finish_func()? {
            std::future::poll_fn(|cx| self.shared.poll_finish_idle(cx.waker())).await;
        }
        Ok(())
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
