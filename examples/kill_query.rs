//! A session runs statements; other threads stop them.
//!
//! Run with `cargo run --example kill_query`. Shows the three ways a
//! statement ends early — `KILL QUERY`, the `max_execution_time` watchdog,
//! the memory arbitrator with a reason — a late `KILL QUERY` that arrives
//! after its statement ended and so does nothing, and a kill that arrives
//! during a COMMIT, held back by a kill-immune section.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use sqlkiller::{KillOutcome, KillSignal, SqlKiller, StatementId};

/// The session thread's statement: scan "rows", checking the killer at each.
fn run_statement(killer: &SqlKiller, sql: &str, rows: u64) -> String {
    let start = Instant::now();
    for row in 0..rows {
        if let Err(err) = killer.handle_signal() {
            return format!(
                "{sql:<36} -> ERROR {} ({}): {} [after {row} rows, {:?}]",
                err.code(),
                err.sqlstate(),
                err,
                start.elapsed()
            );
        }
        thread::sleep(Duration::from_micros(50)); // one row of work
    }
    format!("{sql:<36} -> OK, {rows} rows in {:?}", start.elapsed())
}

fn main() {
    let killer = Arc::new(SqlKiller::new());
    killer.set_conn_id(4242);

    // 1. KILL QUERY from another connection's thread.
    let handler = {
        let killer = Arc::clone(&killer);
        let target = killer.statement();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            killer.kill_statement(target, KillSignal::QueryInterrupted)
        })
    };
    println!("{}", run_statement(&killer, "SELECT * FROM big", 100_000));
    println!("  KILL QUERY 4242 returned {:?}", handler.join().unwrap());
    println!("  reset cleared {:?}\n", killer.reset());

    // 2. The max_execution_time watchdog, aimed at this statement only.
    let watchdog = watchdog(&killer, killer.statement(), Duration::from_millis(30));
    println!(
        "{}",
        run_statement(&killer, "SELECT /*+ MAX_EXECUTION_TIME(30) */", 100_000)
    );
    println!("  watchdog returned {:?}", watchdog.join().unwrap());
    println!("  reset cleared {:?}\n", killer.reset());

    // 3. The memory arbitrator, with a reason that reaches the error text.
    let arbitrator = {
        let killer = Arc::clone(&killer);
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            killer.send_kill_signal_with_reason(
                KillSignal::KilledByMemArbitrator,
                "pool 'olap' over quota by 512 MiB",
            )
        })
    };
    println!(
        "{}",
        run_statement(&killer, "SELECT ... GROUP BY huge", 100_000)
    );
    println!("  arbitrator returned {:?}", arbitrator.join().unwrap());
    println!("  reset cleared {:?}\n", killer.reset());

    // 4. A short statement finishes before its KILL QUERY arrives. The kill
    //    is aimed at that statement, so the next one is left alone.
    let short = killer.statement();
    println!("{}", run_statement(&killer, "SELECT 1", 10));
    killer.reset();
    let late = killer.kill_statement(short, KillSignal::QueryInterrupted);
    println!("  late KILL QUERY for {short} returned {late:?}");
    assert_eq!(late, KillOutcome::Stale);
    println!("{}", run_statement(&killer, "SELECT 2", 10));
    killer.reset();

    // 5. A KILL QUERY lands while COMMIT is past its point of no return. The
    //    commit finishes inside a kill-immune section; the kill is reported
    //    after it, instead of claiming a committed transaction failed.
    let _ = killer.set_cancel_hook(|| println!("  cancel hook: aborting the in-flight RPC"));
    let immune = killer.kill_immune();
    thread::scope(|s| {
        let kill = s.spawn(|| killer.send_kill_signal(KillSignal::QueryInterrupted));
        println!(
            "  KILL QUERY during COMMIT returned {:?}",
            kill.join().unwrap()
        );
    });
    println!("{}", run_statement(&killer, "COMMIT (kill-immune)", 10));
    println!("  COMMIT is durable; leaving the kill-immune section:");
    drop(immune);
    println!(
        "  next checkpoint: {:?}",
        killer.handle_signal().map_err(|e| e.code())
    );
    println!("  reset cleared {:?}", killer.reset());
}

/// Kills `statement` with `MaxExecTimeExceeded` once `limit` has passed.
fn watchdog(
    killer: &Arc<SqlKiller>,
    statement: StatementId,
    limit: Duration,
) -> thread::JoinHandle<KillOutcome> {
    let killer = Arc::clone(killer);
    thread::spawn(move || {
        thread::sleep(limit);
        killer.kill_statement(statement, KillSignal::MaxExecTimeExceeded)
    })
}
