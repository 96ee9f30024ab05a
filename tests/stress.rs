//! Real threads, many statements: killers against an owner that checks and
//! resets. Complements the loom models (exhaustive but tiny) with volume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller};

const STATEMENTS: u64 = 100_000;
const KILLERS: usize = 3;

/// What one killer thread saw: every kill it won, with the statement it won.
#[derive(Default)]
struct KillerLog {
    targeted_wins: Vec<(u64, KillSignal)>,
    plain_wins: usize,
}

#[test]
fn killers_against_an_owner_that_checks_and_resets() {
    let killer = Arc::new(SqlKiller::new());
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(KILLERS + 1));

    let threads: Vec<_> = (0..KILLERS)
        .map(|i| {
            let (killer, done, start) = (killer.clone(), done.clone(), start.clone());
            thread::spawn(move || {
                let mut log = KillerLog::default();
                let signal = KillSignal::ALL[i % KillSignal::ALL.len()];
                start.wait();
                let mut round = 0u64;
                while !done.load(Ordering::Relaxed) {
                    round += 1;
                    if round % 4 == 0 {
                        if killer.send_kill_signal_with_reason(signal, reason_of(signal))
                            == KillOutcome::Sent
                        {
                            log.plain_wins += 1;
                        }
                    } else {
                        let target = killer.statement();
                        match killer.kill_statement_with_reason(target, signal, reason_of(signal)) {
                            KillOutcome::Sent => log.targeted_wins.push((target.as_u64(), signal)),
                            KillOutcome::AlreadyKilled(_) | KillOutcome::Stale => {}
                        }
                    }
                    // Leave most statements unkilled, so checks see both.
                    for _ in 0..(round % 64) {
                        std::hint::spin_loop();
                    }
                }
                log
            })
        })
        .collect();

    // The owner: a few checkpoints per statement, then the boundary.
    let first = killer.statement().as_u64();
    let mut cleared: Vec<Option<KillSignal>> = Vec::with_capacity(STATEMENTS as usize);
    let mut errors_seen = 0u64;
    start.wait();
    for n in 0..STATEMENTS {
        let statement = killer.statement().as_u64();
        assert_eq!(statement, first + n, "only reset advances the generation");
        let mut seen: Option<KillSignal> = None;
        for _ in 0..3 {
            if let Err(err) = killer.handle_signal() {
                check_error(&err);
                // Once killed, the statement stays killed with the same signal.
                assert!(seen.is_none() || seen == Some(err.signal()));
                seen = Some(err.signal());
                errors_seen += 1;
            } else {
                assert_eq!(seen, None, "a kill vanished inside its statement");
            }
        }
        let signal = killer.reset();
        if let Some(s) = seen {
            assert_eq!(
                signal,
                Some(s),
                "reset cleared another signal than the checks saw"
            );
        }
        cleared.push(signal);
    }
    done.store(true, Ordering::Relaxed);
    let logs: Vec<KillerLog> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    // The last generation may have been killed after the owner stopped.
    let last = killer.reset();

    // Exactly one Sent per generation, and every targeted win is the signal
    // `reset` cleared for that very statement.
    let mut winners = std::collections::HashMap::new();
    for log in &logs {
        for &(statement, signal) in &log.targeted_wins {
            assert!(
                winners.insert(statement, signal).is_none(),
                "two winners for {statement}"
            );
            let index = (statement - first) as usize;
            let actual = if index == cleared.len() {
                last
            } else {
                cleared[index]
            };
            assert_eq!(
                actual,
                Some(signal),
                "statement {statement} cleared {actual:?}"
            );
        }
    }
    let sent: usize = logs
        .iter()
        .map(|l| l.targeted_wins.len() + l.plain_wins)
        .sum();
    let killed = cleared
        .iter()
        .chain([&last])
        .filter(|s| s.is_some())
        .count();
    assert_eq!(
        sent, killed,
        "every Sent kill is cleared by exactly one reset"
    );
    assert!(
        killed > 100 && killed < STATEMENTS as usize,
        "killed {killed}: the test did not race"
    );
    eprintln!("{STATEMENTS} statements, {killed} killed, {errors_seen} failing checks");
}

fn reason_of(signal: KillSignal) -> &'static str {
    match signal {
        KillSignal::RunawayQueryExceeded => "runaway from killer",
        KillSignal::KilledByMemArbitrator => "arbitrator from killer",
        _ => "unused",
    }
}

fn check_error(err: &KillError) {
    match err {
        KillError::RunawayQueryExceeded { detail } => assert_eq!(detail, "runaway from killer"),
        KillError::KilledByMemArbitrator { reason, .. } => {
            assert_eq!(reason, "arbitrator from killer")
        }
        _ => {}
    }
}
