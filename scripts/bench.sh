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
cargo bench --bench per_call 2>&1 | tee "$logs/per_call.log" >&2
# The same per-call measure in a second build (opt-level 2): the budget must
# hold in every build, not only in a lucky code layout.
CARGO_PROFILE_BENCH_OPT_LEVEL=2 cargo bench --bench per_call 2>&1 \
    | sed 's/^RESULT per_call\t/RESULT per_call\topt-level 2, /' | tee "$logs/per_call_o2.log" >&2
cargo bench --bench timer 2>&1 | tee "$logs/timer.log" >&2
python3 scripts/bench_report.py "$logs/wakeup.log" "$logs/contention.log" \
    "$logs/per_call.log" "$logs/per_call_o2.log" "$logs/timer.log"
