//! Kill → waiter wake-up latency, against a bare `Condvar` and a bare
//! `crossbeam_utils::sync::Parker`, measured as round trips in one run.
//!
//! Each round: the waiter blocks; the main thread stamps t0 and wakes it
//! (a kill, a `notify_one`, an `unpark`); the woken waiter unparks the main
//! thread through a `Parker`, which stamps t1. The return leg is the same
//! for all three, so the difference between rows is the wake-up itself.
//! Rounds of the three kinds are interleaved in blocks so that machine
//! noise hits them alike. Prints median and p99 per kind, and a line per
//! kind that `scripts/bench.sh` reads.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::sync::{Parker, Unparker};
use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};

const BLOCKS: usize = 12;
const ROUNDS_PER_BLOCK: usize = 150;
/// Long enough for the waiter to be parked before it is woken.
const SETTLE: Duration = Duration::from_micros(200);

/// Runs `rounds` round trips of one kind; returns their durations.
trait RoundTrip {
    fn run(&mut self, rounds: usize) -> Vec<Duration>;
}

/// Hands the waiter a "go" and waits for its "ready" / "done" replies.
struct Handshake {
    to_waiter: Unparker,
    from_waiter: Parker,
}

struct KillEventTrip {
    killer: Arc<SqlKiller>,
    hs: Handshake,
    _waiter: thread::JoinHandle<()>,
}

impl KillEventTrip {
    fn new() -> Self {
        let killer = Arc::new(SqlKiller::new());
        let (to_waiter_parker, from_waiter) = (Parker::new(), Parker::new());
        let to_waiter = to_waiter_parker.unparker().clone();
        let back = from_waiter.unparker().clone();
        let k = Arc::clone(&killer);
        let waiter = thread::spawn(move || loop {
            to_waiter_parker.park(); // "go": a new statement has started
            let mut event = k.kill_event();
            back.unpark(); // "ready"
            match event.wait(Duration::MAX) {
                WaitOutcome::Killed(_) => back.unpark(), // "done"
                _ => return,
            }
        });
        KillEventTrip {
            killer,
            hs: Handshake {
                to_waiter,
                from_waiter,
            },
            _waiter: waiter,
        }
    }
}

impl RoundTrip for KillEventTrip {
    fn run(&mut self, rounds: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            self.hs.to_waiter.unpark();
            self.hs.from_waiter.park(); // ready
            thread::sleep(SETTLE); // let it block in wait()
            let t0 = Instant::now();
            self.killer.send_kill_signal(KillSignal::QueryInterrupted);
            self.hs.from_waiter.park(); // done
            samples.push(t0.elapsed());
            self.killer.reset();
        }
        samples
    }
}

struct ParkerTrip {
    hs: Handshake,
    wake: Unparker,
    _waiter: thread::JoinHandle<()>,
}

impl ParkerTrip {
    fn new() -> Self {
        let (to_waiter_parker, from_waiter, wake_parker) =
            (Parker::new(), Parker::new(), Parker::new());
        let to_waiter = to_waiter_parker.unparker().clone();
        let wake = wake_parker.unparker().clone();
        let back = from_waiter.unparker().clone();
        let waiter = thread::spawn(move || loop {
            to_waiter_parker.park();
            back.unpark(); // ready
            wake_parker.park();
            back.unpark(); // done
        });
        ParkerTrip {
            hs: Handshake {
                to_waiter,
                from_waiter,
            },
            wake,
            _waiter: waiter,
        }
    }
}

impl RoundTrip for ParkerTrip {
    fn run(&mut self, rounds: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            self.hs.to_waiter.unpark();
            self.hs.from_waiter.park();
            thread::sleep(SETTLE);
            let t0 = Instant::now();
            self.wake.unpark();
            self.hs.from_waiter.park();
            samples.push(t0.elapsed());
        }
        samples
    }
}

/// std's own parker (`thread::park` / `Thread::unpark`), which a blocked
/// `KillEvent::wait` uses: separates the parker's cost from ours.
struct StdParkTrip {
    hs: Handshake,
    waiter: thread::Thread,
    _waiter: thread::JoinHandle<()>,
}

