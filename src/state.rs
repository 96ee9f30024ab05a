//! The state word: generation, phase, signal and side-channel flags in one `u64`.
//!
//! Everything a killer and the owner race on is decided by read-modify-writes
//! on this one word, so no reader ever sees a torn state and every transition
//! is a single CAS, swap or `fetch_or`.
//!
//! ```text
//!  63           14     13       12     11    10    9      8     7    6       5      4..2    1       0
//! +---------------+---------+------+------+----+------+-----+----+-------+------+-------+-------+-------+
//! |  generation   |PROBE_DUE|CLOSED|PARKED|OWED|IMMUNE|PROBE|HOOK|WAITERS|REASON|signal |KILLED |KILLING|
//! +---------------+---------+------+------+----+------+-----+----+-------+------+-------+-------+-------+
//!
//!  Idle(g)       = KILLING clear                        (signal = 0)
//!  Killing(g, s) = KILLING set, KILLED clear            (signal = s)
//!  Killed(g, s)  = KILLING and KILLED set               (signal = s)
//! ```
//!
//! # Invariants
//!
//! The crate's contract, I1 to I9. Each names the loom models (in
//! `loom-tests/tests/`) that check it over every interleaving, and the
//! broken twins (deliberately buggy models) that loom rejects; the tables in
//! `docs/VERIFICATION.md` give their bounds and costs.
//!
//! 1. **I1 first writer wins.** The only way out of `Idle(g)` towards a kill
//!    is a CAS that installs `KILLING | signal`; exactly one CAS per generation
//!    can succeed, and everyone else reads the winner's signal from the word
//!    their CAS failed on. Models: `two_killers_race`, `three_killers_race`.
//! 2. **I2 no lost kill.** The winning CAS is a Release; `handle_signal`
//!    loads with Acquire, so any check that starts after `Sent` returned reads
//!    the kill or a later state. Models: `kill_then_check`,
//!    `kill_races_check`; broken twin `broken_kill_as_load_then_store` (I1).
//!    Waiters: registering sets `WAITERS` with an RMW, so either the kill's
//!    CAS sees it and wakes them, or the registration sees the signal.
//!    Models: `waiter_registers_while_kill_fires`,
//!    `async_waiter_registers_while_kill_fires`, `waiter_races_reset`,
//!    `future_waker_replaced_while_kill_fires`,
//!    `future_dropped_while_kill_fires`; broken twins:
//!    `broken_check_then_sleep_waiter`, `broken_waker_replaced_in_two_steps`.
//! 3. **I3 no stale kill.** A targeted kill compares the generation inside the
//!    same CAS that installs the signal, so it cannot land on another
//!    generation; `reset` is one CAS from `Idle`/`Killed`, so a racing kill
//!    lands on exactly one side of it. Models: `kill_statement_races_reset`,
//!    `kill_races_reset`; broken twins: `broken_stale_kill_check_then_act`,
//!    `broken_reset_as_load_then_store` (TiDB #70545 / PR #70557).
//!    Callbacks are scoped the same way: a hook installed for statement g
//!    compares g inside the RMW that sets `HOOK` (else `Stale`), the probe
//!    kills with a targeted kill, and a probe is cleared by id under the
//!    lock. Models: `stale_hook_install_races_reset`, `probe_races_reset`,
//!    `probe_path_of_handle_signal_races_reset`,
//!    `stale_probe_clear_races_install`; broken twins:
//!    `broken_hook_install_check_then_act`, `broken_probe_kill_untargeted`,
//!    `broken_probe_clear_unconditional`.
//! 4. **I4 no torn reason.** A kill with a reason holds the side-table lock
//!    across its CAS and sets `REASON` in it; readers of a `REASON` state take
//!    the same lock and re-check the generation, and a generation with
//!    `REASON` only ends under that lock. Models:
//!    `reason_seen_with_first_sight_of_signal`, `reason_travels_with_signal`;
//!    broken twin: `broken_reason_written_before_cas`.
//! 5. **I5 no data race.** Every field another thread can touch is an atomic
//!    or behind a lock; the connection id is an atomic. Model:
//!    `seed_55467_conn_id_races_reset`; broken twin:
//!    `broken_55467_plain_conn_id` (TiDB #55467).
//! 6. **I6 nobody hangs.** `reset` waits for `Killing` to become `Killed`, and
//!    the winner sets `KILLED` from a drop guard, so a panicking side effect
//!    still releases it. A hook taken out of the table is counted in
//!    `hook_runners` and uncounted by a guard that exists before any user
//!    code runs; every waker and the hook run under `catch_unwind`, so one
//!    panic skips no other wake-up, and the first panic is resumed last.
//!    No lock is held while user code runs. The owner waits by blocking,
//!    not spinning, once a short backoff is over: it sets `PARKED` with an
//!    RMW and the winner's `KILLED` RMW sees it (`wait.rs`). Models:
//!    `kill_races_reset`, `hook_races_reset`, `waiter_races_reset`,
//!    `panicking_hook_races_reset`, `panicking_waker_during_kill`,
//!    `hook_run_at_install_races_reset`; broken twins
//!    `broken_70545_reload_after_cas` (the nil lookup that panicked),
//!    `broken_hook_counted_without_a_guard`,
//!    `broken_reset_ignores_a_running_hook`,
//!    `broken_owner_parks_after_a_plain_check`.
//! 7. **I7 hooks exactly once.** Installing sets `HOOK` with an RMW under
//!    the side-table lock: a later kill takes the hook out of the table, an
//!    earlier one leaves it to the installer, who runs it at once; whoever
//!    runs a hook counts it in `hook_runners`, and `reset` waits for zero.
//!    Models: `hook_installed_while_kill_fires`, `hook_races_reset`,
//!    `hook_run_at_install_races_reset`; broken twin:
//!    `broken_70608_hook_published_after_check` (TiDB PR #70608).
//! 8. **I8 finish fence.** The finish function runs outside the lock with
//!    its runner recorded; `clear_finish_func` waits on a condvar until no
//!    run is in progress. Model: `finish_races_clear`; broken twin:
//!    `broken_finish_called_outside_the_fence`.
//! 9. **I9 immunity.** Entering and leaving a kill-immune section are RMWs
//!    on `IMMUNE`: a kill whose CAS saw `IMMUNE` leaves its waiters and hook
//!    to the end of the section, any other kill serves them itself, and
//!    entering waits for a kill that is still serving (or a hook still
//!    running). Leaving runs no user code: it sets `OWED`, and the owner's
//!    next operation (`release`, `handle_signal`, `reset`, `kill_immune`)
//!    claims `OWED` with an RMW and serves them. `handle_signal` reads the
//!    signal and `IMMUNE` in one load. Models: `kill_inside_guard`,
//!    `waiter_registers_inside_guard`,
//!    `hook_run_at_install_races_guard_entry`; broken twins:
//!    `broken_immunity_checked_then_acted_on`,
//!    `broken_waiter_ignores_the_section`,
//!    `broken_reset_ignores_a_running_hook`.
//!
//! # Deadlock safety
//!
//! The only lock is the side table's (`SqlKiller::side`). It is never held
//! while running user code (hooks, probes, finish functions, wakers), or
//! while dropping user values, and the only wait under it is a condition
//! variable wait, which releases it. The owner waits (spins briefly, then
//! blocks on `SqlKiller::progress`) only while the word says `Killing` or a
//! hook is running, and neither the killer nor a hook runner waits for
//! anything the owner holds. The waits a callback could close on itself
//! fail loudly instead: `reset` from inside this killer's own hook or waker
//! panics (`kill_immune` from there does not wait), and the finish-function calls return
//! `FinishError::Reentrant` from inside the finish function.

