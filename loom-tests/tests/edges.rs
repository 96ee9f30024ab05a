//! Models of the edges, where user code enters: panicking wakers, hooks run
//! at install racing `reset` and guard entry, waiters inside a kill-immune
//! section, a future's waker replaced or the future dropped, stale hook
//! installs and stale probe clears, a panicking finish function and probe.
//!
//! Each real model on the real `SqlKiller` is followed by its broken twin:
//! a few lines of loom with the bug the model guards against, which loom
//! must reject (`assert_rejected`). If a twin ever passes, the model next
//! to it proves nothing.
#![cfg(loom)]

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Wake, Waker};

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{HookStatus, KillOutcome, KillSignal, ManualClock, SqlKiller, WaitOutcome};
use sqlkiller_loom_tests::{assert_rejected, check, with_expected_panics};

use KillSignal::*;

/// A waker whose `wake` panics (a buggy executor).
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc2<Self>) {
        panic!("waker failed");
    }
}

/// `Wake` takes a std `Arc`, whatever the model uses for its own sharing.
type Arc2<T> = std::sync::Arc<T>;

/// A waker that records that it was woken.
struct FlagWaker(std::sync::atomic::AtomicBool);

impl Wake for FlagWaker {
    fn wake(self: Arc2<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

// ---- a panicking waker during a kill ---------------------------------------

/// I6 + I2 with user code that fails: a future's waker panics while a kill
/// serves it, a thread waits on the same statement, and the owner resets.
/// Whatever the order: `reset` returns (nothing is left counted), the
/// thread waiter wakes with the outcome of the statement, the hook runs iff
/// the kill landed, and the waker's panic reaches the killing thread only.
/// (Before the fix the panic skipped the later wake-ups and the hook, and
/// left the hook counted as running: `reset` spun for ever.)
#[test]
fn panicking_waker_during_kill() {
    with_expected_panics(|| {
        check(
            "panicking_waker_during_kill",
            Some(3),
            &["kill landed", "reset first"],
            |seen| {
                let killer = Arc::new(SqlKiller::new());
                let statement = killer.statement();
                let mut future = killer.kill_event();
                let waker = Waker::from(Arc2::new(PanickingWaker));
                let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
                assert_eq!(polled, Poll::Pending);
                let hook_runs = Arc::new(AtomicUsize::new(0));
                let h = Arc::clone(&hook_runs);
                let _ = killer.set_cancel_hook(move || {
                    h.fetch_add(1, Relaxed);
                });
                let k = Arc::clone(&killer);
                let waiter = thread::spawn(move || k.kill_event_for(statement).wait());
                let k = Arc::clone(&killer);
                let kill = thread::spawn(move || {
                    catch_unwind(AssertUnwindSafe(|| {
                        k.kill_statement(statement, QueryInterrupted)
                    }))
                });
                // The panicking waker is woken by whichever ends the
                // statement: the kill that lands, or else `reset`; its panic
                // reaches that caller, after the statement has moved on.
                let reset = catch_unwind(AssertUnwindSafe(|| killer.reset()));
                let landed = match kill.join().unwrap() {
                    Err(_) => true,
                    Ok(outcome) => {
                        assert_eq!(
                            outcome,
                            KillOutcome::Stale,
                            "a landed kill serves the waker"
                        );
                        false
                    }
                };
                match reset {
                    Ok(cleared) => {
                        assert!(landed, "reset ended the statement without waking the waker");
                        assert_eq!(cleared, Some(QueryInterrupted));
                    }
                    Err(_) => assert!(!landed, "the waker was woken twice"),
                }
                assert_ne!(killer.statement(), statement, "the statement ended");
                let expected = if landed {
                    WaitOutcome::Killed(QueryInterrupted)
                } else {
                    WaitOutcome::Reset
                };
                let woke = waiter.join().unwrap();
                assert!(woke == expected || woke == WaitOutcome::Reset, "{woke:?}");
                assert_eq!(hook_runs.load(Relaxed), usize::from(landed));
                drop(future);
                seen.saw(if landed { "kill landed" } else { "reset first" });
            },
        )
    });
}

/// Broken twin: the kill counts its hook as running, wakes the wakers, and
/// only then takes a guard that uncounts it. A panicking waker leaves the
/// count raised, and the owner, which waits for zero, would sleep for ever.
/// (A real blocking wait here makes loom abort the whole test binary on the
/// deadlock, so the model asserts on the count the owner would wait for.)
#[test]
fn broken_hook_counted_without_a_guard() {
    assert_rejected(
        "broken_hook_counted_without_a_guard",
        Some(2),
        "reset would wait for ever",
        || {
            let runners = Arc::new(Mutex::new(0u32));
            let r = Arc::clone(&runners);
            let kill = thread::spawn(move || {
                *r.lock().unwrap() += 1; // the hook is taken out: counted
                let served = catch_unwind(AssertUnwindSafe(|| {
                    panic!("waker failed"); // the wakers run first, unguarded
                }));
                if served.is_ok() {
                    *r.lock().unwrap() -= 1; // after the hook
                }
            });
            kill.join().unwrap();
            assert_eq!(
                *runners.lock().unwrap(),
                0,
                "hook still counted as running: reset would wait for ever"
            );
        },
    );
}

// ---- hooks run at install --------------------------------------------------

/// I7 + I6: the statement is already killed when an RPC thread installs its
/// hook for it, so the hook runs at install, on that thread, while the
/// owner resets. The hook never runs after `reset` returned: either reset
/// came first and the install is `Stale`, or reset waits (parked) for the
/// running hook. Removing that wait from `reset` fails this model.
#[test]
fn hook_run_at_install_races_reset() {
    check(
        "hook_run_at_install_races_reset",
        None,
        &["ran at install", "stale"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
            let reset_returned = Arc::new(AtomicBool::new(false));
            let (k, done) = (Arc::clone(&killer), Arc::clone(&reset_returned));
            let rpc = thread::spawn(move || {
                k.set_cancel_hook_for(statement, move || {
                    thread::yield_now(); // the hook takes a while
                    assert!(
                        !done.load(Acquire),
                        "hook still running after reset returned"
                    );
                })
            });
            assert_eq!(killer.reset(), Some(QueryInterrupted));
            reset_returned.store(true, Release);
            let status = rpc.join().unwrap();
            seen.saw(match status {
                HookStatus::Ran => "ran at install",
                HookStatus::Stale => "stale",
                HookStatus::Armed => panic!("armed on a killed statement"),
                _ => unreachable!(),
            });
        },
    );
}

/// I9: the same hook run at install races the owner entering a kill-immune
/// section. No hook runs inside the section: it finished before the guard
/// was granted (entry waits for it), or it is owed until the section ends.
/// Removing that wait from `kill_immune` fails this model.
#[test]
fn hook_run_at_install_races_guard_entry() {
    check(
        "hook_run_at_install_races_guard_entry",
        None,
        &["ran at install", "owed to the section's end"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
            let in_section = Arc::new(AtomicBool::new(false));
            let runs = Arc::new(AtomicUsize::new(0));
            let (k, s, r) = (
                Arc::clone(&killer),
                Arc::clone(&in_section),
                Arc::clone(&runs),
            );
            let rpc = thread::spawn(move || {
                k.set_cancel_hook_for(statement, move || {
                    thread::yield_now();
                    assert!(!s.load(Acquire), "hook ran inside a kill-immune section");
                    r.fetch_add(1, Relaxed);
                })
            });
            let guard = killer.kill_immune();
            in_section.store(true, Release);
            assert!(killer.handle_signal().is_ok());
            in_section.store(false, Release);
            guard.release();
            let status = rpc.join().unwrap();
            assert_eq!(
                runs.load(Relaxed),
                1,
                "the hook of a killed statement runs once"
            );
            seen.saw(match status {
                HookStatus::Ran => "ran at install",
                HookStatus::Armed => "owed to the section's end",
                HookStatus::Stale => panic!("no reset happened"),
                _ => unreachable!(),
            });
        },
    );
}

/// Broken twin of both: the owner ends the statement (or enters the
/// section) without waiting for a hook that another thread took out of the
/// table and is running.
#[test]
fn broken_reset_ignores_a_running_hook() {
    assert_rejected(
        "broken_reset_ignores_a_running_hook",
        Some(2),
        "after reset returned",
        || {
            let hook_slot = Arc::new(Mutex::new(Some(())));
            let reset_returned = Arc::new(AtomicBool::new(false));
            let (slot, done) = (Arc::clone(&hook_slot), Arc::clone(&reset_returned));
            let rpc = thread::spawn(move || {
                // Installed on a killed statement: run at once.
                let taken = slot.lock().unwrap().take();
                if taken.is_some() {
                    thread::yield_now();
                    assert!(
                        !done.load(Acquire),
                        "hook still running after reset returned"
                    );
                }
            });
            // reset: drops whatever hook is left, waits for nothing.
            hook_slot.lock().unwrap().take();
            reset_returned.store(true, Release);
            rpc.join().unwrap();
        },
    );
}

// ---- waiters inside a kill-immune section ----------------------------------

/// I9 + I2: a thread registers a kill event while the owner is inside a
/// kill-immune section and a kill arrives. The waiter never wakes inside
/// the section; it wakes with `Killed` once the section has ended (here:
/// dropped, then delivered by the owner's next check).
#[test]
fn waiter_registers_inside_guard() {
    check(
        "waiter_registers_inside_guard",
        None,
        &["registered before kill", "registered after kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let guard = killer.kill_immune();
            let in_section = Arc::new(AtomicBool::new(true));
            let registered = Arc::new(AtomicBool::new(false));
            let killed = Arc::new(AtomicBool::new(false));
            let (k, s, r, d) = (
                Arc::clone(&killer),
                Arc::clone(&in_section),
                Arc::clone(&registered),
                Arc::clone(&killed),
            );
            let waiter = thread::spawn(move || {
                let after_kill = d.load(Acquire);
                let mut event = k.kill_event_for(statement);
                r.store(true, Release);
                if event.try_outcome().is_some() {
                    assert!(!s.load(Acquire), "a waiter completed inside the section");
                }
                let outcome = event.wait();
                assert!(
                    !s.load(Acquire),
                    "a waiter woke inside the kill-immune section"
                );
                (after_kill, outcome)
            });
            let (k, r, d) = (
                Arc::clone(&killer),
                Arc::clone(&registered),
                Arc::clone(&killed),
            );
            let kill = thread::spawn(move || {
                let outcome = k.send_kill_signal(QueryInterrupted);
                d.store(true, Release);
                (outcome, r.load(Acquire))
            });
            let (outcome, before_kill) = kill.join().unwrap();
            assert_eq!(outcome, KillOutcome::Sent);
            assert!(killer.handle_signal().is_ok());
            in_section.store(false, Release);
            drop(guard);
            assert!(killer.handle_signal().is_err());
            let (after_kill, woke) = waiter.join().unwrap();
            assert_eq!(woke, WaitOutcome::Killed(QueryInterrupted));
            if before_kill {
                seen.saw("registered before kill");
            }
            if after_kill {
                seen.saw("registered after kill");
            }
        },
    );
}

/// Broken twin: registration completes a waiter at once when it sees the
/// signal, without looking at the kill-immune flag, so a waiter that
/// registers after a kill inside the section wakes inside it.
#[test]
fn broken_waiter_ignores_the_section() {
    assert_rejected(
        "broken_waiter_ignores_the_section",
        Some(2),
        "inside the kill-immune section",
        || {
            let signal = Arc::new(AtomicU32::new(0));
            let in_section = Arc::new(AtomicBool::new(true)); // the owner holds a guard
            let (sig, s) = (Arc::clone(&signal), Arc::clone(&in_section));
            let waiter = thread::spawn(move || {
                if sig.load(Acquire) != 0 {
                    // "killed: complete at once"
                    assert!(
                        !s.load(Acquire),
                        "a waiter woke inside the kill-immune section"
                    );
                }
            });
            signal.store(1, Release); // a kill inside the section
            waiter.join().unwrap();
            in_section.store(false, Release);
        },
    );
}

// ---- a future's waker replaced, a future dropped ---------------------------

/// I2 for tasks: a future is polled with one waker, then moved to another
/// task and polled with a second one, while a kill fires. The kill must
/// wake the waker of the latest poll (`block_on` would otherwise sleep for
/// ever: loom reports the deadlock).
#[test]
fn future_waker_replaced_while_kill_fires() {
    check(
        "future_waker_replaced_while_kill_fires",
        None,
        &["first poll pending", "first poll ready"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let k = Arc::clone(&killer);
            let task = thread::spawn(move || {
                let mut event = k.kill_event_for(statement);
                let first = Waker::from(Arc2::new(FlagWaker(Default::default())));
                let polled = Pin::new(&mut event).poll(&mut Context::from_waker(&first));
                // Moved on: polled again by another executor's waker.
                (polled.is_pending(), loom::future::block_on(event))
            });
            assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
            let (pending, outcome) = task.join().unwrap();
            assert_eq!(outcome, WaitOutcome::Killed(QueryInterrupted));
            seen.saw(if pending {
                "first poll pending"
            } else {
                "first poll ready"
            });
        },
    );
}

/// A registered future is dropped (its task was cancelled) while a kill
/// fires and another waiter waits. The drop removes only its own entry;
/// the other waiter still wakes, and the kill is undisturbed.
#[test]
fn future_dropped_while_kill_fires() {
    check(
        "future_dropped_while_kill_fires",
        Some(3),
        &["dropped before kill", "dropped after kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let statement = killer.statement();
            let mut cancelled = killer.kill_event();
            let flag = Arc2::new(FlagWaker(Default::default()));
            let waker = Waker::from(Arc2::clone(&flag));
            let polled = Pin::new(&mut cancelled).poll(&mut Context::from_waker(&waker));
            assert!(polled.is_pending());
            let k = Arc::clone(&killer);
            let waiter = thread::spawn(move || k.kill_event_for(statement).wait());
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || k.send_kill_signal(QueryInterrupted));
            drop(cancelled);
            assert_eq!(kill.join().unwrap(), KillOutcome::Sent);
            assert_eq!(
                waiter.join().unwrap(),
                WaitOutcome::Killed(QueryInterrupted)
            );
            seen.saw(if flag.0.load(std::sync::atomic::Ordering::SeqCst) {
                "dropped after kill"
            } else {
                "dropped before kill"
            });
        },
    );
}

/// Broken twin: a re-poll checks "no outcome yet" under the lock, and
/// stores its new waker in a second critical section. A kill in between
/// wakes the old waker, and the new one is never woken: the task hangs.
#[test]
fn broken_waker_replaced_in_two_steps() {
    assert_rejected(
        "broken_waker_replaced_in_two_steps",
        Some(2),
        "never woken",
        || {
            struct Entry {
                outcome: Option<u32>,
                waker: u32, // which waker is registered
            }
            let entry = Arc::new(Mutex::new(Entry {
                outcome: None,
                waker: 1,
            }));
            let woken = Arc::new(AtomicU32::new(0));
            let (e, w) = (Arc::clone(&entry), Arc::clone(&woken));
            let kill = thread::spawn(move || {
                let mut entry = e.lock().unwrap();
                entry.outcome = Some(1);
                w.store(entry.waker, Release); // wake the registered waker
            });
            // The second poll, with waker 2.
            let pending = entry.lock().unwrap().outcome.is_none();
            if pending {
                entry.lock().unwrap().waker = 2;
            }
            kill.join().unwrap();
            if pending {
                assert_eq!(woken.load(Acquire), 2, "the new waker was never woken");
            }
        },
    );
}

// ---- stale installs and clears ---------------------------------------------

/// I3 for hooks: an RPC thread of statement g installs its cancel hook for
/// g while the owner moves on to g + 1, whose KILL then arrives. The hook
/// of g never runs (g was not killed): it was either installed in time and
/// dropped by `reset`, or refused as `Stale`. It never replaces the hook of
/// g + 1, which runs.
#[test]
fn stale_hook_install_races_reset() {
    check(
        "stale_hook_install_races_reset",
        None,
        &["installed, then dropped by reset", "stale"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let old = killer.statement();
            let old_runs = Arc::new(AtomicUsize::new(0));
            let (k, r) = (Arc::clone(&killer), Arc::clone(&old_runs));
            let rpc = thread::spawn(move || {
                k.set_cancel_hook_for(old, move || {
                    r.fetch_add(1, Relaxed);
                })
            });
            assert_eq!(killer.reset(), None);
            let new = killer.statement();
            let new_runs = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&new_runs);
            let _ = killer.set_cancel_hook_for(new, move || {
                r.fetch_add(1, Relaxed);
            });
            let status = rpc.join().unwrap();
            assert_eq!(
                killer.kill_statement(new, QueryInterrupted),
                KillOutcome::Sent
            );
            assert_eq!(
                old_runs.load(Relaxed),
                0,
                "the hook of statement g ran for g + 1"
            );
            assert_eq!(new_runs.load(Relaxed), 1, "the hook of g + 1 was replaced");
            seen.saw(match status {
                HookStatus::Armed => "installed, then dropped by reset",
                HookStatus::Stale => "stale",
                HookStatus::Ran => panic!("g was never killed"),
                _ => unreachable!(),
            });
        },
    );
}

