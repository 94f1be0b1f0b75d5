//! Finding the PostgreSQL programs, and running the server-side ones as a user PostgreSQL accepts.
//!
//! Server binaries are looked up in this order: `BERTH_PG_BINDIR`; `initdb` on `PATH` (symlinks
//! followed, so `/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb` yields the real
//! directory with all the tools); `pg_config --bindir`; the newest `/usr/lib/postgresql/*/bin`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::process::{is_executable, path_str, run_captured, shell_join, which};

/// The programs a throwaway cluster needs from the server package.
const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// A directory holding PostgreSQL's server programs.
pub struct PgBin {
    dir: PathBuf,
}

impl PgBin {
    /// Locates the server programs (see the module doc for the order) or says how to get them.
    pub fn locate() -> Result<Self> {
        if let Some(dir) = env::var_os("BERTH_PG_BINDIR").filter(|dir| !dir.is_empty()) {
            let dir = PathBuf::from(dir);
            if !has_server_programs(&dir) {
                bail!(
                    "BERTH_PG_BINDIR={} does not hold PostgreSQL's {}",
                    dir.display(),
                    SERVER_PROGRAMS.join(", "),
                );
            }
            return Ok(Self { dir });
        }

        let on_path = which("initdb").into_iter().flat_map(|initdb| {
            // The real directory first: a symlink farm like /usr/local/bin may hold only some tools.
            let real = fs::canonicalize(&initdb).ok();
            [real, Some(initdb)]
                .into_iter()
                .flatten()
                .filter_map(|path| path.parent().map(Path::to_path_buf))
        });
        let from_pg_config = which("pg_config").and_then(|pg_config| {
            let out = run_captured(Command::new(pg_config).arg("--bindir")).ok()?;
            Some(PathBuf::from(out.trim()))
        });
        let found = on_path
            .chain(from_pg_config)
            .chain(usr_lib_postgresql())
            .find(|dir| has_server_programs(dir));

        match found {
            Some(dir) => Ok(Self { dir }),
            None => bail!(
                "PostgreSQL's server programs ({}) were not found on PATH, in `pg_config --bindir` \
                 or under /usr/lib/postgresql/*/bin. Install them (Debian/Ubuntu: \
                 `apt-get install postgresql-15`), or set BERTH_PG_BINDIR to the directory that \
                 holds initdb; `cargo xtask test` also accepts BERTH_TEST_PG_URL=<admin URL> of a \
                 server you run yourself",
                SERVER_PROGRAMS.join(", "),
            ),
        }
    }

    /// The directory the server programs were found in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of program `name`: from the server directory, else from `PATH` (client tools
    /// such as `pg_isready` may live only behind a wrapper there).
    pub fn program(&self, name: &str) -> Result<PathBuf> {
        let in_dir = self.dir.join(name);
        if is_executable(&in_dir) {
            return Ok(in_dir);
        }
        which(name).with_context(|| {
            format!(
                "PostgreSQL program {name} is neither in {} nor on PATH (Debian/Ubuntu: \
                 `apt-get install postgresql-15`)",
                self.dir.display(),
            )
        })
    }

    /// The server's version, e.g. `15.18`, from `postgres --version` (allowed even as root).
    pub fn version(&self) -> Result<String> {
        let out = run_captured(Command::new(self.program("postgres")?).arg("--version"))?;
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let version = out
            .split_once("(PostgreSQL)")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or(out.trim());
        Ok(version.to_owned())
    }
}

/// Whether `dir` holds all of [`SERVER_PROGRAMS`].
fn has_server_programs(dir: &Path) -> bool {
    SERVER_PROGRAMS
        .iter()
        .all(|name| is_executable(&dir.join(name)))
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first (Debian's layout).
fn usr_lib_postgresql() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut majors: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    majors.into_iter().map(|(_, dir)| dir).collect()
}

/// Who runs `initdb`, `pg_ctl` and therefore `postgres`. PostgreSQL refuses to run as root, so
/// as root (CI) they run as the `postgres` system user that the server package creates.
pub enum RunAs {
    /// Run the programs directly, as the current (non-root) user.
    CurrentUser,
    /// Run them as the `postgres` user, through `runuser` or else `su`.
    Postgres {
        /// The `postgres` user's uid, to chown the cluster's directories.
        uid: u32,
        /// The `postgres` user's primary gid.
        gid: u32,
        /// `runuser` from `PATH`, if there is one; `su` is used otherwise.
        runuser: Option<PathBuf>,
    },
}

impl RunAs {
    /// Decides from the current uid; as root, looks the `postgres` user up.
    pub fn detect() -> Result<Self> {
        if id(&["-u"])? != 0 {
            return Ok(Self::CurrentUser);
        }
        let lookup = id(&["-u", "postgres"]).and_then(|uid| Ok((uid, id(&["-g", "postgres"])?)));
        let (uid, gid) = lookup.context(
            "running as root, and PostgreSQL refuses to run as root, but there is no `postgres` \
             user to run it as (the postgresql-15 package creates one; or run xtask as a normal user)",
        )?;
        Ok(Self::Postgres {
            uid,
            gid,
            runuser: which("runuser"),
        })
    }

    /// The argv that runs `program args...` as this user.
    pub fn argv(&self, program: &Path, args: &[String]) -> Result<Vec<String>> {
        let mut inner = vec![path_str(program)?.to_owned()];
        inner.extend(args.iter().cloned());
        Ok(match self {
            Self::CurrentUser => inner,
            Self::Postgres {
                runuser: Some(runuser),
                ..
            } => {
                let mut argv = vec![
                    path_str(runuser)?.to_owned(),
                    "-u".into(),
                    "postgres".into(),
                    "--".into(),
                ];
                argv.extend(inner);
                argv
            }
            Self::Postgres { runuser: None, .. } => {
                let shell = shell_join(&inner);
                ["su", "postgres", "-s", "/bin/sh", "-c", &shell]
                    .map(String::from)
                    .into()
            }
        })
    }

    /// A [`Command`] that runs `program args...` as this user.
    pub fn command(&self, program: &Path, args: &[String]) -> Result<Command> {
        let argv = self.argv(program, args)?;
        let (program, args) = argv.split_first().context("empty command line")?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        Ok(cmd)
    }
}

/// Runs `id <args>` and parses the number it prints.
fn id(args: &[&str]) -> Result<u32> {
    let out = run_captured(Command::new("id").args(args))?;
    out.trim()
        .parse()
        .with_context(|| format!("`id {}` printed {out:?}, not a number", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn su_fallback_quotes_the_inner_command() -> Result<()> {
        let run_as = RunAs::Postgres {
            uid: 1,
            gid: 1,
            runuser: None,
        };
        let argv = run_as.argv(
            Path::new("/opt/pg bin/pg_ctl"),
            &["-D".into(), "/x y".into()],
        )?;
        assert_eq!(argv[..5], ["su", "postgres", "-s", "/bin/sh", "-c"]);
        assert_eq!(argv[5], "'/opt/pg bin/pg_ctl' -D '/x y'");
        Ok(())
    }

    #[test]
    fn runuser_passes_words_through() -> Result<()> {
        let run_as = RunAs::Postgres {
            uid: 1,
            gid: 1,
            runuser: Some("/usr/sbin/runuser".into()),
        };
        let argv = run_as.argv(Path::new("/bin/pg_ctl"), &["a b".into()])?;
        assert_eq!(
            argv,
            [
                "/usr/sbin/runuser",
                "-u",
                "postgres",
                "--",
                "/bin/pg_ctl",
                "a b"
            ]
        );
        Ok(())
    }
}
