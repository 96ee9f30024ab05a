//! Many sessions on one timer thread (no criterion: wall-clock lateness and
//! allocator counts, printed as `RESULT sessions` lines).
//!
//! 1. **A slow hook delays no other session's deadline.** 10,000 sessions
//!    on the real clock; session 0's deadline fires first and its cancel
//!    hook sleeps for a second; the others' deadlines are spread over the
//!    next half second and have no hook. A checker thread sweeps every
//!    session and stamps when it first sees each one killed (a sweep of
//!    10,000 loads takes tens of microseconds, which bounds the
//!    resolution). Lateness = stamp - (arm time + timeout), for the 9,999
//!    others, all of whose deadlines fall while session 0's hook sleeps.
//! 2. **The timer's memory is bounded by the live sessions.** Live bytes
//!    (a counting allocator) before and after 100,000 sessions each arm a
//!    one-hour `max_execution_time`, start a statement, and are dropped.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

use sqlkiller::SqlKiller;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SESSIONS: usize = 10_000;
const CYCLED: usize = 100_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    slow_hook();
    memory();
}

fn slow_hook() {
    let sessions: Vec<SqlKiller> = (0..SESSIONS).map(|_| SqlKiller::new()).collect();
    let hook_returned = Arc::new(AtomicBool::new(false));
    let h = Arc::clone(&hook_returned);
    let _ = sessions[0].set_cancel_hook(move || {
        std::thread::sleep(Duration::from_secs(1));
        h.store(true, Relaxed);
    });
    let start = Instant::now();
    let mut due = Vec::with_capacity(SESSIONS);
    for (i, killer) in sessions.iter().enumerate() {
        let timeout = if i == 0 {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(50) + Duration::from_micros((i as u64 * 45_000) % 500_000)
        };
        let armed = Instant::now();
        killer.set_statement_timeout(timeout);
        due.push(armed + timeout);
    }
    let mut seen: Vec<Option<Instant>> = vec![None; SESSIONS];
    let mut left = SESSIONS - 1;
    let mut during_hook = 0;
    let give_up = start + Duration::from_secs(10);
    while left > 0 && Instant::now() < give_up {
        for (i, killer) in sessions.iter().enumerate().skip(1) {
            if seen[i].is_none() && killer.kill_signal().is_some() {
                seen[i] = Some(Instant::now());
                left -= 1;
                if !hook_returned.load(Relaxed) {
                    during_hook += 1;
                }
            }
        }
    }
    assert_eq!(left, 0, "deadlines that never fired");
    let mut late_us: Vec<f64> = (1..SESSIONS)
        .map(|i| {
            seen[i]
                .unwrap()
                .saturating_duration_since(due[i])
                .as_secs_f64()
                * 1e6
        })
        .collect();
    late_us.sort_by(f64::total_cmp);
    let pick = |q: f64| late_us[((late_us.len() - 1) as f64 * q) as usize];
    println!(
        "deadline lateness of {} sessions while another session's hook sleeps 1 s: \
         median {:.0} us, p99 {:.0} us, max {:.0} us; {during_hook} of them fired while it slept",
        SESSIONS - 1,
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    println!(
        "RESULT sessions\tlateness beside a 1 s hook, {} sessions\t{:.0}\t{:.0}\t{:.0}\t{during_hook}",
        SESSIONS - 1,
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );
    drop(sessions);
    while !hook_returned.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn memory() {
    // The timer thread and its queue exist before the count starts.
    let warm = SqlKiller::new();
    warm.set_max_execution_time(Some(Duration::from_secs(3600)));
    warm.reset();
    drop(warm);
    std::thread::sleep(Duration::from_millis(50));
    let region = Region::new(GLOBAL);
    let mut peak = 0isize;
    for i in 0..CYCLED {
        let killer = SqlKiller::new();
        killer.set_max_execution_time(Some(Duration::from_secs(3600)));
        killer.reset();
        drop(killer);
        if i % 10_000 == 0 {
            let s = region.change();
            peak = peak.max(s.bytes_allocated as isize - s.bytes_deallocated as isize);
        }
    }
    let s = region.change();
    let live = s.bytes_allocated as isize - s.bytes_deallocated as isize;
    println!(
        "timer memory after {CYCLED} sessions armed a 1 h deadline and were dropped: \
         {live} bytes still allocated (sampled peak {peak} bytes)"
    );
    println!("RESULT sessions\tlive bytes after {CYCLED} sessions came and went\t{live}\t{peak}");
}
