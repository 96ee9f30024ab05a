//! Side channels under real threads: kill events, cancel hooks, the finish
//! function, the liveness probe, kill-immune sections; panics and callbacks
//! that call back into the killer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sqlkiller::{
    FinishError, HookStatus, KillError, KillOutcome, KillSignal, SqlKiller, WaitOutcome,
};

use KillSignal::*;

fn counter() -> (Arc<AtomicUsize>, impl Fn() -> usize) {
    let count = Arc::new(AtomicUsize::new(0));
    let read = Arc::clone(&count);
    (count, move || read.load(SeqCst))
}

/// Installs a cancel hook that counts its runs; returns the count's reader.
fn counting_hook(killer: &SqlKiller) -> impl Fn() -> usize {
    let (runs, read) = counter();
    let _ = killer.set_cancel_hook(move || {
        runs.fetch_add(1, SeqCst);
    });
    read
}

/// The text of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default()
}

/// Installs a liveness probe that says "alive" and counts its runs.
fn counting_probe(killer: &SqlKiller) -> impl Fn() -> usize {
    let (probes, read) = counter();
    let _ = killer.set_connection_alive_probe(move || {
        probes.fetch_add(1, SeqCst);
        true
    });
    read
}

/// Kills with `signal` (winning), checks the hooks ran `runs` times in all,
/// and ends the statement.
fn kill_then_reset(killer: &SqlKiller, signal: KillSignal, read: &dyn Fn() -> usize, runs: usize) {
    assert_eq!(killer.send_kill_signal(signal), KillOutcome::Sent);
    assert_eq!(read(), runs);
    assert_eq!(killer.reset(), Some(signal));
}

// ---- kill events ----------------------------------------------------------

#[test]
fn every_blocked_waiter_wakes_on_the_kill() {
    let killer = SqlKiller::new();
    let stmt = killer.statement();
    let ready = Barrier::new(5);
    thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut event = killer.kill_event_for(stmt);
                    ready.wait();
                    event.wait()
                })
            })
            .collect();
        ready.wait();
        thread::sleep(Duration::from_millis(10)); // let them block
        let _ = killer.send_kill_signal(QueryMemoryExceeded);
        for waiter in waiters {
            assert_eq!(
                waiter.join().unwrap(),
                WaitOutcome::Killed(QueryMemoryExceeded)
            );
        }
    });
}

#[test]
fn reset_releases_waiters_of_the_old_statement() {
    let killer = SqlKiller::new();
    thread::scope(|s| {
        let mut event = killer.kill_event();
        let waiter = s.spawn(move || event.wait());
        thread::sleep(Duration::from_millis(10));
        assert_eq!(killer.reset(), None);
        assert_eq!(waiter.join().unwrap(), WaitOutcome::Reset);
    });
    // A kill of the next statement does not reach an event of the old one.
    let mut old = killer.kill_event_for(sqlkiller_statement_before(&killer));
    let _ = killer.send_kill_signal(QueryInterrupted);
    assert_eq!(old.try_outcome(), Some(WaitOutcome::Reset));
}

fn sqlkiller_statement_before(killer: &SqlKiller) -> sqlkiller::StatementId {
    let current = killer.statement();
    killer.reset();
    current
}

#[test]
fn a_timed_out_event_still_sees_a_later_kill() {
    let killer = SqlKiller::new();
    let mut event = killer.kill_event();
    assert_eq!(event.wait_timeout(Duration::from_millis(5)), None);
    assert_eq!(event.wait_timeout(Duration::ZERO), None);
    let _ = killer.send_kill_signal(RunawayQueryExceeded);
    assert_eq!(
        event.wait_timeout(Duration::ZERO),
        Some(WaitOutcome::Killed(RunawayQueryExceeded))
    );
    // The outcome is kept.
    assert_eq!(
        event.try_outcome(),
        Some(WaitOutcome::Killed(RunawayQueryExceeded))
    );
    assert_eq!(event.wait(), WaitOutcome::Killed(RunawayQueryExceeded));
}

