//! Canaries: the crate's blocking paths, each run under a watchdog, so a bug
//! that would make one of them wait for ever fails here within seconds
//! instead of hanging a test run.
//!
//! These are unit tests, so `cargo test` runs them first and stops at their
//! failure: a change that turns a wake-up, a wait or a hook count into a
//! hang is reported as a failure naming the path, not as a run that a
//! harness has to kill (mutation testing counts those apart). Every
//! scenario is single-purpose and finishes in milliseconds; the integration
//! tests cover the same paths under races.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::time::for_tests::{sleep, Instant};
use crate::{FinishError, KillError, KillSignal, SqlKiller, WaitOutcome};

/// Runs `scenario` on its own thread and fails if it is still running after
/// five seconds (a hang; the thread is left behind). A panic inside it is
/// passed on. Each scenario takes milliseconds.
fn within<T: Send + 'static>(what: &str, scenario: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, outcome) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(catch_unwind(AssertUnwindSafe(scenario)));
    });
    match outcome.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(_) => panic!("{what}: still blocked after 5 s"),
    }
}

const KILL: KillSignal = KillSignal::QueryInterrupted;

#[test]
fn a_kill_wakes_a_blocked_waiter() {
    let outcome = within("waiter", || {
        let killer = SqlKiller::new();
        let handle = killer.handle();
        let mut event = killer.kill_event_owned();
        let waiter = thread::spawn(move || event.wait());
        sleep(Duration::from_millis(50)); // let it block (most runs)
        let _ = handle.send_kill_signal(KILL);
        waiter.join().unwrap()
    });
    assert_eq!(outcome, WaitOutcome::Killed(KILL));
}

#[test]
fn a_reset_wakes_a_blocked_waiter() {
    let outcome = within("waiter at reset", || {
        let killer = SqlKiller::new();
        let mut event = killer.kill_event_owned();
        let waiter = thread::spawn(move || event.wait());
        sleep(Duration::from_millis(50));
        killer.reset();
        waiter.join().unwrap()
    });
    assert_eq!(outcome, WaitOutcome::Reset);
}

#[test]
fn an_event_of_an_ended_statement_completes_at_once() {
    let outcomes = within("stale event", || {
        let killer = SqlKiller::new();
        let old = killer.statement();
        killer.reset();
        let stale = killer.kill_event_for(old).wait();
        drop(killer);
        let closed = SqlKiller::new();
        let mut event = closed.kill_event_owned();
        drop(closed);
        (stale, event.wait())
    });
    assert_eq!(outcomes, (WaitOutcome::Reset, WaitOutcome::Reset));
}

#[test]
fn a_kill_completes_a_pending_future() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    let (before, after) = within("future", || {
        let killer = SqlKiller::new();
        let mut event = killer.kill_event_owned();
        let mut cx = Context::from_waker(Waker::noop());
        let before = Pin::new(&mut event).poll(&mut cx);
        let _ = killer.handle().send_kill_signal(KILL);
        (before, Pin::new(&mut event).poll(&mut cx))
    });
    assert_eq!(before, Poll::Pending);
    assert_eq!(after, Poll::Ready(WaitOutcome::Killed(KILL)));
}

#[test]
fn a_wait_with_a_timeout_times_out_not_before_it() {
    let (outcome, waited) = within("wait_timeout", || {
        let killer = SqlKiller::new();
        let mut event = killer.kill_event();
        let start = Instant::now();
        (
            event.wait_timeout(Duration::from_millis(20)),
            start.elapsed(),
        )
    });
    assert_eq!(outcome, None);
    // Never early: a wait re-parks until its deadline has passed.
    assert!(waited >= Duration::from_millis(20), "{waited:?}");
}

#[test]
fn a_kill_is_published_before_it_returns_and_reset_clears_it() {
    let (phase, cleared, after) = within("kill then reset", || {
        let killer = SqlKiller::new();
        let _ = killer.handle().send_kill_signal(KILL);
        let phase = killer.phase().1;
        (phase, killer.reset(), killer.handle_signal())
    });
    assert_eq!(phase, crate::KillPhase::Killed(KILL));
    assert_eq!(cleared, Some(KILL));
    assert_eq!(after, Ok(()));
}

#[test]
fn a_kill_with_a_reason_is_reported_with_it() {
    let err = within("reason", || {
        let killer = SqlKiller::new();
        let _ = killer.send_kill_signal_with_reason(KillSignal::QueryMemoryExceeded, "quota");
        killer.handle_signal()
    })
    .unwrap_err();
    assert_eq!(err.signal(), KillSignal::QueryMemoryExceeded);
    assert!(err.to_string().contains("quota"), "{err}");
}

