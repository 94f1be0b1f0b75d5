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
//! <root>/<workspace-uuid>/agent.pid   the running agent's pid and start time, and the server's
//! ```
//!
//! Isolation is that of a local process: no tier limits, no compute sizing, and a `read_only`
//! workspace directory is only a working directory (nothing stops the agent from writing to it).
//! Each child leads its own process group, so stop signals reach the whole tree it spawned and a
//! Ctrl-C on the server's terminal does not hit the agents before the server stops them.
//!
//! A server that dies without stopping its agents (`kill -9`, a crash) must not leave them
//! running, nor have its next start run a second agent beside each. Two things see to it:
//! every agent gets `BERTH_AGENT_PARENT_PID` (the server's pid), so a runtime that can, such as
//! the reference agent, arranges to get SIGTERM when the server dies (Linux's parent-death
//! signal); and every agent is recorded in a pid file (`pidfile.rs`), so the next start
//! ([`ProcessProvisioner::stop_leftovers`]) stops the process groups a previous run left, which
//! covers every runtime.

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

use crate::inside::{
    ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, RelPath, Target, TermSize, Terminal,
};
use crate::ports::{PortPool, START_ATTEMPTS, is_address_in_use};
use crate::{BackendKind, Error, ProvisionRequest, Provisioner, Started};
use pidfile::{PidFile, Stamp};

mod inside;
mod pidfile;

/// Variables of the server's own environment a child keeps; everything else is cleared so the
/// server's secrets (admin token, database URL, key ring, …) never reach an agent.
const INHERITED_VARS: [&str; 5] = ["PATH", "HOME", "LANG", "TMPDIR", "RUST_LOG"];

/// How much of the agent's log a start failure quotes.
const LOG_TAIL_BYTES: u64 = 2048;

