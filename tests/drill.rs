//! The kill drill (`sqlkiller::drill`, the `testing` feature): it finds
//! the bugs planted in a test engine (a loop without a checkpoint, an
//! error swallowed at one checkpoint, a partial write on kill, a kill
//! before the start that the engine clears) and passes on the same engine
//! without them, and on real SQLite work: a long SELECT and an
//! INSERT … SELECT stopped through SQLite's progress handler. Every report
//! is printed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use rusqlite::{Connection, ErrorCode};
use sqlkiller::drill::{Drill, DrillReport, Failure, KillPoint, Statement};
use sqlkiller::{KillError, KillHandle, SqlKiller};

/// The bugs the test engine can have.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Bug {
    None,
    /// A sort of 5,000 rows between the scan and the write, without a checkpoint.
    LoopWithoutCheckpoint,
    /// The checkpoint that opens the write phase logs the error and goes on.
    SwallowedBeforeTheWrite,
    /// The write appends each batch to the table at once, instead of at commit.
    PartialWriteOnKill,
    /// The pipeline resets the killer when it starts (Databend #11302):
    /// a kill that landed before is lost.
    ResetsWhenThePipelineStarts,
    /// The statement boundary forgets to reset the killer: a kill of one
    /// statement is still there when the next one starts.
    NoResetAtTheBoundary,
    /// Not a bug: the commit flushes two pages, each with a checkpoint,
    /// inside a kill-immune section (past the point of no return).
    ImmuneCommit,
    /// Not a bug: a kill in the write phase rolls back inside a kill-immune
    /// section whose cleanup has three checkpoints of its own.
    ImmuneRollback,
}

/// The test engine: `INSERT INTO target SELECT … FROM source`, 200 rows,
/// a checkpoint every 20 rows scanned, one before the write, and one every
/// 50 rows written: 15 checkpoints. The write goes to a transaction that
/// makes the rows visible only at commit.
struct InsertSelect {
    session: SqlKiller,
    bug: Bug,
    /// The table as the next statement sees it.
    target: Vec<u64>,
    /// Rows touched: the work clock.
    work: Arc<AtomicU64>,
}

const ROWS: u64 = 200;

impl InsertSelect {
    fn new(bug: Bug) -> InsertSelect {
        InsertSelect {
            session: SqlKiller::new(),
            bug,
            target: Vec::new(),
            work: Arc::default(),
        }
    }

    fn step(&self) {
        self.work.fetch_add(1, Relaxed);
    }

    fn execute(&mut self) -> Result<usize, KillError> {
        if self.bug == Bug::ResetsWhenThePipelineStarts {
            self.session.reset();
        }
        // Scan.
        let mut rows = Vec::new();
        for row in 0..ROWS {
            if row % 20 == 0 {
                self.session.handle_signal()?;
            }
            self.step();
            rows.push(row * 3);
        }
        // Sort.
        if self.bug == Bug::LoopWithoutCheckpoint {
            for _ in 0..5_000 {
                self.step();
            }
        }
        rows.reverse();
        // Write, in a transaction.
        match self.session.handle_signal() {
            Err(_) if self.bug == Bug::SwallowedBeforeTheWrite => {} // "logged"
            checked => checked?,
        }
        let mut transaction = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            if i % 50 == 0 {
                // On a kill the transaction is dropped: rolled back.
                if let Err(kill) = self.session.handle_signal() {
                    if self.bug == Bug::ImmuneRollback {
                        let _rollback = self.session.kill_immune();
                        for _page in 0..3 {
                            let _ = self.session.handle_signal(); // passes in here
                        }
                    }
                    return Err(kill);
                }
            }
            self.step();
            if self.bug == Bug::PartialWriteOnKill {
                self.target.push(*row);
            } else {
                transaction.push(*row);
            }
        }
        if self.bug == Bug::ImmuneCommit {
            let _commit = self.session.kill_immune();
            for _page in 0..2 {
                self.session.handle_signal()?; // never fails in here
            }
            self.target.append(&mut transaction);
            return Ok(rows.len());
        }
        self.target.append(&mut transaction); // commit
        Ok(rows.len())
    }
}

impl Statement for InsertSelect {
    type Output = Result<usize, KillError>;

    fn session(&self) -> KillHandle {
        self.session.handle()
    }

    fn begin(&mut self) {
        if self.bug != Bug::NoResetAtTheBoundary {
            self.session.reset();
        }
        self.target.clear();
    }

    fn run(&mut self) -> Self::Output {
        self.execute()
    }

    fn is_kill(&self, output: &Self::Output, kill: &KillError) -> bool {
        output.as_ref().err() == Some(kill)
    }

