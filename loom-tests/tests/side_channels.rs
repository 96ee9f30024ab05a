//! Models of the side channels (invariants I2 for waiters, I6, I7, I8, I9; see `src/state.rs`) on
//! the real `SqlKiller`.
//!
//! A model is followed by its broken twin, where it has one: a few lines
//! of loom with the bug the model guards against, which loom must reject
//! (`assert_rejected`). If a twin ever passes, the model next to it proves
//! nothing. The hook's model for TiDB PR #70608 and its twin are in
//! `historic.rs`.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{KillOutcome, KillSignal, SqlKiller, WaitOutcome};
use sqlkiller_loom_tests::{assert_rejected, check, with_expected_panics};

use KillSignal::*;

/// A raw signal, for the twins written in TiDB's Go shape (`Signal uint32`).
const QUERY_INTERRUPTED: u32 = 1;

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

/// The classic lost wake-up: a waiter checks "not killed", the kill fires
/// and finds nobody to wake, then the waiter registers and goes to sleep —
/// for ever. (A real `park` here makes loom abort the whole test binary on
/// the deadlock, so the sleeper records that it went to sleep instead, and
/// the model asserts that every sleeper was woken.) Fixed model:
/// `waiter_registers_while_kill_fires`, above (registration is an
/// RMW on the state word, like the kill).
#[test]
fn broken_check_then_sleep_waiter() {
    assert_rejected(
        "broken_check_then_sleep_waiter",
        Some(2),
        "lost wake-up",
        || {
            struct GoKiller {
                signal: AtomicU32,
                waiter: Mutex<bool>,
            }
            let killer = Arc::new(GoKiller {
                signal: AtomicU32::new(0),
                waiter: Mutex::new(false),
            });
            let k = Arc::clone(&killer);
            let waiter = thread::spawn(move || {
                if k.signal.load(Acquire) == 0 {
                    // Registers *after* the check, then sleeps without looking again.
                    *k.waiter.lock().unwrap() = true;
                    return true; // asleep
                }
                false
            });
            // The kill: set the signal, wake whoever is registered.
            killer.signal.store(QUERY_INTERRUPTED, Release);
            let woken = std::mem::take(&mut *killer.waiter.lock().unwrap());
            let asleep = waiter.join().unwrap();
            assert!(
                !asleep || woken,
                "lost wake-up: the waiter sleeps on a killed statement"
            );
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

/// The owner blocks while a kill is publishing (`Killing`), then is woken
/// by the winner. Broken twin of `hook_races_reset` and
/// `edges::panicking_waker_during_kill` on that path: the owner checks "still
/// killing" and then parks, with no read-modify-write in between, so the
/// winner's "done: wake whoever parked" can fall between the check and the
/// park. (The owner records that it would sleep instead of sleeping: a
/// real deadlock aborts the loom binary.)
#[test]
fn broken_owner_parks_after_a_plain_check() {
    assert_rejected(
        "broken_owner_parks_after_a_plain_check",
        Some(2),
        "lost wake-up",
        || {
            struct Word {
                killed: AtomicBool,
                parked: AtomicBool,
                woken: Mutex<bool>,
            }
            let word = Arc::new(Word {
                killed: AtomicBool::new(false),
                parked: AtomicBool::new(false),
                woken: Mutex::new(false),
            });
            let w = Arc::clone(&word);
            let kill = thread::spawn(move || {
                w.killed.store(true, Release); // KILLED, a plain store
                if w.parked.load(Acquire) {
                    *w.woken.lock().unwrap() = true; // notify the parked owner
                }
            });
            // reset: "still killing? then park".
            let sleeps = !word.killed.load(Acquire);
            if sleeps {
                word.parked.store(true, Release);
            }
            kill.join().unwrap();
            if sleeps {
                assert!(
                    *word.woken.lock().unwrap(),
                    "lost wake-up: the owner sleeps on a published kill"
                );
            }
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

/// I8's bug: `ClearFinishFunc` that only swaps the function out, without
/// waiting for a `FinishResultSet` already running it, returns while the
/// old function still runs — it may then touch a result set the session has
/// already freed. Fixed model: `finish_races_clear`, above.
#[test]
fn broken_finish_called_outside_the_fence() {
    assert_rejected(
        "broken_finish_called_outside_the_fence",
        Some(2),
        "ran after clear",
        || {
            type Finish = std::sync::Arc<dyn Fn() + Send + Sync>;
            let slot: Arc<Mutex<Option<Finish>>> = Arc::new(Mutex::new(None));
            let cleared = Arc::new(AtomicU32::new(0));
            let c = Arc::clone(&cleared);
            *slot.lock().unwrap() = Some(std::sync::Arc::new(move || {
                assert_eq!(
                    c.load(Acquire),
                    0,
                    "finish function ran after clear returned"
                );
            }));
            let s = Arc::clone(&slot);
            let finisher = thread::spawn(move || {
                // FinishResultSet: take a reference under the lock, call it outside.
                let finish = s.lock().unwrap().clone();
                if let Some(finish) = finish {
                    finish();
                }
            });
            *slot.lock().unwrap() = None; // ClearFinishFunc
            cleared.store(1, Release);
            finisher.join().unwrap();
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

/// Broken twin of `probe_races_reset` and
/// `probe_path_of_handle_signal_races_reset`: the probe kills with a plain,
/// untargeted kill. A
/// probe that ran for the old statement lands its kill on the new one.
#[test]
fn broken_probe_kill_untargeted() {
    assert_rejected(
        "broken_probe_kill_untargeted",
        Some(2),
        "killed the new one",
        || {
            let killer = Arc::new(SqlKiller::new());
            let first = killer.statement();
            let k = Arc::clone(&killer);
            let worker = thread::spawn(move || {
                let probed = k.statement(); // the probe runs: the client is gone
                let outcome = k.send_kill_signal(QueryInterrupted);
                (probed, outcome)
            });
            killer.reset();
            let (probed, _) = worker.join().unwrap();
            if killer.kill_signal().is_some() {
                assert_ne!(
                    probed, first,
                    "a probe of the old statement killed the new one"
                );
            }
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

/// I9's bug: kill immunity as a flag that only `HandleSignal` reads. The
/// killer checks "not immune" and then runs the cancel hook; the owner sets
/// the flag in between and enters its COMMIT, whose in-flight RPC the hook
/// then cancels — past the point of no return. (MySQL's `kill_immunizer`
/// exists because of this class of bug.) Fixed model:
/// `kill_inside_guard`, above (entering is an RMW on the state word,
/// and a kill already serving its side effects is waited for).
#[test]
fn broken_immunity_checked_then_acted_on() {
    assert_rejected(
        "broken_immunity_checked_then_acted_on",
        Some(2),
        "inside the section",
        || {
            struct GoKiller {
                signal: AtomicU32,
                immune: AtomicU32,
                in_section: AtomicU32,
            }
            let killer = Arc::new(GoKiller {
                signal: AtomicU32::new(0),
                immune: AtomicU32::new(0),
                in_section: AtomicU32::new(0),
            });
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || {
                if k.signal
                    .compare_exchange(0, QUERY_INTERRUPTED, AcqRel, Acquire)
                    .is_ok()
                    && k.immune.load(Acquire) == 0
                {
                    // The cancel hook: cancels whatever RPC is in flight.
                    assert_eq!(
                        k.in_section.load(Acquire),
                        0,
                        "cancel hook ran inside the section: the COMMIT's RPC was cancelled"
                    );
                }
            });
            // The owner: enter the section, run the COMMIT, leave.
            killer.immune.store(1, Release);
            killer.in_section.store(1, Release);
            killer.in_section.store(0, Release);
            killer.immune.store(0, Release);
            kill.join().unwrap();
        },
    );
}

/// Hooks installed after a kill inside a kill-immune section are owed, as
/// a list (any number of them, run in order without recursion): one by the
/// owner, one by an RPC thread naming the statement, racing the section's
/// end. I7: each runs exactly once, never inside the section: owed and run
/// by `release`, or (installed after the section ended) run at install.
#[test]
fn owed_hooks_installed_from_two_threads_all_run() {
    check(
        "owed_hooks_installed_from_two_threads_all_run",
        Some(3),
        &["rpc hook owed", "rpc hook ran at install"],
        |seen| {
            let killer = SqlKiller::new();
            let statement = killer.statement();
            let handle = killer.handle();
            let in_section = Arc::new(AtomicBool::new(true));
            let (owner_runs, rpc_runs) =
                (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let guard = killer.kill_immune();
            assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
            let (s, r, h) = (
                Arc::clone(&in_section),
                Arc::clone(&rpc_runs),
                handle.clone(),
            );
            let rpc = thread::spawn(move || {
                handle.set_cancel_hook_for(statement, move || {
                    assert!(
                        !s.load(Acquire) && !h.is_kill_immune(),
                        "an owed hook ran inside the section"
                    );
                    r.fetch_add(1, Relaxed);
                })
            });
            let (s, o, h) = (
                Arc::clone(&in_section),
                Arc::clone(&owner_runs),
                killer.handle(),
            );
            let _ = killer.set_cancel_hook(move || {
                assert!(
                    !s.load(Acquire) && !h.is_kill_immune(),
                    "an owed hook ran inside the section"
                );
                o.fetch_add(1, Relaxed);
            });
            in_section.store(false, Release);
            guard.release();
            let status = rpc.join().unwrap();
            assert_eq!(owner_runs.load(Relaxed), 1, "the owner's owed hook");
            assert_eq!(rpc_runs.load(Relaxed), 1, "the RPC thread's hook");
            seen.saw(match status {
                sqlkiller::HookStatus::Armed => "rpc hook owed",
                sqlkiller::HookStatus::Ran => "rpc hook ran at install",
                other => panic!("{other:?}"),
            });
        },
    );
}

/// Broken twin: owed hooks kept in one slot, so a second install inside
/// the section replaces the first, which is lost (dropped un-run).
#[test]
fn broken_owed_hook_replaced_in_one_slot() {
    assert_rejected(
        "broken_owed_hook_replaced_in_one_slot",
        Some(2),
        "an owed hook was lost",
        || {
            let slot: Arc<Mutex<Option<u32>>> = Arc::new(Mutex::new(None));
            let s = Arc::clone(&slot);
            let rpc = thread::spawn(move || {
                *s.lock().unwrap() = Some(2); // the RPC thread's hook
            });
            *slot.lock().unwrap() = Some(1); // the owner's hook
            rpc.join().unwrap();
            // the section ends: run what is owed
            let ran: Vec<u32> = slot.lock().unwrap().take().into_iter().collect();
            assert_eq!(ran.len(), 2, "an owed hook was lost");
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
