//! The kill drill (`sqlkiller::drill`, issue 17) on this server's own
//! statement path: a session opened with `kill::open`, as a connection
//! opens it (its SQLite database interrupted by the session cancel hook,
//! its progress handler the checkpoint, the liveness probe on a socket),
//! and a statement run by `kill::statement` around `sql::execute`, as
//! `on_query` runs one. Each drill kills the statement before it starts,
//! at its checkpoints and after the last one, and checks what the client
//! would get and what the database holds. Every report is printed.

use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use sqlkiller::drill::{Drill, DrillReport, Statement};
use sqlkiller::{KillError, KillHandle, ProcessList};
use sqlkiller_mysql_server::kill;
use sqlkiller_mysql_server::sql::{self, Cell, Reply};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Rows of `t`, as `--rows` would give each session.
const ROWS: u64 = 3_000;

/// A long SELECT: a join of `t` with itself that no index helps (60,000
/// pairs), a few hundred checkpoints.
const LONG_SELECT: &str = "SELECT a.x % 7 AS k, count(*), sum(b.x) FROM t a \
     JOIN t b ON b.x % 50 = a.x % 50 WHERE a.x <= 20 GROUP BY k ORDER BY k";

/// An INSERT … SELECT of 9,000 rows into `u`.
const INSERT_SELECT: &str = "INSERT INTO u SELECT a.x, b.x * v.column1 FROM t a \
     JOIN t b ON b.x = a.x * 7 % 3000 + 1 JOIN (VALUES (1), (2), (3)) v";
const INSERTED: i64 = 9_000;

/// Kills at checkpoints per drill: more than either statement has, so
/// every checkpoint is drilled (lower it to an even sample, with the
/// first and the last, if the drill grows too long).
const MAX_KILLS: usize = 512;

/// What `kill::statement` hands back to `on_query`: the reply, or the
/// kill's error (`None` in `Ok`: the work panicked).
type Output = Result<Option<Reply>, KillError>;

/// One connection of the server, without the MySQL protocol: its
/// session, its database, and a client that stays connected.
struct ServerConnection {
    runtime: Runtime,
    /// The server's process list, where the session is registered.
    _list: ProcessList,
    killer: kill::Owner,
    db: Arc<Mutex<Connection>>,
    /// The client's end of the socket the liveness probe looks at.
    _client: TcpStream,
    sql: &'static str,
    /// What a completed SELECT returns: its rows, from an unhooked database.
    expected_rows: Option<Vec<Vec<Cell>>>,
    /// Opens the statement's work, which waits on a blocking thread.
    gate: Option<mpsc::Sender<()>>,
    running: Option<JoinHandle<Output>>,
    /// Runs that returned the kill's error with every row in `u`: the kill
    /// came after SQLite committed (reported, not required either way).
    killed_after_commit: usize,
}

