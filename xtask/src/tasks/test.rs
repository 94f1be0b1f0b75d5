//! `cargo xtask test [-- <cargo test args>]`: the workspace's tests against a throwaway
//! PostgreSQL.
//!
//! Runs `cargo test --workspace --all-features <args>` with `BERTH_TEST_PG_URL` pointing at the
//! admin database of a fresh cluster (tests create a database of their own through it), then stops
//! and deletes the cluster, also when the tests fail or on ctrl-c (see `cluster.rs`). Exits with
//! the tests' exit code; when the tests pass but the cleanup fails, it fails.
//!
//! First, when the run includes berth-provision, it checks that a Docker Engine answers (failing
//! with instructions if not) and builds the test image (`cargo xtask image`); when it includes
//! the `berth` binary, it builds its release binary and hands its path to the quick-start tests
//! in `BERTH_RELEASE_BIN` (they run it the way the README tells a user to).
//!
//! When the tests pass and the run covers the whole workspace, the embedding examples run (each
//! checks what it shows), then the short form of the chaos suite
//! follows (`cargo xtask chaos --quick`, a few minutes, see `chaos.rs`), then the short form of the
//! soak (`cargo xtask soak --quick --secs 20`: 10,000 agents on each store, see `bench/soak.rs`),
//! so CI runs them too.
//!
//! With `BERTH_TEST_PG_URL` already set, no cluster is started and that server is used.
//! Arguments that pick packages (`-p`, `--package`) replace `--workspace`; arguments after a
//! second `--` go to the test binaries: `cargo xtask test -- -p berth-store -- --nocapture`.

use std::{
    env,
    process::{Command, ExitCode},
};

use anyhow::Result;

use crate::{
    cluster::Cluster,
    process::{cargo, exit_code, run_echoed},
    tasks::{bench, chaos, image},
    workspace_root,
};

/// The variable tests read the PostgreSQL admin URL from.
const PG_URL_VAR: &str = "BERTH_TEST_PG_URL";

/// The variable the quick-start tests read the release-built `berth` from.
const RELEASE_BIN_VAR: &str = "BERTH_RELEASE_BIN";

/// Runs the task; `args` are what followed `test`.
pub fn run(args: &[String]) -> Result<ExitCode> {
    // The Docker provisioner's tests need a daemon and the locally built image; without a
    // daemon, fail here with instructions rather than deep inside a test.
    if runs_docker_tests(args) {
        image::require_docker()?;
        image::build()?;
    }

    let mut test = cargo();
    test.args(cargo_test_args(args));
    // The quick-start tests run the release binary, as the README tells a user to.
    if runs_release_binary_tests(args) {
        let mut release = cargo();
        release.args(["build", "--release", "-p", "berth"]);
        let status = run_echoed(&mut release)?;
        if !status.success() {
            return Ok(exit_code(status));
        }
        test.env(
            RELEASE_BIN_VAR,
            workspace_root().join("target/release/berth"),
        );
    }

    let (passed, code) = run_tests(test)?;
    if !passed || !runs_chaos(args) {
        return Ok(code);
    }
    let code = run_examples()?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let code = chaos::run(&["--quick".to_owned()])?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    bench::soak(&["--quick".to_owned(), "--secs".to_owned(), "20".to_owned()])
}

/// The embedding examples a user copies from (`cargo test` only compiles them): each runs and
/// checks what it shows, exiting non-zero when that no longer holds. Same features as the tests,
/// so nothing is rebuilt.
const EXAMPLES: [(&str, &str); 3] = [
    ("berth-core", "core_without_http"),
    ("berth-core", "own_provisioner"),
    ("berth-http", "embed_router"),
];

