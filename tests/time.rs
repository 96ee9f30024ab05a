//! Time-driven kills on a manual clock: deadlines and the probe schedule,
//! step by step, with no real sleeps.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlkiller::{KillError, KillOutcome, KillSignal, ManualClock, SqlKiller, WaitOutcome};
use support::cpu_ticks;

const MS: Duration = Duration::from_millis(1);

/// The edge of the issue on time: a dense burst of checks, then one check a
/// millisecond (the statement waits on I/O between batches). A client that
/// hangs up is found within one interval plus the slack (one checkpoint),
/// however many checks came before. The old adaptive countdown missed it
/// for over 20 s at a 100 ms interval.
#[test]
fn a_dead_client_is_found_within_an_interval_after_a_burst() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    let interval = 100 * MS;
    killer.set_probe_interval(interval);
    let alive = Arc::new(AtomicBool::new(true));
    let probes = Arc::new(AtomicUsize::new(0));
    let (a, p) = (Arc::clone(&alive), Arc::clone(&probes));
    let _probe = killer.set_connection_alive_probe(move || {
        p.fetch_add(1, SeqCst);
        a.load(SeqCst)
    });
    // 1 s of a dense scan: two million checks every 10 ms.
    for _ in 0..100 {
        for _ in 0..20_000 {
            assert!(killer.handle_signal().is_ok());
        }
        clock.advance(10 * MS);
    }
    let during_burst = probes.load(SeqCst);
    assert!(
        (9..=11).contains(&during_burst),
        "{during_burst} probes in 1 s"
    );
    // The client hangs up; the statement now checks once a millisecond.
    alive.store(false, SeqCst);
    let hung_up = clock.elapsed();
    let found = loop {
        clock.advance(MS);
        if killer.handle_signal().is_err() {
            break clock.elapsed() - hung_up;
        }
        assert!(
            clock.elapsed() - hung_up < 10 * interval,
            "not found in 10 intervals"
        );
    };
    assert!(found <= interval + MS, "found after {found:?}");
    assert_eq!(killer.kill_signal(), Some(KillSignal::QueryInterrupted));
}

/// The first interval of a statement starts at its `reset` (TiDB clears
/// `lastCheckTime` there): a statement shorter than the interval is never
/// probed, however long the session.
#[test]
fn each_statement_gets_a_full_first_interval() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_probe_interval(100 * MS);
    let probes = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&probes);
    let _probe = killer.set_connection_alive_probe(move || {
        p.fetch_add(1, SeqCst);
        true
    });
    for _ in 0..50 {
        for _ in 0..9 {
            clock.advance(10 * MS);
            assert!(killer.handle_signal().is_ok());
        }
        killer.reset(); // 90 ms statements
    }
    assert_eq!(probes.load(SeqCst), 0);
    clock.advance(100 * MS);
    assert!(killer.handle_signal().is_ok());
    assert_eq!(probes.load(SeqCst), 1);
}

/// A statement that makes no checkpoint (blocked in an RPC) is killed once
/// its deadline passes: the timer fires the kill, the cancel hook runs, a
/// waiter wakes.
#[test]
fn a_statement_without_checkpoints_is_killed_at_its_deadline() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_max_execution_time(Some(500 * MS));
    killer.reset();
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&hooks);
    let _ = killer.set_cancel_hook(move || {
        h.fetch_add(1, SeqCst);
    });
    let mut event = killer.kill_event_owned();
    clock.advance(499 * MS);
    assert_eq!(killer.kill_signal(), None);
    assert_eq!(event.try_outcome(), None);
    clock.advance(MS);
    assert_eq!(
        hooks.load(SeqCst),
        1,
        "the hook ran when the deadline fired"
    );
    assert_eq!(
        event.try_outcome(),
        Some(WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded))
    );
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
    assert_eq!(killer.reset(), Some(KillSignal::MaxExecTimeExceeded));
    // The next statement has its own full deadline.
    clock.advance(499 * MS);
    assert!(killer.handle_signal().is_ok());
    clock.advance(MS);
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
}

/// A statement that ends before its deadline is never killed, and neither
/// is the next one, at the old deadline's time.
#[test]
fn a_statement_that_ended_in_time_is_never_killed_nor_the_next() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_max_execution_time(Some(100 * MS));
    killer.reset();
    for _ in 0..1_000 {
        clock.advance(60 * MS);
        assert!(killer.handle_signal().is_ok());
        assert_eq!(killer.reset(), None, "a 60 ms statement was killed");
    }
    // A one-statement timeout, then an early end: nothing fires later.
    killer.set_statement_timeout(10 * MS);
    clock.advance(5 * MS);
    assert_eq!(killer.reset(), None);
    clock.advance(50 * MS);
    assert!(killer.handle_signal().is_ok());
    clock.advance(50 * MS);
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
}

