//! The kill drill: an integrator's statement killed at every checkpoint,
//! to find the kills an engine ignores, swallows, or survives dirty.
//!
//! The crate proves its own races; it cannot prove the integrator's side:
//! that every loop of their engine reaches a checkpoint, that the error a
//! checkpoint returns travels up to the client, and that a statement
//! killed anywhere leaves the engine clean (no partial row, the
//! transaction rolled back, no leaked handle). The drill checks that side,
//! deterministically, in a test:
//!
//! 1. it runs the statement once, unkilled, and counts its checkpoints:
//!    the owner's [`handle_signal`](crate::SqlKiller::handle_signal) and
//!    the workers' [`check_signal`](crate::KillHandle::check_signal) on
//!    the statement's session, and the gaps between them;
//! 2. it runs it again for each checkpoint k (every one, or an even sample
//!    of [`max_kills`](Drill::max_kills)), with a kill that lands exactly
//!    at the k-th checkpoint, which therefore returns the kill's error;
//!    then once with a kill that lands before the statement's first
//!    checkpoint (right after [`Statement::begin`]), and once with a kill
//!    that lands after its last checkpoint;
//! 3. for each kill it checks that the statement returned the kill's
//!    error ([`Statement::is_kill`]; not required of the kill after the
//!    last checkpoint, nor of one that landed inside a kill-immune
//!    section), that it ran at most
//!    [`checkpoints_after_kill`](Drill::checkpoints_after_kill) further
//!    checkpoints (so an error swallowed at a checkpoint is caught), that
//!    the statement did not start already killed (a kill leaked from the
//!    run before), and that the integrator's invariant holds
//!    ([`Statement::invariant`]);
//! 4. it ends with one more unkilled run: the engine still works.
//!
//! Pass or fail never depends on a clock: only on counts, outputs and the
//! invariant. Gaps are measured with [`Instant`] and only reported,
//! unless the integrator gives a [work clock](Drill::work_clock) (rows
//! scanned, pages read) and a budget for it: a gap over the budget is then
//! a failure, deterministically. That holds for statements whose
//! checkpoints run on one thread; with parallel workers, which thread
//! reaches "checkpoint k" first varies between runs, and so can the counts.
//!
//! The drill's kill is sent from the checkpoint that it lands at, on that
//! checkpoint's thread, so the kill's cancel hooks run there too, where in
//! production they run on the killer's thread. A hook that waits for
//! something the statement holds at that checkpoint (a lock across the
//! scan) therefore hangs the drill; the crate's hooks must not block
//! anyway. A hook's panic shows as the statement's.
//!
//! Only with the `testing` feature; without it none of this is compiled,
//! and the checkpoints carry no hook.
//!
//! ```
//! use sqlkiller::drill::{Drill, Statement};
//! use sqlkiller::{KillError, KillHandle, SqlKiller};
//!
//! /// A "statement" that sums 0..100 with a checkpoint every 10 rows,
//! /// and writes its result only if it completes.
//! struct Sum {
//!     session: SqlKiller,
//!     written: Option<u64>,
//! }
//!
//! impl Statement for Sum {
//!     type Output = Result<u64, KillError>;
//!     fn session(&self) -> KillHandle {
//!         self.session.handle()
//!     }
//!     fn begin(&mut self) {
//!         self.session.reset(); // the statement boundary
//!         self.written = None;
//!     }
//!     fn run(&mut self) -> Self::Output {
//!         let mut sum = 0;
//!         for row in 0..100 {
//!             if row % 10 == 0 {
//!                 self.session.handle_signal()?;
//!             }
//!             sum += row;
//!         }
//!         self.written = Some(sum);
//!         Ok(sum)
//!     }
//!     fn is_kill(&self, output: &Self::Output, kill: &KillError) -> bool {
//!         output.as_ref().err() == Some(kill)
//!     }
//!     fn invariant(&mut self, output: &Self::Output) -> Result<(), String> {
//!         match (output, self.written) {
//!             (Ok(sum), Some(written)) if *sum == written => Ok(()),
//!             (Err(_), None) => Ok(()),
//!             (output, written) => Err(format!("{output:?} but {written:?} written")),
//!         }
//!     }
//! }
//!
//! let report = Drill::new("sum").run(&mut Sum { session: SqlKiller::new(), written: None });
//! eprintln!("{report}");
//! assert!(report.passed(), "{report}");
//! assert_eq!((report.checkpoints, report.kills_delivered), (10, 12));
//! ```

