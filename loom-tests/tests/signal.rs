//! Models of the signal itself (invariants I1–I6, listed in `src/state.rs`) on the real `SqlKiller`.
//!
//! A model is followed by its broken twin, where it has one: a few lines
//! of loom with the bug the model guards against, which loom must reject
//! (`assert_rejected`). If a twin ever passes, the model next to it proves
//! nothing. The models and twins of TiDB's own bugs are in `historic.rs`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use loom::sync::{Arc, Mutex};
use loom::thread;
use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller};
use sqlkiller_loom_tests::{assert_rejected, check, Outcomes, PlainField};

use KillSignal::*;

/// Raw signals, for the twins written in TiDB's Go shape (`Signal uint32`).
const QUERY_INTERRUPTED: u32 = 1;
const MAX_EXEC_TIME_EXCEEDED: u32 = 2;

/// I1: two killers race for one statement. Exactly one gets `Sent`, the other
/// `AlreadyKilled` with the winner's signal, and the owner sees the winner.
#[test]
fn two_killers_race() {
    check(
        "two_killers_race",
        None,
        &["spawned killer won", "main killer won"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let other = Arc::clone(&killer);
            let t = thread::spawn(move || other.send_kill_signal(QueryInterrupted));
            let mine = killer.send_kill_signal(MaxExecTimeExceeded);
            let theirs = t.join().unwrap();
            let winner = match (mine, theirs) {
                (KillOutcome::Sent, KillOutcome::AlreadyKilled(w)) => {
                    assert_eq!(w, MaxExecTimeExceeded);
                    seen.saw("main killer won");
                    w
                }
                (KillOutcome::AlreadyKilled(w), KillOutcome::Sent) => {
                    assert_eq!(w, QueryInterrupted);
                    seen.saw("spawned killer won");
                    w
                }
                other => panic!("not exactly one winner: {other:?}"),
            };
            assert_eq!(killer.kill_signal(), Some(winner));
            assert_eq!(killer.handle_signal().unwrap_err().signal(), winner);
        },
    );
}

/// I1 with three killers: one `Sent`, two `AlreadyKilled(winner)`.
#[test]
fn three_killers_race() {
    check(
        "three_killers_race",
        None,
        &[
            "QueryInterrupted won",
            "QueryMemoryExceeded won",
            "ServerMemoryExceeded won",
        ],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let spawn = |signal| {
                let k = Arc::clone(&killer);
                thread::spawn(move || (signal, k.send_kill_signal(signal)))
            };
            let a = spawn(QueryInterrupted);
            let b = spawn(QueryMemoryExceeded);
            let outcomes = [
                (
                    ServerMemoryExceeded,
                    killer.send_kill_signal(ServerMemoryExceeded),
                ),
                a.join().unwrap(),
                b.join().unwrap(),
            ];
            let winners: Vec<_> = outcomes
                .iter()
                .filter(|(_, o)| *o == KillOutcome::Sent)
                .map(|(s, _)| *s)
                .collect();
            assert_eq!(winners.len(), 1, "{outcomes:?}");
            let winner = winners[0];
            seen.saw(match winner {
                QueryInterrupted => "QueryInterrupted won",
                QueryMemoryExceeded => "QueryMemoryExceeded won",
                _ => "ServerMemoryExceeded won",
            });
            for (signal, outcome) in outcomes {
                if signal != winner {
                    assert_eq!(outcome, KillOutcome::AlreadyKilled(winner));
                }
            }
            assert_eq!(killer.handle_signal().unwrap_err().signal(), winner);
        },
    );
}

/// I1's bug: a kill that checks "not killed yet" with a load and then
/// stores its signal lets two killers both believe they won.
/// Fixed models: `two_killers_race` and `three_killers_race`, above.
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

/// I2: a kill that returned `Sent` before the check started (joined) is seen.
#[test]
fn kill_then_check() {
    check("kill_then_check", None, &[], |_| {
        let killer = Arc::new(SqlKiller::new());
        let k = Arc::clone(&killer);
        let t = thread::spawn(move || k.send_kill_signal(QueryInterrupted));
        assert_eq!(t.join().unwrap(), KillOutcome::Sent);
        assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    });
}