/// A statement timeout replaces the session's limit for that statement
/// only; `None` turns the session limit off from the next statement.
#[test]
fn statement_timeout_and_session_limit() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    assert_eq!(killer.max_execution_time(), None);
    killer.set_max_execution_time(Some(Duration::from_secs(10)));
    assert_eq!(killer.max_execution_time(), Some(Duration::from_secs(10)));
    killer.reset();
    killer.set_statement_timeout(Duration::from_secs(20)); // a longer hint wins
    clock.advance(Duration::from_secs(15));
    assert!(killer.handle_signal().is_ok());
    killer.reset();
    killer.set_max_execution_time(None);
    clock.advance(Duration::from_secs(9));
    assert!(killer.handle_signal().is_ok());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        killer.handle_signal(),
        Err(KillError::MaxExecTimeExceeded),
        "this one kept its limit"
    );
    killer.reset();
    clock.advance(Duration::from_secs(3600));
    assert!(killer.handle_signal().is_ok(), "no limit any more");
}

/// A deadline inside a kill-immune section is deferred like any kill, and
/// a deadline of a closed session does nothing.
#[test]
fn deadlines_meet_immunity_and_closed_sessions() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_statement_timeout(10 * MS);
    let commit = killer.kill_immune();
    clock.advance(10 * MS);
    assert!(killer.handle_signal().is_ok());
    commit.release();
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
    killer.reset();
    let handle = killer.handle();
    killer.set_statement_timeout(10 * MS);
    drop(killer);
    clock.advance(10 * MS);
    assert_eq!(handle.kill_signal(), None);
    assert_eq!(
        handle.send_kill_signal(KillSignal::QueryInterrupted),
        KillOutcome::Stale
    );
}

/// Many sessions on one clock: each is killed at its own deadline only.
#[test]
fn many_sessions_each_at_its_own_deadline() {
    let clock = ManualClock::new();
    let sessions: Vec<SqlKiller> = (0..200).map(|_| SqlKiller::with_clock(&clock)).collect();
    for (i, killer) in sessions.iter().enumerate() {
        killer.set_statement_timeout((i as u32 + 1) * MS);
    }
    for step in 1..=200usize {
        clock.advance(MS);
        for (i, killer) in sessions.iter().enumerate() {
            assert_eq!(
                killer.kill_signal().is_some(),
                i < step,
                "session {i} at {step} ms"
            );
        }
    }
}

/// On the real clock, through the process-wide timer thread: a deadline
/// far away has not fired after a short while, and a near one fires (the
/// bounds are wide: a loaded machine can only make the first pass more
/// easily, and the second has ten seconds).
#[test]
fn the_real_timer_fires_deadlines_on_time_and_not_before() {
    let far = SqlKiller::new();
    far.set_statement_timeout(Duration::from_secs(30));
    // Let the timer thread settle into its sleep towards the far deadline:
    // the near one must then wake it early (if the thread is slower than
    // this, it finds both entries when it first looks, which is also fine).
    std::thread::sleep(100 * MS);
    let near = SqlKiller::new();
    // Taken before arming: the deadline is no earlier than `armed` + 50 ms,
    // however long the thread is preempted between the two.
    let armed = Instant::now();
    near.set_statement_timeout(50 * MS);
    let mut event = near.kill_event();
    assert_eq!(
        event.wait_timeout(Duration::from_secs(10)),
        Some(WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded)),
        "the near deadline never fired"
    );
    assert!(
        armed.elapsed() >= 50 * MS,
        "fired early: {:?}",
        armed.elapsed()
    );
    assert_eq!(
        far.kill_signal(),
        None,
        "a 30 s deadline fired after {:?}",
        armed.elapsed()
    );
}

/// The `/proc` entry of the timer thread, if one is named `sqlkiller-timer`
/// now. Threads of other tests may exit while we look: skip those entries.
fn find_timer_thread() -> Option<PathBuf> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(task) = task else { continue };
        let dir = task.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim() == "sqlkiller-timer" {
            return Some(dir);
        }
    }
    None
}

/// The CPU ticks the thread at `dir` has used. The timer thread never
/// exits, so its entry stays readable.
fn ticks(dir: &Path) -> u64 {
    cpu_ticks(dir).unwrap_or_else(|| panic!("no tick count in {}", dir.join("stat").display()))
}

/// The timer thread sleeps until the earliest deadline: it does not spin.
#[test]
fn the_timer_thread_sleeps_while_it_waits() {
    let killer = SqlKiller::new();
    killer.set_statement_timeout(Duration::from_secs(60));
    if !Path::new("/proc/self/task").is_dir() {
        eprintln!("no /proc/self/task here: skipped");
        return;
    }
    // The thread names itself once it runs: wait for it (its tid, found
    // once, stays valid: the timer thread never exits).
    let looking = Instant::now();
    let timer = loop {
        if let Some(dir) = find_timer_thread() {
            break dir;
        }
        assert!(
            looking.elapsed() < Duration::from_secs(10),
            "no thread named sqlkiller-timer in /proc/self/task after 10 s"
        );
        std::thread::sleep(MS);
    };
    let before = ticks(&timer);
    std::thread::sleep(400 * MS);
    let used = ticks(&timer) - before;
    assert!(
        used <= 4,
        "the timer thread used {used} ticks of CPU in 400 ms"
    );
    drop(killer);
}

