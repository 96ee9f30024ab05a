//! The two log lines TiDB writes, through `tracing` when the `tracing` feature is on, else nothing.

use crate::KillSignal;

/// A kill won its generation (TiDB: `"kill initiated"`).
#[inline]
pub(crate) fn kill_initiated(conn_id: u64, signal: KillSignal, reason: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(conn_id, %signal, reason, "kill initiated");
    #[cfg(not(feature = "tracing"))]
    let _ = (conn_id, signal, reason);
}

/// `reset` cleared a signal (TiDB: `"kill finished"`).
#[inline]
pub(crate) fn kill_finished(conn_id: u64, signal: KillSignal) {
    #[cfg(feature = "tracing")]
    tracing::warn!(conn_id, %signal, "kill finished");
    #[cfg(not(feature = "tracing"))]
    let _ = (conn_id, signal);
}
