//! A throwaway PostgreSQL cluster for tests, manual runs and benchmarks: a fresh `initdb` under
//! `target/xtask-pg/<pid>`, started on a free loopback port with durability switched off (or, for
//! `cargo xtask bench`, on, as in production: see [`Durability`]), and stopped and deleted
//! afterwards.
//!
//! Cleanup has to happen however xtask ends: tests failing, an error, or ctrl-c. Ctrl-c is the hard
//! one: SIGINT kills xtask at once (std cannot install a signal handler without `unsafe`, which the
//! workspace forbids), so no `Drop` runs. Hence the cleanup lives in a small watchdog, an `sh`
//! process started before the cluster. It sits in its own process group (the terminal's ctrl-c
//! does not reach it) and ignores SIGINT and SIGHUP, and waits for its stdin, a pipe from xtask, to
//! close. That happens when [`Cluster`] is stopped or dropped, and also when the kernel closes the
//! pipe because xtask died. It then runs `pg_ctl -m immediate stop` and deletes the directories.
//! The normal path and the ctrl-c path are therefore the same code, exercised on every run.

use std::{
    env,
    fs::{self, DirBuilder, Permissions},
    io::Write,
    net::TcpListener,
    os::unix::{
        fs::{DirBuilderExt, MetadataExt, PermissionsExt, chown},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{
    pg_bin::{PgBin, RunAs},
    process::{path_str, run_captured, shell_join, shell_quote},
};

/// How long the server may take to accept connections after `pg_ctl start`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often to pick a new port when another process took ours between probing and binding.
const START_ATTEMPTS: u32 = 3;

/// Settings every cluster gets: loopback only, enough connections for many tests that each open
/// a pool.
const SERVER_SETTINGS: &str = "-c listen_addresses=127.0.0.1 -c max_connections=300";

/// Settings for a cluster whose durability does not matter (tests): no fsync.
const NO_SYNC_SETTINGS: &str = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off";

/// Whether the server flushes commits to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync off: fast, for tests whose data is thrown away anyway.
    Off,
    /// PostgreSQL's defaults (fsync, synchronous_commit, full_page_writes on), as in production;
    /// benchmarks need this, or the "database limit" they compare with is unrealistically high.
    Production,
}

/// A running throwaway cluster. Stop it with [`Cluster::stop`] to see cleanup errors; dropping
/// it (or xtask dying) cleans up too, see the module doc.
pub struct Cluster {
    bin: PgBin,
    run_as: RunAs,
    /// `target/xtask-pg/<pid>`: everything of this cluster lives below and is deleted at the end.
    base: PathBuf,
    /// The data directory, `base/data`.
    data: PathBuf,
    /// The server log, `base/log`.
    log: PathBuf,
    /// Where the Unix socket goes: `base/sock`, or a short directory in the temp dir when that
    /// path would exceed the ~100 bytes a Unix socket path may have.
    socket_dir: PathBuf,
    version: String,
    /// The TCP port on 127.0.0.1; 0 until the server started.
    port: u16,
    /// The cleanup process; `None` once it ran.
    watchdog: Option<Child>,
    /// Whether commits are flushed.
    durability: Durability,
}

impl Cluster {
    /// Creates, starts and waits for a new cluster below `workspace_root/target/xtask-pg`, with
    /// fsync off.
    pub fn start(workspace_root: &Path) -> Result<Self> {
        Self::start_with(workspace_root, Durability::Off)
    }

    /// Like [`Cluster::start`], with the given durability.
    pub fn start_with(workspace_root: &Path, durability: Durability) -> Result<Self> {
        let bin = PgBin::locate()?;
        let run_as = RunAs::detect()?;
        let version = bin.version()?;
        let (base, socket_dir) = layout(workspace_root, &run_as)?;
        eprintln!(
            "xtask: creating a throwaway PostgreSQL {version} cluster in {} (programs from {})",
            base.display(),
            bin.dir().display(),
        );

        let mut cluster = Self {
            data: base.join("data"),
            log: base.join("log"),
            base,
            socket_dir,
            bin,
            run_as,
            version,
            port: 0,
            watchdog: None,
            durability,
        };
        // From here on, returning an error drops `cluster`, and the watchdog removes what exists.
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.create_dirs()?;
        cluster.initdb()?;
        cluster.start_server()?;
        cluster.wait_ready()?;
        eprintln!(
            "xtask: started PostgreSQL {} on 127.0.0.1:{} (durability: {:?})",
            cluster.version, cluster.port, cluster.durability,
        );
        Ok(cluster)
    }

    /// The URL of the `postgres` database as superuser `postgres`; tests create their own
    /// databases through it.
    pub fn admin_url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` as superuser `postgres`.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of PostgreSQL program `name` (`psql`, `pgbench`, …), see [`PgBin::program`].
    pub fn program(&self, name: &str) -> Result<PathBuf> {
        self.bin.program(name)
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        let port = self.port.to_string();
        let mut createdb = Command::new(self.bin.program("createdb")?);
        createdb.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name]);
        run_captured(&mut createdb).with_context(|| format!("creating database {name}"))?;
        eprintln!("xtask: created database {name}");
        Ok(())
    }

    /// Whether the server still answers on its port (`pg_isready` says "no response" otherwise).
    pub fn is_running(&self) -> Result<bool> {
        const NO_RESPONSE: i32 = 2;
        let status = self.pg_isready()?.status().context("running pg_isready")?;
        Ok(status.code() != Some(NO_RESPONSE))
    }

    /// The server log so far, for error messages.
    pub fn log_text(&self) -> String {
        match fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(err) => format!("(cannot read {}: {err})", self.log.display()),
        }
    }

    /// Stops the server and deletes its directories, reporting what went wrong.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Hands over to the watchdog and waits for it; a no-op once done.
    fn shutdown(&mut self) -> Result<()> {
        let Some(mut watchdog) = self.watchdog.take() else {
            return Ok(());
        };
        if self.port != 0 {
            eprintln!("xtask: stopping PostgreSQL on 127.0.0.1:{}", self.port);
        }
        if let Some(mut stdin) = watchdog.stdin.take() {
            // "stop" tells the watchdog this is the planned end. If the write fails, the pipe is
            // closed either way when `stdin` drops here, which is what wakes the watchdog.
            let _ = writeln!(stdin, "stop");
        }
        let status = watchdog
            .wait()
            .context("waiting for the PostgreSQL cleanup process")?;
        ensure!(
            status.success(),
            "cleaning up the PostgreSQL cluster failed ({status}); see the messages above",
        );
        Ok(())
    }

    /// Starts the cleanup process described in the module doc.
    fn spawn_watchdog(&self) -> Result<Child> {
        let stop = self.run_as.argv(
            &self.bin.program("pg_ctl")?,
            &self.pg_ctl_args(&["-m", "immediate", "-w", "stop"])?,
        )?;
        let pidfile = shell_quote(path_str(&self.data.join("postmaster.pid"))?);
        let base = path_str(&self.base)?;
        let message = |text: String| format!("printf '%s\\n' {} >&2", shell_quote(&text));
        let script = format!(
            "trap '' INT HUP\n\
             IFS= read -r reason || reason=\n\
             [ \"$reason\" = stop ] || {died}\n\
             {stop} >/dev/null 2>&1\n\
             if [ -f {pidfile} ] && kill -0 \"$(head -n 1 {pidfile})\" 2>/dev/null; then\n  \
               {kept}\n  \
               exit 1\n\
             fi\n\
             rm -rf -- {base_quoted} {socket_dir}\n\
             if [ -e {base_quoted} ]; then {not_removed}; exit 1; fi\n\
             {removed}\n",
            died = message(
                "xtask: xtask is gone (ctrl-c or killed); stopping its PostgreSQL cluster".into()
            ),
            stop = shell_join(&stop),
            kept = message(format!(
                "xtask: could not stop PostgreSQL; left {base} in place (see its log)"
            )),
            base_quoted = shell_quote(base),
            socket_dir = shell_quote(path_str(&self.socket_dir)?),
            not_removed = message(format!("xtask: could not remove {base}")),
            removed = message(format!("xtask: stopped PostgreSQL and removed {base}")),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the PostgreSQL cleanup process (sh)")
    }

    /// Creates the directories, owned by whoever runs the server.
    fn create_dirs(&self) -> Result<()> {
        for (dir, mode) in [
            (&self.base, 0o755),
            (&self.data, 0o700),
            (&self.socket_dir, 0o755),
        ] {
            DirBuilder::new()
                .mode(mode)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            if let RunAs::Postgres { uid, gid, .. } = self.run_as {
                chown(dir, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Runs `initdb`: trust auth, UTF-8, C locale (the same collation on every machine whatever
    /// its LANG), no fsync.
    fn initdb(&self) -> Result<()> {
        let data = path_str(&self.data)?;
        let args = [
            "-D",
            data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ]
        .map(String::from);
        let mut initdb = self.run_as.command(&self.bin.program("initdb")?, &args)?;
        // The postgres user may not be allowed into the current directory; the base is its own.
        initdb.current_dir(&self.base);
        run_captured(&mut initdb).context("initdb failed")?;
        Ok(())
    }

    /// Starts the server on a free port, retrying if another process grabbed the port first.
    fn start_server(&mut self) -> Result<()> {
        let pg_ctl = self.bin.program("pg_ctl")?;
        let log = path_str(&self.log)?.to_owned();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let options = self.server_options(port)?;
            let args =
                self.pg_ctl_args(&["-w", "-t", "30", "-l", &log, "-o", &options, "start"])?;
            let mut start = self.run_as.command(&pg_ctl, &args)?;
            start.current_dir(&self.base);
            let log_before = self.log_text().len();
            let Err(err) = run_captured(&mut start) else {
                self.port = port;
                return Ok(());
            };
            let log_text = self.log_text();
            let this_attempt = log_text.get(log_before..).unwrap_or(&log_text);
            if attempt < START_ATTEMPTS && this_attempt.contains("Address already in use") {
                eprintln!("xtask: port {port} was taken meanwhile; trying another");
                continue;
            }
            bail!(
                "starting PostgreSQL failed: {err:#}\n--- {} ---\n{log_text}",
                self.log.display(),
            );
        }
        bail!("could not find a free port for PostgreSQL in {START_ATTEMPTS} attempts")
    }

    /// The `postgres` options for `port`: socket directory, the shared settings, durability.
    fn server_options(&self, port: u16) -> Result<String> {
        // pg_ctl passes `-o` to postgres through sh, hence the quoted socket directory.
        let socket_dir = shell_quote(path_str(&self.socket_dir)?);
        let durability = match self.durability {
            Durability::Off => NO_SYNC_SETTINGS,
            Durability::Production => "",
        };
        Ok(format!(
            "-p {port} -k {socket_dir} {SERVER_SETTINGS} {durability}"
        ))
    }

    /// One `sh` command line that stops the running server (fast shutdown: sessions are cut,
    /// as in a real restart) and waits until it is down. For `cargo xtask chaos`.
    pub fn stop_command(&self) -> Result<String> {
        let args = self.pg_ctl_args(&["-m", "fast", "-w", "-t", "60", "stop"])?;
        let argv = self.run_as.argv(&self.bin.program("pg_ctl")?, &args)?;
        Ok(format!(
            "cd {} && {}",
            shell_quote(path_str(&self.base)?),
            shell_join(&argv)
        ))
    }

    /// One `sh` command line that starts the server again on the same port with the same
    /// settings and waits until it accepts connections. For `cargo xtask chaos`.
    pub fn start_command(&self) -> Result<String> {
        let log = path_str(&self.log)?.to_owned();
        let options = self.server_options(self.port)?;
        let args = self.pg_ctl_args(&["-w", "-t", "30", "-l", &log, "-o", &options, "start"])?;
        let argv = self.run_as.argv(&self.bin.program("pg_ctl")?, &args)?;
        Ok(format!(
            "cd {} && {}",
            shell_quote(path_str(&self.base)?),
            shell_join(&argv)
        ))
    }

    /// Waits until the server accepts TCP connections, or fails with its log.
    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let status = self.pg_isready()?.status().context("running pg_isready")?;
            if status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not accept connections on 127.0.0.1:{} within {} s\n--- {} ---\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    self.log_text(),
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// A quiet `pg_isready` against the server's TCP port.
    fn pg_isready(&self) -> Result<Command> {
        let mut cmd = Command::new(self.bin.program("pg_isready")?);
        let port = self.port.to_string();
        cmd.args(["-q", "-h", "127.0.0.1", "-p", &port, "-t", "1"])
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// `-D <data>` followed by `rest`, as owned strings for [`RunAs::command`].
    fn pg_ctl_args(&self, rest: &[&str]) -> Result<Vec<String>> {
        let mut args = vec!["-D".to_owned(), path_str(&self.data)?.to_owned()];
        args.extend(rest.iter().map(|arg| (*arg).to_owned()));
        Ok(args)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("xtask: error: {err:#}");
        }
    }
}

/// Picks the cluster's base directory and socket directory for this process.
///
/// As root the server runs as `postgres`, which must be able to walk down to its directories: when
/// the workspace sits somewhere it cannot (a checkout under `/root`, mode 700), the base moves to
/// the temp directory instead of loosening permissions on someone's home.
fn layout(workspace_root: &Path, run_as: &RunAs) -> Result<(PathBuf, PathBuf)> {
    let pid = std::process::id();
    let parent = workspace_root.join("target").join("xtask-pg");
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut base = parent.join(pid.to_string());

    if let RunAs::Postgres { uid, gid, .. } = *run_as {
        // Ours alone, so opening it up is harmless; a umask of 077 would otherwise lock postgres out.
        fs::set_permissions(&parent, Permissions::from_mode(0o755))
            .with_context(|| format!("making {} traversable", parent.display()))?;
        if !traversable(&parent, uid, gid) {
            let temp = env::temp_dir();
            ensure!(
                traversable(&temp, uid, gid),
                "neither {} nor {} can be reached by the postgres user",
                parent.display(),
                temp.display(),
            );
            let fallback = temp.join(format!("berth-xtask-pg-{pid}"));
            eprintln!(
                "xtask: the postgres user cannot reach {}; using {} instead",
                parent.display(),
                fallback.display(),
            );
            base = fallback;
        }
    }

    // A Unix socket path holds at most 107 bytes, and postgres appends "/.s.PGSQL.<port>".
    let mut socket_dir = base.join("sock");
    if path_str(&socket_dir)?.len() + "/.s.PGSQL.65535".len() > 100 {
        socket_dir = env::temp_dir().join(format!("berth-xtask-pg-sock-{pid}"));
    }

    // Leftovers of an earlier process with our pid: that process is gone, so is its server.
    for dir in [&base, &socket_dir] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing stale {}", dir.display()))?;
        }
    }
    Ok((base, socket_dir))
}

/// Whether the user `uid`/`gid` may search every directory from `/` down to `dir`, judged by the
/// mode bits alone (supplementary groups and ACLs are not consulted).
fn traversable(dir: &Path, uid: u32, gid: u32) -> bool {
    dir.ancestors().all(|ancestor| {
        fs::metadata(ancestor).is_ok_and(|meta| {
            let mode = meta.mode();
            mode & 0o001 != 0
                || (meta.uid() == uid && mode & 0o100 != 0)
                || (meta.gid() == gid && mode & 0o010 != 0)
        })
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; we release it for
/// postgres, and [`Cluster::start_server`] retries if someone else takes it meanwhile).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("probing for a free TCP port")?;
    Ok(listener
        .local_addr()
        .context("reading the probed port")?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversable_needs_search_permission_on_every_ancestor() -> Result<()> {
        let top = env::temp_dir().join(format!("xtask-traversable-{}", std::process::id()));
        let inner = top.join("inner");
        fs::create_dir_all(&inner)?;
        // A uid/gid that owns nothing here, like `postgres` under a root-owned checkout.
        let (uid, gid) = (4_000_000, 4_000_000);
        let result = (|| -> Result<(bool, bool)> {
            fs::set_permissions(&top, Permissions::from_mode(0o700))?;
            let closed = traversable(&inner, uid, gid);
            fs::set_permissions(&top, Permissions::from_mode(0o711))?;
            Ok((closed, traversable(&inner, uid, gid)))
        })();
        fs::remove_dir_all(&top)?;
        assert_eq!(result?, (false, true));
        Ok(())
    }
}
