//! The state word and every transition on it: a reader checks the whole machine in this file.
//!
//! Generation, phase, signal and the side channels' flags live in one
//! `u64`, owned by [`StateCell`]. Nothing outside this file touches the
//! atomic or names a flag: every access is a named transition that returns
//! a [`Snapshot`] (or an enum saying what to do next), and the crate's
//! proofs are about these transitions only.
//!
//! ```text
//!  bits  63..20      19       18..16          15            14       13         12      11      10    9       8      7     6        5       4..2     1       0
//!       generation  DEFERRED  session signal  SESSION_HOOK  BETWEEN  PROBE_DUE  CLOSED  PARKED  OWED  IMMUNE  PROBE  HOOK  WAITERS  REASON  signal  KILLED  KILLING
//!
//!  Idle(g)       = KILLING clear                        (signal = 0)
//!  Killing(g, s) = KILLING set, KILLED clear            (signal = s)
//!  Killed(g, s)  = KILLING and KILLED set               (signal = s)
//!  between statements (the session's idle phase) = BETWEEN set, always Idle(g)
//!  session killed (KILL CONNECTION)              = session signal != 0, never cleared
//! ```
//!
//! | transition | who | operation | why this one |
//! | --- | --- | --- | --- |
//! | [`transition_to_killing`](StateCell::transition_to_killing) | any killer | CAS loop from the owner's hint | first writer wins (I1); the generation is compared in the same CAS (I3) |
//! | [`transition_to_killed`](StateCell::transition_to_killed) | the winner, from a drop guard | `fetch_or`, Release | flags may be set concurrently; every side effect happens-before `reset` sees it (I6) |
//! | [`transition_to_next_statement`](StateCell::transition_to_next_statement) | owner (`reset`, drop) | one CAS from the exact state read | a kill racing it lands on exactly one side (I3, TiDB #70545) |
//! | [`register_waiter`](StateCell::register_waiter), [`arm_hook`](StateCell::arm_hook) | anyone, under the side-table lock | `fetch_or` | an RMW, never a load: the kill's CAS sees the flag or the caller sees the signal (I2, I7) |
//! | [`enter_section`](StateCell::enter_section) / [`leave_section`](StateCell::leave_section) | owner | `fetch_or` / one CAS loop | a kill sees `IMMUNE` and defers, or came first and is waited for; leaving turns a deferred kill into `OWED` in the same RMW (I9) |
//! | [`claim_owed`](StateCell::claim_owed) | owner | `fetch_and` | what a section deferred is served once |
//! | [`park_owner`](StateCell::park_owner) | owner, under the side-table lock | `fetch_or` | the winner's `KILLED` RMW sees `PARKED` and wakes it (I6) |
//! | probe marks | owner; the timer for [`mark_probe_due`](StateCell::mark_probe_due) | `fetch_or` / `fetch_and` / a CAS that checks the generation | a probe of statement g never runs in g + 1 (I3) |
//! | [`close`](StateCell::close) | the owner's drop inside its own callback | `fetch_or` | the session closes without waiting for the kill this thread runs |
//! | [`transition_to_session_killed`](StateCell::transition_to_session_killed) | any killer | CAS loop | the session signal and the running statement's kill land in one step: a statement start sees both or neither |
//! | [`arm_session_hook`](StateCell::arm_session_hook) | anyone, under the side-table lock | `fetch_or` | as `arm_hook`, for the hook that outlives statements |
//!
//! # Invariants
//!
//! The crate's contract; `docs/VERIFICATION.md` lists the loom models that
//! check each over every interleaving, and the broken twins loom rejects.
//!
//! 1. **I1 first writer wins.** The only way out of `Idle(g)` towards a kill
//!    is the CAS of `transition_to_killing`; one CAS per generation wins,
//!    every other caller reads the winner's signal from the word its CAS
//!    failed on.
//! 2. **I2 no lost kill.** The winning CAS is a Release; the checkpoint
//!    loads Relaxed and issues an Acquire fence before it acts on a signal,
//!    so a check that starts after `Sent` returned reads the kill (coherence)
//!    and everything the killer wrote before it (the fence). Waiters and
//!    hooks register with an RMW on the word: the kill sees them or they
//!    see the kill.
//! 3. **I3 no stale kill.** A targeted kill compares the generation in its
//!    CAS; `reset` is one CAS from the state it read. Hooks and probe marks
//!    compare the generation in their RMW too.
//! 4. **I4 no torn reason.** A kill with a reason holds the side-table lock
//!    across its CAS and sets `REASON`; a generation with `REASON` ends only
//!    under that lock, and readers re-check the generation under it.
//! 5. **I5 no data race.** Everything another thread touches is an atomic
//!    or behind a lock.
//! 6. **I6 nobody hangs.** The winner sets `KILLED` from a drop guard, so a
//!    panicking side effect still releases `reset`; a hook taken out of the
//!    table is counted by a guard that exists before user code runs; an
//!    owner that blocks sets `PARKED` with an RMW and is woken.
//! 7. **I7 hooks exactly once.** `HOOK` is set with an RMW under the lock:
//!    a later kill takes the hook, an earlier one leaves it to the
//!    installer, who runs it at once.
//! 8. **I8 finish fence.** `clear_finish_func` waits until no run of the
//!    finish function is in progress (the side table, not the word).
//! 9. **I9 immunity.** Entering and leaving a section are RMWs on
//!    `IMMUNE`; a kill whose CAS saw `IMMUNE` leaves its waiters and hook
//!    owed, and leaving turns them into `OWED` in the same RMW, claimed by
//!    the owner's next operation. The checkpoint reads the signal and
//!    `IMMUNE` in one load.
//!
//! # Deadlock safety
//!
//! There are two kinds of lock: each killer's side-table lock, and each
//! timer's queue lock (`clock.rs`); a deadline's hand-off slot
//! (`engine/timing.rs`) is a third, held only to move the kill's publish
//! guard between two threads, around nothing else. They never nest: the timer takes due
//! entries out of its queue, drops the queue lock, and only then serves
//! the sessions (which may take their side-table locks); arming a deadline
//! takes the queue lock while holding no side-table lock. No user code runs
//! and no user value is dropped under either lock, and the only waits
//! under a lock are condition-variable waits, which release it. The owner
//! waits only while this word says `Killing` or a hook of its statement is
//! running, and neither a killer nor a hook runner waits for anything the
//! owner holds. The waits that a callback could close on itself are
//! decided by one rule (`callback.rs`): a thread that is serving killer K's
//! kill, anywhere down its stack, never waits for that kill.

