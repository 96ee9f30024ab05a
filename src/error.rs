//! The error a killed statement reports: MySQL/TiDB codes, SQLSTATEs and messages.

use std::borrow::Cow;

use crate::KillSignal;

/// The text TiDB puts in the runaway message when no reason was given.
pub(crate) const RUNAWAY_DEFAULT_DETAIL: &str = "runaway exceed tidb side";

/// The error [`handle_signal`] returns once the current statement is killed.
///
/// Codes, SQLSTATEs and messages are TiDB's, so a client sees the
/// same error from a port. `conn_id` is the connection id when the error was
/// built; `reason` is the text given to
/// [`send_kill_signal_with_reason`] (empty if none).
///
/// [`handle_signal`]: crate::SqlKiller::handle_signal
/// [`send_kill_signal_with_reason`]: crate::SqlKiller::send_kill_signal_with_reason
///
/// ```
/// use sqlkiller::{KillError, KillSignal, SqlKiller};
///
/// let killer = SqlKiller::new();
/// killer.set_conn_id(42);
/// let _ = killer.send_kill_signal(KillSignal::QueryMemoryExceeded);
/// let err = killer.handle_signal().unwrap_err();
/// assert_eq!(err, KillError::QueryMemoryExceeded { conn_id: 42 });
/// assert_eq!((err.code(), err.sqlstate()), (8175, "HY000"));
/// assert!(err.to_string().ends_with("[conn=42]"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum KillError {
    /// [`KillSignal::QueryInterrupted`]: 1317, SQLSTATE 70100.
    #[error("Query execution was interrupted")]
    QueryInterrupted,
    /// [`KillSignal::MaxExecTimeExceeded`]: 3024, SQLSTATE HY000.
    #[error("Query execution was interrupted, maximum statement execution time exceeded")]
    MaxExecTimeExceeded,
    /// [`KillSignal::QueryMemoryExceeded`]: 8175, SQLSTATE HY000.
    #[error(
        "Your query has been cancelled due to exceeding the allowed memory limit for a single \
         SQL query. Please try narrowing your query scope or increase the tidb_mem_quota_query \
         limit and try again.[conn={conn_id}]"
    )]
    QueryMemoryExceeded {
        /// Connection id when the error was built.
        conn_id: u64,
    },
    /// [`KillSignal::ServerMemoryExceeded`]: 8176, SQLSTATE HY000.
    #[error(
        "Your query has been cancelled due to exceeding the allowed memory limit for the \
         tidb-server instance and this query is currently using the most memory. Please try \
         narrowing your query scope or increase the tidb_server_memory_limit and try again.\
         [conn={conn_id}]"
    )]
    ServerMemoryExceeded {
        /// Connection id when the error was built.
        conn_id: u64,
    },
    /// [`KillSignal::RunawayQueryExceeded`]: 8253, SQLSTATE HY000.
    ///
    /// `detail` is the kill's reason text, or TiDB's fixed
    /// `runaway exceed tidb side` when the kill gave none.
    #[error("Query execution was interrupted, identified as runaway query [{detail}]")]
    RunawayQueryExceeded {
        /// The reason text, or `runaway exceed tidb side`.
        detail: Cow<'static, str>,
    },
    /// [`KillSignal::KilledByMemArbitrator`]: 8180, SQLSTATE HY000.
    #[error(
        "Query execution was stopped by the global memory arbitrator [reason={reason}] \
         [conn={conn_id}]"
    )]
    KilledByMemArbitrator {
        /// The reason text given with the kill (empty if none).
        reason: Cow<'static, str>,
        /// Connection id when the error was built.
        conn_id: u64,
    },
}

impl KillError {
    /// Builds the error for `signal` as the killer would report it.
    /// Allocates only to copy a non-empty reason.
    ///
    /// ```
    /// use sqlkiller::{KillError, KillSignal};
    ///
    /// let err = KillError::new(KillSignal::RunawayQueryExceeded, 7, "");
    /// assert_eq!(
    ///     err.to_string(),
    ///     "Query execution was interrupted, identified as runaway query [runaway exceed tidb side]"
    /// );
    /// ```
    pub fn new(signal: KillSignal, conn_id: u64, reason: &str) -> KillError {
        match signal {
            KillSignal::QueryInterrupted => KillError::QueryInterrupted,
            KillSignal::MaxExecTimeExceeded => KillError::MaxExecTimeExceeded,
            KillSignal::QueryMemoryExceeded => KillError::QueryMemoryExceeded { conn_id },
            KillSignal::ServerMemoryExceeded => KillError::ServerMemoryExceeded { conn_id },
            KillSignal::RunawayQueryExceeded => KillError::RunawayQueryExceeded {
                detail: if reason.is_empty() {
                    Cow::Borrowed(RUNAWAY_DEFAULT_DETAIL)
                } else {
                    Cow::Owned(reason.to_owned())
                },
            },
            KillSignal::KilledByMemArbitrator => KillError::KilledByMemArbitrator {
                reason: owned_unless_empty(reason),
                conn_id,
            },
        }
    }

    /// The signal this error reports.
    pub fn signal(&self) -> KillSignal {
        match self {
            KillError::QueryInterrupted => KillSignal::QueryInterrupted,
            KillError::MaxExecTimeExceeded => KillSignal::MaxExecTimeExceeded,
            KillError::QueryMemoryExceeded { .. } => KillSignal::QueryMemoryExceeded,
            KillError::ServerMemoryExceeded { .. } => KillSignal::ServerMemoryExceeded,
            KillError::RunawayQueryExceeded { .. } => KillSignal::RunawayQueryExceeded,
            KillError::KilledByMemArbitrator { .. } => KillSignal::KilledByMemArbitrator,
        }
    }

    /// The MySQL/TiDB error code (1317, 3024, 8175, 8176, 8253 or 8180).
    pub fn code(&self) -> u16 {
        match self.signal() {
            KillSignal::QueryInterrupted => 1317,
            KillSignal::MaxExecTimeExceeded => 3024,
            KillSignal::QueryMemoryExceeded => 8175,
            KillSignal::ServerMemoryExceeded => 8176,
            KillSignal::RunawayQueryExceeded => 8253,
            KillSignal::KilledByMemArbitrator => 8180,
        }
    }

    /// The SQLSTATE: `70100` for an interrupted query, `HY000` otherwise.
    pub fn sqlstate(&self) -> &'static str {
        match self.signal() {
            KillSignal::QueryInterrupted => "70100",
            _ => "HY000",
        }
    }
}

fn owned_unless_empty(text: &str) -> Cow<'static, str> {
    if text.is_empty() {
        Cow::Borrowed("")
    } else {
        Cow::Owned(text.to_owned())
    }
}

/// A finish-function call that would wait for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    /// `finish_result_set` called from inside the running finish function,
    /// on its own thread.
    #[error("finish_result_set called from inside the finish function, which it would wait for")]
    ReentrantFinish,
    /// `clear_finish_func` called from inside the running finish function,
    /// on its own thread: the function is cleared, but is still running.
    #[error("clear_finish_func called from inside the finish function, which it would wait for")]
    ReentrantClear,
}
