//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure with its exit
//! code. `.ci/run` is a thin wrapper around it, so running this locally reproduces CI.

use std::process::{Command, ExitCode};

use anyhow::{Result, ensure};

use crate::{
    process::{cargo, display, exit_code, run_echoed},
    tasks::{openapi, test},
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

    let steps = [fmt, clippy, doc, deny].into_iter().chain(feature_gates());
    for mut step in steps {
        let status = run_echoed(&mut step)?;
        if !status.success() {
            return Ok(failed(&step, exit_code(status)));
        }
    }

    // The committed OpenAPI document must be the generated one (the berth-http suite checks it
    // too; this step says so before the long test run).
    if !openapi::check()? {
        eprintln!("xtask: ci failed at: cargo xtask openapi --check");
        return Ok(ExitCode::FAILURE);
    }

    let code = test::run(&[])?;
    if code != ExitCode::SUCCESS {
        eprintln!("xtask: ci failed: the tests failed");
    } else {
        eprintln!("xtask: ci passed");
    }
    Ok(code)
}

/// The embedder's builds (issue #13 part 5): berth-core with one store and one provisioner,
/// and with PostgreSQL only and the embedder's own provisioner (the `own_provisioner` example),
/// so a feature gate that rots fails CI. `--lib` keeps dev-dependencies (which enable every
/// backend for the tests) out of the check.
fn feature_gates() -> Vec<Command> {
    let gates: [&[&str]; 4] = [
        &[
            "check",
            "-p",
            "berth-core",
            "--lib",
            "--no-default-features",
            "--features",
            "sqlite,process",
        ],
        &[
            "check",
            "-p",
            "berth-core",
            "--lib",
            "--no-default-features",
            "--features",
            "postgres",
        ],
        &[
            "check",
            "-p",
            "berth-provision",
            "--lib",
            "--no-default-features",
            "--features",
            "control-plane",
        ],
        &[
            "check",
            "-p",
            "berth-core",
            "--no-default-features",
            "--features",
            "postgres",
            "--example",
            "own_provisioner",
        ],
    ];
    gates
        .iter()
        .map(|args| {
            let mut step = cargo();
            step.args(*args);
            step
        })
        .collect()
}

/// Reports the failed step and passes its exit code on.
fn failed(step: &Command, code: ExitCode) -> ExitCode {
    eprintln!("xtask: ci failed at: {}", display(step));
    code
}
