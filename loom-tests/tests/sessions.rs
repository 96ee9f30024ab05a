//! Models of sessions (SPEC §9): the idle phase, session kills, tickets and
//! the process list, on the real `SqlKiller` and `ProcessList`.
//!
//! Each model is followed by its broken twin: the design the model rules
//! out, written in a few lines (of loom atomics, or of the public API used
//! the wrong way), which loom must reject.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::*};
use loom::sync::Arc;
use loom::thread;
use sqlkiller::{
    HookStatus, KillError, KillOutcome, KillSignal, ManualClock, ProcessList, SqlKiller,
};
use sqlkiller_loom_tests::{assert_rejected, check};

use KillSignal::*;

/// Idle phase: a `KILL QUERY` of the current query races the statement's
/// end. Either it killed the statement, and the end reports it, or it found
/// the session idle; either way the next statement starts untouched (TiDB
/// #65447: a `KILL QUERY` on an idle session broke the next statement).
#[test]
fn kill_races_statement_end() {
    check(
        "kill_races_statement_end",
        None,
        &["killed the statement", "found the session idle"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.start_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.send_kill_signal(QueryInterrupted));
            let ended = killer.end_statement();
            let outcome = t.join().unwrap();
            match outcome {
                KillOutcome::Sent => {
                    assert_eq!(ended, Err(KillError::QueryInterrupted));
                    seen.saw("killed the statement");
                }
                KillOutcome::Idle => {
                    assert_eq!(ended, Ok(()));
                    seen.saw("found the session idle");
                }
                other => panic!("{other:?}"),
            }
            killer.start_statement().unwrap();
            assert_eq!(
                killer.handle_signal(),
                Ok(()),
                "the next statement was killed"
            );
        },
    );
}

/// The twin: the idle phase as a flag beside the signal. The kill reads
/// "not idle", the statement ends (clearing the signal, then raising the
/// flag), and the kill's write lands in the idle phase, where the next
/// statement's start does not clear it.
#[test]
fn broken_idle_flag_beside_the_signal() {
    assert_rejected(
        "broken_idle_flag_beside_the_signal",
        Some(2),
        "next statement was killed",
        || {
            let signal = Arc::new(AtomicU32::new(0));
            let idle = Arc::new(AtomicBool::new(false));
            let (s, i) = (Arc::clone(&signal), Arc::clone(&idle));
            let t = thread::spawn(move || {
                if !i.load(Acquire) {
                    let _ = s.compare_exchange(0, 1, AcqRel, Acquire);
                }
            });
            let _ended = signal.swap(0, AcqRel); // end_statement
            idle.store(true, Release);
            t.join().unwrap();
            idle.store(false, Release); // start_statement
            assert_eq!(signal.load(Acquire), 0, "the next statement was killed");
        },
    );
}

