//! Kill -> client error latency through the server (`KILL QUERY` from a
//! second connection, the error read by the victim's mysql_async), beside
//! a bare `sqlite3_interrupt` (rusqlite's `InterruptHandle` called from
//! another thread on the same query, in this process), in the same run.
//! Printed, never asserted: timing depends on the machine.
//! `SQLKILLER_LATENCY_SAMPLES` samples of each (default 40).

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::Queryable;
use rusqlite::{Connection, ErrorCode};

/// How long a query runs before it is killed.
const RUN_BEFORE_KILL: Duration = Duration::from_millis(20);
const ROWS: u64 = 100_000;

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    println!(
        "{name}: p50 {:?}, p99 {:?}, max {:?} (n = {})",
        percentile(&samples, 50),
        percentile(&samples, 99),
        samples.last().copied().unwrap_or_default(),
        samples.len()
    );
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split(':').nth(1)?.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_to_client_error_latency_beside_bare_sqlite_interrupt() {
    let samples: usize = std::env::var("SQLKILLER_LATENCY_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);

    // Through the server.
    let server = Server::start(ROWS);
    let mut victim = server.connect().await;
    let mut admin = server.connect().await;
    let id = victim.id();
    let mut through_server = Vec::new();
    let mut round_trips = Vec::new();
    for _ in 0..samples {
        let running = tokio::spawn(async move {
            let result = victim.query_drop(ENDLESS).await;
            (Instant::now(), result, victim)
        });
        wait_running(&mut admin, id, ENDLESS).await;
        tokio::time::sleep(RUN_BEFORE_KILL).await;
        let asked_at = Instant::now();
        admin.query_drop("SELECT 1").await.unwrap();
        round_trips.push(asked_at.elapsed());
        let killed_at = Instant::now();
        admin.query_drop(format!("KILL QUERY {id}")).await.unwrap();
        let (stopped_at, result, conn) = running.await.unwrap();
        victim = conn;
        assert_eq!(server_error(result.unwrap_err()).0, 1317);
        through_server.push(stopped_at - killed_at);
    }
    drop(server);

    // Bare SQLite: the same query on a worker thread, interrupted from here.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel();
    let (handle_tx, handle_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch("CREATE TABLE t(x INTEGER)").unwrap();
        db.execute(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1)
             INSERT INTO t SELECT x FROM n",
            [ROWS as i64],
        )
        .unwrap();
        handle_tx.send(db.get_interrupt_handle()).unwrap();
        while go_rx.recv().is_ok() {
            let result = db.query_row(ENDLESS, [], |row| row.get::<_, i64>(0));
            let interrupted = matches!(result, Err(e) if e.sqlite_error_code() == Some(ErrorCode::OperationInterrupted));
            done_tx.send((Instant::now(), interrupted)).unwrap();
        }
    });
    let interrupt = handle_rx.recv().unwrap();
    let mut bare = Vec::new();
    for _ in 0..samples {
        go_tx.send(()).unwrap();
        std::thread::sleep(RUN_BEFORE_KILL);
        let killed_at = Instant::now();
        interrupt.interrupt();
        let (stopped_at, interrupted) = done_rx.recv().unwrap();
        assert!(interrupted);
        bare.push(stopped_at - killed_at);
    }
    drop(go_tx);
    worker.join().unwrap();

    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("kill -> error latency on {}, {build} build", cpu());
    summary(
        "  KILL QUERY sent on a 2nd connection -> the victim's mysql_async has error 1317",
        through_server,
    );
    summary(
        "  for scale, one statement's round trip (SELECT 1) on that 2nd connection",
        round_trips,
    );
    summary(
        "  bare sqlite3_interrupt from another thread -> the query returns (in process)",
        bare,
    );
}
