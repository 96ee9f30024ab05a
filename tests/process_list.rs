//! The process list (issue 16, SPEC §9): registration, `KILL QUERY <conn>`,
//! `KILL QUERY ID <n>`, `KILL <conn>`, `SHOW PROCESSLIST` and the stuck-kill
//! report, and a soak of 200 sessions against two killers whose every kill
//! is checked against what the sessions saw.
//!
//! Each test says which bug it would catch. Time comes from a
//! `ManualClock`; anything that could hang runs under the 5 s watchdog.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use sqlkiller::{
    HookStatus, KillError, KillOutcome, KillSignal, ManualClock, ProcessList, ProcessListError,
    SessionPhase, SqlKiller, StatementId,
};
use support::{in_child_process, within};

use KillSignal::*;

/// How long a scenario may run before the test calls it a hang.
const HANG: Duration = Duration::from_secs(5);
const CHILD_HANG: Duration = Duration::from_secs(30);

const SEC: Duration = Duration::from_secs(1);

// ---- registration -------------------------------------------------------------------

/// Catches: a duplicate id accepted (two sessions under one id: a KILL hits
/// either), a session that stays listed after its drop, an id that cannot
/// be used again, or a session whose `conn_id` is not the registered one.
#[test]
fn register_duplicate_leave_on_drop_and_register_again() {
    let list = ProcessList::new();
    assert!(list.is_empty());
    let seven = list.register(7).unwrap();
    assert_eq!(seven.conn_id(), 7);
    assert!(seven.is_idle(), "a new session is idle");
    let err = list.register(7).unwrap_err();
    assert_eq!(err, ProcessListError::DuplicateConnId(7));
    assert_eq!(err.code(), 1105);
    let eight = list.register(8).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list.snapshot()
            .iter()
            .map(|r| r.conn_id)
            .collect::<Vec<_>>(),
        [7, 8]
    );
    let old = list.handle(7).unwrap();
    drop(seven);
    assert_eq!(list.len(), 1);
    assert!(list.handle(7).is_none());
    assert_eq!(
        list.kill_query(7, QueryInterrupted, "").unwrap_err(),
        ProcessListError::NoSuchConn(7)
    );
    let again = list.register(7).unwrap();
    again.start_statement().unwrap();
    // The old session's handle never reaches the new session.
    assert_eq!(old.send_kill_signal(QueryInterrupted), KillOutcome::Stale);
    assert_eq!(again.handle_signal(), Ok(()));
    // Dropping the old handle (the closed session's last reference) does
    // not take the new session out of the list.
    drop(old);
    assert_eq!(list.len(), 2);
    assert!(list.handle(7).is_some());
    drop((again, eight));
    assert!(list.is_empty());
    // A session outlives its list without trouble.
    let list = ProcessList::new();
    let orphan = list.register(1).unwrap();
    drop(list);
    orphan.start_statement().unwrap();
    drop(orphan);
}

/// Catches: a session that leaves the list under the id it has *now*
/// rather than the one it registered with: after `set_conn_id` (which a
/// server ported from the plain killer still calls) its entry stays in the
/// list for ever, holding the closed session, and its id can never be
/// registered again.
#[test]

fn a_session_leaves_the_list_even_after_set_conn_id() {
    let list = ProcessList::new();
    let session = list.register(7).unwrap();
    session.set_conn_id(8);
    drop(session);
    assert!(list.is_empty(), "{:?}", list.snapshot());
    assert!(list.register(7).is_ok(), "id 7 is free again");
}

// ---- KILL QUERY <conn> ----------------------------------------------------------------

/// Catches: `KILL QUERY` that kills the idle phase (and so the next
/// statement), reports `Sent` for nothing, loses its reason, or names a
/// statement other than the one it hit.
#[test]
fn kill_query_lands_on_the_running_statement_idle_on_idle_and_no_such_conn() {
    within("kill_query", HANG, || {
        let list = ProcessList::new();
        let session = list.register(3).unwrap();
        // Idle.
        let kill = list.kill_query(3, QueryInterrupted, "").unwrap();
        assert_eq!(kill.outcome, KillOutcome::Idle);
        assert_eq!(kill.statement, None);
        assert!(kill.ticket().is_done());
        // Running.
        let stmt = session.start_statement().unwrap();
        let kill = list
            .kill_query(3, KilledByMemArbitrator, "KILL QUERY 3")
            .unwrap();
        assert_eq!(kill.outcome, KillOutcome::Sent);
        assert_eq!(kill.statement, Some(stmt));
        assert!(!kill.ticket().is_done(), "the statement has not ended");
        let again = list.kill_query(3, QueryInterrupted, "").unwrap();
        assert_eq!(
            again.outcome,
            KillOutcome::AlreadyKilled(KilledByMemArbitrator)
        );
        assert_eq!(again.statement, Some(stmt));
        assert_eq!(
            session.end_statement(),
            Err(KillError::KilledByMemArbitrator {
                reason: "KILL QUERY 3".into(),
                conn_id: 3
            })
        );
        kill.ticket().wait();
        // Idle again: the next statement is not touched.
        assert_eq!(
            list.kill_query(3, QueryInterrupted, "").unwrap().outcome,
            KillOutcome::Idle
        );
        session.start_statement().unwrap();
        assert_eq!(session.handle_signal(), Ok(()));
        let err = list.kill_query(4, QueryInterrupted, "").unwrap_err();
        assert_eq!(err, ProcessListError::NoSuchConn(4));
        assert_eq!((err.code(), err.sqlstate()), (1094, "HY000"));
        assert_eq!(err.to_string(), "Unknown thread id: 4");
    });
}

