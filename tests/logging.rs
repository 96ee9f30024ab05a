//! With the `tracing` feature, a kill logs "kill initiated" with the
//! connection id and reason, and `reset` logs "kill finished", as TiDB does.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use sqlkiller::{KillSignal, SqlKiller};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Keeps every event as "message key=value ...", or panics on every event.
#[derive(Clone, Default)]
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    panics: bool,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        assert!(!self.panics, "the log subscriber failed");
        let mut line = Line(String::new());
        event.record(&mut line);
        self.lines
            .lock()
            .unwrap()
            .push(format!("{} {}", event.metadata().level(), line.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn kills_and_resets_are_logged_with_the_connection_id() {
    let capture = Capture::default();
    let lines = Arc::clone(&capture.lines);
    tracing::subscriber::with_default(capture, || {
        let killer = SqlKiller::new();
        killer.set_conn_id(77);
        let _ = killer.send_kill_signal_with_reason(KillSignal::KilledByMemArbitrator, "pool p1");
        let _ = killer.send_kill_signal(KillSignal::QueryInterrupted); // loses: not logged
        killer.reset();
        killer.reset(); // nothing cleared: not logged
    });
    let lines = lines.lock().unwrap();
    assert_eq!(
        *lines,
        [
            "WARN kill initiated conn_id=77 signal=KilledByMemArbitrator reason=\"pool p1\"",
            "WARN kill finished conn_id=77 signal=KilledByMemArbitrator",
        ]
    );
}

/// A log subscriber is user code too: one that panics on every event
/// neither skips the kill's wake-ups and hook nor escapes `reset`.
#[test]
fn a_panicking_log_subscriber_skips_no_wake_up_hook_or_reset() {
    let panicking = Capture {
        panics: true,
        ..Capture::default()
    };
    tracing::subscriber::with_default(panicking, || {
        let killer = SqlKiller::new();
        let ran = Arc::new(Mutex::new(false));
        let r = Arc::clone(&ran);
        let _ = killer.set_cancel_hook(move || *r.lock().unwrap() = true);
        let mut event = killer.kill_event();
        assert_eq!(
            killer.send_kill_signal(KillSignal::QueryInterrupted),
            sqlkiller::KillOutcome::Sent
        );
        assert!(
            *ran.lock().unwrap(),
            "the hook ran despite the log line's panic"
        );
        assert_eq!(
            event.try_outcome(),
            Some(sqlkiller::WaitOutcome::Killed(KillSignal::QueryInterrupted))
        );
        assert_eq!(killer.reset(), Some(KillSignal::QueryInterrupted));
    });
}
