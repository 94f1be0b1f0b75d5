//! The process provisioner: each workspace is a child process of the server.
//!
//! This is the embedded default when no Docker daemon answers, so `cargo run` works on a machine
//! without Docker. A runtime maps to a command line (`ProcessConfig::commands`); the agent gets
//! the same environment contract as a container (REFERENCE.md §5.1.2) with host paths instead of
//! container mounts, and a loopback port of its own instead of a published `8000/tcp`.
//!
//! Layout under `ProcessConfig::root`, one directory per workspace:
//!
//! ```text
//! <root>/<workspace-uuid>/configs/    WORKSPACE_CONFIG_PATH: template copy, config files, secrets
//! <root>/<workspace-uuid>/workspace/  working directory when no host directory is shared
//! <root>/<workspace-uuid>/agent.log   the agent's stdout and stderr, appended across restarts
//! ```
//!
//! Isolation is that of a local process: no tier limits, no compute sizing, and a `read_only`
//! workspace directory is only a working directory (nothing stops the agent from writing to it).
//! Each child leads its own process group, so stop signals reach the whole tree it spawned and a
//! Ctrl-C on the server's terminal does not hit the agents before the server stops them.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use secrecy::{ExposeSecret, SecretString};
use tokio::process::{Child, Command};

use crate::{BackendKind, Error, ProvisionRequest, Provisioner, Started};

/// Variables of the server's own environment a child keeps; everything else is cleared so the
/// server's secrets (admin token, database URL, key ring, …) never reach an agent.
const INHERITED_VARS: [&str; 5] = ["PATH", "HOME", "LANG", "TMPDIR", "RUST_LOG"];

/// How much of the agent's log a start failure quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// Settings of the process provisioner.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Directory holding one sub-directory per workspace (e.g. `<data-dir>/workspaces`).
    pub root: PathBuf,
    /// Runtime name → command line (program and arguments) that runs its agent.
    pub commands: HashMap<String, Vec<String>>,
    /// How long a fresh child is watched for an immediate exit, which fails the start.
    pub start_grace: Duration,
    /// How long `stop` waits after SIGTERM before it sends SIGKILL.
    pub stop_grace: Duration,
}

impl ProcessConfig {
    /// Default for [`ProcessConfig::start_grace`].
    pub const DEFAULT_START_GRACE: Duration = Duration::from_millis(200);
    /// Default for [`ProcessConfig::stop_grace`].
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

    /// A configuration rooted at `root`, with no runtimes and the default graces.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            commands: HashMap::new(),
            start_grace: Self::DEFAULT_START_GRACE,
            stop_grace: Self::DEFAULT_STOP_GRACE,
        }
    }

    /// Adds (or replaces) the command line of `runtime`.
    pub fn with_command<S: Into<String>>(
        mut self,
        runtime: impl Into<String>,
        argv: impl IntoIterator<Item = S>,
    ) -> Self {
        self.commands
            .insert(runtime.into(), argv.into_iter().map(Into::into).collect());
        self
    }
}

/// One supervised agent.
#[derive(Debug)]
struct Tracked {
    child: Child,
    /// The child's pid, which is also its process-group id.
    pid: u32,
}

impl Tracked {
    fn is_running(&mut self) -> Result<bool, Error> {
        self.child
            .try_wait()
            .map(|status| status.is_none())
            .map_err(|e| Error::Backend(format!("checking agent process {}: {e}", self.pid)))
    }
}

/// Runs each workspace as a supervised child process (see the module docs).
#[derive(Debug)]
pub struct ProcessProvisioner {
    config: ProcessConfig,
    children: Mutex<HashMap<WorkspaceId, Tracked>>,
}