impl StdParkTrip {
    fn new() -> Self {
        let (to_waiter_parker, from_waiter) = (Parker::new(), Parker::new());
        let to_waiter = to_waiter_parker.unparker().clone();
        let back = from_waiter.unparker().clone();
        let waiter = thread::spawn(move || loop {
            to_waiter_parker.park();
            back.unpark(); // ready
            thread::park();
            back.unpark(); // done
        });
        StdParkTrip {
            hs: Handshake {
                to_waiter,
                from_waiter,
            },
            waiter: waiter.thread().clone(),
            _waiter: waiter,
        }
    }
}

impl RoundTrip for StdParkTrip {
    fn run(&mut self, rounds: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            self.hs.to_waiter.unpark();
            self.hs.from_waiter.park();
            thread::sleep(SETTLE);
            let t0 = Instant::now();
            self.waiter.unpark();
            self.hs.from_waiter.park();
            samples.push(t0.elapsed());
        }
        samples
    }
}

struct CondvarTrip {
    hs: Handshake,
    flag: Arc<(Mutex<bool>, Condvar)>,
    _waiter: thread::JoinHandle<()>,
}

impl CondvarTrip {
    fn new() -> Self {
        let (to_waiter_parker, from_waiter) = (Parker::new(), Parker::new());
        let to_waiter = to_waiter_parker.unparker().clone();
        let back = from_waiter.unparker().clone();
        let flag = Arc::new((Mutex::new(false), Condvar::new()));
        let f = Arc::clone(&flag);
        let waiter = thread::spawn(move || loop {
            to_waiter_parker.park();
            back.unpark(); // ready
            let (lock, cvar) = &*f;
            let mut set = lock.lock().unwrap();
            while !*set {
                set = cvar.wait(set).unwrap();
            }
            *set = false;
            drop(set);
            back.unpark(); // done
        });
        CondvarTrip {
            hs: Handshake {
                to_waiter,
                from_waiter,
            },
            flag,
            _waiter: waiter,
        }
    }
}

impl RoundTrip for CondvarTrip {
    fn run(&mut self, rounds: usize) -> Vec<Duration> {
        let mut samples = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            self.hs.to_waiter.unpark();
            self.hs.from_waiter.park();
            thread::sleep(SETTLE);
            let t0 = Instant::now();
            let (lock, cvar) = &*self.flag;
            *lock.lock().unwrap() = true;
            cvar.notify_one();
            self.hs.from_waiter.park();
            samples.push(t0.elapsed());
        }
        samples
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us too: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (blocks, rounds) = if quick {
        (1, 5)
    } else {
        (BLOCKS, ROUNDS_PER_BLOCK)
    };

    let mut kinds: Vec<(&str, Box<dyn RoundTrip>, Vec<Duration>)> = vec![
        (
            "sqlkiller: kill -> KillEvent::wait",
            Box::new(KillEventTrip::new()),
            Vec::new(),
        ),
        (
            "crossbeam Parker: unpark -> park",
            Box::new(ParkerTrip::new()),
            Vec::new(),
        ),
        (
            "std Condvar: notify_one -> wait",
            Box::new(CondvarTrip::new()),
            Vec::new(),
        ),
        (
            "std thread: unpark -> park",
            Box::new(StdParkTrip::new()),
            Vec::new(),
        ),
    ];
    for _ in 0..blocks {
        for (_, trip, samples) in &mut kinds {
            samples.extend(trip.run(rounds));
        }
    }
    println!(
        "wake-up round trip ({} rounds each, interleaved in {} blocks)",
        blocks * rounds,
        blocks
    );
    println!("{:<40} {:>12} {:>12}", "kind", "median", "p99");
    for (name, _, samples) in &mut kinds {
        samples.sort();
        let (median, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!("{name:<40} {:>12.2?} {:>12.2?}", median, p99);
        println!(
            "RESULT wakeup\t{name}\t{}\t{}",
            median.as_nanos(),
            p99.as_nanos()
        );
    }
    std::process::exit(0); // the waiter threads are parked for good
}