/// Catches: a `Kill` on a session-killed idle session that names a
/// statement although none was running (its doc: "`None` if the session
/// was idle"): a server printing "killed query N" would print the idle
/// phase's number, which no listing ever showed.
#[test]

fn kill_query_on_an_idle_session_killed_session_names_no_statement() {
    let list = ProcessList::new();
    let session = list.register(5).unwrap();
    let _ = list.kill_connection(5, QueryInterrupted, "").unwrap();
    let kill = list.kill_query(5, QueryInterrupted, "").unwrap();
    assert_eq!(kill.outcome, KillOutcome::AlreadyKilled(QueryInterrupted));
    assert_eq!(kill.statement, None, "the session is idle");
    drop(session);
}

// ---- KILL QUERY ID <n> ----------------------------------------------------------------

/// Catches: a kill by number that hits a statement other than the one
/// numbered: the same session's next statement, another session's
/// statement with the same per-session number, or the idle phase.
#[test]
fn kill_query_id_is_exact() {
    within("kill_query_id", HANG, || {
        let list = ProcessList::new();
        let a = list.register(1).unwrap();
        let b = list.register(2).unwrap();
        let a1 = a.start_statement().unwrap();
        let b1 = b.start_statement().unwrap();
        assert_ne!(a1.as_u64(), b1.as_u64(), "numbers are unique in the list");
        let rows = list.snapshot();
        assert_eq!(rows[0].query_id, Some(a1.as_u64()));
        assert_eq!(rows[1].query_id, Some(b1.as_u64()));
        // Only that statement.
        let kill = list
            .kill_query_id(a1.as_u64(), QueryInterrupted, "")
            .unwrap();
        assert_eq!(kill.outcome, KillOutcome::Sent);
        assert_eq!(kill.statement, Some(a1));
        assert_eq!(b.handle_signal(), Ok(()), "not another session's statement");
        assert_eq!(a.end_statement(), Err(KillError::QueryInterrupted));
        assert!(kill.ticket().is_done());
        // After it ended: refused, while idle and while the next one runs.
        let err = list
            .kill_query_id(a1.as_u64(), QueryInterrupted, "")
            .unwrap_err();
        assert_eq!(err, ProcessListError::NoSuchQuery(a1.as_u64()));
        assert_eq!(err.code(), 1957);
        let idle = a.statement().as_u64();
        assert_eq!(
            list.kill_query_id(idle, QueryInterrupted, "").unwrap_err(),
            ProcessListError::NoSuchQuery(idle),
            "the idle phase's number is not a query"
        );
        let a2 = a.start_statement().unwrap();
        for number in [a1.as_u64(), idle] {
            assert!(list.kill_query_id(number, QueryInterrupted, "").is_err());
        }
        assert_eq!(a.handle_signal(), Ok(()), "the next statement is untouched");
        // Its own number works.
        let kill = list
            .kill_query_id(a2.as_u64(), MaxExecTimeExceeded, "")
            .unwrap();
        assert_eq!(
            (kill.outcome, kill.statement),
            (KillOutcome::Sent, Some(a2))
        );
        assert_eq!(b.handle_signal(), Ok(()));
        assert_eq!(b.end_statement(), Ok(()));
        let err = list.kill_query_id(b1.as_u64(), QueryInterrupted, "");
        assert!(err.is_err());
        let _ = list
            .kill_query_id(u64::MAX, QueryInterrupted, "")
            .unwrap_err();
    });
}

/// Catches: statement numbers that repeat across the list's sessions
/// (every session counting from its own zero), however the statements
/// start and end (`start_statement`, `reset`, `end_statement`).
#[test]
fn query_ids_are_unique_across_sessions() {
    let list = ProcessList::new();
    let sessions: Vec<SqlKiller> = (0..20).map(|conn| list.register(conn).unwrap()).collect();
    let mut seen = HashSet::new();
    for round in 0..20 {
        for session in &sessions {
            let id = if round % 3 == 0 {
                session.reset();
                session.statement()
            } else {
                session.start_statement().unwrap()
            };
            assert!(seen.insert(id.as_u64()), "number {} twice", id.as_u64());
            session.end_statement().unwrap();
            assert!(
                seen.insert(session.statement().as_u64()),
                "an idle phase shares a number"
            );
        }
    }
}

// ---- KILL CONNECTION --------------------------------------------------------------------

