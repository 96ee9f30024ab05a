//! Async owners under shuttle: sessions whose owner is a task running
//! `start_statement_async` / `end_statement_async`, while killer threads
//! kill their statements by id and a slow session cancel hook (it yields
//! while it runs) keeps each kill publishing for a while. Checked: each
//! statement ends with the kill that was `Sent` to it and no other, the
//! session hook ran once per killed statement, and no hook of a statement
//! is still running once its end returned.
#![cfg(shuttle)]

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use shuttle::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use shuttle::sync::Mutex;
use shuttle::thread;
use sqlkiller::{KillHandle, KillOutcome, KillSignal, SqlKiller, StatementId};
use sqlkiller_shuttle_tests::{explore, Budget, Outcomes};

#[derive(Default)]
struct History {
    sent: Vec<(StatementId, KillSignal)>,
    ended: Vec<(StatementId, Option<KillSignal>)>,
}

/// A session and what its hook and owner share.
struct Session {
    handle: KillHandle,
    listed: Mutex<Option<StatementId>>,
    hook_running: AtomicBool,
    hook_runs: AtomicUsize,
}

fn async_owners(outcomes: &Outcomes, sessions: usize, killers: usize) {
    const STATEMENTS: usize = 3;
    let history = Arc::new(Mutex::new(History::default()));
    let owners: Vec<SqlKiller> = (0..sessions).map(|_| SqlKiller::new()).collect();
    let shared: Arc<Vec<Session>> = Arc::new(
        owners
            .iter()
            .map(|killer| Session {
                handle: killer.handle(),
                listed: Mutex::new(None),
                hook_running: AtomicBool::new(false),
                hook_runs: AtomicUsize::new(0),
            })
            .collect(),
    );
    let mut tasks = Vec::new();
    for (i, killer) in owners.into_iter().enumerate() {
        let (shared, history) = (Arc::clone(&shared), Arc::clone(&history));
        let hook_shared = Arc::clone(&shared);
        let _ = killer.set_session_cancel_hook(move |_signal| {
            let session = &hook_shared[i];
            session.hook_running.store(true, Ordering::SeqCst);
            // A slow hook: the kill stays `Killing` meanwhile.
            thread::yield_now();
            thread::yield_now();
            session.hook_runs.fetch_add(1, Ordering::SeqCst);
            session.hook_running.store(false, Ordering::SeqCst);
        });
        tasks.push(shuttle::future::spawn(async move {
            let session = &shared[i];
            let mut waited_for_a_hook = false;
            for _ in 0..STATEMENTS {
                let id = killer.start_statement_async().await.unwrap();
                *session
                    .listed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(id);
                shuttle::future::yield_now().await;
                let _ = killer.handle_signal();
                waited_for_a_hook |= session.hook_running.load(Ordering::SeqCst);
                let ended = killer.end_statement_async().await;
                assert!(
                    !session.hook_running.load(Ordering::SeqCst),
                    "a hook of the statement still ran when its end returned"
                );
                history
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ended
                    .push((id, ended.err().map(|err| err.signal())));
            }
            waited_for_a_hook
        }));
    }
    let mut threads = Vec::new();
    for k in 0..killers {
        let (shared, history) = (Arc::clone(&shared), Arc::clone(&history));
        threads.push(thread::spawn(move || {
            let signal = [
                KillSignal::QueryInterrupted,
                KillSignal::QueryMemoryExceeded,
            ][k % 2];
            for n in 0..6 {
                let session = &shared[(k * 3 + n * 5) % shared.len()];
                let listed = *session
                    .listed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(id) = listed {
                    if session.handle.kill_statement(id, signal) == KillOutcome::Sent {
                        history
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .sent
                            .push((id, signal));
                    }
                }
            }
        }));
    }
    for task in tasks {
        if shuttle::future::block_on(task).unwrap() {
            outcomes.saw("an owner ended a statement while its kill's hook ran");
        }
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let history = Arc::into_inner(history)
        .unwrap()
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    let mut aimed: HashMap<StatementId, KillSignal> = HashMap::new();
    for &(id, signal) in &history.sent {
        assert!(
            aimed.insert(id, signal).is_none(),
            "two kills of {id:?} returned Sent"
        );
    }
    let mut killed = 0;
    for &(id, cleared) in &history.ended {
        assert_eq!(
            cleared,
            aimed.get(&id).copied(),
            "{id:?} ended with {cleared:?}; the kill Sent to it: {:?}",
            aimed.get(&id)
        );
        if cleared.is_some() {
            killed += 1;
            outcomes.saw("an async owner ended a killed statement");
        }
    }
    let runs: usize = shared
        .iter()
        .map(|s| s.hook_runs.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        runs, killed,
        "the session hook ran {runs} times for {killed} killed statements"
    );
}

/// Eight async owners, two killer threads, a slow session hook: ends wait
/// for the kill in flight (awaiting, not blocking), and every statement
/// ends with its own kill (I2, I3, I6 for async owners, SPEC §9).
#[test]
fn async_owners_end_statements_while_hooks_run() {
    explore(
        "async_owners_end_statements_while_hooks_run",
        Budget {
            random: 1500,
            pct: 1500,
            depth: 3,
        },
        &[
            "an async owner ended a killed statement",
            "an owner ended a statement while its kill's hook ran",
        ],
        |outcomes| async_owners(outcomes, 8, 2),
    );
}