impl ProcessProvisioner {
    /// A provisioner with `config`. A relative `root` is made absolute against the current
    /// directory now, because the agents run elsewhere and get the configs path from it.
    pub fn new(mut config: ProcessConfig) -> Self {
        if let Ok(abs) = std::path::absolute(&config.root) {
            config.root = abs;
        }
        Self {
            config,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// The settings in use (with `root` made absolute).
    pub fn config(&self) -> &ProcessConfig {
        &self.config
    }

    /// The directory of one workspace: `<root>/<uuid>`.
    pub fn workspace_root(&self, id: WorkspaceId) -> PathBuf {
        self.config.root.join(id.to_string())
    }

    /// The file the workspace's agent writes its stdout and stderr to.
    pub fn log_path(&self, id: WorkspaceId) -> PathBuf {
        self.workspace_root(id).join("agent.log")
    }

    /// Stops every tracked agent (SIGTERM, then SIGKILL after the stop grace), all at once.
    /// The server calls this on its way out.
    pub async fn shutdown(&self) {
        let all: Vec<(WorkspaceId, Tracked)> = self.lock().drain().collect();
        let mut stopping = tokio::task::JoinSet::new();
        for (id, tracked) in all {
            let grace = self.config.stop_grace;
            stopping.spawn(async move { (id, terminate(tracked, grace).await) });
        }
        while let Some(joined) = stopping.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => {
                    tracing::warn!(workspace.id = %id, error = %e, "agent did not stop cleanly");
                }
                Err(e) => tracing::warn!(error = %e, "agent stop task failed"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkspaceId, Tracked>> {
        // A panic while holding the lock leaves the map itself consistent (every operation on it
        // is a single insert, remove or try_wait), so a poisoned lock is still usable.
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn command_for(&self, runtime: &str) -> Result<&[String], Error> {
        match self.config.commands.get(runtime) {
            Some(argv) if !argv.is_empty() => Ok(argv),
            _ => Err(Error::ImageNotFound(runtime.to_owned())),
        }
    }
}

impl Drop for ProcessProvisioner {
    fn drop(&mut self) {
        // `kill_on_drop` only reaches the direct child; kill each agent's whole group so nothing
        // it spawned outlives the server.
        for tracked in self.lock().values_mut() {
            if matches!(tracked.is_running(), Ok(true)) {
                let _ = signal_group(tracked.pid, Signal::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Provisioner for ProcessProvisioner {
    fn kind(&self) -> BackendKind {
        BackendKind::Process
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %request.workspace_id, runtime = %request.runtime))]
    async fn start(&self, request: ProvisionRequest) -> Result<Started, Error> {
        let argv = self.command_for(&request.runtime)?.to_vec();
        let id = request.workspace_id;

        // A restart replaces the agent: the old one must be gone before its configs are rewritten.
        self.stop(id).await?;

        let root = self.workspace_root(id);
        let log_path = self.log_path(id);
        let runtime = request.runtime.clone();
        let prepared = {
            let root = root.clone();
            let log_path = log_path.clone();
            let argv0 = argv[0].clone();
            tokio::task::spawn_blocking(move || prepare(&root, &log_path, &argv0, request))
                .await
                .map_err(|e| Error::Backend(format!("preparing the workspace directory: {e}")))??
        };

        let port = free_loopback_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear();
        for key in INHERITED_VARS {
            if let Some(value) = std::env::var_os(key) {
                cmd.env(key, value);
            }
        }
        // The base contract first, then the prepared pairs; setting a key again replaces it, so a
        // later pair wins over an earlier one, as with a container's ordered env list.
        let configs = root.join("configs");
        cmd.env("WORKSPACE_ID", id.to_string())
            .env("WORKSPACE_CONFIG_PATH", &configs)
            .env("PLATFORM_URL", &prepared.platform_url)
            .env("MOLECULE_URL", &prepared.platform_url)
            .env("TIER", prepared.tier.to_string())
            .env("WORKSPACE_NAME", &prepared.name)
            .env("AGENT_HOST", "127.0.0.1")
            .env("AGENT_PORT", port.to_string())
            .env("AGENT_URL", &url);
        for (key, value) in &prepared.env {
            cmd.env(key, value.expose_secret());
        }
        cmd.current_dir(&prepared.cwd)
            .stdin(Stdio::null())
            .stdout(prepared.stdout)
            .stderr(prepared.stderr)
            .process_group(0)
            .kill_on_drop(true);

        let mut child = cmd
            .spawn()
            .map_err(|e| Error::StartFailed(format!("spawning {:?}: {e}", argv[0])))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::StartFailed("agent process vanished at spawn".into()))?;

        match tokio::time::timeout(self.config.start_grace, child.wait()).await {
            Err(_still_running) => {}
            Ok(Ok(status)) => {
                let _ = signal_group(pid, Signal::SIGKILL);
                let tail = log_tail(&log_path, prepared.log_offset);
                return Err(Error::StartFailed(format!(
                    "runtime {runtime:?} exited at once ({}); last output:\n{tail}",
                    describe(status)
                )));
            }
            Ok(Err(e)) => {
                return Err(Error::Backend(format!(
                    "waiting for agent process {pid}: {e}"
                )));
            }
        }

        tracing::info!(pid, port, "agent process started");
        let replaced = self.lock().insert(id, Tracked { child, pid });
        if let Some(old) = replaced {
            // Two starts of one workspace raced; the newer one wins.
            let _ = terminate(old, self.config.stop_grace).await;
        }
        Ok(Started {
            url: Some(url),
            instance_id: Some(pid.to_string()),
        })
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    async fn stop(&self, id: WorkspaceId) -> Result<(), Error> {
        let tracked = self.lock().remove(&id);
        match tracked {
            Some(tracked) => {
                let pid = tracked.pid;
                terminate(tracked, self.config.stop_grace).await?;
                tracing::info!(pid, "agent process stopped");
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn is_running(&self, id: WorkspaceId) -> Result<bool, Error> {
        match self.lock().get_mut(&id) {
            Some(tracked) => tracked.is_running(),
            None => Ok(false),
        }
    }

    /// Stops the agent if it still runs, then deletes `<root>/<uuid>` (configs, log, workspace).
    async fn purge(&self, id: WorkspaceId) -> Result<(), Error> {
        self.stop(id).await?;
        let dir = self.workspace_root(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Backend(format!("removing {}: {e}", dir.display()))),
        }
    }
}

/// What `prepare` hands back to `start`: the request's remaining parts and the opened log.
struct Prepared {
    name: String,
    tier: u8,
    platform_url: String,
    env: Vec<(String, SecretString)>,
    cwd: PathBuf,
    stdout: fs::File,
    stderr: fs::File,
    /// Where this run's output starts in the log, so a failure quotes only this run.
    log_offset: u64,
}

/// Lays out `<root>/configs` (replacing what was there), the working directory and the log.
fn prepare(
    root: &Path,
    log_path: &Path,
    argv0: &str,
    request: ProvisionRequest,
) -> Result<Prepared, Error> {
    let io = |what: &str, path: &Path, e: std::io::Error| {
        Error::Backend(format!("{what} {}: {e}", path.display()))
    };

    let configs = root.join("configs");
    match fs::remove_dir_all(&configs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("clearing", &configs, e)),
    }
    fs::create_dir_all(&configs).map_err(|e| io("creating", &configs, e))?;

    if let Some(template) = &request.template_path {
        // A symlinked template root is followed once; links inside it are not.
        let template =
            fs::canonicalize(template).map_err(|e| io("opening template", template, e))?;
        copy_tree(&template, &configs).map_err(|e| io("copying template", &template, e))?;
    }
    for (name, content) in &request.config_files {
        let path = contained(&configs, name)?;
        write_file(&path, content, 0o644).map_err(|e| io("writing", &path, e))?;
    }
    for (name, secret) in &request.secret_files {
        let path = contained(&configs, name)?;
        write_file(&path, secret.expose_secret().as_bytes(), 0o600)
            .map_err(|e| io("writing", &path, e))?;
    }

    let shared = request
        .workspace_dir
        .as_deref()
        .filter(|d| !d.is_empty() && request.workspace_access != "none");
    let cwd = match shared {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                return Err(Error::StartFailed(format!(
                    "workspace directory {} does not exist",
                    dir.display()
                )));
            }
            dir
        }
        None => {
            let dir = root.join("workspace");
            fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
            dir
        }
    };

    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| io("opening", log_path, e))?;
    writeln!(
        log,
        "=== berth: starting runtime {:?} ({argv0}) ===",
        request.runtime
    )
    .map_err(|e| io("writing", log_path, e))?;
    let log_offset = log
        .seek(SeekFrom::End(0))
        .map_err(|e| io("reading", log_path, e))?;
    let stderr = log.try_clone().map_err(|e| io("opening", log_path, e))?;

    Ok(Prepared {
        name: request.name,
        tier: request.tier,
        platform_url: request.platform_url,
        env: request.env,
        cwd,
        stdout: log,
        stderr,
        log_offset,
    })
}

/// `base/name` for a relative `name` that stays inside `base` (no `..`, no root, not empty).
fn contained(base: &Path, name: &str) -> Result<PathBuf, Error> {
    let rel = Path::new(name);
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let names_a_file = rel.components().any(|c| matches!(c, Component::Normal(_)));
    if !plain || !names_a_file {
        return Err(Error::StartFailed(format!(
            "config file path {name:?} escapes the configs directory"
        )));
    }
    Ok(base.join(rel))
}

/// Writes `content` to `path` (creating parent directories) with `mode`, replacing any file.
fn write_file(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    // A symlink planted at the path would redirect the write; remove whatever is there first.
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content)?;
    // The umask may have narrowed `mode` at creation; set it exactly.
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Copies the regular files and directories of `from` into `to`, skipping symlinks (which could
/// point anywhere on the host) and special files.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A loopback port that is free now. Another process could take it before the agent binds it;
/// the agent then fails to start, which the start grace reports.
fn free_loopback_port() -> Result<u16, Error> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Backend(format!("finding a free loopback port: {e}")))
}

/// SIGTERM to the agent's process group, up to `grace` for it to exit, then SIGKILL.
async fn terminate(mut tracked: Tracked, grace: Duration) -> Result<(), Error> {
    let pid = tracked.pid;
    if tracked.is_running()? {
        signal_group(pid, Signal::SIGTERM)?;
        if tokio::time::timeout(grace, tracked.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(pid, "agent ignored SIGTERM; sending SIGKILL");
        }
    }
    // Also reaches whatever the agent left behind in its group after it exited itself.
    signal_group(pid, Signal::SIGKILL)?;
    tracked
        .child
        .wait()
        .await
        .map_err(|e| Error::Backend(format!("waiting for agent process {pid}: {e}")))?;
    Ok(())
}

/// Sends `signal` to the process group `pid` leads; a group that no longer exists is fine.
fn signal_group(pid: u32, signal: Signal) -> Result<(), Error> {
    let pgid =
        i32::try_from(pid).map_err(|_| Error::Backend(format!("process id {pid} out of range")))?;
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::Backend(format!(
            "sending {signal} to agent process group {pid}: {e}"
        ))),
    }
}

/// The last `LOG_TAIL_BYTES` of the log written since `offset`, as text.
fn log_tail(path: &Path, offset: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = offset.max(len.saturating_sub(LOG_TAIL_BYTES));
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("<log unreadable: {e}>"))
}

/// "exit status 3" or "killed by signal 9".
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_refuses_escaping_paths() {
        let base = Path::new("/b");
        assert_eq!(
            contained(base, "config.yaml").unwrap(),
            Path::new("/b/config.yaml")
        );
        assert_eq!(
            contained(base, "prompts/a.md").unwrap(),
            Path::new("/b/prompts/a.md")
        );
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a/.."] {
            assert_eq!(
                contained(base, bad).unwrap_err().code(),
                "START_FAILED",
                "{bad}"
            );
        }
    }

    #[test]
    fn log_tail_quotes_only_this_run_and_at_most_2_kib() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        fs::write(&log, "old run\nnew run\n").unwrap();
        assert_eq!(log_tail(&log, 8), "new run\n");
        fs::write(&log, "x".repeat(5000)).unwrap();
        assert_eq!(log_tail(&log, 0).len(), 2048);
    }
}
