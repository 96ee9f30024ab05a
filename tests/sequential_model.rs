//! Model-based test of the single-threaded semantics: random sequences of
//! kills, targeted kills (current and stale), checks, resets, kill events,
//! cancel hooks and kill-immune sections, each compared step by step with a
//! small reference model written from the contract (the crate docs and README
//! "Decisions"). The loom models cover the races; this covers the
//! combinations.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use sqlkiller::{HookStatus, KillEvent, KillOutcome, KillSignal, SqlKiller, WaitOutcome};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the contract says the killer's state is.
#[derive(Default)]
struct Model {
    statement: u64,
    signal: Option<KillSignal>,
    immune_depth: u32,
    /// Hooks installed on the current statement that will run if it is killed
    /// (more than one only when installed on a killed statement in a section).
    hooks_owed: usize,
    hook_runs: usize,
    /// Expected outcome of each live event, by index into `events`.
    events: Vec<Option<WaitOutcome>>,
    /// Statement of each live event.
    event_statements: Vec<u64>,
    /// A kill inside a section that was dropped (not released) still owes
    /// its hooks and waiters to the owner's next operation.
    owed: bool,
}

impl Model {
    /// The owner's next operation delivers what a dropped section deferred.
    fn deliver_owed(&mut self) {
        if std::mem::take(&mut self.owed) {
            self.serve_kill();
        }
    }

    fn serve_kill(&mut self) {
        let signal = self.signal.expect("served only when killed");
        self.hook_runs += std::mem::take(&mut self.hooks_owed);
        for (outcome, statement) in self.events.iter_mut().zip(&self.event_statements) {
            if outcome.is_none() && *statement == self.statement {
                *outcome = Some(WaitOutcome::Killed(signal));
            }
        }
    }

    fn kill(&mut self, signal: KillSignal) -> KillOutcome {
        match self.signal {
            Some(winner) => KillOutcome::AlreadyKilled(winner),
            None => {
                self.signal = Some(signal);
                if self.immune_depth == 0 {
                    self.serve_kill();
                }
                KillOutcome::Sent
            }
        }
    }

    fn reset(&mut self) -> Option<KillSignal> {
        self.deliver_owed();
        for (outcome, statement) in self.events.iter_mut().zip(&self.event_statements) {
            if outcome.is_none() && *statement == self.statement {
                *outcome = Some(WaitOutcome::Reset);
            }
        }
        self.hooks_owed = 0;
        self.statement += 1;
        self.signal.take()
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed | 1);
    let killer = SqlKiller::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut model = Model::default();
    let mut events: Vec<KillEvent<'_>> = Vec::new();
    let mut guards = Vec::new();
    // Every statement id so far, to aim kills at earlier statements.
    let mut ids = vec![killer.statement()];

    for step in 0..steps {
        let context = format!("seed {seed}, step {step}");
        let signal = KillSignal::ALL[rng.below(6) as usize];
        match rng.below(10) {
            0 | 1 => assert_eq!(
                killer.send_kill_signal(signal),
                model.kill(signal),
                "{context}"
            ),
            2 => {
                // A targeted kill, sometimes aimed at an earlier statement.
                let back = rng.below(3).min(model.statement);
                let id = killer.statement();
                assert_eq!(id.as_u64(), model.statement, "{context}");
                let target = ids[ids.len() - 1 - back as usize];
                let expected = if back == 0 {
                    model.kill(signal)
                } else {
                    KillOutcome::Stale
                };
                assert_eq!(killer.kill_statement(target, signal), expected, "{context}");
            }
            3 => {
                if model.immune_depth == 0 {
                    model.deliver_owed();
                }
                let expected = model.signal.filter(|_| model.immune_depth == 0);
                let actual = killer.handle_signal().err().map(|e| e.signal());
                assert_eq!(actual, expected, "{context}: handle_signal");
            }
            4 => {
                assert_eq!(killer.reset(), model.reset(), "{context}: reset");
                ids.push(killer.statement());
            }
            5 => {
                let r = Arc::clone(&runs);
                let status = killer.set_cancel_hook(move || {
                    r.fetch_add(1, SeqCst);
                });
                let expected = match model.signal {
                    None => {
                        model.hooks_owed = 1; // replaces an armed one
                        HookStatus::Armed
                    }
                    Some(_) if model.immune_depth > 0 => {
                        model.hooks_owed += 1;
                        HookStatus::Armed
                    }
                    Some(_) => {
                        model.hook_runs += 1;
                        HookStatus::Ran
                    }
                };
                assert_eq!(status, expected, "{context}: set_cancel_hook");
            }
            6 => {
                let outcome = match model.signal {
                    Some(signal) if model.immune_depth == 0 => Some(WaitOutcome::Killed(signal)),
                    _ => None,
                };
                events.push(killer.kill_event());
                model.events.push(outcome);
                model.event_statements.push(model.statement);
            }
            7 => {
                if model.immune_depth == 0 {
                    model.deliver_owed();
                }
                guards.push(killer.kill_immune());
                model.immune_depth += 1;
            }
            8 => {
                // End the innermost section: released (served at once) or
                // dropped (owed to the owner's next operation).
                if let Some(guard) = guards.pop() {
                    model.immune_depth -= 1;
                    let last = model.immune_depth == 0 && model.signal.is_some();
                    if rng.below(2) == 0 {
                        guard.release();
                        if last {
                            model.serve_kill();
                        }
                    } else {
                        drop(guard);
                        model.owed |= last;
                    }
                }
            }
            _ => {
                // Drop a random event, as a caller that stops waiting would.
                if !events.is_empty() {
                    let i = rng.below(events.len() as u64) as usize;
                    drop(events.swap_remove(i));
                    model.events.swap_remove(i);
                    model.event_statements.swap_remove(i);
                }
            }
        }
        assert_eq!(runs.load(SeqCst), model.hook_runs, "{context}: hook runs");
        assert_eq!(killer.is_kill_immune(), model.immune_depth > 0, "{context}");
        assert_eq!(killer.kill_signal(), model.signal, "{context}");
        for (i, event) in events.iter_mut().enumerate() {
            assert_eq!(event.try_outcome(), model.events[i], "{context}: event {i}");
        }
    }
}

#[test]
fn random_sequences_match_the_reference_model() {
    for seed in 1..=300u64 {
        run(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), 300);
    }
}
