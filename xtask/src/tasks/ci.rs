//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure with its exit
//! code. `.ci/run` is a thin wrapper around it, so running this locally reproduces CI.

use std::process::{Command, ExitCode};

use anyhow::{Result, ensure};

use crate::{
    process::{cargo, display, exit_code, run_echoed},
    tasks::test,
};

/// The cargo-deny release CI installs (`.ci/run`).
const DENY_VERSION: &str = "0.20.2";

/// Runs the task; it takes no arguments.
pub fn run(args: &[String]) -> Result<ExitCode> {
    ensure!(
        args.is_empty(),
        "`cargo xtask ci` takes no arguments, got {args:?}"
    );

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]);
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps", "--all-features"])
        .env("RUSTDOCFLAGS", "-D warnings");

    // Licenses, bans and sources of the dependency graph (deny.toml); the advisory database
    // cannot be fetched here, so `advisories` is not checked.
    ensure!(
        Command::new("cargo")
            .args(["deny", "--version"])
            .output()
            .is_ok_and(|o| o.status.success()),
        "cargo-deny is not installed: `cargo install cargo-deny --locked --version {DENY_VERSION}` \
         (.ci/run installs it when missing)"
    );
    let mut deny = cargo();
    deny.args(["deny", "check", "bans", "licenses", "sources"]);

    for mut step in [fmt, clippy, doc, deny] {
        let status = run_echoed(&mut step)?;
        if !status.success() {
            return Ok(failed(&step, exit_code(status)));
        }
    }

    let code = test::run(&[])?;
    if code != ExitCode::SUCCESS {
        eprintln!("xtask: ci failed: the tests failed");
    } else {
        eprintln!("xtask: ci passed");
    }
    Ok(code)
}

/// Reports the failed step and passes its exit code on.
fn failed(step: &Command, code: ExitCode) -> ExitCode {
    eprintln!("xtask: ci failed at: {}", display(step));
    code
}