/// Runs [`EXAMPLES`]; the first failure's exit code.
fn run_examples() -> Result<ExitCode> {
    for (package, example) in EXAMPLES {
        let mut run = cargo();
        run.args(["run", "--all-features", "-p", package, "--example", example]);
        let status = run_echoed(&mut run)?;
        if !status.success() {
            eprintln!("xtask: the example {package}/{example} failed");
            return Ok(exit_code(status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the cargo tests against `BERTH_TEST_PG_URL` or a throwaway cluster: whether they
/// passed, and the exit code to end with.
fn run_tests(mut test: Command) -> Result<(bool, ExitCode)> {
    if env::var_os(PG_URL_VAR).is_some_and(|url| !url.is_empty()) {
        // Not echoed: the URL may carry a password.
        eprintln!("xtask: {PG_URL_VAR} is set; testing against that server, starting none");
        let status = run_echoed(&mut test)?;
        return Ok((status.success(), exit_code(status)));
    }

    let cluster = Cluster::start(&workspace_root())?;
    test.env(PG_URL_VAR, cluster.admin_url());
    // An error here drops `cluster`, which cleans up as well.
    let status = run_echoed(&mut test)?;
    match cluster.stop() {
        Ok(()) => Ok((status.success(), exit_code(status))),
        Err(err) if status.success() => Err(err),
        Err(err) => {
            // The test failure is the news; the cleanup error is reported beside it.
            eprintln!("xtask: error: {err:#}");
            Ok((false, exit_code(status)))
        }
    }
}

/// Whether the short chaos suite follows the tests: when they cover the whole workspace (no
/// packages picked, no test-name filter after a second `--`).
fn runs_chaos(args: &[String]) -> bool {
    let args = cargo_test_args(args);
    !picks_packages(&args) && !args.iter().any(|arg| arg == "--")
}

/// `test --workspace --all-features <args>`, minus `--workspace` when `args` pick packages
/// themselves. One leading `--` (as in `cargo xtask test -- -p xtask`) is dropped.
fn cargo_test_args(args: &[String]) -> Vec<String> {
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let mut out = vec!["test".to_owned()];
    if !picks_packages(args) {
        out.push("--workspace".to_owned());
    }
    out.push("--all-features".to_owned());
    out.extend(args.iter().cloned());
    out
}

/// Whether the run includes berth-provision, whose tests drive the real Docker daemon.
fn runs_docker_tests(args: &[String]) -> bool {
    let args = cargo_test_args(args);
    !picks_packages(&args)
        || args
            .iter()
            .take_while(|arg| *arg != "--")
            .any(|arg| arg.contains("berth-provision"))
}

/// Whether the run includes the `berth` binary's tests, whose quick-start tests run the
/// release build.
fn runs_release_binary_tests(args: &[String]) -> bool {
    let args = cargo_test_args(args);
    !picks_packages(&args)
        || args
            .iter()
            .take_while(|arg| *arg != "--")
            .any(|arg| arg == "berth" || arg == "--package=berth" || arg == "-pberth")
}

/// Whether cargo's own arguments (those before a `--`) select packages.
fn picks_packages(args: &[String]) -> bool {
    args.iter().take_while(|arg| *arg != "--").any(|arg| {
        arg == "-p"
            || arg == "--package"
            || arg.starts_with("--package=")
            || (arg.starts_with("-p") && !arg.starts_with("--"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn defaults_to_the_whole_workspace() {
        assert_eq!(
            cargo_test_args(&[]),
            args(&["test", "--workspace", "--all-features"])
        );
    }

    #[test]
    fn leading_separator_is_dropped_and_packages_replace_workspace() {
        assert_eq!(
            cargo_test_args(&args(&["--", "-p", "xtask"])),
            args(&["test", "--all-features", "-p", "xtask"]),
        );
        assert_eq!(
            cargo_test_args(&args(&["--package=berth-store"])),
            args(&["test", "--all-features", "--package=berth-store"]),
        );
        assert_eq!(
            cargo_test_args(&args(&["-pxtask"])),
            args(&["test", "--all-features", "-pxtask"]),
        );
    }

    #[test]
    fn docker_tests_run_unless_other_packages_are_picked() {
        assert!(runs_docker_tests(&[]));
        assert!(runs_docker_tests(&args(&["--", "--nocapture"])));
        assert!(runs_docker_tests(&args(&["-p", "berth-provision"])));
        assert!(!runs_docker_tests(&args(&["--", "-p", "xtask"])));
        assert!(!runs_docker_tests(&args(&[
            "-p",
            "berth-store",
            "--",
            "berth-provision"
        ])));
    }

    #[test]
    fn chaos_follows_only_whole_workspace_runs() {
        assert!(runs_chaos(&[]));
        assert!(runs_chaos(&args(&["--no-fail-fast"])));
        assert!(!runs_chaos(&args(&["-p", "xtask"])));
        assert!(!runs_chaos(&args(&["--", "--", "some_test"])));
    }

    #[test]
    fn test_binary_args_do_not_count_as_packages() {
        assert_eq!(
            cargo_test_args(&args(&["--", "--", "-p"])),
            args(&["test", "--workspace", "--all-features", "--", "-p"]),
        );
        assert_eq!(
            cargo_test_args(&args(&["--no-fail-fast", "--", "--nocapture"])),
            args(&[
                "test",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
                "--",
                "--nocapture"
            ]),
        );
    }
}