/// I2: the owner checks while the kill is in flight. A check that starts
/// after the killer announced `Sent` (through a flag) must fail, and any
/// failing check reports the killer's signal.
#[test]
fn kill_races_check() {
    check(
        "kill_races_check",
        None,
        &["check before kill", "check saw kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let announced = Arc::new(AtomicBool::new(false));
            let (k, a) = (Arc::clone(&killer), Arc::clone(&announced));
            let t = thread::spawn(move || {
                assert_eq!(k.send_kill_signal(MaxExecTimeExceeded), KillOutcome::Sent);
                a.store(true, Release);
            });
            for _ in 0..2 {
                let was_announced = announced.load(Acquire);
                match killer.handle_signal() {
                    Ok(()) => {
                        assert!(!was_announced, "a Sent kill was missed by a later check");
                        seen.saw("check before kill");
                    }
                    Err(err) => {
                        assert_eq!(err, KillError::MaxExecTimeExceeded);
                        seen.saw("check saw kill");
                    }
                }
            }
            t.join().unwrap();
            assert!(killer.handle_signal().is_err());
        },
    );
}

/// I3: a `KILL QUERY` aimed at statement g races the owner's `reset`. It
/// kills g (and `reset` reports it) or is `Stale`; statement g+1 is never
/// touched. Would have caught the classic stale kill.
#[test]
fn kill_statement_races_reset() {
    check(
        "kill_statement_races_reset",
        None,
        &["killed its statement", "stale"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let target = killer.statement();
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || k.kill_statement(target, QueryInterrupted));
            let cleared = killer.reset();
            let outcome = t.join().unwrap();
            match outcome {
                KillOutcome::Sent => {
                    assert_eq!(cleared, Some(QueryInterrupted));
                    seen.saw("killed its statement");
                }
                KillOutcome::Stale => {
                    assert_eq!(cleared, None);
                    seen.saw("stale");
                }
                KillOutcome::AlreadyKilled(_) | KillOutcome::Idle => {
                    panic!("nobody else killed, and the session is never idle")
                }
            }
            assert_ne!(killer.statement(), target);
            assert_eq!(killer.kill_signal(), None, "the next statement was killed");
            assert!(killer.handle_signal().is_ok());
        },
    );
}

/// The classic stale kill (MySQL, PostgreSQL and TiDB alike): a `KILL QUERY`
/// for statement N checks "is N still running?" and then sends a plain
/// kill; the owner moves to N+1 in between and the kill hits N+1. Written
/// against the real crate, misused: check-then-act instead of
/// `kill_statement`. Fixed model: `kill_statement_races_reset`, above.
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

/// I3 from the other side: a `KILL QUERY` reads the statement id and kills
/// it while the owner resets once. Whichever statement it read, the kill
/// lands on exactly that one — `Stale` only if that statement ended, which
/// can only be the old one. Guards the hint that `kill` starts its CAS from:
/// a lagging hint must never be answered from.
#[test]
fn kill_of_read_statement_races_reset() {
    check(
        "kill_of_read_statement_races_reset",
        None,
        &[
            "killed the old statement",
            "old statement already ended",
            "killed the new statement",
        ],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let old = killer.statement();
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || {
                let id = k.statement();
                (id, k.kill_statement(id, QueryInterrupted))
            });
            let cleared = killer.reset();
            let (id, outcome) = t.join().unwrap();
            if id == old {
                match outcome {
                    KillOutcome::Sent => {
                        assert_eq!(cleared, Some(QueryInterrupted));
                        seen.saw("killed the old statement");
                    }
                    KillOutcome::Stale => {
                        assert_eq!(cleared, None);
                        seen.saw("old statement already ended");
                    }
                    other => panic!("{other:?}"),
                }
                assert_eq!(killer.kill_signal(), None);
            } else {
                assert_eq!(
                    outcome,
                    KillOutcome::Sent,
                    "a kill of the current statement was lost"
                );
                assert_eq!(killer.kill_signal(), Some(QueryInterrupted));
                seen.saw("killed the new statement");
            }
        },
    );
}

