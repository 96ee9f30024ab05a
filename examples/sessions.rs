//! sqlkiller on a real engine: SQLite sessions running genuinely long
//! statements, stopped by `KILL QUERY`, `max_execution_time` and a
//! dead-client probe, wired the way a SQL server would wire them.
//!
//! - SQLite's progress handler calls `handle_signal`: the checkpoint.
//! - The session's cancel hook calls SQLite's interrupt handle, so a kill
//!   stops the statement even between checkpoints.
//! - `start_statement` and `end_statement` bracket every statement; between
//!   them the session is idle, and `end_statement` returns the kill.
//! - The crate's `ProcessList` holds the sessions; an admin thread reads
//!   `SHOW PROCESSLIST`, waits, and sends `KILL QUERY ID <n>` for exactly
//!   the statement it showed, and looks for stuck kills.
//! - Half the sessions run with `max_execution_time`, from the crate's
//!   deadlines.
//! - A liveness probe serves a client that hangs up.
//! - A kill-immune section wraps each COMMIT.
//!
//! Run: `cargo run --release --example sessions [-- --duration 10 --sessions 4 --seed 1]`.
//! Prints a progress line, then a summary; exits 1 if an invariant broke.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};
use sqlkiller::{
    KillError, KillOutcome, KillSignal, ProcessList, ProcessListError, SqlKiller, StatementId,
};

const USAGE: &str = "usage: sessions [--duration SECONDS] [--sessions N] [--seed N]
  --duration SECONDS  how long to run (default 10, at most 3600)
  --sessions N        concurrent SQL sessions (default 4, 1 to 64)
  --seed N            seed of the workload (default 1)";

/// `max_execution_time` of the sessions that have one.
const MAX_EXECUTION_TIME: Duration = Duration::from_millis(400);
/// How often the probe asks whether the client is still there.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

struct Args {
    duration: Duration,
    sessions: usize,
    seed: u64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        duration: Duration::from_secs(10),
        sessions: 4,
        seed: 1,
    };
    while let Some(flag) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let text = args.next().ok_or(format!("{name} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{name}: not a number: {text:?}"))
        };
        match flag.as_str() {
            "--duration" => match value("--duration")? {
                secs @ 1..=3600 => parsed.duration = Duration::from_secs(secs),
                secs => return Err(format!("--duration: {secs} is out of range")),
            },
            "--sessions" => match value("--sessions")? {
                n @ 1..=64 => parsed.sessions = n as usize,
                n => return Err(format!("--sessions: {n} is out of range")),
            },
            "--seed" => parsed.seed = value("--seed")?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(parsed)
}

/// xorshift64: a deterministic workload, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What the sessions and the admin report, checked at the end.
#[derive(Default)]
struct Report {
    statements: u64,
    completed: u64,
    commits: u64,
    /// Statements that ended killed: by MySQL error code.
    kills_by_code: BTreeMap<u16, u64>,
    /// Kill (the cancel hook ran) → the query returned, per stopped query.
    latencies: Vec<Duration>,
    /// Queries a checkpoint stopped before the kill's hook had even run:
    /// the kill is visible to `handle_signal` before its side effects.
    stopped_before_hook: u64,
    /// Kills that landed after the work was done (in a COMMIT's kill-immune
    /// section, or as the statement finished): reported, nothing to stop.
    reported_after_work: u64,
    /// Kills that landed after a statement's last checkpoint:
    /// `end_statement` returned them.
    cleared_by_reset: u64,
    /// Every statement that ended killed, with the code it returned.
    killed: HashMap<(u64, StatementId), u16>,
    /// `KILL QUERY`s that returned `Sent`, and those refused as `Stale`.
    admin_sent: Vec<(u64, StatementId)>,
    stale_refused: u64,
    /// `KILL QUERY ID`s that found the session idle between statements.
    idle_refused: u64,
    already_killed: u64,
    /// Killed statements the admin saw still running 100 ms after their
    /// kill (`ProcessList::stuck`).
    stuck_seen: u64,
    hang_ups: u64,
    violations: Vec<String>,
}