#[test]
fn many_dropped_events_leave_kills_cheap_and_correct() {
    let killer = SqlKiller::new();
    for _ in 0..10_000 {
        let mut event = killer.kill_event();
        assert_eq!(event.try_outcome(), None);
    }
    let mut kept = killer.kill_event();
    let _ = killer.send_kill_signal(QueryInterrupted);
    assert_eq!(
        kept.try_outcome(),
        Some(WaitOutcome::Killed(QueryInterrupted))
    );
    killer.reset();
    let mut next = killer.kill_event();
    assert_eq!(next.try_outcome(), None);
}

#[test]
fn kill_event_races_kill_under_threads() {
    // Registration and kill both modify the state word: across many rounds,
    // no waiter may be left blocked whichever comes first.
    let killer = SqlKiller::new();
    for _ in 0..2_000 {
        let stmt = killer.statement();
        thread::scope(|s| {
            let waiter = s.spawn(|| killer.kill_event_for(stmt).wait());
            let _ = killer.send_kill_signal(QueryInterrupted);
            assert_eq!(
                waiter.join().unwrap(),
                WaitOutcome::Killed(QueryInterrupted)
            );
        });
        killer.reset();
    }
}

#[test]
fn tokio_select_between_a_query_and_its_kill() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let killer = Arc::new(SqlKiller::new());

    // A KILL QUERY from a plain thread while the query future runs.
    let k = Arc::clone(&killer);
    let kill = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        k.send_kill_signal(QueryInterrupted)
    });
    let outcome = runtime.block_on(async {
        let query = async {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await; // a chunk of work
            }
        };
        tokio::select! {
            () = query => unreachable!(),
            outcome = killer.kill_event() => outcome,
        }
    });
    assert_eq!(outcome, WaitOutcome::Killed(QueryInterrupted));
    assert_eq!(kill.join().unwrap(), KillOutcome::Sent);

    // The query wins the race when nobody kills: the kill future is dropped
    // and unregisters; the statement then ends normally.
    killer.reset();
    let finished = runtime.block_on(async {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(5)) => true,
            _ = killer.kill_event() => false,
        }
    });
    assert!(finished);
    assert_eq!(killer.reset(), None);
}

#[test]
fn tokio_task_sees_reset() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let killer = Arc::new(SqlKiller::new());
    let stmt = killer.statement();
    let k = Arc::clone(&killer);
    let task = runtime.spawn(async move { k.kill_event_for(stmt).await });
    thread::sleep(Duration::from_millis(10));
    killer.reset();
    assert_eq!(runtime.block_on(task).unwrap(), WaitOutcome::Reset);
}

// ---- cancel hook ------------------------------------------------------------

#[test]
fn hook_runs_once_under_racing_killers() {
    for _ in 0..500 {
        let killer = SqlKiller::new();
        let read = counting_hook(&killer);
        let killer = &killer;
        thread::scope(|s| {
            for signal in [QueryInterrupted, MaxExecTimeExceeded, QueryMemoryExceeded] {
                s.spawn(move || killer.send_kill_signal(signal));
            }
        });
        assert_eq!(read(), 1);
    }
}

#[test]
fn hook_dropped_unrun_by_reset_and_by_replacement() {
    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let killer = SqlKiller::new();
    let (runs, read) = counter();

    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let r = Arc::clone(&runs);
    assert_eq!(
        killer.set_cancel_hook(move || {
            let _keep = &flag;
            r.fetch_add(1, SeqCst);
        }),
        HookStatus::Armed
    );
    killer.reset();
    assert!(dropped.load(SeqCst), "reset keeps the old statement's hook");
    let _ = killer.send_kill_signal(QueryInterrupted); // a later statement's kill
    assert_eq!(read(), 0);
    killer.reset();

    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let r = Arc::clone(&runs);
    let _ = killer.set_cancel_hook(move || {
        let _keep = &flag;
        r.fetch_add(100, SeqCst);
    });
    let r = Arc::clone(&runs);
    let _ = killer.set_cancel_hook(move || {
        r.fetch_add(1, SeqCst);
    });
    assert!(dropped.load(SeqCst), "a replaced hook is dropped");
    let _ = killer.send_kill_signal(QueryInterrupted);
    assert_eq!(read(), 1, "only the newest hook runs");
}

