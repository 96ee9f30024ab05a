//! The liveness probe: `handle_signal` asks it, once per interval, whether the client is still there.
//!
//! TiDB reads the clock on every `HandleSignal`. Here the checkpoint reads
//! no clock: the timer marks the probe due in the state word
//! when the interval has passed, as PostgreSQL's timeout handlers set a
//! flag for `CHECK_FOR_INTERRUPTS`, and the owner's next `handle_signal`
//! runs it. The first interval of a statement starts at its `reset`
//! (TiDB clears `lastCheckTime` there); each run starts the next interval.
//! A dead client is therefore found at the first checkpoint after one
//! interval, whatever the checkpoint rate was before.

use std::sync::Arc;
use std::time::Duration;

use crate::{ProbeId, SqlKiller};

impl SqlKiller {
    /// Installs the liveness probe (TiDB `IsConnectionAlive`): a function
    /// that returns `false` once the client connection is gone.
    ///
    /// `handle_signal` then asks it once per probe interval (default 1 s,
    /// see [`set_probe_interval`](SqlKiller::set_probe_interval)): at the
    /// first checkpoint after the interval has passed, whatever the
    /// checkpoint rate was before; and kills the statement with
    /// `QueryInterrupted` when it says `false` — through the same path as
    /// `send_kill_signal`, so waiters wake and the cancel hook runs. The
    /// first interval of each statement starts at its `reset` (here, at the
    /// install). The probe survives `reset`. Installing replaces any other
    /// probe. The checkpoint stays one load and a mask test: the timer marks
    /// the probe due. A due probe runs inside a kill-immune section too; its
    /// kill is deferred and reported after the section.
    ///
    /// Returns the probe's id, for
    /// [`clear_connection_alive_probe_if`](SqlKiller::clear_connection_alive_probe_if).
    ///
    /// **Panics.** A probe that panics panics the `handle_signal` or
    /// `check_connection_alive` that ran it; the probe stays installed and
    /// the killer usable (the next interval runs it again).
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{KillError, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// killer.set_probe_interval(Duration::ZERO); // probe at every checkpoint
    /// killer.set_connection_alive_probe(|| false); // the client hung up
    /// assert_eq!(killer.handle_signal(), Err(KillError::QueryInterrupted));
    /// ```
    pub fn set_connection_alive_probe(
        &self,
        probe: impl Fn() -> bool + Send + Sync + 'static,
    ) -> ProbeId {
        self.shared.set_connection_alive_probe(Arc::new(probe))
    }

    /// Removes the liveness probe, whichever it is; `handle_signal` is back
    /// to one load. A cleanup that may run after someone else installed a
    /// newer probe should use
    /// [`clear_connection_alive_probe_if`](SqlKiller::clear_connection_alive_probe_if).
    pub fn clear_connection_alive_probe(&self) {
        self.shared.clear_connection_alive_probe()
    }

    /// Removes the liveness probe only if it is still probe `id`, and says
    /// whether it did: a stale cleanup never removes a newer probe (TiDB
    /// clears its alive-callback with a compare-and-swap for this reason).
    ///
    /// ```
    /// use sqlkiller::SqlKiller;
    ///
    /// let killer = SqlKiller::new();
    /// let old = killer.set_connection_alive_probe(|| true);
    /// let new = killer.set_connection_alive_probe(|| true); // a reconnect replaced it
    /// assert!(!killer.clear_connection_alive_probe_if(old)); // the old cleanup: no effect
    /// assert!(killer.clear_connection_alive_probe_if(new));
    /// assert!(!killer.clear_connection_alive_probe_if(new)); // already gone
    /// ```
    pub fn clear_connection_alive_probe_if(&self, id: ProbeId) -> bool {
        self.shared.clear_connection_alive_probe_if(id)
    }

    /// Sets how often `handle_signal` runs the probe (default 1 s), starting
    /// a new interval now. `Duration::ZERO` probes at every checkpoint and
    /// never reads the clock.
    pub fn set_probe_interval(&self, interval: Duration) {
        self.shared.set_probe_interval(interval)
    }

    /// Runs the probe now, whatever the interval (TiDB
    /// `CheckConnectionAlive`); if it says the connection is dead, kills the
    /// statement that was current when it started with `QueryInterrupted`.
    /// Returns what the probe said (`true` without a probe).
    ///
    /// ```
    /// use sqlkiller::{KillSignal, SqlKiller};
    ///
    /// let killer = SqlKiller::new();
    /// assert!(killer.check_connection_alive());
    /// killer.set_connection_alive_probe(|| false);
    /// assert!(!killer.check_connection_alive());
    /// assert_eq!(killer.kill_signal(), Some(KillSignal::QueryInterrupted));
    /// ```
    pub fn check_connection_alive(&self) -> bool {
        self.shared.check_connection_alive()
    }
}
