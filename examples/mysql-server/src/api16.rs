//! TEMPORARY stand-in for the issue-16 session API, built on sqlkiller 0.2,
//! until the real one lands on main. Deleted then.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlkiller::{KillError, KillHandle, KillOutcome, KillSignal, SqlKiller, StatementId};

type Hook = Arc<dyn Fn(KillSignal) + Send + Sync>;

#[derive(Clone, Default)]
pub struct ProcessList(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<u64, Arc<Entry>>,
    next_query: u64,
}

struct Entry {
    conn_id: u64,
    handle: KillHandle,
    state: Mutex<EntryState>,
    killed_tx: tokio::sync::watch::Sender<Option<KillSignal>>,
}

#[derive(Default)]
struct EntryState {
    running: Option<(StatementId, u64, Instant)>,
    killed_at: Option<(Instant, KillSignal)>,
    session_killed: Option<KillSignal>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ProcessListError {
    DuplicateConnId(u64),
    NoSuchConn(u64),
    NoSuchQuery(u64),
}

impl std::fmt::Display for ProcessListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

pub struct Kill {
    pub outcome: KillOutcome,
    pub statement: Option<StatementId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPhase {
    Idle,
    Running,
    Killed(KillSignal),
}

#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub conn_id: u64,
    pub query_id: Option<u64>,
    pub statement: Option<StatementId>,
    pub phase: SessionPhase,
    pub time_in_statement: Duration,
    pub killed_for: Option<Duration>,
    pub session_killed: bool,
}

impl ProcessList {
    pub fn new() -> ProcessList {
        ProcessList::default()
    }

    pub fn register(&self, conn_id: u64) -> Result<Session, ProcessListError> {
        let mut inner = self.0.lock().unwrap();
        if inner.sessions.contains_key(&conn_id) {
            return Err(ProcessListError::DuplicateConnId(conn_id));
        }
        let killer = SqlKiller::new();
        killer.set_conn_id(conn_id);
        let entry = Arc::new(Entry {
            conn_id,
            handle: killer.handle(),
            state: Mutex::default(),
            killed_tx: tokio::sync::watch::channel(None).0,
        });
        inner.sessions.insert(conn_id, entry.clone());
        Ok(Session {
            killer,
            entry,
            list: self.clone(),
            hook: Mutex::new(None),
        })
    }

    fn entry(&self, conn_id: u64) -> Result<Arc<Entry>, ProcessListError> {
        let inner = self.0.lock().unwrap();
        inner
            .sessions
            .get(&conn_id)
            .cloned()
            .ok_or(ProcessListError::NoSuchConn(conn_id))
    }

    fn kill_running(entry: &Entry, signal: KillSignal, reason: &str) -> Kill {
        let mut state = entry.state.lock().unwrap();
        match state.running {
            None => Kill {
                outcome: KillOutcome::Stale,
                statement: None,
            },
            Some((id, _, _)) => {
                let outcome = entry.handle.kill_statement_with_reason(id, signal, reason);
                if outcome == KillOutcome::Sent {
                    state.killed_at = Some((Instant::now(), signal));
                }
                Kill {
                    outcome,
                    statement: Some(id),
                }
            }
        }
    }

    pub fn kill_query(
        &self,
        conn_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let entry = self.entry(conn_id)?;
        Ok(Self::kill_running(&entry, signal, reason))
    }

    pub fn kill_query_id(
        &self,
        query_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let entries: Vec<_> = self.0.lock().unwrap().sessions.values().cloned().collect();
        for entry in entries {
            let mut state = entry.state.lock().unwrap();
            if let Some((id, q, _)) = state.running {
                if q == query_id {
                    let outcome = entry.handle.kill_statement_with_reason(id, signal, reason);
                    if outcome == KillOutcome::Sent {
                        state.killed_at = Some((Instant::now(), signal));
                    }
                    return Ok(Kill {
                        outcome,
                        statement: Some(id),
                    });
                }
            }
        }
        Err(ProcessListError::NoSuchQuery(query_id))
    }

