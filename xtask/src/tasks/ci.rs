//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure with its exit
//! code. `.ci/run` is a thin wrapper around it, so running this locally reproduces CI.

use std::process::{Command, ExitCode};

use anyhow::{Result, ensure};

use crate::{
    process::{cargo, display, exit_code, run_echoed},
    tasks::test,
};

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

    for mut step in [fmt, clippy, doc] {
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