use std::fmt;
use std::panic::{self, AssertUnwindSafe, Location};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::{KillError, KillHandle, KillOutcome, KillSignal};

/// A statement to drill, as the integrator runs it: a long `SELECT`, an
/// `INSERT … SELECT`, a whole protocol command.
pub trait Statement {
    /// What one run returns (shown in the report when it is wrong).
    type Output: fmt::Debug;

    /// The session whose checkpoints are counted and killed. Asked after
    /// every [`begin`](Statement::begin), so each run may use a new session.
    fn session(&self) -> KillHandle;

    /// Starts the statement: the statement boundary (`reset`, or starting
    /// the statement on the session) and whatever comes before execution,
    /// such as clearing what the last run wrote. The kill "before the
    /// start" lands right after it returns. Its checkpoints are not counted.
    fn begin(&mut self) {}

    /// Runs the statement to its end.
    fn run(&mut self) -> Self::Output;

    /// Whether `output` reports `kill`, the error of the kill the drill
    /// sent: how the engine's error maps the killer's.
    fn is_kill(&self, output: &Self::Output, kill: &KillError) -> bool;

    /// The integrator's invariant after every run, killed or not (no
    /// partial write, the transaction rolled back, no leaked handle):
    /// `Err` says what is wrong.
    fn invariant(&mut self, output: &Self::Output) -> Result<(), String> {
        let _ = output;
        Ok(())
    }
}

/// How a drill runs: which kill, how many, how strict. Build it with
/// [`Drill::new`] and the setters, run it with [`Drill::run`].
#[derive(Clone)]
pub struct Drill {
    name: String,
    signal: KillSignal,
    max_kills: usize,
    checkpoints_after_kill: usize,
    clock: Clock,
}

/// What gaps are measured in.
#[derive(Clone)]
enum Clock {
    /// `Instant`, in nanoseconds: reported only.
    Monotonic,
    /// The integrator's work counter, with a budget per gap.
    Work {
        unit: &'static str,
        read: Arc<dyn Fn() -> u64 + Send + Sync>,
        budget: Option<u64>,
    },
}

impl Drill {
    /// A drill named `name` (for the report), with a `QueryInterrupted`
    /// kill, at most 64 kills at checkpoints, no checkpoint allowed after
    /// a kill, and gaps measured on the monotonic clock.
    pub fn new(name: impl Into<String>) -> Drill {
        Drill {
            name: name.into(),
            signal: KillSignal::QueryInterrupted,
            max_kills: 64,
            checkpoints_after_kill: 0,
            clock: Clock::Monotonic,
        }
    }

    /// The signal every kill of the drill sends.
    pub fn signal(mut self, signal: KillSignal) -> Drill {
        self.signal = signal;
        self
    }

    /// At most `max` kills at checkpoints (at least 2): with more
    /// checkpoints, an even sample of them, always with the first and the
    /// last. The kills before the start and after the last checkpoint come
    /// on top.
    pub fn max_kills(mut self, max: usize) -> Drill {
        self.max_kills = max.max(2);
        self
    }

    /// How many checkpoints a statement may still reach after the one
    /// where its kill landed (default 0: a single-threaded engine returns
    /// from the checkpoint that failed). An engine whose workers each
    /// check once more before they see their owner stop needs the number
    /// of workers here. A statement that runs more checkpoints swallowed
    /// the kill's error somewhere.
    pub fn checkpoints_after_kill(mut self, bound: usize) -> Drill {
        self.checkpoints_after_kill = bound;
        self
    }

    /// Measures gaps between checkpoints with `read`, a counter of the
    /// engine's work (rows scanned, pages read) in `unit`s, instead of the
    /// monotonic clock; and, with a `budget`, fails the drill for a gap
    /// longer than it: a stretch of work a kill would wait for. Since the
    /// counter is the engine's own, the verdict is deterministic.
    pub fn work_clock(
        mut self,
        unit: &'static str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
        budget: Option<u64>,
    ) -> Drill {
        self.clock = Clock::Work {
            unit,
            read: Arc::new(read),
            budget,
        };
        self
    }

