//! Helpers for the loom models in `tests/`: run a model with an explicit
//! preemption bound and report how long it took, or show that loom rejects
//! a deliberately broken one.
//!
//! Everything here exists only under `RUSTFLAGS="--cfg loom"`.
#![cfg(loom)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

/// The outcomes a model's executions reached, recorded with [`Outcomes::saw`].
#[derive(Default)]
pub struct Outcomes(Mutex<BTreeSet<&'static str>>);

impl Outcomes {
    /// Records that this execution reached `outcome`.
    pub fn saw(&self, outcome: &'static str) {
        self.0.lock().unwrap().insert(outcome);
    }
}

/// Runs `model` over every interleaving loom explores — all of them when
/// `preemption_bound` is `None`, else those with at most that many
/// preemptions (`LOOM_MAX_PREEMPTIONS` overrides either) — prints the bound,
/// the number of executions and the time taken, and asserts that the
/// executions reached every outcome in `must_see`.
///
/// The last check guards the model itself: loom's DPOR can skip
/// interleavings (tokio-rs/loom#392), and a model whose racing orders were
/// never explored passes without proving anything.
pub fn check(
    name: &str,
    preemption_bound: Option<usize>,
    must_see: &[&'static str],
    model: impl Fn(&Outcomes) + Sync + Send + 'static,
) {
    let outcomes = Arc::new(Outcomes::default());
    let recorder = Arc::clone(&outcomes);
    let (executions, elapsed, outcome) = run(preemption_bound, move || model(&recorder));
    let bound = effective_bound(preemption_bound);
    if let Err(panic) = outcome {
        eprintln!("loom model {name}: FAILED after {executions} executions ({bound})");
        panic::resume_unwind(panic);
    }
    let seen = outcomes.0.lock().unwrap().clone();
    let missing: Vec<_> = must_see.iter().filter(|o| !seen.contains(*o)).collect();
    assert!(
        missing.is_empty(),
        "loom model {name} never reached {missing:?} in {executions} executions (reached \
         {seen:?}): the race it is meant to check was not explored"
    );
    eprintln!(
        "loom model {name}: passed, {bound}, {executions} executions, {:.2?}, \
         reached {seen:?}",
        elapsed
    );
}

/// Runs a deliberately broken `model` and asserts that loom rejects it with
/// a panic whose message contains `expected`. A broken model that passes
/// means the real model next to it proves nothing, so this fails the test.
pub fn assert_rejected(
    name: &str,
    preemption_bound: Option<usize>,
    expected: &str,
    model: impl Fn() + Sync + Send + 'static,
) {
    silence_expected_panics();
    EXPECTING_PANIC.with(|flag| flag.set(true));
    let (executions, elapsed, outcome) = run(preemption_bound, model);
    EXPECTING_PANIC.with(|flag| flag.set(false));
    let bound = effective_bound(preemption_bound);
    let panic = match outcome {
        Ok(()) => panic!(
            "broken model {name} PASSED under loom ({bound}, {executions} executions): \
             it no longer demonstrates its bug"
        ),
        Err(panic) => panic,
    };
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic>");
    assert!(
        message.contains(expected),
        "broken model {name} was rejected for the wrong reason: {message:?} (wanted {expected:?})"
    );
    eprintln!(
        "loom model {name}: rejected as it should be, at execution {executions} \
         ({bound}, {:.2?}): {}",
        elapsed,
        message.lines().next().unwrap_or("")
    );
}

/// The bound in force: `LOOM_MAX_PREEMPTIONS` if set, else the model's own.
fn effective_bound(preemption_bound: Option<usize>) -> Bound {
    Bound(
        std::env::var("LOOM_MAX_PREEMPTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .or(preemption_bound),
    )
}

/// A preemption bound, printed as "preemption bound N" or "exhaustive".
#[derive(Clone, Copy)]
struct Bound(Option<usize>);

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(bound) => write!(f, "preemption bound {bound}"),
            None => f.write_str("no preemption bound"),
        }
    }
}

type Outcome = Result<(), Box<dyn std::any::Any + Send>>;

fn run(
    preemption_bound: Option<usize>,
    model: impl Fn() + Sync + Send + 'static,
) -> (usize, std::time::Duration, Outcome) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = effective_bound(preemption_bound).0;
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let start = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            model();
        })
    }));
    (executions.load(Ordering::Relaxed), start.elapsed(), outcome)
}

/// Runs `f` (a `check` of a model whose threads panic on purpose and catch
/// it) without printing those panics.
pub fn with_expected_panics(f: impl FnOnce()) {
    silence_expected_panics();
    EXPECTING_PANIC.with(|flag| flag.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|flag| flag.set(false));
    if let Err(panic) = result {
        panic::resume_unwind(panic);
    }
}

thread_local! {
    /// Set while this OS thread runs a broken model. loom runs every model
    /// thread as a coroutine on the thread that called `check`, so this
    /// silences exactly the panics we expect and no other test's.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Keeps the expected panic of a broken model (and its backtrace) out of
/// the output; `assert_rejected` prints its first line instead.
fn silence_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// A plain (non-atomic) Go field: loom tracks every access through an
/// `loom::cell::UnsafeCell` and reports any two that are not ordered by happens-before.
/// The value travels in a relaxed atomic, so reading it needs no raw pointer.
pub struct PlainField {
    access: loom::cell::UnsafeCell<()>,
    value: loom::sync::atomic::AtomicU64,
}

impl PlainField {
    pub fn new(value: u64) -> Self {
        PlainField {
            access: loom::cell::UnsafeCell::new(()),
            value: loom::sync::atomic::AtomicU64::new(value),
        }
    }
    pub fn read(&self) -> u64 {
        self.access
            .with(|_| self.value.load(loom::sync::atomic::Ordering::Relaxed))
    }
    pub fn write(&self, value: u64) {
        self.access.with_mut(|_| {
            self.value
                .store(value, loom::sync::atomic::Ordering::Relaxed)
        })
    }
}
