//! A soak: 8 clients run statements while 2 killer connections send
//! `KILL QUERY ID` and `KILL QUERY` at what SHOW PROCESSLIST shows, for
//! `SQLKILLER_SOAK_SECS` seconds (default 20). Every statement's outcome
//! is then checked against every kill: 0 violations allowed.
//!
//! A violation: a statement killed that no kill was aimed at, a kill
//! reported as landed whose statement was not stopped (lost), an error
//! code, SQLSTATE or message other than the kill's, a 3024 outside
//! `max_execution_time`, a COMMIT reported as killed.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

const CLIENTS: usize = 8;
const KILLERS: usize = 2;
const LIMIT_MS: u64 = 150;

/// A small deterministic generator (xorshift64*), enough for a workload.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Select,
    Commit,
    Other,
}

/// What a client saw of one statement.
#[derive(Debug)]
struct Outcome {
    tag: String,
    conn: u64,
    kind: Kind,
    limited: bool,
    error: Option<(u16, String, String)>,
}

/// What a killer did: the statement's tag for `KILL QUERY ID`, `None` for
/// `KILL QUERY <conn>`; `Ok(1)` if it landed, `Ok(0)` if not, or the error.
#[derive(Debug)]
struct KillRecord {
    conn: u64,
    tag: Option<String>,
    result: Result<u64, u16>,
}

async fn run(
    conn: &mut Conn,
    out: &mut Vec<Outcome>,
    tag: String,
    sql: String,
    kind: Kind,
    limited: bool,
) -> bool {
    let error = match conn.query_drop(format!("{sql} /* {tag} */")).await {
        Ok(()) => None,
        // SQLite may have rolled back already when it was interrupted.
        Err(e) => Some(server_error(e))
            .filter(|e| !(sql == "ROLLBACK" && e.2.contains("no transaction is active"))),
    };
    let failed = error.is_some();
    out.push(Outcome {
        tag,
        conn: u64::from(conn.id()),
        kind,
        limited,
        error,
    });
    failed
}

async fn client(opts: OptsBuilder, c: usize, until: Instant) -> Vec<Outcome> {
    let mut conn = Conn::new(opts).await.unwrap();
    let limited = c.is_multiple_of(2);
    conn.query_drop("CREATE TABLE log(v INTEGER)")
        .await
        .unwrap();
    if limited {
        conn.query_drop(format!("SET max_execution_time = {LIMIT_MS}"))
            .await
            .unwrap();
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1));
    let mut out = Vec::new();
    let mut n = 0;
    let mut tag = || {
        n += 1;
        format!("c{c}s{n}")
    };
    while Instant::now() < until {
        let dice = rng.below(100);
        if dice < 50 {
            let k = 1 + rng.below(30);
            let sql = format!("SELECT count(*) FROM t a, t b WHERE a.x <= {k}");
            run(&mut conn, &mut out, tag(), sql, Kind::Select, limited).await;
        } else if dice < 65 {
            let k = 500 + rng.below(1500);
            let sql = format!("SELECT count(*) FROM t a, t b WHERE a.x <= {k}");
            run(&mut conn, &mut out, tag(), sql, Kind::Select, limited).await;
        } else if dice < 85 {
            let v = rng.below(1000);
            let mut failed = run(
                &mut conn,
                &mut out,
                tag(),
                "BEGIN".into(),
                Kind::Other,
                limited,
            )
            .await;
            if !failed {
                let sql = format!("INSERT INTO log VALUES ({v})");
                failed = run(&mut conn, &mut out, tag(), sql, Kind::Other, limited).await;
            }
            if failed {
                // Killed mid-transaction: roll back, again if the ROLLBACK is killed.
                for _ in 0..10 {
                    let sql = "ROLLBACK".to_string();
                    if !run(&mut conn, &mut out, tag(), sql, Kind::Other, limited).await {
                        break;
                    }
                }
            } else {
                run(
                    &mut conn,
                    &mut out,
                    tag(),
                    "COMMIT".into(),
                    Kind::Commit,
                    limited,
                )
                .await;
            }
        } else {
            let k = 1 + rng.below(20_000);
            let sql = format!("SELECT x FROM t WHERE x = {k}");
            run(&mut conn, &mut out, tag(), sql, Kind::Select, limited).await;
        }
    }
    let _ = conn.disconnect().await;
    out
}

