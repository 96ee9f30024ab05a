//! The timer's memory, counted with a counting global allocator (no
//! timings): dropped sessions are freed at once, not when their deadline
//! would have passed; the timer's queue is bounded by the live sessions,
//! not by how many deadlines were armed; and a deadline that fires
//! allocates nothing.
//!
//! The counter is process-wide, so the tests of this binary take turns
//! (`ONE_AT_A_TIME`), and a count that must be zero is tried a few times:
//! the test harness may allocate meanwhile, an allocation of ours happens
//! every time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use stats_alloc::{Region, Stats, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

use sqlkiller::{KillSignal, ManualClock, SqlKiller};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Held by each test while it counts.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bytes still allocated of those counted in `stats`.
fn live_bytes(stats: &Stats) -> isize {
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

/// Arms one real-clock deadline and lets it go: starts the timer thread
/// and sizes its queue, so that what follows counts only itself.
fn warm_up_the_timer() {
    let killer = SqlKiller::new();
    killer.set_max_execution_time(Some(Duration::from_secs(3600)));
    killer.reset();
    drop(killer);
}

#[test]
fn sessions_dropped_with_an_hour_of_deadline_left_are_freed_at_once() {
    let _turn = one_at_a_time();
    warm_up_the_timer();
    const SESSIONS: isize = 10_000;
    let region = Region::new(GLOBAL);
    for _ in 0..SESSIONS {
        let killer = SqlKiller::new();
        killer.set_max_execution_time(Some(Duration::from_secs(3600)));
        killer.reset(); // the next statement's deadline is armed
        drop(killer);
    }
    let kept = live_bytes(&region.change());
    // A session's block alone is some 300 bytes: keeping them would be
    // megabytes. Allow a few bytes a session for anything else.
    assert!(
        kept < 4 * SESSIONS,
        "{SESSIONS} dropped sessions still hold {kept} bytes: the timer keeps them until their deadline"
    );
}

#[test]
fn a_session_whose_deadline_moves_earlier_every_statement_keeps_the_timer_bounded() {
    let _turn = one_at_a_time();
    warm_up_the_timer();
    const STATEMENTS: u64 = 100_000;
    let killer = SqlKiller::new();
    killer.set_statement_timeout(Duration::from_secs(3600));
    killer.reset();
    let region = Region::new(GLOBAL);
    for statement in 0..STATEMENTS {
        // Each deadline 10 ms earlier than the last (the clock moves far
        // less than that per statement), all of them an hour away.
        killer.set_statement_timeout(
            Duration::from_secs(3600) - Duration::from_millis(statement * 10),
        );
        killer.reset();
    }
    let kept = live_bytes(&region.change());
    assert!(
        kept < 64 * 1024,
        "{STATEMENTS} statements of one session grew the allocator's live bytes by {kept}: \
         the timer's queue grows with the deadlines armed"
    );
    drop(killer);
}

#[test]
fn a_deadline_fired_by_advancing_a_manual_clock_allocates_nothing() {
    let _turn = one_at_a_time();
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_max_execution_time(Some(Duration::from_secs(1)));
    // Warm-up: one statement killed by its deadline.
    killer.reset();
    clock.advance(Duration::from_secs(2));
    assert_eq!(killer.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
    let clean = (0..3).any(|_| {
        killer.reset(); // arms the next deadline
        let region = Region::new(GLOBAL);
        clock.advance(Duration::from_secs(2));
        let stats = region.change();
        assert_eq!(killer.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
        println!("advance past a deadline: {stats:?}");
        stats.allocations == 0 && stats.reallocations == 0
    });
    assert!(
        clean,
        "every deadline fired by advance allocated: see the stats printed above"
    );
}

#[test]
fn a_deadline_fired_by_the_timer_thread_allocates_nothing() {
    let _turn = one_at_a_time();
    warm_up_the_timer();
    // The deadline fires on the timer thread while this one waits
    // without allocating.
    let killer = SqlKiller::new();
    killer.set_max_execution_time(Some(Duration::from_millis(20)));
    let clean = (0..3).any(|_| {
        killer.reset(); // arms the next deadline
        let region = Region::new(GLOBAL);
        let start = Instant::now();
        while killer.kill_signal().is_none() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = region.change();
        assert_eq!(
            killer.kill_signal(),
            Some(KillSignal::MaxExecTimeExceeded),
            "the deadline never fired"
        );
        println!("a deadline fired by the timer thread: {stats:?}");
        stats.allocations == 0 && stats.reallocations == 0
    });
    assert!(
        clean,
        "every deadline fired by the timer allocated: see the stats printed above"
    );
}
