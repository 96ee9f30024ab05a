#!/usr/bin/env bash
# Runs every test of sqlkiller, in order of cost: format and lints, unit +
# integration + doc tests (with the kill drill's `testing` feature too),
# then the loom models and the shuttle scenarios (each in its own target
# dir, timed).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

# The example server's dev-dependency turns on the crate's `testing`
# feature in any build that includes the example, so the crate itself is
# also linted and tested on its own (`-p sqlkiller`), as users build it.
step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p sqlkiller --all-targets -- -D warnings
cargo clippy -p sqlkiller --all-targets --features tracing -- -D warnings
cargo clippy -p sqlkiller --all-targets --features testing -- -D warnings

step "unit, integration and doc tests"
cargo test -p sqlkiller
cargo test --workspace --exclude sqlkiller
cargo test --features tracing --lib --tests
cargo test --features testing --lib --test drill
cargo test --features testing --doc drill

step "loom models (RUSTFLAGS=--cfg loom, target/loom)"
# Own target dir: --cfg loom would otherwise throw away the normal build cache.
# Preemption bounds are set per model (loom-tests/src/lib.rs); LOOM_MAX_PREEMPTIONS overrides.
start=$(date +%s)
RUSTFLAGS="--cfg loom" cargo test -p sqlkiller-loom-tests --release \
    --target-dir target/loom -- --nocapture
end=$(date +%s)
echo "loom suite: $((end - start)) s wall clock, build included"

step "shuttle scenarios (RUSTFLAGS=--cfg shuttle, target/shuttle)"
# Own target dir, as for loom. Random and PCT schedulers from a fixed seed
# (SHUTTLE_SEED overrides it; SHUTTLE_SCALE=<percent> scales the iterations).
start=$(date +%s)
RUSTFLAGS="--cfg shuttle" cargo clippy -p sqlkiller-shuttle-tests --all-targets --release \
    --target-dir target/shuttle -- -D warnings
RUSTFLAGS="--cfg shuttle" cargo test -p sqlkiller-shuttle-tests --release \
    --target-dir target/shuttle -- --nocapture
end=$(date +%s)
echo "shuttle suite: $((end - start)) s wall clock, build included"
