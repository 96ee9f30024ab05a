//! The process list: sessions by connection id, `KILL QUERY`, `KILL QUERY
//! ID`, `KILL CONNECTION` and `SHOW PROCESSLIST`, without a window between
//! reading a session and killing it.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::{ListCore, Row, Shared};
use crate::{
    KillHandle, KillOutcome, KillSignal, ManualClock, SessionPhase, SqlKiller, StatementId, Ticket,
};

/// A server's sessions by connection id. Cheap to clone (an `Arc`);
/// `Send + Sync`.
///
/// Every kill through the list acts on the session's state word, in the
/// same atomic step that decides which statement it hits, so a
/// `KILL QUERY <conn>` lands on the statement running when it takes
/// effect, or on nothing ([`KillOutcome::Idle`]) -- never on the next one,
/// as a "look up the current query, then kill it" does. A kill never waits
/// behind a lookup or a listing of another session: lookups and listings
/// share the list's locks for reading and hold them only to clone a
/// pointer; a session joining or leaving holds one shard (of 16) for one
/// map insert or remove.
///
/// A session leaves the list when its `SqlKiller` is dropped; one that is
/// never dropped (leaked with `mem::forget`, or kept alive by a cycle of
/// your own) stays listed, its time rising.
///
/// The list numbers its sessions' statements from one counter, so a
/// statement number ([`ProcessInfo::query_id`], `StatementId::as_u64`) is
/// unique in the list and `KILL QUERY ID <n>` names one statement.
///
/// ```
/// use sqlkiller::{KillOutcome, KillSignal, ProcessList, SessionPhase};
///
/// let list = ProcessList::new();
/// let session = list.register(7)?;          // idle until its first statement
/// let stmt = session.start_statement().unwrap();
///
/// let rows = list.snapshot();
/// assert_eq!(rows[0].phase, SessionPhase::Running);
/// assert_eq!(rows[0].query_id, Some(stmt.as_u64()));
///
/// // KILL QUERY 7, waiting for the statement to end (KILL QUERY ... SYNC):
/// let kill = list.kill_query(7, KillSignal::QueryInterrupted, "")?;
/// assert_eq!(kill.outcome, KillOutcome::Sent);
/// let mut ticket = kill.ticket();
/// assert_eq!(session.end_statement().unwrap_err().code(), 1317);
/// ticket.wait();
///
/// // Idle now: a late KILL QUERY changes nothing.
/// let late = list.kill_query(7, KillSignal::QueryInterrupted, "")?;
/// assert_eq!(late.outcome, KillOutcome::Idle);
/// drop(session);
/// assert!(list.snapshot().is_empty());
/// # Ok::<(), sqlkiller::ProcessListError>(())
/// ```
#[derive(Clone)]
pub struct ProcessList {
    core: Arc<ListCore>,
}

/// What a kill through the [`ProcessList`] did.
#[must_use = "a kill may not have landed: see `outcome`"]
pub struct Kill {
    /// What the kill did.
    pub outcome: KillOutcome,
    /// The statement it met: killed by it (`Sent`) or before it
    /// (`AlreadyKilled`). `None` if the session was idle.
    pub statement: Option<StatementId>,
    session: Arc<Shared>,
}

impl Kill {
    /// A ticket that completes when [`statement`](Kill::statement) has
    /// ended: done at once if there is none or it has ended already. (Made
    /// on demand, so a kill nobody waits for registers nothing.)
    pub fn ticket(&self) -> Ticket {
        match self.statement {
            Some(statement) => Ticket::new(&self.session, Some(statement)),
            None => Ticket::done(),
        }
    }
}

impl std::fmt::Debug for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kill")
            .field("outcome", &self.outcome)
            .field("statement", &self.statement)
            .finish()
    }
}

/// One session in a listing ([`ProcessList::snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// The connection id it was registered under.
    pub conn_id: u64,
    /// The running statement's number (what [`ProcessList::kill_query_id`]
    /// takes); `None` while idle.
    pub query_id: Option<u64>,
    /// The running statement; `None` while idle.
    pub statement: Option<StatementId>,
    /// Idle, running, or running a killed statement that has not ended.
    pub phase: SessionPhase,
    /// How long the running statement has run (zero while idle).
    pub time_in_statement: Duration,
    /// For a killed statement that has not ended: how long ago the kill
    /// landed. A large value is a stuck kill.
    pub killed_for: Option<Duration>,
    /// The signal of the session kill, if the session was killed.
    pub session_killed: Option<KillSignal>,
}

/// Why the [`ProcessList`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessListError {
    /// [`register`](ProcessList::register): a session with this connection
    /// id is already registered.
    #[error("connection id {0} is already registered")]
    DuplicateConnId(u64),
    /// No session with this connection id (MySQL error 1094, "Unknown
    /// thread id").
    #[error("Unknown thread id: {0}")]
    NoSuchConn(u64),
    /// No running statement with this number (MariaDB error 1957, "Unknown
    /// query id").
    #[error("Unknown query id: {0}")]
    NoSuchQuery(u64),
}