    fn invariant(&mut self, output: &Self::Output) -> Result<(), String> {
        let expected = match output {
            Ok(_) => ROWS as usize,
            Err(_) => 0,
        };
        if self.target.len() == expected {
            Ok(())
        } else {
            Err(format!(
                "{} rows in the target after {output:?}: a partial write",
                self.target.len()
            ))
        }
    }
}

/// The drill of the test engine: rows as the work clock, a budget of 100
/// rows between checkpoints.
fn drill(bug: Bug) -> DrillReport {
    let mut statement = InsertSelect::new(bug);
    let work = Arc::clone(&statement.work);
    let report = Drill::new(format!("test engine, {bug:?}"))
        .work_clock("rows", move || work.load(Relaxed), Some(100))
        .run(&mut statement);
    eprintln!("{report}");
    println!("{report}");
    report
}

/// The failures of a report, without where they were.
fn failures(report: &DrillReport) -> Vec<&Failure> {
    report.failures.iter().map(|(_, failure)| failure).collect()
}

#[test]
fn the_drill_passes_a_correct_engine() {
    let report = drill(Bug::None);
    assert!(report.passed(), "{report}");
    assert_eq!(report.checkpoints, 15);
    assert_eq!(report.last_clean_checkpoints, 15);
    // Before the start, at each of the 15 checkpoints, after the last.
    assert_eq!(report.kills_delivered, 17);
    assert_eq!(report.returned_kill, 16);
    assert_eq!(report.completed_after_last, 1);
    assert_eq!(report.most_after_kill, 0);
    // The longest stretch: 50 rows written, first between checkpoints 12 and 13.
    let gap = report.longest_gap.as_ref().unwrap();
    assert_eq!(
        (gap.length, gap.after, gap.before),
        (50, Some(12), Some(13))
    );
    assert!(report.to_string().contains("passed"));
}

#[test]
fn the_drill_finds_a_loop_without_a_checkpoint() {
    let report = drill(Bug::LoopWithoutCheckpoint);
    let gap = report.longest_gap.as_ref().unwrap();
    // The sort sits between the last scan checkpoint (10, then 20 rows
    // scanned) and the checkpoint before the write (11).
    assert_eq!(
        (gap.length, gap.after, gap.before),
        (5_020, Some(10), Some(11))
    );
    assert_eq!(
        failures(&report),
        [&Failure::GapOverBudget {
            gap: gap.clone(),
            budget: 100,
            gaps_over: 1
        }]
    );
    // Where: the two checkpoints' lines in this file.
    let (from, to) = (gap.from.unwrap(), gap.to.unwrap());
    assert_eq!(from.file(), file!());
    assert!(from.line() < to.line(), "{from} -> {to}");
    assert!(report.to_string().contains("FAILED"), "{report}");
}

#[test]
fn the_drill_finds_an_error_swallowed_at_one_checkpoint() {
    let report = drill(Bug::SwallowedBeforeTheWrite);
    // Checkpoint 11 logs the kill and goes on; checkpoint 12 stops it.
    assert_eq!(report.failed_checkpoints(), [11]);
    assert_eq!(
        report.failures,
        [(
            KillPoint::At(11),
            Failure::Overran {
                further: 1,
                bound: 0
            }
        )]
    );
}

#[test]
fn the_drill_finds_a_partial_write_on_kill() {
    let report = drill(Bug::PartialWriteOnKill);
    // Killed at a checkpoint of the write, the batches before it stay:
    // 50, 100 and 150 rows at checkpoints 13, 14 and 15. A kill in the
    // scan or at its first write checkpoint leaves nothing.
    assert_eq!(report.failed_checkpoints(), [13, 14, 15]);
    for (point, failure) in &report.failures {
        assert!(matches!(point, KillPoint::At(_)), "{point}");
        assert!(
            matches!(failure, Failure::Invariant(m) if m.contains("a partial write")),
            "{failure}"
        );
    }
}

#[test]
fn the_drill_finds_a_kill_before_the_start_that_the_pipeline_clears() {
    let report = drill(Bug::ResetsWhenThePipelineStarts);
    assert_eq!(report.failures.len(), 1, "{report}");
    let (point, failure) = &report.failures[0];
    assert_eq!(*point, KillPoint::BeforeStart);
    assert!(
        matches!(failure, Failure::NotKilled(output) if output == "Ok(200)"),
        "{failure}"
    );
}

/// Catches: a drill that counts the checkpoints of a rollback inside a
/// kill-immune section, after the kill, as an error swallowed (they pass
/// by design there).
#[test]
fn the_drill_passes_a_rollback_with_checkpoints_inside_a_kill_immune_section() {
    let report = drill(Bug::ImmuneRollback);
    assert!(report.passed(), "{report}");
    assert_eq!(report.most_after_kill, 0);
}

