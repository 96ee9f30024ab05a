//! TiDB's historic `SQLKiller` bugs (#55467, #70545 with PR #70557, PR
//! #70608): for each, the model on the real `SqlKiller` that would have
//! caught it, followed by its broken twin, the bug ported to a few lines of
//! loom, which loom must reject.
//!
//! Every twin passes *only because loom finds the bug*: if a broken model
//! ever passes, the real model before it proves nothing, and
//! `assert_rejected` fails the test. The ports keep the Go shape (`Signal
//! uint32`, plain fields, `Reset` as separate steps) so a TiDB engineer can
//! match them line by line.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{HookStatus, KillError, KillOutcome, KillSignal, SqlKiller};
use sqlkiller_loom_tests::{assert_rejected, check, PlainField};

use KillSignal::*;

const QUERY_INTERRUPTED: u32 = 1;
const MAX_EXEC_TIME_EXCEEDED: u32 = 2;

/// I5, the seed (TiDB #55467): the owner sets the connection id and resets
/// for the next statement (`ResetContextOfStmt`) while a killer logs the
/// connection id and builds the error (`SendKillSignal`). Every access is
/// atomic, so loom's causality checks pass; the error names a connection id
/// that was really set.
#[test]
fn seed_55467_conn_id_races_reset() {
    check(
        "seed_55467_conn_id_races_reset",
        None,
        &["logged conn 1", "logged conn 2"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.set_conn_id(1);
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || {
                let _ = k.send_kill_signal(QueryMemoryExceeded);
                let logged = k.conn_id(); // the log line of SendKillSignal
                if let Err(KillError::QueryMemoryExceeded { conn_id }) = k.handle_signal() {
                    assert!(conn_id == 1 || conn_id == 2, "error names conn {conn_id}");
                }
                logged
            });
            killer.set_conn_id(2); // ResetContextOfStmt
            killer.reset();
            match t.join().unwrap() {
                1 => seen.saw("logged conn 1"),
                2 => seen.saw("logged conn 2"),
                other => panic!("logged a connection id nobody set: {other}"),
            }
            assert_eq!(killer.conn_id(), 2);
        },
    );
}

/// TiDB #55467: `SendKillSignal` logged the plain field `ConnID` while
/// `ResetContextOfStmt` wrote it. Go's race detector caught it in
/// `TestTiFlashBatchKill`; loom reports the same unordered accesses.
/// Fixed model: `seed_55467_conn_id_races_reset`, above.
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

/// I3 + I6: a plain kill races `reset`. It lands on exactly one generation:
/// either `reset` returns it, or the new statement carries it. `reset`
/// terminates even when it has to wait for the kill to publish. Would have
/// caught TiDB #70545's lost kill (reset as a load then a store).
#[test]
fn kill_races_reset() {
    check(
        "kill_races_reset",
        None,
        &["reset cleared it", "next statement carries it"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || k.send_kill_signal(ServerMemoryExceeded));
            let cleared = killer.reset();
            assert_eq!(t.join().unwrap(), KillOutcome::Sent);
            let carried = killer.kill_signal();
            match (cleared, carried) {
                (Some(ServerMemoryExceeded), None) => seen.saw("reset cleared it"),
                (None, Some(ServerMemoryExceeded)) => seen.saw("next statement carries it"),
                other => panic!("kill landed on {other:?} (cleared, carried)"),
            }
        },
    );
}

/// TiDB #70545: after winning its CAS, `SendKillSignal` re-loaded the signal
/// to build its log message; a `Reset` in between cleared it, the error
/// lookup returned nil and logging panicked — the KILL statement failed.
/// Fixed model: `kill_races_reset`, above (the winner keeps the signal it
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
/// Fixed model: `kill_races_reset`, above (one CAS from the state read).
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

/// TiDB PR #70608: the cancel hook (`ConnCancel`) was published *after* the
/// check that the statement is alive. A kill that wins its CAS in between
/// finds no hook, and the hook is then installed on a killed statement and
/// never runs: the in-flight RPC hangs until its timeout.
/// Fixed model: `hook_installed_while_kill_fires`, above.
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