    /// Runs the drill on `statement` (on this thread; its workers may run
    /// checkpoints on others) and reports what it found.
    pub fn run<S: Statement>(&self, statement: &mut S) -> DrillReport {
        let mut report = DrillReport {
            name: self.name.clone(),
            checkpoints: 0,
            last_clean_checkpoints: 0,
            drilled: Vec::new(),
            kills_delivered: 0,
            returned_kill: 0,
            completed_after_last: 0,
            landed_immune: 0,
            most_after_kill: 0,
            checkpoints_after_kill: self.checkpoints_after_kill,
            longest_gap: None,
            failures: Vec::new(),
        };
        // 1. Count, on a run without a kill.
        let counted = self.one_run(statement, Plan::Count);
        report.checkpoints = counted.seen;
        report.longest_gap = counted.longest.clone();
        self.check_clean(statement, &counted, &mut report);
        if let Clock::Work {
            budget: Some(budget),
            ..
        } = self.clock
        {
            let over = counted.over_budget(budget);
            if let Some(gap) = counted.longest.as_ref().filter(|_| over > 0) {
                report.fail(
                    KillPoint::Unkilled,
                    Failure::GapOverBudget {
                        gap: gap.clone(),
                        budget,
                        gaps_over: over,
                    },
                );
            }
        }
        if counted.seen == 0 {
            report.fail(KillPoint::Unkilled, Failure::NoCheckpoints);
        }
        // 2. Kill: before the start, at each checkpoint (or a sample), after the last.
        let mut points = vec![KillPoint::BeforeStart];
        points.extend(sample(counted.seen, self.max_kills).map(KillPoint::At));
        if counted.seen > 0 {
            points.push(KillPoint::AfterLast(counted.seen));
        }
        for point in points {
            let plan = match point {
                KillPoint::BeforeStart => Plan::BeforeStart,
                KillPoint::At(k) => Plan::At(k),
                KillPoint::AfterLast(k) => Plan::After(k),
                KillPoint::Unkilled => unreachable!(),
            };
            let run = self.one_run(statement, plan);
            report.drilled.push(point);
            self.check_killed(statement, point, run, &mut report);
        }
        // 3. One more clean run: the engine still works after the kills.
        let last = self.one_run(statement, Plan::Count);
        report.last_clean_checkpoints = last.seen;
        self.check_clean(statement, &last, &mut report);
        report
    }

    /// One run of the statement under `plan`.
    fn one_run<S: Statement>(&self, statement: &mut S, plan: Plan) -> Run<S::Output> {
        statement.begin();
        let handle = statement.session();
        let reason = match plan {
            Plan::Count => String::new(),
            Plan::BeforeStart => format!("kill drill {}: before the start", self.name),
            Plan::At(k) => format!("kill drill {}: at checkpoint {k}", self.name),
            Plan::After(k) => format!("kill drill {}: after checkpoint {k}, the last", self.name),
        };
        let recorder = Arc::new(Recorder {
            killer: handle.statement().killer,
            handle: handle.clone(),
            signal: self.signal,
            reason,
            clock: self.clock.clone(),
            epoch: crate::clock::monotonic_now(),
            state: Mutex::new(RunState {
                plan,
                seen: 0,
                last_tick: 0,
                last_location: None,
                longest: None,
                gaps: Vec::new(),
                keep_gaps: matches!(
                    self.clock,
                    Clock::Work {
                        budget: Some(_),
                        ..
                    }
                ) && plan == Plan::Count,
                delivered_at: None,
                outcome: None,
                immune: false,
                after_kill: 0,
                started_killed: false,
            }),
        });
        let registration = Registration::new(Arc::clone(&recorder));
        let start = recorder.tick();
        recorder.state().last_tick = start;
        if plan == Plan::BeforeStart {
            recorder.deliver(0);
        }
        let output = panic::catch_unwind(AssertUnwindSafe(|| statement.run()));
        let end = recorder.tick();
        drop(registration);
        let mut state = recorder.state();
        let seen = state.seen;
        let last_location = state.last_location;
        let last_tick = state.last_tick;
        state.note_gap(Gap {
            length: end.saturating_sub(last_tick),
            unit: recorder.unit(),
            after: (seen > 0).then_some(seen),
            before: None,
            from: last_location,
            to: None,
        });
        let kill = KillError::new(self.signal, handle.conn_id(), &recorder.reason);
        Run {
            output: output.map_err(|panic| panic_message(&*panic)),
            seen,
            longest: state.longest.clone(),
            gaps: std::mem::take(&mut state.gaps),
            delivered: state.delivered_at.is_some(),
            outcome: state.outcome,
            immune: state.immune,
            after_kill: state.after_kill,
            started_killed: state.started_killed,
            kill,
        }
    }