#[test]
fn the_drill_lets_a_statement_complete_when_its_kill_lands_inside_a_kill_immune_commit() {
    let report = drill(Bug::ImmuneCommit);
    assert!(report.passed(), "{report}");
    assert_eq!(report.checkpoints, 17);
    // The two commit checkpoints, and the kill after the last (also inside).
    assert_eq!(report.landed_immune, 3);
    assert_eq!(report.completed_after_last, 1);
    assert_eq!(report.returned_kill, 16);
}

#[test]
fn the_drill_finds_a_kill_that_leaks_into_the_next_statement() {
    let report = drill(Bug::NoResetAtTheBoundary);
    // The counting run and the kill before the start pass; every later run
    // starts with the kill of the run before it, and the drill's own kill
    // is refused (AlreadyKilled).
    assert!(!report.passed(), "{report}");
    let leaked: Vec<_> = report
        .failures
        .iter()
        .filter(|(_, failure)| *failure == Failure::StartedKilled)
        .map(|(point, _)| *point)
        .collect();
    assert_eq!(leaked.first(), Some(&KillPoint::At(1)), "{report}");
    assert!(leaked.contains(&KillPoint::AfterLast(15)), "{report}");
    assert!(
        leaked.contains(&KillPoint::Unkilled),
        "the last run: {report}"
    );
}

/// A statement split over two workers, each checking on its own thread
/// through a handle, 10 checkpoints each.
struct TwoWorkers {
    session: SqlKiller,
}

impl Statement for TwoWorkers {
    type Output = Result<u64, KillError>;

    fn session(&self) -> KillHandle {
        self.session.handle()
    }

    fn begin(&mut self) {
        self.session.reset();
    }

    fn run(&mut self) -> Self::Output {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2u64)
                .map(|w| {
                    let handle = self.session.handle();
                    scope.spawn(move || {
                        let mut sum = 0;
                        for chunk in 0..10 {
                            handle.check_signal()?;
                            sum += w * 10 + chunk;
                        }
                        Ok(sum)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap())
                .sum::<Result<u64, KillError>>()
        })
    }

    fn is_kill(&self, output: &Self::Output, kill: &KillError) -> bool {
        output.as_ref().err() == Some(kill)
    }
}

#[test]
fn the_drill_counts_the_checkpoints_of_worker_threads() {
    // The worker that did not meet the kill may check once more before it
    // sees it: one checkpoint after the kill is allowed, per other worker.
    let report = Drill::new("two workers")
        .checkpoints_after_kill(1)
        .run(&mut TwoWorkers {
            session: SqlKiller::new(),
        });
    eprintln!("{report}");
    println!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.checkpoints, 20);
    assert_eq!(report.kills_delivered, 22);
}

// ---------------------------------------------------------------------
// Real SQLite work, stopped through the progress handler.

/// What a statement on the SQLite session returns: its rows or count, or
/// the killer's error (the server maps SQLite's interrupt to it).
type Outcome = Result<i64, StatementError>;

#[derive(Debug, PartialEq)]
enum StatementError {
    Killed(KillError),
    Sql(String),
}

/// A SQLite session: a connection whose progress handler is the
/// checkpoint, every 1,000 virtual machine instructions.
struct SqliteStatement {
    session: SqlKiller,
    conn: Connection,
    sql: &'static str,
    /// The rows `dst` must hold after a completed run.
    completed_rows: i64,
}

impl SqliteStatement {
    fn new(sql: &'static str, completed_rows: i64) -> SqliteStatement {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE src(x INTEGER PRIMARY KEY, y INTEGER);
             WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 20000)
             INSERT INTO src SELECT x, x * 7 % 1000 FROM n;
             CREATE TABLE dst(x INTEGER, y INTEGER);",
        )
        .unwrap();
        SqliteStatement {
            session: SqlKiller::new(),
            conn,
            sql,
            completed_rows,
        }
    }

    fn rows_in_dst(&self) -> i64 {
        self.conn
            .query_row("SELECT count(*) FROM dst", [], |row| row.get(0))
            .unwrap()
    }
}

impl Statement for SqliteStatement {
    type Output = Outcome;

    fn session(&self) -> KillHandle {
        self.session.handle()
    }

    fn begin(&mut self) {
        self.conn.execute("DELETE FROM dst", []).unwrap();
        self.session.start_statement().unwrap();
        let session = self.session.handle();
        // The checkpoint. A handle's check is the owner's here: the
        // statement runs on the owner's thread.
        self.conn
            .progress_handler(1_000, Some(move || session.check_signal().is_err()))
            .unwrap();
    }

