//! Many sessions sharing one timer, and callbacks that touch other
//! sessions, their own killer, or own its handles: the timer serves every
//! session on time whatever user code does, any panic payload is
//! contained, owed hooks iterate, a waker's drop may call back into its
//! killer, ownership cycles do not leak, owner operations called concurrently keep
//! the session correct, and durations read back as set.
//!
//! Every scenario that could hang runs under a watchdog; every one that
//! could abort the process runs in a child process.

mod support;

use std::future::Future;
use std::panic::{catch_unwind, panic_any, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use sqlkiller::{
    HookStatus, KillError, KillSignal, ManualClock, OwnedKillEvent, SqlKiller, WaitOutcome,
};
use support::{in_child_process, panic_message, register_waker, within};

/// A panic payload whose own `Drop` panics.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("a panic payload's drop panicked");
    }
}

/// A value whose `Drop` panics with a [`PanicsWhenDropped`] payload: held
/// by a hook that is dropped un-run.
struct DropPanicsWithBadPayload;

impl Drop for DropPanicsWithBadPayload {
    fn drop(&mut self) {
        panic_any(PanicsWhenDropped);
    }
}

/// Polls `until` every millisecond for at most `limit`; whether it held.
fn eventually(limit: Duration, until: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if until() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// `n` threads, each blocked in `wait_timeout` (a minute: far beyond any
/// watchdog here) on its own event of the current statement; each returns
/// what its wait returned. Returns once they have had time to park.
fn blocked_waiters(killer: &SqlKiller, n: usize) -> Vec<thread::JoinHandle<Option<WaitOutcome>>> {
    let waiters: Vec<_> = (0..n)
        .map(|_| {
            let mut event = killer.kill_event_owned();
            thread::spawn(move || event.wait_timeout(Duration::from_secs(60)))
        })
        .collect();
    // Not required for correctness: gives the threads time to park, so
    // that a wake-up that is skipped leaves them blocked.
    thread::sleep(Duration::from_millis(200));
    waiters
}

/// How many threads block on a kill event in the tests of wakers' panics.
const WAITERS: usize = 4;

/// What is wrong with `waiters` five seconds on: how many of them are
/// still blocked (their own timeout is a minute away), if any.
fn still_blocked(waiters: &[thread::JoinHandle<Option<WaitOutcome>>]) -> Vec<String> {
    let woke = eventually(Duration::from_secs(5), || {
        waiters.iter().all(thread::JoinHandle::is_finished)
    });
    if woke {
        return vec![];
    }
    let blocked = waiters.iter().filter(|w| !w.is_finished()).count();
    let all = waiters.len();
    vec![format!(
        "{blocked} of {all} blocked waiters were never woken"
    )]
}

// ---------------------------------------------------------------------
// The timer serves deadlines on time whatever user code does.
// ---------------------------------------------------------------------

#[test]
fn a_slow_deadline_hook_of_one_session_does_not_delay_another_sessions_deadline() {
    within("two sessions' deadlines", Duration::from_secs(20), || {
        let hook_started = Arc::new(AtomicBool::new(false));
        let hook_returned = Arc::new(AtomicBool::new(false));
        let slow = SqlKiller::new();
        let (started, returned) = (Arc::clone(&hook_started), Arc::clone(&hook_returned));
        assert_eq!(
            slow.set_cancel_hook(move || {
                started.store(true, SeqCst);
                thread::sleep(Duration::from_millis(1500)); // e.g. a blocking RPC cancel
                returned.store(true, SeqCst);
            }),
            HookStatus::Armed
        );
        slow.set_statement_timeout(Duration::from_millis(50));

        let other = SqlKiller::new();
        other.set_statement_timeout(Duration::from_millis(250));

        assert!(
            eventually(Duration::from_secs(5), || other.kill_signal().is_some()),
            "the other session's deadline never fired"
        );
        let returned_before = hook_returned.load(SeqCst);
        assert_eq!(other.handle_signal().map_err(|e| e.code()), Err(3024));
        assert!(
            hook_started.load(SeqCst),
            "the slow session's deadline (200 ms earlier) had not fired its hook"
        );
        assert!(
            !returned_before,
            "the other session's 250 ms deadline fired only after the slow hook \
             (1.5 s) returned: the slow hook delayed it"
        );
        assert_eq!(slow.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
        assert!(
            eventually(Duration::from_secs(5), || hook_returned.load(SeqCst)),
            "the slow hook never returned"
        );
    });
}

#[test]
fn a_deadline_hook_whose_panic_payload_panics_when_dropped_does_not_stop_the_timer() {
    in_child_process(
        "a_deadline_hook_whose_panic_payload_panics_when_dropped_does_not_stop_the_timer",
        Duration::from_secs(30),
        || {
            let hook_ran = Arc::new(AtomicBool::new(false));
            let panicking = SqlKiller::new();
            let ran = Arc::clone(&hook_ran);
            let armed = panicking.set_cancel_hook(move || {
                ran.store(true, SeqCst);
                panic_any(PanicsWhenDropped);
            });
            assert_eq!(armed, HookStatus::Armed);
            panicking.set_statement_timeout(Duration::from_millis(10));
            assert!(
                eventually(Duration::from_secs(5), || hook_ran.load(SeqCst)),
                "the deadline's hook never ran"
            );
            // Give the timer time to handle the payload before the next
            // sessions arm their deadlines.
            thread::sleep(Duration::from_millis(100));

            // Later deadlines of other sessions still fire: an armed
            // `max_execution_time` and a statement timeout.
            let limited = SqlKiller::new();
            limited.set_max_execution_time(Some(Duration::from_millis(20)));
            limited.reset();
            let timed_out = SqlKiller::new();
            timed_out.set_statement_timeout(Duration::from_millis(20));
            for (name, session) in [("max_execution_time", &limited), ("timeout", &timed_out)] {
                assert!(
                    eventually(Duration::from_secs(5), || session.kill_signal().is_some()),
                    "a later session's {name} deadline never fired: the timer stopped"
                );
                assert_eq!(session.handle_signal(), Err(KillError::MaxExecTimeExceeded));
            }
        },
    );
}

#[test]
fn a_deadline_hook_whose_panic_payload_panics_when_dropped_is_contained_by_a_manual_clock() {
    in_child_process(
        "a_deadline_hook_whose_panic_payload_panics_when_dropped_is_contained_by_a_manual_clock",
        Duration::from_secs(30),
        || {
            let clock = ManualClock::new();
            let panicking = SqlKiller::with_clock(&clock);
            let armed = panicking.set_cancel_hook(|| panic_any(PanicsWhenDropped));
            assert_eq!(armed, HookStatus::Armed);
            panicking.set_statement_timeout(Duration::from_millis(10));
            let other = SqlKiller::with_clock(&clock);
            other.set_statement_timeout(Duration::from_millis(20));
            let advanced = catch_unwind(AssertUnwindSafe(|| {
                clock.advance(Duration::from_millis(30))
            }));
            assert!(
                advanced.is_ok(),
                "advance panicked: {}",
                advanced
                    .err()
                    .map(|p| panic_message(&*p))
                    .unwrap_or_default()
            );
            assert_eq!(
                panicking.kill_signal(),
                Some(KillSignal::MaxExecTimeExceeded)
            );
            assert_eq!(
                other.kill_signal(),
                Some(KillSignal::MaxExecTimeExceeded),
                "the other session's deadline, due in the same advance, did not fire"
            );
            // And the clock goes on firing later deadlines.
            let later = SqlKiller::with_clock(&clock);
            later.set_statement_timeout(Duration::from_millis(10));
            clock.advance(Duration::from_millis(10));
            assert_eq!(later.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
        },
    );
}

// ---------------------------------------------------------------------
// Panic containment that holds for any payload.
// ---------------------------------------------------------------------

#[test]
fn a_kill_whose_wakers_panic_still_wakes_every_waiter_runs_the_hook_and_reports_the_first_panic() {
    in_child_process(
        "a_kill_whose_wakers_panic_still_wakes_every_waiter_runs_the_hook_and_reports_the_first_panic",
        Duration::from_secs(30),
        || {
            within("a kill whose wakers panic", Duration::from_secs(15), || {
                let killer = SqlKiller::new();
                let mut first = killer.kill_event_owned();
                register_waker(&mut first, || panic!("the first waker panicked"));
                let mut second = killer.kill_event_owned();
                register_waker(&mut second, || panic_any(PanicsWhenDropped));
                let hook_ran = Arc::new(AtomicBool::new(false));
                let ran = Arc::clone(&hook_ran);
                let armed = killer.set_cancel_hook(move || ran.store(true, SeqCst));
                assert_eq!(armed, HookStatus::Armed);
                let waiters = blocked_waiters(&killer, WAITERS);

                let handle = killer.handle();
                let killed = catch_unwind(AssertUnwindSafe(|| {
                    handle.send_kill_signal(KillSignal::QueryInterrupted)
                }));
                let reported = killed.err().map(|panic| panic_message(&*panic));
                let mut wrong = still_blocked(&waiters);
                if !hook_ran.load(SeqCst) {
                    wrong.push("the hook did not run".to_string());
                }
                if reported.as_deref() != Some("the first waker panicked") {
                    wrong.push(format!("the killer got the panic {reported:?}, not the first"));
                }
                assert!(wrong.is_empty(), "{}", wrong.join("; "));
                for waiter in waiters {
                    assert_eq!(
                        waiter.join().expect("a waiter does not panic"),
                        Some(WaitOutcome::Killed(KillSignal::QueryInterrupted))
                    );
                }
                assert_eq!(killer.kill_signal(), Some(KillSignal::QueryInterrupted));
                drop((first, second));
            });
        },
    );
}

#[test]
fn dropping_the_owner_contains_panicking_wakers_and_hook_drops_and_wakes_every_waiter() {
    in_child_process(
        "dropping_the_owner_contains_panicking_wakers_and_hook_drops_and_wakes_every_waiter",
        Duration::from_secs(30),
        || {
            within(
                "closing a session whose wakers panic",
                Duration::from_secs(15),
                || {
                    let killer = SqlKiller::new();
                    let mut first = killer.kill_event_owned();
                    register_waker(&mut first, || panic!("the first waker panicked"));
                    let mut second = killer.kill_event_owned();
                    register_waker(&mut second, || panic_any(PanicsWhenDropped));
                    let guard = DropPanicsWithBadPayload;
                    let armed = killer.set_cancel_hook(move || drop(guard));
                    assert_eq!(armed, HookStatus::Armed);
                    let waiters = blocked_waiters(&killer, WAITERS);

                    let dropped = catch_unwind(AssertUnwindSafe(move || drop(killer)));
                    let mut wrong = still_blocked(&waiters);
                    if let Err(panic) = dropped {
                        let message = panic_message(&*panic);
                        wrong.push(format!("a panic escaped the owner's drop: {message:?}"));
                    }
                    assert!(wrong.is_empty(), "{}", wrong.join("; "));
                    for waiter in waiters {
                        assert_eq!(
                            waiter.join().expect("a waiter does not panic"),
                            Some(WaitOutcome::Reset)
                        );
                    }
                    drop((first, second));
                },
            );
        },
    );
}

// ---------------------------------------------------------------------
// Owed hooks iterate.
// ---------------------------------------------------------------------

/// How many hooks a kill-immune section owes in the tests below.
const OWED: usize = 200_000;

/// Runs `scenario` on a thread with a 256 KiB stack: a chain of owed hooks
/// run or dropped by recursion overflows it.
fn on_a_small_stack(scenario: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .name("small stack".into())
        .stack_size(256 * 1024)
        .spawn(scenario)
        .expect("spawn a thread")
        .join()
        .unwrap_or_else(|panic| panic!("the scenario panicked: {}", panic_message(&*panic)));
}

#[test]
fn two_hundred_thousand_hooks_owed_by_a_section_all_run_at_release_on_a_small_stack() {
    in_child_process(
        "two_hundred_thousand_hooks_owed_by_a_section_all_run_at_release_on_a_small_stack",
        Duration::from_secs(120),
        || {
            on_a_small_stack(|| {
                let killer = SqlKiller::new();
                let runs = Arc::new(AtomicUsize::new(0));
                let section = killer.kill_immune();
                let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
                for _ in 0..OWED {
                    let runs = Arc::clone(&runs);
                    let status = killer.set_cancel_hook(move || {
                        runs.fetch_add(1, SeqCst);
                    });
                    assert_eq!(status, HookStatus::Armed, "owed to the section's end");
                }
                assert_eq!(runs.load(SeqCst), 0, "nothing runs inside the section");
                section.release();
                assert_eq!(runs.load(SeqCst), OWED);
                assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
            });
        },
    );
}

#[test]
fn two_hundred_thousand_hooks_owed_by_a_section_are_all_dropped_unrun_by_reset_on_a_small_stack() {
    in_child_process(
        "two_hundred_thousand_hooks_owed_by_a_section_are_all_dropped_unrun_by_reset_on_a_small_stack",
        Duration::from_secs(120),
        || {
            on_a_small_stack(|| {
                /// Counts its drops.
                struct Counted(Arc<AtomicUsize>);
                impl Drop for Counted {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, SeqCst);
                    }
                }
                let killer = SqlKiller::new();
                let runs = Arc::new(AtomicUsize::new(0));
                let drops = Arc::new(AtomicUsize::new(0));
                let section = killer.kill_immune();
                let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
                for _ in 0..OWED {
                    let runs = Arc::clone(&runs);
                    let counted = Counted(Arc::clone(&drops));
                    let status = killer.set_cancel_hook(move || {
                        let _counted = counted;
                        runs.fetch_add(1, SeqCst);
                    });
                    assert_eq!(status, HookStatus::Armed, "owed to the section's end");
                }
                assert_eq!(killer.reset(), Some(KillSignal::QueryInterrupted));
                assert_eq!(drops.load(SeqCst), OWED, "every owed hook is dropped");
                assert_eq!(runs.load(SeqCst), 0, "none of them runs");
                section.release();
                assert_eq!(runs.load(SeqCst), 0);
                assert!(killer.handle_signal().is_ok());
            });
        },
    );
}

// ---------------------------------------------------------------------
// No user code under a lock: a waker's drop. (A waker whose `clone`
// calls back needs a `RawWaker`, that is `unsafe`, which the package's
// lints forbid in every target.)
// ---------------------------------------------------------------------

/// A waker whose drop (and wake) calls back into its killer in a way that
/// takes the killer's lock: it registers and drops a kill event.
struct CallsBackWhenDropped {
    handle: sqlkiller::KillHandle,
    drops: Arc<AtomicUsize>,
}

impl Wake for CallsBackWhenDropped {
    fn wake(self: Arc<Self>) {
        drop(self.handle.kill_event_owned());
    }
}

impl Drop for CallsBackWhenDropped {
    fn drop(&mut self) {
        drop(self.handle.kill_event_owned());
        self.drops.fetch_add(1, SeqCst);
    }
}

#[test]
fn a_waker_whose_drop_calls_back_into_its_killer_does_not_deadlock() {
    within(
        "a waker dropped inside its killer",
        Duration::from_secs(10),
        || {
            let killer = SqlKiller::new();
            let drops = Arc::new(AtomicUsize::new(0));
            let waker = || {
                Waker::from(Arc::new(CallsBackWhenDropped {
                    handle: killer.handle(),
                    drops: Arc::clone(&drops),
                }))
            };
            let poll = |event: &mut OwnedKillEvent, waker: Waker| {
                Pin::new(event).poll(&mut Context::from_waker(&waker))
            };

            // Replaced by another task's waker: the old one is dropped.
            let mut event = killer.kill_event_owned();
            assert_eq!(poll(&mut event, waker()), Poll::Pending);
            assert_eq!(poll(&mut event, waker()), Poll::Pending);
            assert_eq!(drops.load(SeqCst), 1);
            // Dropped with its event.
            drop(event);
            assert_eq!(drops.load(SeqCst), 2);
            // Woken and dropped by a kill, then by a reset.
            let mut event = killer.kill_event_owned();
            assert_eq!(poll(&mut event, waker()), Poll::Pending);
            let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
            assert_eq!(drops.load(SeqCst), 3);
            drop(event);
            killer.reset();
            let mut event = killer.kill_event_owned();
            assert_eq!(poll(&mut event, waker()), Poll::Pending);
            killer.reset();
            assert_eq!(drops.load(SeqCst), 4);
            drop(event);
        },
    );
}

// ---------------------------------------------------------------------
// No leak through ownership.
// ---------------------------------------------------------------------

#[test]
fn a_finish_function_and_a_probe_holding_their_own_sessions_handle_are_freed_with_the_owner() {
    let finish_marker = Arc::new(());
    let probe_marker = Arc::new(());
    let (finish_weak, probe_weak): (Weak<()>, Weak<()>) = (
        Arc::downgrade(&finish_marker),
        Arc::downgrade(&probe_marker),
    );
    let killer = SqlKiller::new();
    let handle = killer.handle();
    killer.set_finish_func(move || {
        let _ = (&finish_marker, handle.kill_signal());
    });
    let handle = killer.handle();
    let _probe = killer.set_connection_alive_probe(move || {
        let _ = &probe_marker;
        handle.kill_signal().is_none()
    });
    assert_eq!(killer.finish_result_set(), Ok(true));
    assert!(killer.check_connection_alive());
    drop(killer);
    assert_eq!(
        finish_weak.strong_count(),
        0,
        "the finish function outlived its owner: its own handle keeps the session alive"
    );
    assert_eq!(
        probe_weak.strong_count(),
        0,
        "the probe outlived its owner: its own handle keeps the session alive"
    );
}

/// The same when the owner is dropped while its finish function runs on a
/// KILL thread: when the run ends, the function is dropped, not put back.
#[test]
fn a_finish_function_running_while_its_owner_is_dropped_is_freed_when_it_returns() {
    let marker = Arc::new(());
    let weak = Arc::downgrade(&marker);
    let killer = SqlKiller::new();
    let handle = killer.handle();
    let (entered, release) = (
        std::sync::mpsc::channel::<()>(),
        std::sync::mpsc::channel::<()>(),
    );
    let (entered_tx, entered_rx) = entered;
    let (release_tx, release_rx) = release;
    let release_rx = std::sync::Mutex::new(release_rx);
    let own = killer.handle();
    killer.set_finish_func(move || {
        let _ = (&marker, own.kill_signal());
        let _ = entered_tx.send(());
        let _ = release_rx.lock().unwrap().recv();
    });
    let kill_thread = thread::spawn(move || handle.finish_result_set());
    entered_rx.recv().expect("the finish function runs");
    drop(killer); // closes the session while the function runs
    release_tx.send(()).expect("the function waits");
    assert_eq!(kill_thread.join().expect("no panic"), Ok(true));
    assert_eq!(
        weak.strong_count(),
        0,
        "the finish function was put back after its owner closed the session"
    );
}

// ---------------------------------------------------------------------
// Owner operations called concurrently stay harmless.
// ---------------------------------------------------------------------

#[test]
fn kill_immune_sections_entered_and_left_from_two_threads_at_once_leave_the_session_correct() {
    in_child_process(
        "kill_immune_sections_entered_and_left_from_two_threads_at_once_leave_the_session_correct",
        Duration::from_secs(120),
        || {
            for round in 0..5 {
                let killer = SqlKiller::new();
                thread::scope(|s| {
                    for _ in 0..2 {
                        s.spawn(|| {
                            for i in 0..100_000u32 {
                                let outer = killer.kill_immune();
                                if i % 2 == 0 {
                                    let inner = killer.kill_immune();
                                    inner.release();
                                }
                                drop(outer);
                            }
                        });
                    }
                });
                assert!(
                    !killer.is_kill_immune(),
                    "round {round}: still kill-immune with no guard alive"
                );
                // A correct section afterwards still defers a kill, and
                // reports it after.
                let section = killer.kill_immune();
                assert!(killer.is_kill_immune());
                let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
                assert!(
                    killer.handle_signal().is_ok(),
                    "round {round}: a kill inside a section was reported"
                );
                section.release();
                assert!(!killer.is_kill_immune());
                assert_eq!(
                    killer.handle_signal(),
                    Err(KillError::QueryInterrupted),
                    "round {round}: the kill was not reported after the section"
                );
            }
        },
    );
}

// ---------------------------------------------------------------------
// Durations round-trip.
// ---------------------------------------------------------------------

#[test]
fn max_execution_time_reads_back_what_was_set_up_to_duration_max() {
    let killer = SqlKiller::new();
    killer.set_max_execution_time(Some(Duration::MAX));
    assert_eq!(killer.max_execution_time(), Some(Duration::MAX));
    for limit in [
        Duration::from_nanos(1),
        Duration::from_millis(1),
        Duration::from_secs(3600),
        Duration::from_secs(500 * 365 * 24 * 3600),
        Duration::from_nanos(u64::MAX - 2),
        Duration::from_nanos(u64::MAX - 1),
    ] {
        killer.set_max_execution_time(Some(limit));
        assert_eq!(killer.max_execution_time(), Some(limit), "set {limit:?}");
    }
    // The documented cap: 2^64 - 1 ns or more is no deadline, Duration::MAX.
    for limit in [
        Duration::from_nanos(u64::MAX),
        Duration::from_secs(u64::MAX / 2),
    ] {
        killer.set_max_execution_time(Some(limit));
        assert_eq!(
            killer.max_execution_time(),
            Some(Duration::MAX),
            "set {limit:?}"
        );
    }
    killer.set_max_execution_time(None);
    assert_eq!(killer.max_execution_time(), None);
}

/// The owner's drop contains a kept panic whose own payload panics when
/// dropped: the first (and only) panic of a reset-time waker. Nothing
/// escapes the destructor (child process: escaping while unwinding aborts).
#[test]
fn dropping_the_owner_contains_a_waker_panic_whose_payload_panics_when_dropped() {
    in_child_process(
        "dropping_the_owner_contains_a_waker_panic_whose_payload_panics_when_dropped",
        Duration::from_secs(30),
        || {
            let killer = SqlKiller::new();
            let mut event = killer.kill_event_owned();
            register_waker(&mut event, || panic_any(PanicsWhenDropped));
            let dropped = catch_unwind(AssertUnwindSafe(move || drop(killer)));
            assert!(dropped.is_ok(), "a panic escaped the owner's drop");
            assert_eq!(event.try_outcome(), Some(WaitOutcome::Reset));
        },
    );
}

/// A kill event dropped while it still holds a task's waker whose `Drop`
/// panics: the event's destructor contains it.
#[test]
fn dropping_an_event_whose_waker_panics_when_dropped_does_not_panic() {
    struct PanicsOnDrop;
    impl Wake for PanicsOnDrop {
        fn wake(self: Arc<Self>) {}
    }
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("the waker's drop panicked");
        }
    }
    let killer = SqlKiller::new();
    let mut event = killer.kill_event_owned();
    let waker = Waker::from(Arc::new(PanicsOnDrop));
    let polled = Pin::new(&mut event).poll(&mut Context::from_waker(&waker));
    assert_eq!(polled, Poll::Pending);
    drop(waker); // the event now holds the last reference
    let dropped = catch_unwind(AssertUnwindSafe(move || drop(event)));
    assert!(
        dropped.is_ok(),
        "the waker's drop escaped the event's destructor"
    );
}