use crossbeam_utils::CachePadded;

use crate::loom::atomic::{fence, AtomicU64, Ordering::*};
use crate::{KillPhase, KillSignal};

const KILLING: u64 = 1;
const KILLED: u64 = 1 << 1;
const SIGNAL_SHIFT: u32 = 2;
const SIGNAL_MASK: u64 = 0b111 << SIGNAL_SHIFT;
/// The side table's reason text belongs to this generation. Set by the
/// winning CAS of a kill with a reason, while it holds the side-table lock;
/// cleared by `reset` under the same lock.
const REASON: u64 = 1 << 5;
/// A waiter of this generation may be registered in the side table.
const WAITERS: u64 = 1 << 6;
/// A cancel hook of this generation may be installed in the side table.
const HOOK: u64 = 1 << 7;
/// A liveness probe is installed. Survives `reset`.
const PROBE: u64 = 1 << 8;
/// The owner holds a kill-immune guard. Survives `reset`.
const IMMUNE: u64 = 1 << 9;
/// A kill that won inside a kill-immune section still owes its waiters and
/// hook. Set by `leave_section`, cleared by `claim_owed`. Never set while
/// `IMMUNE` is.
const OWED: u64 = 1 << 10;
/// The owner is blocked until this generation's kill is `Killed`.
const PARKED: u64 = 1 << 11;
/// The owner was dropped: the session is closed. Never cleared. Kills are
/// then `Stale`, hooks `Stale`, new kill events complete at once.
const CLOSED: u64 = 1 << 12;
/// The probe of this generation is due: the owner's next checkpoint runs
/// it. Set by the timer with a CAS that checks the generation (or kept set
/// while the probe interval is zero); cleared when the probe runs, and by
/// `reset`.
const PROBE_DUE: u64 = 1 << 13;
/// The session is between statements (its idle phase): a kill aimed at its
/// current query finds nothing to kill. Set by `end_statement`, cleared by
/// the next statement's start. Only ever set together with a new generation,
/// so a kill by id of the statement that ended is `Stale`.
const BETWEEN: u64 = 1 << 14;
/// A session-wide cancel hook is installed in the side table. Survives
/// statement ends.
const SESSION_HOOK: u64 = 1 << 15;
/// The session was killed (`KILL CONNECTION`) with this signal (0: not).
/// Never cleared: every later statement start fails with it.
const SESSION_SHIFT: u32 = 16;
const SESSION_MASK: u64 = 0b111 << SESSION_SHIFT;
/// This generation's kill landed inside a kill-immune section (its CAS saw
/// `IMMUNE`): if the statement ends before the section does, the kill is
/// not reported (`end_statement` returns `Ok`).
const DEFERRED: u64 = 1 << 19;

