//! The process list: sessions by connection id, and what a listing reads.
//!
//! The list maps connection ids to sessions in shards, each behind a
//! reader-writer lock. Lookups and listings take read locks, so they never
//! wait behind one another; only a session joining or leaving its shard
//! takes the write lock, for one map insert or remove (no user code; a
//! reader that arrives while a writer waits queues behind that one insert
//! or remove). Every reader holds a shard's lock only to clone `Arc`s, and
//! reads the sessions after letting go. A kill holds no list lock, and acts
//! on the session's word, never on something the lookup read before.
//!
//! The list also hands out its sessions' generations, from one counter, so
//! a statement number is unique in the list: `KILL QUERY ID n` names one
//! statement of one session, and a kill by that number is as exact as any
//! kill by [`StatementId`].

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::Shared;
use crate::clock::{Timer, NEVER};
use crate::loom::atomic::{AtomicU64, Ordering::*};
use crate::loom::{read, write, RwLock};
use crate::state::GENERATION_MASK;
use crate::{KillSignal, SessionPhase, StatementId};

/// How many shards the map has: enough that sessions joining and leaving
/// on many threads rarely meet, few enough that a listing is cheap.
const SHARDS: usize = 16;

type Shard = RwLock<Map>;

/// A shard's map. Under shuttle its hasher is fixed, so that a listing's
/// order, and so the schedule of a scenario, is the same in a run and in
/// its replay (std's default hasher is seeded at random per map).
#[cfg(not(shuttle))]
type Map = HashMap<u64, Arc<Shared>>;
#[cfg(shuttle)]
type Map = HashMap<
    u64,
    Arc<Shared>,
    std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>,
>;

/// The list, shared by the `ProcessList` handles.
pub(crate) struct ListCore {
    shards: Box<[Shard]>,
    /// The next generation to hand out (the list's statement numbers).
    numbers: Arc<AtomicU64>,
    /// The clock of every session in the list.
    timer: Timer,
}

/// A session's membership of a list: how to leave it, where its numbers
/// come from, and the times a listing shows.
pub(crate) struct Listing {
    list: Weak<ListCore>,
    /// The connection id it was registered under (its key in the list,
    /// whatever `set_conn_id` does later).
    conn_id: u64,
    numbers: Arc<AtomicU64>,
    /// When the statement `started_gen` started, on the list's clock:
    /// stamped before the CAS that starts it, so every kill of it is
    /// stamped later.
    started_at: AtomicU64,
    started_gen: AtomicU64,
    /// When the last kill landed (`NEVER`: none yet).
    killed_at: AtomicU64,
}

/// One row of a listing, as the engine reads it.
pub(crate) struct Row {
    pub(crate) conn_id: u64,
    pub(crate) statement: StatementId,
    pub(crate) phase: SessionPhase,
    pub(crate) time_in_statement: Duration,
    pub(crate) killed_for: Option<Duration>,
    pub(crate) session_killed: Option<KillSignal>,
}

impl ListCore {
    pub(crate) fn new(timer: Timer) -> Arc<ListCore> {
        Arc::new(ListCore {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect(),
            // Generation 0 is every unlisted session's first: start above it.
            numbers: Arc::new(AtomicU64::new(1)),
            timer,
        })
    }

    fn shard(&self, conn_id: u64) -> &Shard {
        // Connection ids are usually consecutive: the low bits spread them.
        &self.shards[(conn_id % SHARDS as u64) as usize]
    }

    /// A new session under `conn_id`, idle, or `None` if the id is taken.
    pub(crate) fn register(self: &Arc<Self>, conn_id: u64) -> Option<Arc<Shared>> {
        let mut shard = write(self.shard(conn_id));
        if shard.contains_key(&conn_id) {
            return None;
        }
        let listing = Box::new(Listing {
            list: Arc::downgrade(self),
            conn_id,
            numbers: Arc::clone(&self.numbers),
            started_at: AtomicU64::new(self.timer.now()),
            started_gen: AtomicU64::new(NEVER),
            killed_at: AtomicU64::new(NEVER),
        });
        let generation = self.numbers.fetch_add(1, Relaxed) & GENERATION_MASK;
        let session = Shared::with_listing(self.timer.clone(), Some((listing, generation)));
        session.set_conn_id(conn_id);
        shard.insert(conn_id, Arc::clone(&session));
        Some(session)
    }

    /// The session under `conn_id`. The shard's read lock is held only to
    /// clone the `Arc`.
    pub(crate) fn get(&self, conn_id: u64) -> Option<Arc<Shared>> {
        read(self.shard(conn_id)).get(&conn_id).cloned()
    }

