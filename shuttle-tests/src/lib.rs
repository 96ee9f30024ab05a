//! Helpers for the shuttle scenarios in `tests/`: run a scenario under
//! shuttle's random and PCT schedulers from a printed seed, check that its
//! racing outcomes were reached, and show that a deliberately broken
//! scenario (a broken twin) is caught, with the seed and the schedule that
//! replays it.
//!
//! Everything here exists only under `RUSTFLAGS="--cfg shuttle"`.
#![cfg(shuttle)]

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shuttle::scheduler::{PctScheduler, RandomScheduler, ReplayScheduler, Scheduler};
use shuttle::{Config, FailurePersistence, Runner};

/// The seed every scenario starts from: `SHUTTLE_SEED` if set, else a
/// fixed one, so a CI run is the same run every time.
pub fn seed() -> u64 {
    std::env::var("SHUTTLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x0517_C0DE)
}

/// The iterations per scheduler: `n`, scaled by `SHUTTLE_SCALE` (a
/// percentage, default 100) for a longer or shorter run.
pub fn iterations(n: usize) -> usize {
    let scale = std::env::var("SHUTTLE_SCALE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100);
    (n * scale / 100).max(1)
}

/// The outcomes a scenario's executions reached, recorded with [`Outcomes::saw`].
#[derive(Default)]
pub struct Outcomes(Mutex<BTreeSet<&'static str>>);

impl Outcomes {
    /// Records that this execution reached `outcome`.
    pub fn saw(&self, outcome: &'static str) {
        self.0.lock().unwrap().insert(outcome);
    }
}

/// How to explore a scenario: iterations of the random scheduler, and of
/// the PCT scheduler at a bug depth.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Executions under the random scheduler.
    pub random: usize,
    /// Executions under the PCT scheduler.
    pub pct: usize,
    /// PCT's bug depth (the number of priority changes it tries).
    pub depth: usize,
}

/// Shuttle's config for every run; `persist`: write a failing schedule to
/// [`schedules_dir`]. (Shuttle persists a failure through a panic hook
/// installed once per process with the first runner's config, or through
/// the runner's own: the same place everywhere.)
fn config(persist: bool) -> Config {
    let mut config = Config::new();
    let persistence = if persist {
        FailurePersistence::File(Some(schedules_dir()))
    } else {
        FailurePersistence::None
    };
    // The crate's own threads (the deadline hand-off) and its unwinding
    // paths need more than shuttle's default 60 KiB stacks.
    config.stack_size = 0x8_0000;
    config.failure_persistence = persistence;
    // Shuttle warns once that it treats every atomic as SeqCst: loom
    // checks the orderings (docs/VERIFICATION.md).
    config.silence_warnings = true;
    config
}

/// The two schedulers every scenario runs under.
#[derive(Clone, Copy, Debug)]
enum Scheduled {
    Random,
    Pct,
}

impl Scheduled {
    /// Runs `scenario` under this scheduler, seeded with `seed`, for the
    /// budget's iterations.
    fn run(
        self,
        seed: u64,
        budget: Budget,
        scenario: Arc<dyn Fn() + Send + Sync>,
    ) -> std::thread::Result<usize> {
        match self {
            Scheduled::Random => run_with(
                RandomScheduler::new_from_seed(seed, iterations(budget.random)),
                true,
                scenario,
            ),
            Scheduled::Pct => run_with(
                PctScheduler::new_from_seed(seed, budget.depth, iterations(budget.pct)),
                true,
                scenario,
            ),
        }
    }
}

impl std::fmt::Display for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scheduled::Random => "random",
            Scheduled::Pct => "PCT",
        })
    }
}

fn run_with(
    scheduler: impl Scheduler + 'static,
    persist: bool,
    scenario: Arc<dyn Fn() + Send + Sync>,
) -> std::thread::Result<usize> {
    let runner = Runner::new(scheduler, config(persist));
    panic::catch_unwind(AssertUnwindSafe(|| runner.run(move || scenario())))
}

