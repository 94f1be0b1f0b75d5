//! Looking inside a workspace (issue #14, REFERENCE-3.md): its files, one-shot commands and
//! terminals, over the provisioner's port (`berth_provision::inside`), so each backend does it
//! its own way and the core has no backend special case.
//!
//! What the core adds to the port:
//! - the workspace lookup and refusals: a removed or unknown workspace is 404, an external one
//!   409 (its files live on the agent's machine), a backend that has nothing running 409 with the
//!   row's status;
//! - the configs root's persistence: `/configs` is rebuilt at every start, so every write or
//!   delete there is also recorded (`workspace_config_edits`) and applied by every later start;
//!   a write to a running workspace schedules a restart (the agent reads its configs when it
//!   starts), debounced on the trailing edge so the restart comes after the last edit of a burst
//!   (the reference fired on the leading edge and dropped later edits, REFERENCE-3.md §3.14). A
//!   workspace that does not run gets the edit at its next start and no restart. Writes under the
//!   other roots are the agent's own files and restart nothing;
//! - audit: every exec and every terminal session (open and close) is an activity row of the
//!   workspace (with its `ACTIVITY_LOGGED` event) naming who (the admin or the workspace's own
//!   token) and, for exec, the command — never its input or output; file writes and deletes are
//!   rows too;
//! - the agent's credentials: the two files every start writes at the top of `/configs`
//!   ([`CREDENTIAL_FILES`]) are left out of listings, and reading, writing or deleting them is
//!   refused ([`InsideFailure::Credential`], 403) — they are the workspace's token and the
//!   platform's inbound secret, minted by each start, and an edit stored for every start would
//!   overwrite the next start's fresh ones. (Exec and the terminal run as the agent, which reads
//!   them anyway; they are not filtered.)
//! - bounds: file size, exec timeout and output, concurrent terminals per workspace;
//! - metrics: open terminal sessions, sessions opened, execs by outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_domain::WorkspaceId;
use berth_domain::runtime::is_external_like;
use berth_domain::status::{Transition, WorkspaceStatus};
use berth_provision::inside::MAX_LIST_DEPTH;
use berth_provision::{
    BackendKind, ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, RelPath, Target,
    TermSize, Terminal,
};
use berth_store::{ConfigEdit, Workspace};
use serde_json::json;

use crate::activity::ActivityEntry;
use crate::registry::Principal;
use crate::service::WorkspaceService;

/// The workspace token's file.
pub const AUTH_TOKEN_FILE: &str = ".auth_token";
/// The platform-inbound secret's file.
pub const INBOUND_SECRET_FILE: &str = ".platform_inbound_secret";

/// The agent's credential files, written by every start at the top of `/configs` with mode
/// 0600: the workspace's token and the platform's inbound secret, and a warm-pool member's pool
/// credential until its claim (`pool.rs`). The files API neither lists, reads, writes nor
/// deletes them ([`is_credential_file`]).
pub const CREDENTIAL_FILES: [&str; 3] = [
    AUTH_TOKEN_FILE,
    INBOUND_SECRET_FILE,
    crate::pool::POOL_SECRET_FILE,
];

/// Whether `path` under `root` is one of [`CREDENTIAL_FILES`]: the one rule of what the files API
/// hides.
pub fn is_credential_file(root: FileRoot, path: &RelPath) -> bool {
    root == FileRoot::Configs
        && matches!(path.components(), [name] if CREDENTIAL_FILES.contains(&name.as_str()))
}

/// [`InsideFailure::Credential`] when `path` is a credential file.
fn refuse_credential(root: FileRoot, path: &RelPath) -> Result<(), InsideFailure> {
    if is_credential_file(root, path) {
        return Err(InsideFailure::Credential(format!(
            "{}/{path}",
            root.as_str()
        )));
    }
    Ok(())
}