/// One client connection's session.
struct Session {
    conn_id: u64,
    db: Connection,
    killer: Arc<SqlKiller>,
    client_alive: Arc<AtomicBool>,
    has_deadline: bool,
    rng: Rng,
    /// When the session's cancel hook last ran (cleared at each start).
    hook_ran: Arc<Mutex<Option<Instant>>>,
}

/// What a statement recorded, for the `end_statement` that ends it.
struct Last {
    stmt: StatementId,
    started: Instant,
    /// The signal it reported, if it was killed.
    reported: Option<KillSignal>,
}

impl Session {
    fn open(
        conn_id: u64,
        seed: u64,
        list: &ProcessList,
        clients: &Mutex<HashMap<u64, Arc<AtomicBool>>>,
    ) -> Session {
        let mut db = Connection::open_in_memory().expect("open SQLite");
        db.execute_batch(
            "CREATE TABLE t(x INTEGER PRIMARY KEY, y INTEGER);
             WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000)
             INSERT INTO t SELECT x, x * 7919 % 1000 FROM c;
             CREATE TABLE log(id INTEGER PRIMARY KEY, v INTEGER);",
        )
        .expect("set up SQLite");
        let killer = Arc::new(list.register(conn_id).expect("a new connection id"));
        // The checkpoint: SQLite calls this every 1,000 virtual-machine steps.
        let check = Arc::clone(&killer);
        db.progress_handler(1_000, Some(move || check.handle_signal().is_err()))
            .expect("progress handler");
        let has_deadline = conn_id.is_multiple_of(2);
        if has_deadline {
            killer.set_max_execution_time(Some(MAX_EXECUTION_TIME));
        }
        // The liveness probe: a client that hangs up is noticed within an interval.
        let client_alive = Arc::new(AtomicBool::new(true));
        killer.set_probe_interval(PROBE_INTERVAL);
        let alive = Arc::clone(&client_alive);
        let _probe = killer.set_connection_alive_probe(move || alive.load(SeqCst));
        clients
            .lock()
            .unwrap()
            .insert(conn_id, Arc::clone(&client_alive));
        // The cancel hook of every statement: a kill interrupts SQLite at
        // once, and stamps the time.
        let interrupt = Arc::new(db.get_interrupt_handle());
        let hook_ran: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (stamp, stop) = (Arc::clone(&hook_ran), Arc::clone(&interrupt));
        let _ = killer.set_session_cancel_hook(move |_signal| {
            *stamp.lock().unwrap() = Some(Instant::now());
            stop.interrupt();
        });
        Session {
            conn_id,
            db,
            killer,
            client_alive,
            has_deadline,
            rng: Rng(seed ^ conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            hook_ran,
        }
    }

    /// Runs statements until `until`.
    fn run(mut self, until: Instant, report: &Mutex<Report>) {
        while Instant::now() < until {
            self.statement(report);
        }
    }

