//! Starts the server binary and connects to it with mysql_async.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Error, OptsBuilder};

pub const INTERRUPTED: &str = "Query execution was interrupted";
pub const TIMED_OUT: &str =
    "Query execution was interrupted, maximum statement execution time exceeded";
/// Runs until something stops it (10^10 rows with the default table).
pub const ENDLESS: &str = "SELECT count(*) FROM t a, t b";

/// The server, as a child process; killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server on a free port with `rows` rows per session.
    pub fn start(rows: u64) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sqlkiller-mysql-server"))
            .args(["--port", "0", "--rows", &rows.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("the server starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first
            .trim()
            .strip_prefix("listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        Server { child, port, log }
    }

    pub fn opts(&self) -> OptsBuilder {
        OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("root"))
            .prefer_socket(false)
    }

    pub async fn connect(&self) -> Conn {
        Conn::new(self.opts()).await.expect("connects")
    }

    /// The server's log (stderr) so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server error's code, SQLSTATE and message; panics on other errors.
pub fn server_error(e: Error) -> (u16, String, String) {
    match e {
        Error::Server(e) => (e.code, e.state, e.message),
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// A row of SHOW PROCESSLIST: Id, Command, State, Info, Query_id, Killed_ms.
#[derive(Debug, Clone)]
pub struct Process {
    pub id: u64,
    pub command: String,
    pub state: String,
    pub info: Option<String>,
    pub query_id: Option<u64>,
    pub killed_ms: Option<u64>,
}

pub async fn processlist(conn: &mut Conn) -> Vec<Process> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW PROCESSLIST").await.unwrap();
    rows.into_iter()
        .map(|row| Process {
            id: row.get(0).unwrap(),
            command: row.get(4).unwrap(),
            state: row.get(6).unwrap(),
            info: row.get(7).unwrap(),
            query_id: row.get(8).unwrap(),
            killed_ms: row.get(9).unwrap(),
        })
        .collect()
}

/// Waits until `conn_id` runs a statement whose text contains `text`;
/// returns its row.
pub async fn wait_running(admin: &mut Conn, conn_id: u32, text: &str) -> Process {
    let start = Instant::now();
    loop {
        let rows = processlist(admin).await;
        if let Some(row) = rows.into_iter().find(|p| {
            p.id == u64::from(conn_id) && p.info.as_deref().is_some_and(|i| i.contains(text))
        }) {
            return row;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "conn {conn_id} never ran {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Percentile `p` (0..=100) of sorted `samples`.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) * p + 50) / 100]
}
