//! The checkpoint and the kill/reset cycle, side by side with their baselines.
//!
//! Every group puts the floor and the peers a user would pick instead in the
//! same run; `scripts/bench.sh` turns the estimates into ratios.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sqlkiller::{KillSignal, SqlKiller};
use tokio_util::sync::CancellationToken;

/// TiDB master's answer to its races (2026): signal, kill event and reset
/// under one mutex; the checkpoint takes it too.
#[derive(Default)]
struct MutexKiller {
    mu: Mutex<MutexKillerState>,
}

#[derive(Default)]
struct MutexKillerState {
    signal: u32,
    _event_triggered: bool,
}

impl MutexKiller {
    fn handle_signal(&self) -> Result<(), u32> {
        let state = self.mu.lock().unwrap();
        match state.signal {
            0 => Ok(()),
            s => Err(s),
        }
    }
    fn send_kill_signal(&self, signal: u32) {
        let mut state = self.mu.lock().unwrap();
        if state.signal == 0 {
            state.signal = signal;
            state._event_triggered = true;
        }
    }
    fn reset(&self) {
        *self.mu.lock().unwrap() = MutexKillerState::default();
    }
}

/// TiDB's `HandleSignal` with `IsConnectionAlive` set: reads the clock on
/// every call to see whether a second has passed.
struct ClockEveryCallKiller {
    signal: AtomicU32,
    probe: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    last_check_ns: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ClockEveryCallKiller {
    fn handle_signal(&self) -> Result<(), u32> {
        if let Some(probe) = &self.probe {
            let now = epoch().elapsed().as_nanos() as u64;
            let last = self.last_check_ns.load(Acquire);
            if now.saturating_sub(last) > 1_000_000_000 {
                self.last_check_ns.store(now, Release);
                if !probe() {
                    let _ = self.signal.compare_exchange(0, 1, AcqRel, Acquire);
                }
            }
        }
        match self.signal.load(Acquire) {
            0 => Ok(()),
            s => Err(s),
        }
    }
}

/// Checks per iteration: a checkpoint is measured as one of a run of
/// `BATCH` back-to-back checks, counted as `time / BATCH`.
///
/// One check is one or two cycles; measured one per iteration, the harness's
/// own loop and `black_box` traffic dominate and flip with code layout (the
/// same source measured 0.31 or 0.62 ns, and with a `black_box`ed input 0.62
/// or 1.56 ns from sample to sample). A run of checks whose failures are
/// counted measures what a checkpoint adds to the code around it. Inputs are
/// not `black_box`ed: the compiler never folds or hoists an atomic load.
const BATCH: u32 = 16;

/// Registers one benchmark of `BATCH` checks; `check` returns true on "killed".
fn bench_checks(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut check: impl FnMut() -> bool,
) {
    group.throughput(criterion::Throughput::Elements(BATCH.into()));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut failed = 0u32;
            for _ in 0..BATCH {
                failed += u32::from(check());
            }
            failed
        })
    });
}

fn hot_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_check");

    let flag = AtomicBool::new(false);
    bench_checks(&mut group, "floor: AtomicBool::load(Relaxed)", || {
        flag.load(Relaxed)
    });

    let killer = SqlKiller::new();
    bench_checks(&mut group, "sqlkiller: handle_signal", || {
        killer.handle_signal().is_err()
    });

    let probed = SqlKiller::new();
    let _ = probed.set_connection_alive_probe(|| true);
    bench_checks(
        &mut group,
        "sqlkiller: handle_signal, probe installed",
        || probed.handle_signal().is_err(),
    );

    let deadline = SqlKiller::new();
    deadline.set_max_execution_time(Some(Duration::from_secs(3600)));
    deadline.reset();
    bench_checks(
        &mut group,
        "sqlkiller: handle_signal, deadline armed",
        || deadline.handle_signal().is_err(),
    );

    let token = CancellationToken::new();
    bench_checks(
        &mut group,
        "tokio-util: CancellationToken::is_cancelled",
        || token.is_cancelled(),
    );

    let mutex = MutexKiller::default();
    bench_checks(
        &mut group,
        "TiDB master model: check under the mutex",
        || mutex.handle_signal().is_err(),
    );

    let clocked = ClockEveryCallKiller {
        signal: AtomicU32::new(0),
        probe: Some(Box::new(|| true)),
        last_check_ns: AtomicU64::new(epoch().elapsed().as_nanos() as u64),
    };
    bench_checks(
        &mut group,
        "TiDB probe model: clock read every call",
        || clocked.handle_signal().is_err(),
    );

    group.finish();
}

fn kill_reset(c: &mut Criterion) {
    let mut group = c.benchmark_group("kill_reset");
    let killer = SqlKiller::new();

    group.bench_function("sqlkiller: reset (not killed)", |b| {
        b.iter(|| black_box(&killer).reset())
    });
    let timed = SqlKiller::new();
    timed.set_max_execution_time(Some(Duration::from_secs(3600)));
    group.bench_function(
        "sqlkiller: reset, max_execution_time armed (deadline per statement)",
        |b| b.iter(|| black_box(&timed).reset()),
    );
    let probed = SqlKiller::new();
    let _ = probed.set_connection_alive_probe(|| true);
    group.bench_function(
        "sqlkiller: reset, probe armed (interval per statement)",
        |b| b.iter(|| black_box(&probed).reset()),
    );
    group.bench_function("sqlkiller: send_kill_signal + reset", |b| {
        b.iter(|| {
            let _ = black_box(&killer).send_kill_signal(KillSignal::QueryInterrupted);
            killer.reset()
        })
    });
    group.bench_function("sqlkiller: kill_statement + reset", |b| {
        b.iter(|| {
            let id = black_box(&killer).statement();
            let _ = killer.kill_statement(id, KillSignal::MaxExecTimeExceeded);
            killer.reset()
        })
    });
    group.bench_function(
        "sqlkiller: kill_event + drop + reset (registration only)",
        |b| {
            b.iter(|| {
                drop(black_box(&killer).kill_event());
                killer.reset()
            })
        },
    );
    group.bench_function(
        "sqlkiller: kill_event + send_kill_signal + reset (one waiter)",
        |b| {
            b.iter(|| {
                let event = black_box(&killer).kill_event();
                let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
                drop(event);
                killer.reset()
            })
        },
    );
    let mutex = MutexKiller::default();
    group.bench_function("TiDB master model: send_kill_signal + reset", |b| {
        b.iter(|| {
            black_box(&mutex).send_kill_signal(1);
            mutex.reset()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = hot_check, kill_reset
}
criterion_main!(benches);
