//! The side table: what a kill publishes besides the state word.

use crate::state::State;
use crate::SqlKiller;

/// Data too big for the state word, behind `SqlKiller::side`'s lock.
///
/// Generation-local fields are valid only while the matching flag of the
/// state word is set (see `state.rs`).
#[derive(Default)]
pub(crate) struct SideTable {
    /// The winning kill's reason text; valid while `REASON` is set.
    pub(crate) reason: String,
}

/// What `reset` took out of the side table, to be released after the lock
/// is dropped (nothing of the user's is dropped or woken under our lock).
pub(crate) struct Leftovers {}

impl Leftovers {
    pub(crate) fn release(self) {}
}

impl SqlKiller {
    /// Side effects of a won kill, run in `Killing` after the reason is written.
    pub(crate) fn publish_side_effects(&self, _won: State) {}

    /// Clears generation `ended`'s data; called by `reset` under the lock,
    /// right after its CAS succeeded.
    pub(crate) fn end_generation(
        &self,
        side: &mut Option<Box<SideTable>>,
        _ended: State,
    ) -> Leftovers {
        if let Some(table) = side.as_mut() {
            table.reason.clear();
        }
        Leftovers {}
    }

    /// Consults the liveness probe if one is installed and due; returns the
    /// state to act on.
    pub(crate) fn poll_probe(&self, state: State) -> State {
        state
    }

    /// Whether the owner is inside a kill-immune section.
    pub(crate) fn is_immune(&self, _state: State) -> bool {
        false
    }

    pub(crate) fn reset_probe_timer(&self) {}
}
