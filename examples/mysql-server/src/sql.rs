//! The statements this server understands besides SQLite's, and SQLite's
//! results as MySQL replies.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode};

/// What a `KILL` statement aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `KILL QUERY <connection id>`.
    Query(u64),
    /// `KILL QUERY ID <query id>` (MariaDB).
    QueryId(u64),
    /// `KILL [CONNECTION] <connection id>`.
    Connection(u64),
}

/// One statement, as the front end dispatches it.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `KILL [QUERY | CONNECTION] [ID] n`.
    Kill(Target),
    /// `SHOW [FULL] PROCESSLIST`.
    ShowProcessList,
    /// `SET [SESSION] max_execution_time = ms` (0: no limit).
    SetMaxExecutionTime(u64),
    /// `SELECT CONNECTION_ID()`.
    ConnectionId,
    /// `SELECT @@a, @@b ...`: the named variables.
    Variables(Vec<String>),
    /// `COMMIT`: run by SQLite inside a kill-immune section.
    Commit,
    /// An empty statement.
    Empty,
    /// Anything else: SQLite's. `select`: a SELECT, which `max_execution_time` limits.
    Sql { select: bool },
    /// A statement of ours, badly written.
    Invalid(String),
}

/// Reads `query` (MySQL's keywords are case-insensitive).
pub fn parse(query: &str) -> Command {
    let lower = without_comments(query).to_ascii_lowercase();
    let lower = lower.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = lower.split_whitespace().collect();
    match words.as_slice() {
        [] => Command::Empty,
        ["kill", rest @ ..] => parse_kill(rest),
        ["show", "processlist"] | ["show", "full", "processlist"] => Command::ShowProcessList,
        ["set", ..] if lower.contains("max_execution_time") => parse_set(lower),
        ["commit"] | ["commit", "work"] => Command::Commit,
        _ if squeeze(lower) == "selectconnection_id()" => Command::ConnectionId,
        _ if lower.starts_with("select @@") => parse_variables(&lower["select".len()..]),
        [first, ..] => Command::Sql {
            select: *first == "select" || first.starts_with("select("),
        },
    }
}

/// `query` with its `/* ... */` comments blanked out.
fn without_comments(query: &str) -> String {
    let mut text = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("/*") {
        text.push_str(&rest[..start]);
        text.push(' ');
        rest = rest[start + 2..]
            .find("*/")
            .map_or("", |end| &rest[start + 2 + end + 2..]);
    }
    text.push_str(rest);
    text
}

fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

fn parse_kill(words: &[&str]) -> Command {
    let number = |word: &str| word.parse::<u64>().ok();
    let target = match words {
        [n] => number(n).map(Target::Connection),
        ["connection", n] => number(n).map(Target::Connection),
        ["query", n] => number(n).map(Target::Query),
        ["query", "id", n] => number(n).map(Target::QueryId),
        _ => None,
    };
    match target {
        Some(target) => Command::Kill(target),
        None => Command::Invalid(
            "KILL takes [QUERY | CONNECTION] <connection id>, or QUERY ID <query id>".into(),
        ),
    }
}

fn parse_set(lower: &str) -> Command {
    let assignment = squeeze(&lower["set".len()..]);
    let value = ["session", "@@session.", "@@", ""]
        .iter()
        .find_map(|prefix| {
            assignment
                .strip_prefix(prefix)?
                .strip_prefix("max_execution_time=")
        });
    match value.map(str::parse::<u64>) {
        Some(Ok(ms)) => Command::SetMaxExecutionTime(ms),
        _ => Command::Invalid(
            "SET max_execution_time takes a number of milliseconds (0: no limit)".into(),
        ),
    }
}

fn parse_variables(list: &str) -> Command {
    // `SELECT @@version_comment LIMIT 1`, as the mysql client sends.
    let list = list.split(" limit ").next().unwrap_or_default();
    let mut names = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        match item.strip_prefix("@@") {
            Some(name) if !name.is_empty() => names.push(name.to_string()),
            _ => return Command::Invalid(format!("not a system variable: {item:?}")),
        }
    }
    Command::Variables(names)
}

/// A cell of a result row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// The most rows a result set may have (it is held in memory until sent).
pub const MAX_ROWS: usize = 1_000_000;

/// What the client gets, unless a kill decides otherwise.
#[derive(Debug)]
pub enum Reply {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Done {
        affected: u64,
        last_insert_id: u64,
    },
    /// A MySQL error: code, SQLSTATE, message.
    Error(u16, &'static str, String),
    /// SQLite stopped at an interrupt; the kill's error says why.
    Interrupted,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Done {
            affected: 0,
            last_insert_id: 0,
        }
    }

    pub fn single(column: &str, cell: Cell) -> Reply {
        Reply::Rows {
            columns: vec![column.to_string()],
            rows: vec![vec![cell]],
        }
    }