    /// The checks of an unkilled run: no kill's error, not started killed,
    /// the invariant.
    fn check_clean<S: Statement>(
        &self,
        statement: &mut S,
        run: &Run<S::Output>,
        report: &mut DrillReport,
    ) {
        let point = KillPoint::Unkilled;
        if run.started_killed {
            report.fail(point, Failure::StartedKilled);
        }
        match &run.output {
            Err(message) => report.fail(point, Failure::Panicked(message.clone())),
            Ok(output) => {
                if statement.is_kill(output, &run.kill) {
                    report.fail(point, Failure::KilledWithoutAKill(short(output)));
                }
                if let Err(message) = statement.invariant(output) {
                    report.fail(point, Failure::Invariant(message));
                }
            }
        }
    }

    /// The checks of a run with a kill at `point`.
    fn check_killed<S: Statement>(
        &self,
        statement: &mut S,
        point: KillPoint,
        run: Run<S::Output>,
        report: &mut DrillReport,
    ) {
        if run.started_killed {
            // The root cause: whatever follows (the drill's kill refused,
            // the run cut short) follows from it.
            report.fail(point, Failure::StartedKilled);
            if let Ok(output) = &run.output {
                if let Err(message) = statement.invariant(output) {
                    report.fail(point, Failure::Invariant(message));
                }
            }
            return;
        }
        if !run.delivered {
            report.fail(
                point,
                Failure::NotReached {
                    checkpoints: run.seen,
                },
            );
        } else if run.outcome != Some(KillOutcome::Sent) {
            report.fail(point, Failure::NotDelivered(run.outcome));
        } else {
            report.kills_delivered += 1;
        }
        if run.immune {
            report.landed_immune += 1;
        }
        let output = match &run.output {
            Err(message) => {
                report.fail(point, Failure::Panicked(message.clone()));
                return;
            }
            Ok(output) => output,
        };
        let killed = statement.is_kill(output, &run.kill);
        // The kill before the start is seen at the first checkpoint, one
        // later than where it landed.
        let further = match point {
            KillPoint::BeforeStart => run.after_kill.saturating_sub(1),
            _ => run.after_kill,
        };
        let may_complete = matches!(point, KillPoint::AfterLast(_)) || run.immune;
        if killed {
            report.returned_kill += 1;
        } else if may_complete {
            if matches!(point, KillPoint::AfterLast(_)) {
                report.completed_after_last += 1;
            }
        } else if run.delivered {
            report.fail(point, Failure::NotKilled(short(output)));
        }
        if !run.immune {
            report.most_after_kill = report.most_after_kill.max(further);
            if further > self.checkpoints_after_kill {
                report.fail(
                    point,
                    Failure::Overran {
                        further,
                        bound: self.checkpoints_after_kill,
                    },
                );
            }
        }
        if let Err(message) = statement.invariant(output) {
            report.fail(point, Failure::Invariant(message));
        }
    }
}

impl fmt::Debug for Drill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drill")
            .field("name", &self.name)
            .field("signal", &self.signal)
            .field("max_kills", &self.max_kills)
            .field("checkpoints_after_kill", &self.checkpoints_after_kill)
            .finish_non_exhaustive()
    }
}

/// `max` checkpoint numbers spread evenly over `1..=count`, first and last
/// included; all of them if there are no more than `max`.
fn sample(count: usize, max: usize) -> impl Iterator<Item = usize> {
    let take = count.min(max);
    let mut last = 0;
    (0..take).filter_map(move |i| {
        let k = if take == count || take < 2 {
            i + 1
        } else {
            1 + i * (count - 1) / (take - 1)
        };
        (k != last).then(|| {
            last = k;
            k
        })
    })
}

