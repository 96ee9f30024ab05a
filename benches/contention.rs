//! The owner's check rate while another thread kills and resets killers:
//! other sessions' (false sharing, if any) and its own (true sharing),
//! relative to no writer at all, measured in one run.
//!
//! The killers sit next to each other in one `Vec`, as a server's session
//! table would hold them. Modes are interleaved over several repetitions and
//! the median checks per second of each is reported.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::*};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sqlkiller::{KillSignal, SqlKiller};

const SESSIONS: usize = 16;
const REPETITIONS: usize = 7;
const WINDOW: Duration = Duration::from_millis(150);

const NO_WRITER: u8 = 0;
const OTHER_SESSIONS: u8 = 1;
const OWN_SESSION: u8 = 2;
const STOP: u8 = 3;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (repetitions, window) = if quick {
        (1, Duration::from_millis(5))
    } else {
        (REPETITIONS, WINDOW)
    };

    let killers: Arc<Vec<SqlKiller>> = Arc::new((0..SESSIONS).map(|_| SqlKiller::new()).collect());
    let mode = Arc::new(AtomicU8::new(NO_WRITER));
    let busy = Arc::new(AtomicBool::new(false));
    let writer = {
        let (killers, mode, busy) = (Arc::clone(&killers), Arc::clone(&mode), Arc::clone(&busy));
        thread::spawn(move || {
            let mut next = 1;
            loop {
                match mode.load(Relaxed) {
                    OTHER_SESSIONS => {
                        busy.store(true, Relaxed);
                        let k = &killers[next];
                        let _ = k.send_kill_signal(KillSignal::ServerMemoryExceeded);
                        k.reset();
                        next = if next + 1 == SESSIONS { 1 } else { next + 1 };
                    }
                    OWN_SESSION => {
                        busy.store(true, Relaxed);
                        let _ = killers[0].send_kill_signal(KillSignal::ServerMemoryExceeded);
                        killers[0].reset();
                    }
                    STOP => return,
                    _ => std::hint::spin_loop(),
                }
            }
        })
    };

    let owner = &killers[0];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for _ in 0..repetitions {
        for m in [NO_WRITER, OTHER_SESSIONS, OWN_SESSION] {
            busy.store(false, Relaxed);
            mode.store(m, Relaxed);
            while m != NO_WRITER && !busy.load(Relaxed) {
                std::hint::spin_loop();
            }
            let start = Instant::now();
            let mut checks = 0u64;
            while start.elapsed() < window {
                for _ in 0..4096 {
                    black_box(black_box(owner).handle_signal().is_ok());
                }
                checks += 4096;
            }
            rates[m as usize].push(checks as f64 / start.elapsed().as_secs_f64());
            mode.store(NO_WRITER, Relaxed);
        }
    }
    mode.store(STOP, Relaxed);
    writer.join().unwrap();

    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let base = median(&mut rates[0]);
    let names = [
        "no writer",
        "writer on other sessions",
        "writer on own session",
    ];
    println!("owner check rate, median of {repetitions} windows of {window:?}");
    println!("{:<28} {:>16} {:>10}", "mode", "checks/s", "vs none");
    for (i, name) in names.iter().enumerate() {
        let rate = median(&mut rates[i]);
        println!("{name:<28} {:>16.3e} {:>9.3}x", rate, rate / base);
        println!("RESULT contention\t{name}\t{rate:.0}\t{:.4}", rate / base);
    }
}
