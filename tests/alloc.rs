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
    let region = Region::new(GLOBAL);
    let killer = SqlKiller::new();
    let handle = killer.handle();
    let created = region.change();
    assert_eq!(created.allocations, 1, "new: one shared block {created:?}");

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
            assert_eq!(handle.handle_signal().unwrap_err().signal(), signal);
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
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");

    // One task waiting: its wake-up is kept inline, so the kill that wakes
    // it allocates nothing either (registration allocates the table once).
    let mut event = killer.kill_event();
    let waker = std::task::Waker::noop();
    let polled = std::pin::Pin::new(&mut event).poll(&mut std::task::Context::from_waker(waker));
    assert!(polled.is_pending());
    let region = Region::new(GLOBAL);
    assert_eq!(
        killer.send_kill_signal(KillSignal::QueryInterrupted),
        KillOutcome::Sent
    );
    let stats = region.change();
    drop(event);
    drop((killer, handle));
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
