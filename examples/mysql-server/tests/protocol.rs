//! The server over TCP, driven by mysql_async: each kind of kill, the
//! errors a client sees, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::Queryable;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_sends_1317_and_the_connection_stays_usable() {
    let server = Server::start(100_000);
    let mut victim = server.connect().await;
    let mut admin = server.connect().await;
    let id = victim.id();
    let running = tokio::spawn(async move {
        let result = victim.query_drop(ENDLESS).await;
        (result, victim)
    });
    wait_running(&mut admin, id, ENDLESS).await;
    admin.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    assert_eq!(admin.affected_rows(), 1, "the kill landed on a statement");
    let (result, mut victim) = running.await.unwrap();
    let (code, state, message) = server_error(result.unwrap_err());
    assert_eq!(
        (code, state.as_str(), message.as_str()),
        (1317, "70100", INTERRUPTED)
    );

    // The connection works, and a KILL QUERY on it while idle changes
    // nothing: not its next statement either (TiDB #65447).
    let n: Option<i64> = victim.query_first("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(n, Some(100_000));
    admin.query_drop(format!("KILL QUERY {id}")).await.unwrap();
    assert_eq!(
        admin.affected_rows(),
        0,
        "an idle session has nothing to kill"
    );
    let n: Option<i64> = victim
        .query_first("SELECT count(*) FROM t WHERE x > 10")
        .await
        .unwrap();
    assert_eq!(n, Some(99_990));
    let own: Option<u32> = victim.query_first("SELECT CONNECTION_ID()").await.unwrap();
    assert_eq!(own, Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_id_hits_only_its_statement_and_a_stale_one_is_refused() {
    let server = Server::start(100_000);
    let mut victim = server.connect().await;
    let mut admin = server.connect().await;
    let id = victim.id();

    let first = tokio::spawn(async move { (victim.query_drop(ENDLESS).await, victim) });
    let old = wait_running(&mut admin, id, ENDLESS)
        .await
        .query_id
        .unwrap();
    admin
        .query_drop(format!("KILL QUERY ID {old}"))
        .await
        .unwrap();
    let (result, mut victim) = first.await.unwrap();
    assert_eq!(server_error(result.unwrap_err()).0, 1317);

    // The same statement again, now under a new query id.
    let second = tokio::spawn(async move { (victim.query_drop(ENDLESS).await, victim) });
    let new = wait_running(&mut admin, id, ENDLESS)
        .await
        .query_id
        .unwrap();
    assert_ne!(new, old);
    let stale = admin
        .query_drop(format!("KILL QUERY ID {old}"))
        .await
        .unwrap_err();
    let (code, state, message) = server_error(stale);
    assert_eq!((code, state.as_str()), (1957, "HY000"));
    assert_eq!(message, format!("Unknown query id: {old}"));
    let row = wait_running(&mut admin, id, ENDLESS).await;
    assert_eq!(
        (row.query_id, row.state.as_str()),
        (Some(new), "executing"),
        "untouched"
    );
    admin
        .query_drop(format!("KILL QUERY ID {new}"))
        .await
        .unwrap();
    let (result, _) = second.await.unwrap();
    assert_eq!(server_error(result.unwrap_err()).0, 1317);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_execution_time_sends_3024_to_selects() {
    let server = Server::start(100_000);
    let mut conn = server.connect().await;
    conn.query_drop("SET max_execution_time = 100")
        .await
        .unwrap();
    let limit: Option<i64> = conn
        .query_first("SELECT @@max_execution_time")
        .await
        .unwrap();
    assert_eq!(limit, Some(100));
    let err = conn.query_drop(ENDLESS).await.unwrap_err();
    let (code, state, message) = server_error(err);
    assert_eq!(
        (code, state.as_str(), message.as_str()),
        (3024, "HY000", TIMED_OUT)
    );
    // Not a SELECT: not limited (as MySQL, which limits read-only SELECTs).
    conn.query_drop("CREATE TABLE c AS SELECT count(*) AS n FROM t a, t b WHERE a.x <= 40")
        .await
        .unwrap();
    let n: Option<i64> = conn.query_first("SELECT n FROM c").await.unwrap();
    assert_eq!(n, Some(4_000_000));
    conn.query_drop("SET max_execution_time = 0").await.unwrap();
    let n: Option<i64> = conn.query_first("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(n, Some(100_000));
}

/// Polls until `conn_id` has left the process list.
async fn wait_gone(admin: &mut mysql_async::Conn, conn_id: u32) {
    let start = Instant::now();
    while processlist(admin)
        .await
        .iter()
        .any(|p| p.id == u64::from(conn_id))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "conn {conn_id} never left"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_connection_closes_the_victim() {
    let server = Server::start(100_000);
    let mut admin = server.connect().await;

    // Idle.
    let mut idle = server.connect().await;
    let id = idle.id();
    admin.query_drop(format!("KILL {id}")).await.unwrap();
    wait_gone(&mut admin, id).await;
    assert!(
        idle.query_drop("SELECT 1").await.is_err(),
        "its connection is closed"
    );

    // Running.
    let mut busy = server.connect().await;
    let id = busy.id();
    let running = tokio::spawn(async move { busy.query_drop(ENDLESS).await });
    wait_running(&mut admin, id, ENDLESS).await;
    admin
        .query_drop(format!("KILL CONNECTION {id}"))
        .await
        .unwrap();
    assert!(
        running.await.unwrap().is_err(),
        "the statement ends with the connection"
    );
    wait_gone(&mut admin, id).await;

    // Unknown.
    let err = admin.query_drop("KILL 4242").await.unwrap_err();
    let (code, state, message) = server_error(err);
    assert_eq!(
        (code, state.as_str(), message.as_str()),
        (1094, "HY000", "Unknown thread id: 4242")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_has_its_statement_killed() {
    let server = Server::start(100_000);
    let mut admin = server.connect().await;
    let opts = server.opts();
    let (id_tx, id_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The client lives in a runtime of its own, which goes first: then
    // dropping the connection closes its socket without a word, mid-query.
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = runtime.block_on(async move {
            let mut conn = mysql_async::Conn::new(opts).await.unwrap();
            id_tx.send(conn.id()).unwrap();
            tokio::select! {
                _ = conn.query_drop(ENDLESS) => panic!("the statement ended on its own"),
                _ = stop_rx => {}
            }
            conn
        });
        drop(runtime);
        drop(conn);
    });
    let id = id_rx.recv().unwrap();
    wait_running(&mut admin, id, ENDLESS).await;
    stop_tx.send(()).unwrap();
    client.join().unwrap();
    wait_gone(&mut admin, id).await;
    let said = format!("conn {id}: the client hung up; its statement is killed");
    let start = Instant::now();
    while !server.log().contains(&said) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "log: {:?}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_mysql_errors() {
    let server = Server::start(1_000);
    let mut conn = server.connect().await;
    let cases: &[(&str, u16)] = &[
        ("SELEC 1", 1064),
        ("SELECT * FROM nowhere", 1105),
        ("SELECT 1 +", 1064),
        ("KILL", 1064),
        ("KILL QUERY", 1064),
        ("KILL QUERY ID", 1064),
        ("KILL QUERY abc", 1064),
        ("KILL 99999999999999999999999999", 1064),
        ("KILL QUERY ID 123456789", 1957),
        ("KILL QUERY 0", 1094),
        ("SET max_execution_time = -5", 1064),
        ("SET max_execution_time = soon", 1064),
        ("SELECT @@", 1064),
        ("SELECT @@a, b", 1064),
        (";", 1065),
        ("\u{0}\u{1}", 1065),
        ("/* nothing */", 1065),
        ("SELECT x FROM t WHERE x = 'unterminated", 1064),
        ("SELECT 1; SELECT 2", 1105),
        ("SELECT ☃", 1105),
    ];
    for (query, code) in cases {
        let err = server_error(conn.query_drop(*query).await.unwrap_err());
        assert_eq!(err.0, *code, "{query:?}: {err:?}");
    }
    let err = conn.exec_drop("SELECT ?", (1,)).await.unwrap_err();
    assert_eq!(server_error(err).0, 1295, "prepared statements");
    let long = format!("SELECT '{}' = 'x'", "x".repeat(100_000));
    let same: Option<i64> = conn.query_first(long).await.unwrap();
    assert_eq!(same, Some(0));
    let n: Option<i64> = conn.query_first("select count(*) from t").await.unwrap();
    assert_eq!(n, Some(1_000), "still usable");

    let stranger = mysql_async::Conn::new(server.opts().user(Some("mallory"))).await;
    assert!(stranger.is_err(), "only root");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sqlkiller-mysql-server"))
        .args(["--port", "x"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&status.stderr).contains("usage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit() {
    let server = Server::start(10);
    let mut conn = server.connect().await;
    conn.query_drop("CREATE TABLE log(v INTEGER)")
        .await
        .unwrap();
    conn.query_drop("BEGIN").await.unwrap();
    conn.query_drop("INSERT INTO log VALUES (1), (2)")
        .await
        .unwrap();
    assert_eq!(conn.affected_rows(), 2);
    conn.query_drop("COMMIT").await.unwrap();
    let rows: Vec<(i64, Option<String>, f64)> = conn
        .query("SELECT v, NULL, v * 0.5 FROM log ORDER BY v")
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, None, 0.5), (2, None, 1.0)]);
}
