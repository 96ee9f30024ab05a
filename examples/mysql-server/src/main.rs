//! A MySQL-protocol server over SQLite whose `KILL QUERY`, `KILL QUERY ID`,
//! `KILL CONNECTION`, `max_execution_time` and dead-client detection go
//! through sqlkiller.
//!
//! Each connection is a session with its own in-memory SQLite database,
//! holding `t(x INTEGER)` with `--rows` rows, so that
//! `SELECT count(*) FROM t a, t b` runs until something stops it.
//!
//! ```text
//! sqlkiller-mysql-server [--port N] [--rows N]
//! ```
//!
//! It listens on 127.0.0.1 only (`--port 0`: a free port), accepts user
//! `root` without a password, and prints `listening on 127.0.0.1:PORT` as
//! its first line on stdout. Its log goes to stderr.
//!
//! Besides SQLite's SQL it reads `KILL [QUERY | CONNECTION] <conn>`,
//! `KILL QUERY ID <n>` (MariaDB), `SHOW [FULL] PROCESSLIST` (MySQL's eight
//! columns, then `Query_id`, the number `KILL QUERY ID` takes, and
//! `Killed_ms`, how long ago a kill landed on a statement that has not
//! ended), `SET max_execution_time = <ms>`, `SELECT CONNECTION_ID()` and
//! `SELECT @@var`. `max_execution_time` limits the statements that start
//! with SELECT, as MySQL limits read-only SELECTs. A `KILL` answers with
//! one affected row if it stopped a statement, none if there was nothing
//! to stop. A COMMIT runs in a kill-immune section. A client that hangs up
//! is found by the liveness probe (a look at its socket every 100 ms of a
//! running statement), which kills its statement.
//!
//! The kill wiring is all in `kill.rs`; `wire.rs` writes the error packets
//! opensrv-mysql cannot; `sql.rs` reads our statements and runs SQLite's.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use opensrv_mysql::{
    AsyncMysqlIntermediary, AsyncMysqlShim, Column, ColumnFlags, ColumnType, ErrorKind, InitWriter,
    OkResponse, ParamParser, QueryResultWriter, StatementMetaWriter,
};
use rusqlite::Connection;
use sqlkiller::{ProcessList, SessionPhase, StatementId};
use tokio::net::{TcpListener, TcpStream};

use sqlkiller_mysql_server::kill;
use sqlkiller_mysql_server::sql::{self, Cell, Command, Reply};
use sqlkiller_mysql_server::wire::{Door, Out};

const USAGE: &str = "usage: sqlkiller-mysql-server [--port N] [--rows N]
  --port N   TCP port on 127.0.0.1 (default 3306; 0 picks a free one)
  --rows N   rows of each session's table t(x INTEGER) (default 100000)";

struct Args {
    port: u16,
    rows: u64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        port: 3306,
        rows: 100_000,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => parsed.port = value?.parse().map_err(|_| "--port: not a port")?,
            "--rows" => match value?.parse() {
                Ok(rows @ 0..=100_000_000) => parsed.rows = rows,
                _ => return Err("--rows: a number from 0 to 100000000".into()),
            },
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}

/// What SHOW PROCESSLIST shows of a session besides what the process list
/// holds: who is connected and the text of the statement, tagged with the
/// statement's query id so that it is never shown beside another one's.
#[derive(Clone)]
struct Meta {
    host: String,
    query: Option<(StatementId, String)>,
}

/// The server's state shared by its connections.
struct Server {
    list: ProcessList,
    meta: Mutex<HashMap<u64, Meta>>,
    rows: u64,
}

impl Server {
    fn meta(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Meta>> {
        self.meta
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);
    let server = Arc::new(Server {
        list: ProcessList::new(),
        meta: Mutex::default(),
        rows: args.rows,
    });
    let ids = AtomicU32::new(1);
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            if let Err(e) = connection(&server, sock, peer, id).await {
                eprintln!("conn {id}: {e}");
            }
            server.meta().remove(&u64::from(id));
        });
    }
}

/// Serves one client connection from its handshake to its end.
async fn connection(
    server: &Arc<Server>,
    sock: TcpStream,
    peer: SocketAddr,
    id: u32,
) -> io::Result<()> {
    let conn_id = u64::from(id);
    // opensrv-mysql writes a result set as several small packets: without
    // this, Nagle's algorithm holds the last ones for the client's delayed ACK.
    sock.set_nodelay(true)?;
    // A second handle on the socket, for the liveness probe.
    let sock = sock.into_std()?;
    let probe = sock.try_clone()?;
    let sock = TcpStream::from_std(sock)?;
    let rows = server.rows;
    let mut db = tokio::task::spawn_blocking(move || sql::seeded_database(rows))
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)?;
    let killer = kill::open(&server.list, conn_id, &mut db, probe)
        .ok_or_else(|| io::Error::other("connection id already registered"))?;
    server.meta().insert(
        conn_id,
        Meta {
            host: peer.to_string(),
            query: None,
        },
    );
    let (read, write) = sock.into_split();
    let door = Door::default();
    let session = Session {
        id,
        killer: Arc::clone(&killer),
        db: Arc::new(Mutex::new(db)),
        server: Arc::clone(server),
        door: door.clone(),
        max_execution_time: None,
    };
    let serve = async {
        if let Err(e) = AsyncMysqlIntermediary::run_on(session, read, Out::new(write, door)).await {
            if e.kind() != io::ErrorKind::ConnectionAborted {
                eprintln!("conn {id}: {e}");
            }
        }
    };
    kill::serve_until_killed(&killer, serve).await;
    Ok(())
}