#[test]
fn a_panicking_hook_leaves_the_killer_usable() {
    let killer = SqlKiller::new();
    let _ = killer.set_cancel_hook(|| panic!("hook failed"));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        killer.send_kill_signal(QueryInterrupted)
    }));
    assert!(
        caught.is_err(),
        "the hook's panic reaches the killing thread"
    );
    // The kill itself won and was published: Killed, not stuck in Killing.
    assert_eq!(
        killer.phase().1,
        sqlkiller::KillPhase::Killed(QueryInterrupted)
    );
    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    assert_eq!(killer.reset(), Some(QueryInterrupted));
    let read = counting_hook(&killer);
    kill_then_reset(&killer, MaxExecTimeExceeded, &read, 1);
}

#[test]
fn a_hook_may_call_back_into_the_killer() {
    let killer = Arc::new(SqlKiller::new());
    let k = Arc::clone(&killer);
    let (seen, read) = counter();
    let _ = killer.set_cancel_hook(move || {
        // Every one of these would deadlock if the hook ran under a lock.
        assert!(k.handle_signal().is_err());
        assert_eq!(
            k.send_kill_signal(QueryInterrupted),
            KillOutcome::AlreadyKilled(MaxExecTimeExceeded)
        );
        let mut event = k.kill_event();
        assert_eq!(
            event.try_outcome(),
            Some(WaitOutcome::Killed(MaxExecTimeExceeded))
        );
        let s = Arc::clone(&seen);
        assert_eq!(
            k.set_cancel_hook(move || {
                s.fetch_add(1, SeqCst);
            }),
            HookStatus::Ran
        );
        k.set_finish_func(|| {});
        assert!(k.check_connection_alive());
        seen.fetch_add(1, SeqCst);
    });
    kill_then_reset(&killer, MaxExecTimeExceeded, &read, 2);
}

#[test]
fn reset_from_inside_the_hook_is_a_clear_panic_not_a_hang() {
    let killer = Arc::new(SqlKiller::new());
    let k = Arc::clone(&killer);
    let _ = killer.set_cancel_hook(move || {
        k.reset();
    });
    let err = catch_unwind(AssertUnwindSafe(|| {
        killer.send_kill_signal(QueryInterrupted)
    }))
    .expect_err("reset inside the hook must panic");
    let message = panic_message(&*err);
    assert!(
        message.contains("called from inside this killer's own"),
        "{message}"
    );
    assert_eq!(killer.reset(), Some(QueryInterrupted)); // still usable
}

#[test]
fn reset_from_inside_a_waker_is_a_clear_panic_not_a_hang() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};

    /// A waker that, like an executor polling inline, runs code of the
    /// owner's: here it ends the statement.
    struct ResetOnWake(Arc<SqlKiller>);
    impl Wake for ResetOnWake {
        fn wake(self: Arc<Self>) {
            self.0.reset();
        }
    }

    let killer = Arc::new(SqlKiller::new());
    let waker = Waker::from(Arc::new(ResetOnWake(Arc::clone(&killer))));
    let mut event = killer.kill_event();
    let polled = std::pin::Pin::new(&mut event).poll(&mut Context::from_waker(&waker));
    assert_eq!(polled, Poll::Pending);
    let err = catch_unwind(AssertUnwindSafe(|| {
        killer.send_kill_signal(QueryInterrupted)
    }))
    .expect_err("reset inside the waker must panic");
    let message = panic_message(&*err);
    assert!(
        message.contains("called from inside this killer's own"),
        "{message}"
    );
    drop(event);
    assert_eq!(killer.reset(), Some(QueryInterrupted)); // still usable
}

