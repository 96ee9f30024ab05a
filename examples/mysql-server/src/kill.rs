//! The kill wiring: every line between this server and sqlkiller.
//!
//! - a session per connection, in the crate's process list, whose kills
//!   interrupt its SQLite database (session cancel hook) and are seen at
//!   SQLite's checkpoints (progress handler), where the liveness probe
//!   finds a client that hung up;
//! - a statement's start and end around its work, awaited, never blocking a
//!   runtime thread; `max_execution_time` for SELECTs; a kill-immune COMMIT;
//! - `KILL QUERY`, `KILL QUERY ID`, `KILL CONNECTION`;
//! - a connection that ends when its session is killed, even while idle.

use std::future::Future;
use std::io::ErrorKind::WouldBlock;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use sqlkiller::{
    KillError, KillOutcome, KillSignal, ProcessList, ProcessListError, SqlKiller, StatementId,
};

/// Opens session `conn_id`: kills interrupt `db`; `client` is probed every 100 ms of a statement.
pub fn open(
    list: &ProcessList,
    conn_id: u64,
    db: &mut Connection,
    client: TcpStream,
) -> Option<Arc<SqlKiller>> {
    let killer = Arc::new(list.register(conn_id).ok()?);
    let interrupt = db.get_interrupt_handle();
    let _ = killer.set_session_cancel_hook(move |_| interrupt.interrupt());
    killer.set_probe_interval(Duration::from_millis(100));
    let _ = killer.set_connection_alive_probe(move || {
        let mut buf = [0; 5]; // a hang-up reads as end of file or as a COM_QUIT packet
        let alive = match client.peek(&mut buf) {
            Ok(n) => n > 0 && buf != [1, 0, 0, 0, 1],
            Err(e) => e.kind() == WouldBlock,
        };
        if !alive {
            eprintln!("conn {conn_id}: the client hung up; its statement is killed");
        }
        alive
    });
    let owner = Arc::clone(&killer);
    db.progress_handler(1000, Some(move || owner.handle_signal().is_err()))
        .ok()?;
    Some(killer)
}

/// Runs one statement: `work` on a blocking thread between the statement's
/// start and end. `limit`: its `max_execution_time`. `immune`: a COMMIT,
/// whose outcome a kill cannot change. `started` learns the statement's id.
/// `None` in `Ok`: `work` panicked.
pub async fn statement<T: Send + 'static>(
    killer: &SqlKiller,
    limit: Option<Duration>,
    immune: bool,
    started: impl FnOnce(StatementId),
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, KillError> {
    started(killer.start_statement_async().await?);
    if let Some(limit) = limit {
        killer.set_statement_timeout(limit);
    }
    let section = immune.then(|| killer.kill_immune());
    let out = tokio::task::spawn_blocking(work).await.ok();
    drop(section); // ended after the section, a kill that landed inside it is reported: logged, not sent
    let ended = killer.end_statement_async().await;
    if let (true, Err(e)) = (immune, &ended) {
        eprintln!(
            "conn {}: {e}: a kill landed in a kill-immune COMMIT, which completed",
            killer.conn_id()
        );
    }
    ended
        .or_else(|e| if immune { Ok(()) } else { Err(e) })
        .map(|()| out)
}

/// What a `KILL` statement aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Query(u64),
    QueryId(u64),
    Connection(u64),
}

/// `KILL ...`: whether it killed a statement (not: the session was idle, or
/// the statement was killed already).
pub fn kill(list: &ProcessList, target: Target) -> Result<bool, ProcessListError> {
    let sig = KillSignal::QueryInterrupted;
    let kill = match target {
        Target::Query(conn) => list.kill_query(conn, sig, "KILL QUERY")?,
        Target::QueryId(query) => list.kill_query_id(query, sig, "KILL QUERY ID")?,
        Target::Connection(conn) => list.kill_connection(conn, sig, "KILL CONNECTION")?,
    };
    match (kill.outcome, target) {
        (KillOutcome::Stale, Target::QueryId(query)) => Err(ProcessListError::NoSuchQuery(query)),
        (outcome, _) => Ok(outcome == KillOutcome::Sent),
    }
}

/// Serves a connection until `serve` ends or its session is killed.
pub async fn serve_until_killed(killer: &SqlKiller, serve: impl Future<Output = ()>) {
    let killed = killer.session_killed();
    tokio::select! {
        () = serve => {}
        _ = killed => {}
    }
}
