//! Models of the owner / handle split: owned kill events registered and
//! dropped on other threads, and the owner closing the session while
//! handles still wait. Each with its broken twin.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{KillOutcome, KillSignal, SqlKiller, WaitOutcome};
use sqlkiller_loom_tests::{assert_rejected, check};

use KillSignal::*;

/// I2 through a handle: a task spawned for statement g registers an owned
/// event (moved to its own thread) while a KILL of g arrives through
/// another handle. The event completes with the kill, whichever came first.
#[test]
fn owned_event_registers_while_kill_fires() {
    check(
        "owned_event_registers_while_kill_fires",
        Some(3),
        &["registered before kill", "registered after kill"],
        |seen| {
            let killer = SqlKiller::new();
            let statement = killer.statement();
            let (rpc, kill) = (killer.handle(), killer.handle());
            let task = thread::spawn(move || {
                let mut event = rpc.kill_event_owned_for(statement);
                let early = event.try_outcome();
                (early, event.wait())
            });
            let killing = thread::spawn(move || kill.kill_statement(statement, QueryInterrupted));
            assert_eq!(killing.join().unwrap(), KillOutcome::Sent);
            let (early, outcome) = task.join().unwrap();
            assert_eq!(outcome, WaitOutcome::Killed(QueryInterrupted));
            seen.saw(if early.is_some() {
                "registered after kill"
            } else {
                "registered before kill"
            });
            drop(killer);
        },
    );
}

/// I6 through a handle: the owner closes the session (drops `SqlKiller`)
/// while a task waits on an owned event and a KILL arrives. The waiter
/// always returns: `Reset` if the close came first (a kill after the close
/// is `Stale`), else `Killed` — or `Reset` if it registered only after the
/// close, when its statement had ended.
#[test]
fn owner_dropped_while_owned_event_waits() {
    check(
        "owner_dropped_while_owned_event_waits",
        Some(3),
        &["killed before close", "closed first"],
        |seen| {
            let killer = SqlKiller::new();
            let statement = killer.statement();
            let (rpc, kill) = (killer.handle(), killer.handle());
            let task = thread::spawn(move || rpc.kill_event_owned_for(statement).wait());
            let killing = thread::spawn(move || {
                let outcome = kill.send_kill_signal(QueryInterrupted);
                let late = kill.kill_event_owned().wait(); // never blocks on a closed session
                (outcome, late)
            });
            drop(killer);
            let (outcome, late) = killing.join().unwrap();
            let woke = task.join().unwrap();
            match outcome {
                KillOutcome::Sent => {
                    // `Reset` only if the task registered after the close:
                    // an event for an ended statement cannot know its fate.
                    assert!(
                        matches!(
                            woke,
                            WaitOutcome::Killed(QueryInterrupted) | WaitOutcome::Reset
                        ),
                        "{woke:?}"
                    );
                    seen.saw("killed before close");
                }
                KillOutcome::Stale => {
                    assert_eq!(woke, WaitOutcome::Reset);
                    assert_eq!(late, WaitOutcome::Reset);
                    seen.saw("closed first");
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

/// Broken twin: a registration checks "closed?" with a plain load and then
/// pushes its waiter; the owner's close, which completes every registered
/// waiter, falls in between. The waiter would sleep for ever (recorded, not
/// slept: a real deadlock aborts the loom binary).
#[test]
fn broken_register_checks_closed_then_pushes() {
    assert_rejected(
        "broken_register_checks_closed_then_pushes",
        Some(2),
        "sleeps on a closed session",
        || {
            struct Session {
                closed: AtomicBool,
                waiters: Mutex<Vec<bool>>, // false: pending
            }
            let session = Arc::new(Session {
                closed: AtomicBool::new(false),
                waiters: Mutex::new(Vec::new()),
            });
            let s = Arc::clone(&session);
            let task = thread::spawn(move || {
                if !s.closed.load(Acquire) {
                    s.waiters.lock().unwrap().push(false);
                }
            });
            // Close: complete every registered waiter, then mark closed.
            for waiter in session.waiters.lock().unwrap().iter_mut() {
                *waiter = true;
            }
            session.closed.store(true, Release);
            task.join().unwrap();
            assert!(
                session.waiters.lock().unwrap().iter().all(|done| *done),
                "a waiter sleeps on a closed session"
            );
        },
    );
}
