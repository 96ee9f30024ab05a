//! Models of the side channels (invariants I2 for waiters, I6, I7, I8, I9; see `src/state.rs`) on
//! the real `SqlKiller`. Broken twins are in `historic.rs`.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use loom::sync::Arc;
use loom::thread;
use sqlkiller::{HookStatus, KillOutcome, KillSignal, SqlKiller, WaitOutcome};
use sqlkiller_loom_tests::{check, with_expected_panics};

use KillSignal::*;

/// I2 for waiters, no lost wake-up: a thread registers a kill event and
/// blocks while another kills. Whether registration or kill comes first,
/// the waiter returns `Killed` (a check-then-sleep waiter would hang: see
/// `broken_check_then_sleep_waiter`).
#[test]
fn waiter_registers_while_kill_fires() {
    check(
        "waiter_registers_while_kill_fires",
        None,
        &["registered before kill", "registered after kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let k = Arc::clone(&killer);
            let waiter = thread::spawn(move || {
                let mut event = k.kill_event_for(statement);
                let early = event.try_outcome();
                (early, event.wait())
            });
            assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
            let (early, outcome) = waiter.join().unwrap();
            assert_eq!(outcome, WaitOutcome::Killed(QueryInterrupted));
            seen.saw(if early.is_some() {
                "registered after kill"
            } else {
                "registered before kill"
            });
        },
    );
}

/// The same race with the async event, polled by `loom::future::block_on`:
/// the waker registered by `poll` is woken by the kill.
#[test]
fn async_waiter_registers_while_kill_fires() {
    check(
        "async_waiter_registers_while_kill_fires",
        None,
        &["polled before kill", "polled after kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let polled_first = Arc::new(AtomicBool::new(false));
            let (k, p) = (Arc::clone(&killer), Arc::clone(&polled_first));
            let waiter = thread::spawn(move || {
                let mut event = k.kill_event_for(statement);
                p.store(event.try_outcome().is_none(), Relaxed);
                loom::future::block_on(event)
            });
            let _ = killer.send_kill_signal(MaxExecTimeExceeded);
            assert_eq!(
                waiter.join().unwrap(),
                WaitOutcome::Killed(MaxExecTimeExceeded)
            );
            seen.saw(if polled_first.load(Relaxed) {
                "polled before kill"
            } else {
                "polled after kill"
            });
        },
    );
}

/// Waiters of statement g while a targeted kill of g races `reset`. The
/// event registered while g was current ends with `Killed` exactly when the
/// kill landed on g, else `Reset`; a waiter on another thread that may
/// register late (after g ended, which reports `Reset`) never reports a kill
/// that did not land — and every waiter returns (I6).
#[test]
fn waiter_races_reset() {
    check(
        "waiter_races_reset",
        Some(4),
        &["Killed", "Reset"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let mut event = killer.kill_event();
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || k.kill_statement(statement, ServerMemoryExceeded));
            let k = Arc::clone(&killer);
            let waiter = thread::spawn(move || k.kill_event_for(statement).wait());
            let cleared = killer.reset();
            let landed = kill.join().unwrap() == KillOutcome::Sent;
            assert_eq!(landed, cleared.is_some());
            let expected = if landed {
                WaitOutcome::Killed(ServerMemoryExceeded)
            } else {
                WaitOutcome::Reset
            };
            let late = waiter.join().unwrap();
            assert!(
                late == expected || late == WaitOutcome::Reset,
                "{late:?} but expected {expected:?}"
            );
            assert_eq!(event.try_outcome(), Some(expected));
            seen.saw(if landed { "Killed" } else { "Reset" });
        },
    );
}