/// Runs `scenario` under the random scheduler, then PCT, both seeded with
/// [`seed`]; prints the executions and time of each, and asserts that the
/// executions together reached every outcome in `must_see` (a scenario
/// whose race was never run proves nothing). On a failure shuttle prints
/// the failing schedule (replay it with `shuttle::replay`), and this
/// prints the scheduler and seed that found it.
pub fn explore(
    name: &str,
    budget: Budget,
    must_see: &[&'static str],
    scenario: impl Fn(&Outcomes) + Send + Sync + 'static,
) {
    install_quiet_hook();
    let outcomes = Arc::new(Outcomes::default());
    let recorder = Arc::clone(&outcomes);
    let scenario: Arc<dyn Fn() + Send + Sync> = Arc::new(move || scenario(&recorder));
    let seed = seed();
    for scheduler in [Scheduled::Random, Scheduled::Pct] {
        let start = Instant::now();
        let before = schedules();
        match scheduler.run(seed, budget, Arc::clone(&scenario)) {
            Ok(executions) => eprintln!(
                "shuttle scenario {name}: {scheduler} scheduler, seed {seed}: passed, \
                 {executions} executions, {:.2?}",
                start.elapsed()
            ),
            Err(panic) => {
                let schedule = new_schedule(&before).unwrap_or_default();
                eprintln!(
                    "shuttle scenario {name}: FAILED under the {scheduler} scheduler, seed {seed} \
                     (SHUTTLE_SEED={seed} reruns it), failing schedule (pass it to \
                     shuttle::replay): {schedule}"
                );
                panic::resume_unwind(panic);
            }
        }
    }
    let seen = outcomes.0.lock().unwrap().clone();
    let missing: Vec<_> = must_see.iter().filter(|o| !seen.contains(*o)).collect();
    assert!(
        missing.is_empty(),
        "shuttle scenario {name} never reached {missing:?} (reached {seen:?}): \
         the race it is meant to check was not run"
    );
    eprintln!("shuttle scenario {name}: reached {seen:?}");
}

/// Runs a deliberately broken `scenario` under the random scheduler, then
/// PCT, from [`seed`], and asserts that one of them fails it with a panic
/// whose message contains one of `expected` (a bug may show as more than
/// one symptom, depending on the interleaving). Prints the scheduler, the
/// seed, the execution at which the bug was found and the failing
/// schedule, then replays that schedule and asserts it fails the same way
/// again: the failure is deterministic. A twin that passes means the scenario beside
/// it proves nothing, so that fails the test.
pub fn assert_found(
    name: &str,
    budget: Budget,
    expected: &[&str],
    scenario: impl Fn() + Send + Sync + 'static,
) {
    install_quiet_hook();
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let scenario: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        scenario()
    });
    // One twin at a time: each finds its schedule as the file that appeared.
    static ONE_TWIN: Mutex<()> = Mutex::new(());
    let _one = ONE_TWIN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = seed();
    let before = schedules();
    let start = Instant::now();
    let mut found = None;
    for scheduler in [Scheduled::Random, Scheduled::Pct] {
        executions.store(0, Ordering::Relaxed);
        let outcome = quietly(|| scheduler.run(seed, budget, Arc::clone(&scenario)));
        if let Err(panic) = outcome {
            found = Some((scheduler, message(&panic)));
            break;
        }
    }
    let Some((scheduler, failure)) = found else {
        panic!(
            "broken twin {name} PASSED under shuttle (seed {seed}, {budget:?}): \
             it no longer demonstrates its bug"
        );
    };
    assert!(
        expected.iter().any(|e| failure.contains(e)),
        "broken twin {name} failed for the wrong reason: {failure:?} (wanted {expected:?})"
    );
    let execution = executions.load(Ordering::Relaxed);
    let schedule = new_schedule(&before).expect("shuttle persisted no failing schedule");
    eprintln!(
        "shuttle twin {name}: found, as it should be, by the {scheduler} scheduler, seed {seed}, \
         at execution {execution} ({:.2?}): {}\n  failing schedule (shuttle::replay): {schedule}",
        start.elapsed(),
        failure.lines().next().unwrap_or("")
    );
    // Replay: the same schedule fails the same way.
    let replayed = quietly(|| {
        run_with(
            ReplayScheduler::new_from_encoded(&schedule),
            false,
            Arc::clone(&scenario),
        )
    });
    match replayed {
        Err(panic) => assert!(
            without_numbers(&message(&panic)) == without_numbers(&failure),
            "replaying twin {name}'s schedule failed differently: {:?}",
            message(&panic)
        ),
        Ok(_) => {
            panic!("replaying twin {name}'s schedule passed: the failure is not deterministic")
        }
    }
    eprintln!("shuttle twin {name}: the replayed schedule fails the same way");
    for file in schedules().difference(&before) {
        let _ = std::fs::remove_file(file);
    }
}

/// `text` without its digits: a replay names the same statements, but
/// their sessions' ids come from a process-wide counter.
fn without_numbers(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// The text of a panic payload.
pub fn message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Where shuttle persists failing schedules in this process.
fn schedules_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "sqlkiller-shuttle-schedules-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("cannot create the schedule directory");
        dir
    })
    .clone()
}

/// The schedule files persisted so far.
fn schedules() -> BTreeSet<PathBuf> {
    std::fs::read_dir(schedules_dir())
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// The last schedule persisted since `before` (a failed execution may
/// persist a prefix from the panic hook first, then the whole schedule).
fn new_schedule(before: &BTreeSet<PathBuf>) -> Option<String> {
    let new = schedules();
    let last = new.difference(before).max()?;
    std::fs::read_to_string(last)
        .ok()
        .map(|s| s.split_whitespace().collect())
}

thread_local! {
    /// Whether this test thread runs a twin, whose panics are expected.
    /// Shuttle runs an execution's tasks on the thread that called `run`.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs, before shuttle installs its own, a panic hook that keeps the
/// expected panics of a twin off stderr. Shuttle's hook wraps this one, so
/// it still persists the failing schedule first.
fn install_quiet_hook() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|quiet| quiet.get()) {
                previous(info);
            }
        }));
        // Shuttle installs its own hook, over this one, with the config of
        // the first runner in the process: make it ours.
        Runner::new(RandomScheduler::new(1), config(true)).run(|| {});
    });
}

/// Runs `f` with the panics it expects kept off stderr (unless
/// `SHUTTLE_VERBOSE` is set).
fn quietly<T>(f: impl FnOnce() -> T) -> T {
    QUIET.with(|quiet| quiet.set(std::env::var_os("SHUTTLE_VERBOSE").is_none()));
    let result = f();
    QUIET.with(|quiet| quiet.set(false));
    result
}
