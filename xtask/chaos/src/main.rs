//! `berth-chaos`: the chaos suite behind `cargo xtask chaos`. It runs the release `berth` the way
//! a user does (no `--dev`; the admin token read from `<data-dir>/admin-token`) and breaks it:
//!
//! 1. `crash`: creates of the `echo` template at concurrency 16 on the process backend, `kill -9`
//!    of the server mid-load, a restart over the same data: every 201 present and complete, no
//!    workspace stuck in `provisioning`, exactly one agent per running workspace (SQLite and
//!    PostgreSQL).
//! 2. `pg`: PostgreSQL restarted under create/get load with CPU contention: `/health` back within
//!    5 s, no 5xx that persists, no create answered 5xx that committed.
//! 3. `fuzz`: seeded, replayable requests over every route of the router, with the admin and a
//!    workspace token: no 5xx outside the documented allowlist, no panic, no table change after
//!    a refused request (SQLite and PostgreSQL).
//! 4. `ws`: non-reading `/ws` clients while ≈900 KB activity events are written: peak and settled
//!    resident memory within stated bounds.
//!
//! xtask starts the throwaway PostgreSQL and passes its admin URL and the commands that stop and
//! start it. Every request loop is bounded in count and in time; all traffic is loopback.
//! Violations are collected, printed as a report, and make the exit code 1.

mod crash;
mod fuzz;
mod pg_restart;
mod procs;
mod report;
mod rng;
mod routes;
mod server;
mod slow_ws;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::report::Report;

/// What the command line says.
#[derive(Clone, Debug)]
pub struct Opts {
    /// The release `berth` binary.
    pub berth: PathBuf,
    /// The repository root (for `fixtures/templates`).
    pub root: PathBuf,
    /// Scratch directory: data directories and server logs.
    pub work: PathBuf,
    /// PostgreSQL admin URL (`postgres://postgres@127.0.0.1:<port>/postgres`).
    pub pg_admin_url: String,
    /// `sh -c` command lines that stop and start that PostgreSQL.
    pub pg_stop: String,
    /// See `pg_stop`.
    pub pg_start: String,
    /// The short form.
    pub quick: bool,
    /// The fuzz seed.
    pub seed: u64,
    /// Scenarios to run (`crash`, `pg`, `fuzz`, `ws`).
    pub only: Vec<String>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let mut args = std::env::args().skip(1);
        let mut opts = Opts {
            berth: PathBuf::new(),
            root: PathBuf::new(),
            work: PathBuf::new(),
            pg_admin_url: String::new(),
            pg_stop: String::new(),
            pg_start: String::new(),
            quick: false,
            seed: seed_from_clock(),
            only: ["crash", "pg", "fuzz", "ws"].map(String::from).to_vec(),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--berth" => opts.berth = value()?.into(),
                "--root" => opts.root = value()?.into(),
                "--work" => opts.work = value()?.into(),
                "--pg-admin-url" => opts.pg_admin_url = value()?,
                "--pg-stop" => opts.pg_stop = value()?,
                "--pg-start" => opts.pg_start = value()?,
                "--quick" => opts.quick = true,
                "--seed" => opts.seed = value()?.parse().context("--seed takes a number")?,
                "--only" => opts.only = value()?.split(',').map(str::to_owned).collect(),
                other => bail!("unknown argument {other:?}"),
            }
        }
        for (name, empty) in [
            ("--berth", opts.berth.as_os_str().is_empty()),
            ("--root", opts.root.as_os_str().is_empty()),
            ("--work", opts.work.as_os_str().is_empty()),
            ("--pg-admin-url", opts.pg_admin_url.is_empty()),
            ("--pg-stop", opts.pg_stop.is_empty()),
            ("--pg-start", opts.pg_start.is_empty()),
        ] {
            if empty {
                bail!("{name} is required (run the suite through `cargo xtask chaos`)");
            }
        }
        Ok(opts)
    }

    /// Whether scenario `name` was asked for.
    pub fn runs(&self, name: &str) -> bool {
        self.only.iter().any(|s| s == name)
    }

    /// `quick` in the short form, `long` otherwise.
    pub fn pick<T>(&self, quick: T, long: T) -> T {
        if self.quick { quick } else { long }
    }
}

/// A seed for when none is given: the clock's nanoseconds.
fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 % 1_000_000_000)
        .unwrap_or(1)
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = match Opts::parse() {
        Ok(opts) => opts,
        Err(err) => {
            eprintln!("berth-chaos: {err:#}");
            return ExitCode::from(2);
        }
    };
    server::install_tls_provider();
    let started = Instant::now();
    let mut report = Report::default();
    eprintln!(
        "chaos: {} form, fuzz seed {} (replay with `cargo xtask chaos{} --seed {}`)",
        opts.pick("short", "long"),
        opts.seed,
        opts.pick(" --quick", ""),
        opts.seed,
    );
    if let Err(err) = run(&opts, &mut report).await {
        report.violation("suite", format!("the suite itself failed: {err:#}"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.print(&opts);
    if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the scenarios asked for, in order; a scenario that fails to run is a violation and the
/// next one still runs.
async fn run(opts: &Opts, report: &mut Report) -> Result<()> {
    std::fs::create_dir_all(&opts.work)
        .with_context(|| format!("creating {}", opts.work.display()))?;
    if opts.runs("crash") {
        for store in [server::Store::Sqlite, server::Store::Postgres] {
            let what = format!("crash/{}", store.name());
            eprintln!("chaos: {what}");
            if let Err(err) = crash::run(opts, store, report).await {
                report.violation(&what, format!("could not run: {err:#}"));
            }
        }
    }
    if opts.runs("pg") {
        eprintln!("chaos: pg-restart");
        if let Err(err) = pg_restart::run(opts, report).await {
            report.violation("pg-restart", format!("could not run: {err:#}"));
        }
    }
    if opts.runs("fuzz") {
        for store in [server::Store::Sqlite, server::Store::Postgres] {
            let what = format!("fuzz/{}", store.name());
            eprintln!("chaos: {what}");
            if let Err(err) = fuzz::run(opts, store, report).await {
                report.violation(&what, format!("could not run: {err:#}"));
            }
        }
    }
    if opts.runs("ws") {
        eprintln!("chaos: slow-ws");
        if let Err(err) = slow_ws::run(opts, report).await {
            report.violation("slow-ws", format!("could not run: {err:#}"));
        }
    }
    Ok(())
}
