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

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::{sql::Target, wire::client_alive};
use rusqlite::Connection;
use sqlkiller::{KillError, KillOutcome, KillSignal, ProcessList, ProcessListError, SqlKiller};

/// A session's owner, shared with its SQLite checkpoint.
pub type Owner = Arc<SqlKiller>;

/// Opens session `id`: kills interrupt `db`; `client` is probed every 100 ms of a statement.
pub fn open(list: &ProcessList, id: u64, db: &mut Connection, client: TcpStream) -> Option<Owner> {
    let killer = Arc::new(list.register(id).ok()?);
    let interrupt = db.get_interrupt_handle();
    let _ = killer.set_session_cancel_hook(move |_| interrupt.interrupt());
    killer.set_probe_interval(Duration::from_millis(100));
    let _ = killer.set_connection_alive_probe(move || client_alive(&client, id));
    let owner = Arc::clone(&killer); // the checkpoint, which also runs the probe when due
    db.progress_handler(1000, Some(move || owner.handle_signal().is_err()))
        .ok()?;
    Some(killer)
}

/// Runs one statement: `work` on a blocking thread between the statement's
/// start and end. `limit`: its `max_execution_time`. `immune`: a COMMIT,
/// whose outcome a kill cannot change. `started` learns the statement's id.
/// `None` in `Ok`: `work` panicked.
pub async fn statement<T: Send + 'static>(
    killer: &Owner,
    limit: Option<Duration>,
    immune: bool,
    started: impl FnOnce(sqlkiller::StatementId),
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, KillError> {
    started(killer.start_statement_async().await?);
    limit.inspect(|&limit| killer.set_statement_timeout(limit));
    // A COMMIT's section is held by the COMMIT itself, on its blocking thread:
    // it lasts while the COMMIT runs, even if the connection is torn down.
    let owner = Arc::clone(killer);
    let work = move || {
        let _section = immune.then(|| owner.kill_immune());
        work()
    };
    let out = tokio::task::spawn_blocking(work).await.ok();
    // Ended after the section: a kill that landed in it is reported (logged, not sent).
    match killer.end_statement_async().await {
        Err(e) if immune => {
            eprintln!(
                "conn {}: {e}: absorbed by a kill-immune COMMIT",
                killer.conn_id()
            );
            Ok(out)
        }
        ended => ended.map(|()| out),
    }
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

/// Serves a connection until `serve` ends or its session is killed, then
/// leaves it idle.
pub async fn serve_until_killed(killer: &SqlKiller, serve: impl std::future::Future<Output = ()>) {
    tokio::select! { () = serve => {}, _ = killer.session_killed() => {} }
    // Idle before the owner is dropped: the drop then waits for no kill here.
    let _ = killer.end_statement_async().await;
}