/// Broken twin, on the real crate misused: the RPC thread checks "is my
/// statement still current?" and then installs with the unscoped
/// `set_cancel_hook`. The owner's reset falls in between, the hook lands on
/// g + 1, and the KILL of g + 1 cancels the old RPC.
#[test]
fn broken_hook_install_check_then_act() {
    assert_rejected(
        "broken_hook_install_check_then_act",
        Some(2),
        "ran for g + 1",
        || {
            let killer = Arc::new(SqlKiller::new());
            let old = killer.statement();
            let old_runs = Arc::new(AtomicUsize::new(0));
            let (k, r) = (Arc::clone(&killer), Arc::clone(&old_runs));
            let rpc = thread::spawn(move || {
                if k.statement() == old {
                    let _ = k.set_cancel_hook(move || {
                        r.fetch_add(1, Relaxed);
                    });
                }
            });
            killer.reset();
            rpc.join().unwrap();
            let new = killer.statement();
            let _ = killer.kill_statement(new, QueryInterrupted);
            assert_eq!(
                old_runs.load(Relaxed),
                0,
                "the hook of statement g ran for g + 1"
            );
        },
    );
}

/// A connection's cleanup removes the probe it installed while a reconnect
/// installs a new one. The cleanup never removes the newer probe.
#[test]
fn stale_probe_clear_races_install() {
    check(
        "stale_probe_clear_races_install",
        None,
        &["cleared before install", "install before stale clear"],
        |seen| {
            let killer = Arc::new(SqlKiller::with_clock(&ManualClock::new()));
            let old = killer.set_connection_alive_probe(|| true);
            let k = Arc::clone(&killer);
            let cleanup = thread::spawn(move || k.clear_connection_alive_probe_if(old));
            let new_probed = Arc::new(AtomicBool::new(false));
            let p = Arc::clone(&new_probed);
            let _ = killer.set_connection_alive_probe(move || {
                p.store(true, Relaxed);
                true
            });
            let cleared = cleanup.join().unwrap();
            assert!(killer.check_connection_alive());
            assert!(
                new_probed.load(Relaxed),
                "a stale cleanup removed the newer probe"
            );
            seen.saw(if cleared {
                "cleared before install"
            } else {
                "install before stale clear"
            });
        },
    );
}

