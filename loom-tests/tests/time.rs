//! Models of time on the manual clock: deadlines and the probe schedule
//! racing `reset`, and the timer's scheduling protocol. Each with its
//! broken twin. `ManualClock::advance` runs the timer on the thread that
//! calls it, so the timer is an ordinary model thread here.
#![cfg(loom)]

use std::time::Duration;

use loom::sync::atomic::{AtomicU64, Ordering::*};
use loom::sync::Arc;
use loom::thread;
use sqlkiller::{KillSignal, ManualClock, SqlKiller};
use sqlkiller_loom_tests::{assert_rejected, check};

const MS: Duration = Duration::from_millis(1);

/// I3 with time: statement g's deadline fires while the owner resets to
/// g + 1 (which has no deadline). The deadline kills g or nothing: never
/// g + 1.
#[test]
fn deadline_races_reset() {
    check(
        "deadline_races_reset",
        None,
        &["deadline killed g", "reset first"],
        |seen| {
            let clock = ManualClock::new();
            let killer = SqlKiller::with_clock(&clock);
            killer.set_statement_timeout(10 * MS);
            let timer = thread::spawn(move || clock.advance(10 * MS));
            let cleared = killer.reset();
            timer.join().unwrap();
            assert_eq!(killer.kill_signal(), None, "g's deadline killed g + 1");
            seen.saw(match cleared {
                Some(KillSignal::MaxExecTimeExceeded) => "deadline killed g",
                None => "reset first",
                Some(other) => panic!("{other:?}"),
            });
        },
    );
}

/// Broken twin, on the real crate misused: a watchdog that reads "g's
/// deadline has passed" and then kills with an untargeted kill. The reset
/// falls in between, and g + 1 dies for g's deadline.
#[test]
fn broken_deadline_fires_untargeted() {
    assert_rejected(
        "broken_deadline_fires_untargeted",
        Some(2),
        "killed g + 1",
        || {
            let killer = Arc::new(SqlKiller::new());
            let deadline_of = killer.statement();
            let k = Arc::clone(&killer);
            let watchdog = thread::spawn(move || {
                let _ = deadline_of; // "the deadline of this statement has passed"
                let _ = k.send_kill_signal(KillSignal::MaxExecTimeExceeded);
            });
            killer.reset();
            watchdog.join().unwrap();
            assert_eq!(killer.kill_signal(), None, "g's deadline killed g + 1");
        },
    );
}

/// No lost deadline: the owner arms g + 1's deadline (its `reset`, with a
/// session `max_execution_time`) while the timer is serving the session for
/// g's. Whichever order their read-modify-writes on the schedule take, the
/// timer looks at the session again by g + 1's deadline, which fires.
#[test]
fn deadline_armed_while_timer_fires() {
    check(
        "deadline_armed_while_timer_fires",
        None,
        &["g killed", "reset first"],
        |seen| {
            let clock = ManualClock::new();
            let killer = SqlKiller::with_clock(&clock);
            killer.set_max_execution_time(Some(10 * MS));
            killer.reset(); // g: deadline at 10 ms
            let c = clock.clone();
            let timer = thread::spawn(move || c.advance(10 * MS));
            let cleared = killer.reset(); // g + 1: deadline at 10 or 20 ms
            timer.join().unwrap();
            clock.advance(10 * MS); // 20 ms: g + 1's deadline has passed
            assert_eq!(
                killer.kill_signal(),
                Some(KillSignal::MaxExecTimeExceeded),
                "the deadline of g + 1 never fired"
            );
            seen.saw(if cleared.is_some() {
                "g killed"
            } else {
                "reset first"
            });
        },
    );
}

/// Broken twin: the same protocol with a plain store and a plain load on
/// the schedule instead of read-modify-writes. The timer clears the
/// schedule and reads the deadline; the owner writes the deadline and
/// reads the schedule. Each can miss the other's write, and then neither
/// reschedules: the deadline never fires.
#[test]
fn broken_schedule_without_rmw() {
    assert_rejected(
        "broken_schedule_without_rmw",
        Some(2),
        "never fires",
        || {
            const NEVER: u64 = u64::MAX;
            let deadline = Arc::new(AtomicU64::new(10)); // g's
            let sched = Arc::new(AtomicU64::new(10));
            let rescheduled = Arc::new(AtomicU64::new(NEVER));
            let (d, s, r) = (
                Arc::clone(&deadline),
                Arc::clone(&sched),
                Arc::clone(&rescheduled),
            );
            let timer = thread::spawn(move || {
                s.store(NEVER, Release);
                let at = d.load(Acquire);
                if at > 10 {
                    r.store(at, Release); // reschedule for the new deadline
                }
            });
            // The owner arms g + 1 at 20: pushes only if nothing is scheduled earlier.
            deadline.store(20, Release);
            let pushed = sched.load(Acquire) > 20;
            timer.join().unwrap();
            assert!(
                pushed || rescheduled.load(Acquire) == 20,
                "the deadline of g + 1 never fires"
            );
        },
    );
}