const PHASE: u64 = KILLING | KILLED;
/// Bits that `reset` keeps: they describe the session, not the statement.
const STICKY: u64 = PROBE | IMMUNE | SESSION_HOOK | SESSION_MASK;
/// Bits whose generation-local data lives in the side table.
const SIDE_DATA: u64 = REASON | WAITERS | HOOK;
const GEN_SHIFT: u32 = 20;
/// Generations wrap after 2^44.
pub(crate) const GENERATION_MASK: u64 = (1 << (64 - GEN_SHIFT)) - 1;
const LOW_MASK: u64 = (1 << GEN_SHIFT) - 1;
/// Every flag bit (for `Debug`).
const FLAGS: u64 = LOW_MASK & !(PHASE | SIGNAL_MASK | SESSION_MASK);
/// Anything that sends the owner's checkpoint off its fast path.
const NOT_QUIET: u64 = SIGNAL_MASK | PROBE_DUE;

/// One reading of the state word: a plain value, never stale-checked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot(u64);

impl Snapshot {
    /// The statement's sequence number in its session (44 bits).
    pub(crate) const fn generation(self) -> u64 {
        self.0 >> GEN_SHIFT
    }

    pub(crate) const fn signal(self) -> Option<KillSignal> {
        KillSignal::from_u32(((self.0 & SIGNAL_MASK) >> SIGNAL_SHIFT) as u32)
    }

    pub(crate) const fn phase(self) -> KillPhase {
        match self.signal() {
            None => KillPhase::Idle,
            Some(s) if self.0 & KILLED == 0 => KillPhase::Killing(s),
            Some(s) => KillPhase::Killed(s),
        }
    }

    /// A winner is still publishing side effects: `reset` must wait.
    pub(crate) const fn is_killing(self) -> bool {
        self.0 & PHASE == KILLING
    }

    /// Nothing for the owner's checkpoint to do: no signal, no probe due.
    #[inline(always)]
    pub(crate) const fn is_quiet(self) -> bool {
        self.0 & NOT_QUIET == 0
    }

    /// No signal in this generation (a worker's fast path).
    #[inline(always)]
    pub(crate) const fn is_unkilled(self) -> bool {
        self.0 & SIGNAL_MASK == 0
    }

    pub(crate) const fn is_closed(self) -> bool {
        self.0 & CLOSED != 0
    }

    /// The owner is inside a kill-immune section.
    pub(crate) const fn is_immune(self) -> bool {
        self.0 & IMMUNE != 0
    }

    /// A kill-immune section that ended still owes a kill's side effects.
    pub(crate) const fn is_owed(self) -> bool {
        self.0 & OWED != 0
    }

    pub(crate) const fn has_reason(self) -> bool {
        self.0 & REASON != 0
    }

    pub(crate) const fn has_waiters(self) -> bool {
        self.0 & WAITERS != 0
    }

    pub(crate) const fn has_hook(self) -> bool {
        self.0 & HOOK != 0
    }

    /// A kill of this generation has someone to serve: waiters, a hook or
    /// the session's hook.
    pub(crate) const fn has_subscribers(self) -> bool {
        self.0 & (WAITERS | HOOK | SESSION_HOOK) != 0
    }

    /// The kill landed inside a kill-immune section.
    pub(crate) const fn is_deferred(self) -> bool {
        self.0 & DEFERRED != 0
    }

    /// The session is between statements (its idle phase).
    pub(crate) const fn is_between(self) -> bool {
        self.0 & BETWEEN != 0
    }

    pub(crate) const fn has_session_hook(self) -> bool {
        self.0 & SESSION_HOOK != 0
    }

    /// The signal of the session's kill, if it was killed (`KILL CONNECTION`).
    pub(crate) const fn session_signal(self) -> Option<KillSignal> {
        KillSignal::from_u32(((self.0 & SESSION_MASK) >> SESSION_SHIFT) as u32)
    }

    /// Generation-local data lives in the side table: ending the generation
    /// must clear it under the side-table lock.
    pub(crate) const fn has_side_data(self) -> bool {
        self.0 & SIDE_DATA != 0
    }

    pub(crate) const fn has_probe(self) -> bool {
        self.0 & PROBE != 0
    }

    pub(crate) const fn probe_due(self) -> bool {
        self.0 & PROBE_DUE != 0
    }