async fn killer(opts: OptsBuilder, k: usize, until: Instant) -> Vec<KillRecord> {
    let mut conn = Conn::new(opts).await.unwrap();
    let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (k as u64 + 1));
    let mut out = Vec::new();
    while Instant::now() < until {
        let targets: Vec<(Process, String)> = processlist(&mut conn)
            .await
            .into_iter()
            .filter_map(|p| {
                let info = p.info.clone()?;
                let tag = info.split("/* ").nth(1)?.split(" */").next()?.to_string();
                let commit = info.starts_with("COMMIT");
                (p.query_id.is_some() && !commit).then_some((p, tag))
            })
            .collect();
        if targets.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let (p, tag) = &targets[rng.below(targets.len() as u64) as usize];
        let by_id = rng.below(4) != 0;
        let sql = if by_id {
            format!("KILL QUERY ID {}", p.query_id.unwrap())
        } else {
            format!("KILL QUERY {}", p.id)
        };
        let result = match conn.query_drop(sql).await {
            Ok(()) => Ok(conn.affected_rows()),
            Err(e) => Err(server_error(e).0),
        };
        out.push(KillRecord {
            conn: p.id,
            tag: by_id.then(|| tag.clone()),
            result,
        });
        tokio::time::sleep(Duration::from_millis(5 + rng.below(30))).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_of_8_clients_and_2_killers_has_no_violation() {
    let secs: u64 = std::env::var("SQLKILLER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let server = Server::start(20_000);
    let until = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(server.opts(), c, until)))
        .collect();
    let killers: Vec<_> = (0..KILLERS)
        .map(|k| tokio::spawn(killer(server.opts(), k, until)))
        .collect();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let mut kills = Vec::new();
    for k in killers {
        kills.extend(k.await.unwrap());
    }
    // The server logs each kill a kill-immune COMMIT absorbed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut absorbed: HashMap<u64, usize> = HashMap::new();
    for line in server.log() {
        if line.contains("absorbed by a kill-immune COMMIT") {
            let conn = line.trim_start_matches("conn ").split(':').next().unwrap();
            *absorbed.entry(conn.parse().unwrap()).or_default() += 1;
        }
    }

    let mut violations = Vec::new();
    let mut sent_by_id: HashMap<&str, usize> = HashMap::new();
    let mut sent_by_conn: HashMap<u64, usize> = HashMap::new();
    let (mut stale, mut missed, mut gone) = (0, 0, 0);
    for kill in &kills {
        match (&kill.tag, kill.result) {
            (Some(tag), Ok(1)) => *sent_by_id.entry(tag).or_default() += 1,
            (None, Ok(1)) => *sent_by_conn.entry(kill.conn).or_default() += 1,
            (_, Ok(_)) => missed += 1,
            (Some(_), Err(1957)) => stale += 1,
            (None, Err(1094)) => gone += 1,
            (_, Err(code)) => violations.push(format!("{kill:?}: error {code}")),
        }
    }
    let mut unexplained: HashMap<u64, usize> = HashMap::new();
    let (mut ok, mut interrupted, mut timed_out) = (0, 0, 0);
    for o in &outcomes {
        let by_id = sent_by_id.get(o.tag.as_str()).copied().unwrap_or(0);
        if by_id > 1 {
            violations.push(format!("{}: {by_id} KILL QUERY ID landed", o.tag));
        }
        match &o.error {
            None => {
                ok += 1;
                if by_id > 0 {
                    violations.push(format!(
                        "{}: killed by id, yet it succeeded (lost kill)",
                        o.tag
                    ));
                }
            }
            Some((1317, state, message)) if state == "70100" && message == INTERRUPTED => {
                interrupted += 1;
                if o.kind == Kind::Commit {
                    violations.push(format!("{}: a COMMIT reported killed", o.tag));
                }
                if by_id == 0 {
                    *unexplained.entry(o.conn).or_default() += 1;
                }
            }
            Some((3024, state, message)) if state == "HY000" && message == TIMED_OUT => {
                timed_out += 1;
                if !o.limited || o.kind != Kind::Select {
                    violations.push(format!("{}: 3024 outside max_execution_time", o.tag));
                }
                if by_id > 0 {
                    violations.push(format!("{}: killed by id, yet reported 3024", o.tag));
                }
            }
            Some(other) => violations.push(format!("{}: wrong error {other:?}", o.tag)),
        }
    }
    // A KILL QUERY <conn> that landed stopped exactly one statement of that
    // connection (or a COMMIT absorbed it): count them per connection.
    let mut conns: Vec<u64> = outcomes.iter().map(|o| o.conn).collect();
    conns.sort_unstable();
    conns.dedup();
    for conn in conns {
        let sent = sent_by_conn.get(&conn).copied().unwrap_or(0);
        let seen = unexplained.get(&conn).copied().unwrap_or(0);
        let absorbed = absorbed.get(&conn).copied().unwrap_or(0);
        if seen + absorbed != sent {
            violations.push(format!(
                "conn {conn}: {sent} KILL QUERY landed, {seen} statements killed without a KILL QUERY ID, {absorbed} absorbed by COMMITs"
            ));
        }
    }

    let commits = outcomes.iter().filter(|o| o.kind == Kind::Commit).count();
    println!(
        "soak {secs}s: {CLIENTS} clients ({} with max_execution_time {LIMIT_MS} ms), {KILLERS} killers",
        CLIENTS.div_ceil(2)
    );
    println!(
        "  statements: {} (ok {ok}, 1317 {interrupted}, 3024 {timed_out}); COMMITs {commits}",
        outcomes.len()
    );
    println!(
        "  KILL QUERY ID landed {}, KILL QUERY <conn> landed {}, found nothing to kill {missed}, stale ids refused {stale}, conn gone {gone}",
        sent_by_id.values().sum::<usize>(),
        sent_by_conn.values().sum::<usize>(),
    );
    println!(
        "  kills absorbed by kill-immune COMMITs: {}",
        absorbed.values().sum::<usize>()
    );
    println!("  violations: {}", violations.len());
    for v in violations.iter().take(20) {
        println!("    {v}");
    }
    assert!(violations.is_empty(), "{} violations", violations.len());
    assert!(
        interrupted > 0 && !kills.is_empty(),
        "the soak killed nothing"
    );
}
