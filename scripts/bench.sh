#!/usr/bin/env bash
# Runs every benchmark once and prints the ratio table (markdown) of the README.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=target/bench-logs
mkdir -p "$logs"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(rustc --version)" >&2
cargo bench --bench hot_path 2>&1 | tee "$logs/hot_path.log" | grep -E "^(hot_check|kill_reset)/|time:" >&2
cargo bench --bench wakeup 2>&1 | tee "$logs/wakeup.log" >&2
cargo bench --bench contention 2>&1 | tee "$logs/contention.log" >&2
# Per call, in two builds (opt-level 3 and 2): the budget must hold in every
# build. Loops aligned to 64 bytes (own target dir), so that each variant's
# loop starts on the same boundary and the run compares code, not where the
# linker happened to put it (unaligned, the same check measured 1.0x or
# 1.9x from one build to the next).
aligned=(--target-dir target/bench-aligned)
RUSTFLAGS="-C llvm-args=-align-loops=64" cargo bench --bench per_call "${aligned[@]}" 2>&1 \
    | tee "$logs/per_call.log" >&2
RUSTFLAGS="-C llvm-args=-align-loops=64" CARGO_PROFILE_BENCH_OPT_LEVEL=2 \
    cargo bench --bench per_call "${aligned[@]}" 2>&1 \
    | sed 's/^RESULT per_call\t/RESULT per_call\topt-level 2, /' | tee "$logs/per_call_o2.log" >&2
cargo bench --bench timer 2>&1 | tee "$logs/timer.log" >&2
python3 scripts/bench_report.py "$logs/wakeup.log" "$logs/contention.log" \
    "$logs/per_call.log" "$logs/per_call_o2.log" "$logs/timer.log"