    /// The end of a statement: `end_statement`, then check the statement
    /// against the kill it returned. A kill that landed after the last
    /// checkpoint is reported here; one the statement reported must be
    /// returned here. The hook ran if and only if it was killed, and before
    /// `end_statement` returned (a checkpoint may stop the query before the
    /// hook runs: `end_statement` waits for it).
    fn end(&mut self, last: Last, report: &Mutex<Report>) {
        let cleared = self.killer.end_statement().err().map(|e| e.signal());
        let reset_returned = Instant::now();
        let hook_ran = self.hook_ran.lock().unwrap().take();
        let mut report = report.lock().unwrap();
        let stmt = last.stmt;
        match (last.reported, cleared) {
            (None, None) => {}
            (Some(reported), Some(cleared)) if reported == cleared => {}
            (None, Some(cleared)) => {
                // Killed after its last checkpoint: the reset reports it.
                report.cleared_by_reset += 1;
                let err = KillError::new(cleared, self.conn_id, "");
                let at = hook_ran.unwrap_or(reset_returned);
                self.killed(&mut report, stmt, &err, last.started, at);
            }
            (reported, cleared) => report.violations.push(format!(
                "conn {}: {stmt} reported {reported:?}, its end returned {cleared:?}",
                self.conn_id
            )),
        }
        match hook_ran {
            None if cleared.is_some() => report.violations.push(format!(
                "conn {}: {stmt} was killed, and its hook had not run when its end returned",
                self.conn_id
            )),
            Some(_) if cleared.is_none() => report.violations.push(format!(
                "conn {}: {stmt} was not killed, yet its hook ran",
                self.conn_id
            )),
            Some(at) if at > reset_returned => report.violations.push(format!(
                "conn {}: {stmt}'s hook ran after its end returned",
                self.conn_id
            )),
            _ => {}
        }
    }

    fn statement(&mut self, report_lock: &Mutex<Report>) {
        let report = report_lock;
        let started = Instant::now();
        let stmt = self
            .killer
            .start_statement()
            .expect("no session is killed as a whole here");
        let killed_at = Arc::clone(&self.hook_ran);
        let result = match self.rng.below(3) {
            0 => self.recursive_count(),
            1 => self.big_join(),
            _ => self.write_and_commit(report),
        };
        let stopped = Instant::now();
        let check = self.killer.handle_signal();
        let now = Instant::now(); // no earlier than any kill the check saw
        let mut report = report.lock().unwrap();
        report.statements += 1;
        // What the statement reported, whatever else went wrong: its reset
        // must clear exactly that.
        let reported = check.as_ref().err().map(KillError::signal);
        match (result, check) {
            (Ok(()), Ok(())) => report.completed += 1,
            (Ok(()), Err(err)) => {
                report.reported_after_work += 1;
                let at = killed_at.lock().unwrap().unwrap_or(now);
                self.killed(&mut report, stmt, &err, started, at);
            }
            (Err(QueryError::Interrupted), Err(err)) => {
                let stamp = *killed_at.lock().unwrap();
                match stamp {
                    // The hook stamped before the query returned.
                    Some(at) if at <= stopped => report.latencies.push(stopped - at),
                    // A checkpoint saw the kill first.
                    _ => report.stopped_before_hook += 1,
                }
                self.killed(&mut report, stmt, &err, started, stamp.unwrap_or(now));
            }
            (Err(QueryError::Interrupted), Ok(())) => report.violations.push(format!(
                "conn {}: {stmt} was interrupted without a kill",
                self.conn_id
            )),
            (Err(QueryError::Sql(e)), _) => report.violations.push(format!(
                "conn {}: {stmt}: unexpected SQL error {e}",
                self.conn_id
            )),
        }
        drop(report);
        let last = Last {
            stmt,
            started,
            reported,
        };
        self.end(last, report_lock);
    }

    /// Records a killed statement and checks that its error fits its cause.
    /// `killed_at`: when its hook ran or, if it had not yet, when the query
    /// stopped (no earlier than the kill either way).
    fn killed(
        &self,
        report: &mut Report,
        stmt: StatementId,
        err: &KillError,
        started: Instant,
        killed_at: Instant,
    ) {
        let code = err.code();
        *report.kills_by_code.entry(code).or_default() += 1;
        report.killed.insert((self.conn_id, stmt), code);
        if err.signal() == KillSignal::MaxExecTimeExceeded {
            let ran = killed_at.saturating_duration_since(started);
            if !self.has_deadline || ran < MAX_EXECUTION_TIME {
                report.violations.push(format!(
                    "conn {}: {stmt} killed by a deadline after {ran:?}",
                    self.conn_id
                ));
            }
        }
        if !self.client_alive.load(SeqCst) {
            // The client that hung up is gone; the next statement is a new client's.
            self.client_alive.store(true, SeqCst);
        }
    }