#[test]
fn the_manual_clock_shows_its_time_and_saturates() {
    let clock = ManualClock::new();
    clock.advance(Duration::from_millis(1500));
    assert_eq!(format!("{clock:?}"), "ManualClock { elapsed: 1.5s }");
    let killer = SqlKiller::with_clock(&clock);
    killer.set_statement_timeout(Duration::MAX); // no deadline at all
    clock.advance(Duration::MAX);
    clock.advance(Duration::MAX);
    assert_eq!(
        clock.elapsed(),
        Duration::from_nanos(u64::MAX - 1),
        "saturated"
    );
    assert!(
        killer.handle_signal().is_ok(),
        "Duration::MAX is no deadline"
    );
    // Nor is anything unarmed due at the end of time, even for a session
    // the timer looks at (its probe is scheduled, and a replaced deadline
    // left an entry in the queue).
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    let _probe = killer.set_connection_alive_probe(|| true);
    killer.set_statement_timeout(Duration::from_secs(1));
    killer.set_statement_timeout(Duration::MAX); // replaces it: none
    clock.advance(Duration::MAX);
    assert_eq!(killer.handle_signal(), Ok(()), "killed without a deadline");
    // A deadline the clock can still reach fires at the end of time.
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_statement_timeout(Duration::from_nanos(u64::MAX - 2));
    clock.advance(Duration::MAX);
    assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
}

#[test]
fn sessions_with_the_same_deadline_all_fire() {
    let clock = ManualClock::new();
    let sessions: Vec<SqlKiller> = (0..3).map(|_| SqlKiller::with_clock(&clock)).collect();
    for killer in &sessions {
        killer.set_statement_timeout(10 * MS);
    }
    clock.advance(10 * MS);
    for (i, killer) in sessions.iter().enumerate() {
        assert_eq!(
            killer.handle_signal(),
            Err(KillError::MaxExecTimeExceeded),
            "session {i}"
        );
    }
}

/// TiDB's connection-alive check, as its own test exercises it: a live
/// client passes every check, also once an interval has passed; a dead one
/// is found at the first check after the interval, as `QueryInterrupted`;
/// `reset` clears the kill, and the next statement starts a fresh interval.
#[test]
fn a_dead_connection_is_found_after_an_interval_and_reset_clears_it() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    let alive = Arc::new(AtomicBool::new(true));
    let client = Arc::clone(&alive);
    let _probe = killer.set_connection_alive_probe(move || client.load(SeqCst));
    assert_eq!(killer.handle_signal(), Ok(()));
    clock.advance(Duration::from_secs(2)); // past the default 1 s interval
    assert_eq!(killer.handle_signal(), Ok(()), "a live client passes");
    alive.store(false, SeqCst);
    assert_eq!(
        killer.handle_signal(),
        Ok(()),
        "not due yet: the probe just ran"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    assert_eq!(killer.kill_signal(), Some(KillSignal::QueryInterrupted));
    assert_eq!(killer.reset(), Some(KillSignal::QueryInterrupted));
    assert_eq!(killer.kill_signal(), None);
    assert_eq!(
        killer.handle_signal(),
        Ok(()),
        "a fresh interval after reset"
    );
}

/// The real timer sleeps until the earliest deadline however long the
/// process has used the clock: a 100 ms deadline armed 1.5 s after the
/// clock started still fires well within a second (a timer that slept
/// "deadline + now" instead of "deadline - now" would take 3 s here).
#[test]
fn a_deadline_armed_long_after_the_clock_started_fires_on_time() {
    let first = SqlKiller::new(); // starts the clock and the timer thread
    first.set_statement_timeout(Duration::from_secs(3600));
    std::thread::sleep(Duration::from_millis(1500));
    let killer = SqlKiller::new();
    let armed = Instant::now();
    killer.set_statement_timeout(Duration::from_millis(100));
    while killer.kill_signal().is_none() && armed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(killer.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
    assert!(
        armed.elapsed() < Duration::from_millis(1000),
        "fired after {:?}",
        armed.elapsed()
    );
}

/// A deadline that fires inside a kill-immune section leaves its hook and
/// waiters to the section's end, as any kill does there.
#[test]
fn a_deadline_inside_a_section_serves_its_hook_and_waiters_at_the_end() {
    let clock = ManualClock::new();
    let killer = SqlKiller::with_clock(&clock);
    killer.set_statement_timeout(Duration::from_millis(10));
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let _ = killer.set_cancel_hook(move || {
        r.fetch_add(1, SeqCst);
    });
    let mut event = killer.kill_event();
    let section = killer.kill_immune();
    clock.advance(Duration::from_millis(10));
    assert_eq!(killer.kill_signal(), Some(KillSignal::MaxExecTimeExceeded));
    assert_eq!(ran.load(SeqCst), 0, "the hook ran inside the section");
    assert_eq!(
        event.try_outcome(),
        None,
        "a waiter woke inside the section"
    );
    section.release();
    assert_eq!(ran.load(SeqCst), 1);
    assert_eq!(
        event.try_outcome(),
        Some(WaitOutcome::Killed(KillSignal::MaxExecTimeExceeded))
    );
}
