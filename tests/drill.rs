//! The kill drill on test engines and on SQLite.
