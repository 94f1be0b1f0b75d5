//! The storage contract suite: every scenario runs against SQLite and PostgreSQL.
//!
//! PostgreSQL comes from `BERTH_TEST_PG_URL` (an admin URL; `cargo xtask test` starts a throwaway
//! cluster and sets it). Each test gets a database of its own.

mod activity;
mod config_edits;
mod contract;
mod harness;
mod installation;
mod parity;
mod pool;
mod queue;
mod races;
mod rotation;
mod wake;