use crate::{KillPhase, KillSignal};

/// One snapshot of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(pub(crate) u64);

impl State {
    /// A kill won this generation. Set only by the winning CAS; cleared only by `reset`.
    pub(crate) const KILLING: u64 = 1;
    /// The winner has published every side effect. Set only by the winner
    /// (`fetch_or`, from a drop guard); `reset` waits for it.
    pub(crate) const KILLED: u64 = 1 << 1;
    const SIGNAL_SHIFT: u32 = 2;
    const SIGNAL_MASK: u64 = 0b111 << Self::SIGNAL_SHIFT;
    /// The side table's reason text belongs to this generation. Set by the
    /// winning CAS of a kill with a reason, while it holds the side-table
    /// lock; cleared by `reset` under the same lock.
    pub(crate) const REASON: u64 = 1 << 5;
    /// A waiter of this generation may be registered in the side table.
    pub(crate) const WAITERS: u64 = 1 << 6;
    /// A cancel hook of this generation may be installed in the side table.
    pub(crate) const HOOK: u64 = 1 << 7;
    /// A liveness probe is installed. Survives `reset`.
    pub(crate) const PROBE: u64 = 1 << 8;
    /// The owner holds a kill-immune guard. Survives `reset`.
    pub(crate) const IMMUNE: u64 = 1 << 9;
    /// A kill that won inside a kill-immune section still owes its waiters
    /// and hook. Set by the owner when the last guard ends; cleared by the
    /// owner operation that delivers them (`deliver_owed`). Never set while
    /// `IMMUNE` is.
    pub(crate) const OWED: u64 = 1 << 10;
    /// The owner is blocked until this generation's kill is `Killed`. Set
    /// by the owner (an RMW, under the side-table lock); the winner's
    /// `KILLED` RMW sees it and wakes the owner (`killer.rs`, `PublishOnDrop`).
    pub(crate) const PARKED: u64 = 1 << 11;
    /// The owner (`SqlKiller`) was dropped: the session is closed. Set once,
    /// by the CAS that ends its last statement; never cleared. Kills are
    /// then `Stale`, hooks `Stale`, new kill events complete at once.
    pub(crate) const CLOSED: u64 = 1 << 12;
    /// The probe of this generation is due: the owner's next
    /// `handle_signal` runs it. Set by the timer with a CAS that checks the
    /// generation (`time.rs`), or kept set while the probe interval is zero;
    /// cleared by the owner when it runs the probe, and by `reset`.
    pub(crate) const PROBE_DUE: u64 = 1 << 13;