/// Limits and switches of the files, exec and terminal routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsideConfig {
    /// Largest file read or written, in bytes (413 past it).
    pub max_file_bytes: u64,
    /// Longest an exec may ask for (and the default when it asks for none).
    pub exec_max_timeout: Duration,
    /// Bytes of stdout and of stderr an exec answers with, each.
    pub exec_output_limit: usize,
    /// A terminal with no input and no output for this long is closed.
    pub terminal_idle: Duration,
    /// A terminal is closed after this long whatever happens.
    pub terminal_max_session: Duration,
    /// Open terminals per workspace.
    pub terminal_max_per_workspace: usize,
    /// Whether the process backend's exec and terminal — a command or a shell on the host, as the
    /// server's user — are allowed (`--process-shell`). Off by default.
    pub process_shell: bool,
    /// How long after the last write under `/configs` of a running workspace it is restarted.
    pub config_restart_delay: Duration,
}

impl Default for InsideConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 16 * 1024 * 1024,
            exec_max_timeout: Duration::from_secs(300),
            exec_output_limit: 1024 * 1024,
            terminal_idle: Duration::from_secs(30 * 60),
            terminal_max_session: Duration::from_secs(8 * 3600),
            terminal_max_per_workspace: 4,
            process_shell: false,
            config_restart_delay: Duration::from_secs(5),
        }
    }
}

/// Why a look inside was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum InsideFailure {
    /// No such workspace, or it was removed.
    #[error("workspace not found")]
    WorkspaceNotFound,
    /// An external workspace: its files and processes are on the agent's own machine.
    #[error("workspace is external: its files and processes live on the agent's machine, not here")]
    External,
    /// Nothing runs to look into; `status` is the row's.
    #[error("workspace is {status}: {detail}")]
    NotRunning {
        /// The workspace's status.
        status: WorkspaceStatus,
        /// What the backend said.
        detail: String,
    },
    /// The process backend's exec or terminal is off (`--process-shell`).
    #[error(
        "exec and the terminal run on the host with the process backend and are off; the operator enables them with --process-shell"
    )]
    HostShellDisabled,
    /// The workspace has as many terminals open as allowed.
    #[error("workspace has {0} terminal sessions open, the most allowed")]
    TooManySessions(usize),
    /// The request itself is wrong (e.g. an empty command).
    #[error("{0}")]
    Invalid(String),
    /// The path is one of the agent's credential files ([`CREDENTIAL_FILES`]).
    #[error(
        "{0} is the agent's credential, written by each start: the files API does not read, write or delete it"
    )]
    Credential(String),
    /// What the backend answered.
    #[error(transparent)]
    Inside(InsideError),
    /// The store failed.
    #[error("{0}")]
    Store(&'static str, #[source] berth_store::Error),
}

/// What a write or delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChange {
    /// Where it landed: `container` (the running workspace), `stored` (a `/configs` edit of a
    /// workspace that does not run, applied at its next start).
    pub source: &'static str,
    /// Whether a restart was scheduled (a `/configs` change of a running workspace).
    pub restart_scheduled: bool,
}

/// Shared state of the routes: the configs restart debounce and the terminal counts.
#[derive(Debug, Default)]
pub(crate) struct InsideState {
    /// Per workspace, the generation of its latest `/configs` write; the delayed restart fires
    /// only if no later write bumped it.
    restart_generation: Mutex<HashMap<WorkspaceId, u64>>,
    /// Open terminal sessions per workspace.
    sessions: Mutex<HashMap<WorkspaceId, usize>>,
}

/// An open terminal: the backend's [`Terminal`] plus the bookkeeping that ends with it. Dropping
/// it (or [`TerminalSession::finish`]) frees the session's slot; `finish` also records the close.
#[derive(Debug)]
pub struct TerminalSession {
    /// The shell's channels (see [`Terminal`]).
    pub terminal: Terminal,
    slot: SessionSlot,
    opened: Instant,
    principal: Principal,
}

#[derive(Debug)]
struct SessionSlot {
    id: WorkspaceId,
    service: WorkspaceService,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut sessions = lock(&self.service.inside.sessions);
        if let Some(n) = sessions.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sessions.remove(&self.id);
            }
        }
        self.service.metrics.terminal_closed();
    }
}