    /// A recursive CTE of a few million rows (about 0.1 to 1 s).
    fn recursive_count(&mut self) -> Result<(), QueryError> {
        let n = 500_000 + self.rng.below(6_000_000);
        let sql = format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n})
             SELECT sum(x) FROM c"
        );
        self.db
            .query_row(&sql, [], |row| row.get::<_, i64>(0))
            .map(drop)
            .map_err(QueryError::from)
    }

    /// A join of two slices of `t` without an index to use.
    fn big_join(&mut self) -> Result<(), QueryError> {
        let rows = 300 + self.rng.below(2_200);
        let sql = format!(
            "SELECT count(*) FROM t a, t b
             WHERE a.x <= {rows} AND b.x <= {rows} AND (a.y + b.y) % 97 = 1"
        );
        self.db
            .query_row(&sql, [], |row| row.get::<_, i64>(0))
            .map(drop)
            .map_err(QueryError::from)
    }

    /// A short write, then its COMMIT inside a kill-immune section: once the
    /// COMMIT starts, a kill must not turn it into an error.
    fn write_and_commit(&mut self, report: &Mutex<Report>) -> Result<(), QueryError> {
        self.db.execute_batch("BEGIN")?;
        let work = (|| {
            let v = self.rng.below(1_000) as i64;
            self.db.execute("INSERT INTO log(v) VALUES (?1)", [v])?;
            self.db
                .query_row("SELECT count(*) FROM log WHERE v % 3 = 1", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(drop)
        })();
        if let Err(e) = work {
            // The kill's hook may interrupt the ROLLBACK too: repeat it.
            for _ in 0..3 {
                if self.db.is_autocommit() {
                    break;
                }
                let _ = self.db.execute_batch("ROLLBACK");
            }
            return Err(e.into());
        }
        let commit = self.killer.kill_immune();
        let committed = self.db.execute_batch("COMMIT");
        commit.release();
        committed?;
        report.lock().unwrap().commits += 1;
        Ok(())
    }
}

enum QueryError {
    Interrupted,
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => QueryError::Interrupted,
            _ => QueryError::Sql(e),
        }
    }
}