/// Broken twin, on the real crate misused: the cleanup clears
/// unconditionally, as TiDB did before it used a compare-and-swap.
#[test]
fn broken_probe_clear_unconditional() {
    assert_rejected(
        "broken_probe_clear_unconditional",
        Some(2),
        "removed the newer probe",
        || {
            let killer = Arc::new(SqlKiller::with_clock(&ManualClock::new()));
            let _old = killer.set_connection_alive_probe(|| true);
            let k = Arc::clone(&killer);
            let cleanup = thread::spawn(move || k.clear_connection_alive_probe());
            let new_probed = Arc::new(AtomicBool::new(false));
            let p = Arc::clone(&new_probed);
            let _ = killer.set_connection_alive_probe(move || {
                p.store(true, Relaxed);
                true
            });
            cleanup.join().unwrap();
            killer.check_connection_alive();
            assert!(
                new_probed.load(Relaxed),
                "a stale cleanup removed the newer probe"
            );
        },
    );
}

// ---- panicking probe and finish function ------------------------------------

/// I6 and I8 with a finish function that panics while the owner clears it:
/// the panic reaches the thread that ran it, `clear_finish_func` returns
/// (it is not left waiting for a run that unwound), and the panicked
/// function is removed.
#[test]
fn panicking_finish_races_clear() {
    with_expected_panics(|| {
        check(
            "panicking_finish_races_clear",
            None,
            &["finish panicked", "cleared first"],
            |seen| {
                let killer = Arc::new(SqlKiller::new());
                killer.set_finish_func(|| panic!("finish failed"));
                let k = Arc::clone(&killer);
                let finisher = thread::spawn(move || {
                    catch_unwind(AssertUnwindSafe(|| k.finish_result_set())).is_err()
                });
                killer.clear_finish_func().unwrap();
                let panicked = finisher.join().unwrap();
                assert_eq!(killer.finish_result_set(), Ok(false));
                seen.saw(if panicked {
                    "finish panicked"
                } else {
                    "cleared first"
                });
            },
        )
    });
}

