//! How late statement deadlines fire on the real clock, with 1,000
//! sessions armed at once: each session arms a statement timeout between
//! 20 and 220 ms, and its cancel hook (run by the timer's kill) stamps the
//! time. Lateness = stamp - (arm time + timeout). Prints median, p99 and
//! max, and `RESULT timer` lines for `scripts/bench_report.py`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlkiller::SqlKiller;

const SESSIONS: usize = 1_000;
const ROUNDS: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut late_ns: Vec<u64> = Vec::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..ROUNDS {
        let stamps: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
        let mut due = Vec::with_capacity(SESSIONS);
        let sessions: Vec<SqlKiller> = (0..SESSIONS).map(|_| SqlKiller::new()).collect();
        for (i, killer) in sessions.iter().enumerate() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let timeout = Duration::from_micros(20_000 + seed % 200_000);
            let s = Arc::clone(&stamps);
            let _ = killer.set_cancel_hook(move || s.lock().unwrap().push((i, Instant::now())));
            let armed = Instant::now();
            killer.set_statement_timeout(timeout);
            due.push(armed + timeout);
        }
        let give_up = Instant::now() + Duration::from_secs(5);
        while stamps.lock().unwrap().len() < SESSIONS && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stamps = stamps.lock().unwrap();
        assert_eq!(stamps.len(), SESSIONS, "deadlines that never fired");
        for &(i, at) in stamps.iter() {
            late_ns.push(at.saturating_duration_since(due[i]).as_nanos() as u64);
        }
        drop(sessions);
    }
    late_ns.sort_unstable();
    let pick = |q: f64| late_ns[((late_ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let (median, p99, max) = (pick(0.5), pick(0.99), pick(1.0));
    println!("deadline lateness, {SESSIONS} sessions x {ROUNDS} rounds: median {median:.1} us, p99 {p99:.1} us, max {max:.1} us");
    println!("RESULT timer\tlateness, {SESSIONS} sessions armed\t{median:.1}\t{p99:.1}\t{max:.1}");
}