/// The admin: `KILL QUERY ID` of the statement `SHOW PROCESSLIST`
/// showed, a look for stuck kills, and now and then a client that hangs up.
fn admin(
    until: Instant,
    seed: u64,
    list: &ProcessList,
    clients: &Mutex<HashMap<u64, Arc<AtomicBool>>>,
    report: &Mutex<Report>,
) {
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(20 + rng.below(150)));
        let stuck = list.stuck(Duration::from_millis(100)).len() as u64;
        report.lock().unwrap().stuck_seen += stuck;
        let rows = list.snapshot(); // SHOW PROCESSLIST
        let row = &rows[rng.below(rows.len() as u64) as usize];
        if rng.below(8) == 0 {
            let alive = Arc::clone(&clients.lock().unwrap()[&row.conn_id]);
            alive.store(false, SeqCst); // the client hangs up
            report.lock().unwrap().hang_ups += 1;
            continue;
        }
        let (conn_id, shown) = (row.conn_id, row.statement);
        thread::sleep(Duration::from_millis(rng.below(40))); // the DBA types KILL
        let killed = match shown {
            Some(stmt) => list.kill_query_id(stmt.as_u64(), KillSignal::QueryInterrupted, "admin"),
            None => Err(ProcessListError::NoSuchQuery(0)), // listed idle
        };
        let mut report = report.lock().unwrap();
        match killed {
            Ok(kill) => match (kill.outcome, shown) {
                (KillOutcome::Sent, Some(stmt)) => report.admin_sent.push((conn_id, stmt)),
                (KillOutcome::Stale, _) => report.stale_refused += 1,
                _ => report.already_killed += 1,
            },
            // The statement shown has ended, or the session was listed idle.
            Err(ProcessListError::NoSuchQuery(_)) if shown.is_none() => report.idle_refused += 1,
            Err(_) => report.stale_refused += 1,
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("sessions: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} SQLite sessions for {:?} (seed {}): KILL QUERY ID from an admin thread, \
         max_execution_time {MAX_EXECUTION_TIME:?} on even connections, clients that hang up",
        args.sessions, args.duration, args.seed
    );
    let start = Instant::now();
    let until = start + args.duration;
    let report = Mutex::new(Report::default());
    let list = ProcessList::new();
    let clients = Mutex::new(HashMap::new());
    let sessions: Vec<Session> = (1..=args.sessions as u64)
        .map(|id| Session::open(id, args.seed, &list, &clients))
        .collect();
    let done = AtomicU64::new(0);
    thread::scope(|s| {
        for session in sessions {
            let (report, done) = (&report, &done);
            s.spawn(move || {
                session.run(until, report);
                done.fetch_add(1, SeqCst);
            });
        }
        s.spawn(|| admin(until, args.seed, &list, &clients, &report));
        while done.load(SeqCst) < args.sessions as u64 {
            thread::sleep(Duration::from_millis(250));
            let r = report.lock().unwrap();
            let kills: u64 = r.kills_by_code.values().sum();
            eprint!(
                "\r{:5.1} s  statements {:5}  kills {:4}  stale kills refused {:3}  violations {}",
                start.elapsed().as_secs_f64(),
                r.statements,
                kills,
                r.stale_refused,
                r.violations.len()
            );
        }
        eprintln!();
    });

    let mut r = report.into_inner().unwrap();
    for (conn_id, stmt) in &r.admin_sent {
        match r.killed.get(&(*conn_id, *stmt)) {
            Some(1317) => {}
            other => r.violations.push(format!(
                "KILL QUERY {conn_id} of {stmt} returned Sent, but the statement ended with {other:?}"
            )),
        }
    }
    r.latencies.sort();
    println!("statements run:         {}", r.statements);
    println!(
        "  completed:            {} ({} COMMITs in kill-immune sections)",
        r.completed, r.commits
    );
    println!("kills, by signal:");
    for (code, count) in &r.kills_by_code {
        let signal = match code {
            1317 => "QueryInterrupted (KILL QUERY, or the client hung up)",
            3024 => "MaxExecTimeExceeded (max_execution_time)",
            _ => "other",
        };
        println!("  error {code} {signal}: {count}");
    }
    println!(
        "  of which reported after the work was done (COMMIT, or just finished): {}",
        r.reported_after_work
    );
    println!(
        "  of which landed after the last checkpoint (returned by end_statement): {}",
        r.cleared_by_reset
    );
    println!(
        "KILL QUERY sent:        {} (clients hung up: {})",
        r.admin_sent.len(),
        r.hang_ups
    );
    println!(
        "stale kills refused:    {} (the statement shown had ended before the KILL)",
        r.stale_refused
    );
    println!(
        "idle sessions skipped:  {} (listed between statements: nothing to kill)",
        r.idle_refused
    );
    println!(
        "stuck kills seen:       {} (killed 100 ms ago and still running)",
        r.stuck_seen
    );
    println!(
        "kills that lost a race: {} (AlreadyKilled)",
        r.already_killed
    );
    println!(
        "kill -> query stopped:  p50 {:?}, p99 {:?} ({} queries stopped mid-run; \
         {} before their hook ran)",
        percentile(&r.latencies, 0.5),
        percentile(&r.latencies, 0.99),
        r.latencies.len(),
        r.stopped_before_hook
    );
    println!("invariant violations:   {}", r.violations.len());
    for v in r.violations.iter().take(20) {
        println!("  {v}");
    }
    if r.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