/// How often [`Provisioner::wait_exit`] looks at the agent.
const EXIT_POLL: Duration = Duration::from_millis(250);

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
    /// The loopback port reserved for it in the provisioner's [`PortPool`].
    port: u16,
    /// Where its run's output starts in the log.
    log_offset: u64,
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
    /// The URLs of agents whose start is in its grace period (`Provisioner::starting_url`).
    starting: crate::ports::StartingUrls,
    ports: PortPool,
    /// This server process, as its pid files name it; `None` where `/proc` cannot tell (then
    /// no pid files are written).
    server: Option<Stamp>,
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
            starting: Default::default(),
            ports: PortPool::new(),
            server: i32::try_from(std::process::id()).ok().and_then(Stamp::of),
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

    /// The file naming the workspace's running agent (see `pidfile.rs`).
    pub fn pid_path(&self, id: WorkspaceId) -> PathBuf {
        self.workspace_root(id).join("agent.pid")
    }

    /// Stops every tracked agent (SIGTERM, then SIGKILL after the stop grace), all at once.
    /// The server calls this on its way out.
    pub async fn shutdown(&self) {
        let all: Vec<(WorkspaceId, Tracked)> = self.lock().drain().collect();
        let mut stopping = tokio::task::JoinSet::new();
        for (id, tracked) in all {
            self.ports.release(tracked.port);
            let grace = self.config.stop_grace;
            let pid_path = self.pid_path(id);
            stopping.spawn(async move {
                let stopped = terminate(tracked, grace).await;
                pidfile::remove(&pid_path);
                (id, stopped)
            });
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

    /// Stops the agents a previous run of the server left running (it was killed, or crashed,
    /// before it could stop them), all at once: each pid file under the root whose agent
    /// still runs with the recorded start time, and whose server is gone, has its process
    /// group stopped (SIGTERM, then SIGKILL after the stop grace). A pid that now names
    /// another process is never signalled; a file of a server that still runs is left alone.
    /// The files of agents that are gone are removed. Returns how many agents were stopped.
    ///
    /// The server calls this once at start, before it serves and sweeps: the sweeps then
    /// start again, once each, the workspaces that should run.
    pub async fn stop_leftovers(&self) -> usize {
        let root = self.config.root.clone();
        let found = match tokio::task::spawn_blocking(move || leftovers(&root)).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "looking for agents of a previous run failed");
                return 0;
            }
        };
        let mut stopping = tokio::task::JoinSet::new();
        for (id, path, agent) in found {
            let grace = self.config.stop_grace;
            stopping.spawn(async move {
                tracing::warn!(workspace.id = %id, pid = agent.pid, "stopping an agent a previous run of the server left running");
                stop_leftover(agent, grace).await;
                pidfile::remove(&path);
            });
        }
        let mut stopped = 0;
        while let Some(joined) = stopping.join_next().await {
            match joined {
                Ok(()) => stopped += 1,
                Err(e) => tracing::warn!(error = %e, "leftover agent stop task failed"),
            }
        }
        stopped
    }

    /// Records the freshly spawned agent `pid` of `id` in its pid file.
    fn record_pid(&self, id: WorkspaceId, pid: u32) {
        let Some(server) = self.server else { return };
        let path = self.pid_path(id);
        if let Err(e) = PidFile::write(&path, pid, server) {
            // The agent still runs; only a crash of the server would leave it behind now.
            tracing::warn!(workspace.id = %id, pid, error = %e, "could not write the agent's pid file");
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<WorkspaceId, Tracked>> {
        // A panic while holding the lock leaves the map itself consistent (every operation on it
        // is a single insert, remove or try_wait), so a poisoned lock is still usable.
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns the agent on `port` and watches it through the start grace; an exit in that time
    /// fails the start with the tail of this run's log.
    async fn spawn_agent(
        &self,
        id: WorkspaceId,
        argv: &[String],
        root: &Path,
        prepared: &Prepared,
        port: u16,
        log_path: &Path,
    ) -> Result<(Child, u32, u64), Error> {
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
        // Last, so no workspace secret can change it: the reference agent follows this
        // server's death with it (see the module docs).
        cmd.env("BERTH_AGENT_PARENT_PID", std::process::id().to_string());
        let io = |e: std::io::Error| Error::Backend(format!("opening {}: {e}", log_path.display()));
        let log_offset = prepared.stdout.metadata().map_err(io)?.len();
        cmd.current_dir(&prepared.cwd)
            .stdin(Stdio::null())
            .stdout(prepared.stdout.try_clone().map_err(io)?)
            .stderr(prepared.stderr.try_clone().map_err(io)?)
            .process_group(0)
            .kill_on_drop(true);

        let mut child = cmd
            .spawn()
            .map_err(|e| Error::StartFailed(format!("spawning {:?}: {e}", argv[0])))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::StartFailed("agent process vanished at spawn".into()))?;
        // Recorded at once, before the start grace: a server killed from here on leaves a pid
        // file its next start finds.
        self.record_pid(id, pid);

        match tokio::time::timeout(self.config.start_grace, child.wait()).await {
            Err(_still_running) => Ok((child, pid, log_offset)),
            Ok(Ok(status)) => {
                let _ = signal_group(pid, Signal::SIGKILL);
                pidfile::remove(&self.pid_path(id));
                let tail = log_tail(log_path, log_offset.max(prepared.log_offset));
                Err(Error::StartFailed(format!(
                    "runtime {:?} exited at once ({}); last output:\n{tail}",
                    prepared.runtime,
                    describe(status)
                )))
            }
            Ok(Err(e)) => Err(Error::Backend(format!(
                "waiting for agent process {pid}: {e}"
            ))),
        }
    }

    fn command_for(&self, runtime: &str) -> Result<&[String], Error> {
        match self.config.commands.get(runtime) {
            Some(argv) if !argv.is_empty() => Ok(argv),
            _ => Err(Error::ImageNotFound(runtime.to_owned())),
        }
    }
}

impl ProcessProvisioner {
    /// Kills every tracked agent's process group at once (SIGKILL, no grace), without waiting:
    /// for a host that is going away and cannot await [`ProcessProvisioner::shutdown`] (a
    /// `Drop`). Dropping the provisioner does the same.
    pub fn kill_all(&self) {
        // `kill_on_drop` only reaches the direct child; kill each agent's whole group so nothing
        // it spawned outlives the server.
        for tracked in self.lock().values_mut() {
            if matches!(tracked.is_running(), Ok(true)) {
                let _ = signal_group(tracked.pid, Signal::SIGKILL);
            }
        }
    }
}

impl Drop for ProcessProvisioner {
    fn drop(&mut self) {
        self.kill_all();
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
        let prepared = {
            let root = root.clone();
            let log_path = log_path.clone();
            let argv0 = argv[0].clone();
            tokio::task::spawn_blocking(move || prepare(&root, &log_path, &argv0, request))
                .await
                .map_err(|e| Error::Backend(format!("preparing the workspace directory: {e}")))??
        };

        // A port is reserved below the ephemeral range (see `ports.rs`); should something else
        // still have bound it by the time the agent binds, the start is tried again with a
        // fresh one.
        let mut attempt = 0;
        let (child, pid, port, log_offset) = loop {
            attempt += 1;
            let port = self.ports.reserve()?;
            self.starting.insert(id, format!("http://127.0.0.1:{port}"));
            let spawned = self
                .spawn_agent(id, &argv, &root, &prepared, port, &log_path)
                .await;
            self.starting.remove(id);
            match spawned {
                Ok((child, pid, log_offset)) => break (child, pid, port, log_offset),
                Err(e) => {
                    self.ports.release(port);
                    let retry = matches!(&e, Error::StartFailed(msg) if is_address_in_use(msg));
                    if retry && attempt < START_ATTEMPTS {
                        tracing::warn!(
                            port,
                            attempt,
                            "agent port was taken; starting again on another"
                        );
                        continue;
                    }
                    return Err(e);
                }
            }
        };
        let url = format!("http://127.0.0.1:{port}");

        tracing::info!(pid, port, "agent process started");
        let tracked = Tracked {
            child,
            pid,
            port,
            log_offset,
        };
        let replaced = self.lock().insert(id, tracked);
        if let Some(old) = replaced {
            // Two starts of one workspace raced; the newer one wins.
            self.ports.release(old.port);
            let _ = terminate(old, self.config.stop_grace).await;
        }
        Ok(Started {
            url: Some(url),
            instance_id: Some(pid.to_string()),
        })
    }

    async fn starting_url(&self, id: WorkspaceId) -> Option<String> {
        self.starting.get(id)
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    async fn stop(&self, id: WorkspaceId) -> Result<(), Error> {
        let tracked = self.lock().remove(&id);
        match tracked {
            Some(tracked) => {
                let pid = tracked.pid;
                self.ports.release(tracked.port);
                terminate(tracked, self.config.stop_grace).await?;
                pidfile::remove(&self.pid_path(id));
                tracing::info!(pid, "agent process stopped");
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Polls the agent started last (a few times a second: `try_wait` is one `waitpid`) until
    /// it exits, then quotes its run's log. A stop or a newer start ends the watch with `None`.
    async fn wait_exit(&self, id: WorkspaceId) -> Result<Option<String>, Error> {
        let Some(pid) = self.lock().get(&id).map(|t| t.pid) else {
            return Ok(None);
        };
        loop {
            let exited = {
                let mut children = self.lock();
                match children.get_mut(&id) {
                    Some(tracked) if tracked.pid == pid => match tracked.child.try_wait() {
                        Ok(Some(status)) => Some((describe(status), tracked.log_offset)),
                        Ok(None) => None,
                        Err(e) => {
                            return Err(Error::Backend(format!(
                                "checking agent process {pid}: {e}"
                            )));
                        }
                    },
                    _ => return Ok(None),
                }
            };
            if let Some((how, offset)) = exited {
                let tail = log_tail(&self.log_path(id), offset);
                return Ok(Some(format!(
                    "agent process {pid} exited ({how}); last output:\n{tail}"
                )));
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    async fn is_running(&self, id: WorkspaceId) -> Result<bool, Error> {
        match self.lock().get_mut(&id) {
            Some(tracked) => tracked.is_running(),
            // Spawned and in its start grace: it runs (it may have registered already).
            None => Ok(self.starting.get(id).is_some()),
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

    // Looking inside: host directories, host commands and a host shell (see `inside.rs`).

    async fn list_files(
        &self,
        target: &Target,
        root: FileRoot,
        dir: &RelPath,
        depth: u8,
    ) -> Result<Vec<FileEntry>, InsideError> {
        inside::list_files(self, target, root, dir, depth).await
    }

    async fn read_file(
        &self,
        target: &Target,
        root: FileRoot,
        path: &RelPath,
        limit: u64,
    ) -> Result<Vec<u8>, InsideError> {
        inside::read_file(self, target, root, path, limit).await
    }

    async fn write_files(
        &self,
        target: &Target,
        root: FileRoot,
        files: Vec<(RelPath, Vec<u8>)>,
    ) -> Result<(), InsideError> {
        inside::write_files(self, target, root, files).await
    }

    async fn delete_file(
        &self,
        target: &Target,
        root: FileRoot,
        path: &RelPath,
    ) -> Result<(), InsideError> {
        inside::delete_file(self, target, root, path).await
    }

    async fn exec(&self, target: &Target, request: ExecRequest) -> Result<ExecOutput, InsideError> {
        inside::exec(self, target, request).await
    }

    async fn open_terminal(
        &self,
        target: &Target,
        size: TermSize,
    ) -> Result<Terminal, InsideError> {
        inside::open_terminal(self, target, size).await
    }
}

/// What `prepare` hands back to `start`: the request's remaining parts and the opened log.
struct Prepared {
    name: String,
    runtime: String,
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
    for name in &request.removed_config_files {
        let path = contained(&configs, name)?;
        // Not following a link: a link the template could not have put there is removed itself.
        let removed = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        removed.map_err(|e| io("removing", &path, e))?;
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
        runtime: request.runtime.clone(),
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

/// The pid files under `root` whose agent still runs and whose server is gone, as
/// `(workspace, pid file, agent)`. Files of agents that are gone, and unreadable ones, are
/// removed on the way; files of a server that still runs are left alone.
fn leftovers(root: &Path) -> Vec<(WorkspaceId, PathBuf, Stamp)> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(root = %root.display(), error = %e, "cannot look for agents of a previous run");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<WorkspaceId>().ok())
        else {
            continue;
        };
        let path = entry.path().join("agent.pid");
        match PidFile::read(&path) {
            Ok(None) => {}
            Ok(Some(file)) if file.server.is_live() => {
                tracing::warn!(workspace.id = %id, server.pid = file.server.pid, "the agent belongs to a server that still runs; left alone");
            }
            Ok(Some(file)) if file.agent.is_live() => found.push((id, path, file.agent)),
            Ok(Some(_)) => pidfile::remove(&path),
            Err(e) => {
                tracing::warn!(workspace.id = %id, error = %e, "removing an unreadable pid file");
                pidfile::remove(&path);
            }
        }
    }
    found
}

/// Stops an agent that is not this server's child: SIGTERM to its group, up to `grace` for the
/// leader to exit, then SIGKILL. The group is signalled only while its leader is seen alive
/// with the recorded start time (the leader's pid is the group's id, and while it lives no
/// other process can have it); members left after the leader exited are killed one by one.
async fn stop_leftover(agent: Stamp, grace: Duration) {
    let signal = |sig: Signal| {
        if !agent.is_live() {
            return;
        }
        let sent = if agent.leads_group() {
            killpg(Pid::from_raw(agent.pid), sig)
        } else {
            nix::sys::signal::kill(Pid::from_raw(agent.pid), sig)
        };
        if let Err(e) = sent
            && e != Errno::ESRCH
        {
            tracing::warn!(pid = agent.pid, error = %e, "cannot signal a leftover agent");
        }
    };
    signal(Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while agent.is_live() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
    if agent.is_live() {
        tracing::warn!(
            pid = agent.pid,
            "leftover agent ignored SIGTERM; sending SIGKILL"
        );
        signal(Signal::SIGKILL);
    }
    for member in pidfile::group_members(agent.pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(member), Signal::SIGKILL);
    }
}

/// How often [`stop_leftover`] looks whether a leftover agent has exited.
const LEFTOVER_POLL: Duration = Duration::from_millis(50);

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