/// Broken twin of `panicking_finish_races_clear`: the run marks itself
/// finished only when the function returns normally, so a panic leaves it
/// "running" and `clear_finish_func` would wait for ever (recorded, not
/// slept).
#[test]
fn broken_finish_run_ended_only_on_return() {
    assert_rejected(
        "broken_finish_run_ended_only_on_return",
        Some(2),
        "would wait for ever",
        || {
            let running = Arc::new(AtomicBool::new(false));
            let r = Arc::clone(&running);
            let finisher = thread::spawn(move || {
                r.store(true, Release);
                let ran = catch_unwind(AssertUnwindSafe(|| panic!("finish failed")));
                if ran.is_ok() {
                    r.store(false, Release); // never reached: the run panicked
                }
            });
            finisher.join().unwrap();
            assert!(
                !running.load(Acquire),
                "clear_finish_func would wait for ever for a run that unwound"
            );
        },
    );
}

/// I6 and I3 with a probe that panics on a dead-connection checker's thread
/// while the owner resets: the panic reaches the checker, `reset` returns,
/// no statement is killed, and the probe stays installed.
#[test]
fn panicking_probe_races_reset() {
    with_expected_panics(|| {
        check(
            "panicking_probe_races_reset",
            None,
            &["probe panicked"],
            |seen| {
                let killer = Arc::new(SqlKiller::with_clock(&ManualClock::new()));
                let _probe = killer.set_connection_alive_probe(|| panic!("probe failed"));
                let k = Arc::clone(&killer);
                let checker = thread::spawn(move || {
                    catch_unwind(AssertUnwindSafe(|| k.check_connection_alive())).is_err()
                });
                assert_eq!(killer.reset(), None);
                assert!(
                    checker.join().unwrap(),
                    "the probe's panic reaches its caller"
                );
                assert_eq!(killer.kill_signal(), None);
                assert!(
                    catch_unwind(AssertUnwindSafe(|| killer.check_connection_alive())).is_err()
                );
                seen.saw("probe panicked");
            },
        )
    });
}