/// A `Debug` of `output`, cut to a line's length.
fn short(output: &impl fmt::Debug) -> String {
    let mut text = format!("{output:?}");
    if text.len() > 160 {
        let mut cut = 160;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Where a kill of the drill lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillPoint {
    /// No kill: the counting run and the last run.
    Unkilled,
    /// Right after [`Statement::begin`], before the first checkpoint.
    BeforeStart,
    /// At the k-th checkpoint (from 1), which sees it.
    At(usize),
    /// After the k-th checkpoint, the last: no checkpoint sees it.
    AfterLast(usize),
}

impl fmt::Display for KillPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillPoint::Unkilled => f.write_str("unkilled run"),
            KillPoint::BeforeStart => f.write_str("kill before the start"),
            KillPoint::At(k) => write!(f, "kill at checkpoint {k}"),
            KillPoint::AfterLast(k) => write!(f, "kill after checkpoint {k}, the last"),
        }
    }
}

/// What went wrong in one run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The statement did not return the kill's error (its output).
    NotKilled(String),
    /// It ran `further` checkpoints after its kill landed, more than
    /// `bound`: the error was swallowed somewhere.
    Overran {
        /// Checkpoints run after the one where the kill landed.
        further: usize,
        /// [`Drill::checkpoints_after_kill`].
        bound: usize,
    },
    /// The integrator's invariant failed afterwards.
    Invariant(String),
    /// The run ended after `checkpoints` checkpoints, before the one the
    /// kill was for: the statement does not run the same way each time.
    NotReached {
        /// How many checkpoints this run had.
        checkpoints: usize,
    },
    /// The kill was refused (`None`: never sent).
    NotDelivered(Option<KillOutcome>),
    /// The statement was already killed at its first checkpoint, before
    /// the drill's kill: a kill of an earlier run leaked into it.
    StartedKilled,
    /// A run without a kill returned the kill's error (its output).
    KilledWithoutAKill(String),
    /// The statement panicked.
    Panicked(String),
    /// No checkpoint at all: nothing can stop this statement.
    NoCheckpoints,
    /// The longest gap is longer than the work clock's budget
    /// (`gaps_over` gaps are).
    GapOverBudget {
        /// The longest gap.
        gap: Gap,
        /// The budget.
        budget: u64,
        /// How many gaps are over it.
        gaps_over: usize,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotKilled(output) => {
                write!(f, "returned {output} instead of the kill's error")
            }
            Failure::Overran { further, bound } => write!(
                f,
                "ran {further} more checkpoints after the kill (bound {bound}): its error was swallowed"
            ),
            Failure::Invariant(message) => write!(f, "invariant broken: {message}"),
            Failure::NotReached { checkpoints } => write!(
                f,
                "the run ended after {checkpoints} checkpoints, before the kill's: not the same run each time"
            ),
            Failure::NotDelivered(Some(KillOutcome::Idle)) => f.write_str(
                "the kill was not delivered: the session was idle (start the statement in Statement::begin)",
            ),
            Failure::NotDelivered(outcome) => write!(f, "the kill was not delivered: {outcome:?}"),
            Failure::StartedKilled => f.write_str(
                "the statement was killed before the drill's kill: a kill of an earlier run leaked into it",
            ),
            Failure::KilledWithoutAKill(output) => {
                write!(f, "returned the kill's error without a kill: {output}")
            }
            Failure::Panicked(message) => write!(f, "panicked: {message}"),
            Failure::NoCheckpoints => f.write_str("no checkpoint: nothing can stop this statement"),
            Failure::GapOverBudget {
                gap,
                budget,
                gaps_over,
            } => write!(
                f,
                "{gaps_over} gap(s) over the budget of {budget} {}; the longest: {gap}",
                gap.unit
            ),
        }
    }
}

