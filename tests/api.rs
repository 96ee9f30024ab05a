//! The public API of the signal: outcomes, phases, errors (codes, SQLSTATEs, messages), bad input.

use sqlkiller::{InvalidKillSignal, KillError, KillOutcome, KillPhase, KillSignal, SqlKiller};

use KillSignal::*;

#[test]
fn raw_values_are_tidbs() {
    let expected = [
        (QueryInterrupted, 1),
        (MaxExecTimeExceeded, 2),
        (QueryMemoryExceeded, 3),
        (ServerMemoryExceeded, 4),
        (RunawayQueryExceeded, 5),
        (KilledByMemArbitrator, 6),
    ];
    assert_eq!(KillSignal::ALL.len(), expected.len());
    for (signal, raw) in expected {
        assert_eq!(u32::from(signal), raw);
        assert_eq!(KillSignal::try_from(raw), Ok(signal));
    }
}

#[test]
fn bad_raw_values_are_errors_not_panics() {
    for raw in [0, 7, 8, 255, 1 << 31, u32::MAX] {
        assert_eq!(KillSignal::try_from(raw), Err(InvalidKillSignal(raw)));
    }
    let err = KillSignal::try_from(u32::MAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid kill signal 4294967295: expected a raw value from 1 to 6"
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn every_error_code_sqlstate_and_message() {
    let mem_query =
        "Your query has been cancelled due to exceeding the allowed memory limit for a \
                     single SQL query. Please try narrowing your query scope or increase the \
                     tidb_mem_quota_query limit and try again.[conn=42]";
    let mem_server = "Your query has been cancelled due to exceeding the allowed memory limit for \
                      the tidb-server instance and this query is currently using the most memory. \
                      Please try narrowing your query scope or increase the \
                      tidb_server_memory_limit and try again.[conn=42]";
    let cases = [
        (QueryInterrupted, 1317, "70100", "Query execution was interrupted".to_owned()),
        (
            MaxExecTimeExceeded,
            3024,
            "HY000",
            "Query execution was interrupted, maximum statement execution time exceeded".to_owned(),
        ),
        (QueryMemoryExceeded, 8175, "HY000", mem_query.to_owned()),
        (ServerMemoryExceeded, 8176, "HY000", mem_server.to_owned()),
        (
            RunawayQueryExceeded,
            8253,
            "HY000",
            "Query execution was interrupted, identified as runaway query [runaway exceed tidb side]"
                .to_owned(),
        ),
        (
            KilledByMemArbitrator,
            8180,
            "HY000",
            "Query execution was stopped by the global memory arbitrator [reason=] [conn=42]"
                .to_owned(),
        ),
    ];
    for (signal, code, sqlstate, message) in cases {
        let killer = SqlKiller::new();
        killer.set_conn_id(42);
        assert_eq!(killer.send_kill_signal(signal), KillOutcome::Sent);
        let err = killer.handle_signal().unwrap_err();
        assert_eq!(err.signal(), signal);
        assert_eq!(err.code(), code, "{signal}");
        assert_eq!(err.sqlstate(), sqlstate, "{signal}");
        assert_eq!(err.to_string(), message, "{signal}");
        assert_eq!(err, KillError::new(signal, 42, ""));
    }
}

#[test]
fn reasons_fill_the_messages_that_have_one() {
    let killer = SqlKiller::new();
    killer.set_conn_id(9);
    let _ = killer.send_kill_signal_with_reason(KilledByMemArbitrator, "quota of pool p1");
    assert_eq!(
        killer.handle_signal().unwrap_err().to_string(),
        "Query execution was stopped by the global memory arbitrator [reason=quota of pool p1] [conn=9]"
    );
    killer.reset();
    let _ = killer.send_kill_signal_with_reason(RunawayQueryExceeded, "ExecElapsed = 1s");
    assert_eq!(
        killer.handle_signal().unwrap_err(),
        KillError::RunawayQueryExceeded {
            detail: "ExecElapsed = 1s".into()
        }
    );
    killer.reset();
    // A reason given with a signal whose message has no slot is kept quiet.
    let _ = killer.send_kill_signal_with_reason(QueryInterrupted, "ignored");
    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
}

#[test]
fn conn_id_is_read_when_the_error_is_built() {
    let killer = SqlKiller::new();
    killer.set_conn_id(1);
    let _ = killer.send_kill_signal(ServerMemoryExceeded);
    killer.set_conn_id(2);
    assert_eq!(
        killer.handle_signal(),
        Err(KillError::ServerMemoryExceeded { conn_id: 2 })
    );
}

#[test]
fn a_reset_clears_the_reason_with_the_signal() {
    let killer = SqlKiller::new();
    let _ = killer.send_kill_signal_with_reason(KilledByMemArbitrator, "old statement");
    assert_eq!(killer.reset(), Some(KilledByMemArbitrator));
    let _ = killer.send_kill_signal(KilledByMemArbitrator);
    match killer.handle_signal() {
        Err(KillError::KilledByMemArbitrator { reason, .. }) => assert_eq!(reason, ""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_losing_kill_publishes_nothing() {
    let killer = SqlKiller::new();
    assert_eq!(
        killer.send_kill_signal(KilledByMemArbitrator),
        KillOutcome::Sent
    );
    assert_eq!(
        killer.send_kill_signal_with_reason(RunawayQueryExceeded, "late"),
        KillOutcome::AlreadyKilled(KilledByMemArbitrator)
    );
    match killer.handle_signal() {
        Err(KillError::KilledByMemArbitrator { reason, .. }) => assert_eq!(reason, ""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn first_writer_wins_within_a_statement_only() {
    let killer = SqlKiller::new();
    assert_eq!(
        killer.send_kill_signal(QueryMemoryExceeded),
        KillOutcome::Sent
    );
    assert_eq!(
        killer.send_kill_signal(QueryInterrupted),
        KillOutcome::AlreadyKilled(QueryMemoryExceeded)
    );
    assert_eq!(killer.reset(), Some(QueryMemoryExceeded));
    assert_eq!(killer.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
}

#[test]
fn kill_statement_targets_one_generation() {
    let killer = SqlKiller::new();
    let first = killer.statement();
    assert_eq!(killer.reset(), None);
    let second = killer.statement();
    assert_ne!(first, second);
    assert_eq!(
        killer.kill_statement(first, QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(killer.kill_signal(), None);
    assert_eq!(
        killer.kill_statement(second, MaxExecTimeExceeded),
        KillOutcome::Sent
    );
    assert_eq!(
        killer.kill_statement(second, QueryInterrupted),
        KillOutcome::AlreadyKilled(MaxExecTimeExceeded)
    );
    assert_eq!(
        killer.kill_statement_with_reason(first, KilledByMemArbitrator, "stale"),
        KillOutcome::Stale
    );
    assert_eq!(
        killer.phase(),
        (second, KillPhase::Killed(MaxExecTimeExceeded))
    );
}

#[test]
fn phases_follow_the_state_machine() {
    let killer = SqlKiller::new();
    let (g0, phase) = killer.phase();
    assert_eq!(phase, KillPhase::Idle);
    assert_eq!(phase.signal(), None);
    assert_eq!(
        KillPhase::Killing(QueryMemoryExceeded).signal(),
        Some(QueryMemoryExceeded)
    );
    assert_eq!(
        KillPhase::Killed(RunawayQueryExceeded).signal(),
        Some(RunawayQueryExceeded)
    );
    let _ = killer.send_kill_signal(RunawayQueryExceeded);
    assert_eq!(
        killer.phase(),
        (g0, KillPhase::Killed(RunawayQueryExceeded))
    );
    killer.reset();
    let (g1, phase) = killer.phase();
    assert_eq!(phase, KillPhase::Idle);
    assert_eq!(g1.as_u64(), g0.as_u64() + 1);
    assert_eq!(g1.to_string(), "statement #1");
}

#[test]
fn in_write_result_set_is_a_flag() {
    let killer = SqlKiller::default();
    assert!(!killer.in_write_result_set());
    killer.set_in_write_result_set(true);
    assert!(killer.in_write_result_set());
    killer.set_in_write_result_set(false);
    assert!(!killer.in_write_result_set());
}

#[test]
fn debug_shows_the_phase() {
    let killer = SqlKiller::new();
    killer.set_conn_id(5);
    let _ = killer.send_kill_signal(QueryInterrupted);
    let text = format!("{killer:?}");
    assert!(text.contains("Killed(QueryInterrupted)"), "{text}");
    assert!(text.contains("conn_id: 5"), "{text}");
}

#[test]
fn a_closed_session_refuses_kills_hooks_and_events() {
    let killer = SqlKiller::new();
    let handle = killer.handle();
    let stmt = killer.statement();
    let mut pending = handle.kill_event_owned();
    let hook_dropped = std::sync::Arc::new(());
    let witness = std::sync::Arc::clone(&hook_dropped);
    assert_eq!(
        handle.set_cancel_hook_for(stmt, move || drop(witness)),
        sqlkiller::HookStatus::Armed
    );
    drop(killer);
    assert_eq!(pending.try_outcome(), Some(sqlkiller::WaitOutcome::Reset));
    assert_eq!(
        std::sync::Arc::strong_count(&hook_dropped),
        1,
        "hook dropped un-run"
    );
    assert_eq!(
        handle.send_kill_signal(QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(
        handle.kill_statement(handle.statement(), QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(
        handle.set_cancel_hook_for(handle.statement(), || unreachable!()),
        sqlkiller::HookStatus::Stale
    );
    assert_eq!(handle.kill_event().wait(), sqlkiller::WaitOutcome::Reset);
    assert!(handle.check_signal().is_ok());
    assert!(format!("{handle:?}").contains("closed: true"), "{handle:?}");
}

#[test]
fn statement_ids_of_two_sessions_never_match() {
    let (a, b) = (SqlKiller::new(), SqlKiller::new());
    assert_eq!(a.statement().as_u64(), b.statement().as_u64());
    assert_ne!(a.statement(), b.statement());
    assert_eq!(
        a.kill_statement(b.statement(), QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(
        a.kill_event_for(b.statement()).try_outcome(),
        Some(sqlkiller::WaitOutcome::Reset)
    );
    assert_eq!(
        a.set_cancel_hook_for(b.statement(), || unreachable!()),
        sqlkiller::HookStatus::Stale
    );
    assert_eq!(a.kill_signal(), None);
}

/// Every operation of a `KillHandle` reads and acts on its owner's killer.
#[test]
fn a_handle_sees_and_acts_on_its_session() {
    let killer = SqlKiller::new();
    let handle = killer.handle();
    killer.set_conn_id(77);
    assert_eq!(handle.conn_id(), 77);
    killer.set_in_write_result_set(true);
    assert!(handle.in_write_result_set());
    killer.set_in_write_result_set(false);
    assert!(!handle.in_write_result_set());
    assert!(!handle.is_kill_immune());
    let guard = killer.kill_immune();
    assert!(handle.is_kill_immune());
    guard.release();
    assert!(!handle.is_kill_immune());
    assert_eq!(handle.kill_signal(), None);
    assert_eq!(handle.phase(), killer.phase());
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = std::sync::Arc::clone(&finished);
    killer.set_finish_func(move || f.store(true, std::sync::atomic::Ordering::SeqCst));
    assert_eq!(handle.finish_result_set(), Ok(true));
    assert!(finished.load(std::sync::atomic::Ordering::SeqCst));
    let _probe = killer.set_connection_alive_probe(|| true);
    assert!(handle.check_connection_alive());
    assert_eq!(
        handle.send_kill_signal_with_reason(KilledByMemArbitrator, "pool p2"),
        KillOutcome::Sent
    );
    assert_eq!(handle.kill_signal(), Some(KilledByMemArbitrator));
    assert_eq!(
        handle.check_signal(),
        Err(KillError::KilledByMemArbitrator {
            reason: "pool p2".into(),
            conn_id: 77
        })
    );
    assert_eq!(killer.reset(), Some(KilledByMemArbitrator));
    let stmt = handle.statement();
    assert_eq!(
        handle.kill_statement_with_reason(stmt, RunawayQueryExceeded, "too slow"),
        KillOutcome::Sent
    );
    assert_eq!(
        killer.handle_signal().unwrap_err().to_string(),
        "Query execution was interrupted, identified as runaway query [too slow]"
    );
    let text = format!("{handle:?}");
    assert!(text.starts_with("KillHandle"), "{text}");
    assert!(text.contains("Killed(RunawayQueryExceeded)"), "{text}");
}

#[test]
fn a_worker_check_passes_inside_a_kill_immune_section_and_probes_answer_through_handles() {
    let killer = SqlKiller::new();
    let worker = killer.handle();
    let guard = killer.kill_immune();
    assert_eq!(format!("{guard:?}"), "KillImmuneGuard { depth: 1 }");
    assert_eq!(worker.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
    assert!(
        worker.check_signal().is_ok(),
        "the COMMIT's workers are not interrupted"
    );
    guard.release();
    assert_eq!(worker.check_signal(), Err(KillError::QueryInterrupted));
    killer.reset();
    let _probe = killer.set_connection_alive_probe(|| false);
    assert!(!worker.check_connection_alive());
    assert_eq!(worker.kill_signal(), Some(QueryInterrupted));
}

#[test]
fn statement_ids_debug_as_session_and_number() {
    let killer = SqlKiller::new();
    let text = format!("{:?}", killer.statement());
    assert!(
        text.starts_with("StatementId(") && text.ends_with("#0)"),
        "{text}"
    );
    killer.reset();
    assert!(format!("{:?}", killer.statement()).ends_with("#1)"));
    assert_eq!(killer.statement().to_string(), "statement #1");
}

/// A probe of one session may check another session's client: each
/// killer's "already probing" mark is its own.
#[test]
fn a_probe_may_run_another_sessions_probe() {
    let a = SqlKiller::new();
    let b = std::sync::Arc::new(SqlKiller::new());
    let _dead = b.set_connection_alive_probe(|| false);
    let b2 = std::sync::Arc::clone(&b);
    let _probe = a.set_connection_alive_probe(move || b2.check_connection_alive());
    assert!(!a.check_connection_alive(), "b's probe ran from inside a's");
    assert_eq!(b.kill_signal(), Some(QueryInterrupted));
    assert_eq!(a.kill_signal(), Some(QueryInterrupted));
    a.clear_connection_alive_probe(); // a's probe holds b
}

/// The old name of a worker's check still answers as the new one does.
#[test]
#[allow(deprecated)]
fn a_handles_old_check_name_still_reads_the_signal() {
    let killer = SqlKiller::new();
    let worker = killer.handle();
    assert_eq!(worker.handle_signal(), Ok(()));
    let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    assert_eq!(worker.handle_signal(), Err(KillError::QueryInterrupted));
    assert_eq!(worker.check_signal(), worker.handle_signal());
}

/// An event's `Debug` shows its statement and the outcome it has seen.
#[test]
fn an_events_debug_shows_its_outcome() {
    let killer = SqlKiller::new();
    let mut event = killer.kill_event();
    assert!(format!("{event:?}").contains("outcome: None"), "{event:?}");
    let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    assert_eq!(
        event.try_outcome(),
        Some(sqlkiller::WaitOutcome::Killed(KillSignal::QueryInterrupted))
    );
    assert!(
        format!("{event:?}").contains("outcome: Some(Killed(QueryInterrupted))"),
        "{event:?}"
    );
}

/// A future polled by one task and then by another: the kill wakes the
/// task that polled last.
#[test]
fn a_kill_wakes_the_task_that_polled_the_event_last() {
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::task::{Context, Poll, Wake, Waker};
    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, SeqCst);
        }
    }
    let killer = SqlKiller::new();
    let mut event = killer.kill_event();
    let (first, second) = (
        std::sync::Arc::new(Flag(AtomicBool::new(false))),
        std::sync::Arc::new(Flag(AtomicBool::new(false))),
    );
    for flag in [&first, &second] {
        let waker = Waker::from(std::sync::Arc::clone(flag));
        let polled = std::pin::Pin::new(&mut event).poll(&mut Context::from_waker(&waker));
        assert_eq!(polled, Poll::Pending);
    }
    let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    assert!(second.0.load(SeqCst), "the last poller was not woken");
    assert!(!first.0.load(SeqCst), "the replaced waker was woken");
}

/// A kill-immune guard's `Debug` shows how deep the sections are nested.
#[test]
fn a_guards_debug_shows_the_section_depth() {
    let killer = SqlKiller::new();
    let outer = killer.kill_immune();
    assert!(format!("{outer:?}").contains("depth: 1"), "{outer:?}");
    let inner = killer.kill_immune();
    assert!(format!("{inner:?}").contains("depth: 2"), "{inner:?}");
    drop(inner);
    assert!(format!("{outer:?}").contains("depth: 1"), "{outer:?}");
}
