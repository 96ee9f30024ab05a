//! Every blocking path of the crate, each run under a watchdog: a waiter
//! woken by a kill and by `reset`, a pending future completed by a kill,
//! events of ended or closed statements, `wait_timeout`, a kill published
//! before it returns, hooks counted, `reset` parked until a slow hook
//! returns, `reset` from inside the killer's own hook, deferred kills
//! served at `release` and at `reset`, finish-function reentry.
//!
//! A change that turns a wake-up, a wait or a hook count into a hang fails
//! here within seconds, as a failure naming the path, instead of hanging
//! the test run until a harness kills it (mutation testing counts those
//! apart). Each scenario is single-purpose and takes milliseconds; the
//! other tests cover the same paths under races.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use sqlkiller::{
    FinishError, HookStatus, KillError, KillPhase, KillSignal, SqlKiller, WaitOutcome,
};
use support::{panic_message, within};

/// How long a scenario may block before the test calls it a hang. Each
/// takes milliseconds.
const HANG: Duration = Duration::from_secs(5);

const KILL: KillSignal = KillSignal::QueryInterrupted;

#[test]
fn a_kill_wakes_a_blocked_waiter() {
    let outcome = within("waiter", HANG, || {
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
    let outcome = within("waiter at reset", HANG, || {
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
    let outcomes = within("stale event", HANG, || {
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

    let (before, after) = within("future", HANG, || {
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
    let (outcome, waited) = within("wait_timeout", HANG, || {
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
    let (phase, cleared, after) = within("kill then reset", HANG, || {
        let killer = SqlKiller::new();
        let _ = killer.handle().send_kill_signal(KILL);
        let phase = killer.phase().1;
        (phase, killer.reset(), killer.handle_signal())
    });
    assert_eq!(phase, KillPhase::Killed(KILL));
    assert_eq!(cleared, Some(KILL));
    assert_eq!(after, Ok(()));
}

#[test]
fn a_kill_with_a_reason_is_reported_with_it() {
    let err = within("reason", HANG, || {
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
    let runs = within("hook then reset", HANG, || {
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
    let (ran, cleared) = within("reset waiting for a hook", HANG, || {
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
        assert_eq!(rpc.join().unwrap(), HookStatus::Ran);
        (ran, cleared)
    });
    assert_eq!(ran, 1, "reset returned while the hook still ran");
    assert_eq!(cleared, Some(KILL));
}

#[test]
fn reset_from_inside_the_killers_own_hook_panics() {
    let message = within("reset inside the hook", HANG, || {
        let killer = Arc::new(SqlKiller::new());
        let inner = Arc::clone(&killer);
        let _ = killer.set_cancel_hook(move || {
            inner.reset();
        });
        let panic = catch_unwind(AssertUnwindSafe(|| killer.send_kill_signal(KILL)))
            .expect_err("reset inside the hook must panic");
        killer.reset();
        panic_message(&*panic)
    });
    assert!(message.contains("own"), "{message}");
}

#[test]
fn a_kill_inside_a_section_is_served_when_it_ends() {
    let (during, outcome, after) = within("kill-immune section", HANG, || {
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
    let (outcome, cleared) = within("owed kill at reset", HANG, || {
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
    let (first, inner, cleared) = within("finish function", HANG, || {
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