impl TerminalSession {
    /// The workspace.
    pub fn workspace_id(&self) -> WorkspaceId {
        self.slot.id
    }

    /// Records the session's end (`reason`: `exit`, `closed`, `idle`, `max_session`, `error`) with
    /// the shell's exit code if known, and frees its slot. The terminal's channels must be
    /// dropped by then (they are moved out by the caller), which ends the shell.
    pub async fn finish(self, reason: &str, exit_code: Option<i64>) {
        let Self {
            terminal,
            slot,
            opened,
            principal,
        } = self;
        drop(terminal);
        let service = slot.service.clone();
        let id = slot.id;
        drop(slot);
        let entry = ActivityEntry {
            activity_type: "terminal".into(),
            method: Some("close".into()),
            summary: Some(format!("Terminal session ended ({reason})")),
            request_body: Some(
                json!({"by": who(principal), "reason": reason, "exit_code": exit_code}),
            ),
            duration_ms: Some(i64::try_from(opened.elapsed().as_millis()).unwrap_or(i64::MAX)),
            ..ActivityEntry::default()
        };
        if let Err(e) = service.log_activity(id, entry, Vec::new()).await {
            tracing::warn!(workspace.id = %id, error = %e, "could not record the terminal session's end");
        }
    }

    /// Splits off the channels, keeping the bookkeeping (for a caller that drives the channels
    /// in separate tasks and calls [`TerminalSession::finish`] at the end).
    pub fn take_terminal(&mut self) -> Terminal {
        let (input, _) = tokio::sync::mpsc::channel(1);
        let (_, output) = tokio::sync::mpsc::channel(1);
        let (_, exit) = tokio::sync::oneshot::channel();
        std::mem::replace(
            &mut self.terminal,
            Terminal {
                input,
                output,
                exit,
            },
        )
    }
}