#[test]
fn reset_waits_for_a_hook_run_at_install_on_another_thread() {
    let killer = SqlKiller::new();
    let _ = killer.send_kill_signal(QueryInterrupted);
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let finished = Arc::new(AtomicBool::new(false));
    thread::scope(|s| {
        let (e, r, f) = (
            Arc::clone(&entered),
            Arc::clone(&release),
            Arc::clone(&finished),
        );
        let killer = &killer;
        s.spawn(move || {
            let status = killer.set_cancel_hook(move || {
                e.wait();
                r.wait();
                f.store(true, SeqCst);
            });
            assert_eq!(status, HookStatus::Ran);
        });
        entered.wait();
        let f = Arc::clone(&finished);
        let resetter = s.spawn(move || {
            killer.reset();
            assert!(
                f.load(SeqCst),
                "reset returned while the statement's hook ran"
            );
        });
        thread::sleep(Duration::from_millis(20));
        release.wait();
        resetter.join().unwrap();
    });
}

// ---- finish function --------------------------------------------------------

#[test]
fn finish_function_reentrancy_is_an_error_not_a_deadlock() {
    let killer = Arc::new(SqlKiller::new());
    let k = Arc::clone(&killer);
    let (runs, read) = counter();
    killer.set_finish_func(move || {
        runs.fetch_add(1, SeqCst);
        assert_eq!(k.finish_result_set(), Err(FinishError::ReentrantFinish));
        k.set_finish_func(|| {}); // no deadlock; takes effect after this run
    });
    assert_eq!(killer.finish_result_set(), Ok(true));
    assert_eq!(read(), 1);
    assert_eq!(killer.finish_result_set(), Ok(true)); // the replacement
    assert_eq!(read(), 1);

    let k = Arc::clone(&killer);
    killer.set_finish_func(move || {
        assert_eq!(k.clear_finish_func(), Err(FinishError::ReentrantClear));
    });
    assert_eq!(killer.finish_result_set(), Ok(true));
    assert_eq!(
        killer.finish_result_set(),
        Ok(false),
        "cleared from inside: gone"
    );
    assert_eq!(
        FinishError::ReentrantClear.to_string(),
        "clear_finish_func called from inside the finish function, which it would wait for"
    );
}