/// The stretch between two checkpoints (or the start, or the end) of the
/// unkilled run: what a kill landing in it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Its length, in `unit`s.
    pub length: u64,
    /// `"ns"` on the monotonic clock, else the work clock's unit.
    pub unit: &'static str,
    /// The checkpoint it starts at (from 1); `None`: the statement's start.
    pub after: Option<usize>,
    /// The checkpoint it ends at; `None`: the statement's end.
    pub before: Option<usize>,
    /// Where the checkpoint it starts at was called.
    pub from: Option<&'static Location<'static>>,
    /// Where the checkpoint it ends at was called.
    pub to: Option<&'static Location<'static>>,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.unit == NANOS {
            write!(f, "{:?}", std::time::Duration::from_nanos(self.length))?;
        } else {
            write!(f, "{} {}", self.length, self.unit)?;
        }
        let end = |f: &mut fmt::Formatter<'_>, n: Option<usize>, edge: &str| match n {
            Some(n) => write!(f, "checkpoint {n}"),
            None => f.write_str(edge),
        };
        f.write_str(", from ")?;
        end(f, self.after, "the start")?;
        f.write_str(" to ")?;
        end(f, self.before, "the end")?;
        match (self.from, self.to) {
            (Some(from), Some(to)) => write!(f, " ({from} -> {to})"),
            (Some(from), None) => write!(f, " ({from} -> the end)"),
            (None, Some(to)) => write!(f, " (the start -> {to})"),
            (None, None) => Ok(()),
        }
    }
}

const NANOS: &str = "ns";

/// What a drill found. Its `Display` is the report to print.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DrillReport {
    /// The drill's name.
    pub name: String,
    /// Checkpoints in the unkilled run.
    pub checkpoints: usize,
    /// Checkpoints in the last, unkilled run, after all the kills.
    pub last_clean_checkpoints: usize,
    /// Where the kills were aimed, in order.
    pub drilled: Vec<KillPoint>,
    /// Kills that were sent and landed (`Sent`).
    pub kills_delivered: usize,
    /// Runs that returned the kill's error.
    pub returned_kill: usize,
    /// Runs with the kill after the last checkpoint that completed.
    pub completed_after_last: usize,
    /// Kills that landed inside a kill-immune section (the statement may
    /// complete; the kill is reported at the section's end).
    pub landed_immune: usize,
    /// The most checkpoints a run reached after its kill landed.
    pub most_after_kill: usize,
    /// The bound on that ([`Drill::checkpoints_after_kill`]).
    pub checkpoints_after_kill: usize,
    /// The longest gap of the unkilled run.
    pub longest_gap: Option<Gap>,
    /// Every failure, with where its kill was aimed.
    pub failures: Vec<(KillPoint, Failure)>,
}

impl DrillReport {
    /// Whether the drill found nothing wrong.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failures of kills at checkpoints: their k.
    pub fn failed_checkpoints(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = self
            .failures
            .iter()
            .filter_map(|(point, _)| match point {
                KillPoint::At(k) => Some(*k),
                _ => None,
            })
            .collect();
        ks.dedup();
        ks
    }

    fn fail(&mut self, point: KillPoint, failure: Failure) {
        self.failures.push((point, failure));
    }
}

