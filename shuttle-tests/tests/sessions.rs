//! Many sessions at once, under shuttle: a process list's `KILL QUERY` from
//! several admin threads, statement deadlines on a timer thread, async
//! tasks awaiting their statement's kill. Each scenario records a history
//! and checks it: no kill lands on a statement it was not aimed at, no
//! kill that returned `Sent` is lost, nobody hangs (shuttle reports a
//! deadlock if every thread is blocked). Each has a broken twin: the same
//! scenario with the public API used wrongly, which shuttle must catch.
#![cfg(shuttle)]

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use shuttle::sync::atomic::{AtomicUsize, Ordering};
use shuttle::sync::Mutex;
use shuttle::thread;
use sqlkiller::{
    KillHandle, KillOutcome, KillSignal, ManualClock, SqlKiller, StatementId, WaitOutcome,
};
use sqlkiller_shuttle_tests::{assert_found, explore, Budget, Outcomes};

/// What happened to the statements of a run, as the owners and killers saw it.
#[derive(Default)]
struct History {
    /// Each kill that returned `Sent`: the statement it was aimed at, and its signal.
    sent: Vec<(StatementId, KillSignal)>,
    /// Each statement's end: what its `reset` cleared (the kill that landed on it).
    ended: Vec<(StatementId, Option<KillSignal>)>,
}

impl History {
    /// The checks every scenario makes: first writer wins, no kill on the
    /// wrong statement, no kill lost.
    fn check(&self) {
        let mut aimed: HashMap<StatementId, Vec<KillSignal>> = HashMap::new();
        for &(id, signal) in &self.sent {
            aimed.entry(id).or_default().push(signal);
        }
        for (id, signals) in &aimed {
            assert!(
                signals.len() == 1,
                "two kills of {id:?} returned Sent: {signals:?}"
            );
        }
        // A kill on the wrong statement shows as a kill lost from the
        // statement it was aimed at, too: report the wrong statement first.
        for &(id, cleared) in &self.ended {
            if let (None, Some(cleared)) = (aimed.get(&id), cleared) {
                panic!(
                    "kill on the wrong statement: {id:?} ended killed with {cleared:?}, \
                     but no kill aimed at it was Sent"
                );
            }
        }
        for &(id, cleared) in &self.ended {
            if let Some(sent) = aimed.get(&id).map(|signals| signals[0]) {
                assert_eq!(
                    Some(sent),
                    cleared,
                    "kill lost: {sent:?} was Sent to {id:?}, which ended with {cleared:?}"
                );
            }
        }
    }
}

/// The process list of the scenarios: by connection, the handle and the
/// statement a listing shows (written by the owner after each `reset`).
struct ProcessList {
    sessions: Vec<(KillHandle, Mutex<StatementId>)>,
}