    pub fn kill_connection(
        &self,
        conn_id: u64,
        signal: KillSignal,
        reason: &str,
    ) -> Result<Kill, ProcessListError> {
        let entry = self.entry(conn_id)?;
        {
            let mut state = entry.state.lock().unwrap();
            if state.session_killed.is_some() {
                return Ok(Kill {
                    outcome: KillOutcome::AlreadyKilled(signal),
                    statement: None,
                });
            }
            state.session_killed = Some(signal);
        }
        let kill = Self::kill_running(&entry, signal, reason);
        entry.killed_tx.send_replace(Some(signal));
        Ok(Kill {
            outcome: KillOutcome::Sent,
            statement: kill.statement,
        })
    }

    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        let entries: Vec<_> = self.0.lock().unwrap().sessions.values().cloned().collect();
        entries
            .iter()
            .map(|e| {
                let s = e.state.lock().unwrap();
                let phase = match (s.running, s.killed_at) {
                    (None, _) => SessionPhase::Idle,
                    (Some(_), Some((_, sig))) => SessionPhase::Killed(sig),
                    (Some(_), None) => SessionPhase::Running,
                };
                ProcessInfo {
                    conn_id: e.conn_id,
                    query_id: s.running.map(|r| r.1),
                    statement: s.running.map(|r| r.0),
                    phase,
                    time_in_statement: s.running.map(|r| r.2.elapsed()).unwrap_or_default(),
                    killed_for: s.killed_at.filter(|_| s.running.is_some()).map(|k| k.0.elapsed()),
                    session_killed: s.session_killed.is_some(),
                }
            })
            .collect()
    }
}

pub struct Session {
    killer: SqlKiller,
    entry: Arc<Entry>,
    list: ProcessList,
    hook: Mutex<Option<Hook>>,
}

impl Deref for Session {
    type Target = SqlKiller;
    fn deref(&self) -> &SqlKiller {
        &self.killer
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.list.0.lock().unwrap().sessions.remove(&self.entry.conn_id);
    }
}

pub struct SessionKilled(tokio::sync::watch::Receiver<Option<KillSignal>>);

impl SessionKilled {
    pub async fn wait(mut self) -> KillSignal {
        loop {
            if let Some(sig) = *self.0.borrow_and_update() {
                return sig;
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Session {
    pub fn set_session_cancel_hook(&self, hook: impl Fn(KillSignal) + Send + Sync + 'static) {
        *self.hook.lock().unwrap() = Some(Arc::new(hook));
    }

    pub fn session_killed(&self) -> SessionKilled {
        SessionKilled(self.entry.killed_tx.subscribe())
    }

    pub fn start_statement(&self) -> Result<StatementId, KillError> {
        let _ = self.end_statement();
        let mut inner = self.list.0.lock().unwrap();
        let mut state = self.entry.state.lock().unwrap();
        if let Some(sig) = state.session_killed {
            return Err(KillError::new(sig, self.entry.conn_id, ""));
        }
        self.killer.reset();
        let id = self.killer.statement();
        inner.next_query += 1;
        state.running = Some((id, inner.next_query, Instant::now()));
        state.killed_at = None;
        if let Some(hook) = self.hook.lock().unwrap().clone() {
            let handle = self.killer.handle();
            let _ = self.killer.set_cancel_hook(move || hook(handle.kill_signal().unwrap_or(KillSignal::QueryInterrupted)));
        }
        Ok(id)
    }

    pub fn end_statement(&self) -> Result<(), KillError> {
        let mut state = self.entry.state.lock().unwrap();
        if state.running.take().is_none() {
            return Ok(());
        }
        state.killed_at = None;
        drop(state);
        match self.killer.reset() {
            Some(sig) => Err(KillError::new(sig, self.entry.conn_id, "")),
            None => Ok(()),
        }
    }

    pub async fn start_statement_async(&self) -> Result<StatementId, KillError> {
        self.start_statement()
    }

    pub async fn end_statement_async(&self) -> Result<(), KillError> {
        self.end_statement()
    }
}