    /// The phase bits.
    const PHASE: u64 = Self::KILLING | Self::KILLED;
    /// Bits that `reset` keeps: they describe the session, not the statement.
    const STICKY: u64 = Self::PROBE | Self::IMMUNE;
    /// Bits whose generation-local data lives in the side table: a `reset`
    /// that sees one must clear that data under the side-table lock.
    pub(crate) const SIDE_DATA: u64 = Self::REASON | Self::WAITERS | Self::HOOK;
    const GEN_SHIFT: u32 = 14;
    const LOW_MASK: u64 = (1 << Self::GEN_SHIFT) - 1;
    /// Every flag bit (for `Debug`).
    const FLAGS: u64 = Self::LOW_MASK & !(Self::KILLING | Self::KILLED | Self::SIGNAL_MASK);
    /// Anything that sends `handle_signal` off its fast path.
    const NOT_QUIET: u64 = Self::SIGNAL_MASK | Self::PROBE_DUE;

    /// `Idle(0)` with no flags: a new killer.
    pub(crate) const INITIAL: State = State(0);

    /// The statement's sequence number in its session (50 bits).
    pub(crate) const fn generation(self) -> u64 {
        self.0 >> Self::GEN_SHIFT
    }

    pub(crate) const fn signal(self) -> Option<KillSignal> {
        KillSignal::from_u32(((self.0 & Self::SIGNAL_MASK) >> Self::SIGNAL_SHIFT) as u32)
    }