/// The audit name of a caller.
fn who(principal: Principal) -> &'static str {
    match principal {
        Principal::Admin => "admin",
        Principal::Workspace(_) => "workspace_token",
        Principal::Dev => "dev",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WorkspaceService {
    /// The limits and switches of the files, exec and terminal routes.
    pub fn inside_config(&self) -> &InsideConfig {
        &self.config.inside
    }

    /// Which backend the workspaces run on.
    pub fn backend_kind(&self) -> BackendKind {
        self.provisioner.kind()
    }

    /// The row and the port's target of a workspace one may look into.
    async fn inside_target(&self, id: WorkspaceId) -> Result<(Workspace, Target), InsideFailure> {
        let row = self
            .store
            .get_workspace(id)
            .await
            .map_err(|e| InsideFailure::Store("failed to look up workspace", e))?
            .filter(|w| w.status != WorkspaceStatus::Removed)
            .ok_or(InsideFailure::WorkspaceNotFound)?;
        if is_external_like(&row.runtime) {
            return Err(InsideFailure::External);
        }
        let target = Target {
            id,
            workspace_dir: row
                .workspace_dir
                .clone()
                .filter(|d| !d.is_empty() && row.workspace_access != "none"),
        };
        Ok((row, target))
    }

    /// The backend's answer, with "nothing runs" turned into the row's status.
    fn inside_err(row: &Workspace, e: InsideError) -> InsideFailure {
        match e {
            InsideError::NotRunning(detail) => InsideFailure::NotRunning {
                status: row.status,
                detail,
            },
            e => InsideFailure::Inside(e),
        }
    }

    /// `GET /workspaces/{id}/files`: the entries under `dir` of `root`, `depth` (1–5) deep.
    pub async fn list_files(
        &self,
        id: WorkspaceId,
        root: FileRoot,
        dir: &RelPath,
        depth: u8,
    ) -> Result<Vec<FileEntry>, InsideFailure> {
        let (row, target) = self.inside_target(id).await?;
        let depth = depth.clamp(1, MAX_LIST_DEPTH);
        let entries = self
            .provisioner
            .list_files(&target, root, dir, depth)
            .await
            .map_err(|e| Self::inside_err(&row, e))?;
        Ok(entries
            .into_iter()
            .filter(|e| {
                !dir.join(&e.path)
                    .is_ok_and(|path| is_credential_file(root, &path))
            })
            .collect())
    }

    /// `GET /workspaces/{id}/files/{path}`: the file's bytes, at most
    /// [`InsideConfig::max_file_bytes`].
    pub async fn read_file(
        &self,
        id: WorkspaceId,
        root: FileRoot,
        path: &RelPath,
    ) -> Result<Vec<u8>, InsideFailure> {
        let (row, target) = self.inside_target(id).await?;
        if path.is_root() {
            return Err(InsideFailure::Inside(InsideError::Refused(
                "path is a directory".into(),
            )));
        }
        refuse_credential(root, path)?;
        self.provisioner
            .read_file(&target, root, path, self.config.inside.max_file_bytes)
            .await
            .map_err(|e| Self::inside_err(&row, e))
    }

    /// `PUT /workspaces/{id}/files/{path}` and the bulk `PUT /workspaces/{id}/files`: writes
    /// `files` under `root` (each replaced atomically); under `/configs` also records them for
    /// every later start and schedules a restart of a running workspace.
    pub async fn write_files(
        &self,
        principal: Principal,
        id: WorkspaceId,
        root: FileRoot,
        files: Vec<(RelPath, Vec<u8>)>,
    ) -> Result<FileChange, InsideFailure> {
        let (row, target) = self.inside_target(id).await?;
        let limit = self.config.inside.max_file_bytes;
        for (path, content) in &files {
            if path.is_root() {
                return Err(InsideFailure::Inside(InsideError::Refused(
                    "path is a directory".into(),
                )));
            }
            refuse_credential(root, path)?;
            let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
            if size > limit {
                return Err(InsideFailure::Inside(InsideError::TooLarge { size, limit }));
            }
        }
        let paths: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
        let edits: Vec<ConfigEdit> = if root == FileRoot::Configs {
            files
                .iter()
                .map(|(path, content)| ConfigEdit {
                    path: path.to_string(),
                    content: Some(content.clone()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let live = match self.provisioner.write_files(&target, root, files).await {
            Ok(()) => true,
            // A `/configs` edit of a workspace that does not run waits for its next start.
            Err(InsideError::NotRunning(_)) if root == FileRoot::Configs => false,
            Err(e) => return Err(Self::inside_err(&row, e)),
        };
        let change = self.record_file_change(&row, root, edits, live).await?;
        self.audit_files(principal, id, "write", root, &paths).await;
        Ok(change)
    }

    /// `DELETE /workspaces/{id}/files/{path}`: removes a file, a link or a directory with
    /// everything in it; under `/configs` also for every later start.
    pub async fn delete_file(
        &self,
        principal: Principal,
        id: WorkspaceId,
        root: FileRoot,
        path: &RelPath,
    ) -> Result<FileChange, InsideFailure> {
        let (row, target) = self.inside_target(id).await?;
        if path.is_root() {
            return Err(InsideFailure::Inside(InsideError::Refused(
                "the root itself cannot be deleted".into(),
            )));
        }
        refuse_credential(root, path)?;
        let live = match self.provisioner.delete_file(&target, root, path).await {
            Ok(()) => true,
            Err(InsideError::NotRunning(_)) if root == FileRoot::Configs => false,
            Err(e) => return Err(Self::inside_err(&row, e)),
        };
        let edits = if root == FileRoot::Configs {
            vec![ConfigEdit {
                path: path.to_string(),
                content: None,
            }]
        } else {
            Vec::new()
        };
        let change = self.record_file_change(&row, root, edits, live).await?;
        self.audit_files(principal, id, "delete", root, &[path.to_string()])
            .await;
        Ok(change)
    }

    async fn record_file_change(
        &self,
        row: &Workspace,
        root: FileRoot,
        edits: Vec<ConfigEdit>,
        live: bool,
    ) -> Result<FileChange, InsideFailure> {
        let source = if live { "container" } else { "stored" };
        if root != FileRoot::Configs {
            return Ok(FileChange {
                source,
                restart_scheduled: false,
            });
        }
        self.store
            .record_config_edits(row.id, edits)
            .await
            .map_err(|e| match e {
                berth_store::Error::NotFound => InsideFailure::WorkspaceNotFound,
                e => InsideFailure::Store("failed to record the configs change", e),
            })?;
        // Only a workspace a restart applies to (the restart's own rule) is restarted; a paused,
        // hibernated or stopped one gets the change at its next start.
        let runs = live && Transition::Reprovision.apply(row.status).is_some();
        if runs {
            self.schedule_config_restart(row.id);
        }
        Ok(FileChange {
            source,
            restart_scheduled: runs,
        })
    }

    /// Restarts the workspace [`InsideConfig::config_restart_delay`] after its latest `/configs`
    /// change (each change re-arms the timer). The restart cycle checks the workspace's status
    /// itself when it runs, so one that stopped meanwhile is left alone.
    fn schedule_config_restart(&self, id: WorkspaceId) {
        let generation = {
            let mut gens = lock(&self.inside.restart_generation);
            let g = gens.entry(id).or_insert(0);
            *g += 1;
            *g
        };
        let svc = self.clone();
        let delay = self.config.inside.config_restart_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let mut gens = lock(&svc.inside.restart_generation);
                if gens.get(&id) != Some(&generation) {
                    return;
                }
                gens.remove(&id);
            }
            tracing::info!(workspace.id = %id, "restarting after a change of /configs");
            svc.request_restart(id).await;
        });
    }

    async fn audit_files(
        &self,
        principal: Principal,
        id: WorkspaceId,
        method: &str,
        root: FileRoot,
        paths: &[String],
    ) {
        let shown: Vec<&String> = paths.iter().take(20).collect();
        let entry = ActivityEntry {
            activity_type: "files".into(),
            method: Some(method.into()),
            summary: Some(format!(
                "Files {method}: {} path{} under {root}",
                paths.len(),
                if paths.len() == 1 { "" } else { "s" }
            )),
            request_body: Some(
                json!({"by": who(principal), "root": root.as_str(), "paths": shown, "count": paths.len()}),
            ),
            ..ActivityEntry::default()
        };
        if let Err(e) = self.log_activity(id, entry, Vec::new()).await {
            tracing::warn!(workspace.id = %id, error = %e, "could not record a files change");
        }
    }

    fn host_shell_allowed(&self) -> Result<(), InsideFailure> {
        if self.provisioner.kind() == BackendKind::Process && !self.config.inside.process_shell {
            return Err(InsideFailure::HostShellDisabled);
        }
        Ok(())
    }

    /// `POST /workspaces/{id}/exec`: runs one command to completion or its timeout (at most
    /// [`InsideConfig::exec_max_timeout`]), with bounded output, and records it.
    pub async fn exec(
        &self,
        principal: Principal,
        id: WorkspaceId,
        mut request: ExecRequest,
    ) -> Result<ExecOutput, InsideFailure> {
        if request.cmd.is_empty() || request.cmd[0].is_empty() {
            return Err(InsideFailure::Invalid("cmd must name a program".into()));
        }
        let (row, target) = self.inside_target(id).await?;
        self.host_shell_allowed()?;
        let max = self.config.inside.exec_max_timeout;
        if request.timeout.is_zero() || request.timeout > max {
            request.timeout = max;
        }
        request.output_limit = self.config.inside.exec_output_limit;
        let cmd = request.cmd.clone();
        let clock = Instant::now();
        let result = self.provisioner.exec(&target, request).await;
        let elapsed = clock.elapsed();
        let outcome = match &result {
            Ok(o) if o.timed_out => "timed_out",
            Ok(o) if o.exit_code == Some(0) => "ok",
            Ok(_) => "nonzero",
            Err(_) => "error",
        };
        self.metrics.observe_exec(outcome, elapsed);
        let mut shown: Vec<String> = cmd.iter().take(32).cloned().collect();
        for arg in &mut shown {
            if arg.len() > 256 {
                let cut = berth_domain::redact::truncate_utf8(arg, 256).to_owned();
                *arg = format!("{cut}…");
            }
        }
        let entry = ActivityEntry {
            activity_type: "exec".into(),
            method: Some("exec".into()),
            summary: Some(format!("Exec: {}", shown.join(" ").chars().take(120).collect::<String>())),
            request_body: Some(json!({"by": who(principal), "cmd": shown})),
            response_body: result.as_ref().ok().map(|o| {
                json!({"exit_code": o.exit_code, "timed_out": o.timed_out, "truncated": o.truncated})
            }),
            duration_ms: Some(i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)),
            status: if result.is_ok() { "ok" } else { "error" }.into(),
            error_detail: result.as_ref().err().map(ToString::to_string),
            ..ActivityEntry::default()
        };
        // An exec that ran (or that the backend failed) is recorded; a refused one (a bad
        // working directory, no such program, nothing running) changed nothing and is not.
        if matches!(result, Ok(_) | Err(InsideError::Backend(_)))
            && let Err(e) = self.log_activity(id, entry, Vec::new()).await
        {
            tracing::warn!(workspace.id = %id, error = %e, "could not record an exec");
        }
        result.map_err(|e| Self::inside_err(&row, e))
    }

    /// `GET /workspaces/{id}/terminal`: opens a shell with a TTY and records it. At most
    /// [`InsideConfig::terminal_max_per_workspace`] at once.
    pub async fn open_terminal(
        &self,
        principal: Principal,
        id: WorkspaceId,
        size: TermSize,
    ) -> Result<TerminalSession, InsideFailure> {
        let (row, target) = self.inside_target(id).await?;
        self.host_shell_allowed()?;
        let max = self.config.inside.terminal_max_per_workspace;
        {
            let mut sessions = lock(&self.inside.sessions);
            let n = sessions.entry(id).or_insert(0);
            if *n >= max {
                return Err(InsideFailure::TooManySessions(*n));
            }
            *n += 1;
        }
        self.metrics.terminal_opened();
        // From here the slot is given back when it drops, whatever happens.
        let slot = SessionSlot {
            id,
            service: self.clone(),
        };
        let terminal = self
            .provisioner
            .open_terminal(&target, size)
            .await
            .map_err(|e| Self::inside_err(&row, e))?;
        let entry = ActivityEntry {
            activity_type: "terminal".into(),
            method: Some("open".into()),
            summary: Some("Terminal session opened".into()),
            request_body: Some(json!({"by": who(principal), "rows": size.rows, "cols": size.cols})),
            ..ActivityEntry::default()
        };
        if let Err(e) = self.log_activity(id, entry, Vec::new()).await {
            tracing::warn!(workspace.id = %id, error = %e, "could not record a terminal session");
        }
        Ok(TerminalSession {
            terminal,
            slot,
            opened: Instant::now(),
            principal,
        })
    }

    /// `GET /workspaces/{id}/terminal/diagnose`: each step the terminal takes, until the first
    /// that fails.
    pub async fn terminal_diagnose(&self, id: WorkspaceId) -> Result<Diagnosis, InsideFailure> {
        let mut steps = Vec::new();
        let started = Instant::now();
        let (row, target) = match self.inside_target(id).await {
            Ok(found) => found,
            Err(e @ (InsideFailure::WorkspaceNotFound | InsideFailure::Store(..))) => {
                return Err(e);
            }
            Err(e) => {
                steps.push(Step::failed("workspace", started, e.to_string()));
                return Ok(Diagnosis::of(id, steps));
            }
        };
        steps.push(Step::passed(
            "workspace",
            started,
            format!(
                "status={}, backend={}",
                row.status,
                crate::metrics::backend_label(self.provisioner.kind())
            ),
        ));
        let clock = Instant::now();
        if let Err(e) = self.host_shell_allowed() {
            steps.push(Step::failed("terminal-enabled", clock, e.to_string()));
            return Ok(Diagnosis::of(id, steps));
        }
        steps.push(Step::passed("terminal-enabled", clock, String::new()));
        let clock = Instant::now();
        match self.provisioner.is_running(id).await {
            Ok(true) => steps.push(Step::passed("running", clock, String::new())),
            Ok(false) => {
                steps.push(Step::failed(
                    "running",
                    clock,
                    format!("workspace is {}: nothing runs", row.status),
                ));
                return Ok(Diagnosis::of(id, steps));
            }
            Err(e) => {
                steps.push(Step::failed("running", clock, e.to_string()));
                return Ok(Diagnosis::of(id, steps));
            }
        }
        // The probe: the same exec path as a terminal's shell, bounded.
        let clock = Instant::now();
        let probe = ExecRequest {
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo BERTH_TERMINAL_PROBE_OK".into(),
            ],
            cwd: None,
            env: Vec::new(),
            stdin: Vec::new(),
            timeout: Duration::from_secs(10),
            output_limit: 4096,
        };
        match self.provisioner.exec(&target, probe).await {
            Ok(out)
                if out.exit_code == Some(0)
                    && String::from_utf8_lossy(&out.stdout).contains("BERTH_TERMINAL_PROBE_OK") =>
            {
                steps.push(Step::passed("shell-probe", clock, String::new()));
            }
            Ok(out) => steps.push(Step::failed(
                "shell-probe",
                clock,
                format!(
                    "/bin/sh answered exit code {:?}: {}",
                    out.exit_code,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )),
            Err(e) => steps.push(Step::failed("shell-probe", clock, e.to_string())),
        }
        Ok(Diagnosis::of(id, steps))
    }
}

/// The answer of `GET /workspaces/{id}/terminal/diagnose` (REFERENCE-3.md §2.7, local steps
/// berth's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Whether every step passed.
    pub ok: bool,
    /// The failing step's name.
    pub first_failure: Option<String>,
    /// The steps that ran, in order: every passed one, then the failing one.
    pub steps: Vec<Step>,
}