impl ServerConnection {
    /// Opens a session as the server's `connection` does, for `sql`.
    fn open(sql: &'static str) -> ServerConnection {
        let runtime = Runtime::new().expect("a runtime");
        let list = ProcessList::new();
        // The probe's socket: the server's end of a connected pair,
        // nonblocking as tokio's `into_std` leaves it.
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connected");
        let (probe, _) = listener.accept().expect("accepted");
        probe.set_nonblocking(true).unwrap();
        let mut db = sql::seeded_database(ROWS).expect("the session's database");
        db.execute_batch("CREATE TABLE u(x INTEGER, y INTEGER)")
            .unwrap();
        let killer = kill::open(&list, 1, &mut db, probe).expect("the session opens");
        let expected_rows = sql.starts_with("SELECT").then(|| {
            let plain = sql::seeded_database(ROWS).unwrap();
            match sql::execute(&plain, sql) {
                Reply::Rows { rows, .. } => rows,
                other => panic!("{sql}: {other:?}"),
            }
        });
        ServerConnection {
            runtime,
            _list: list,
            killer,
            db: Arc::new(Mutex::new(db)),
            _client: client,
            sql,
            expected_rows,
            gate: None,
            running: None,
            killed_after_commit: 0,
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rows_in_u(&self) -> i64 {
        self.db()
            .query_row("SELECT count(*) FROM u", [], |row| row.get(0))
            .expect("u can be counted")
    }
}

impl Statement for ServerConnection {
    type Output = Output;

    fn session(&self) -> KillHandle {
        self.killer.handle()
    }

    /// Clears `u`, then starts the statement through `kill::statement`,
    /// whose work (the server's: `sql::execute` under the database's lock)
    /// waits for `run`. It returns once the statement has started, so the
    /// drill's kill "before the start" lands where the server's would:
    /// between the statement's start and its work.
    fn begin(&mut self) {
        self.db().execute_batch("DELETE FROM u").expect("u cleared");
        let (gate, opened) = mpsc::channel::<()>();
        let (started, has_started) = mpsc::channel();
        let killer = Arc::clone(&self.killer);
        let db = Arc::clone(&self.db);
        let query = self.sql;
        let running = self.runtime.spawn(async move {
            let work = move || {
                let _ = opened.recv();
                let db = db.lock().unwrap_or_else(PoisonError::into_inner);
                sql::execute(&db, query)
            };
            let started = move |id| {
                let _ = started.send(id);
            };
            kill::statement(&killer, None, false, started, work).await
        });
        if has_started.recv().is_err() {
            let ended = self.runtime.block_on(running);
            panic!("the statement did not start: {ended:?}");
        }
        self.gate = Some(gate);
        self.running = Some(running);
    }

    fn run(&mut self) -> Output {
        if let Some(gate) = self.gate.take() {
            let _ = gate.send(());
        }
        let running = self.running.take().expect("begun");
        self.runtime
            .block_on(running)
            .expect("the statement's task")
    }

    fn is_kill(&self, output: &Output, kill: &KillError) -> bool {
        output.as_ref().err() == Some(kill)
    }

    fn invariant(&mut self, output: &Output) -> Result<(), String> {
        if !self.db().is_autocommit() {
            return Err(format!("a transaction was left open after {output:?}"));
        }
        let rows = self.rows_in_u();
        match (self.expected_rows.as_ref(), output) {
            // The SELECT: the whole result, or the kill's error.
            (Some(expected), Ok(Some(Reply::Rows { rows: got, .. }))) if got == expected => {}
            (Some(_), Err(_)) => {}
            // The INSERT … SELECT: every row or none, whatever the client
            // was told (a kill after the last checkpoint comes after the
            // rows were committed).
            (None, Ok(Some(Reply::Done { affected, .. })))
                if *affected == INSERTED as u64 && rows == INSERTED => {}
            (None, Err(_)) if rows == 0 => {}
            (None, Err(_)) if rows == INSERTED => self.killed_after_commit += 1,
            _ => return Err(format!("{output:?}, with {rows} rows in u")),
        }
        if self.expected_rows.is_some() && rows != 0 {
            return Err(format!("the SELECT left {rows} rows in u"));
        }
        Ok(())
    }
}

fn drill(name: &str, sql: &'static str) -> DrillReport {
    let mut connection = ServerConnection::open(sql);
    let report = Drill::new(name).max_kills(MAX_KILLS).run(&mut connection);
    let after_commit = match connection.expected_rows {
        None => format!(
            "  killed runs that found their rows committed: {}\n",
            connection.killed_after_commit
        ),
        Some(_) => String::new(),
    };
    eprintln!("{report}{after_commit}");
    println!("{report}{after_commit}");
    report
}

/// What both drills must show besides passing: a few hundred checkpoints,
/// the same number after the kills, and every kill delivered and reported
/// to the client (or the statement completed, for a kill after the last).
fn check(report: &DrillReport) {
    assert!(report.passed(), "{report}");
    assert!(report.checkpoints >= 100, "{report}");
    assert_eq!(
        report.last_clean_checkpoints, report.checkpoints,
        "{report}"
    );
    // Before the start, at every checkpoint (or a sample), after the last.
    let drilled = report.checkpoints.min(MAX_KILLS) + 2;
    assert_eq!(report.drilled.len(), drilled, "{report}");
    assert_eq!(report.kills_delivered, drilled, "{report}");
    let answered = report.returned_kill + report.completed_after_last;
    assert_eq!(answered, drilled, "{report}");
}

#[test]
fn the_drill_passes_a_long_select_on_the_servers_statement_path() {
    check(&drill("mysql-server: long SELECT", LONG_SELECT));
}

#[test]
fn the_drill_passes_an_insert_select_on_the_servers_statement_path() {
    check(&drill("mysql-server: INSERT … SELECT", INSERT_SELECT));
}
