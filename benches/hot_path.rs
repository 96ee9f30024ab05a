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

fn hot_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_check");

    let flag = AtomicBool::new(false);
    group.bench_function("floor: AtomicBool::load(Relaxed)", |b| {
        b.iter(|| black_box(&flag).load(Relaxed))
    });

    let killer = SqlKiller::new();
    group.bench_function("sqlkiller: handle_signal", |b| {
        b.iter(|| black_box(&killer).handle_signal().is_ok())
    });

    let probed = SqlKiller::new();
    probed.set_connection_alive_probe(|| true);
    group.bench_function("sqlkiller: handle_signal, probe installed", |b| {
        b.iter(|| black_box(&probed).handle_signal().is_ok())
    });

    let token = CancellationToken::new();
    group.bench_function("tokio-util: CancellationToken::is_cancelled", |b| {
        b.iter(|| black_box(&token).is_cancelled())
    });

    let mutex = MutexKiller::default();
    group.bench_function("TiDB master model: check under the mutex", |b| {
        b.iter(|| black_box(&mutex).handle_signal().is_ok())
    });

    let clocked = ClockEveryCallKiller {
        signal: AtomicU32::new(0),
        probe: Some(Box::new(|| true)),
        last_check_ns: AtomicU64::new(epoch().elapsed().as_nanos() as u64),
    };
    group.bench_function("TiDB probe model: clock read every call", |b| {
        b.iter(|| black_box(&clocked).handle_signal().is_ok())
    });

    group.finish();
}

fn kill_reset(c: &mut Criterion) {
    let mut group = c.benchmark_group("kill_reset");
    let killer = SqlKiller::new();

    group.bench_function("sqlkiller: reset (not killed)", |b| {
        b.iter(|| black_box(&killer).reset())
    });
    group.bench_function("sqlkiller: send_kill_signal + reset", |b| {
        b.iter(|| {
            black_box(&killer).send_kill_signal(KillSignal::QueryInterrupted);
            killer.reset()
        })
    });
    group.bench_function("sqlkiller: kill_statement + reset", |b| {
        b.iter(|| {
            let id = black_box(&killer).statement();
            killer.kill_statement(id, KillSignal::MaxExecTimeExceeded);
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
                killer.send_kill_signal(KillSignal::QueryInterrupted);
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