impl ProcessList {
    fn listed(&self, conn: usize) -> (&KillHandle, StatementId) {
        let (handle, listed) = &self.sessions[conn];
        (
            handle,
            *listed.lock().unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// Whose kill it is: each admin thread kills with its own signal, so the
/// signal a statement ends with names the kill that won.
const SIGNALS: [KillSignal; 3] = [
    KillSignal::QueryInterrupted,
    KillSignal::QueryMemoryExceeded,
    KillSignal::KilledByMemArbitrator,
];

/// How an admin thread turns `KILL QUERY <conn>` into a kill.
type KillQuery = fn(&KillHandle, StatementId, KillSignal) -> Option<KillOutcome>;

/// `sessions` owners each run `statements` statements of `checks`
/// checkpoints; `admins` threads each send `kills` KILL QUERYs through the
/// process list, with `kill_query`. Returns the history.
fn kill_query_storm(
    outcomes: &Outcomes,
    sessions: usize,
    statements: usize,
    admins: usize,
    kills: usize,
    kill_query: KillQuery,
) -> History {
    let history = Arc::new(Mutex::new(History::default()));
    let killers: Vec<_> = (0..sessions).map(|_| SqlKiller::new()).collect();
    let list = Arc::new(ProcessList {
        sessions: killers
            .iter()
            .map(|k| (k.handle(), Mutex::new(k.statement())))
            .collect(),
    });
    let mut threads = Vec::new();
    for (conn, killer) in killers.into_iter().enumerate() {
        let (list, history) = (Arc::clone(&list), Arc::clone(&history));
        threads.push(thread::spawn(move || {
            let mut seen_at_checkpoint = 0;
            for _ in 0..statements {
                let id = killer.statement();
                for _ in 0..2 {
                    if let Err(err) = killer.handle_signal() {
                        seen_at_checkpoint += 1;
                        assert_eq!(killer.kill_signal(), Some(err.signal()));
                        break;
                    }
                }
                let cleared = killer.reset();
                history
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .ended
                    .push((id, cleared));
                *list.sessions[conn]
                    .1
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = killer.statement();
            }
            // The session stays open until every admin is done (below).
            (seen_at_checkpoint, killer)
        }));
    }
    let mut admin_threads = Vec::new();
    for admin in 0..admins {
        let (list, history) = (Arc::clone(&list), Arc::clone(&history));
        admin_threads.push(thread::spawn(move || {
            let mut outcomes = Vec::new();
            for i in 0..kills {
                // Spread the kills over the sessions; admins collide on some.
                let conn = (admin * 5 + i * 3) % list.sessions.len();
                let (handle, listed) = list.listed(conn);
                let signal = SIGNALS[admin % SIGNALS.len()];
                let outcome = kill_query(handle, listed, signal);
                if outcome == Some(KillOutcome::Sent) {
                    history
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .sent
                        .push((listed, signal));
                }
                outcomes.push(outcome);
            }
            outcomes
        }));
    }
    let mut open = Vec::new();
    for thread in threads {
        let (seen, killer) = thread.join().unwrap();
        if seen > 0 {
            outcomes.saw("a kill seen at a checkpoint");
        }
        open.push(killer);
    }
    for admin in admin_threads {
        for outcome in admin.join().unwrap() {
            outcomes.saw(match outcome {
                Some(KillOutcome::Sent) => "kill sent",
                Some(KillOutcome::Stale) => "kill stale: the listed statement had ended",
                Some(KillOutcome::AlreadyKilled(_)) => "kill lost the race to another admin",
                _ => "no kill sent",
            });
        }
    }
    // Once the admins are done, the statement each session is on (listed
    // after its last, never run) ends too, so a kill that landed there is
    // in the history.
    for killer in open {
        let id = killer.statement();
        let cleared = killer.reset();
        history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ended
            .push((id, cleared));
    }
    Arc::into_inner(history)
        .unwrap()
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The right way: kill the statement the listing showed, by its id.
fn kill_listed_statement(
    handle: &KillHandle,
    listed: StatementId,
    signal: KillSignal,
) -> Option<KillOutcome> {
    Some(handle.kill_statement(listed, signal))
}

/// Twenty sessions of three statements each, three admin threads sending
/// KILL QUERY through the process list: every kill that returned `Sent`
/// stopped the statement the listing showed, and no other (I1, I2, I3 at
/// scale). The admins kill with different signals, so each statement's
/// end names the admin whose kill won.
#[test]
fn kill_query_storm_across_twenty_sessions() {
    explore(
        "kill_query_storm_across_twenty_sessions",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        &[
            "kill sent",
            "kill stale: the listed statement had ended",
            "kill lost the race to another admin",
            "a kill seen at a checkpoint",
        ],
        |outcomes| kill_query_storm(outcomes, 20, 3, 3, 8, kill_listed_statement).check(),
    );
}

/// The same storm at fifty sessions and five admin threads.
#[test]
fn kill_query_storm_across_fifty_sessions() {
    explore(
        "kill_query_storm_across_fifty_sessions",
        Budget {
            random: 500,
            pct: 500,
            depth: 3,
        },
        &[
            "kill sent",
            "kill stale: the listed statement had ended",
            "kill lost the race to another admin",
            "a kill seen at a checkpoint",
        ],
        |outcomes| kill_query_storm(outcomes, 50, 3, 5, 12, kill_listed_statement).check(),
    );
}

/// Broken twin: the admin reads the listed statement, checks that the
/// session still runs it, then sends a plain kill to "the current
/// statement". Between the check and the act the statement can end, and
/// the kill lands on the next one (Databend's and GreptimeDB's KILL).
#[test]
fn broken_kill_query_checks_then_kills_the_current_statement() {
    assert_found(
        "broken_kill_query_checks_then_kills_the_current_statement",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        // A kill that landed on the next statement also shows as a second
        // `Sent` to the statement it was aimed at, when another admin's
        // kill did land there.
        &["kill on the wrong statement", "two kills of"],
        || {
            let outcomes = Outcomes::default();
            kill_query_storm(&outcomes, 20, 3, 3, 8, |handle, listed, signal| {
                (handle.statement() == listed).then(|| handle.send_kill_signal(signal))
            })
            .check()
        },
    );
}

/// How a session's deadline is kept: by the crate's timer (correct), or
/// by the scenario's own watchdog (the twin).
#[derive(Clone, Copy, PartialEq)]
enum Deadlines {
    CratesTimer,
    WatchdogKillsTheCurrentStatement,
}

const FIRST_DEADLINE: Duration = Duration::from_millis(5);
const SECOND_DEADLINE: Duration = Duration::from_millis(30);
const TICK: Duration = Duration::from_millis(5);

/// `sessions` owners on one manual clock, with a timer thread advancing
/// it. Each runs a statement with a deadline of one tick that may or may
/// not pass before the statement ends, then one with 30 ms, which it waits
/// out on a kill event. Checked: a deadline kill lands only once its own
/// statement's time has come (a deadline of statement 1 that lands on
/// statement 2 lands early for it), and every waiting owner wakes, killed
/// by its deadline (none lost: the timer thread gives up after 2 s of
/// clock time).
fn deadlines_on_a_timer_thread(outcomes: &Outcomes, sessions: usize, deadlines: Deadlines) {
    let clock = ManualClock::new();
    let done = Arc::new(AtomicUsize::new(0));
    // The twin's watchdog: (handle, statement, due) registered by owners.
    let watched: Arc<Mutex<Vec<(KillHandle, StatementId, Duration)>>> = Arc::default();
    let mut owners = Vec::new();
    for _ in 0..sessions {
        let (clock, done, watched) = (clock.clone(), Arc::clone(&done), Arc::clone(&watched));
        owners.push(thread::spawn(move || {
            let killer = SqlKiller::with_clock(&clock);
            let arm = |timeout: Duration| {
                let id = killer.statement();
                let armed_at = clock.elapsed();
                match deadlines {
                    Deadlines::CratesTimer => killer.set_statement_timeout(timeout),
                    Deadlines::WatchdogKillsTheCurrentStatement => watched
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((killer.handle(), id, armed_at + timeout)),
                }
                armed_at
            };
            // Statement 1: a few checkpoints, then it ends, perhaps killed.
            let armed_at = arm(FIRST_DEADLINE);
            let seen_at_checkpoint = (0..12).any(|_| killer.handle_signal().is_err());
            let first = killer.reset();
            if let Some(signal) = first {
                assert_eq!(signal, KillSignal::MaxExecTimeExceeded);
                assert!(
                    clock.elapsed() >= armed_at + FIRST_DEADLINE,
                    "deadline fired early, on the first statement"
                );
            }
            // Statement 2: waits for its deadline on a kill event. Its
            // cancel hook makes the timer hand the kill's serving to a
            // thread of its own.
            let armed_at = arm(SECOND_DEADLINE);
            let hook_ran = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&hook_ran);
            let _ = killer.set_cancel_hook(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            });
            let woke = killer.kill_event().wait();
            assert_eq!(woke, WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded));
            assert!(
                clock.elapsed() >= armed_at + SECOND_DEADLINE,
                "deadline fired early, on the second statement"
            );
            assert_eq!(killer.reset(), Some(KillSignal::MaxExecTimeExceeded));
            assert_eq!(
                hook_ran.load(Ordering::SeqCst),
                1,
                "the deadline's hook had not run once when reset returned"
            );
            done.fetch_add(1, Ordering::SeqCst);
            (seen_at_checkpoint, first.is_some())
        }));
    }
    // The timer thread: advances the clock until every owner is done.
    let timer = {
        let (clock, done, watched) = (clock.clone(), Arc::clone(&done), Arc::clone(&watched));
        thread::spawn(move || {
            while done.load(Ordering::SeqCst) < sessions {
                assert!(
                    clock.elapsed() < Duration::from_secs(2),
                    "kill lost: the clock ran 2 s and a deadline's owner still waits"
                );
                clock.advance(TICK);
                if deadlines == Deadlines::WatchdogKillsTheCurrentStatement {
                    let now = clock.elapsed();
                    let due: Vec<_> = {
                        let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
                        let (due, later) = watched.drain(..).partition(|w| w.2 <= now);
                        *watched = later;
                        due
                    };
                    for (handle, _statement, _) in due {
                        // The bug: the watchdog knows the statement, but
                        // kills whatever runs now.
                        let _ = handle.send_kill_signal(KillSignal::MaxExecTimeExceeded);
                    }
                }
                thread::yield_now();
            }
        })
    };
    for owner in owners {
        let (seen_at_checkpoint, first_killed) = owner.join().unwrap();
        if seen_at_checkpoint {
            outcomes.saw("the first deadline seen at a checkpoint");
        }
        outcomes.saw(if first_killed {
            "a first statement killed by its deadline"
        } else {
            "a first statement ended before its deadline"
        });
    }
    timer.join().unwrap();
}

/// Ten sessions on one manual clock, a timer thread advancing it: each
/// statement's deadline kills that statement only, never early, never the
/// next statement, and a waiting owner always wakes (no lost deadline).
#[test]
fn deadlines_of_ten_sessions_on_a_timer_thread() {
    explore(
        "deadlines_of_ten_sessions_on_a_timer_thread",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        &[
            "a first statement killed by its deadline",
            "a first statement ended before its deadline",
            "the first deadline seen at a checkpoint",
        ],
        |outcomes| deadlines_on_a_timer_thread(outcomes, 10, Deadlines::CratesTimer),
    );
}

/// Broken twin: a hand-written watchdog remembers each statement's
/// deadline, but fires it as a plain kill of whatever the session runs
/// then: a deadline of statement 1 that falls due after it ended kills
/// statement 2.
#[test]
fn broken_watchdog_kills_without_the_statement() {
    assert_found(
        "broken_watchdog_kills_without_the_statement",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        &["deadline fired early, on the second statement"],
        || {
            deadlines_on_a_timer_thread(
                &Outcomes::default(),
                10,
                Deadlines::WatchdogKillsTheCurrentStatement,
            )
        },
    );
}

/// How a waiting task subscribes to its statement's kill.
#[derive(Clone, Copy, PartialEq)]
enum Subscribe {
    /// At spawn, bound to the statement (`kill_event_owned_for`).
    ForTheStatement,
    /// When the task first runs, to whatever statement is current then.
    ToTheCurrentStatementWhenItRuns,
}

/// `sessions` owners run two statements each; for each statement an async
/// task awaits its kill event, and async killer tasks kill statements by
/// id. Each waiter must complete `Killed(s)` exactly when its statement
/// was killed with `s`, else `Reset`.
fn async_waiters(outcomes: &Outcomes, sessions: usize, subscribe: Subscribe) {
    let history = Arc::new(Mutex::new(History::default()));
    let mut owners = Vec::new();
    for conn in 0..sessions {
        let history = Arc::clone(&history);
        owners.push(thread::spawn(move || {
            let killer = SqlKiller::new();
            let mut results = Vec::new();
            for statement in 0..2 {
                let id = killer.statement();
                let handle = killer.handle();
                let waiter = match subscribe {
                    Subscribe::ForTheStatement => {
                        let event = handle.kill_event_owned_for(id);
                        shuttle::future::spawn(event)
                    }
                    Subscribe::ToTheCurrentStatementWhenItRuns => {
                        let handle = handle.clone();
                        shuttle::future::spawn(async move { handle.kill_event_owned().await })
                    }
                };
                // A KILL from an async task, aimed at this statement, on
                // every other statement.
                let killer_task = ((conn + statement) % 2 == 0).then(|| {
                    let handle = handle.clone();
                    shuttle::future::spawn(async move {
                        handle.kill_statement(id, KillSignal::QueryInterrupted)
                    })
                });
                let _ = killer.handle_signal();
                let cleared = killer.reset();
                if let Some(task) = killer_task {
                    let outcome = shuttle::future::block_on(task).unwrap();
                    if outcome == KillOutcome::Sent {
                        history
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .sent
                            .push((id, KillSignal::QueryInterrupted));
                    }
                }
                let woke = shuttle::future::block_on(waiter).unwrap();
                history.lock().unwrap_or_else(PoisonError::into_inner).ended.push((id, cleared));
                let expected = match cleared {
                    Some(signal) => WaitOutcome::Killed(signal),
                    None => WaitOutcome::Reset,
                };
                assert_eq!(
                    woke, expected,
                    "kill lost: the waiter of {id:?} woke with {woke:?}, its statement ended with {cleared:?}"
                );
                results.push(woke);
            }
            results
        }));
    }
    for owner in owners {
        for woke in owner.join().unwrap() {
            outcomes.saw(match woke {
                WaitOutcome::Killed(_) => "a waiting task woke killed",
                WaitOutcome::Reset => "a waiting task woke at the statement's end",
            });
        }
    }
    Arc::into_inner(history)
        .unwrap()
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .check();
}

/// Ten sessions, each statement awaited by an async task and killed by
/// another on every other statement: each waiter completes with its own
/// statement's fate (I2 for futures, at scale).
#[test]
fn async_tasks_await_the_kill_of_their_statement() {
    explore(
        "async_tasks_await_the_kill_of_their_statement",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        &[
            "a waiting task woke killed",
            "a waiting task woke at the statement's end",
        ],
        |outcomes| async_waiters(outcomes, 10, Subscribe::ForTheStatement),
    );
}

/// Broken twin: the task subscribes when it first runs, to the statement
/// current then. If the statement ended before the task ran, the task
/// waits on the next statement, which never comes (its owner waits for the
/// task): a hang, which shuttle reports as a deadlock.
#[test]
fn broken_task_subscribes_to_the_current_statement_when_it_runs() {
    assert_found(
        "broken_task_subscribes_to_the_current_statement_when_it_runs",
        Budget {
            random: 2000,
            pct: 2000,
            depth: 3,
        },
        &["deadlock"],
        || {
            async_waiters(
                &Outcomes::default(),
                10,
                Subscribe::ToTheCurrentStatementWhenItRuns,
            )
        },
    );
}