/// Catches: `KILL <conn>` that leaves the running statement alive, whose
/// ticket does not wait for that statement, that a second KILL wins again,
/// or that is lost on an idle session.
#[test]
fn kill_connection_kills_the_session_and_its_running_statement() {
    within("kill_connection", HANG, || {
        let list = ProcessList::new();
        let busy = list.register(1).unwrap();
        let idle = list.register(2).unwrap();
        let stmt = busy.start_statement().unwrap();
        let kill = list.kill_connection(1, QueryInterrupted, "KILL 1").unwrap();
        assert_eq!(
            (kill.outcome, kill.statement),
            (KillOutcome::Sent, Some(stmt))
        );
        assert!(!kill.ticket().is_done());
        let again = list.kill_connection(1, MaxExecTimeExceeded, "").unwrap();
        assert_eq!(again.outcome, KillOutcome::AlreadyKilled(QueryInterrupted));
        assert_eq!(busy.end_statement(), Err(KillError::QueryInterrupted));
        kill.ticket().wait();
        assert_eq!(busy.start_statement(), Err(KillError::QueryInterrupted));
        let kill = list.kill_connection(2, QueryMemoryExceeded, "").unwrap();
        assert_eq!((kill.outcome, kill.statement), (KillOutcome::Sent, None));
        assert!(kill.ticket().is_done());
        assert_eq!(
            idle.start_statement(),
            Err(KillError::QueryMemoryExceeded { conn_id: 2 })
        );
        assert_eq!(
            list.kill_connection(3, QueryInterrupted, "").unwrap_err(),
            ProcessListError::NoSuchConn(3)
        );
        let rows = list.snapshot();
        assert_eq!(rows[0].session_killed, Some(QueryInterrupted));
        assert_eq!(rows[1].session_killed, Some(QueryMemoryExceeded));
        // The server drops the session when the connection closes.
        drop(busy);
        assert_eq!(list.len(), 1);
    });
}

// ---- SHOW PROCESSLIST and the stuck-kill report --------------------------------------------

/// Catches: a listing whose phase, number or times are wrong: time running
/// on while idle (TiDB #70635), a killed statement that is not shown as
/// killed or without its age, a stuck report that misses it or keeps it
/// after it ended.
#[test]
fn snapshot_fields_and_the_stuck_report_on_a_manual_clock() {
    let clock = ManualClock::new();
    let list = ProcessList::with_clock(&clock);
    let session = list.register(10).unwrap();
    let quiet = list.register(11).unwrap();
    clock.advance(5 * SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.conn_id, 10);
    assert_eq!(row.phase, SessionPhase::Idle);
    assert_eq!((row.query_id, row.statement), (None, None));
    assert_eq!(row.time_in_statement, Duration::ZERO);
    assert_eq!((row.killed_for, row.session_killed), (None, None));

    let stmt = session.start_statement().unwrap();
    clock.advance(3 * SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Running);
    assert_eq!(row.query_id, Some(stmt.as_u64()));
    assert_eq!(row.statement, Some(stmt));
    assert_eq!(row.time_in_statement, 3 * SEC);
    assert_eq!(row.killed_for, None);

    let _ = list.kill_query(10, QueryInterrupted, "").unwrap();
    clock.advance(2 * SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Killed(QueryInterrupted));
    assert_eq!(row.time_in_statement, 5 * SEC);
    assert_eq!(row.killed_for, Some(2 * SEC));
    assert_eq!(
        row.query_id,
        Some(stmt.as_u64()),
        "still listed until it ends"
    );
    assert_eq!(list.stuck(SEC).len(), 1);
    assert_eq!(list.stuck(SEC)[0].conn_id, 10);
    assert!(list.stuck(2 * SEC).is_empty(), "older than, strictly");
    clock.advance(40_000 * SEC); // TiFlash #11059
    assert_eq!(list.stuck(3600 * SEC)[0].killed_for, Some(40_002 * SEC));

    session.end_statement().unwrap_err();
    assert!(list.stuck(Duration::ZERO).is_empty(), "ended: not stuck");
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Idle);
    assert_eq!(
        (row.time_in_statement, row.killed_for),
        (Duration::ZERO, None)
    );

    // The next statement counts from its own start, unkilled, whatever
    // the last one's kill was.
    clock.advance(SEC);
    session.reset();
    clock.advance(SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Running);
    assert_eq!((row.time_in_statement, row.killed_for), (SEC, None));

    // A session kill: shown on the row; a statement born killed by `reset`
    // is killed from its start.
    let _ = list.kill_connection(10, MaxExecTimeExceeded, "").unwrap();
    clock.advance(SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Killed(MaxExecTimeExceeded));
    assert_eq!(row.killed_for, Some(SEC));
    assert_eq!(row.session_killed, Some(MaxExecTimeExceeded));
    session.end_statement().unwrap_err();
    session.reset();
    clock.advance(SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Killed(MaxExecTimeExceeded));
    assert_eq!((row.time_in_statement, row.killed_for), (SEC, Some(SEC)));
    // The other session was never touched.
    let other = &list.snapshot()[1];
    assert_eq!(
        (other.phase, other.session_killed),
        (SessionPhase::Idle, None)
    );
    drop(quiet);
}