impl Diagnosis {
    fn of(workspace_id: WorkspaceId, steps: Vec<Step>) -> Self {
        let first_failure = steps.iter().find(|s| !s.ok).map(|s| s.name.to_owned());
        Self {
            workspace_id,
            ok: first_failure.is_none(),
            first_failure,
            steps,
        }
    }
}

/// One step of a [`Diagnosis`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its name.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub duration_ms: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// What it found.
    pub detail: Option<String>,
}

impl Step {
    fn passed(name: &'static str, since: Instant, detail: String) -> Self {
        Self {
            name,
            ok: true,
            duration_ms: i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX),
            error: None,
            detail: (!detail.is_empty()).then_some(detail),
        }
    }

    fn failed(name: &'static str, since: Instant, error: String) -> Self {
        Self {
            name,
            ok: false,
            duration_ms: i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX),
            error: Some(error),
            detail: None,
        }
    }
}

/// Shared handle type for the service field.
pub(crate) type SharedInside = Arc<InsideState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_credentials_at_the_top_of_configs_are_credential_files() {
        let rel = |p: &str| RelPath::parse(p).expect("path");
        for name in CREDENTIAL_FILES {
            assert!(is_credential_file(FileRoot::Configs, &rel(name)));
            assert!(is_credential_file(
                FileRoot::Configs,
                &rel(&format!("./{name}"))
            ));
            assert!(!is_credential_file(FileRoot::Workspace, &rel(name)));
            assert!(!is_credential_file(FileRoot::Home, &rel(name)));
            assert!(!is_credential_file(
                FileRoot::Configs,
                &rel(&format!("sub/{name}"))
            ));
        }
        assert!(!is_credential_file(
            FileRoot::Configs,
            &rel(".auth_token.bak")
        ));
        assert!(!is_credential_file(FileRoot::Configs, &RelPath::root()));
    }
}
