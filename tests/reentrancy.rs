//! Callbacks that call back into a killer: a cancel hook, a waker, the
//! probe or the finish function of one session acting on another session
//! whose callbacks act on the first, chains of them, and the owner's own
//! kills and drop inside its own callbacks.
//!
//! The rule, one for every path: a thread that is inside a callback of
//! killer K, anywhere down its stack, must not wait for K's kill (it is the
//! one running it). So `reset` of K there panics with the documented
//! message, `kill_immune` of K enters at once, the owner's drop closes the
//! session without waiting, and a finish function reached again is refused.
//!
//! Every scenario runs under a watchdog: a hang fails within seconds. The
//! ones that could abort the process run in a child process.

mod support;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use sqlkiller::{
    FinishError, HookStatus, KillError, KillHandle, KillOutcome, KillSignal, ManualClock,
    SqlKiller, WaitOutcome,
};
use support::{in_child_process, panic_message, register_waker, within};

use KillSignal::*;

/// How long a scenario may run before the test calls it a hang. Each takes
/// milliseconds.
const HANG: Duration = Duration::from_secs(5);

/// How long a child process may run: it starts the test binary again.
const CHILD_HANG: Duration = Duration::from_secs(30);

/// What `reset` panics with when called from inside a callback of its own
/// killer (its documented message starts so).
const OWN_CALLBACK: &str = "reset called from inside this killer's own cancel hook";

const MS: Duration = Duration::from_millis(1);

// ---- building blocks --------------------------------------------------------

/// A cancel hook that kills the session of `handle`.
fn kills(handle: KillHandle) -> impl FnOnce() + Send + 'static {
    move || {
        let _ = handle.send_kill_signal(QueryInterrupted);
    }
}

/// A cancel hook that resets `killer`.
fn resets(killer: &Arc<SqlKiller>) -> impl FnOnce() + Send + 'static {
    let killer = Arc::clone(killer);
    move || {
        killer.reset();
    }
}

/// A cancel hook that resets `killer` and sends what happened to `report`
/// (the panic's message, or that `reset` returned), then passes the panic
/// on: for kills whose panic the test cannot catch (a timer contains it).
fn resets_and_reports(
    killer: &Arc<SqlKiller>,
    report: mpsc::Sender<String>,
) -> impl FnOnce() + Send + 'static {
    let killer = Arc::clone(killer);
    move || match catch_unwind(AssertUnwindSafe(|| killer.reset())) {
        Ok(cleared) => {
            let _ = report.send(format!("reset returned {cleared:?} without panicking"));
        }
        Err(panic) => {
            let _ = report.send(panic_message(&*panic));
            resume_unwind(panic);
        }
    }
}

/// Joins `thread`, failing with its panic's message if it panicked.
fn joined<T>(thread: thread::JoinHandle<T>, what: &str) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| panic!("{what} panicked: {}", panic_message(&*panic)))
}

/// Runs `f`, which must panic, and returns the panic's message.
fn panic_of<T>(what: &str, f: impl FnOnce() -> T) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("{what} returned; it should have panicked with {OWN_CALLBACK:?}"),
        Err(panic) => panic_message(&*panic),
    }
}

/// The session is usable: `reset` from outside any callback returns the
/// kill that landed, and a new kill lands and runs a new hook.
fn assert_usable(killer: &SqlKiller, killed_with: KillSignal) {
    assert_eq!(killer.reset(), Some(killed_with));
    let ran = Arc::new(AtomicBool::new(false));
    let r = Arc::clone(&ran);
    assert_eq!(
        killer.set_cancel_hook(move || r.store(true, SeqCst)),
        HookStatus::Armed
    );
    assert_eq!(
        killer.handle().send_kill_signal(QueryMemoryExceeded),
        KillOutcome::Sent
    );
    assert!(ran.load(SeqCst), "the new kill ran the new hook");
    assert_eq!(killer.reset(), Some(QueryMemoryExceeded));
}

