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
# Per call, in four builds: opt-level 3 and 2, each with loops aligned to 64
# bytes (own target dir: every variant's loop starts on the same boundary,
# so the run compares code) and as the linker happens to place them (the
# layout a user gets). The budget must hold in every one.
per_call_logs=()
for build in "aligned,3" "aligned,2" "unaligned,3" "unaligned,2"; do
    layout=${build%,*} opt=${build#*,}
    # Unaligned: RUSTFLAGS left as the caller has it (unset, it does not
    # override a `build.rustflags` of the user's cargo config).
    env=(env) dir=target
    if [ "$layout" = aligned ]; then
        env=(env "RUSTFLAGS=-C llvm-args=-align-loops=64") dir=target/bench-aligned
    fi
    log="$logs/per_call_${layout}_o$opt.log"
    "${env[@]}" CARGO_PROFILE_BENCH_OPT_LEVEL=$opt \
        cargo bench --bench per_call --target-dir "$dir" 2>&1 \
        | sed "s/^RESULT per_call\t/RESULT per_call\t$layout, opt-level $opt, /" | tee "$log" >&2
    per_call_logs+=("$log")
done
cargo bench --bench timer 2>&1 | tee "$logs/timer.log" >&2
python3 scripts/bench_report.py "$logs/wakeup.log" "$logs/contention.log" \
    "${per_call_logs[@]}" "$logs/timer.log"
