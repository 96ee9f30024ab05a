//! Models of the signal itself (invariants I1–I6, listed in `src/state.rs`) on the real `SqlKiller`.
#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, Ordering::*};
use loom::sync::Arc;
use loom::thread;
use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller};
use sqlkiller_loom_tests::{check, Outcomes, PlainField};

use KillSignal::*;

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
                KillOutcome::AlreadyKilled(_) => panic!("nobody else killed"),
            }
            assert_ne!(killer.statement(), target);
            assert_eq!(killer.kill_signal(), None, "the next statement was killed");
            assert!(killer.handle_signal().is_ok());
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