/// One connection's session, as opensrv-mysql drives it.
struct Session {
    id: u32,
    killer: kill::Owner,
    db: Arc<Mutex<Connection>>,
    server: Arc<Server>,
    door: Door,
    max_execution_time: Option<Duration>,
}

impl Session {
    /// The work of `command`, to run on a blocking thread.
    fn work(&mut self, command: Command, query: &str) -> Box<dyn FnOnce() -> Reply + Send> {
        let server = Arc::clone(&self.server);
        let conn_id = u64::from(self.id);
        match command {
            Command::Kill(target) => Box::new(move || match kill::kill(&server.list, target) {
                Ok(killed) => Reply::Done {
                    affected: u64::from(killed),
                    last_insert_id: 0,
                },
                Err(e) => Reply::Error(e.code(), e.sqlstate(), e.to_string()),
            }),
            Command::ShowProcessList => Box::new(move || processlist(&server)),
            Command::SetMaxExecutionTime(ms) => {
                self.max_execution_time = (ms > 0).then(|| Duration::from_millis(ms));
                Box::new(Reply::ok)
            }
            Command::ConnectionId => {
                Box::new(move || Reply::single("CONNECTION_ID()", Cell::Int(conn_id as i64)))
            }
            Command::Variables(names) => {
                let limit = self.max_execution_time.map_or(0, |d| d.as_millis() as i64);
                Box::new(move || variables(&names, limit))
            }
            Command::Empty => Box::new(|| Reply::Error(1065, "42000", "Query was empty".into())),
            Command::Invalid(message) => Box::new(move || Reply::Error(1064, "42000", message)),
            Command::Commit | Command::Sql { .. } => {
                let db = Arc::clone(&self.db);
                let query = query.to_string();
                Box::new(move || {
                    let db = db.lock().unwrap_or_else(|p| p.into_inner());
                    sql::execute(&db, &query)
                })
            }
        }
    }

    fn set_query(&self, query: Option<(StatementId, String)>) {
        if let Some(meta) = self.server.meta().get_mut(&u64::from(self.id)) {
            meta.query = query;
        }
    }

    /// Sends `reply` (or the kill's error) as the answer to `query`.
    async fn send(
        &self,
        query: &str,
        reply: Result<Option<Reply>, sqlkiller::KillError>,
        results: QueryResultWriter<'_, Out>,
    ) -> io::Result<()> {
        let (code, state, message) = match reply {
            Ok(Some(Reply::Done {
                affected,
                last_insert_id,
            })) => {
                let ok = OkResponse {
                    affected_rows: affected,
                    last_insert_id,
                    ..Default::default()
                };
                return results.completed(ok).await;
            }
            Ok(Some(Reply::Rows { columns, rows })) => {
                return write_rows(results, &columns, &rows).await
            }
            Ok(Some(Reply::Error(code, state, message))) => (code, state, message),
            Err(kill) => (kill.code(), kill.sqlstate(), kill.to_string()),
            Ok(None) => (
                1105,
                "HY000",
                "internal error: the statement panicked".into(),
            ),
            Ok(Some(Reply::Interrupted)) => (
                1317,
                "70100",
                "Query execution was interrupted (by SQLite, without a kill)".into(),
            ),
        };
        // opensrv-mysql writes nothing for this command: the error goes through the door.
        drop(results);
        self.door.error(query, code, state, &message);
        Ok(())
    }
}

#[async_trait]
impl AsyncMysqlShim<Out> for Session {
    type Error = io::Error;

    fn version(&self) -> String {
        "5.7.99-sqlkiller-example".into()
    }

    fn connect_id(&self) -> u32 {
        self.id
    }

    async fn authenticate(&self, _plugin: &str, user: &[u8], _salt: &[u8], auth: &[u8]) -> bool {
        user == b"root" && (auth.is_empty() || auth == [0])
    }

    async fn on_prepare<'a>(
        &'a mut self,
        _: &'a str,
        info: StatementMetaWriter<'a, Out>,
    ) -> io::Result<()> {
        info.error(
            ErrorKind::ER_UNSUPPORTED_PS,
            b"prepared statements are not supported".as_slice(),
        )
        .await
    }

    async fn on_execute<'a>(
        &'a mut self,
        _: u32,
        _: ParamParser<'a>,
        results: QueryResultWriter<'a, Out>,
    ) -> io::Result<()> {
        results
            .error(
                ErrorKind::ER_UNSUPPORTED_PS,
                b"prepared statements are not supported".as_slice(),
            )
            .await
    }

    async fn on_close<'a>(&'a mut self, _: u32) {}

    async fn on_init<'a>(&'a mut self, _: &'a str, writer: InitWriter<'a, Out>) -> io::Result<()> {
        writer.ok().await
    }

    async fn on_query<'a>(
        &'a mut self,
        query: &'a str,
        results: QueryResultWriter<'a, Out>,
    ) -> io::Result<()> {
        let command = sql::parse(query);
        let limit = match command {
            Command::Sql { select: true } => self.max_execution_time,
            _ => None,
        };
        let immune = command == Command::Commit;
        let work = self.work(command, query);
        let this = &*self;
        let started = |id| this.set_query(Some((id, query.to_string())));
        let reply = kill::statement(&this.killer, limit, immune, started, work).await;
        this.set_query(None);
        this.send(query, reply, results).await
    }
}