/// Catches: a deadline kill that the listing does not stamp (a stuck
/// deadline kill invisible), or a deadline that fires in the idle phase of
/// a listed session.
#[test]
fn a_deadline_kill_shows_in_the_listing_and_never_fires_while_idle() {
    let clock = ManualClock::new();
    let list = ProcessList::with_clock(&clock);
    let session = list.register(1).unwrap();
    session.set_max_execution_time(Some(SEC));
    session.start_statement().unwrap();
    session.end_statement().unwrap();
    clock.advance(10 * SEC);
    assert_eq!(list.snapshot()[0].phase, SessionPhase::Idle);
    session.start_statement().unwrap();
    clock.advance(SEC);
    clock.advance(SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Killed(MaxExecTimeExceeded));
    assert_eq!(row.killed_for, Some(SEC));
    assert_eq!(session.end_statement(), Err(KillError::MaxExecTimeExceeded));
}

// ---- sessions closing and blocked hooks --------------------------------------------------

/// Catches: a session dropped while a kill through the list runs its hook
/// that hangs, aborts, or stays listed; and a kill that blocks the list
/// (a listing, a lookup or another session's kill waiting behind it).
#[test]
fn a_session_dropped_while_a_kill_through_the_list_is_in_flight() {
    within("a drop racing a list kill", HANG, || {
        let list = ProcessList::new();
        let session = list.register(1).unwrap();
        let bystander = list.register(2).unwrap();
        session.start_statement().unwrap();
        bystander.start_statement().unwrap();
        let (running, hook_running) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released);
        let _ = session.set_session_cancel_hook(move |_| {
            running.send(()).unwrap();
            let _ = released.lock().unwrap().recv();
        });
        let killer_list = list.clone();
        let killing = thread::spawn(move || {
            let kill = killer_list.kill_query(1, QueryInterrupted, "").unwrap();
            let done = kill.ticket().is_done();
            (kill.outcome, done)
        });
        hook_running.recv().unwrap();
        // While the hook blocks: the list serves everyone else.
        let rows = list.snapshot();
        assert_eq!(rows[0].phase, SessionPhase::Killed(QueryInterrupted));
        assert_eq!(rows[1].phase, SessionPhase::Running);
        let kill = list.kill_query(2, QueryMemoryExceeded, "").unwrap();
        assert_eq!(kill.outcome, KillOutcome::Sent);
        let id = bystander.statement().as_u64();
        assert_eq!(
            list.kill_query_id(id, QueryInterrupted, "")
                .unwrap()
                .outcome,
            KillOutcome::AlreadyKilled(QueryMemoryExceeded)
        );
        let newcomer = list.register(3).unwrap();
        drop(newcomer);
        // The owner hangs up meanwhile: its drop waits for the hook.
        let closing = thread::spawn(move || drop(session));
        release.send(()).unwrap();
        closing.join().unwrap();
        let (outcome, ticket_done) = killing.join().unwrap();
        assert_eq!(outcome, KillOutcome::Sent);
        assert!(ticket_done || list.handle(1).is_none());
        assert!(list.handle(1).is_none(), "it left the list");
        assert_eq!(
            list.kill_query(1, QueryInterrupted, "").unwrap_err(),
            ProcessListError::NoSuchConn(1)
        );
        assert_eq!(list.len(), 1);
        drop(bystander);
        assert!(list.is_empty());
    });
}

/// A slot holding a session's last owner, for a hook to take and drop.
type OwnerSlot = Arc<Mutex<Option<SqlKiller>>>;

/// Catches: a hang or an abort when a kill through the list runs a hook
/// that drops the session's last owner (the session then leaves the list
/// from inside the kill that the list made), and a hook that uses the list
/// (lists, kills another session, registers) while the list's kill runs it.
#[test]
fn a_hook_of_a_list_kill_that_drops_the_session_and_uses_the_list() {
    in_child_process(
        "a_hook_of_a_list_kill_that_drops_the_session_and_uses_the_list",
        CHILD_HANG,
        || {
            within("a hook dropping its session", HANG, || {
                let list = ProcessList::new();
                let owner = list.register(1).unwrap();
                let other = list.register(2).unwrap();
                other.start_statement().unwrap();
                owner.start_statement().unwrap();
                let slot: OwnerSlot = Arc::new(Mutex::new(None));
                let s = Arc::clone(&slot);
                let hook_list = list.clone();
                let seen = Arc::new(Mutex::new(Vec::new()));
                let seen_in_hook = Arc::clone(&seen);
                let _ = owner.set_session_cancel_hook(move |_| {
                    seen_in_hook
                        .lock()
                        .unwrap()
                        .push(hook_list.snapshot().len());
                    let _ = hook_list.kill_query(2, QueryInterrupted, "from the hook");
                    drop(hook_list.register(9).unwrap());
                    drop(s.lock().unwrap().take()); // the last owner
                    seen_in_hook.lock().unwrap().push(hook_list.len());
                });
                *slot.lock().unwrap() = Some(owner);
                let kill = list.kill_query(1, QueryInterrupted, "").unwrap();
                assert_eq!(kill.outcome, KillOutcome::Sent);
                kill.ticket().wait();
                assert_eq!(*seen.lock().unwrap(), [2, 1]);
                assert!(list.handle(1).is_none());
                assert_eq!(other.end_statement(), Err(KillError::QueryInterrupted));
                // A statement hook through `kill_connection` too.
                let owner = list.register(1).unwrap();
                owner.start_statement().unwrap();
                let s = Arc::clone(&slot);
                assert_eq!(
                    owner.set_cancel_hook(move || drop(s.lock().unwrap().take())),
                    HookStatus::Armed
                );
                *slot.lock().unwrap() = Some(owner);
                let kill = list.kill_connection(1, QueryInterrupted, "").unwrap();
                assert_eq!(kill.outcome, KillOutcome::Sent);
                kill.ticket().wait();
                assert!(list.handle(1).is_none());
                assert_eq!(list.len(), 1);
            });
        },
    );
}

