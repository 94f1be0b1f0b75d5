//! berth-http's integration tests: the API in-process (`tower::ServiceExt::oneshot`) over a real
//! store — SQLite in a tempdir, and PostgreSQL for a few flows — plus one end-to-end test through
//! a real socket.
//!
//! PostgreSQL comes from `BERTH_TEST_PG_URL` (an admin URL; `cargo xtask test` starts a throwaway
//! cluster and sets it). Each PostgreSQL test gets a database of its own.

mod atomicity;
mod auth;
mod create;
mod discovery;
mod e2e;
mod helpers;
mod idempotency;
mod liveness;
mod read;
mod registry;
mod system;
mod tokens;
mod validation;
