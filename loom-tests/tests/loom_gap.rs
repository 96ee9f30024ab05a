//! Why the crate starts its RMW sequences with `fetch_or(0)`, and why every
//! real model asserts the outcomes it reached: a demonstration of the loom
//! 0.7 exploration gap (tokio-rs/loom#392 is one face of it).
//!
//! A thread that loads a word and then CASes it hides, with its own load,
//! another thread's earlier load of that word from loom's DPOR, so loom
//! never runs the CAS before that other load. This test pins the behaviour
//! down: if a loom upgrade closes the gap it fails, and the `fetch_or(0)` in
//! `StateCell::load_for_update (src/state.rs)` can become a plain load again.
#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::Mutex;

use loom::sync::atomic::{AtomicU64, Ordering::*};
use loom::sync::Arc;
use loom::thread;

fn outcomes(first_access_is_rmw: bool) -> BTreeSet<u64> {
    let seen = std::sync::Arc::new(Mutex::new(BTreeSet::new()));
    let record = std::sync::Arc::clone(&seen);
    loom::model(move || {
        let word = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&word);
        let writer = thread::spawn(move || {
            let current = if first_access_is_rmw {
                w.fetch_or(0, Acquire)
            } else {
                w.load(Acquire)
            };
            let _ = w.compare_exchange(current, 1, AcqRel, Acquire);
        });
        let read = word.load(Acquire); // may see 0 or 1
        writer.join().unwrap();
        record.lock().unwrap().insert(read);
    });
    let seen = seen.lock().unwrap().clone();
    seen
}

#[test]
fn load_then_cas_hides_the_race_from_loom() {
    // Both values are possible; with a plain load first, loom explores one.
    assert_eq!(
        outcomes(false),
        BTreeSet::from([0]),
        "loom closed the gap: see module docs"
    );
    assert_eq!(outcomes(true), BTreeSet::from([0, 1]));
}