    fn sqlite(e: rusqlite::Error) -> Reply {
        match e.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => Reply::Interrupted,
            _ => {
                let text = e.to_string();
                let syntax = ["syntax error", "incomplete input", "unrecognized token"];
                if text.contains("SQL is empty") {
                    Reply::Error(1065, "42000", "Query was empty".into())
                } else if syntax.iter().any(|s| text.contains(s)) {
                    Reply::Error(
                        1064,
                        "42000",
                        format!("You have an error in your SQL syntax: {text}"),
                    )
                } else {
                    Reply::Error(1105, "HY000", text)
                }
            }
        }
    }
}

/// Runs `sql` on SQLite (one statement).
pub fn execute(db: &Connection, sql: &str) -> Reply {
    let mut stmt = match db.prepare(sql) {
        Ok(stmt) => stmt,
        Err(e) => return Reply::sqlite(e),
    };
    let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
    if columns.is_empty() {
        return match stmt.raw_execute() {
            Ok(affected) => Reply::Done {
                affected: affected as u64,
                last_insert_id: db.last_insert_rowid().max(0) as u64,
            },
            Err(e) => Reply::sqlite(e),
        };
    }
    let mut rows = Vec::new();
    let mut cursor = stmt.raw_query();
    loop {
        if rows.len() == MAX_ROWS {
            // Results are buffered before they are sent: a bound keeps one
            // client from taking the server's memory (1104 is MySQL's
            // ER_TOO_BIG_SELECT).
            let message = format!("The result set has more than {MAX_ROWS} rows");
            return Reply::Error(1104, "42000", message);
        }
        match cursor.next() {
            Ok(Some(row)) => rows.push(
                (0..columns.len())
                    .map(|i| match row.get_ref(i) {
                        Ok(ValueRef::Integer(v)) => Cell::Int(v),
                        Ok(ValueRef::Real(v)) => Cell::Real(v),
                        Ok(ValueRef::Text(v)) => Cell::Text(String::from_utf8_lossy(v).into()),
                        Ok(ValueRef::Blob(v)) => Cell::Blob(v.to_vec()),
                        Ok(ValueRef::Null) | Err(_) => Cell::Null,
                    })
                    .collect(),
            ),
            Ok(None) => return Reply::Rows { columns, rows },
            Err(e) => return Reply::sqlite(e),
        }
    }
}

/// An in-memory database holding `t(x INTEGER)` with `rows` rows, 1 to `rows`.
pub fn seeded_database(rows: u64) -> rusqlite::Result<Connection> {
    let db = Connection::open_in_memory()?;
    db.execute_batch("CREATE TABLE t(x INTEGER)")?;
    db.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1)
         INSERT INTO t SELECT x FROM n",
        [rows as i64],
    )?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_our_statements() {
        assert_eq!(parse("kill 3"), Command::Kill(Target::Connection(3)));
        assert_eq!(
            parse("KILL CONNECTION 3;"),
            Command::Kill(Target::Connection(3))
        );
        assert_eq!(parse("kill  query 4"), Command::Kill(Target::Query(4)));
        assert_eq!(parse("KILL QUERY ID 5"), Command::Kill(Target::QueryId(5)));
        assert!(matches!(parse("KILL QUERY x"), Command::Invalid(_)));
        assert!(matches!(parse("KILL"), Command::Invalid(_)));
        assert_eq!(parse("show full processlist"), Command::ShowProcessList);
        assert_eq!(
            parse("SET max_execution_time = 250"),
            Command::SetMaxExecutionTime(250)
        );
        assert_eq!(
            parse("set session max_execution_time=0"),
            Command::SetMaxExecutionTime(0)
        );
        assert_eq!(
            parse("SET @@max_execution_time = 7"),
            Command::SetMaxExecutionTime(7)
        );
        assert!(matches!(
            parse("SET max_execution_time = -1"),
            Command::Invalid(_)
        ));
        assert_eq!(parse("select connection_id ( )"), Command::ConnectionId);
        assert_eq!(
            parse("select @@version_comment limit 1"),
            Command::Variables(vec!["version_comment".into()])
        );
        assert_eq!(parse("COMMIT"), Command::Commit);
        assert_eq!(parse("commit /* c1s2 */;"), Command::Commit);
        assert_eq!(
            parse("/* x */ KILL /* y */ 4"),
            Command::Kill(Target::Connection(4))
        );
        assert_eq!(
            parse("SELECT 1 /* unterminated"),
            Command::Sql { select: true }
        );
        assert_eq!(parse(" ; "), Command::Empty);
        assert_eq!(parse("SELECT 1"), Command::Sql { select: true });
        assert_eq!(
            parse("insert into t values (1)"),
            Command::Sql { select: false }
        );
    }

    #[test]
    fn runs_sqlite() {
        let db = seeded_database(10).unwrap();
        match execute(&db, "SELECT count(*), sum(x) FROM t") {
            Reply::Rows { rows, .. } => assert_eq!(rows, vec![vec![Cell::Int(10), Cell::Int(55)]]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            execute(&db, "INSERT INTO t VALUES (11)"),
            Reply::Done { affected: 1, .. }
        ));
        assert!(matches!(
            execute(&db, "SELEC 1"),
            Reply::Error(1064, "42000", _)
        ));
        assert!(matches!(
            execute(&db, "SELECT * FROM nope"),
            Reply::Error(1105, "HY000", _)
        ));
    }
}
