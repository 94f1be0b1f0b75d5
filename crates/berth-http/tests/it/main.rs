//! berth-http's integration tests: the API in-process (`tower::ServiceExt::oneshot`) over a real
//! store — SQLite in a tempdir, and PostgreSQL for a few flows — plus one end-to-end test through
//! a real socket.
//!
//! PostgreSQL comes from `BERTH_TEST_PG_URL` (an admin URL; `cargo xtask test` starts a throwaway
//! cluster and sets it). Each PostgreSQL test gets a database of its own.

mod a2a;
mod abilities_budget;
mod activity;
mod atomicity;
mod auth;
mod backpressure;
mod bounds;
mod broadcast;
mod bundles;
mod callbacks;
mod config;
mod console;
mod cors;
mod create;
mod delete;
mod discovery;
mod display;
mod e2e;
mod events;
mod helpers;
mod hibernate;
mod idempotency;
mod inside;
mod live;
mod liveness;
mod loops;
mod metrics;
mod model;
mod notify;
mod nul;
mod openapi;
mod pause;
mod peer_info;
mod process_ops;
mod ratelimit;
mod read;
mod registry;
mod removed;
mod restart;
mod secret_logs;
mod secrets;
mod security_headers;
mod session_search;
mod state;
mod system;
mod templates;
mod tokens;
mod update;
mod validation;
mod viewport;
