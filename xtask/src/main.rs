//! berth's developer automation, run as `cargo xtask <task>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! Each task is one module under `tasks/` with a `run(args) -> Result<ExitCode>` function and one
//! row in [`TASKS`]; `cargo xtask --help` is generated from that table. To add a task (say
//! `lint`), write `tasks/lint.rs`, declare it in `tasks/mod.rs` and add its row here.
//!
//! The crate depends on `anyhow` only and drives every tool through `std::process::Command`, so it
//! builds in seconds and works while the rest of the workspace is broken.

mod cluster;
mod pg_bin;
mod process;
mod tasks;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;

/// One `cargo xtask` subcommand.
struct Task {
    /// The word typed after `cargo xtask`.
    name: &'static str,
    /// Its arguments, for the help text.
    usage: &'static str,
    /// One line for the help text.
    about: &'static str,
    /// Runs the task with the arguments that follow its name; the exit code is the process's.
    run: fn(&[String]) -> Result<ExitCode>,
}

/// Every task, in the order `--help` lists them.
const TASKS: &[Task] = &[
    Task {
        name: "test",
        usage: "[-- <cargo test args>]",
        about: "run `cargo test --workspace --all-features` against a throwaway PostgreSQL",
        run: tasks::test::run,
    },
    Task {
        name: "pg",
        usage: "",
        about: "start a throwaway PostgreSQL for manual runs and keep it until ctrl-c",
        run: tasks::pg::run,
    },
    Task {
        name: "image",
        usage: "",
        about: "build the Docker test image berth-agent:test locally (no registry needed)",
        run: tasks::image::run,
    },
    Task {
        name: "bench",
        usage: "[--quick]",
        about: "benchmarks against SQLite and PostgreSQL, each next to its limit (target/bench/report.md)",
        run: tasks::bench::run,
    },
    Task {
        name: "soak",
        usage: "[--quick] [--agents N] [--secs S]",
        about: "issue 15's soak: 100,000 agents heartbeating every 30 s under creates and reads, both stores (target/bench/soak.md)",
        run: tasks::bench::soak,
    },
    Task {
        name: "chaos",
        usage: "[--quick] [--seed N] [--only crash,pg,fuzz,ws] [--berth PATH]",
        about: "the chaos suite against the release binary: kill -9, PostgreSQL restarts, fuzz, slow WebSockets",
        run: tasks::chaos::run,
    },
    Task {
        name: "openapi",
        usage: "[--check]",
        about: "write the generated OpenAPI document to openapi.json (--check: fail when it differs)",
        run: tasks::openapi::run,
    },
    Task {
        name: "ci",
        usage: "",
        about: "what CI runs (.ci/run): fmt --check, clippy -D warnings, doc -D warnings, deny, openapi --check, test",
        run: tasks::ci::run,
    },
];

fn main() -> ExitCode {
    let mut args = env::args().skip(1);
    let name = args.next();
    let rest: Vec<String> = args.collect();

    let task = match name.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{}", help());
            return ExitCode::SUCCESS;
        }
        Some(name) => TASKS.iter().find(|task| task.name == name),
    };
    let Some(task) = task else {
        eprintln!("xtask: unknown task {:?}\n", name.unwrap_or_default());
        eprint!("{}", help());
        return ExitCode::from(2);
    };

    match (task.run)(&rest) {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "starting PostgreSQL: initdb ...".
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `--help` text, generated from [`TASKS`].
fn help() -> String {
    let mut out = String::from("Usage: cargo xtask <task> [args]\n\nTasks:\n");
    for task in TASKS {
        let synopsis = format!("{} {}", task.name, task.usage);
        out.push_str(&format!("  {:<32} {}\n", synopsis.trim_end(), task.about));
    }
    out.push_str(
        "\nEnvironment:\n  \
         BERTH_TEST_PG_URL   admin URL of a running PostgreSQL: `test` uses it instead of starting one\n  \
         BERTH_PG_BINDIR     directory holding initdb, pg_ctl and postgres (default: PATH,\n                      \
         then `pg_config --bindir`, then /usr/lib/postgresql/*/bin)\n",
    );
    out
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // xtask/ always sits directly under the root, so the parent exists.
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_task() {
        let help = help();
        for task in TASKS {
            assert!(help.contains(task.name), "{} missing from help", task.name);
        }
    }

    #[test]
    fn task_names_are_unique() {
        for (i, task) in TASKS.iter().enumerate() {
            assert!(TASKS[i + 1..].iter().all(|other| other.name != task.name));
        }
    }

    #[test]
    fn workspace_root_holds_the_root_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("xtask").is_dir());
    }
}
