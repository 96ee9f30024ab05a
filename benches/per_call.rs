//! The checkpoint measured as callers make it: one check per row of a scan,
//! interleaved round by round with the same scan checking a bare
//! `AtomicBool::load(Relaxed)` (the floor), medians of many rounds.
//! Complements `hot_path`'s batched measure (runs of 16 back-to-back
//! checks), which can hide what one check per iteration costs.
//!
//! Two scans (a summing one, and a filtering one with a data-dependent
//! select), each with the check inlined into three caller shapes:
//!
//! - **operator**: a function that takes `&SqlKiller` (or `&AtomicBool`) as
//!   an argument, as an operator's `next(&self, killer)` would;
//! - **worker**: a closure that owns a `KillHandle` (`move`), as a parallel
//!   worker or a progress callback would;
//! - **two hops**: a closure that borrows the owner's `SqlKiller`, so the
//!   state word is two dependent loads away (closure → killer → shared
//!   state). The check's slow path is a call, which keeps the compiler from
//!   hoisting the middle load out of the loop, so every row pays a second
//!   load. Any flag with a slow path pays the same there; the baseline
//!   "AtomicBool two pointers away, with a slow path" shows it.
//!
//! Prints one `RESULT per_call` line per (scan, shape, variant) for
//! `scripts/bench_report.py`: median ns per row, and the ratio to the
//! floor's median in the same scan. Run it under two builds, e.g.
//! `CARGO_PROFILE_BENCH_OPT_LEVEL=2 cargo bench --bench per_call`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlkiller::{KillHandle, SqlKiller};

/// Rows per scan: 16 KiB, so the scan stays in L1 and measures the loop,
/// not the memory.
const ROWS: usize = 2048;
/// Scans per sample: 64 Ki rows, so the clock's granularity (about 10 ns
/// here) is under 0.1% of a sample.
const SCANS: usize = 32;
const ROUNDS: usize = 1000;

/// The two scans, each generic over how a row checks for a kill; every
/// instance is its own function, with the check inlined into its loop.
macro_rules! scans {
    ($sum:ident, $filter:ident, <$($g:ident: $bound:path),*>, $arg:ident: $ty:ty, $killed:expr) => {
        #[inline(never)]
        fn $sum<$($g: $bound),*>(rows: &[u64], $arg: $ty) -> u64 {
            let mut sum = 0u64;
            for &row in rows {
                if $killed {
                    return sum;
                }
                sum = sum.wrapping_add(row);
            }
            sum
        }

        #[inline(never)]
        fn $filter<$($g: $bound),*>(rows: &[u64], $arg: $ty) -> u64 {
            let mut hits = 0u64;
            for &row in rows {
                if $killed {
                    return hits;
                }
                if row % 7 == 3 {
                    hits += row >> 3;
                }
            }
            hits
        }
    };
}

scans!(sum_flag, filter_flag, <>, flag: &AtomicBool, flag.load(Relaxed));
scans!(sum_owner, filter_owner, <>, killer: &SqlKiller, killer.handle_signal().is_err());
scans!(sum_with, filter_with, <F: Fn() -> bool>, killed: &F, killed());

/// The slow path of a hand-written flag check, taken only when the flag is
/// set: a call that writes memory, as a real one does (it would record the
/// kill), so the compiler must assume it may change what the loop reads.
#[cold]
#[inline(never)]
fn slow_path(flag: &AtomicBool) -> bool {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    SEEN.fetch_add(1, Relaxed);
    black_box(flag).load(Relaxed)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

type Scan<'a> = Box<dyn Fn(&[u64]) -> u64 + 'a>;

/// Runs `variants` interleaved (the order rotates every round) and prints
/// each median against the first one's, the floor.
fn measure(scan: &str, rows: &[u64], variants: &[(&str, Scan<'_>)]) {
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for round in 0..ROUNDS {
        for k in 0..variants.len() {
            let i = (round + k) % variants.len();
            let start = Instant::now();
            for _ in 0..SCANS {
                black_box(variants[i].1(black_box(rows)));
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / (SCANS * ROWS) as f64);
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    for (i, (name, _)) in variants.iter().enumerate() {
        println!(
            "RESULT per_call\t{scan}: {name}\t{:.4}\t{:.3}",
            medians[i],
            medians[i] / medians[0]
        );
    }
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
    // A flag as far away as the borrowed killer's state word: closure →
    // holder → Arc → flag.
    struct Holder {
        flag: Arc<AtomicBool>,
    }
    let holder = Holder {
        flag: Arc::new(AtomicBool::new(false)),
    };

    let worker = |killer: &SqlKiller| {
        let handle: KillHandle = killer.handle();
        move || handle.check_signal().is_err()
    };
    let (w_plain, w_probed, w_deadline) = (worker(&plain), worker(&probed), worker(&deadline));
    let two_hops_flag = || {
        let flag = &holder.flag;
        flag.load(Relaxed) && slow_path(flag)
    };
    let two_hops = || plain.handle_signal().is_err();
    let two_hops_probed = || probed.handle_signal().is_err();

    // The same variants for each scan: `$flag`, `$owner` and `$with` are
    // that scan's instances (see `scans!`).
    macro_rules! variants {
        ($flag:ident, $owner:ident, $with:ident) => {{
            let list: Vec<(&str, Scan<'_>)> = vec![
                (
                    "floor: AtomicBool::load(Relaxed)",
                    Box::new(|r| $flag(r, &flag)),
                ),
                ("operator: handle_signal", Box::new(|r| $owner(r, &plain))),
                (
                    "operator: handle_signal, probe armed",
                    Box::new(|r| $owner(r, &probed)),
                ),
                (
                    "operator: handle_signal, deadline armed",
                    Box::new(|r| $owner(r, &deadline)),
                ),
                (
                    "worker: KillHandle::check_signal",
                    Box::new(|r| $with(r, &w_plain)),
                ),
                (
                    "worker: KillHandle::check_signal, probe armed",
                    Box::new(|r| $with(r, &w_probed)),
                ),
                (
                    "worker: KillHandle::check_signal, deadline armed",
                    Box::new(|r| $with(r, &w_deadline)),
                ),
                (
                    "two hops: baseline, AtomicBool with a slow path",
                    Box::new(|r| $with(r, &two_hops_flag)),
                ),
                ("two hops: handle_signal", Box::new(|r| $with(r, &two_hops))),
                (
                    "two hops: handle_signal, probe armed",
                    Box::new(|r| $with(r, &two_hops_probed)),
                ),
            ];
            list
        }};
    }
    let sums = variants!(sum_flag, sum_owner, sum_with);
    let filters = variants!(filter_flag, filter_owner, filter_with);
    measure("sum scan", &rows, &sums);
    measure("filter scan", &rows, &filters);
}
