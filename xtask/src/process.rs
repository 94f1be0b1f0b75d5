//! Small helpers around `std::process::Command`: finding programs on `PATH`, quoting words for
//! `sh`, echoing what runs, and passing a child's exit status on as xtask's own exit code.

use std::{
    env,
    ffi::OsStr,
    fs,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus},
};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// A `cargo` command run from the workspace root, using the cargo that started xtask.
pub fn cargo() -> Command {
    // `cargo run` sets CARGO to its own binary: use the same toolchain for the nested commands.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Finds an executable called `name` in the directories of `PATH`, like `command -v`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is (a symlink to) a regular file with an execute bit set.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Quotes `word` so that POSIX `sh` reads it back as exactly one word.
pub fn shell_quote(word: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Joins `argv` into one `sh` command line.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|word| shell_quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `path` as UTF-8, for command lines that go through a shell.
pub fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("path {} is not valid UTF-8", path.display()))
}

/// Renders `cmd` as a shell would show it, with the variables it sets in front.
pub fn display(cmd: &Command) -> String {
    let lossy = |s: &OsStr| shell_quote(&s.to_string_lossy());
    let envs = cmd
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.to_string_lossy(), lossy(value?))));
    let program = std::iter::once(lossy(cmd.get_program()));
    let args = cmd.get_args().map(lossy);
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Echoes `cmd`, runs it with the terminal as its stdio and returns how it ended.
pub fn run_echoed(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("xtask: running {}", display(cmd));
    cmd.status()
        .with_context(|| format!("could not start {}", display(cmd)))
}

/// Runs `cmd` with its output captured; returns its stdout, or fails with all it printed.
pub fn run_captured(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("could not start {}", display(cmd)))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Turns a child's exit status into xtask's: the same code, or 128 + the signal number like a
/// shell does for a child killed by a signal.
pub fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    // Exit codes are one byte on Unix; anything else would be a bug, report it as a failure.
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_words_alone() {
        assert_eq!(
            shell_quote("/usr/lib/postgresql/15/bin/pg_ctl"),
            "/usr/lib/postgresql/15/bin/pg_ctl"
        );
        assert_eq!(
            shell_quote("listen_addresses=127.0.0.1"),
            "listen_addresses=127.0.0.1"
        );
    }

    #[test]
    fn shell_quote_quotes_everything_else() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn shell_join_round_trips_through_sh() -> Result<()> {
        let argv: Vec<String> = ["printf", "%s|", "a b", "it's", "$x", ""]
            .map(String::from)
            .into();
        let out = run_captured(Command::new("sh").arg("-c").arg(shell_join(&argv)))?;
        assert_eq!(out, "a b|it's|$x||");
        Ok(())
    }

    #[test]
    fn exit_code_passes_codes_and_signals_on() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), ExitCode::SUCCESS);
        assert_eq!(
            exit_code(ExitStatus::from_raw(101 << 8)),
            ExitCode::from(101)
        );
        // Raw status 2 is "killed by SIGINT".
        assert_eq!(exit_code(ExitStatus::from_raw(2)), ExitCode::from(130));
    }

    #[test]
    fn display_shows_env_and_quotes() {
        let mut cmd = Command::new("cargo");
        cmd.env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "--no-deps"]);
        assert_eq!(
            display(&cmd),
            "RUSTDOCFLAGS='-D warnings' cargo doc --no-deps"
        );
    }
}
