//! The process list and tickets, measured as a server calls them.
//!
//! 1. **`KILL QUERY` through the list, 10,000 sessions registered**
//!    (criterion). Each iteration: a kill of one running session, then its
//!    owner ends the statement and starts the next (the kill must land on
//!    a fresh statement every time). Side by side:
//!    - `direct`: the same kill through a `KillHandle` the caller kept (no
//!      lookup): the floor;
//!    - `list`: `ProcessList::kill_query(conn)`;
//!    - `list, busy`: the same while two other threads run `SHOW
//!      PROCESSLIST` (a listing of all 10,000) and lookups of other
//!      sessions in a loop. A kill never waits behind them: they share the
//!      read locks.
//!
//!    Report `list / direct` and `list, busy / list`.
//! 2. **A ticket's completion after the statement ends** (wall clock,
//!    percentiles). A killer thread waits on the ticket of a killed
//!    statement; the owner stamps the time and ends the statement; the
//!    killer stamps when its wait returns. Beside it, the same trip through
//!    a `Mutex` + `Condvar` flag (the usual hand-made "wait until done").
//!    Printed as `RESULT ticket` lines.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use sqlkiller::{KillOutcome, KillSignal, ProcessList, SqlKiller};

const SESSIONS: u64 = 10_000;
const VICTIM: u64 = 4_242;

/// 10,000 registered sessions, all running a statement.
fn populated() -> (ProcessList, Vec<SqlKiller>) {
    let list = ProcessList::new();
    let sessions: Vec<SqlKiller> = (0..SESSIONS)
        .map(|conn| {
            let s = list.register(conn).unwrap();
            s.start_statement().unwrap();
            s
        })
        .collect();
    (list, sessions)
}

/// One iteration through the list: `KILL QUERY` of the victim, whose owner
/// then ends the statement and starts the next.
fn kill_through_the_list(list: &ProcessList, victim: &SqlKiller) -> KillOutcome {
    let kill = list
        .kill_query(VICTIM, KillSignal::QueryInterrupted, "")
        .unwrap();
    let _ = victim.end_statement();
    victim.start_statement().unwrap();
    kill.outcome
}

fn kill_query(c: &mut Criterion) {
    let (list, sessions) = populated();
    let victim = &sessions[VICTIM as usize];
    let handle = victim.handle();
    let mut group = c.benchmark_group("kill_query_10k_sessions");
    group.bench_function("direct", |b| {
        b.iter(|| {
            let outcome = handle.send_kill_signal(KillSignal::QueryInterrupted);
            let _ = victim.end_statement();
            victim.start_statement().unwrap();
            outcome
        })
    });
    group.bench_function("list", |b| b.iter(|| kill_through_the_list(&list, victim)));
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (list, stop) = (list.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut listings = 0u64;
            while !stop.load(Relaxed) {
                listings += list.snapshot().len() as u64 / SESSIONS;
            }
            listings
        })
    };
    let looker = {
        let (list, stop) = (list.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut lookups = 0u64;
            let mut conn = 0;
            while !stop.load(Relaxed) {
                conn = (conn + 7) % SESSIONS;
                lookups += u64::from(list.handle(conn).is_some());
            }
            lookups
        })
    };
    group.bench_function("list, busy", |b| {
        b.iter(|| kill_through_the_list(&list, victim))
    });
    stop.store(true, Relaxed);
    let listings = lister.join().unwrap();
    let lookups = looker.join().unwrap();
    println!("RESULT kill_query busy: {listings} listings and {lookups} lookups ran beside it");
    group.finish();
    drop(sessions);
}

criterion_group!(benches, kill_query);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "RESULT ticket {name}: n={} p50={:?} p90={:?} p99={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99)
    );
}

/// The ticket trip: end of a killed statement -> the killer's wait returns.
fn ticket_trips(rounds: usize) -> Vec<Duration> {
    let (list, mut sessions) = populated();
    let victim = sessions.swap_remove(VICTIM as usize);
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let kill = list
            .kill_query(VICTIM, KillSignal::QueryInterrupted, "")
            .unwrap();
        let mut ticket = kill.ticket();
        let waiter = std::thread::spawn(move || {
            ticket.wait();
            Instant::now()
        });
        // Let the waiter block first (a trip measures a wake-up).
        std::thread::sleep(Duration::from_micros(300));
        let ended = Instant::now();
        let _ = victim.end_statement();
        let woke = waiter.join().unwrap();
        samples.push(woke.saturating_duration_since(ended));
        victim.start_statement().unwrap();
    }
    samples
}

/// The same trip through a hand-made flag, mutex and condition variable.
fn condvar_trips(rounds: usize) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let theirs = Arc::clone(&done);
        let waiter = std::thread::spawn(move || {
            let (flag, cv) = &*theirs;
            let mut ended = flag.lock().unwrap();
            while !*ended {
                ended = cv.wait(ended).unwrap();
            }
            Instant::now()
        });
        std::thread::sleep(Duration::from_micros(300));
        let ended = Instant::now();
        {
            let (flag, cv) = &*done;
            *flag.lock().unwrap() = true;
            cv.notify_all();
        }
        let woke = waiter.join().unwrap();
        samples.push(woke.saturating_duration_since(ended));
    }
    samples
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    let rounds = 2_000;
    // Interleaved halves, so that drift of a shared machine hits both.
    let mut ticket = ticket_trips(rounds / 2);
    let mut condvar = condvar_trips(rounds / 2);
    ticket.extend(ticket_trips(rounds / 2));
    condvar.extend(condvar_trips(rounds / 2));
    report("ticket (end_statement -> wait returns)", ticket);
    report("condvar flag (baseline)", condvar);
}