impl ProcessListError {
    /// The MySQL/MariaDB error code: 1094 for an unknown connection, 1957
    /// for an unknown query id, 1105 (unknown error) for a duplicate
    /// registration.
    pub fn code(&self) -> u16 {
        match self {
            ProcessListError::DuplicateConnId(_) => 1105,
            ProcessListError::NoSuchConn(_) => 1094,
            ProcessListError::NoSuchQuery(_) => 1957,
        }
    }

    /// The SQLSTATE (`HY000`).
    pub fn sqlstate(&self) -> &'static str {
        "HY000"
    }
}

impl Default for ProcessList {
    fn default() -> Self {
        ProcessList::new()
    }
}

impl ProcessList {
    /// An empty list on the real clock.
    pub fn new() -> ProcessList {
        ProcessList {
            core: ListCore::new(crate::clock::Timer::Real),
        }
    }

    /// An empty list whose sessions use `clock` (for tests).
    pub fn with_clock(clock: &ManualClock) -> ProcessList {
        ProcessList {
            core: ListCore::new(clock.timer()),
        }
    }

    /// A new session registered under `conn_id` (its
    /// [`conn_id`](SqlKiller::conn_id) is set). It starts idle and leaves
    /// the list when the returned killer is dropped; the id may then be
    /// registered again. The list knows it by this id for good: a later
    /// `set_conn_id` changes the id its errors report, not the one it is
    /// listed and killed under.
    pub fn register(&self, conn_id: u64) -> Result<SqlKiller, ProcessListError> {
        match self.core.register(conn_id) {
            Some(shared) => Ok(SqlKiller { shared }),
            None => Err(ProcessListError::DuplicateConnId(conn_id)),
        }
    }

    /// A handle to the session under `conn_id`.
    pub fn handle(&self, conn_id: u64) -> Option<KillHandle> {
        self.core.get(conn_id).map(KillHandle::new)
    }

    /// `KILL QUERY <conn_id>`: kills the statement that is running when
    /// the kill takes effect; `Idle` if the session is between statements.
    pub fn kill_query(
        &self,
        conn_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let session = self.session(conn_id)?;
        let (outcome, generation) = session.kill_and_locate(None, signal, reason);
        Ok(kill(session, outcome, generation))
    }

    /// `KILL QUERY ID <query_id>` (MariaDB): kills the statement with this
    /// number, only if it is still running; `NoSuchQuery` if no running
    /// statement has it, `Stale` if it ended between the lookup and the
    /// kill.
    ///
    /// Finding the number reads every session (no index is kept per
    /// statement, which would cost every statement a map update); each
    /// shard is read under its read lock.
    pub fn kill_query_id(
        &self,
        query_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let (session, statement) = self
            .core
            .find_statement(query_id)
            .ok_or(ProcessListError::NoSuchQuery(query_id))?;
        let (outcome, generation) = session.kill_and_locate(Some(statement), signal, reason);
        Ok(kill(session, outcome, generation))
    }

    /// `KILL [CONNECTION] <conn_id>`: kills the session
    /// ([`SqlKiller::kill_session`]); [`Kill::ticket`] completes when the
    /// statement that was running has ended.
    pub fn kill_connection(
        &self,
        conn_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let session = self.session(conn_id)?;
        let (outcome, generation) = session.kill_session(signal, reason);
        Ok(kill(session, outcome, generation))
    }

    /// `SHOW PROCESSLIST`: every session, by connection id.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        let now = self.core.now();
        let mut rows: Vec<ProcessInfo> = self
            .core
            .sessions()
            .iter()
            .map(|session| info(session.row(now)))
            .collect();
        rows.sort_by_key(|row| row.conn_id);
        rows
    }

    /// The stuck-kill report: killed statements that have not ended for
    /// longer than `older_than` since their kill landed.
    pub fn stuck(&self, older_than: Duration) -> Vec<ProcessInfo> {
        let mut rows = self.snapshot();
        rows.retain(|row| row.killed_for.is_some_and(|age| age > older_than));
        rows
    }

    /// How many sessions are registered.
    pub fn len(&self) -> usize {
        self.core.len()
    }

    /// Whether no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn session(&self, conn_id: u64) -> Result<Arc<Shared>, ProcessListError> {
        self.core
            .get(conn_id)
            .ok_or(ProcessListError::NoSuchConn(conn_id))
    }
}

fn kill(session: Arc<Shared>, outcome: KillOutcome, generation: Option<u64>) -> Kill {
    Kill {
        outcome,
        statement: generation.map(|generation| session.statement_at(generation)),
        session,
    }
}

fn info(row: Row) -> ProcessInfo {
    let running = row.phase != SessionPhase::Idle;
    ProcessInfo {
        conn_id: row.conn_id,
        query_id: running.then(|| row.statement.as_u64()),
        statement: running.then_some(row.statement),
        phase: row.phase,
        time_in_statement: row.time_in_statement,
        killed_for: row.killed_for,
        session_killed: row.session_killed,
    }
}

impl std::fmt::Debug for ProcessList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessList")
            .field("sessions", &self.len())
            .finish()
    }
}