impl fmt::Display for DrillReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() {
            "passed".to_string()
        } else {
            let n = self.failures.len();
            format!("FAILED ({n} failure{})", if n == 1 { "" } else { "s" })
        };
        writeln!(f, "kill drill {}: {verdict}", self.name)?;
        writeln!(
            f,
            "  checkpoints: {} in the unkilled run ({} in the last run, after the kills)",
            self.checkpoints, self.last_clean_checkpoints
        )?;
        let at = self
            .drilled
            .iter()
            .filter(|p| matches!(p, KillPoint::At(_)))
            .count();
        let which = if at == self.checkpoints {
            "every checkpoint".to_string()
        } else {
            format!(
                "an even sample of {at} of the {} checkpoints",
                self.checkpoints
            )
        };
        writeln!(
            f,
            "  kills delivered: {} of {} (before the start, at {which}, after the last)",
            self.kills_delivered,
            self.drilled.len()
        )?;
        writeln!(
            f,
            "  returned the kill's error: {}; completed with the kill after the last checkpoint: {}; \
             landed in a kill-immune section: {}",
            self.returned_kill, self.completed_after_last, self.landed_immune
        )?;
        writeln!(
            f,
            "  checkpoints run after a kill: at most {} (bound {})",
            self.most_after_kill, self.checkpoints_after_kill
        )?;
        match &self.longest_gap {
            Some(gap) => writeln!(f, "  longest gap: {gap}")?,
            None => writeln!(f, "  longest gap: none")?,
        }
        for (point, failure) in &self.failures {
            writeln!(f, "  failure, {point}: {failure}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------
// The hook: what the checkpoints call, and the runs it records.

/// What a run does at the checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Count,
    BeforeStart,
    /// Kill at the k-th checkpoint, before it reads the state.
    At(usize),
    /// Kill at the k-th checkpoint, after it read the state.
    After(usize),
}

/// One run's record, kept while it is registered.
struct Recorder {
    killer: u64,
    handle: KillHandle,
    signal: KillSignal,
    reason: String,
    clock: Clock,
    epoch: Instant,
    state: Mutex<RunState>,
}

struct RunState {
    plan: Plan,
    seen: usize,
    last_tick: u64,
    last_location: Option<&'static Location<'static>>,
    longest: Option<Gap>,
    /// Every gap's length (only for a budget check).
    gaps: Vec<u64>,
    keep_gaps: bool,
    delivered_at: Option<usize>,
    outcome: Option<KillOutcome>,
    immune: bool,
    after_kill: usize,
    started_killed: bool,
}

impl RunState {
    fn note_gap(&mut self, gap: Gap) {
        if self.keep_gaps {
            self.gaps.push(gap.length);
        }
        if self.longest.as_ref().is_none_or(|l| gap.length > l.length) {
            self.longest = Some(gap);
        }
    }
}

impl Recorder {
    fn state(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tick(&self) -> u64 {
        match &self.clock {
            Clock::Monotonic => u64::try_from(
                crate::clock::monotonic_now()
                    .saturating_duration_since(self.epoch)
                    .as_nanos(),
            )
            .unwrap_or(u64::MAX),
            Clock::Work { read, .. } => read(),
        }
    }

    fn unit(&self) -> &'static str {
        match &self.clock {
            Clock::Monotonic => NANOS,
            Clock::Work { unit, .. } => unit,
        }
    }

    /// A checkpoint arrives: count it and its gap; deliver a kill planned
    /// for before it. Returns whether a kill is planned for after it.
    fn arrive(&self, at: &'static Location<'static>) -> bool {
        let now = self.tick();
        let mut state = self.state();
        state.seen += 1;
        let n = state.seen;
        let gap = Gap {
            length: now.saturating_sub(state.last_tick),
            unit: self.unit(),
            after: (n > 1).then(|| n - 1),
            before: Some(n),
            from: state.last_location,
            to: Some(at),
        };
        state.note_gap(gap);
        state.last_tick = now;
        state.last_location = Some(at);
        if state.delivered_at.is_some() {
            // A checkpoint that still sees the kill: the error of an
            // earlier one was swallowed. (One that no longer sees it ran
            // after the kill was lost, which the output shows.) Inside a
            // kill-immune section the check passes by design: cleanup
            // (a rollback) runs there after the kill, and is no overrun.
            if self.handle.kill_signal().is_some() && !self.handle.is_kill_immune() {
                state.after_kill += 1;
            }
        } else if n == 1 && self.handle.kill_signal().is_some() {
            state.started_killed = true;
        }
        let plan = state.plan;
        drop(state);
        match plan {
            Plan::At(k) if k == n => {
                self.deliver(n);
                false
            }
            Plan::After(k) => k == n,
            _ => false,
        }
    }

    /// Sends the drill's kill, as checkpoint `n` sees it (0: before the first).
    fn deliver(&self, n: usize) {
        let immune = self.handle.is_kill_immune();
        // No lock held: the kill runs the statement's hooks, which may
        // reach a checkpoint themselves.
        let outcome = self
            .handle
            .send_kill_signal_with_reason(self.signal, &self.reason);
        let mut state = self.state();
        if state.delivered_at.is_none() {
            state.delivered_at = Some(n);
            state.outcome = Some(outcome);
            state.immune = immune;
        }
    }
}

/// A run's outcome, as the drill checks it.
struct Run<O> {
    output: Result<O, String>,
    seen: usize,
    longest: Option<Gap>,
    gaps: Vec<u64>,
    delivered: bool,
    outcome: Option<KillOutcome>,
    immune: bool,
    after_kill: usize,
    started_killed: bool,
    kill: KillError,
}

impl<O> Run<O> {
    fn over_budget(&self, budget: u64) -> usize {
        self.gaps.iter().filter(|&&g| g > budget).count()
    }
}

/// How many runs are registered: the checkpoints' fast way out.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The registered runs, by killer.
static RUNS: Mutex<Vec<Arc<Recorder>>> = Mutex::new(Vec::new());

fn runs() -> MutexGuard<'static, Vec<Arc<Recorder>>> {
    RUNS.lock().unwrap_or_else(|p| p.into_inner())
}

