//! The allocation budget, checked with a counting global allocator (no
//! timings): `SqlKiller::new` allocates once (the block the owner shares
//! with its handles), and with no waiter and no hook, every per-statement
//! operation — on the owner and on a handle — allocates nothing. One test in
//! this binary, so no other test allocates meanwhile.

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::future::Future;

use sqlkiller::{KillOutcome, KillSignal, SqlKiller};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn new_allocates_once_and_statements_allocate_nothing() {
    // `new` allocates one block (the first attempt also starts nothing
    // else: no timer, no thread). Counted over a few attempts, for the
    // reason given below.
    let once = (0..3).any(|_| {
        let region = Region::new(GLOBAL);
        let killer = SqlKiller::new();
        let handle = killer.handle();
        let created = region.change();
        drop((handle, killer));
        created.allocations == 1
    });
    assert!(once, "SqlKiller::new allocated other than once");
    let killer = SqlKiller::new();
    let handle = killer.handle();

    // A warm-up statement: with the `tracing` feature, tracing registers its
    // call sites on first use (a one-time cost, not a per-statement one).
    let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
    let _ = killer.reset();
    // The counter is process-wide: another thread of the test harness may
    // allocate meanwhile. An allocation of ours would happen in every
    // attempt; the budget holds if one attempt of 6,000 statements is clean.
    let clean = (0..3).any(|_| statements_allocate_nothing(&killer, &handle));
    assert!(
        clean,
        "every attempt allocated: see the stats printed above"
    );
    // A session nobody waits on never needs its side table or the timer:
    // its first statements allocate nothing either.
    let fresh_clean = (0..3).any(|_| {
        let fresh = SqlKiller::new();
        let fresh_handle = fresh.handle();
        statements_allocate_nothing(&fresh, &fresh_handle)
    });
    assert!(fresh_clean, "a new session's first statements allocated");

    // One task waiting: its wake-up is kept inline, so the kill that wakes
    // it allocates nothing either (registration allocates the table once).
    let woke_clean = (0..3).any(|_| {
        let mut event = killer.kill_event();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(std::pin::Pin::new(&mut event).poll(&mut cx).is_pending());
        let region = Region::new(GLOBAL);
        let sent = killer.send_kill_signal(KillSignal::QueryInterrupted);
        let stats = region.change();
        assert_eq!(sent, KillOutcome::Sent);
        drop(event);
        let _ = killer.reset();
        stats.allocations == 0 && stats.reallocations == 0
    });
    assert!(woke_clean, "a kill that wakes one task allocated");
}

/// 6,000 statements of kills, checks and resets, on the owner and through a
/// handle; whether they allocated nothing.
fn statements_allocate_nothing(killer: &SqlKiller, handle: &sqlkiller::KillHandle) -> bool {
    let region = Region::new(GLOBAL);
    killer.set_conn_id(7);
    for round in 0..1_000u32 {
        for signal in KillSignal::ALL {
            assert!(killer.handle_signal().is_ok());
            let outcome = match round % 3 {
                0 => killer.send_kill_signal(signal),
                1 => killer.kill_statement(killer.statement(), signal),
                _ => handle.kill_statement(handle.statement(), signal),
            };
            assert_eq!(outcome, KillOutcome::Sent);
            assert_eq!(
                killer.send_kill_signal(KillSignal::QueryInterrupted),
                KillOutcome::AlreadyKilled(signal)
            );
            // The error of every signal, built without a reason: no allocation.
            assert_eq!(killer.handle_signal().unwrap_err().signal(), signal);
            assert_eq!(handle.check_signal().unwrap_err().signal(), signal);
            let _ = (killer.phase(), killer.kill_signal(), killer.conn_id());
            assert_eq!(killer.reset(), Some(signal));
        }
    }
    let stale = killer.statement();
    killer.reset();
    assert_eq!(
        killer.kill_statement(stale, KillSignal::QueryInterrupted),
        KillOutcome::Stale
    );
    let stats = region.change();
    let clean = stats.allocations == 0 && stats.reallocations == 0;
    if !clean {
        eprintln!("allocated during 6,000 statements: {stats:?}");
    }
    clean
}
