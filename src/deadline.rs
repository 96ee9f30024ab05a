//! Statement deadlines: MySQL's `max_execution_time`, PostgreSQL's
//! `statement_timeout`, fired from the timer as targeted kills.

use std::time::Duration;

use crate::SqlKiller;

impl SqlKiller {
    /// Sets the session's statement time limit: from the next statement on,
    /// **every** statement that runs longer than `limit`, counted from the
    /// `reset` or [`start_statement`](SqlKiller::start_statement) that
    /// starts it until the [`end_statement`](SqlKiller::end_statement) (or
    /// next start) that ends it, is killed with
    /// [`MaxExecTimeExceeded`](crate::KillSignal::MaxExecTimeExceeded)
    /// (error 3024). `None` or zero: no limit (MySQL's 0). Nothing runs in
    /// the idle phase between an end and the next start.
    ///
    /// **The crate does not choose which statements are limited; you do.**
    /// MySQL's `max_execution_time` applies to read-only `SELECT`s only
    /// (not to `INSERT ... SELECT`, DDL or stored programs); TiDB's to
    /// `SELECT`s too. To follow MySQL, set the limit before starting a
    /// `SELECT` and clear it (`None`) before starting anything else, or use
    /// [`set_statement_timeout`](SqlKiller::set_statement_timeout) on the
    /// statements you limit. The limit read is the one set when the
    /// statement starts. A limit of
    /// 2^64 - 1 ns (about 584 years) or more never fires and reads back as
    /// `Duration::MAX`; every shorter one reads back exactly.
    ///
    /// The kill comes from the timer thread, as
    /// [`kill_statement`](SqlKiller::kill_statement) of that statement: it
    /// wakes the waiters and runs the cancel hook even if the owner is
    /// blocked and makes no checkpoint, and it can never kill another
    /// statement. The hook runs on a thread started for that kill, so a
    /// slow hook delays no other session's deadline (`reset` still waits
    /// for it); its panic is contained there. Arming costs each statement a clock read, two stores and
    /// one atomic RMW in `reset`, and no lock.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{KillError, ManualClock, SqlKiller};
    ///
    /// let clock = ManualClock::new();
    /// let killer = SqlKiller::with_clock(&clock);
    /// killer.set_max_execution_time(Some(Duration::from_millis(100)));
    /// killer.reset(); // the next statement starts: its deadline is armed
    /// clock.advance(Duration::from_millis(99));
    /// assert!(killer.handle_signal().is_ok());
    /// clock.advance(Duration::from_millis(1));
    /// assert_eq!(killer.handle_signal(), Err(KillError::MaxExecTimeExceeded));
    /// ```
    pub fn set_max_execution_time(&self, limit: Option<Duration>) {
        self.shared.set_max_execution_time(limit)
    }

    /// The session's `max_execution_time`, if any.
    pub fn max_execution_time(&self) -> Option<Duration> {
        self.shared.max_execution_time()
    }

    /// Sets a deadline for the current statement only, `timeout` from now,
    /// like MySQL's `MAX_EXECUTION_TIME` hint: it replaces the deadline that
    /// `max_execution_time` gave this statement. The next `reset` drops it.
    /// `Duration::ZERO` puts the deadline at now: the timer kills the
    /// statement at once (on a [`ManualClock`](crate::ManualClock), at the
    /// next `advance`), not this call. 584 years or more
    /// (`Duration::MAX`) is no deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use sqlkiller::{ManualClock, SqlKiller};
    ///
    /// let clock = ManualClock::new();
    /// let killer = SqlKiller::with_clock(&clock);
    /// killer.set_statement_timeout(Duration::from_secs(1));
    /// killer.reset(); // the statement ended in time
    /// clock.advance(Duration::from_secs(5));
    /// assert!(killer.handle_signal().is_ok(), "neither it nor the next one is killed");
    /// ```
    pub fn set_statement_timeout(&self, timeout: Duration) {
        self.shared.set_statement_timeout(timeout)
    }
}