/// A run's place in [`RUNS`], removed when dropped (also while unwinding).
struct Registration(Arc<Recorder>);

impl Registration {
    fn new(recorder: Arc<Recorder>) -> Registration {
        let mut runs = runs();
        assert!(
            runs.iter().all(|r| r.killer != recorder.killer),
            "two kill drills on one session at once"
        );
        runs.push(Arc::clone(&recorder));
        ACTIVE.fetch_add(1, Relaxed);
        Registration(recorder)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut runs = runs();
        runs.retain(|r| !Arc::ptr_eq(r, &self.0));
        ACTIVE.fetch_sub(1, Relaxed);
    }
}

/// The hook of a checkpoint of killer `killer`, called at `at`: counts it
/// if a drill records that killer, and delivers the drill's kill there.
/// The returned value delivers a kill planned for after the checkpoint
/// when it is dropped, at the checkpoint's end.
#[inline(always)]
pub(crate) fn checkpoint(killer: u64, at: &'static Location<'static>) -> AfterCheckpoint {
    // Relaxed: a drill registers on the thread that then runs the
    // statement (or before it starts the statement's workers).
    if ACTIVE.load(Relaxed) == 0 {
        return AfterCheckpoint(None);
    }
    checkpoint_slow(killer, at)
}

#[cold]
#[inline(never)]
fn checkpoint_slow(killer: u64, at: &'static Location<'static>) -> AfterCheckpoint {
    let recorder = runs().iter().find(|r| r.killer == killer).cloned();
    AfterCheckpoint(recorder.filter(|r| r.arrive(at)))
}

/// Delivers the drill's kill after the checkpoint, when dropped.
pub(crate) struct AfterCheckpoint(Option<Arc<Recorder>>);

impl Drop for AfterCheckpoint {
    fn drop(&mut self) {
        if let Some(recorder) = self.0.take() {
            // Not while a probe's panic unwinds through the checkpoint.
            if !std::thread::panicking() {
                let n = recorder.state().seen;
                recorder.deliver(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_spreads_evenly_and_keeps_the_first_and_the_last() {
        assert_eq!(sample(5, 64).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(sample(100, 5).collect::<Vec<_>>(), [1, 25, 50, 75, 100]);
        assert_eq!(sample(3, 2).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(sample(0, 2).count(), 0);
    }

    /// Shows its text as it is.
    struct Raw(String);

    impl std::fmt::Debug for Raw {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    #[test]
    fn an_output_is_cut_to_160_bytes_at_a_char_boundary() {
        let exact = "a".repeat(160);
        assert_eq!(super::short(&Raw(exact.clone())), exact);
        assert_eq!(super::short(&Raw("a".repeat(200))), "a".repeat(160) + "…");
        // `é` takes bytes 159 and 160: the cut goes back to 159.
        let wide = "a".repeat(159) + "é" + &"b".repeat(10);
        assert_eq!(super::short(&Raw(wide)), "a".repeat(159) + "…");
    }

    #[test]
    fn a_panic_message_is_read_from_either_payload() {
        let owned: Box<dyn std::any::Any + Send> = Box::new(String::from("owned"));
        let borrowed: Box<dyn std::any::Any + Send> = Box::new("borrowed");
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(super::panic_message(&*owned), "owned");
        assert_eq!(super::panic_message(&*borrowed), "borrowed");
        assert_eq!(super::panic_message(&*other), "a panic without a message");
    }

    #[test]
    fn a_drill_shows_its_settings() {
        let drill = super::Drill::new("scan").max_kills(8);
        let shown = format!("{drill:?}");
        assert!(shown.starts_with("Drill { name: \"scan\""), "{shown}");
        assert!(shown.contains("max_kills: 8"), "{shown}");
    }
}
