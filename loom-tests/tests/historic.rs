//! Deliberately broken models: TiDB's historic `SQLKiller` bugs,
//! each ported to a few lines of loom, each rejected by loom.
//!
//! Every test here passes *only because loom finds the bug*: if a broken
//! model ever passes, the real model next to it (in `signal.rs`) proves
//! nothing, and `assert_rejected` fails the test. The ports keep the Go
//! shape (`Signal uint32`, plain fields, `Reset` as separate steps) so a TiDB
//! engineer can match them line by line.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{KillSignal, SqlKiller};
use sqlkiller_loom_tests::{assert_rejected, PlainField};

const QUERY_INTERRUPTED: u32 = 1;
const MAX_EXEC_TIME_EXCEEDED: u32 = 2;

/// TiDB #55467: `SendKillSignal` logged the plain field `ConnID` while
/// `ResetContextOfStmt` wrote it. Go's race detector caught it in
/// `TestTiFlashBatchKill`; loom reports the same unordered accesses.
/// Fixed model: `signal::seed_55467_conn_id_races_reset`.
#[test]
fn broken_55467_plain_conn_id() {
    assert_rejected(
        "broken_55467_plain_conn_id",
        Some(2),
        "Causality violation",
        || {
            struct GoKiller {
                signal: AtomicU32,
                conn_id: PlainField,
            }
            let killer = Arc::new(GoKiller {
                signal: AtomicU32::new(0),
                conn_id: PlainField::new(1),
            });
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || {
                // SendKillSignal
                if k.signal
                    .compare_exchange(0, QUERY_INTERRUPTED, AcqRel, Acquire)
                    .is_ok()
                {
                    let _logged = k.conn_id.read(); // zap.Uint64("connection ID", killer.ConnID)
                }
            });
            // ResetContextOfStmt
            killer.conn_id.write(2);
            killer.signal.store(0, Release);
            t.join().unwrap();
        },
    );
}

/// TiDB #70545: after winning its CAS, `SendKillSignal` re-loaded the signal
/// to build its log message; a `Reset` in between cleared it, the error
/// lookup returned nil and logging panicked — the KILL statement failed.
/// Fixed model: `signal::kill_races_reset` (the winner keeps the signal it
/// wrote, and `reset` waits for it to publish).
#[test]
fn broken_70545_reload_after_cas() {
    assert_rejected(
        "broken_70545_reload_after_cas",
        Some(2),
        "nil kill error",
        || {
            fn kill_error(status: u32) -> Option<&'static str> {
                (status != 0).then_some("Query execution was interrupted")
            }
            let signal = Arc::new(AtomicU32::new(0));
            let s = Arc::clone(&signal);
            let t = thread::spawn(move || {
                if s.compare_exchange(0, QUERY_INTERRUPTED, AcqRel, Acquire)
                    .is_ok()
                {
                    let status = s.load(Acquire); // the re-load
                    let err = kill_error(status).expect("nil kill error: Reset cleared the signal");
                    let _log = err.len();
                }
            });
            signal.swap(0, AcqRel); // Reset
            t.join().unwrap();
        },
    );
}

/// TiDB #70545 / PR #70557: `Reset` was a load then a separate store. A
/// kill that lands between them returns "sent" but is neither reported by
/// `Reset` nor visible to the next statement: a lost kill.
/// Fixed model: `signal::kill_races_reset` (one CAS from the state read).
#[test]
fn broken_reset_as_load_then_store() {
    assert_rejected(
        "broken_reset_as_load_then_store",
        Some(2),
        "lost kill",
        || {
            let signal = Arc::new(AtomicU32::new(0));
            let s = Arc::clone(&signal);
            let t = thread::spawn(move || {
                s.compare_exchange(0, MAX_EXEC_TIME_EXCEEDED, AcqRel, Acquire)
                    .is_ok()
            });
            // Reset: log "kill finished" if set, then clear.
            let cleared = signal.load(Acquire);
            signal.store(0, Release);
            let sent = t.join().unwrap();
            let carried = signal.load(Acquire);
            if sent {
                assert!(
                    cleared == MAX_EXEC_TIME_EXCEEDED || carried == MAX_EXEC_TIME_EXCEEDED,
                    "lost kill: Sent, but neither reset nor the next statement saw it"
                );
            }
        },
    );
}

/// The classic stale kill (MySQL, PostgreSQL and TiDB alike): a `KILL QUERY`
/// for statement N checks "is N still running?" and then sends a plain
/// kill; the owner moves to N+1 in between and the kill hits N+1. Written
/// against the real crate, misused: check-then-act instead of
/// `kill_statement`. Fixed model: `signal::kill_statement_races_reset`.
#[test]
fn broken_stale_kill_check_then_act() {
    assert_rejected(
        "broken_stale_kill_check_then_act",
        Some(2),
        "next statement was killed",
        || {
            let killer = Arc::new(SqlKiller::new());
            let target = killer.statement();
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || {
                if k.statement() == target {
                    let _ = k.send_kill_signal(KillSignal::QueryInterrupted);
                }
            });
            killer.reset(); // statement N ends; N+1 starts
            t.join().unwrap();
            assert_eq!(
                killer.kill_signal(),
                None,
                "stale KILL QUERY: the next statement was killed"
            );
        },
    );
}

