//! `berth-loadgen`: the load generator and the baselines of `cargo xtask bench`.
//!
//! xtask runs it as a subprocess, one scenario per invocation; every measuring mode prints exactly
//! one JSON line on stdout (`count`, `errors`, `duration_s`, `throughput`, `p50_ms`, `p99_ms`, …)
//! and nothing else there, so xtask can parse it without a JSON library. Every loop is bounded by
//! a request count and by `--max-secs`; all traffic goes to loopback addresses given by xtask.
//!
//! Modes (options are `--name value` pairs):
//!
//! - `create`: `POST /workspaces` of external workspaces; `--out` writes `id token` lines.
//! - `get`: `GET <url>` (also the list scenario and the fixed-body baseline).
//! - `register` / `heartbeat`: the registry calls of simulated agents read from `--agents`.
//! - `create-online`: create from a template, then poll until the workspace is `online`.
//! - `serve-fixed`: an axum route returning a fixed JSON body of `--bytes` (the HTTP-stack limit).
//! - `fanout`: 1,000 (`--subscribers`) WebSocket subscribers on `/ws`, events produced at
//!   `--rate` for `--secs`; latency from each event's timestamp to its receipt (issue 6).
//! - `serve-fanout`: the fan-out baseline, an axum WebSocket route fed by a bare
//!   `tokio::sync::broadcast` with frames of `--bytes`.
//! - `agent-start`: starts `berth agent` against a fake registry, timing its first register.
//! - `sqlite-create`, `sqlite-list`, `sqlite-heartbeat`, `sqlite-heartbeat-batch`: berth's SQL
//!   replayed with sqlx against a berth SQLite file (the database limit of the SQLite store).

mod args;
mod fake;
mod fanout;
mod http;
mod sqlite;
mod stats;

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::args::Args;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-loadgen: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    let report = match args.mode() {
        "create" => http::create(&args).await?,
        "get" => http::get(&args).await?,
        "register" => http::register(&args).await?,
        "heartbeat" => http::heartbeat(&args).await?,
        "create-online" => http::create_online(&args).await?,
        "agent-start" => fake::agent_start(&args).await?,
        "serve-fixed" => return fake::serve_fixed(&args).await,
        "fanout" => fanout::fanout(&args).await?,
        "serve-fanout" => return fanout::serve_fanout(&args).await,
        "sqlite-create" => sqlite::create(&args).await?,
        "sqlite-list" => sqlite::list(&args).await?,
        "sqlite-heartbeat" => sqlite::heartbeat(&args).await?,
        "sqlite-heartbeat-batch" => sqlite::heartbeat_batch(&args).await?,
        other => bail!("unknown mode {other:?}; see the crate documentation for the modes"),
    };
    println!("{}", report.to_json());
    Ok(())
}