    pub(crate) const fn phase(self) -> KillPhase {
        match self.signal() {
            None => KillPhase::Idle,
            Some(s) if self.0 & Self::KILLED == 0 => KillPhase::Killing(s),
            Some(s) => KillPhase::Killed(s),
        }
    }

    /// A winner is still publishing side effects: `reset` must wait.
    pub(crate) const fn is_killing(self) -> bool {
        self.0 & Self::PHASE == Self::KILLING
    }

    pub(crate) const fn has(self, flags: u64) -> bool {
        self.0 & flags != 0
    }

    /// Nothing for `handle_signal` to do: no signal, no probe due.
    #[inline(always)]
    pub(crate) const fn is_quiet(self) -> bool {
        self.0 & Self::NOT_QUIET == 0
    }

    /// No signal in this generation (a worker's fast path).
    #[inline(always)]
    pub(crate) const fn is_unkilled(self) -> bool {
        self.0 & Self::SIGNAL_MASK == 0
    }

    /// `Killing(g, signal)` from `Idle(g)`, keeping every flag. (Idle has
    /// the phase and signal bits clear, so adding them sets them.)
    pub(crate) const fn killing(self, signal: KillSignal) -> State {
        let killing = Self::KILLING + ((signal as u64) << Self::SIGNAL_SHIFT);
        State(self.0 + killing)
    }

    pub(crate) const fn with(self, flags: u64) -> State {
        State(self.0 | flags)
    }

    /// `Idle(g + 1)`, keeping only the session-wide bits. Wraps after 2^50.
    pub(crate) const fn next_generation(self) -> State {
        let generation = (self.0 & !Self::LOW_MASK).wrapping_add(1 << Self::GEN_SHIFT);
        // The generation and the sticky flags are disjoint: `+` is `|`.
        State(generation + (self.0 & Self::STICKY))
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.generation())
            .field("phase", &self.phase())
            .field("flags", &format_args!("{:#05x}", self.0 & Self::FLAGS))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip() {
        let idle = State::INITIAL;
        assert_eq!(idle.phase(), KillPhase::Idle);
        assert!(idle.is_quiet());
        for signal in KillSignal::ALL {
            let killing = idle.killing(signal);
            assert_eq!(killing.phase(), KillPhase::Killing(signal));
            assert!(killing.is_killing());
            assert!(!killing.is_quiet());
            let killed = killing.with(State::KILLED);
            assert_eq!(killed.phase(), KillPhase::Killed(signal));
            assert!(!killed.is_killing());
            assert_eq!(killed.generation(), idle.generation());
        }
    }

    #[test]
    fn reset_keeps_only_session_bits() {
        let s = State::INITIAL
            .with(State::PROBE | State::IMMUNE | State::HOOK | State::WAITERS | State::REASON)
            .killing(KillSignal::RunawayQueryExceeded)
            .with(State::KILLED);
        let next = s.next_generation();
        assert_eq!(next.generation(), 1);
        assert_eq!(next.phase(), KillPhase::Idle);
        assert!(next.has(State::PROBE) && next.has(State::IMMUNE));
        assert!(!next.has(State::SIDE_DATA));
    }

    #[test]
    fn debug_shows_generation_phase_and_flags() {
        let s = State::INITIAL
            .next_generation()
            .with(State::WAITERS | State::PROBE_DUE)
            .killing(KillSignal::QueryInterrupted);
        assert_eq!(
            format!("{s:?}"),
            "State { generation: 1, phase: Killing(QueryInterrupted), flags: 0x2040 }"
        );
        let all = State(u64::MAX);
        assert!(format!("{all:?}").ends_with("flags: 0x3fe0 }"), "{all:?}");
    }

    #[test]
    fn generation_wraps_after_2_pow_50() {
        let last = State(!State::LOW_MASK);
        assert_eq!(last.generation(), (1 << 50) - 1);
        assert_eq!(last.next_generation().generation(), 0);
    }
}
