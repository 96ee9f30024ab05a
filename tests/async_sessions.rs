//! Sessions as async tasks on a multi-thread tokio runtime: the owner is a
//! task that may resume on any worker thread, killers hold `KillHandle`s,
//! and spawned tasks await owned kill events.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller, WaitOutcome};

use KillSignal::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap()
}

/// A task spawned for the statement it serves (an RPC, a scan worker)
/// awaits an owned kill event of that statement; a KILL through a handle
/// completes it, and the next statement's task is not disturbed.
#[test]
fn a_spawned_task_awaits_its_statements_kill() {
    runtime().block_on(async {
        let killer = SqlKiller::new();
        let stmt = killer.statement();
        let event = killer.handle().kill_event_owned_for(stmt);
        let rpc = tokio::spawn(event); // `Send + 'static`: moves into the task
        let kill = killer.handle();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(
                kill.kill_statement(stmt, QueryInterrupted),
                KillOutcome::Sent
            );
        });
        assert_eq!(rpc.await.unwrap(), WaitOutcome::Killed(QueryInterrupted));
        assert_eq!(killer.reset(), Some(QueryInterrupted));

        // The next statement's task ends with `Reset` when it ends unkilled.
        let next = killer.kill_event_owned();
        let rpc = tokio::spawn(next);
        tokio::task::yield_now().await;
        killer.reset();
        assert_eq!(rpc.await.unwrap(), WaitOutcome::Reset);
    });
}

/// The session task holds a kill-immune guard across the COMMIT's
/// `.await` (the guard is `Send`, so the task can be spawned) while a KILL
/// arrives; the COMMIT completes, and the kill is reported after it.
#[test]
fn a_session_task_holds_the_guard_across_an_await() {
    let rt = runtime();
    for _ in 0..20 {
        let killer = SqlKiller::new();
        let kill = killer.handle();
        let hook_runs = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hook_runs);
        let _ = killer.set_cancel_hook(move || {
            h.fetch_add(1, SeqCst);
        });
        let session = rt.spawn(async move {
            let commit = killer.kill_immune();
            // The COMMIT's RPC; the KILL lands meanwhile.
            let killing = tokio::spawn(async move { kill.send_kill_signal(QueryInterrupted) });
            assert_eq!(killing.await.unwrap(), KillOutcome::Sent);
            tokio::time::sleep(Duration::from_millis(1)).await; // maybe another worker now
            assert!(
                killer.handle_signal().is_ok(),
                "the COMMIT is not interrupted"
            );
            commit.release();
            (killer.handle_signal(), killer.reset())
        });
        let (checked, cleared) = rt.block_on(session).unwrap();
        assert_eq!(checked, Err(KillError::QueryInterrupted));
        assert_eq!(cleared, Some(QueryInterrupted));
        assert_eq!(hook_runs.load(SeqCst), 1);
    }
}

/// Parallel workers of each statement — spawned tasks and OS threads —
/// check through handles while the owner runs statements, kills some and
/// resets. A worker's check fails only when the statement it checked was
/// killed (what it reads right after says so, or the statement has ended),
/// and the owner never sees a reset statement killed.
#[test]
fn parallel_workers_check_through_handles_while_the_owner_resets() {
    let rt = runtime();
    let killer = SqlKiller::new();
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let check = {
        let errors = Arc::clone(&errors);
        move |worker: &sqlkiller::KillHandle| {
            let (before, _) = worker.phase();
            if let Err(err) = worker.check_signal() {
                let (now, phase) = worker.phase();
                assert!(
                    phase.signal().is_some() || now != before,
                    "{err}: a check failed on an unkilled statement"
                );
                errors.fetch_add(1, SeqCst);
            }
        }
    };
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (worker, task_stop, task_check) = (killer.handle(), Arc::clone(&stop), check.clone());
        tasks.push(rt.spawn(async move {
            let mut checks = 0u64;
            while !task_stop.load(SeqCst) {
                task_check(&worker);
                checks += 1;
                tokio::task::yield_now().await;
            }
            checks
        }));
        let (worker, thread_stop, thread_check) =
            (killer.handle(), Arc::clone(&stop), check.clone());
        threads.push(std::thread::spawn(move || {
            let mut checks = 0u64;
            while !thread_stop.load(SeqCst) {
                thread_check(&worker);
                checks += 1;
            }
            checks
        }));
    }
    let mut round = 0u32;
    while round < 2_000 || errors.load(SeqCst) == 0 {
        if round.is_multiple_of(3) {
            let _ = killer
                .handle()
                .kill_statement(killer.statement(), MaxExecTimeExceeded);
            std::thread::yield_now();
        }
        let _ = killer.handle_signal();
        killer.reset();
        assert!(
            killer.handle().check_signal().is_ok(),
            "a reset statement is not killed"
        );
        round += 1;
        assert!(round < 10_000_000, "no worker ever saw a kill");
    }
    stop.store(true, SeqCst);
    // Each worker's checks; the loop above ran until a worker saw a kill.
    let threads: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let tasks: Vec<u64> = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect();
    assert!(threads.iter().chain(&tasks).sum::<u64>() > 0);
}

/// A query future raced against its statement's kill event with `select!`,
/// with the KILL coming from another task through a handle.
#[test]
fn select_between_a_query_and_its_kill_event() {
    runtime().block_on(async {
        let killer = SqlKiller::new();
        killer.set_conn_id(9);
        let stmt = killer.statement();
        let kill = killer.handle();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = kill.kill_statement_with_reason(stmt, KilledByMemArbitrator, "pool exhausted");
        });
        let query = tokio::time::sleep(Duration::from_secs(60)); // a long scan
        let result = tokio::select! {
            _ = query => Ok(()),
            outcome = killer.kill_event_owned() => Err(outcome),
        };
        assert_eq!(result, Err(WaitOutcome::Killed(KilledByMemArbitrator)));
        assert_eq!(
            killer.handle_signal(),
            Err(KillError::KilledByMemArbitrator {
                reason: "pool exhausted".into(),
                conn_id: 9
            })
        );
        killer.reset();

        // A query that finishes first leaves the event to the next reset.
        let result = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(1)) => Ok(()),
            outcome = killer.kill_event() => Err(outcome),
        };
        assert_eq!(result, Ok(()));
    });
}
