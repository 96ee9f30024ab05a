//! The vocabulary of a kill: which signal, which statement, what happened.

use std::fmt;
use std::time::Duration;

/// Why a statement is being stopped.
///
/// The raw values are TiDB's (`pkg/util/sqlkiller`), so a port maps them one
/// to one; `0` means "no signal" there and is not a `KillSignal` here.
///
/// ```
/// use sqlkiller::KillSignal;
///
/// assert_eq!(u32::from(KillSignal::MaxExecTimeExceeded), 2);
/// assert_eq!(KillSignal::try_from(3), Ok(KillSignal::QueryMemoryExceeded));
/// assert!(KillSignal::try_from(0).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
#[non_exhaustive]
pub enum KillSignal {
    /// `KILL QUERY`, or a dead client connection (error 1317).
    QueryInterrupted = 1,
    /// The `max_execution_time` watchdog fired (error 3024).
    MaxExecTimeExceeded = 2,
    /// The statement went over its own memory quota (error 8175).
    QueryMemoryExceeded = 3,
    /// The server is out of memory and this statement uses the most (error 8176).
    ServerMemoryExceeded = 4,
    /// The resource group's runaway-query rule fired (error 8253).
    RunawayQueryExceeded = 5,
    /// The global memory arbitrator stopped the statement (error 8180).
    KilledByMemArbitrator = 6,
}

impl KillSignal {
    /// Every signal, in raw-value order.
    pub const ALL: [KillSignal; 6] = [
        KillSignal::QueryInterrupted,
        KillSignal::MaxExecTimeExceeded,
        KillSignal::QueryMemoryExceeded,
        KillSignal::ServerMemoryExceeded,
        KillSignal::RunawayQueryExceeded,
        KillSignal::KilledByMemArbitrator,
    ];

    /// The raw value (TiDB's `killSignal` constant).
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The signal with raw value `raw`, if there is one (1 to 6).
    pub const fn from_u32(raw: u32) -> Option<KillSignal> {
        match raw {
            1 => Some(KillSignal::QueryInterrupted),
            2 => Some(KillSignal::MaxExecTimeExceeded),
            3 => Some(KillSignal::QueryMemoryExceeded),
            4 => Some(KillSignal::ServerMemoryExceeded),
            5 => Some(KillSignal::RunawayQueryExceeded),
            6 => Some(KillSignal::KilledByMemArbitrator),
            _ => None,
        }
    }
}

impl From<KillSignal> for u32 {
    fn from(signal: KillSignal) -> u32 {
        signal.as_u32()
    }
}

impl TryFrom<u32> for KillSignal {
    type Error = InvalidKillSignal;

    fn try_from(raw: u32) -> Result<Self, Self::Error> {
        KillSignal::from_u32(raw).ok_or(InvalidKillSignal(raw))
    }
}

impl fmt::Display for KillSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A raw value that names no [`KillSignal`] (anything but 1 to 6).
///
/// ```
/// use sqlkiller::{InvalidKillSignal, KillSignal};
///
/// let err = KillSignal::try_from(0).unwrap_err();
/// assert_eq!(err, InvalidKillSignal(0));
/// assert_eq!(err.to_string(), "invalid kill signal 0: expected a raw value from 1 to 6");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid kill signal {0}: expected a raw value from 1 to 6")]
pub struct InvalidKillSignal(pub u32);

/// One statement of one session: the generation that [`reset`] advances,
/// and the identity of the killer it belongs to.
///
/// Every kill, waiter and hook belongs to exactly one `StatementId`. Ids
/// carry their killer's identity, so an id taken from one session never
/// matches a statement of another: a kill, hook or event aimed at a
/// foreign id is `Stale` (or `Reset`). Within a session the sequence
/// number increases by one per statement end (`reset`, `start_statement`,
/// `end_statement`: the idle phase has a number of its own) and wraps after
/// 2^44 (half a year at a million ends per second); a session of a
/// [`ProcessList`](crate::ProcessList) takes its numbers from the list's
/// one counter instead, so they are unique in the list and not
/// consecutive. Ids compare for equality only, since wrapping makes
/// "older" meaningless.
///
/// [`reset`]: crate::SqlKiller::reset
///
/// ```
/// use sqlkiller::{KillOutcome, KillSignal, SqlKiller};
///
/// let killer = SqlKiller::new();
/// let first = killer.statement();
/// killer.reset();
/// assert_ne!(killer.statement(), first);
/// assert_eq!(killer.statement().as_u64(), first.as_u64() + 1);
///
/// // Another session at the same sequence number is another statement.
/// let other = SqlKiller::new();
/// assert_eq!(other.statement().as_u64(), first.as_u64());
/// assert_eq!(killer.kill_statement(other.statement(), KillSignal::QueryInterrupted), KillOutcome::Stale);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatementId {
    /// The killer's identity, unique in the process.
    pub(crate) killer: u64,
    pub(crate) generation: u64,
}

