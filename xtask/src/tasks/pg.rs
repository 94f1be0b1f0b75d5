//! `cargo xtask pg`: a throwaway PostgreSQL for manual runs.
//!
//! Starts the same kind of cluster as `cargo xtask test`, creates database `berth`, prints the
//! `export` lines to paste into another shell, and keeps the server until ctrl-c, which stops it
//! and deletes its data (the cleanup process in `cluster.rs` does that once xtask is gone).

use std::{
    io::{self, Write},
    process::ExitCode,
    thread::sleep,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::{cluster::Cluster, workspace_root};

/// The database `DATABASE_URL` points at.
const DATABASE: &str = "berth";

/// Runs the task; it takes no arguments.
pub fn run(args: &[String]) -> Result<ExitCode> {
    ensure!(
        args.is_empty(),
        "`cargo xtask pg` takes no arguments, got {args:?}"
    );
    let cluster = Cluster::start(&workspace_root())?;
    cluster.create_database(DATABASE)?;

    // stdout gets only the lines meant for a shell; the chatter goes to stderr.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "export BERTH_TEST_PG_URL={}", cluster.admin_url())
        .and_then(|()| {
            writeln!(
                stdout,
                "export DATABASE_URL={}",
                cluster.database_url(DATABASE)
            )
        })
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    drop(stdout);
    eprintln!("xtask: PostgreSQL is ready; press ctrl-c to stop it and delete its data");

    // Nothing to do but wait for ctrl-c, which ends this process; meanwhile notice if the server
    // went away on its own, so the shell does not sit on a dead cluster.
    while cluster.is_running()? {
        sleep(Duration::from_secs(1));
    }
    let log = cluster.log_text();
    bail!("PostgreSQL stopped unexpectedly; its log:\n{log}")
}