/// A column's MySQL type, from its values (SQLite's types are per value).
fn column_type<'c>(cells: impl Iterator<Item = &'c Cell>) -> ColumnType {
    let (mut int, mut real, mut blob, mut text) = (false, false, false, false);
    for cell in cells {
        match cell {
            Cell::Null => {}
            Cell::Int(_) => int = true,
            Cell::Real(_) => real = true,
            Cell::Blob(_) => blob = true,
            Cell::Text(_) => text = true,
        }
    }
    match (int, real, blob, text) {
        (_, _, false, false) if real => ColumnType::MYSQL_TYPE_DOUBLE,
        (true, _, false, false) => ColumnType::MYSQL_TYPE_LONGLONG,
        (false, false, true, false) => ColumnType::MYSQL_TYPE_BLOB,
        _ => ColumnType::MYSQL_TYPE_VAR_STRING,
    }
}

async fn write_rows(
    results: QueryResultWriter<'_, Out>,
    names: &[String],
    rows: &[Vec<Cell>],
) -> io::Result<()> {
    let columns: Vec<Column> = names
        .iter()
        .enumerate()
        .map(|(i, name)| Column {
            table: String::new(),
            column: name.clone(),
            coltype: column_type(rows.iter().filter_map(|row| row.get(i))),
            colflags: ColumnFlags::empty(),
        })
        .collect();
    let mut writer = results.start(&columns).await?;
    for row in rows {
        for cell in row {
            match cell {
                Cell::Null => writer.write_col(None::<i64>)?,
                Cell::Int(v) => writer.write_col(*v)?,
                Cell::Real(v) => writer.write_col(*v)?,
                Cell::Text(v) => writer.write_col(v.as_str())?,
                Cell::Blob(v) => writer.write_col(v.as_slice())?,
            }
        }
        writer.end_row().await?;
    }
    writer.finish().await
}

/// SHOW PROCESSLIST: MySQL's eight columns, then the query id that
/// `KILL QUERY ID` takes and how long ago a kill landed on the statement.
fn processlist(server: &Server) -> Reply {
    let meta = server.meta().clone();
    let columns = [
        "Id",
        "User",
        "Host",
        "db",
        "Command",
        "Time",
        "State",
        "Info",
        "Query_id",
        "Killed_ms",
    ];
    let text = |s: &str| Cell::Text(s.to_string());
    let number =
        |n: Option<u64>| n.map_or(Cell::Null, |n| Cell::Int(n.min(i64::MAX as u64) as i64));
    let rows = server
        .list
        .snapshot()
        .into_iter()
        .map(|p| {
            let meta = meta.get(&p.conn_id);
            let info = meta
                .and_then(|m| m.query.as_ref())
                .filter(|(statement, _)| Some(*statement) == p.statement)
                .map_or(Cell::Null, |(_, query)| text(query));
            let (command, state) = match p.phase {
                SessionPhase::Idle => ("Sleep", String::new()),
                SessionPhase::Running => ("Query", "executing".to_string()),
                SessionPhase::Killed(signal) => ("Query", format!("killed: {signal:?}")),
                _ => ("Query", String::new()),
            };
            vec![
                number(Some(p.conn_id)),
                text("root"),
                meta.map_or(Cell::Null, |m| text(&m.host)),
                text("main"),
                text(if p.session_killed.is_some() {
                    "Killed"
                } else {
                    command
                }),
                number(Some(p.time_in_statement.as_secs())),
                Cell::Text(state),
                info,
                number(p.query_id),
                number(p.killed_for.map(|d| d.as_millis() as u64)),
            ]
        })
        .collect();
    Reply::Rows {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

/// `SELECT @@name, ...`: the few variables clients ask about; others are NULL.
fn variables(names: &[String], max_execution_time: i64) -> Reply {
    let row = names
        .iter()
        .map(|name| match name.trim_start_matches("session.") {
            "version_comment" => Cell::Text("sqlkiller example server (SQLite)".into()),
            "version" => Cell::Text("5.7.99-sqlkiller-example".into()),
            "max_allowed_packet" => Cell::Int(64 << 20),
            "wait_timeout" | "interactive_timeout" => Cell::Int(28_800),
            "max_execution_time" => Cell::Int(max_execution_time),
            "autocommit" => Cell::Int(1),
            _ => Cell::Null,
        })
        .collect();
    Reply::Rows {
        columns: names.iter().map(|n| format!("@@{n}")).collect(),
        rows: vec![row],
    }
}