// ---- the soak: 200 sessions, 2 killers ----------------------------------------------------

/// What a killer did, to check against the sessions' records.
struct KillRecord {
    conn: Option<u64>,
    query_id: Option<u64>,
    reason: String,
    outcome: KillOutcome,
    statement: Option<StatementId>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Catches: any kill through the list that lands on a statement other than
/// the one its `Kill.statement` names (a check-then-act window in
/// `kill_query`, a `kill_query_id` reaching the next statement or another
/// session), a kill reported `Sent` that the session never saw, a kill the
/// session saw that no killer won, a lost or foreign reason, or a
/// `KILL QUERY ... SYNC` ticket that never completes.
///
/// 200 sessions each run statements (start, a few checkpoints with yields,
/// end) and record every statement's id and the error `end_statement`
/// returned; two killers pick sessions at random and `KILL QUERY` them or
/// `KILL QUERY ID` a number from a recent listing, each kill with a reason
/// of its own. Afterwards every statement's error must be exactly the
/// `Sent` kill that named it.
#[test]
fn soak_200_sessions_and_2_killers_every_kill_lands_where_it_says() {
    const SESSIONS: u64 = 200;
    const STATEMENTS: usize = 60;
    const KILLERS: u64 = 2;
    let (statements, kills) = within("the soak", HANG, || {
        let list = ProcessList::new();
        let start = Arc::new(Barrier::new(SESSIONS as usize + KILLERS as usize));
        let finished = Arc::new(AtomicUsize::new(0));
        let sessions: Vec<_> = (0..SESSIONS)
            .map(|conn| {
                let session = list.register(conn).unwrap();
                let start = Arc::clone(&start);
                let finished = Arc::clone(&finished);
                thread::spawn(move || {
                    start.wait();
                    let mut record = Vec::with_capacity(STATEMENTS);
                    for n in 0..STATEMENTS {
                        let id = session.start_statement().unwrap();
                        for _ in 0..(n % 4) {
                            thread::yield_now();
                            if session.handle_signal().is_err() {
                                break;
                            }
                        }
                        record.push((id, session.end_statement()));
                        if n % 3 == 0 {
                            thread::yield_now(); // idle a while
                        }
                    }
                    finished.fetch_add(1, SeqCst);
                    // Still registered until joined: a KILL never meets an unknown id.
                    (conn, record, session)
                })
            })
            .collect();
        let killers: Vec<_> = (0..KILLERS)
            .map(|k| {
                let list = list.clone();
                let start = Arc::clone(&start);
                let finished = Arc::clone(&finished);
                thread::spawn(move || {
                    start.wait();
                    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k + 1));
                    let mut records = Vec::new();
                    let mut numbers: Vec<u64> = Vec::new();
                    let mut n = 0u64;
                    while finished.load(SeqCst) < SESSIONS as usize {
                        n += 1;
                        let reason = format!("k{k}-{n}");
                        if n % 16 == 1 {
                            numbers = list.snapshot().iter().filter_map(|r| r.query_id).collect();
                        }
                        let by_id = rng.next().is_multiple_of(2) && !numbers.is_empty();
                        let (conn, query_id, result) = if by_id {
                            let number = numbers[(rng.next() % numbers.len() as u64) as usize];
                            let result = list.kill_query_id(number, KilledByMemArbitrator, &reason);
                            (None, Some(number), result)
                        } else {
                            let conn = rng.next() % SESSIONS;
                            let result = list.kill_query(conn, KilledByMemArbitrator, &reason);
                            (Some(conn), None, result)
                        };
                        match result {
                            Ok(kill) => {
                                if kill.outcome == KillOutcome::Sent && n.is_multiple_of(8) {
                                    kill.ticket().wait(); // KILL QUERY ... SYNC
                                    assert!(kill.ticket().is_done());
                                }
                                records.push(KillRecord {
                                    conn,
                                    query_id,
                                    reason,
                                    outcome: kill.outcome,
                                    statement: kill.statement,
                                });
                            }
                            Err(ProcessListError::NoSuchQuery(q)) => {
                                assert_eq!(Some(q), query_id)
                            }
                            Err(other) => panic!("{other}"),
                        }
                    }
                    records
                })
            })
            .collect();
        let statements: Vec<_> = sessions.into_iter().map(|s| s.join().unwrap()).collect();
        let kills: Vec<KillRecord> = killers
            .into_iter()
            .flat_map(|k| k.join().unwrap())
            .collect();
        let statements: Vec<_> = statements
            .into_iter()
            .map(|(conn, record, _session)| (conn, record))
            .collect();
        (statements, kills)
    });

    // Every statement, by id: its session and what its end reported.
    let mut by_id: HashMap<StatementId, (u64, Result<(), KillError>)> = HashMap::new();
    let mut numbers = HashSet::new();
    for (conn, record) in statements {
        for (id, ended) in record {
            assert!(
                numbers.insert(id.as_u64()),
                "statement number {} twice",
                id.as_u64()
            );
            assert!(by_id.insert(id, (conn, ended)).is_none());
        }
    }
    let mut sent_by_reason: HashMap<String, StatementId> = HashMap::new();
    let mut landed = 0;
    for kill in &kills {
        match kill.outcome {
            KillOutcome::Sent | KillOutcome::AlreadyKilled(_) => {
                let stmt = kill
                    .statement
                    .expect("a kill that met a statement names it");
                let (conn, ended) = by_id.get(&stmt).unwrap_or_else(|| {
                    panic!("{}: {stmt:?} is no session's statement", kill.reason)
                });
                if let Some(target) = kill.conn {
                    assert_eq!(
                        *conn, target,
                        "{}: another session's statement",
                        kill.reason
                    );
                }
                if let Some(number) = kill.query_id {
                    assert_eq!(stmt.as_u64(), number, "{}: another statement", kill.reason);
                }
                assert!(ended.is_err(), "{}: {stmt:?} ended unkilled", kill.reason);
                if kill.outcome == KillOutcome::Sent {
                    landed += 1;
                    assert_eq!(
                        ended.as_ref().unwrap_err(),
                        &KillError::KilledByMemArbitrator {
                            reason: kill.reason.clone().into(),
                            conn_id: *conn
                        },
                        "{}: the statement it names reported another kill",
                        kill.reason
                    );
                    sent_by_reason.insert(kill.reason.clone(), stmt);
                }
            }
            KillOutcome::Idle | KillOutcome::Stale => {
                assert_eq!(kill.statement, None, "{}", kill.reason);
                if kill.outcome == KillOutcome::Idle {
                    assert!(
                        kill.conn.is_some(),
                        "{}: KILL QUERY ID never idle",
                        kill.reason
                    );
                }
            }
        }
    }
    // Conversely: every killed statement was killed by the one kill that names it.
    for (id, (_, ended)) in &by_id {
        if let Err(err) = ended {
            let KillError::KilledByMemArbitrator { reason, .. } = err else {
                panic!("{id:?}: {err}");
            };
            assert_eq!(
                sent_by_reason.get(reason.as_ref()),
                Some(id),
                "{id:?} reported kill {reason:?}, which named another statement"
            );
        }
    }
    let killed = by_id.values().filter(|(_, e)| e.is_err()).count();
    assert_eq!(killed, landed, "every Sent kill was seen, and only those");
    eprintln!(
        "soak: {} statements, {} kills, {} landed",
        by_id.len(),
        kills.len(),
        landed
    );
}