/// I3 for the probe schedule: g's probe falls due (the timer sets
/// `PROBE_DUE`) while the owner resets. The new statement's first probe
/// interval starts at its reset: a reset at 10 ms means no probe before
/// 20 ms, so g's due mark must not land on g + 1.
#[test]
fn probe_due_races_reset() {
    check(
        "probe_due_races_reset",
        None,
        &["probed in g", "reset at 10 ms", "reset at 0 ms"],
        |seen| {
            let clock = ManualClock::new();
            let killer = SqlKiller::with_clock(&clock);
            killer.set_probe_interval(10 * MS);
            let _probe = killer.set_connection_alive_probe(|| false); // the client is gone
            let c = clock.clone();
            let timer = thread::spawn(move || c.advance(10 * MS));
            let probed_in_g = killer.handle_signal().is_err();
            let reset_at = clock.elapsed();
            killer.reset();
            let probed_in_next = killer.handle_signal().is_err();
            timer.join().unwrap();
            if reset_at == 10 * MS {
                assert!(!probed_in_next, "g's due probe ran in g + 1, 0 ms into it");
            }
            if probed_in_g {
                seen.saw("probed in g");
            } else if reset_at == 10 * MS {
                seen.saw("reset at 10 ms");
            } else {
                seen.saw("reset at 0 ms");
            }
        },
    );
}

/// Broken twin: the timer marks the probe due with a plain `fetch_or`,
/// without checking the generation, after reading g's schedule. A reset in
/// between, and the mark lands on g + 1.
#[test]
fn broken_probe_due_without_generation() {
    assert_rejected(
        "broken_probe_due_without_generation",
        Some(2),
        "ran in g + 1",
        || {
            const DUE: u64 = 1;
            let word = Arc::new(AtomicU64::new(0 << 1)); // generation g = 0
            let probe_gen = Arc::new(AtomicU64::new(0));
            let (w, p) = (Arc::clone(&word), Arc::clone(&probe_gen));
            let timer = thread::spawn(move || {
                let _g = p.load(Acquire); // g's probe is due
                w.fetch_or(DUE, AcqRel);
            });
            word.store(1 << 1, Release); // reset: g + 1, due bit clear
            let due_in_next = word.load(Acquire) == (1 << 1) | DUE;
            timer.join().unwrap();
            let due_now = word.load(Acquire) == (1 << 1) | DUE;
            assert!(
                !(due_in_next || due_now),
                "g's due probe ran in g + 1, 0 ms into it"
            );
        },
    );
}

/// A deadline's kill lands on the thread that advances the clock, and its
/// hook is served on a thread of its own (the timer hands it off, so a
/// slow hook delays no other session's deadline), while the owner resets.
/// I6 and I7 across the hand-off: the hook runs once iff the statement was
/// killed, and `reset` never returns while it is still running.
#[test]
fn deadline_hook_handed_off_races_reset() {
    check(
        "deadline_hook_handed_off_races_reset",
        Some(3),
        &["deadline killed g", "reset first"],
        |seen| {
            let clock = ManualClock::new();
            let killer = SqlKiller::with_clock(&clock);
            killer.set_statement_timeout(10 * MS);
            let ran = Arc::new(AtomicU64::new(0));
            let r = Arc::clone(&ran);
            let _ = killer.set_cancel_hook(move || {
                r.fetch_add(1, Relaxed);
            });
            let timer = thread::spawn(move || clock.advance(10 * MS));
            let cleared = killer.reset();
            // Read before the timer is joined: only `reset` orders it.
            let ran_at_reset = ran.load(Relaxed);
            timer.join().unwrap();
            match cleared {
                Some(KillSignal::MaxExecTimeExceeded) => {
                    assert_eq!(
                        ran_at_reset, 1,
                        "reset returned before the handed-off hook ran"
                    );
                    seen.saw("deadline killed g");
                }
                None => {
                    assert_eq!(
                        ran.load(Relaxed),
                        0,
                        "the hook of an unkilled statement ran"
                    );
                    seen.saw("reset first");
                }
                Some(other) => panic!("{other:?}"),
            }
        },
    );
}

/// Broken twin: a hand-off that publishes the kill (`Killed`) on the
/// timer's thread before the serving thread has run the hook. `reset`
/// sees `Killed`, returns, and the hook runs after it.
#[test]
fn broken_handoff_publishes_before_serving() {
    assert_rejected(
        "broken_handoff_publishes_before_serving",
        Some(2),
        "hook ran after reset returned",
        || {
            // 0 idle, 1 killing, 2 killed, 3 ended (reset)
            let phase = Arc::new(AtomicU64::new(0));
            let (p, q) = (Arc::clone(&phase), Arc::clone(&phase));
            let timer = thread::spawn(move || {
                if p.compare_exchange(0, 1, AcqRel, Acquire).is_ok() {
                    let server = thread::spawn(move || {
                        // the hook
                        assert_ne!(q.load(Acquire), 3, "hook ran after reset returned");
                    });
                    p.store(2, Release); // the bug: published before serving
                    server.join().unwrap();
                }
            });
            // reset: wait while killing, then end the statement
            loop {
                match phase.load(Acquire) {
                    1 => thread::yield_now(),
                    now => {
                        if phase.compare_exchange(now, 3, AcqRel, Acquire).is_ok() {
                            break;
                        }
                    }
                }
            }
            timer.join().unwrap();
        },
    );
}
