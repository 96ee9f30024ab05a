//! Real threads, many statements: killers against an owner that checks and
//! resets. Complements the loom models (exhaustive but tiny) with volume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use sqlkiller::{KillError, KillOutcome, KillSignal, SqlKiller};

const STATEMENTS: u64 = 100_000;
const MIN_KILLED: usize = 1_000;
const KILLERS: usize = 3;
/// How long an owner keeps starting statements, after its minimum number,
/// until enough kills have landed: on a loaded or single core the killers
/// run rarely, but they do run.
const PATIENCE: Duration = Duration::from_secs(60);
/// One statement in this many yields its core in the middle, so that a
/// killer lands inside statements even when all threads share one core.
const YIELD_EVERY: u64 = 256;

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
                    if round.is_multiple_of(4) {
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
                            KillOutcome::Idle => panic!("a session that only resets is never idle"),
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
    // At least STATEMENTS statements, longer (up to PATIENCE) until
    // MIN_KILLED kills have landed: the point is to race, however the cores
    // are shared.
    let began = Instant::now();
    let mut killed_so_far = 0;
    let mut n = 0;
    while n < STATEMENTS || (killed_so_far < MIN_KILLED && began.elapsed() < PATIENCE) {
        let statement = killer.statement().as_u64();
        assert_eq!(statement, first + n, "only reset advances the generation");
        let mut seen: Option<KillSignal> = None;
        for check in 0..3 {
            if check == 1 && n.is_multiple_of(YIELD_EVERY) {
                thread::yield_now(); // a killer may land between two checks
            }
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
        // A little work per statement, so that killers on the other core
        // land inside statements however the two tests share the cores.
        for _ in 0..64 {
            std::hint::spin_loop();
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
        killed_so_far += usize::from(signal.is_some());
        n += 1;
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
        killed >= MIN_KILLED && killed < cleared.len(),
        "killed {killed} of {n}: the test did not race"
    );
    eprintln!(
        "{n} statements, {killed} killed, {errors_seen} failing checks, {:?}",
        began.elapsed()
    );
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

/// Side channels under volume: every statement has a cancel hook and a kill
/// event; some run part of their work in a kill-immune section; a waiter
/// thread blocks on each statement in turn. Checks that hooks ran exactly
/// for killed statements, events report what `reset` cleared, no check fails
/// inside a section, and nobody hangs.
#[test]
fn side_channels_under_racing_killers() {
    use std::sync::atomic::AtomicU32;

    use sqlkiller::WaitOutcome;

    const STATEMENTS: usize = 20_000;
    let killer = Arc::new(SqlKiller::new());
    // Runs until STATEMENTS statements and MIN_KILLED kills, the second
    // part for at most PATIENCE.
    const MIN_KILLED: usize = 200;
    let done = Arc::new(AtomicBool::new(false));
    let first = killer.statement().as_u64();

    let killers: Vec<_> = (0..2)
        .map(|i| {
            let (killer, done) = (Arc::clone(&killer), Arc::clone(&done));
            thread::spawn(move || {
                let signal = KillSignal::ALL[i];
                let mut round = 0u32;
                while !done.load(Ordering::Relaxed) {
                    round = round.wrapping_add(1);
                    for _ in 0..(round % 16) * 16 {
                        std::hint::spin_loop();
                    }
                    let target = killer.statement();
                    let _ = killer.kill_statement(target, signal);
                }
            })
        })
        .collect();
    let waiter = {
        let (killer, done) = (Arc::clone(&killer), Arc::clone(&done));
        thread::spawn(move || {
            // What each wait saw; a wait that saw what the one before saw
            // (the same killed statement, again) is only counted.
            let mut seen = Vec::new();
            let mut waits = 0u64;
            while !done.load(Ordering::Relaxed) {
                let statement = killer.statement();
                let outcome = killer
                    .kill_event_for(statement)
                    .wait_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|| panic!("a waiter of {statement} hung"));
                waits += 1;
                if seen.last() != Some(&(statement.as_u64(), outcome)) {
                    seen.push((statement.as_u64(), outcome));
                }
            }
            (seen, waits)
        })
    };

    let mut cleared = Vec::with_capacity(STATEMENTS);
    let began = Instant::now();
    let mut killed = 0;
    let mut n = 0;
    while n < STATEMENTS || (killed < MIN_KILLED && began.elapsed() < PATIENCE) {
        let hook_runs = Arc::new(AtomicU32::new(0));
        let runs = Arc::clone(&hook_runs);
        let _ = killer.set_cancel_hook(move || {
            runs.fetch_add(1, Ordering::Relaxed);
        });
        let mut event = killer.kill_event();
        // A killer may land here even if all threads share one core:
        // inside the kill-immune section in one statement of three.
        let pause = (n as u64).is_multiple_of(YIELD_EVERY);
        if n.is_multiple_of(3) {
            let _commit = killer.kill_immune();
            if pause {
                thread::yield_now();
            }
            for _ in 0..4 {
                assert!(
                    killer.handle_signal().is_ok(),
                    "a check failed inside a kill-immune section"
                );
            }
        }
        if pause && !n.is_multiple_of(3) {
            thread::yield_now();
        }
        for _ in 0..256 {
            std::hint::spin_loop();
        }
        let _ = killer.handle_signal();
        let signal = killer.reset();
        let expected = signal.map_or(WaitOutcome::Reset, WaitOutcome::Killed);
        assert_eq!(event.try_outcome(), Some(expected), "statement {n}");
        assert_eq!(
            hook_runs.load(Ordering::Relaxed),
            u32::from(signal.is_some()),
            "statement {n}"
        );
        cleared.push(signal);
        killed += usize::from(signal.is_some());
        n += 1;
    }
    done.store(true, Ordering::Relaxed);
    for k in killers {
        k.join().unwrap();
    }
    // Release the waiter's last event: it may register after any one reset.
    while !waiter.is_finished() {
        killer.reset();
        thread::yield_now();
    }
    let (seen, waits) = waiter.join().unwrap();

    for (statement, outcome) in &seen {
        let index = (statement - first) as usize;
        if let (WaitOutcome::Killed(signal), Some(actual)) = (outcome, cleared.get(index)) {
            assert_eq!(
                *actual,
                Some(*signal),
                "waiter of {statement} saw a kill reset did not clear"
            );
        }
    }
    assert!(
        killed >= MIN_KILLED && killed < n,
        "killed {killed} of {n}: the test did not race"
    );
    eprintln!(
        "{n} statements, {killed} killed, {waits} waits, {:?}",
        began.elapsed()
    );
}
