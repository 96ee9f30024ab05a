//! The checkpoint measured as callers make it: one check per row of a scan,
//! inside two different callers, interleaved round by round with the same
//! scans checking a bare `AtomicBool::load(Relaxed)` (the floor), medians
//! of many rounds. Complements `hot_path`'s batched measure (runs of 16
//! back-to-back checks), which can hide what one check per iteration costs.
//!
//! Prints one `RESULT per_call` line per (caller, variant) for
//! `scripts/bench_report.py`: median ns per row, and the ratio to the
//! floor's median in the same caller. Run it under two builds, e.g.
//! `CARGO_PROFILE_BENCH_OPT_LEVEL=2 cargo bench --bench per_call`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sqlkiller::SqlKiller;

const ROWS: usize = 2048;
const ROUNDS: usize = 2000;

/// Caller 1: a summing scan that stops when killed.
#[inline(never)]
fn scan_sum(rows: &[u64], killed: &dyn Fn() -> bool) -> u64 {
    let mut sum = 0u64;
    for &row in rows {
        if killed() {
            return sum;
        }
        sum = sum.wrapping_add(row);
    }
    sum
}

/// Caller 2: a filtering scan with a data-dependent branch.
#[inline(never)]
fn scan_filter(rows: &[u64], killed: &dyn Fn() -> bool) -> u64 {
    let mut hits = 0u64;
    for &row in rows {
        if killed() {
            return hits;
        }
        if row % 7 == 3 {
            hits += row >> 3;
        }
    }
    hits
}

/// Monomorphised scans: the check inlined into the loop, as a caller's
/// own code would have it (the `dyn` versions above only pick the caller).
macro_rules! scans {
    ($check:expr) => {
        (
            |rows: &[u64]| {
                let mut sum = 0u64;
                for &row in rows {
                    if $check() {
                        return sum;
                    }
                    sum = sum.wrapping_add(row);
                }
                sum
            },
            |rows: &[u64]| {
                let mut hits = 0u64;
                for &row in rows {
                    if $check() {
                        return hits;
                    }
                    if row % 7 == 3 {
                        hits += row >> 3;
                    }
                }
                hits
            },
        )
    };
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let rows: Vec<u64> = (0..ROWS)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        })
        .collect();

    let flag = AtomicBool::new(false);
    let plain = SqlKiller::new();
    let probed = SqlKiller::new();
    let _probe = probed.set_connection_alive_probe(|| true);
    let deadline = SqlKiller::new();
    deadline.set_max_execution_time(Some(Duration::from_secs(3600)));
    deadline.reset();
    let handle = plain.handle();

    let floor = scans!(|| flag.load(Relaxed));
    let ours = scans!(|| plain.handle_signal().is_err());
    let with_probe = scans!(|| probed.handle_signal().is_err());
    let with_deadline = scans!(|| deadline.handle_signal().is_err());
    let worker = scans!(|| handle.handle_signal().is_err());

    type Scan<'a> = (
        &'a str,
        &'a dyn Fn(&[u64]) -> u64,
        &'a dyn Fn(&[u64]) -> u64,
    );
    let variants: [Scan<'_>; 5] = [
        ("floor: AtomicBool::load(Relaxed)", &floor.0, &floor.1),
        ("sqlkiller: handle_signal", &ours.0, &ours.1),
        (
            "sqlkiller: handle_signal, probe armed",
            &with_probe.0,
            &with_probe.1,
        ),
        (
            "sqlkiller: handle_signal, deadline armed",
            &with_deadline.0,
            &with_deadline.1,
        ),
        ("sqlkiller: KillHandle::handle_signal", &worker.0, &worker.1),
    ];
    // Keep the dyn-dispatched callers in the binary too (a third build shape).
    black_box(scan_sum(&rows, &|| flag.load(Relaxed)));
    black_box(scan_filter(&rows, &|| flag.load(Relaxed)));

    for (caller, pick) in [("sum scan", 0usize), ("filter scan", 1)] {
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); variants.len()];
        for round in 0..ROUNDS {
            // Rotate the order each round so no variant always runs first.
            for k in 0..variants.len() {
                let i = (round + k) % variants.len();
                let scan = if pick == 0 {
                    variants[i].1
                } else {
                    variants[i].2
                };
                let start = Instant::now();
                black_box(scan(black_box(&rows)));
                samples[i].push(start.elapsed().as_nanos() as f64 / ROWS as f64);
            }
        }
        let medians: Vec<f64> = samples.into_iter().map(median).collect();
        for (i, (name, _, _)) in variants.iter().enumerate() {
            println!(
                "RESULT per_call\t{caller}: {name}\t{:.4}\t{:.3}",
                medians[i],
                medians[i] / medians[0]
            );
        }
    }
}