#[test]
fn clear_waits_for_a_running_finish_function() {
    let killer = SqlKiller::new();
    let (started_tx, started_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    killer.set_finish_func(move || {
        started_tx.send(()).unwrap();
        thread::sleep(Duration::from_millis(30));
        d.store(true, SeqCst);
    });
    thread::scope(|s| {
        s.spawn(|| assert_eq!(killer.finish_result_set(), Ok(true)));
        started_rx.recv().unwrap();
        killer.clear_finish_func().unwrap();
        assert!(
            done.load(SeqCst),
            "clear returned while the finish function ran"
        );
    });
    assert_eq!(killer.finish_result_set(), Ok(false));
}

#[test]
fn a_panicking_finish_function_is_removed_and_the_slot_stays_usable() {
    let killer = SqlKiller::new();
    killer.set_finish_func(|| panic!("finish failed"));
    assert!(catch_unwind(AssertUnwindSafe(|| killer.finish_result_set())).is_err());
    assert_eq!(killer.finish_result_set(), Ok(false));
    killer.clear_finish_func().unwrap(); // does not wait for a dead runner
    let (runs, read) = counter();
    killer.set_finish_func(move || {
        runs.fetch_add(1, SeqCst);
    });
    assert_eq!(killer.finish_result_set(), Ok(true));
    assert_eq!(read(), 1);
}

// ---- liveness probe ---------------------------------------------------------

#[test]
fn a_dead_connection_kills_through_the_normal_path() {
    let killer = SqlKiller::new();
    killer.set_probe_interval(Duration::ZERO);
    let read = counting_hook(&killer);
    let mut event = killer.kill_event();
    let alive = Arc::new(AtomicBool::new(true));
    let a = Arc::clone(&alive);
    let _ = killer.set_connection_alive_probe(move || a.load(SeqCst));
    assert!(killer.handle_signal().is_ok());
    alive.store(false, SeqCst);
    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    assert_eq!(
        event.try_outcome(),
        Some(WaitOutcome::Killed(QueryInterrupted))
    );
    assert_eq!(read(), 1, "the cancel hook ran");
    assert_eq!(killer.reset(), Some(QueryInterrupted));
    killer.clear_connection_alive_probe();
    assert!(killer.handle_signal().is_ok());
    assert!(killer.check_connection_alive());
}

#[test]
fn the_probe_runs_at_most_once_per_interval() {
    let killer = SqlKiller::new();
    let interval = Duration::from_millis(20);
    killer.set_probe_interval(interval);
    let read = counting_probe(&killer);
    let start = Instant::now();
    let mut checks = 0u64;
    // At least 150 ms (several intervals), and on until the probe has run
    // (a descheduled timer thread or owner may delay the first run), up to
    // 10 s.
    while start.elapsed() < Duration::from_millis(150)
        || (read() == 0 && start.elapsed() < Duration::from_secs(10))
    {
        assert!(killer.handle_signal().is_ok());
        checks += 1;
    }
    let elapsed = start.elapsed();
    // Every run is at a checkpoint in this loop and starts the next
    // interval, so n runs need (n - 1) intervals between the first and the
    // last: at most elapsed / interval + 1, however long the loop ran.
    let most = (elapsed.as_millis() / interval.as_millis()) as usize + 1;
    assert!(read() >= 1, "never probed in {elapsed:?} ({checks} checks)");
    assert!(
        read() <= most,
        "{} probes in {elapsed:?}, at most {most} allowed",
        read()
    );
}

#[test]
fn reset_restarts_the_probe_timer() {
    /// What happened, in order, on the test thread.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        /// A probe interval starts (the probe's install, a `reset`) no
        /// earlier than this.
        Start(Instant),
        /// The probe ran at this time.
        Probe(Instant),
    }
    let killer = SqlKiller::new();
    let interval = Duration::from_millis(400);
    killer.set_probe_interval(interval);
    let log = Arc::new(Mutex::new(Vec::new()));
    let record = {
        let log = Arc::clone(&log);
        move |event| log.lock().unwrap().push(event)
    };
    let probe_record = record.clone();
    record(Event::Start(Instant::now()));
    let _ = killer.set_connection_alive_probe(move || {
        probe_record(Event::Probe(Instant::now()));
        true
    });
    let probes = || {
        let log = log.lock().unwrap();
        log.iter().filter(|e| matches!(e, Event::Probe(_))).count()
    };
    // Two statements of 250 ms each: together longer than the interval, each
    // shorter, so a reset that failed to restart the timer lets the probe run
    // in the second one, an interval after the install. Then a third
    // statement that runs until the probe has run (up to 10 s): a reset that
    // lost the probe's schedule never runs it again.
    let first = Instant::now();
    for _ in 0..2 {
        let statement = Instant::now();
        while statement.elapsed() < Duration::from_millis(250) {
            killer.handle_signal().unwrap();
        }
        record(Event::Start(Instant::now()));
        killer.reset();
    }
    assert!(first.elapsed() > interval);
    let (last, before) = (Instant::now(), probes());
    while probes() == before && last.elapsed() < Duration::from_secs(10) {
        killer.handle_signal().unwrap();
    }
    killer.clear_connection_alive_probe();
    // However the threads were scheduled, the probe never runs less than an
    // interval after the latest start before it (a stall only delays runs).
    let log = log.lock().unwrap().clone();
    let mut start = None;
    for event in &log {
        match *event {
            Event::Start(at) => start = Some(at),
            Event::Probe(at) => {
                let start = start.expect("the install is logged first");
                assert!(
                    at >= start + interval,
                    "the probe ran {:?} after the latest start, interval {interval:?}: {log:?}",
                    at - start
                );
            }
        }
    }
    assert!(
        matches!(log.last(), Some(Event::Probe(_))),
        "the probe never ran in the last statement (10 s): {log:?}"
    );
}