/// I7 and TiDB PR #70608: the owner installs a cancel hook while a kill
/// fires. The hook runs exactly once — by the killer, or at install time if
/// the kill won first — never zero times.
#[test]
fn hook_installed_while_kill_fires() {
    check(
        "hook_installed_while_kill_fires",
        None,
        &["hook ran by killer", "hook ran at install"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let runs = Arc::new(AtomicUsize::new(0));
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || k.send_kill_signal(QueryInterrupted));
            let r = Arc::clone(&runs);
            let status = killer.set_cancel_hook(move || {
                r.fetch_add(1, Relaxed);
            });
            assert_eq!(kill.join().unwrap(), KillOutcome::Sent);
            assert_eq!(
                runs.load(Relaxed),
                1,
                "cancel hook ran {} times",
                runs.load(Relaxed)
            );
            seen.saw(match status {
                HookStatus::Ran => "hook ran at install",
                HookStatus::Armed => "hook ran by killer",
                HookStatus::Stale => unreachable!("installed for the current statement"),
                _ => unreachable!(),
            });
        },
    );
}

/// I7 + I6: a kill races the `reset` that ends the hook's statement. The
/// hook runs once iff the kill landed on that statement, and never after
/// `reset` returned (reset waits for a kill that is still publishing).
#[test]
fn hook_races_reset() {
    check(
        "hook_races_reset",
        None,
        &["hook ran", "hook dropped"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let runs = Arc::new(AtomicUsize::new(0));
            let reset_returned = Arc::new(AtomicBool::new(false));
            let (r, done) = (Arc::clone(&runs), Arc::clone(&reset_returned));
            let _ = killer.set_cancel_hook(move || {
                assert!(!done.load(Acquire), "cancel hook ran after reset returned");
                r.fetch_add(1, Relaxed);
            });
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || k.send_kill_signal(QueryInterrupted));
            let cleared = killer.reset();
            reset_returned.store(true, Release);
            let _ = kill.join().unwrap();
            let ran = runs.load(Relaxed);
            assert_eq!(ran, usize::from(cleared.is_some()));
            seen.saw(if ran == 1 { "hook ran" } else { "hook dropped" });
        },
    );
}

/// I8: a killer runs the finish function while the owner clears it. After
/// `clear_finish_func` returns, the function is not running and never runs.
#[test]
fn finish_races_clear() {
    check(
        "finish_races_clear",
        None,
        &["finish ran", "finish cleared first"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let cleared = Arc::new(AtomicBool::new(false));
            let c = Arc::clone(&cleared);
            killer.set_finish_func(move || {
                assert!(
                    !c.load(Acquire),
                    "finish function ran after clear_finish_func returned"
                );
            });
            let k = Arc::clone(&killer);
            let finisher = thread::spawn(move || k.finish_result_set().unwrap());
            killer.clear_finish_func().unwrap();
            cleared.store(true, Release);
            let ran = finisher.join().unwrap();
            assert_eq!(killer.finish_result_set(), Ok(false));
            seen.saw(if ran {
                "finish ran"
            } else {
                "finish cleared first"
            });
        },
    );
}

/// A liveness check on another thread races `reset`. A dead connection
/// kills only the statement the probe ran for: the next statement is
/// killed only if the probe ran in it.
#[test]
fn probe_races_reset() {
    probe_on_another_thread_races_reset("probe_races_reset", |k| {
        assert!(!k.check_connection_alive());
    });
}

/// The same through the probe path of `handle_signal` (interval zero: the
/// probe is due at every check), the owner's check run on one thread while
/// a `reset` runs on another — a misuse of the owner's type, and still
/// safe: the probe's kill is aimed at the statement it probed.
#[test]
fn probe_path_of_handle_signal_races_reset() {
    probe_on_another_thread_races_reset("probe_path_of_handle_signal_races_reset", |k| {
        let _ = k.handle_signal();
    });
}

