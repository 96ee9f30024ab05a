//! Helpers shared by the integration tests: a watchdog that turns a hang
//! into a failure, a child process for scenarios that could abort the
//! test binary, and the CPU time a thread has used.
//!
//! A test file takes them with `mod support;` and uses the ones it needs.
#![allow(dead_code)] // each test binary uses only some of the helpers

use std::any::Any;
use std::io::Read;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `scenario` on its own thread and returns what it returns. Fails
/// the test if the scenario is still running after `timeout`: a hang is
/// reported as a failure naming `what`, not as a test run that never ends
/// (the blocked thread is left behind). A panic inside the scenario is
/// passed on to the caller.
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    scenario: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, outcome) = mpsc::channel();
    thread::Builder::new()
        .name(format!("within: {what}"))
        .spawn(move || {
            let _ = done.send(catch_unwind(AssertUnwindSafe(scenario)));
        })
        .expect("spawn the scenario's thread");
    match outcome.recv_timeout(timeout) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => resume_unwind(panic),
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {timeout:?}: it hangs")
        }
        Err(RecvTimeoutError::Disconnected) => unreachable!("the scenario's thread always reports"),
    }
}

/// The text of a panic's payload (`panic!` with a message gives a `String`
/// or a `&str`), or `""` for any other payload.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Set in the child process that [`in_child_process`] starts, to the name
/// of the test whose scenario it runs.
const CHILD: &str = "SQLKILLER_TEST_CHILD";

/// Runs `scenario` in a child process, for a scenario that could abort:
/// an abort there fails this test instead of taking the whole test binary
/// down with it.
///
/// Call it as the whole body of the test named `test` (the name libtest
/// gives it; `--exact` must match it). The parent re-runs the current test
/// binary with `--exact test --nocapture` and an environment variable that
/// makes the child's call run `scenario`; then the parent checks that the
/// child exited normally (not killed by a signal, no failed assertion),
/// that it really ran that one test, and that it finished within
/// `timeout` (otherwise the child is killed and the test fails: a hang).
pub fn in_child_process(test: &str, timeout: Duration, scenario: impl FnOnce()) {
    if std::env::var_os(CHILD).is_some_and(|name| name == test) {
        scenario();
        return;
    }
    let exe = std::env::current_exe().expect("the path of the test binary");
    let mut child = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child process");
    // Read both pipes while the child runs, so it never blocks on a full one.
    let stdout = read_all(child.stdout.take().expect("piped"));
    let stderr = read_all(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child process") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill(); // our own child, by its handle
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().expect("the reader does not panic");
    let stderr = stderr.join().expect("the reader does not panic");
    let output = format!("--- child's stdout:\n{stdout}\n--- child's stderr:\n{stderr}");
    match status {
        None => panic!("{test}: the child process still ran after {timeout:?}: it hangs\n{output}"),
        Some(status) if !status.success() => {
            panic!("{test}: the child process {}\n{output}", describe(status))
        }
        Some(_) => assert!(
            stdout.contains("test result: ok. 1 passed"),
            "{test}: the child process ran no test of that name\n{output}"
        ),
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// How a child process that did not succeed ended.
fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                6 => " (SIGABRT: the process aborted)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV: e.g. a stack overflow)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    format!("failed: {status}")
}

/// The CPU time, user plus system, that the thread whose `/proc` entry is
/// `task` has used so far, in clock ticks (1/100 s on Linux):
/// `/proc/thread-self` for the calling thread, `/proc/self/task/<tid>` for
/// another. `None` where there is no such entry (not Linux, or the thread
/// has exited).
pub fn cpu_ticks(task: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count the fields
    // after it. Of the whole line, the state is the 3rd field, utime the
    // 14th and stime the 15th.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// [`cpu_ticks`] of the calling thread.
pub fn thread_cpu_ticks() -> Option<u64> {
    cpu_ticks(Path::new("/proc/thread-self"))
}

/// A waker that runs its function when woken, as an executor's waker
/// schedules its task.
pub struct OnWake<F>(pub F);

impl<F: Fn() + Send + Sync + 'static> std::task::Wake for OnWake<F> {
    fn wake(self: std::sync::Arc<Self>) {
        (self.0)()
    }
}

/// Registers `event` with a waker that runs `wake`: polls it once, while
/// its statement is neither killed nor ended.
pub fn register_waker(
    event: &mut sqlkiller::OwnedKillEvent,
    wake: impl Fn() + Send + Sync + 'static,
) {
    use std::future::Future;
    let waker = std::task::Waker::from(std::sync::Arc::new(OnWake(wake)));
    let polled = std::pin::Pin::new(event).poll(&mut std::task::Context::from_waker(&waker));
    assert_eq!(polled, std::task::Poll::Pending);
}