#[test]
fn a_probe_may_call_back_and_may_panic() {
    let killer = Arc::new(SqlKiller::new());
    killer.set_probe_interval(Duration::ZERO);
    let k = Arc::clone(&killer);
    let (probes, read) = counter();
    let _ = killer.set_connection_alive_probe(move || {
        probes.fetch_add(1, SeqCst);
        k.handle_signal().is_ok() // not probed again from in here
    });
    assert!(killer.handle_signal().is_ok());
    assert_eq!(read(), 1);
    killer.clear_connection_alive_probe(); // breaks the Arc cycle

    let _ = killer.set_connection_alive_probe(|| panic!("probe failed"));
    assert!(catch_unwind(AssertUnwindSafe(|| killer.handle_signal())).is_err());
    killer.clear_connection_alive_probe();
    assert!(killer.handle_signal().is_ok());
    assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
    assert_eq!(killer.reset(), Some(QueryInterrupted));
}

// ---- kill-immune sections ---------------------------------------------------

#[test]
fn a_kill_inside_nested_guards_waits_for_the_last_one() {
    let killer = SqlKiller::new();
    let read = counting_hook(&killer);
    let mut event = killer.kill_event();
    let outer = killer.kill_immune();
    assert!(killer.is_kill_immune());
    {
        let _inner = killer.kill_immune();
        assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
        assert!(killer.handle_signal().is_ok());
    }
    assert!(
        killer.handle_signal().is_ok(),
        "the outer guard still holds"
    );
    assert_eq!(read(), 0, "the hook waits for the last guard");
    assert_eq!(event.try_outcome(), None, "waiters wait for the last guard");
    drop(outer);
    assert!(!killer.is_kill_immune());
    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    assert_eq!(read(), 1);
    assert_eq!(
        event.try_outcome(),
        Some(WaitOutcome::Killed(QueryInterrupted))
    );
}

#[test]
fn a_reset_inside_the_guard_discards_the_kill() {
    let killer = SqlKiller::new();
    let read = counting_hook(&killer);
    let mut event = killer.kill_event();
    let guard = killer.kill_immune();
    let _ = killer.send_kill_signal(QueryInterrupted);
    assert_eq!(killer.reset(), Some(QueryInterrupted)); // the COMMIT finished
    drop(guard);
    assert!(killer.handle_signal().is_ok());
    assert_eq!(read(), 0);
    assert_eq!(event.try_outcome(), Some(WaitOutcome::Reset));
}

#[test]
fn a_hook_installed_in_a_killed_section_runs_at_its_end() {
    let killer = SqlKiller::new();
    let guard = killer.kill_immune();
    let _ = killer.send_kill_signal(MaxExecTimeExceeded);
    let (hooks, read) = counter();
    let h = Arc::clone(&hooks);
    assert_eq!(
        killer.set_cancel_hook(move || {
            h.fetch_add(1, SeqCst);
        }),
        HookStatus::Armed
    );
    assert_eq!(
        killer.set_cancel_hook(move || {
            hooks.fetch_add(10, SeqCst);
        }),
        HookStatus::Armed
    );
    assert_eq!(read(), 0);
    guard.release();
    assert_eq!(read(), 11, "both hooks installed after the kill are owed");
}

#[test]
fn clearing_the_probe_touches_nothing_else() {
    let killer = SqlKiller::new();
    killer.reset();
    killer.reset();
    let stmt = killer.statement();
    let _ = killer.set_connection_alive_probe(|| true);
    let guard = killer.kill_immune();
    let _ = killer.send_kill_signal(MaxExecTimeExceeded);
    killer.clear_connection_alive_probe();
    assert_eq!(killer.statement(), stmt, "the generation survives");
    assert_eq!(
        killer.kill_signal(),
        Some(MaxExecTimeExceeded),
        "the kill survives"
    );
    assert!(killer.is_kill_immune(), "the section survives");
    guard.release();
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
    // And the same through the conditional clear.
    let id = killer.set_connection_alive_probe(|| true);
    assert!(killer.clear_connection_alive_probe_if(id));
    assert_eq!(killer.statement(), stmt);
    assert_eq!(killer.reset(), Some(MaxExecTimeExceeded));
}
