//! Kill → waiter wake-up latency, against a bare `Condvar`, a bare
//! `crossbeam_utils::sync::Parker` and std's own thread parker, measured as
//! round trips in one run.
//!
//! Each round: the waiter blocks; the main thread stamps t0 and wakes it
//! (a kill, a `notify_one`, an `unpark`); the woken waiter unparks the main
//! thread through a `Parker`, which stamps t1. The return leg is the same
//! for every kind, so the difference between rows is the wake-up itself.
//! Rounds of the kinds are interleaved in blocks so that machine noise hits
//! them alike. Prints median and p99 per kind, and a line per kind that
//! `scripts/bench.sh` reads.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_utils::sync::{Parker, Unparker};
use sqlkiller::{KillSignal, SqlKiller, WaitOutcome};

const BLOCKS: usize = 12;
const ROUNDS_PER_BLOCK: usize = 150;
/// Long enough for the waiter to be parked before it is woken.
const SETTLE: Duration = Duration::from_micros(200);

/// One kind of wake-up: how the main thread wakes the blocked waiter.
trait Wakeup {
    fn wake(&mut self);
    /// Untimed clean-up after the waiter replied.
    fn after(&mut self) {}
}

/// A waiter thread running `block` in a loop, and the handshake around it:
/// "go" (main → waiter), then "ready" and "done" (waiter → main).
struct Trip {
    kind: Box<dyn Wakeup>,
    go: Unparker,
    replies: Parker,
}

impl Trip {
    /// `block` is called once per round, after "ready" is sent, and returns
    /// when the waiter has been woken; `prepare` runs before "ready".
    fn spawn<S: Send + 'static>(
        kind: Box<dyn Wakeup>,
        mut prepare: impl FnMut() -> S + Send + 'static,
        mut block: impl FnMut(S) + Send + 'static,
    ) -> Trip {
        let (go_parker, replies) = (Parker::new(), Parker::new());
        let go = go_parker.unparker().clone();
        let reply = replies.unparker().clone();
        thread::spawn(move || loop {
            go_parker.park();
            let state = prepare();
            reply.unpark(); // ready
            block(state);
            reply.unpark(); // done
        });
        Trip { kind, go, replies }
    }

    fn run(&mut self, rounds: usize, samples: &mut Vec<Duration>) {
        for _ in 0..rounds {
            self.go.unpark();
            self.replies.park(); // ready
            thread::sleep(SETTLE); // let it block
            let t0 = Instant::now();
            self.kind.wake();
            self.replies.park(); // done
            samples.push(t0.elapsed());
            self.kind.after();
        }
    }
}

struct Kill(Arc<SqlKiller>);

impl Wakeup for Kill {
    fn wake(&mut self) {
        let _ = self.0.send_kill_signal(KillSignal::QueryInterrupted);
    }
    fn after(&mut self) {
        self.0.reset();
    }
}

fn kill_event_trip() -> Trip {
    let killer = Arc::new(SqlKiller::new());
    let k = Arc::clone(&killer);
    // The event is registered before "ready", so the kill finds it.
    let (k1, k2) = (Arc::clone(&k), k);
    Trip::spawn(
        Box::new(Kill(killer)),
        move || k1.statement(),
        move |statement| {
            let outcome = k2.kill_event_for(statement).wait();
            assert!(matches!(outcome, WaitOutcome::Killed(_)));
        },
    )
}

struct UnparkParker(Unparker);

impl Wakeup for UnparkParker {
    fn wake(&mut self) {
        self.0.unpark();
    }
}

fn parker_trip() -> Trip {
    let parker = Parker::new();
    let unparker = parker.unparker().clone();
    Trip::spawn(
        Box::new(UnparkParker(unparker)),
        || (),
        move |()| parker.park(),
    )
}

struct UnparkThread(Arc<Mutex<Option<thread::Thread>>>);

impl Wakeup for UnparkThread {
    fn wake(&mut self) {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .expect("waiter registered")
            .unpark();
    }
}

/// std's own parker (`thread::park` / `Thread::unpark`), which a blocked
/// `KillEvent::wait` uses: separates the parker's cost from ours.
fn std_park_trip() -> Trip {
    let slot = Arc::new(Mutex::new(None));
    let s = Arc::clone(&slot);
    Trip::spawn(
        Box::new(UnparkThread(slot)),
        move || {
            s.lock().unwrap().get_or_insert_with(thread::current);
        },
        |()| thread::park(),
    )
}

struct Notify(Arc<(Mutex<bool>, Condvar)>);

impl Wakeup for Notify {
    fn wake(&mut self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap() = true;
        cvar.notify_one();
    }
}

fn condvar_trip() -> Trip {
    let flag = Arc::new((Mutex::new(false), Condvar::new()));
    let f = Arc::clone(&flag);
    Trip::spawn(
        Box::new(Notify(flag)),
        || (),
        move |()| {
            let (lock, cvar) = &*f;
            let mut set = lock.lock().unwrap();
            while !*set {
                set = cvar.wait(set).unwrap();
            }
            *set = false;
        },
    )
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

    let mut kinds = [
        (
            "sqlkiller: kill -> KillEvent::wait",
            kill_event_trip(),
            Vec::new(),
        ),
        (
            "crossbeam Parker: unpark -> park",
            parker_trip(),
            Vec::new(),
        ),
        (
            "std Condvar: notify_one -> wait",
            condvar_trip(),
            Vec::new(),
        ),
        ("std thread: unpark -> park", std_park_trip(), Vec::new()),
    ];
    for _ in 0..blocks {
        for (_, trip, samples) in &mut kinds {
            trip.run(rounds, samples);
        }
    }
    println!(
        "wake-up round trip ({} rounds each, interleaved in {blocks} blocks)",
        blocks * rounds
    );
    println!("{:<40} {:>12} {:>12}", "kind", "median", "p99");
    for (name, _, samples) in &mut kinds {
        samples.sort();
        let (median, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
        println!("{name:<40} {median:>12.2?} {p99:>12.2?}");
        println!(
            "RESULT wakeup\t{name}\t{}\t{}",
            median.as_nanos(),
            p99.as_nanos()
        );
    }
    std::process::exit(0); // the waiter threads stay parked for good
}