#[test]
fn a_hook_runs_once_and_reset_returns_after_it() {
    let runs = within("hook then reset", || {
        let runs = Arc::new(AtomicUsize::new(0));
        let killer = SqlKiller::new();
        for _ in 0..2 {
            let counter = Arc::clone(&runs);
            let _ = killer.set_cancel_hook(move || {
                counter.fetch_add(1, SeqCst);
            });
            let _ = killer.handle().send_kill_signal(KILL);
            killer.reset();
        }
        // A hook installed after the kill runs at install, on this thread.
        let _ = killer.send_kill_signal(KILL);
        let counter = Arc::clone(&runs);
        let _ = killer.set_cancel_hook(move || {
            counter.fetch_add(1, SeqCst);
        });
        killer.reset();
        runs.load(SeqCst)
    });
    assert_eq!(runs, 3);
}

#[test]
fn reset_waits_for_a_slow_hook_and_is_woken_when_it_ends() {
    let (ran, cleared) = within("reset waiting for a hook", || {
        let killer = SqlKiller::new();
        let stmt = killer.statement();
        let _ = killer.send_kill_signal(KILL);
        // An RPC thread installs its hook after the kill: it runs at once,
        // on that thread, and slowly.
        let started = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let (s, r) = (Arc::clone(&started), Arc::clone(&ran));
        let handle = killer.handle();
        let rpc = thread::spawn(move || {
            handle.set_cancel_hook_for(stmt, move || {
                s.store(1, SeqCst);
                sleep(Duration::from_millis(200)); // past reset's spin: it parks
                r.store(1, SeqCst);
            })
        });
        while started.load(SeqCst) == 0 {
            thread::yield_now();
        }
        let cleared = killer.reset(); // blocks until the hook has returned
        let ran = ran.load(SeqCst);
        assert_eq!(rpc.join().unwrap(), crate::HookStatus::Ran);
        (ran, cleared)
    });
    assert_eq!(ran, 1, "reset returned while the hook still ran");
    assert_eq!(cleared, Some(KILL));
}

#[test]
fn reset_from_inside_the_killers_own_hook_panics() {
    let message = within("reset inside the hook", || {
        let killer = Arc::new(SqlKiller::new());
        let inner = Arc::clone(&killer);
        let _ = killer.set_cancel_hook(move || {
            inner.reset();
        });
        let panic = catch_unwind(AssertUnwindSafe(|| killer.send_kill_signal(KILL)))
            .expect_err("reset inside the hook must panic");
        killer.reset();
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    assert!(message.contains("own"), "{message}");
}

#[test]
fn a_kill_inside_a_section_is_served_when_it_ends() {
    let (during, outcome, after) = within("kill-immune section", || {
        let killer = SqlKiller::new();
        let mut event = killer.kill_event_owned();
        let guard = killer.kill_immune();
        let _ = killer.handle().send_kill_signal(KILL);
        let during = killer.handle_signal();
        guard.release();
        (during, event.wait(), killer.handle_signal())
    });
    assert_eq!(during, Ok(()));
    assert_eq!(outcome, WaitOutcome::Killed(KILL));
    assert_eq!(after, Err(KillError::QueryInterrupted));
}

#[test]
fn a_kill_a_dropped_guard_deferred_is_served_by_reset() {
    let (outcome, cleared) = within("owed kill at reset", || {
        let killer = SqlKiller::new();
        let mut event = killer.kill_event_owned();
        let hooked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hooked);
        let _ = killer.set_cancel_hook(move || {
            counter.fetch_add(1, SeqCst);
        });
        drop(killer.kill_immune());
        let guard = killer.kill_immune();
        let _ = killer.handle().send_kill_signal(KILL);
        drop(guard); // defers: the owner's next operation serves it
        let cleared = killer.reset();
        assert_eq!(hooked.load(SeqCst), 1, "the owed hook ran in reset");
        (event.wait(), cleared)
    });
    assert_eq!(outcome, WaitOutcome::Killed(KILL));
    assert_eq!(cleared, Some(KILL));
}

#[test]
fn the_finish_function_runs_and_refuses_reentry() {
    let (first, inner, cleared) = within("finish function", || {
        let killer = Arc::new(SqlKiller::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let inner: Arc<std::sync::Mutex<Vec<Result<bool, FinishError>>>> = Arc::default();
        let (k, r, seen) = (Arc::clone(&killer), Arc::clone(&runs), Arc::clone(&inner));
        killer.set_finish_func(move || {
            r.fetch_add(1, SeqCst);
            let again = k.finish_result_set();
            let cleared = k.clear_finish_func().map(|()| true);
            seen.lock().unwrap().extend([again, cleared]);
        });
        let first = killer.finish_result_set();
        assert_eq!(runs.load(SeqCst), 1);
        let cleared = killer.clear_finish_func();
        let inner = inner.lock().unwrap().clone();
        (first, inner, cleared)
    });
    assert_eq!(first, Ok(true));
    assert_eq!(
        inner,
        vec![
            Err(FinishError::ReentrantFinish),
            Err(FinishError::ReentrantClear)
        ]
    );
    assert_eq!(cleared, Ok(()));
}