    fn run(&mut self) -> Outcome {
        let result = if self.sql.starts_with("SELECT") {
            self.conn
                .query_row(self.sql, [], |row| row.get::<_, i64>(0))
        } else {
            self.conn.execute(self.sql, []).map(|n| n as i64)
        };
        // The statement's end: the kill's error, with its reason, if it
        // was killed (even after its last checkpoint).
        let ended = self.session.end_statement();
        match (result, ended) {
            // Interrupted by the progress handler: the client gets the
            // killer's error.
            (Err(err), Err(killed))
                if err.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) =>
            {
                Err(StatementError::Killed(killed))
            }
            (Err(err), _) => Err(StatementError::Sql(err.to_string())),
            // Done before the kill could stop it (it landed after the last
            // checkpoint): the work stands, and the client is told so.
            (Ok(n), _) => Ok(n),
        }
    }

    fn is_kill(&self, output: &Outcome, kill: &KillError) -> bool {
        matches!(output, Err(StatementError::Killed(err)) if err.code() == kill.code())
    }

    fn invariant(&mut self, output: &Outcome) -> Result<(), String> {
        // Read without the checkpoint: the session may still be killed.
        self.conn.progress_handler(0, None::<fn() -> bool>).unwrap();
        let rows = self.rows_in_dst();
        let expected = match output {
            Ok(_) if self.sql.starts_with("INSERT") => self.completed_rows,
            _ => 0,
        };
        if rows != expected {
            return Err(format!("dst holds {rows} rows after {output:?}"));
        }
        if !self.conn.is_autocommit() {
            return Err("a transaction was left open".into());
        }
        Ok(())
    }
}

fn drill_sqlite(name: &str, sql: &'static str, completed_rows: i64) -> DrillReport {
    let mut statement = SqliteStatement::new(sql, completed_rows);
    let report = Drill::new(name).max_kills(64).run(&mut statement);
    eprintln!("{report}");
    println!("{report}");
    report
}

#[test]
fn the_drill_passes_a_long_select_on_sqlite() {
    let report = drill_sqlite(
        "SQLite: long SELECT",
        "SELECT count(*) FROM src a JOIN src b ON b.y = a.y WHERE a.x % 500 = 0",
        0,
    );
    assert!(report.passed(), "{report}");
    assert!(report.checkpoints > 64, "{report}");
    assert_eq!(report.kills_delivered, 66, "{report}");
}

#[test]
fn the_drill_passes_an_insert_select_on_sqlite() {
    let report = drill_sqlite(
        "SQLite: INSERT … SELECT",
        "INSERT INTO dst SELECT a.x, b.y FROM src a JOIN src b ON b.x = a.y + 1 WHERE a.x % 2 = 0",
        10_000,
    );
    assert!(report.passed(), "{report}");
    assert!(report.checkpoints > 64, "{report}");
    assert_eq!(report.kills_delivered, 66, "{report}");
}

/// Replaces the line and column of every `tests/drill.rs:L:C` with `L:C`,
/// so a report can be compared whole.
fn without_line_numbers(report: &str) -> String {
    let mut out = String::new();
    let mut rest = report;
    while let Some(at) = rest.find("drill.rs:") {
        out.push_str(&rest[..at + "drill.rs:".len()]);
        rest = &rest[at + "drill.rs:".len()..];
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ':'))
            .unwrap_or(rest.len());
        out.push_str("L:C");
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// Catches (mutation testing): a report that misstates what the drill
/// found: its failures, kill points, gaps and their unit, in the text an
/// integrator reads.
#[test]
fn the_report_says_what_was_found_where() {
    let swallowed = without_line_numbers(&drill(Bug::SwallowedBeforeTheWrite).to_string());
    assert_eq!(
        swallowed,
        "kill drill test engine, SwallowedBeforeTheWrite: FAILED (1 failure)
  checkpoints: 15 in the unkilled run (15 in the last run, after the kills)
  kills delivered: 17 of 17 (before the start, at every checkpoint, after the last)
  returned the kill's error: 16; completed with the kill after the last checkpoint: 1; landed in a kill-immune section: 0
  checkpoints run after a kill: at most 1 (bound 0)
  longest gap: 50 rows, from checkpoint 12 to checkpoint 13 (tests/drill.rs:L:C -> tests/drill.rs:L:C)
  failure, kill at checkpoint 11: ran 1 more checkpoints after the kill (bound 0): its error was swallowed
"
    );
    let no_checkpoint = without_line_numbers(&drill(Bug::LoopWithoutCheckpoint).to_string());
    assert!(
        no_checkpoint.contains(
            "  failure, unkilled run: 1 gap(s) over the budget of 100 rows; the longest: 5020 rows, \
             from checkpoint 10 to checkpoint 11 (tests/drill.rs:L:C -> tests/drill.rs:L:C)"
        ),
        "{no_checkpoint}"
    );
}