/// A kill of the current query races the start of a statement on an idle
/// session: it kills the new statement (it took effect after the start) or
/// finds the session idle (before it), never a kill that is `Sent` and
/// lost.
#[test]
fn kill_races_statement_start() {
    check(
        "kill_races_statement_start",
        None,
        &["killed the new statement", "found the session idle"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.end_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.send_kill_signal(QueryInterrupted));
            let started = killer.start_statement().unwrap();
            let outcome = t.join().unwrap();
            match outcome {
                KillOutcome::Sent => {
                    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
                    assert_eq!(killer.statement(), started);
                    seen.saw("killed the new statement");
                }
                KillOutcome::Idle => {
                    assert_eq!(killer.handle_signal(), Ok(()));
                    seen.saw("found the session idle");
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

/// The twin: a start that leaves the idle phase before it opens the new
/// statement (a flag, then `reset`). A kill in between hits the statement
/// that already ended, `reset` clears it: `Sent`, and nothing was killed.
#[test]
fn broken_start_in_two_steps() {
    assert_rejected(
        "broken_start_in_two_steps",
        Some(2),
        "kill was lost",
        || {
            let killer = Arc::new(SqlKiller::new());
            let idle = Arc::new(AtomicBool::new(true));
            let handle = killer.handle();
            let i = Arc::clone(&idle);
            let t = thread::spawn(move || {
                if i.load(Acquire) {
                    KillOutcome::Idle
                } else {
                    handle.send_kill_signal(QueryInterrupted)
                }
            });
            idle.store(false, Release);
            let _ = killer.reset();
            let outcome = t.join().unwrap();
            if outcome == KillOutcome::Sent {
                assert!(
                    killer.handle_signal().is_err(),
                    "Sent, but the kill was lost"
                );
            }
        },
    );
}

/// A session kill races a statement start on an idle session: the start
/// fails with the session's error, or it came first and its statement is
/// killed. No statement runs unkilled after a session kill, and every
/// later start fails.
#[test]
fn session_kill_races_statement_start() {
    check(
        "session_kill_races_statement_start",
        None,
        &["start refused", "started, then killed"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.end_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.kill_session(QueryInterrupted, "KILL 1"));
            let started = killer.start_statement();
            assert_eq!(t.join().unwrap(), KillOutcome::Sent);
            match started {
                Err(err) => {
                    assert_eq!(err, KillError::QueryInterrupted);
                    assert!(killer.is_idle());
                    seen.saw("start refused");
                }
                Ok(_) => {
                    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
                    assert_eq!(killer.end_statement(), Err(KillError::QueryInterrupted));
                    seen.saw("started, then killed");
                }
            }
            assert!(killer.start_statement().is_err(), "a later start ran");
        },
    );
}

/// The twin: a session kill as a flag that the start checks, then a kill
/// of the current query. The start reads "not killed", the kill finds the
/// session idle, and the statement runs unkilled after its session was
/// killed.
#[test]
fn broken_session_kill_checked_at_start() {
    assert_rejected(
        "broken_session_kill_checked_at_start",
        Some(2),
        "statement ran after its session was killed",
        || {
            let killer = Arc::new(SqlKiller::new());
            killer.end_statement().unwrap();
            let killed = Arc::new(AtomicBool::new(false));
            let (handle, k) = (killer.handle(), Arc::clone(&killed));
            let t = thread::spawn(move || {
                k.store(true, Release);
                let _ = handle.send_kill_signal(QueryInterrupted);
            });
            let started = !killed.load(Acquire) && killer.start_statement().is_ok();
            t.join().unwrap();
            if started {
                assert!(
                    killer.handle_signal().is_err(),
                    "a statement ran after its session was killed"
                );
            }
        },
    );
}

/// A ticket (`KILL QUERY ... SYNC`): the killer waits for the statement it
/// killed to end, while the owner ends it. The wait always ends (no lost
/// wake-up: loom reports a deadlock otherwise), and only after the end.
#[test]
fn ticket_wait_races_statement_end() {
    check(
        "ticket_wait_races_statement_end",
        None,
        &["killed, then ended", "ended first"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let stmt = killer.start_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || {
                let outcome = handle.kill_statement(stmt, QueryInterrupted);
                let mut ticket = handle.ticket(stmt);
                ticket.wait();
                assert_ne!(
                    handle.statement(),
                    stmt,
                    "the ticket completed before the end"
                );
                outcome
            });
            let ended = killer.end_statement();
            let outcome = t.join().unwrap();
            assert_eq!(outcome == KillOutcome::Sent, ended.is_err());
            seen.saw(if ended.is_err() {
                "killed, then ended"
            } else {
                "ended first"
            });
        },
    );
}

/// The twin: a "ticket" that is the statement's kill event. It completes
/// when the kill lands, while the statement still runs.
#[test]
fn broken_ticket_completes_on_the_kill() {
    assert_rejected(
        "broken_ticket_completes_on_the_kill",
        Some(2),
        "completed before the end",
        || {
            let killer = Arc::new(SqlKiller::new());
            let stmt = killer.start_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || {
                let _ = handle.kill_statement(stmt, QueryInterrupted);
                let _ = handle.kill_event_for(stmt).wait();
                assert_ne!(
                    handle.statement(),
                    stmt,
                    "the ticket completed before the end"
                );
            });
            let _ = killer.end_statement();
            t.join().unwrap();
        },
    );
}

/// The process list: `KILL QUERY <conn>` races the owner ending one
/// statement and starting the next. The kill lands on the statement its
/// result names (the first, whose end then reports it; or the second,
/// which then fails its check), or finds the session idle; it never names
/// one statement and kills another.
#[test]
fn list_kill_query_races_statement_boundary() {
    check(
        "list_kill_query_races_statement_boundary",
        None,
        &["killed the first", "killed the second", "found it idle"],
        |seen| {
            let clock = ManualClock::new();
            let list = ProcessList::with_clock(&clock);
            let session = list.register(7).unwrap();
            let first = session.start_statement().unwrap();
            let killers = list.clone();
            let t = thread::spawn(move || {
                let kill = killers.kill_query(7, QueryInterrupted, "").unwrap();
                (kill.outcome, kill.statement)
            });
            let first_end = session.end_statement();
            let second = session.start_statement().unwrap();
            let second_check = session.handle_signal();
            let (outcome, named) = t.join().unwrap();
            let second_killed = second_check.is_err() || session.end_statement().is_err();
            match (outcome, named) {
                (KillOutcome::Sent, Some(s)) if s == first => {
                    assert!(first_end.is_err() && !second_killed);
                    seen.saw("killed the first");
                }
                (KillOutcome::Sent, Some(s)) if s == second => {
                    assert!(first_end.is_ok() && second_killed);
                    seen.saw("killed the second");
                }
                (KillOutcome::Idle, None) => {
                    assert!(first_end.is_ok() && !second_killed);
                    seen.saw("found it idle");
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

/// The twin: the peers' `KILL QUERY` -- look up the session's current
/// query in a listing, then kill "the current query". The listing names
/// the first statement; the kill lands on the second.
#[test]
fn broken_list_kill_reads_then_acts() {
    assert_rejected(
        "broken_list_kill_reads_then_acts",
        Some(2),
        "named one statement and killed another",
        || {
            let clock = ManualClock::new();
            let list = ProcessList::with_clock(&clock);
            let session = list.register(7).unwrap();
            let first = session.start_statement().unwrap();
            let killers = list.clone();
            let t = thread::spawn(move || {
                let named = killers.snapshot()[0].statement;
                let outcome = killers
                    .handle(7)
                    .unwrap()
                    .send_kill_signal(QueryInterrupted);
                (outcome, named)
            });
            let first_end = session.end_statement();
            session.start_statement().unwrap();
            let second_killed = session.end_statement().is_err();
            let (outcome, named) = t.join().unwrap();
            if outcome == KillOutcome::Sent && named == Some(first) {
                assert!(
                    first_end.is_err() && !second_killed,
                    "the kill named one statement and killed another"
                );
            }
        },
    );
}

/// A kill by the number a listing showed (`KILL QUERY ID`) races the owner
/// ending that statement and starting the next: it kills that statement or
/// is refused, never the next one.
#[test]
fn list_kill_query_id_races_statement_boundary() {
    check(
        "list_kill_query_id_races_statement_boundary",
        None,
        &["killed the listed statement", "refused"],
        |seen| {
            let clock = ManualClock::new();
            let list = ProcessList::with_clock(&clock);
            let session = list.register(7).unwrap();
            let first = session.start_statement().unwrap();
            let shown = list.snapshot()[0].query_id.unwrap();
            let killers = list.clone();
            let t = thread::spawn(move || {
                killers
                    .kill_query_id(shown, QueryInterrupted, "")
                    .map(|kill| kill.outcome)
            });
            let first_end = session.end_statement();
            session.start_statement().unwrap();
            let second_killed = session.end_statement().is_err();
            assert!(!second_killed, "KILL QUERY ID killed the next statement");
            match t.join().unwrap() {
                Ok(KillOutcome::Sent) => {
                    assert!(first_end.is_err());
                    assert_eq!(first.as_u64(), shown);
                    seen.saw("killed the listed statement");
                }
                Ok(KillOutcome::Stale) | Err(_) => {
                    assert!(first_end.is_ok());
                    seen.saw("refused");
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

/// A kill through the list races the session's close (its owner dropped):
/// the kill is `Sent` (before), `Stale` or the connection is unknown
/// (after); nothing hangs, and the session leaves the list.
#[test]
fn list_kill_races_session_close() {
    check(
        "list_kill_races_session_close",
        None,
        &["killed before the close", "after the close"],
        |seen| {
            let clock = ManualClock::new();
            let list = ProcessList::with_clock(&clock);
            let session = list.register(7).unwrap();
            session.start_statement().unwrap();
            let killers = list.clone();
            let t = thread::spawn(move || {
                killers
                    .kill_query(7, QueryInterrupted, "")
                    .map(|kill| kill.outcome)
            });
            drop(session);
            match t.join().unwrap() {
                Ok(KillOutcome::Sent) => seen.saw("killed before the close"),
                Ok(KillOutcome::Stale) | Err(_) => seen.saw("after the close"),
                other => panic!("{other:?}"),
            }
            assert!(list.is_empty());
        },
    );
}

/// The session's cancel hook is installed while a kill lands: it runs once
/// for that kill, by the kill (whose CAS saw it) or by the install (which
/// saw the kill), never by neither and never twice.
#[test]
fn session_hook_install_races_kill() {
    check(
        "session_hook_install_races_kill",
        None,
        &["run by the kill", "run by the install"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.start_statement().unwrap();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.send_kill_signal(QueryInterrupted));
            let runs = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&runs);
            let status = killer.set_session_cancel_hook(move |_| {
                r.fetch_add(1, Relaxed);
            });
            let outcome = t.join().unwrap();
            let _ = killer.end_statement(); // waits for the kill to publish
            assert_eq!(outcome, KillOutcome::Sent);
            if status == HookStatus::Ran {
                seen.saw("run by the install");
            } else {
                seen.saw("run by the kill");
            }
            assert_eq!(
                runs.load(Relaxed),
                1,
                "the session hook ran {} times",
                runs.load(Relaxed)
            );
        },
    );
}

/// The twin: publish the hook after a plain check of the signal (TiDB PR
/// #70608's shape). The install reads "not killed", the kill finds no hook,
/// then the hook is stored: it never runs for that kill.
#[test]
fn broken_session_hook_published_after_a_check() {
    assert_rejected(
        "broken_session_hook_published_after_a_check",
        Some(2),
        "hook was lost",
        || {
            let signal = Arc::new(AtomicU32::new(0));
            let hook = Arc::new(AtomicBool::new(false));
            let runs = Arc::new(AtomicUsize::new(0));
            let (s, h, r) = (Arc::clone(&signal), Arc::clone(&hook), Arc::clone(&runs));
            let t = thread::spawn(move || {
                if s.compare_exchange(0, 1, AcqRel, Acquire).is_ok() && h.load(Acquire) {
                    r.fetch_add(1, Relaxed);
                }
            });
            if signal.load(Acquire) == 0 {
                hook.store(true, Release);
            } else {
                runs.fetch_add(1, Relaxed);
            }
            t.join().unwrap();
            assert_eq!(runs.load(Relaxed), 1, "the kill's hook was lost");
        },
    );
}

/// An async owner ends its statement while the kill's cancel hook runs on
/// the killer's thread: `end_statement_async` returns only after the hook
/// has returned (as `end_statement` would), and the owner is woken (no
/// lost wake-up: loom reports a deadlock otherwise).
#[test]
fn async_end_waits_for_a_hook_on_another_thread() {
    check(
        "async_end_waits_for_a_hook_on_another_thread",
        Some(3),
        &["killed", "ended first"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.start_statement().unwrap();
            let hook_done = Arc::new(AtomicBool::new(false));
            let done = Arc::clone(&hook_done);
            let _ = killer.set_cancel_hook(move || done.store(true, Release));
            let handle = killer.handle();
            let t = thread::spawn(move || handle.send_kill_signal(QueryInterrupted));
            let ended = loom::future::block_on(killer.end_statement_async());
            if ended.is_err() {
                assert!(
                    hook_done.load(Acquire),
                    "the end returned while the hook ran"
                );
                seen.saw("killed");
            } else {
                seen.saw("ended first");
            }
            let _ = t.join().unwrap();
        },
    );
}

/// A session kill with a reason races `reset` (a server that only marks
/// starts): whichever comes first, the statement that runs after both is
/// killed and reports the session kill's reason (I4 for statements born
/// killed: the reason is written under the lock, with the CAS).
#[test]
fn session_kill_races_reset_and_the_reason_survives() {
    check(
        "session_kill_races_reset_and_the_reason_survives",
        None,
        &["reset first", "session kill first"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let first = killer.statement();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.kill_session(RunawayQueryExceeded, "quota"));
            let cleared = killer.reset();
            assert_eq!(t.join().unwrap(), KillOutcome::Sent);
            seen.saw(if cleared.is_some() {
                "session kill first"
            } else {
                "reset first"
            });
            assert_ne!(killer.statement(), first);
            let err = killer.handle_signal().unwrap_err();
            assert_eq!(
                err.to_string(),
                "Query execution was interrupted, identified as runaway query [quota]"
            );
        },
    );
}

/// A session kill races the statement's end, with a task waiting for the
/// session kill: the waiter is always woken (loom reports a deadlock
/// otherwise), the end reports the kill only if it landed first, and no
/// statement starts after.
#[test]
fn session_kill_races_statement_end_with_a_waiter() {
    check(
        "session_kill_races_statement_end_with_a_waiter",
        Some(3),
        &["killed the statement", "found it idle"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            killer.start_statement().unwrap();
            let mut killed = killer.session_killed();
            let handle = killer.handle();
            let t = thread::spawn(move || handle.kill_session(QueryInterrupted, ""));
            let ended = killer.end_statement();
            assert_eq!(killed.wait().map(|e| e.code()), Some(1317));
            assert_eq!(t.join().unwrap(), KillOutcome::Sent);
            seen.saw(if ended.is_err() {
                "killed the statement"
            } else {
                "found it idle"
            });
            assert!(killer.start_statement().is_err());
        },
    );
}
