//! `cargo xtask chaos [--quick] [--seed N] [--only crash,pg,fuzz,ws] [--berth PATH]`: the chaos
//! suite. With `--berth`, that binary is tested instead of a fresh release build of the tree
//! (to test an older build, or while the tree does not compile).
//!
//! Builds the release `berth` and the suite (`berth-chaos`, in `xtask/chaos`), starts a throwaway
//! PostgreSQL (see `cluster.rs`), and runs the suite against both with the commands that stop and
//! start that PostgreSQL; the suite's exit code is this task's. Data directories and server logs
//! stay in `target/chaos` for a look afterwards. The short form (`--quick`) also runs at the end
//! of `cargo xtask test`, so CI runs it. See `xtask/chaos/src/main.rs` for what is asserted.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Result, bail};

use crate::{
    cluster::Cluster,
    process::{cargo, exit_code, run_echoed},
    workspace_root,
};

/// Runs the task; `args` are what followed `chaos`.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let (passed, berth) = suite_args(args)?;
    let root = workspace_root();
    let mut build = cargo();
    build.args(["build", "--release", "-p", "berth-chaos"]);
    if berth.is_none() {
        build.args(["-p", "berth"]);
    }
    let berth = berth.unwrap_or_else(|| root.join("target/release/berth"));
    let status = run_echoed(&mut build)?;
    if !status.success() {
        return Ok(exit_code(status));
    }

    let cluster = Cluster::start(&root)?;
    let mut suite = Command::new(root.join("target/release/berth-chaos"));
    suite
        .current_dir(&root)
        .arg("--berth")
        .arg(&berth)
        .arg("--root")
        .arg(&root)
        .arg("--work")
        .arg(root.join("target/chaos"))
        .arg("--pg-admin-url")
        .arg(cluster.admin_url())
        .arg("--pg-stop")
        .arg(cluster.stop_command()?)
        .arg("--pg-start")
        .arg(cluster.start_command()?)
        .args(&passed);
    // An error here drops `cluster`, which cleans up as well.
    let status = run_echoed(&mut suite)?;
    match cluster.stop() {
        Ok(()) => Ok(exit_code(status)),
        Err(err) if status.success() => Err(err),
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            Ok(exit_code(status))
        }
    }
}

/// The arguments the suite accepts from the command line, checked here so that a typo fails
/// before the build, and the `berth` binary `--berth` names.
fn suite_args(args: &[String]) -> Result<(Vec<String>, Option<PathBuf>)> {
    let mut out = Vec::new();
    let mut berth = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => out.push(arg.clone()),
            "--seed" | "--only" => {
                let Some(value) = iter.next() else {
                    bail!("{arg} needs a value");
                };
                out.extend([arg.clone(), value.clone()]);
            }
            "--berth" => {
                let Some(value) = iter.next() else {
                    bail!("--berth needs a path");
                };
                berth = Some(std::path::absolute(value)?);
            }
            other => bail!(
                "chaos: unknown argument {other:?} (try --quick, --seed N, --only crash,pg,fuzz,ws, --berth PATH)"
            ),
        }
    }
    Ok((out, berth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_known_arguments_and_refuses_others() {
        let args = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            suite_args(&args(&["--quick", "--seed", "7"])).unwrap(),
            (args(&["--quick", "--seed", "7"]), None)
        );
        let (_, berth) = suite_args(&args(&["--berth", "/bin/berth"])).unwrap();
        assert_eq!(berth, Some(PathBuf::from("/bin/berth")));
        assert!(suite_args(&args(&["--seed"])).is_err());
        assert!(suite_args(&args(&["--fast"])).is_err());
    }
}
