//! The demonstration (`examples/sessions.rs`, SQLite sessions stopped by
//! KILL QUERY, max_execution_time and a dead-client probe) runs for a few
//! seconds with a fixed seed: no invariant breaks, every kill stopped its
//! query with the right error code, and bad flags get a usage message.

use std::path::PathBuf;
use std::process::Command;

/// The example's binary: `cargo test` builds it next to the test binaries;
/// `cargo test --test demo` alone does not, so build it then.
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let path = profile.join("examples").join("sessions");
    if !path.exists() {
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "sessions"]);
        if profile.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building the example failed"
        );
    }
    assert!(path.exists(), "{} not built", path.display());
    path
}

#[test]
fn a_short_run_keeps_every_invariant() {
    let output = Command::new(example())
        .args(["--duration", "3", "--sessions", "3", "--seed", "7"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", output.status);
    assert!(stdout.contains("invariant violations:   0"), "{stdout}");
    // Kills happened, each returned its own error code: 1317 for KILL QUERY
    // and the probe, 3024 for max_execution_time (the run checks the match).
    assert!(stdout.contains("error 1317 QueryInterrupted"), "{stdout}");
    let stopped = stdout
        .lines()
        .find(|l| l.starts_with("kill -> query stopped"))
        .unwrap();
    assert!(!stopped.contains("(0 queries"), "{stdout}");
}

#[test]
fn bad_flags_get_the_usage_and_exit_2() {
    for args in [
        &["--sessions", "0"][..],
        &["--duration", "soon"],
        &["--frobnicate"],
        &["--seed"],
    ] {
        let output = Command::new(example()).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("usage: sessions"), "{args:?}: {stderr}");
    }
}
