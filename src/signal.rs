//! The vocabulary of a kill: which signal, which statement, what happened.

use std::fmt;

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

/// One statement of a session: the generation that [`reset`] advances.
///
/// Every kill, waiter and hook belongs to exactly one `StatementId`. Ids of
/// one killer increase by one per `reset` and wrap after 2^52 statements
/// (over a century at a million statements per second).
///
/// [`reset`]: crate::SqlKiller::reset
///
/// ```
/// use sqlkiller::SqlKiller;
///
/// let killer = SqlKiller::new();
/// let first = killer.statement();
/// killer.reset();
/// assert_ne!(killer.statement(), first);
/// assert_eq!(killer.statement().as_u64(), first.as_u64() + 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementId(pub(crate) u64);

impl StatementId {
    /// The generation number, for logs and process lists.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl From<StatementId> for u64 {
    fn from(id: StatementId) -> u64 {
        id.0
    }
}

impl fmt::Display for StatementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement #{}", self.0)
    }
}

/// What a kill request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KillOutcome {
    /// This call won: its signal is the statement's, its side effects are published.
    Sent,
    /// Another kill won this statement first; this is its signal. Nothing changed.
    AlreadyKilled(KillSignal),
    /// The targeted statement has already ended. Nothing changed.
    Stale,
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