/// Catches: a list kill racing the session's statement end that is
/// reported `Sent` but lost (the end did not return it), lands on the
/// next statement, or a lookup that blocks the session's start or end.
#[test]
fn list_kills_racing_one_sessions_statement_boundaries() {
    within("kills racing boundaries", HANG, || {
        let list = ProcessList::new();
        let session = list.register(1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let list = list.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut sent = Vec::new();
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    n += 1;
                    let reason = n.to_string();
                    let kill = list.kill_query(1, RunawayQueryExceeded, &reason).unwrap();
                    if kill.outcome == KillOutcome::Sent {
                        sent.push((kill.statement.unwrap(), reason));
                    }
                    thread::yield_now(); // the owner runs on a loaded machine too
                }
                sent
            })
        };
        let mut ended = HashMap::new();
        for n in 0..600 {
            let id = if n % 2 == 0 {
                session.start_statement().unwrap()
            } else {
                session.reset();
                session.statement()
            };
            thread::yield_now();
            match session.end_statement() {
                Ok(()) => {}
                Err(KillError::RunawayQueryExceeded { detail }) => {
                    ended.insert(id, detail.into_owned());
                }
                Err(other) => panic!("{other}"),
            }
        }
        stop.store(true, SeqCst);
        let sent = killer.join().unwrap();
        assert_eq!(sent.len(), ended.len());
        for (stmt, reason) in sent {
            assert_eq!(ended.get(&stmt), Some(&reason), "{stmt:?}");
        }
    });
}