/// Installs a probe that says "dead" and records the statement it ran in,
/// runs `probe` on another thread while the owner resets, and checks that
/// the new statement is killed only if the probe ran in it.
fn probe_on_another_thread_races_reset(name: &str, probe: fn(&SqlKiller)) {
    check(
        name,
        None,
        &["probe in old statement", "probe in new statement"],
        move |seen| {
            let killer = Arc::new(SqlKiller::new());
            let first = killer.statement().as_u64();
            let probed = Arc::new(AtomicU64::new(u64::MAX));
            let p = Arc::clone(&probed);
            let k = Arc::clone(&killer);
            killer.set_probe_interval(Duration::ZERO);
            let _ = killer.set_connection_alive_probe(move || {
                p.store(k.statement().as_u64(), Relaxed);
                false // the client is gone
            });
            let k = Arc::clone(&killer);
            let checker = thread::spawn(move || probe(&k));
            killer.reset();
            checker.join().unwrap();
            let probed_in = probed.load(Relaxed);
            if killer.kill_signal().is_some() {
                assert_eq!(
                    probed_in,
                    first + 1,
                    "a probe of the old statement killed the new one"
                );
            }
            killer.clear_connection_alive_probe(); // the probe holds an Arc of the killer
            seen.saw(if probed_in == first {
                "probe in old statement"
            } else {
                "probe in new statement"
            });
        },
    );
}

/// I9: a kill arrives around a kill-immune section. Inside it no check
/// fails and the hook does not run; after the last guard drops, a kill that
/// returned `Sent` is reported by the first check, and the hook has run
/// exactly once.
#[test]
fn kill_inside_guard() {
    check(
        "kill_inside_guard",
        None,
        &[
            "killed before section",
            "killed inside section",
            "killed after section",
        ],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let in_section = Arc::new(AtomicBool::new(false));
            let runs = Arc::new(AtomicUsize::new(0));
            let (s, r) = (Arc::clone(&in_section), Arc::clone(&runs));
            let _ = killer.set_cancel_hook(move || {
                assert!(
                    !s.load(Acquire),
                    "cancel hook ran inside a kill-immune section"
                );
                r.fetch_add(1, Relaxed);
            });
            let sent = Arc::new(AtomicBool::new(false));
            let (k, done) = (Arc::clone(&killer), Arc::clone(&sent));
            let kill = thread::spawn(move || {
                assert_eq!(k.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
                done.store(true, Release);
            });
            let guard = killer.kill_immune();
            let ran_before = runs.load(Relaxed) == 1;
            in_section.store(true, Release);
            assert!(
                killer.handle_signal().is_ok(),
                "a check inside the section failed"
            );
            in_section.store(false, Release);
            drop(guard);
            let sent_after = sent.load(Acquire);
            let reported = killer.handle_signal().is_err();
            if sent_after {
                assert!(
                    reported,
                    "a kill that arrived in the section was never reported"
                );
            }
            kill.join().unwrap();
            assert!(killer.handle_signal().is_err());
            assert_eq!(runs.load(Relaxed), 1);
            seen.saw(match (ran_before, sent_after) {
                (true, _) => "killed before section",
                (false, true) => "killed inside section",
                (false, false) => "killed after section",
            });
        },
    );
}

/// I6 with a panicking hook: the kill's drop guard still moves the state to
/// `Killed`, so a racing `reset` returns; the killer stays usable.
#[test]
fn panicking_hook_races_reset() {
    with_expected_panics(|| {
        check(
            "panicking_hook_races_reset",
            None,
            &["hook panicked before reset", "hook dropped by reset"],
            |seen| {
                let killer = Arc::new(SqlKiller::new());
                let _ = killer.set_cancel_hook(|| panic!("hook failed"));
                let k = Arc::clone(&killer);
                let kill = thread::spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        k.send_kill_signal(QueryInterrupted)
                    }));
                    result.is_err()
                });
                let cleared = killer.reset();
                let panicked = kill.join().unwrap();
                assert_eq!(
                    panicked,
                    cleared.is_some(),
                    "the hook ran iff the kill landed first"
                );
                // Usable afterwards, whichever way it went.
                killer.reset();
                assert_eq!(
                    killer.send_kill_signal(MaxExecTimeExceeded),
                    KillOutcome::Sent
                );
                assert_eq!(killer.reset(), Some(MaxExecTimeExceeded));
                seen.saw(if panicked {
                    "hook panicked before reset"
                } else {
                    "hook dropped by reset"
                });
            },
        )
    });
}
