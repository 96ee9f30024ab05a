#!/usr/bin/env bash
# Runs every test of sqlkiller, in order of cost: format and lints, unit +
# integration + doc tests, then the loom models (own target dir, timed).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --all-targets --features tracing -- -D warnings

step "unit, integration and doc tests"
cargo test --workspace
cargo test --features tracing --lib --tests

step "loom models (RUSTFLAGS=--cfg loom, target/loom)"
# Own target dir: --cfg loom would otherwise throw away the normal build cache.
# Preemption bounds are set per model (loom-tests/src/lib.rs); LOOM_MAX_PREEMPTIONS overrides.
start=$(date +%s)
RUSTFLAGS="--cfg loom" cargo test -p sqlkiller-loom-tests --release \
    --target-dir target/loom -- --nocapture
end=$(date +%s)
echo "loom suite: $((end - start)) s wall clock, build included"
