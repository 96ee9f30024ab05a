//! Cancel hooks across many sessions, under shuttle: each session's RPC
//! thread installs the hook of the statement it serves while admin threads
//! kill statements by id and the owner moves on. Checked (I7 at scale):
//! the hook of statement g runs once if g was killed, never if it was not,
//! and never after the `reset` that ended g returned.
#![cfg(shuttle)]

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use shuttle::sync::Mutex;
use shuttle::thread;
use sqlkiller::{HookStatus, KillHandle, KillSignal, SqlKiller, StatementId};
use sqlkiller_shuttle_tests::{assert_found, explore, Budget, Outcomes};

/// What happened to each statement's hook.
#[derive(Default)]
struct Hooks {
    /// Runs of the hook installed for each statement.
    runs: HashMap<StatementId, usize>,
    /// How the install for each statement went.
    installs: HashMap<StatementId, HookStatus>,
    /// Each statement's end: whether it was killed, and the hook's runs
    /// when its `reset` returned.
    ended: Vec<(StatementId, bool, usize)>,
}

/// How the RPC thread installs the hook of the statement it serves.
type Install = fn(&KillHandle, StatementId, Box<dyn FnOnce() + Send>) -> HookStatus;

/// `sessions` owners run `statements` statements each; per session an RPC
/// thread installs a hook for each statement it sees listed, with
/// `install`; `admins` threads kill listed statements by id.
fn hooks_under_kills(outcomes: &Outcomes, sessions: usize, admins: usize, install: Install) {
    const STATEMENTS: usize = 3;
    let hooks = Arc::new(Mutex::new(Hooks::default()));
    let killers: Vec<_> = (0..sessions).map(|_| SqlKiller::new()).collect();
    let listed: Arc<Vec<(KillHandle, Mutex<StatementId>)>> = Arc::new(
        killers
            .iter()
            .map(|k| (k.handle(), Mutex::new(k.statement())))
            .collect(),
    );
    let mut threads = Vec::new();
    for (conn, killer) in killers.into_iter().enumerate() {
        let (owner_listed, owner_hooks) = (Arc::clone(&listed), Arc::clone(&hooks));
        threads.push(thread::spawn(move || {
            let (listed, hooks) = (owner_listed, owner_hooks);
            for _ in 0..STATEMENTS {
                let id = killer.statement();
                let _ = killer.handle_signal();
                let killed = killer.reset().is_some();
                let mut hooks = hooks.lock().unwrap_or_else(PoisonError::into_inner);
                let runs = hooks.runs.get(&id).copied().unwrap_or(0);
                hooks.ended.push((id, killed, runs));
                drop(hooks);
                *listed[conn]
                    .1
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = killer.statement();
            }
        }));
        // The session's RPC thread: a hook for each statement it sees.
        let (listed, hooks) = (Arc::clone(&listed), Arc::clone(&hooks));
        threads.push(thread::spawn(move || {
            let mut served = None;
            for _ in 0..STATEMENTS {
                let (handle, statement) = &listed[conn];
                let id = *statement.lock().unwrap_or_else(PoisonError::into_inner);
                if served == Some(id) {
                    thread::yield_now();
                    continue;
                }
                served = Some(id);
                let record = Arc::clone(&hooks);
                let hook = Box::new(move || {
                    *record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .runs
                        .entry(id)
                        .or_default() += 1;
                });
                let status = install(handle, id, hook);
                hooks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .installs
                    .insert(id, status);
            }
        }));
    }
    for admin in 0..admins {
        let listed = Arc::clone(&listed);
        threads.push(thread::spawn(move || {
            for i in 0..4 {
                let (handle, statement) = &listed[(admin * 3 + i * 5) % listed.len()];
                let id = *statement.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = handle.kill_statement(id, KillSignal::QueryInterrupted);
            }
        }));
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let hooks = Arc::into_inner(hooks)
        .unwrap()
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    // A hook on the wrong statement also leaves its own statement's kill
    // without a hook run: report the late run first.
    for &(id, _, runs_at_reset) in &hooks.ended {
        let runs = hooks.runs.get(&id).copied().unwrap_or(0);
        assert_eq!(
            runs, runs_at_reset,
            "a hook ran after its statement ended: {id:?} ran {runs} times, {runs_at_reset} when reset returned"
        );
    }
    for &(id, killed, _) in &hooks.ended {
        let runs = hooks.runs.get(&id).copied().unwrap_or(0);
        match hooks.installs.get(&id) {
            Some(HookStatus::Armed | HookStatus::Ran) if killed => {
                assert!(runs > 0, "the hook of a killed statement never ran: {id:?}");
                assert_eq!(runs, 1, "the hook of killed {id:?} ran {runs} times");
                outcomes.saw("a hook ran for its killed statement");
            }
            Some(HookStatus::Stale) => {
                assert_eq!(runs, 0, "a stale hook ran");
                outcomes.saw("a late install was refused");
            }
            _ => {
                assert_eq!(runs, 0, "the hook of unkilled {id:?} ran");
                if killed {
                    outcomes.saw("a statement killed without a hook");
                }
            }
        }
        if hooks.installs.get(&id) == Some(&HookStatus::Ran) {
            outcomes.saw("a hook installed after the kill ran at once");
        }
    }
}

/// The right way: the hook of the statement the RPC serves, by its id.
fn install_for_the_statement(
    handle: &KillHandle,
    id: StatementId,
    hook: Box<dyn FnOnce() + Send>,
) -> HookStatus {
    handle.set_cancel_hook_for(id, hook)
}

/// Twelve sessions, each with an RPC thread installing hooks, three admin
/// threads killing by id: every hook runs once iff its statement was
/// killed, and before its `reset` returned (I7, I3 at scale).
#[test]
fn cancel_hooks_of_twelve_sessions_under_kills() {
    explore(
        "cancel_hooks_of_twelve_sessions_under_kills",
        Budget {
            random: 1500,
            pct: 1500,
            depth: 3,
        },
        &[
            "a hook ran for its killed statement",
            "a late install was refused",
            "a hook installed after the kill ran at once",
            "a statement killed without a hook",
        ],
        |outcomes| hooks_under_kills(outcomes, 12, 3, install_for_the_statement),
    );
}

/// Broken twin: the RPC thread installs its hook on "the current
/// statement" (the id it reads when it installs), not on the one it
/// serves. When that statement has ended, the hook lands on the next one:
/// it runs for a kill of another statement, after its own ended.
#[test]
fn broken_rpc_installs_its_hook_on_the_current_statement() {
    assert_found(
        "broken_rpc_installs_its_hook_on_the_current_statement",
        Budget {
            random: 1500,
            pct: 1500,
            depth: 3,
        },
        &[
            "a hook ran after its statement ended",
            "the hook of a killed statement never ran",
        ],
        || {
            hooks_under_kills(&Outcomes::default(), 12, 3, |handle, _served, hook| {
                handle.set_cancel_hook_for(handle.statement(), hook)
            })
        },
    );
}