/// Catches: a lookup racing a session's drop and a new registration under
/// the same id that kills the wrong incarnation (a statement of the
/// closed session reported `Sent` for the new one), panics, or leaves an
/// entry behind.
#[test]
fn kills_racing_sessions_that_close_and_register_again_under_one_id() {
    within("kills racing re-registration", HANG, || {
        let list = ProcessList::new();
        let stop = Arc::new(AtomicBool::new(false));
        let killer = {
            let list = list.clone();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut sent = Vec::new();
                let mut met = Vec::new();
                while !stop.load(SeqCst) {
                    match list.kill_query(1, QueryInterrupted, "") {
                        Ok(kill) => match kill.outcome {
                            KillOutcome::Sent => sent.push(kill.statement.unwrap()),
                            KillOutcome::AlreadyKilled(_) => met.push(kill.statement.unwrap()),
                            KillOutcome::Idle | KillOutcome::Stale => {
                                assert_eq!(kill.statement, None)
                            }
                        },
                        Err(err) => assert_eq!(err, ProcessListError::NoSuchConn(1)),
                    }
                    let _ = list.kill_connection(2, QueryInterrupted, "");
                    thread::yield_now();
                }
                (sent, met)
            })
        };
        let mut killed = HashSet::new();
        for _ in 0..300 {
            let session = list.register(1).unwrap();
            let other = list.register(2).unwrap();
            let id = session.start_statement().unwrap();
            thread::yield_now();
            if session.end_statement().is_err() {
                killed.insert(id);
            }
            let _ = other.start_statement();
            drop(session);
            drop(other);
        }
        stop.store(true, SeqCst);
        let (sent, met) = killer.join().unwrap();
        let sent: HashSet<StatementId> = sent.into_iter().collect();
        assert_eq!(sent, killed, "each Sent kill is the one its statement saw");
        assert!(
            met.iter().all(|id| killed.contains(id)),
            "AlreadyKilled names a killed statement"
        );
        assert!(list.is_empty());
    });
}

/// Catches: a second `KILL <conn>` (an operator retrying, `KILL ... SYNC`
/// style) whose `Kill` names no statement and whose ticket is done at once
/// while the killed statement still runs: `Kill.statement` is documented
/// as "the statement it met: killed by it (`Sent`) or before it
/// (`AlreadyKilled`)", and `kill_query` does name it in the same case.
#[test]
fn a_second_kill_connection_names_the_running_statement_and_waits_for_it() {
    let list = ProcessList::new();
    let session = list.register(1).unwrap();
    let stmt = session.start_statement().unwrap();
    let first = list.kill_connection(1, QueryInterrupted, "").unwrap();
    assert_eq!(first.statement, Some(stmt));
    let query = list.kill_query(1, QueryInterrupted, "").unwrap();
    assert_eq!(query.statement, Some(stmt), "KILL QUERY names it");
    let again = list.kill_connection(1, QueryInterrupted, "").unwrap();
    assert_eq!(again.outcome, KillOutcome::AlreadyKilled(QueryInterrupted));
    assert_eq!(again.statement, Some(stmt));
    assert!(!again.ticket().is_done(), "the statement still runs");
    session.end_statement().unwrap_err();
    assert!(again.ticket().is_done());
}