/// The session of `handle` is closed: its kills are `Stale`, and its new
/// kill events complete at once with `Reset`.
fn assert_closed(handle: &KillHandle) {
    assert_eq!(
        handle.send_kill_signal(QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(
        handle.kill_statement(handle.statement(), QueryInterrupted),
        KillOutcome::Stale
    );
    assert_eq!(
        handle.kill_event_owned().try_outcome(),
        Some(WaitOutcome::Reset)
    );
    assert_eq!(handle.kill_event().wait(), WaitOutcome::Reset);
}

/// A slot holding the session's last owner, for a callback to take and
/// drop.
type OwnerSlot = Arc<Mutex<Option<Arc<SqlKiller>>>>;

/// Takes the owner out of `slot` and drops it: the session's drop runs here.
fn drop_owner(slot: &OwnerSlot) {
    let owner = slot.lock().unwrap().take();
    drop(owner);
}

// ---- across killers: reset ----------------------------------------------------

/// Killer A's hook kills B; B's hook resets A. A's kill is further down the
/// same stack, so `reset` would wait for itself: it panics, the panic goes
/// up through B's kill and A's hook to whoever killed A, and both sessions
/// stay usable.
#[test]
fn reset_from_the_hook_of_a_session_that_the_killers_hook_killed_panics() {
    let message = within("A's kill", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let _ = a.set_cancel_hook(kills(b.handle()));
        let _ = b.set_cancel_hook(resets(&a));
        let message = panic_of("A's kill", || a.handle().send_kill_signal(QueryInterrupted));
        assert_usable(&a, QueryInterrupted);
        assert_usable(&b, QueryInterrupted);
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

/// The same when A's hook runs at install (A was killed first): `reset` of
/// A would wait for that hook, which runs further down the same stack.
#[test]
fn reset_from_the_hook_of_a_session_that_a_hook_run_at_install_killed_panics() {
    let message = within("installing A's hook", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let _ = b.set_cancel_hook(resets(&a));
        assert_eq!(a.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
        let message = panic_of("installing A's hook", || {
            a.set_cancel_hook(kills(b.handle()))
        });
        assert_usable(&a, QueryInterrupted);
        assert_usable(&b, QueryInterrupted);
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

/// A's kill wakes a future whose waker kills B; B's hook resets A.
#[test]
fn reset_from_the_hook_of_a_session_that_the_killers_waker_killed_panics() {
    let message = within("A's kill", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let _ = b.set_cancel_hook(resets(&a));
        let mut event = a.kill_event_owned();
        let b_handle = b.handle();
        register_waker(&mut event, move || {
            let _ = b_handle.send_kill_signal(QueryInterrupted);
        });
        let message = panic_of("A's kill", || a.handle().send_kill_signal(QueryInterrupted));
        assert_eq!(
            event.try_outcome(),
            Some(WaitOutcome::Killed(QueryInterrupted))
        );
        drop(event);
        assert_usable(&a, QueryInterrupted);
        assert_usable(&b, QueryInterrupted);
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

/// A's kill wakes a future whose waker kills B; B's kill wakes a future
/// whose waker resets A.
#[test]
fn reset_from_the_waker_of_a_session_that_the_killers_waker_killed_panics() {
    let message = within("A's kill", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let mut a_event = a.kill_event_owned();
        let b_handle = b.handle();
        register_waker(&mut a_event, move || {
            let _ = b_handle.send_kill_signal(QueryInterrupted);
        });
        let mut b_event = b.kill_event_owned();
        let a_owner = Arc::clone(&a);
        register_waker(&mut b_event, move || {
            a_owner.reset();
        });
        let message = panic_of("A's kill", || a.handle().send_kill_signal(QueryInterrupted));
        drop((a_event, b_event));
        assert_usable(&a, QueryInterrupted);
        assert_usable(&b, QueryInterrupted);
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

/// A chain of 200 sessions: the hook of each kills the next, and the last
/// one's hook resets the first. The first kill is at the bottom of the
/// stack, 200 kills down: `reset` still finds it, and panics.
#[test]
fn reset_at_the_end_of_a_chain_of_200_hooks_panics() {
    let message = within("the first kill of the chain", HANG, || {
        let chain: Vec<Arc<SqlKiller>> = (0..200).map(|_| Arc::new(SqlKiller::new())).collect();
        for pair in chain.windows(2) {
            let _ = pair[0].set_cancel_hook(kills(pair[1].handle()));
        }
        let _ = chain[199].set_cancel_hook(resets(&chain[0]));
        let message = panic_of("the first kill", || {
            chain[0].handle().send_kill_signal(QueryInterrupted)
        });
        for (i, killer) in chain.iter().enumerate() {
            assert_eq!(killer.reset(), Some(QueryInterrupted), "session {i}");
        }
        assert_eq!(
            chain[0].send_kill_signal(QueryInterrupted),
            KillOutcome::Sent
        );
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

// ---- across killers: a kill-immune section ------------------------------------

/// A's hook kills B; B's hook enters a kill-immune section of A. The kill
/// it would wait for is the one this thread is running: it enters at once,
/// the guard drops, and A's kill completes without a panic.
#[test]
fn kill_immune_from_the_hook_of_a_session_that_the_killers_hook_killed_enters_at_once() {
    within("A's kill", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let _ = a.set_cancel_hook(kills(b.handle()));
        let entered = Arc::new(AtomicBool::new(false));
        let (a_owner, e) = (Arc::clone(&a), Arc::clone(&entered));
        let _ = b.set_cancel_hook(move || {
            let guard = a_owner.kill_immune();
            e.store(a_owner.is_kill_immune(), SeqCst);
            drop(guard);
        });
        assert_eq!(
            a.handle().send_kill_signal(QueryInterrupted),
            KillOutcome::Sent
        );
        assert!(entered.load(SeqCst), "B's hook entered A's section");
        assert!(!a.is_kill_immune(), "and left it");
        assert_eq!(a.handle_signal(), Err(KillError::QueryInterrupted));
        assert_eq!(b.handle_signal(), Err(KillError::QueryInterrupted));
        assert_usable(&a, QueryInterrupted);
        assert_usable(&b, QueryInterrupted);
    });
}

// ---- across killers: deadlines ------------------------------------------------

/// A's statement deadline fires (on a manual clock, inside `advance`); A's
/// hook kills B, whose hook resets A: it panics with the message, the
/// timer contains the panic, and later deadlines still fire.
#[test]
fn reset_from_a_hook_reached_from_a_deadline_kill_panics_and_deadlines_still_fire() {
    within("the deadlines", HANG, || {
        let clock = ManualClock::new();
        let a = Arc::new(SqlKiller::with_clock(&clock));
        let b = Arc::new(SqlKiller::new());
        let (report, reports) = mpsc::channel();
        let _ = a.set_cancel_hook(kills(b.handle()));
        let _ = b.set_cancel_hook(resets_and_reports(&a, report));
        a.set_statement_timeout(10 * MS);
        clock.advance(10 * MS); // A's deadline fires here, on this thread
        let message = reports.try_recv().expect("A's deadline never ran B's hook");
        assert!(message.contains(OWN_CALLBACK), "{message}");

        let c = SqlKiller::with_clock(&clock);
        c.set_statement_timeout(10 * MS);
        clock.advance(10 * MS);
        assert_eq!(c.handle_signal(), Err(KillError::MaxExecTimeExceeded));
        assert_usable(&a, MaxExecTimeExceeded);
        assert_usable(&b, QueryInterrupted);
    });
}

/// The same on the real clock: the process-wide timer thread runs A's kill,
/// contains the panic, and goes on firing the deadlines of other sessions.
/// (In a child process, so that the timer it checks is its own.)
#[test]
fn the_timer_thread_keeps_firing_deadlines_after_a_hook_reset_its_killer() {
    in_child_process(
        "the_timer_thread_keeps_firing_deadlines_after_a_hook_reset_its_killer",
        CHILD_HANG,
        || {
            within("A's deadline, then C's", 3 * HANG, || {
                let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
                let (report, reports) = mpsc::channel();
                let _ = a.set_cancel_hook(kills(b.handle()));
                let _ = b.set_cancel_hook(resets_and_reports(&a, report));
                a.set_statement_timeout(20 * MS);
                let message = reports.recv_timeout(HANG).expect(
                    "no word from B's hook: A's deadline never fired, or reset hangs in the hook",
                );
                assert!(message.contains(OWN_CALLBACK), "{message}");

                let c = SqlKiller::new();
                c.set_statement_timeout(20 * MS);
                assert_eq!(
                    c.kill_event().wait_timeout(HANG),
                    Some(WaitOutcome::Killed(MaxExecTimeExceeded)),
                    "the timer fires no deadline any more"
                );
                assert_usable(&a, MaxExecTimeExceeded);
                assert_usable(&b, QueryInterrupted);
            });
        },
    );
}

// ---- the owner's own kills ------------------------------------------------------

/// The owner kills its own statement, and the hook calls `reset`: the hook
/// runs on the owner while the statement is still being killed, so
/// `reset` panics rather than wait for itself.
#[test]
fn reset_from_the_hook_of_the_owners_own_kill_panics() {
    let message = within("the owner's kill", HANG, || {
        let killer = Arc::new(SqlKiller::new());
        let _ = killer.set_cancel_hook(resets(&killer));
        let message = panic_of("the owner's kill", || {
            killer.send_kill_signal(QueryInterrupted)
        });
        assert_usable(&killer, QueryInterrupted);
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

/// The probe finds the client gone inside `handle_signal` and kills the
/// statement; the hook calls `reset`: `handle_signal` panics with the
/// message.
#[test]
fn reset_from_the_hook_of_the_probes_kill_panics() {
    let message = within("handle_signal", HANG, || {
        let killer = Arc::new(SqlKiller::new());
        killer.set_probe_interval(Duration::ZERO);
        let _probe = killer.set_connection_alive_probe(|| false);
        let _ = killer.set_cancel_hook(resets(&killer));
        let message = panic_of("handle_signal", || killer.handle_signal());
        killer.clear_connection_alive_probe();
        assert_usable(&killer, QueryInterrupted);
        assert_eq!(killer.handle_signal(), Ok(()));
        message
    });
    assert!(message.contains(OWN_CALLBACK), "{message}");
}

// ---- the owner dropped inside its own callback -----------------------------------

/// An async session task ended, and the cancel hook holds the last
/// reference to the owner: the KILL drops the owner inside its own hook.
/// The drop closes the session without waiting for the kill it runs in:
/// the KILL returns `Sent` and does not panic; later kills are `Stale`.
#[test]
fn dropping_the_owner_inside_its_own_hook_closes_the_session() {
    within("the KILL", HANG, || {
        let owner = Arc::new(SqlKiller::new());
        let handle = owner.handle();
        let slot: OwnerSlot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
        let s = Arc::clone(&slot);
        let _ = owner.set_cancel_hook(move || drop_owner(&s));
        drop(owner); // the hook's slot holds the last one
        let h = handle.clone();
        let kill = thread::spawn(move || h.send_kill_signal(QueryInterrupted));
        assert_eq!(joined(kill, "the KILL thread"), KillOutcome::Sent);
        assert!(slot.lock().unwrap().is_none(), "the hook dropped the owner");
        assert_closed(&handle);
    });
}

/// The same with the last owner held by a task's waker, which the kill
/// wakes.
#[test]
fn dropping_the_owner_inside_its_own_waker_closes_the_session() {
    within("the KILL", HANG, || {
        let owner = Arc::new(SqlKiller::new());
        let handle = owner.handle();
        let mut event = owner.kill_event_owned();
        let slot: OwnerSlot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
        let s = Arc::clone(&slot);
        register_waker(&mut event, move || drop_owner(&s));
        drop(owner); // the waker's slot holds the last one
        let h = handle.clone();
        let kill = thread::spawn(move || h.send_kill_signal(QueryInterrupted));
        assert_eq!(joined(kill, "the KILL thread"), KillOutcome::Sent);
        assert!(
            slot.lock().unwrap().is_none(),
            "the waker dropped the owner"
        );
        assert_eq!(
            event.try_outcome(),
            Some(WaitOutcome::Killed(QueryInterrupted))
        );
        assert_closed(&handle);
    });
}

/// The same with a hook run at install: an RPC thread installs its hook
/// for a statement already killed, and the hook holds the last owner.
#[test]
fn dropping_the_owner_inside_a_hook_run_at_install_closes_the_session() {
    within("the install", HANG, || {
        let owner = Arc::new(SqlKiller::new());
        let handle = owner.handle();
        let statement = owner.statement();
        assert_eq!(handle.send_kill_signal(QueryInterrupted), KillOutcome::Sent);
        let slot: OwnerSlot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
        drop(owner); // the slot holds the last one
        let (h, s) = (handle.clone(), Arc::clone(&slot));
        let rpc = thread::spawn(move || h.set_cancel_hook_for(statement, move || drop_owner(&s)));
        assert_eq!(joined(rpc, "the RPC thread"), HookStatus::Ran);
        assert!(slot.lock().unwrap().is_none(), "the hook dropped the owner");
        assert_closed(&handle);
    });
}

/// The hook holding the last owner panics, so the owner is dropped while
/// the hook unwinds: its drop must neither panic (a panic while unwinding
/// aborts the process) nor wait. The hook's panic reaches the KILL thread,
/// and the session is closed. In a child process: the failure is an abort.
#[test]
fn dropping_the_owner_while_its_own_hook_panics_closes_the_session() {
    in_child_process(
        "dropping_the_owner_while_its_own_hook_panics_closes_the_session",
        CHILD_HANG,
        || {
            within("the KILL", HANG, || {
                let owner = Arc::new(SqlKiller::new());
                let handle = owner.handle();
                let slot: OwnerSlot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
                let s = Arc::clone(&slot);
                let _ = owner.set_cancel_hook(move || {
                    let _owner = s.lock().unwrap().take(); // dropped while unwinding
                    panic!("hook failed");
                });
                drop(owner);
                let h = handle.clone();
                let kill = thread::spawn(move || h.send_kill_signal(QueryInterrupted));
                let panic = kill.join().expect_err("the hook's panic reaches the KILL");
                assert_eq!(panic_message(&*panic), "hook failed");
                assert!(slot.lock().unwrap().is_none(), "the hook took the owner");
                assert_closed(&handle);
            });
        },
    );
}

/// The same with a waker that holds the last owner and panics.
#[test]
fn dropping_the_owner_while_its_own_waker_panics_closes_the_session() {
    in_child_process(
        "dropping_the_owner_while_its_own_waker_panics_closes_the_session",
        CHILD_HANG,
        || {
            within("the KILL", HANG, || {
                let owner = Arc::new(SqlKiller::new());
                let handle = owner.handle();
                let mut event = owner.kill_event_owned();
                let slot: OwnerSlot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
                let s = Arc::clone(&slot);
                register_waker(&mut event, move || {
                    let _owner = s.lock().unwrap().take(); // dropped while unwinding
                    panic!("waker failed");
                });
                drop(owner);
                let h = handle.clone();
                let kill = thread::spawn(move || h.send_kill_signal(QueryInterrupted));
                let panic = kill.join().expect_err("the waker's panic reaches the KILL");
                assert_eq!(panic_message(&*panic), "waker failed");
                assert!(slot.lock().unwrap().is_none(), "the waker took the owner");
                assert_eq!(
                    event.try_outcome(),
                    Some(WaitOutcome::Killed(QueryInterrupted))
                );
                assert_closed(&handle);
            });
        },
    );
}

// ---- finish functions -------------------------------------------------------------

/// A's finish function finishes B's result set, and B's finishes A's: the
/// inner call to A, made inside A's own function, is refused with
/// `ReentrantFinish` instead of waiting for itself; the others run.
#[test]
fn finish_functions_that_finish_each_other_refuse_the_reentry() {
    within("finish_result_set", HANG, || {
        type Calls = Arc<Mutex<Vec<(&'static str, Result<bool, FinishError>)>>>;
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let calls: Calls = Arc::default();
        let (other, seen) = (Arc::clone(&b), Arc::clone(&calls));
        a.set_finish_func(move || {
            let result = other.finish_result_set();
            seen.lock().unwrap().push(("B from A's", result));
        });
        let (other, seen) = (Arc::clone(&a), Arc::clone(&calls));
        b.set_finish_func(move || {
            let result = other.finish_result_set();
            seen.lock().unwrap().push(("A from B's", result));
        });

        assert_eq!(a.finish_result_set(), Ok(true));
        assert_eq!(
            std::mem::take(&mut *calls.lock().unwrap()),
            [
                ("A from B's", Err(FinishError::ReentrantFinish)),
                ("B from A's", Ok(true)),
            ]
        );
        assert_eq!(b.finish_result_set(), Ok(true));
        assert_eq!(
            std::mem::take(&mut *calls.lock().unwrap()),
            [
                ("B from A's", Err(FinishError::ReentrantFinish)),
                ("A from B's", Ok(true)),
            ]
        );
        // Each function holds the other session: clear them.
        a.clear_finish_func().unwrap();
        b.clear_finish_func().unwrap();
    });
}

/// A session killed from another thread-local's destructor, at thread
/// exit, after the crate's own per-thread state may already be gone: the
/// kill is served (its hook runs) and nothing panics inside a destructor,
/// which would abort (child process).
#[test]
fn a_kill_from_a_thread_local_destructor_at_thread_exit_does_not_abort() {
    support::in_child_process(
        "a_kill_from_a_thread_local_destructor_at_thread_exit_does_not_abort",
        Duration::from_secs(20),
        || {
            struct KillOnExit(Option<(SqlKiller, Arc<AtomicUsize>)>);
            impl Drop for KillOnExit {
                fn drop(&mut self) {
                    if let Some((killer, ran)) = self.0.take() {
                        let r = Arc::clone(&ran);
                        let _ = killer.set_cancel_hook(move || {
                            r.fetch_add(1, SeqCst);
                        });
                        let _ = killer.send_kill_signal(KillSignal::QueryInterrupted);
                        assert_eq!(ran.load(SeqCst), 1, "the hook ran");
                        drop(killer);
                    }
                }
            }
            thread_local! {
                static ON_EXIT: std::cell::RefCell<KillOnExit> =
                    const { std::cell::RefCell::new(KillOnExit(None)) };
            }
            let ran = Arc::new(AtomicUsize::new(0));
            let r = Arc::clone(&ran);
            std::thread::spawn(move || {
                // This thread-local first, so that it is destroyed after...
                ON_EXIT.with(|slot| slot.borrow_mut().0 = Some((SqlKiller::new(), r)));
                // ...the crate's per-thread state, first touched here (a
                // hook run at install enters a frame).
                let other = SqlKiller::new();
                let _ = other.send_kill_signal(KillSignal::QueryInterrupted);
                let _ = other.set_cancel_hook(|| {});
            })
            .join()
            .expect("the thread exits cleanly");
            assert_eq!(ran.load(SeqCst), 1);
        },
    );
}

/// The owner dropped inside its own hook, from a thread-local destructor
/// at thread exit: the reentrancy rule still holds there, so the drop
/// closes the session without waiting for the kill this thread is
/// running (a watchdog in a child process: a hang fails, an abort fails).
#[test]
fn dropping_the_owner_inside_its_own_hook_from_a_thread_local_destructor_closes_the_session() {
    support::in_child_process(
        "dropping_the_owner_inside_its_own_hook_from_a_thread_local_destructor_closes_the_session",
        Duration::from_secs(20),
        || {
            struct DropOnExit(Option<std::sync::mpsc::Sender<bool>>);
            impl Drop for DropOnExit {
                fn drop(&mut self) {
                    let Some(report) = self.0.take() else { return };
                    let owner = Arc::new(SqlKiller::new());
                    let handle = owner.handle();
                    let slot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
                    let s = Arc::clone(&slot);
                    let _ = owner.set_cancel_hook(move || drop(s.lock().unwrap().take()));
                    drop(owner); // the hook holds the last reference
                    let sent = handle.send_kill_signal(KillSignal::QueryInterrupted);
                    let closed = handle.send_kill_signal(KillSignal::QueryInterrupted);
                    let _ = report.send(sent == KillOutcome::Sent && closed == KillOutcome::Stale);
                }
            }
            thread_local! {
                static ON_EXIT: std::cell::RefCell<DropOnExit> =
                    const { std::cell::RefCell::new(DropOnExit(None)) };
            }
            let (report, outcome) = std::sync::mpsc::channel();
            let _thread = std::thread::spawn(move || {
                ON_EXIT.with(|slot| slot.borrow_mut().0 = Some(report));
                // The crate's per-thread state, touched after: destroyed first.
                let other = SqlKiller::new();
                let _ = other.send_kill_signal(KillSignal::QueryInterrupted);
                let _ = other.set_cancel_hook(|| {});
            });
            let ok = outcome
                .recv_timeout(Duration::from_secs(5))
                .expect("the drop inside the hook returned (no hang)");
            assert!(ok, "the kill was sent and the session closed");
        },
    );
}

/// A probe run by a dead-connection checker through a handle holds the
/// last reference to its owner, drops it, and reports the client gone:
/// the session closes, the probe's kill finds it closed, nothing waits
/// or panics.
#[test]
fn a_probe_that_drops_the_last_reference_to_its_owner_closes_the_session() {
    within("the probe's drop", HANG, || {
        let owner = Arc::new(SqlKiller::new());
        let handle = owner.handle();
        let slot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
        let s = Arc::clone(&slot);
        let _ = owner.set_connection_alive_probe(move || {
            drop(s.lock().unwrap().take());
            false
        });
        drop(owner); // the probe's slot holds the last reference
        assert!(!handle.check_connection_alive());
        assert_closed(&handle);
    });
}

/// A probe that kills another session, whose hook checks back on the
/// first: no wait, both kills land.
#[test]
fn a_probe_that_kills_another_session_completes() {
    within("the probe's kill", HANG, || {
        let (a, b) = (Arc::new(SqlKiller::new()), Arc::new(SqlKiller::new()));
        let b_handle = b.handle();
        let a_handle = a.handle();
        let _ = b.set_cancel_hook(move || {
            let _ = a_handle.check_connection_alive();
        });
        a.set_probe_interval(Duration::ZERO);
        let _ = a.set_connection_alive_probe(move || {
            let _ = b_handle.send_kill_signal(QueryInterrupted);
            false
        });
        assert!(a.handle_signal().is_err());
        assert_eq!(b.kill_signal(), Some(QueryInterrupted));
        assert_eq!(a.reset(), Some(QueryInterrupted));
        assert_eq!(b.reset(), Some(QueryInterrupted));
    });
}

/// A finish function run through a handle holds the last reference to its
/// owner and drops it: the session closes, the run ends, nothing waits.
#[test]
fn a_finish_function_that_drops_the_last_reference_to_its_owner_closes_the_session() {
    within("the finish function's drop", HANG, || {
        let owner = Arc::new(SqlKiller::new());
        let handle = owner.handle();
        let slot = Arc::new(Mutex::new(Some(Arc::clone(&owner))));
        let s = Arc::clone(&slot);
        owner.set_finish_func(move || drop(s.lock().unwrap().take()));
        drop(owner);
        assert_eq!(handle.finish_result_set(), Ok(true));
        assert_closed(&handle);
        assert_eq!(
            handle.finish_result_set(),
            Ok(false),
            "released with its owner"
        );
    });
}