/// TiDB's `SendKillSignalWithKillEventReason` writes `desc` under the event
/// mutex *before* the signal CAS, so a losing killer overwrites the winner's
/// reason: the error pairs one kill's signal with another's reason (I4).
/// Fixed model: `signal::reason_travels_with_signal`.
#[test]
fn broken_reason_written_before_cas() {
    assert_rejected(
        "broken_reason_written_before_cas",
        Some(2),
        "torn reason",
        || {
            struct GoKiller {
                signal: AtomicU32,
                desc: Mutex<&'static str>,
            }
            let killer = Arc::new(GoKiller {
                signal: AtomicU32::new(0),
                desc: Mutex::new(""),
            });
            let spawn = |signal: u32, desc: &'static str| {
                let k = Arc::clone(&killer);
                thread::spawn(move || {
                    *k.desc.lock().unwrap() = desc;
                    let _ = k.signal.compare_exchange(0, signal, AcqRel, Acquire);
                })
            };
            let a = spawn(QUERY_INTERRUPTED, "from killer 1");
            let b = spawn(MAX_EXEC_TIME_EXCEEDED, "from killer 2");
            a.join().unwrap();
            b.join().unwrap();
            let signal = killer.signal.load(Acquire);
            let desc = *killer.desc.lock().unwrap();
            let expected = if signal == QUERY_INTERRUPTED {
                "from killer 1"
            } else {
                "from killer 2"
            };
            assert_eq!(
                desc, expected,
                "torn reason: signal {signal} carries {desc:?}"
            );
        },
    );
}

/// I1's bug: a kill that checks "not killed yet" with a load and then
/// stores its signal lets two killers both believe they won.
/// Fixed models: `signal::two_killers_race`, `signal::three_killers_race`.
#[test]
fn broken_kill_as_load_then_store() {
    assert_rejected(
        "broken_kill_as_load_then_store",
        Some(2),
        "two winners",
        || {
            let signal = Arc::new(AtomicU32::new(0));
            let kill = |s: &AtomicU32, sig: u32| {
                if s.load(Acquire) == 0 {
                    s.store(sig, Release);
                    true
                } else {
                    false
                }
            };
            let s = Arc::clone(&signal);
            let t = thread::spawn(move || kill(&s, QUERY_INTERRUPTED));
            let mine = kill(&signal, MAX_EXEC_TIME_EXCEEDED);
            let theirs = t.join().unwrap();
            assert!(!(mine && theirs), "two winners for one statement");
        },
    );
}

/// TiDB PR #70608: the cancel hook (`ConnCancel`) was published *after* the
/// check that the statement is alive. A kill that wins its CAS in between
/// finds no hook, and the hook is then installed on a killed statement and
/// never runs: the in-flight RPC hangs until its timeout.
/// Fixed model: `side_channels::hook_installed_while_kill_fires`.
#[test]
fn broken_70608_hook_published_after_check() {
    assert_rejected(
        "broken_70608_hook_published_after_check",
        Some(2),
        "hook never ran",
        || {
            type Hook = Box<dyn FnOnce() + Send>;
            struct GoKiller {
                signal: AtomicU32,
                conn_cancel: Mutex<Option<Hook>>,
            }
            let killer = Arc::new(GoKiller {
                signal: AtomicU32::new(0),
                conn_cancel: Mutex::new(None),
            });
            let runs = Arc::new(AtomicU32::new(0));
            let k = Arc::clone(&killer);
            let kill = thread::spawn(move || {
                if k.signal
                    .compare_exchange(0, QUERY_INTERRUPTED, AcqRel, Acquire)
                    .is_ok()
                {
                    let hook = k.conn_cancel.lock().unwrap().take();
                    if let Some(hook) = hook {
                        hook();
                    }
                }
            });
            // The session: "not killed? then publish the hook and send the RPC".
            let r = Arc::clone(&runs);
            if killer.signal.load(Acquire) == 0 {
                *killer.conn_cancel.lock().unwrap() = Some(Box::new(move || {
                    r.fetch_add(1, Relaxed);
                }));
            }
            kill.join().unwrap();
            if killer.signal.load(Acquire) != 0 && killer.conn_cancel.lock().unwrap().is_some() {
                panic!("hook never ran: installed on a statement that was already killed");
            }
            let _ = runs.load(Relaxed);
        },
    );
}

/// The classic lost wake-up: a waiter checks "not killed", the kill fires
/// and finds nobody to wake, then the waiter registers and goes to sleep —
/// for ever. (A real `park` here makes loom abort the whole test binary on
/// the deadlock, so the sleeper records that it went to sleep instead, and
/// the model asserts that every sleeper was woken.) Fixed model:
/// `side_channels::waiter_registers_while_kill_fires` (registration is an
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

/// I8's bug: `ClearFinishFunc` that only swaps the function out, without
/// waiting for a `FinishResultSet` already running it, returns while the
/// old function still runs — it may then touch a result set the session has
/// already freed. Fixed model: `side_channels::finish_races_clear`.
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

/// I9's bug: kill immunity as a flag that only `HandleSignal` reads. The
/// killer checks "not immune" and then runs the cancel hook; the owner sets
/// the flag in between and enters its COMMIT, whose in-flight RPC the hook
/// then cancels — past the point of no return. (MySQL's `kill_immunizer`
/// exists because of this class of bug.) Fixed model:
/// `side_channels::kill_inside_guard` (entering is an RMW on the state word,
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