/// Catches: a closing session shown as running a statement that never
/// ran. The owner's drop ends the statement into a new generation (the
/// list hands it a fresh number) and releases the old statement's waiters
/// and hooks (user code) before it leaves the list; a listing taken
/// meanwhile (here by a `KILL ... SYNC` waiter's waker, which runs on the
/// closing thread) reads that word as neither idle nor killed:
/// `SessionPhase::Running` with a `query_id` no statement had.
#[test]
fn a_closing_session_is_not_listed_as_running() {
    use std::future::Future;
    use std::task::{Context, Waker};
    let list = ProcessList::new();
    let session = list.register(1).unwrap();
    let stmt = session.start_statement().unwrap();
    let mut ticket = list.handle(1).unwrap().ticket(stmt);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (in_waker, waker_list) = (Arc::clone(&seen), list.clone());
    let waker = Waker::from(Arc::new(support::OnWake(move || {
        in_waker.lock().unwrap().extend(waker_list.snapshot());
    })));
    assert!(std::pin::Pin::new(&mut ticket)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    drop(session); // the client hung up: the waker runs here
    let rows = seen.lock().unwrap().clone();
    assert_eq!(
        rows.len(),
        1,
        "the waker ran once, with the session still listed"
    );
    assert_eq!(rows[0].conn_id, 1);
    assert_ne!(
        rows[0].phase,
        SessionPhase::Running,
        "{:?}: nothing runs in a closing session",
        rows[0]
    );
    assert_eq!(rows[0].query_id, None, "{:?}", rows[0]);
}

/// Catches: `KILL QUERY ID n` that finds statement n and then kills
/// whatever runs when the kill lands (the check-then-act of Databend's
/// and GreptimeDB's KILL): the session ends n and starts the next between
/// the lookup and the kill, as fast as it can, while the killer aims at
/// the number it just read.
#[test]
fn kill_query_id_racing_a_session_that_ends_and_starts_at_full_speed() {
    within("kill_query_id racing boundaries", HANG, || {
        let list = ProcessList::new();
        let session = list.register(1).unwrap();
        let handle = list.handle(1).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let owner = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut killed = HashMap::new();
                while !stop.load(SeqCst) {
                    let id = session.start_statement().unwrap();
                    if let Err(KillError::RunawayQueryExceeded { detail }) = session.end_statement()
                    {
                        killed.insert(id, detail.into_owned());
                    }
                }
                killed
            })
        };
        let mut sent = Vec::new();
        for n in 0..20_000u64 {
            let number = handle.statement().as_u64();
            let reason = n.to_string();
            match list.kill_query_id(number, RunawayQueryExceeded, &reason) {
                Ok(kill) => match kill.outcome {
                    KillOutcome::Sent | KillOutcome::AlreadyKilled(_) => {
                        let stmt = kill.statement.unwrap();
                        assert_eq!(stmt.as_u64(), number, "another statement was hit");
                        if kill.outcome == KillOutcome::Sent {
                            sent.push((stmt, reason));
                        }
                    }
                    KillOutcome::Stale => assert_eq!(kill.statement, None),
                    KillOutcome::Idle => panic!("KILL QUERY ID {number} found the session idle"),
                },
                Err(err) => assert_eq!(err, ProcessListError::NoSuchQuery(number)),
            }
        }
        stop.store(true, SeqCst);
        let killed = owner.join().unwrap();
        assert_eq!(sent.len(), killed.len());
        for (stmt, reason) in sent {
            assert_eq!(killed.get(&stmt), Some(&reason), "{stmt:?}");
        }
    });
}

/// Catches (mutation testing): `is_empty` and the `Debug` forms that do
/// not look at the list.
#[test]
fn is_empty_and_debug_show_the_list() {
    let list = ProcessList::new();
    assert!(list.is_empty());
    let session = list.register(5).unwrap();
    assert!(!list.is_empty());
    assert_eq!(format!("{list:?}"), "ProcessList { sessions: 1 }");
    session.start_statement().unwrap();
    let kill = list.kill_query(5, QueryInterrupted, "").unwrap();
    let shown = format!("{kill:?}");
    assert!(
        shown.starts_with("Kill { outcome: Sent, statement: Some("),
        "{shown}"
    );
    drop(session);
    assert!(list.is_empty());
}

/// Catches (mutation testing): sessions registered in one list starting at
/// the same statement number (the list hands out one number each).
#[test]
fn registered_sessions_start_with_distinct_numbers() {
    let list = ProcessList::new();
    let sessions: Vec<_> = (0..4).map(|conn| list.register(conn).unwrap()).collect();
    let mut numbers: Vec<u64> = sessions.iter().map(|s| s.statement().as_u64()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 4, "{numbers:?}");
}

/// Catches (mutation testing): an idle row showing time in a statement
/// when the start that stamped it was refused (a session killed as a
/// whole stays idle; nothing runs).
#[test]
fn a_refused_start_leaves_the_row_idle_with_no_time() {
    let clock = ManualClock::new();
    let list = ProcessList::with_clock(&clock);
    let session = list.register(3).unwrap();
    let _ = list.kill_connection(3, QueryInterrupted, "").unwrap();
    assert!(session.start_statement().is_err());
    clock.advance(7 * SEC);
    let row = &list.snapshot()[0];
    assert_eq!(row.phase, SessionPhase::Idle);
    assert_eq!(row.time_in_statement, Duration::ZERO);
    assert_eq!(row.session_killed, Some(QueryInterrupted));
}

/// Catches: a listing that shows the id `set_conn_id` gave a session,
/// while kills look it up by the id it was registered under: an admin
/// reading the listing would kill another connection.
#[test]
fn a_listing_shows_the_id_kills_look_up() {
    let list = ProcessList::new();
    let renamed = list.register(7).unwrap();
    renamed.set_conn_id(8);
    let other = list.register(8).unwrap();
    let stmt = renamed.start_statement().unwrap();
    other.start_statement().unwrap();
    let ids: Vec<u64> = list.snapshot().iter().map(|row| row.conn_id).collect();
    assert_eq!(ids, [7, 8]);
    let row = list
        .snapshot()
        .into_iter()
        .find(|row| row.conn_id == 7)
        .unwrap();
    assert_eq!(row.statement, Some(stmt));
    let kill = list.kill_query(row.conn_id, QueryInterrupted, "").unwrap();
    assert_eq!(kill.statement, Some(stmt));
    assert!(renamed.handle_signal().is_err() && other.handle_signal().is_ok());
}