impl StatementId {
    /// The statement's sequence number within its session, for logs and
    /// process lists.
    pub const fn as_u64(self) -> u64 {
        self.generation
    }
}

impl fmt::Debug for StatementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatementId({}#{})", self.killer, self.generation)
    }
}

impl fmt::Display for StatementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement #{}", self.generation)
    }
}

/// What a kill request did.
#[must_use = "a kill may not have landed: `Stale`, `AlreadyKilled` and `Idle` say why"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillOutcome {
    /// This call won: its signal is the statement's, its side effects are published.
    Sent,
    /// Another kill won this statement first (or, for a session that was
    /// killed as a whole and is idle, the session); this is its signal.
    /// Nothing changed.
    AlreadyKilled(KillSignal),
    /// The targeted statement has already ended (or the session is
    /// closed). Nothing changed.
    Stale,
    /// The session is idle, between statements: there is no current query
    /// to kill. Nothing changed, and the next statement is not affected
    /// (as MySQL skips a `KILL QUERY` on an idle connection). A session is
    /// idle after [`SqlKiller::end_statement`](crate::SqlKiller::end_statement),
    /// and a session of a [`ProcessList`](crate::ProcessList) from its
    /// registration to its first statement; one that only calls `reset`
    /// is idle at no other time.
    Idle,
}

/// Where a session is, as a process list shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionPhase {
    /// Between statements.
    Idle,
    /// Running a statement that is not killed.
    Running,
    /// Running a statement killed with this signal, which has not ended yet.
    Killed(KillSignal),
}

/// Where the current statement is in its life.
///
/// ```text
/// Idle(g) --kill--> Killing(g, s) --side effects published--> Killed(g, s)
/// Idle(g) | Killed(g, s) --reset--> Idle(g + 1)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillPhase {
    /// Not killed.
    Idle,
    /// Killed with this signal; the winning killer is still publishing its
    /// side effects (reason, waiters, cancel hook, log line).
    Killing(KillSignal),
    /// Killed with this signal; every side effect is published.
    Killed(KillSignal),
}

impl KillPhase {
    /// The signal, unless idle.
    pub const fn signal(self) -> Option<KillSignal> {
        match self {
            KillPhase::Idle => None,
            KillPhase::Killing(s) | KillPhase::Killed(s) => Some(s),
        }
    }
}

/// How a kill event ended.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitOutcome {
    /// The statement was killed with this signal.
    Killed(KillSignal),
    /// The statement ended (`reset`, or the session closed) without being
    /// killed — or it had already ended when the event was created.
    Reset,
}

/// What [`SqlKiller::set_cancel_hook`](crate::SqlKiller::set_cancel_hook) or [`SqlKiller::set_cancel_hook_for`](crate::SqlKiller::set_cancel_hook_for)
/// did with the hook.
#[must_use = "a hook may have been refused (`Stale`) or run already (`Ran`)"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HookStatus {
    /// Installed: it runs once if this statement is killed (deferred to the
    /// end of a kill-immune section), or is dropped un-run by `reset`.
    Armed,
    /// The statement had already been killed: the hook ran before the
    /// install returned, on the installing thread.
    Ran,
    /// The statement named had already ended: the hook was dropped un-run
    /// and nothing was changed (a late RPC thread cannot replace the hook
    /// of the next statement).
    Stale,
}

/// Default probe interval (TiDB's `checkConnectionAliveDur`).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Names one installed liveness probe, so that a cleanup removes only its
/// own probe (see [`SqlKiller::clear_connection_alive_probe_if`](crate::SqlKiller::clear_connection_alive_probe_if)).
///
/// Unique per killer: every install gets a new id.
#[must_use = "keep the id to clear exactly this probe later"]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeId(u64);

impl ProbeId {
    pub(crate) const fn new(id: u64) -> ProbeId {
        ProbeId(id)
    }

    pub(crate) const fn get(self) -> u64 {
        self.0
    }
}