/// I4: the first check that sees a kill already sees its reason, never an
/// empty one (the reason is written under the lock held across the CAS).
#[test]
fn reason_seen_with_first_sight_of_signal() {
    check(
        "reason_seen_with_first_sight_of_signal",
        None,
        &["check before kill", "check saw kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let k = Arc::clone(&killer);
            let t = thread::spawn(move || {
                k.send_kill_signal_with_reason(KilledByMemArbitrator, "pool exhausted")
            });
            match killer.handle_signal() {
                Ok(()) => seen.saw("check before kill"),
                Err(err) => {
                    assert_eq!(
                        err,
                        KillError::KilledByMemArbitrator {
                            reason: "pool exhausted".into(),
                            conn_id: 0
                        }
                    );
                    seen.saw("check saw kill");
                }
            }
            let _ = t.join().unwrap();
        },
    );
}

/// I4: two killers with different reasons race while the owner checks and
/// resets. Every error carries the reason of its own kill: never the other
/// killer's, never an empty one, never one from before the reset.
#[test]
fn reason_travels_with_signal() {
    check(
        "reason_travels_with_signal",
        None,
        &[
            "arbitrator reason",
            "runaway reason",
            "killed before reset",
            "killed after reset",
        ],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let spawn = |signal, reason: &'static str| {
                let k = Arc::clone(&killer);
                thread::spawn(move || k.send_kill_signal_with_reason(signal, reason))
            };
            let a = spawn(KilledByMemArbitrator, "pool exhausted");
            let b = spawn(RunawayQueryExceeded, "exec elapsed");
            if let Err(err) = killer.handle_signal() {
                assert_consistent(&err, seen);
                seen.saw("killed before reset");
            }
            killer.reset();
            let _ = a.join().unwrap();
            let _ = b.join().unwrap();
            if let Err(err) = killer.handle_signal() {
                assert_consistent(&err, seen);
                seen.saw("killed after reset");
            }
        },
    );

    fn assert_consistent(err: &KillError, seen: &Outcomes) {
        match err {
            KillError::KilledByMemArbitrator { reason, .. } => {
                assert_eq!(reason, "pool exhausted");
                seen.saw("arbitrator reason");
            }
            KillError::RunawayQueryExceeded { detail } => {
                assert_eq!(detail, "exec elapsed");
                seen.saw("runaway reason");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// TiDB's `SendKillSignalWithKillEventReason` writes `desc` under the event
/// mutex *before* the signal CAS, so a losing killer overwrites the winner's
/// reason: the error pairs one kill's signal with another's reason (I4).
/// Fixed model: `reason_travels_with_signal`, above.
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

/// I2, what a kill publishes: a killer writes its own data (here a plain,
/// non-atomic field, as a memory arbitrator's report would be) and then
/// kills; a check that sees the kill may read that data. `handle_signal`
/// loads Relaxed and fences with Acquire once it sees a kill: without the
/// fence loom reports the unordered access (checked by hand).
#[test]
fn kill_publishes_what_the_killer_wrote_before() {
    check(
        "kill_publishes_what_the_killer_wrote_before",
        None,
        &["check saw kill", "check before kill"],
        |seen| {
            let killer = Arc::new(SqlKiller::new());
            let report = Arc::new(PlainField::new(0));
            let (k, r) = (Arc::clone(&killer), Arc::clone(&report));
            let arbitrator = thread::spawn(move || {
                r.write(42);
                let _ = k.send_kill_signal(KilledByMemArbitrator);
            });
            if killer.handle_signal().is_err() {
                let value = report.read();
                assert_eq!(value, 42);
                seen.saw("check saw kill");
            } else {
                seen.saw("check before kill");
            }
            arbitrator.join().unwrap();
        },
    );
}
