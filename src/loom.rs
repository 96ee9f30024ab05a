//! The one door to atomics, locks, threads and spin-waits: loom's under `cfg(loom)`, shuttle's under `cfg(shuttle)`, std's otherwise.
//!
//! Everything in the crate that can race goes through here, so the model
//! checker (loom, exhaustive over small models) or the randomized scheduler
//! (shuttle, for many sessions) sees every shared access, and the native
//! build pays nothing for it. The std side mirrors loom's API, never the
//! other way round; shuttle's API is std's.
//!
//! Both checkers treat time the same way: they have no clock, so a timed
//! park or wait parks until woken, and only a [`ManualClock`](crate::ManualClock)
//! moves time.

#[cfg(all(loom, shuttle))]
compile_error!("sqlkiller: build with `--cfg loom` or `--cfg shuttle`, not both");

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{
    atomic, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::sync::{
    atomic, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(loom)]
pub(crate) use loom::thread_local;
#[cfg(shuttle)]
pub(crate) use shuttle::thread_local;
#[cfg(not(any(loom, shuttle)))]
pub(crate) use std::thread_local;

/// Threads: `current`, `Thread::unpark`, a spawn `Builder`, and a timed park.
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, Builder, JoinHandle, Thread};
    #[cfg(shuttle)]
    pub(crate) use shuttle::thread::{current, park, Builder, JoinHandle, Thread};
    #[cfg(not(any(loom, shuttle)))]
    pub(crate) use std::thread::{current, park, Builder, JoinHandle, Thread};

    /// Parks the current thread for at most `timeout`.
    ///
    /// loom and shuttle have no clock: under them this parks until
    /// unparked, so a model that relies on a timeout to finish is reported
    /// as a deadlock.
    pub(crate) fn park_timeout(timeout: std::time::Duration) {
        #[cfg(not(any(loom, shuttle)))]
        std::thread::park_timeout(timeout);
        #[cfg(loom)]
        {
            let _ = timeout;
            loom::thread::park();
        }
        #[cfg(shuttle)]
        {
            let _ = timeout;
            shuttle::thread::park();
        }
    }
}

/// Locks `mutex`, ignoring poison.
///
/// No lock of this crate is ever held across user code, so a poisoned lock
/// can only mean a panic inside our own short critical sections, which leave
/// the data consistent (every section is a handful of moves).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Takes `rwlock`'s read lock, ignoring poison (see [`lock`]).
pub(crate) fn read<T>(rwlock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    rwlock.read().unwrap_or_else(|poison| poison.into_inner())
}

/// Takes `rwlock`'s write lock, ignoring poison (see [`lock`]).
pub(crate) fn write<T>(rwlock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    rwlock.write().unwrap_or_else(|poison| poison.into_inner())
}

/// Waits on `condvar`, ignoring poison (see [`lock`]).
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(|poison| poison.into_inner())
}

/// A spin-wait step: `crossbeam_utils::Backoff` natively, a plain yield
/// under loom and shuttle (a spin loop without a yield point never ends
/// under a controlled scheduler, and crossbeam's backoff yields to the OS,
/// not to the checker).
pub(crate) struct Backoff {
    #[cfg(not(any(loom, shuttle)))]
    inner: crossbeam_utils::Backoff,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            #[cfg(not(any(loom, shuttle)))]
            inner: crossbeam_utils::Backoff::new(),
        }
    }

    /// Waits a little longer each call: spins first, then yields the thread.
    pub(crate) fn snooze(&self) {
        #[cfg(not(any(loom, shuttle)))]
        self.inner.snooze();
        #[cfg(loom)]
        loom::thread::yield_now();
        #[cfg(shuttle)]
        shuttle::thread::yield_now();
    }

    /// Whether spinning has gone on long enough that the caller should
    /// block instead (park on a condition variable until woken).
    ///
    /// Always true under loom and shuttle, so the checkers explore the
    /// blocking path, which is the one that can lose a wake-up; the spin
    /// before it is only an optimisation for short waits.
    pub(crate) fn is_completed(&self) -> bool {
        #[cfg(not(any(loom, shuttle)))]
        return self.inner.is_completed();
        #[cfg(any(loom, shuttle))]
        return true;
    }
}
