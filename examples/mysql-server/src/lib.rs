//! The server's modules, as a library: `main.rs` serves connections with
//! them, and the tests reach the same code (`tests/drill.rs` drills the
//! statement path of `kill.rs` and `sql.rs`).
//!
//! The kill wiring is all in `kill.rs`; `wire.rs` writes the error packets
//! opensrv-mysql cannot; `sql.rs` reads our statements and runs SQLite's.

pub mod kill;
pub mod sql;
pub mod wire;
