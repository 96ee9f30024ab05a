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
python3 scripts/bench_report.py "$logs/wakeup.log" "$logs/contention.log"