    /// Every session, shard by shard, each shard under its read lock only
    /// while its `Arc`s are cloned.
    pub(crate) fn sessions(&self) -> Vec<Arc<Shared>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            all.extend(read(shard).values().cloned());
        }
        all
    }

    /// The session whose running statement has number `query_id`. Each
    /// shard's read lock is held only while its `Arc`s are cloned; the
    /// words are read after.
    pub(crate) fn find_statement(&self, query_id: u64) -> Option<(Arc<Shared>, StatementId)> {
        let mut sessions = Vec::new();
        for shard in self.shards.iter() {
            sessions.clear();
            sessions.extend(read(shard).values().cloned());
            let found = sessions.iter().find_map(|session| {
                let state = session.state.snapshot();
                (state.generation() == query_id && !state.is_between()).then(|| {
                    let id = session.statement_id(state);
                    (Arc::clone(session), id)
                })
            });
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// How many sessions are registered.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| read(shard).len()).sum()
    }

    pub(crate) fn now(&self) -> u64 {
        self.timer.now()
    }
}

impl Shared {
    /// The next generation, from the list (taken once per statement end,
    /// kept in `taken`), or `None` for a session outside any list.
    pub(super) fn listing_number(&self, taken: &mut Option<u64>) -> Option<u64> {
        let listing = self.listing.as_ref()?;
        // Relaxed: the counter only hands out distinct numbers; the CAS on
        // the word publishes the one taken.
        Some(*taken.get_or_insert_with(|| listing.numbers.fetch_add(1, Relaxed) & GENERATION_MASK))
    }

    /// Statement `generation` is about to start (owner, before the CAS
    /// that starts it): its start time. `at` then `gen`, as for deadlines:
    /// a listing that reads this `gen` reads this `at` or a later one.
    pub(super) fn listing_will_start(&self, generation: u64) {
        if let Some(listing) = &self.listing {
            listing.started_at.store(self.now(), Relaxed);
            listing.started_gen.store(generation, Release);
        }
    }

    /// A kill of this session's statement landed (the winner).
    pub(crate) fn listing_killed(&self) {
        if let Some(listing) = &self.listing {
            listing.killed_at.store(self.now(), Relaxed);
        }
    }

    /// Leaves the process list (the owner's drop): the entry goes only if
    /// it is this session's (a closed session's id may be reused).
    pub(super) fn leave_list(self: &Arc<Self>) {
        let Some(listing) = &self.listing else { return };
        let Some(list) = listing.list.upgrade() else {
            return;
        };
        let conn_id = listing.conn_id;
        let removed = {
            let mut shard = write(list.shard(conn_id));
            match shard.get(&conn_id) {
                Some(entry) if Arc::ptr_eq(entry, self) => shard.remove(&conn_id),
                _ => None,
            }
        };
        // Our own `Arc` (the caller holds another): dropped outside the lock.
        drop(removed);
    }

    /// This session's row in a listing at `now`. The times are read after
    /// the word and may belong to a statement that started since: a
    /// listing is a picture, not a transaction; the kills it leads to are
    /// exact whatever it showed.
    pub(crate) fn row(&self, now: u64) -> Row {
        let state = self.state.snapshot();
        let (started, killed) = self.listing.as_ref().map_or((now, NEVER), |listing| {
            // A stamp of another statement (one about to start) is no
            // start time of this one: show it as just started.
            let stamped = listing.started_gen.load(Acquire) == state.generation();
            let started = listing.started_at.load(Relaxed);
            (
                if stamped { started } else { now },
                listing.killed_at.load(Relaxed),
            )
        });
        let since = |at: u64| Duration::from_nanos(now.saturating_sub(at));
        // A closed session (its owner dropped, about to leave the list)
        // runs nothing: listed as idle until it is gone.
        let phase = match (state.is_between() || state.is_closed(), state.signal()) {
            (true, _) => SessionPhase::Idle,
            (false, None) => SessionPhase::Running,
            (false, Some(signal)) => SessionPhase::Killed(signal),
        };
        Row {
            // The id it is listed (and looked up) under, whatever
            // `set_conn_id` did since.
            conn_id: self.listing.as_ref().map_or(self.conn_id(), |l| l.conn_id),
            statement: self.statement_id(state),
            phase,
            time_in_statement: match phase {
                SessionPhase::Idle => Duration::ZERO,
                _ => since(started),
            },
            killed_for: match phase {
                // A kill stamped before this statement started is an
                // earlier statement's: this one's is still being stamped.
                SessionPhase::Killed(_) => Some(if killed != NEVER && killed >= started {
                    since(killed)
                } else {
                    Duration::ZERO
                }),
                _ => None,
            },
            session_killed: state.session_signal(),
        }
    }
}