    const fn parked(self) -> bool {
        self.0 & PARKED != 0
    }

    /// `Killing(g, signal)` from `Idle(g)`, keeping every flag. (Idle has
    /// the phase and signal bits clear, so adding them sets them.)
    const fn killing(self, signal: KillSignal) -> Snapshot {
        Snapshot(self.0 + (KILLING + ((signal as u64) << SIGNAL_SHIFT)))
    }

    const fn with(self, flags: u64) -> Snapshot {
        Snapshot(self.0 | flags)
    }

    /// `Idle(g + 1)`, keeping only the session-wide bits. Wraps after 2^44.
    #[cfg(test)]
    pub(crate) const fn next_generation(self) -> Snapshot {
        self.to_generation(self.generation().wrapping_add(1))
    }

    /// `Idle(generation)` (taken modulo 2^44), keeping only the
    /// session-wide bits.
    pub(crate) const fn to_generation(self, generation: u64) -> Snapshot {
        // The generation and the sticky flags are disjoint: `+` is `|`.
        Snapshot(((generation & GENERATION_MASK) << GEN_SHIFT) + (self.0 & STICKY))
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.generation())
            .field("phase", &self.phase())
            .field("flags", &format_args!("{:#05x}", self.0 & FLAGS))
            .finish()
    }
}

/// What [`StateCell::transition_to_killing`] did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KillTransition {
    /// This kill won: the word now holds this `Killing` state, and the
    /// caller must publish its side effects and then call
    /// [`StateCell::transition_to_killed`] (from a drop guard).
    Won(Snapshot),
    /// Another kill won first, with this signal: of the running statement
    /// (its generation), or of the session (`None` if it is idle).
    AlreadyKilled(KillSignal, Option<u64>),
    /// The statement aimed at has ended, or the session is closed.
    Stale,
    /// The session is between statements: there is no current query.
    Idle,
}

/// What [`StateCell::transition_to_session_killed`] did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionTransition {
    /// The session is killed and so is its running statement, by this
    /// call: publish as for [`KillTransition::Won`].
    Won(Snapshot),
    /// The session is killed; no statement was running, or it was already
    /// killed. Nothing to publish.
    SessionOnly(Snapshot),
    /// The session was already killed, with this signal; the generation of
    /// the statement running now, if one is.
    AlreadyKilled(KillSignal, Option<u64>),
    /// The session is closed (its owner dropped).
    Stale,
}

/// How [`StateCell::transition_to_next_statement`] leaves the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// A new statement runs (`reset`); after a session kill it is born
    /// killed with the session's signal.
    Reset,
    /// A new statement runs (`start_statement`); after a session kill the
    /// session stays idle instead.
    Start,
    /// The session is idle between statements (`end_statement`).
    Idle,
    /// The session is closed (the owner's drop).
    Close,
}

/// What [`StateCell::transition_to_killed`] asks of the winner.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Published {
    /// Nobody waits on the word.
    Done,
    /// The owner blocked until this kill was published: wake it.
    WakeOwner,
}

/// What the owner must serve after [`StateCell::claim_owed`].
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owed {
    Nothing,
    /// Serve this kill's waiters and hook, as the state says they exist.
    Serve(KillSignal, Snapshot),
}

/// One step of [`StateCell::update`].
enum Step<T> {
    /// Answer `T` without writing.
    Stop(T),
    /// Write this state (CAS from the one read), then answer `T`.
    Write(Snapshot, T),
}

/// The state word and the owner's guess of it, alone on their cache line:
/// killers of other sessions never write near it, and the owner's checks
/// never share a line with anyone else's writes (the guess is written only
/// by the owner, at the end of a statement, and read by killers just
/// before their CAS on the same line).
pub(crate) struct StateCell(CachePadded<Line>);

struct Line {
    word: AtomicU64,
    /// The word as the owner's last statement end installed it: where kills
    /// and `reset` start their CAS, so an untouched statement costs one CAS
    /// each. Only a guess: a CAS checks every use, and no answer is ever
    /// given from it.
    hint: AtomicU64,
}

// Orderings, once for the whole file:
// - the winning kill CAS is AcqRel: Release publishes the signal (and what
//   the killer wrote before it); Acquire orders it after the reset that
//   opened the generation.
// - `load` is Acquire; the checkpoint loads Relaxed and fences with Acquire
//   off its fast path, which is the same wherever it matters.
// - `KILLED` is set with Release and the owner reads it with Acquire: every
//   side effect of the kill happens-before `reset` returns.
// - `reset`'s CAS is AcqRel for the same two reasons as the kill's.
// - the flag RMWs are AcqRel: each is one side of a "one of us sees the
//   other" pair with a kill or a reset.

impl StateCell {
    /// `Idle(0)` with no flags: a new session.
    pub(crate) fn new() -> StateCell {
        StateCell(CachePadded::new(Line {
            word: AtomicU64::new(0),
            hint: AtomicU64::new(0),
        }))
    }

    /// `Idle(generation)` in the idle phase: a new session of a process list.
    pub(crate) fn new_idle(generation: u64) -> StateCell {
        let word = Snapshot(0).to_generation(generation).with(BETWEEN).0;
        StateCell(CachePadded::new(Line {
            word: AtomicU64::new(word),
            hint: AtomicU64::new(word),
        }))
    }

    /// The word now (Acquire).
    #[inline(always)]
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot(self.0.word.load(Acquire))
    }

    /// The checkpoint's read: Relaxed, so a caller's loop of checks has no
    /// barrier in it. Call [`acquire`](StateCell::acquire) before acting on
    /// a signal it shows. A check that starts after a kill returned still
    /// reads it: coherence, not ordering, guarantees that.
    #[inline(always)]
    pub(crate) fn load_for_check(&self) -> Snapshot {
        Snapshot(self.0.word.load(Relaxed))
    }

    /// The Acquire fence that completes [`load_for_check`](StateCell::load_for_check)
    /// off the fast path: everything the killer wrote before its kill is
    /// visible after it.
    #[inline(always)]
    pub(crate) fn acquire(&self) {
        fence(Acquire);
    }

    /// Reads the word inside a read-modify-write sequence with an RMW that
    /// changes nothing, rather than a load.
    ///
    /// On purpose: loom 0.7's DPOR remembers only the *last* access to an
    /// atomic, so in "load, then CAS" a thread's own load hides every other
    /// thread's earlier load from the CAS, and loom never tries the CAS
    /// first (tokio-rs/loom#392 is one face of it; `loom-tests` asserts that
    /// both orders are explored). The sequences therefore start with a CAS
    /// from the owner's hint, and read with this where they must. Natively
    /// it costs one locked instruction on a path that is about to CAS the
    /// same cache line anyway.
    pub(crate) fn load_for_update(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(0, Acquire))
    }

    /// The one CAS loop. Starts from `guess` (the owner's hint) if given,
    /// else from a read. `step` looks at the word and stops or asks for a
    /// write; a stop decided on a guess is never answered: the loop reads
    /// the word and asks again.
    fn update<T>(&self, guess: Option<Snapshot>, mut step: impl FnMut(Snapshot) -> Step<T>) -> T {
        let mut guessing = guess.is_some();
        let mut current = guess.unwrap_or_else(|| self.load_for_update());
        loop {
            match step(current) {
                Step::Stop(answer) if !guessing => return answer,
                Step::Stop(_) => {
                    guessing = false;
                    current = self.load_for_update();
                }
                Step::Write(next, answer) => {
                    match self
                        .0
                        .word
                        .compare_exchange(current.0, next.0, AcqRel, Acquire)
                    {
                        Ok(_) => return answer,
                        Err(actual) => {
                            guessing = false;
                            current = Snapshot(actual);
                        }
                    }
                }
            }
        }
    }

    /// The owner's hint, for the owner to pick the next generation before
    /// its first CAS.
    pub(crate) fn hint_for_owner(&self) -> Snapshot {
        self.hint()
    }

    /// The owner's guess of the word: what its last statement end installed.
    fn hint(&self) -> Snapshot {
        // Relaxed: a guess; every use is checked by a CAS.
        Snapshot(self.0.hint.load(Relaxed))
    }

    /// A kill: `Idle(g)` to `Killing(g, signal)`, if the generation is
    /// `target` (any, if `None`) and the session is open; with `REASON` set
    /// if the caller holds the side-table lock and will write a reason.
    ///
    /// A CAS, not a `fetch_or`: the signal may only be installed over
    /// `Idle` of the expected generation (I1, I3). It starts from the
    /// owner's hint, so the first CAS wins on an untouched statement.
    pub(crate) fn transition_to_killing(
        &self,
        target: Option<u64>,
        signal: KillSignal,
        with_reason: bool,
    ) -> KillTransition {
        self.update(Some(self.hint()), |current| {
            if current.is_closed() || target.is_some_and(|g| g != current.generation()) {
                return Step::Stop(KillTransition::Stale);
            }
            if let Some(winner) = current.signal() {
                // (A session kill's statement, or a later one born killed,
                // has the session's signal: severity never goes down.)
                let running = Some(current.generation());
                return Step::Stop(KillTransition::AlreadyKilled(winner, running));
            }
            if let Some(session) = current.session_signal() {
                // Idle after a session kill (a running statement would
                // carry its signal).
                return Step::Stop(KillTransition::AlreadyKilled(session, None));
            }
            if current.is_between() {
                return Step::Stop(KillTransition::Idle);
            }
            let mut next = current.killing(signal);
            if with_reason {
                next = next.with(REASON);
            }
            if current.is_immune() {
                next = next.with(DEFERRED);
            }
            Step::Write(next, KillTransition::Won(next))
        })
    }

    /// A session kill (`KILL CONNECTION`): sets the session's signal and,
    /// if a statement is running and not yet killed, kills it with the same
    /// signal (and `REASON` if `with_reason`), in one CAS. A statement
    /// start that reads the word sees both or neither.
    pub(crate) fn transition_to_session_killed(
        &self,
        signal: KillSignal,
        with_reason: bool,
    ) -> SessionTransition {
        self.update(Some(self.hint()), |current| {
            if current.is_closed() {
                return Step::Stop(SessionTransition::Stale);
            }
            if let Some(first) = current.session_signal() {
                let running = (!current.is_between()).then(|| current.generation());
                return Step::Stop(SessionTransition::AlreadyKilled(first, running));
            }
            let next = current.with((signal as u64) << SESSION_SHIFT);
            if current.is_between() || current.signal().is_some() {
                // Nothing running, or its statement already killed: the
                // statement keeps its first signal.
                return Step::Write(next, SessionTransition::SessionOnly(next));
            }
            let mut next = next.killing(signal);
            if with_reason {
                next = next.with(REASON);
            }
            if current.is_immune() {
                next = next.with(DEFERRED);
            }
            Step::Write(next, SessionTransition::Won(next))
        })
    }

    /// The winner has published every side effect: `Killing` to `Killed`.
    /// Called from a drop guard, so also while unwinding (I6).
    pub(crate) fn transition_to_killed(&self) -> Published {
        // `fetch_or`, not a store: waiters and hooks may set their flags
        // concurrently, and the owner may set `PARKED`. Release: every side
        // effect happens-before the `reset` that sees `KILLED`.
        let prev = Snapshot(self.0.word.fetch_or(KILLED, Release));
        if prev.parked() {
            Published::WakeOwner
        } else {
            Published::Done
        }
    }

    /// Ends the statement of the owner's hint in one CAS, if nothing
    /// touched it since: `Ok` with the state ended, else `Err` with the word
    /// as it is (where the owner's slow path starts).
    pub(crate) fn try_next_statement_from_hint(
        &self,
        generation: u64,
        end: End,
    ) -> Result<Snapshot, Snapshot> {
        let hint = self.hint();
        if hint.session_signal().is_some() {
            // A session kill's statements are born with its reason, which
            // takes the side-table lock: the slow path.
            return Err(self.load_for_update());
        }
        self.transition_to_next_statement(hint, generation, end, false)
            .map(|()| hint)
    }

    /// Ends the generation of `current` (owner only): one CAS from the exact
    /// state read, to `Idle(generation)`, keeping only the session's flags,
    /// and then per `end`: a running statement (born killed with the
    /// session's signal if the session was killed, and `REASON` if
    /// `born_with_reason`: the caller holds the side-table lock and writes
    /// the session's reason as the statement's), the idle phase
    /// (`BETWEEN`), or a closed session (`CLOSED`). A kill that lands
    /// between the read and the CAS makes it fail, so the kill is either
    /// returned by this end or survives into the next generation (TiDB
    /// #70545). On failure, returns the word as it is. The caller must not
    /// call this while `current` is `Killing`.
    pub(crate) fn transition_to_next_statement(
        &self,
        current: Snapshot,
        generation: u64,
        end: End,
        born_with_reason: bool,
    ) -> Result<(), Snapshot> {
        debug_assert!(!current.is_killing());
        let mut next = current.to_generation(generation);
        match (end, current.session_signal()) {
            // A session kill outlives statements: a statement started
            // after it is killed from birth, or not started at all.
            (End::Reset, Some(signal)) => {
                next = next.killing(signal).with(KILLED);
                if born_with_reason {
                    next = next.with(REASON);
                }
            }
            (End::Start, Some(_)) | (End::Idle, _) => next = next.with(BETWEEN),
            (End::Reset | End::Start, None) | (End::Close, _) => {}
        }
        let word = if end == End::Close {
            next.with(CLOSED)
        } else {
            next
        };
        match self
            .0
            .word
            .compare_exchange(current.0, word.0, AcqRel, Acquire)
        {
            Ok(_) => {
                // The hint is never closed: a closed word is read, not guessed.
                self.0.hint.store(next.0, Relaxed);
                Ok(())
            }
            Err(actual) => Err(Snapshot(actual)),
        }
    }

    /// Marks that a waiter of the current generation may be registered
    /// (under the side-table lock). An RMW, never a load: the kill's CAS and
    /// this are ordered on one word, so either the kill sees `WAITERS` and
    /// wakes the waiter, or this returns the kill's signal (no lost
    /// wake-up). Returns the word before.
    pub(crate) fn register_waiter(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(WAITERS, AcqRel))
    }

    /// Marks that a hook of the current generation may be installed (under
    /// the side-table lock): a later kill's CAS sees `HOOK` and takes the
    /// hook, or this returns the kill and the installer runs it.
    /// Publishing the hook after a plain check is TiDB PR #70608's bug.
    /// Returns the word before; a stale install may leave `HOOK` set on the
    /// next statement, which only means "look in the table".
    pub(crate) fn arm_hook(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(HOOK, AcqRel))
    }

    /// Enters the kill-immune section (owner, outermost guard). A kill's
    /// CAS either sees `IMMUNE` and defers, or came first: the returned word
    /// says whether it is still publishing. Returns the word before.
    pub(crate) fn enter_section(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(IMMUNE, AcqRel))
    }

    /// Leaves the kill-immune section (owner, outermost guard): clears
    /// `IMMUNE` and, if a kill won meanwhile, sets `OWED`, in one RMW. A
    /// kill after it sees no `IMMUNE` and serves itself.
    pub(crate) fn leave_section(&self) {
        self.update(None, |current| {
            // The section is over: a kill it deferred is reported from now
            // on (`DEFERRED` only means "inside the section that is open").
            let mut next = Snapshot(current.0 & !(IMMUNE | DEFERRED));
            if current.signal().is_some() {
                next = next.with(OWED);
            }
            Step::Write(next, ())
        })
    }

    /// Claims what a kill-immune section owed (owner): one RMW, so it is
    /// served once.
    pub(crate) fn claim_owed(&self) -> Owed {
        let prev = Snapshot(self.0.word.fetch_and(!OWED, AcqRel));
        match prev.signal() {
            Some(signal) if prev.is_owed() => Owed::Serve(signal, prev),
            _ => Owed::Nothing,
        }
    }

    /// The owner is about to block until this generation's kill is
    /// published (under the side-table lock): the winner's `KILLED` RMW is
    /// later in the word's order, so it sees `PARKED` and wakes it. Returns
    /// the word before: block only if it still says `Killing`.
    pub(crate) fn park_owner(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(PARKED, AcqRel))
    }

    /// Marks that a session-wide hook is installed (under the side-table
    /// lock). Returns the word before: if it shows a kill whose CAS did not
    /// see a session hook, the installer serves it.
    pub(crate) fn arm_session_hook(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(SESSION_HOOK, AcqRel))
    }

    /// The session-wide hook is removed (under the side-table lock).
    pub(crate) fn disarm_session_hook(&self) {
        self.0.word.fetch_and(!SESSION_HOOK, AcqRel);
    }

    /// A probe is installed (under the side-table lock).
    pub(crate) fn set_probe(&self) {
        self.0.word.fetch_or(PROBE, AcqRel);
    }

    /// The probe is removed (under the side-table lock): a schedule still
    /// in the timer finds no `PROBE`.
    pub(crate) fn remove_probe(&self) {
        self.0.word.fetch_and(!(PROBE | PROBE_DUE), AcqRel);
    }

    /// The probe is due now and stays due (an interval of zero).
    pub(crate) fn set_probe_due(&self) {
        self.0.word.fetch_or(PROBE_DUE, AcqRel);
    }

    /// A new probe interval starts: the probe is not due.
    pub(crate) fn clear_probe_due(&self) {
        self.0.word.fetch_and(!PROBE_DUE, AcqRel);
    }

    /// The timer found statement `generation`'s probe due: sets `PROBE_DUE`
    /// only if that generation is current and has a probe, in one CAS, so a
    /// probe of statement g never runs early in g + 1.
    pub(crate) fn mark_probe_due(&self, generation: u64) {
        self.update(None, |current| {
            // (Already due, or a closed session: the CAS changes nothing
            // that matters, so no test for those.)
            if current.generation() == generation && current.has_probe() {
                Step::Write(current.with(PROBE_DUE), ())
            } else {
                Step::Stop(())
            }
        })
    }

    /// Closes the session without ending its statement: for the owner's
    /// drop on a thread that is serving this session's kill, which must not
    /// wait for it. Kills are `Stale` from here on. Returns the word before.
    pub(crate) fn close(&self) -> Snapshot {
        Snapshot(self.0.word.fetch_or(CLOSED, AcqRel))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip() {
        let idle = Snapshot(0);
        assert_eq!(idle.phase(), KillPhase::Idle);
        assert!(idle.is_quiet());
        for signal in KillSignal::ALL {
            let killing = idle.killing(signal);
            assert_eq!(killing.phase(), KillPhase::Killing(signal));
            assert!(killing.is_killing());
            assert!(!killing.is_quiet());
            let killed = killing.with(KILLED);
            assert_eq!(killed.phase(), KillPhase::Killed(signal));
            assert!(!killed.is_killing());
            assert_eq!(killed.generation(), idle.generation());
        }
    }

    #[test]
    fn reset_keeps_only_session_bits() {
        let s = Snapshot(PROBE | IMMUNE | HOOK | WAITERS | REASON)
            .killing(KillSignal::RunawayQueryExceeded)
            .with(KILLED);
        let next = s.next_generation();
        assert_eq!(next.generation(), 1);
        assert_eq!(next.phase(), KillPhase::Idle);
        assert!(next.has_probe() && next.is_immune());
        assert!(!next.has_side_data());
    }

    #[test]
    fn debug_shows_generation_phase_and_flags() {
        let s = Snapshot(0)
            .next_generation()
            .with(WAITERS | PROBE_DUE)
            .killing(KillSignal::QueryInterrupted);
        assert_eq!(
            format!("{s:?}"),
            "State { generation: 1, phase: Killing(QueryInterrupted), flags: 0x2040 }"
        );
        let all = Snapshot(u64::MAX);
        assert!(format!("{all:?}").ends_with("flags: 0x8ffe0 }"), "{all:?}");
    }

    #[test]
    fn generation_wraps_after_2_pow_44() {
        let last = Snapshot(!LOW_MASK);
        assert_eq!(last.generation(), (1 << 44) - 1);
        assert_eq!(last.next_generation().generation(), 0);
    }

    #[test]
    fn leaving_a_section_owes_a_kill_in_one_step() {
        let cell = StateCell::new();
        let _ = cell.enter_section();
        assert_eq!(
            cell.transition_to_killing(None, KillSignal::QueryInterrupted, false),
            KillTransition::Won(Snapshot(IMMUNE | DEFERRED).killing(KillSignal::QueryInterrupted))
        );
        cell.leave_section();
        let now = cell.snapshot();
        assert!(
            !now.is_deferred(),
            "the section is over: the kill is reported"
        );
        assert!(!now.is_immune() && now.is_owed());
        assert_eq!(
            cell.claim_owed(),
            Owed::Serve(KillSignal::QueryInterrupted, now)
        );
        assert_eq!(cell.claim_owed(), Owed::Nothing);
        let _ = cell.enter_section();
        cell.leave_section();
        assert!(!cell.snapshot().is_immune());
    }

    #[test]
    fn a_kill_from_a_stale_hint_reads_the_word() {
        let cell = StateCell::new();
        cell.transition_to_next_statement(cell.snapshot(), 1, End::Reset, false)
            .unwrap();
        // The hint says generation 1; a kill aimed at 1 wins at once, one
        // aimed at 0 reads the word and is stale.
        assert_eq!(
            cell.transition_to_killing(Some(0), KillSignal::QueryInterrupted, false),
            KillTransition::Stale
        );
        assert!(matches!(
            cell.transition_to_killing(Some(1), KillSignal::QueryInterrupted, true),
            KillTransition::Won(s) if s.has_reason() && s.generation() == 1
        ));
        assert_eq!(cell.transition_to_killed(), Published::Done);
        assert_eq!(
            cell.try_next_statement_from_hint(2, End::Reset),
            Err(cell.snapshot()),
            "a killed statement is not the hint"
        );
        let closed = cell.snapshot();
        cell.transition_to_next_statement(closed, 2, End::Close, false)
            .unwrap();
        assert!(cell.snapshot().is_closed());
        assert_eq!(
            cell.transition_to_killing(None, KillSignal::QueryInterrupted, false),
            KillTransition::Stale
        );
    }
}
