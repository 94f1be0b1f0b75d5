#![doc = include_str!("../README.md")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use secrecy::SecretString;

#[cfg(feature = "control-plane")]
pub mod control_plane;
pub mod inside;
#[cfg(feature = "control-plane")]
pub use control_plane::{ControlPlaneConfig, ControlPlaneProvisioner};
pub use inside::{
    ExecOutput, ExecRequest, FileEntry, FileRoot, InsideError, RelPath, Target, TermSize, Terminal,
    TerminalInput,
};
#[cfg(feature = "docker")]
pub mod docker;
#[cfg(feature = "docker")]
pub use docker::{DockerConfig, DockerProvisioner};
#[cfg(any(feature = "docker", feature = "process"))]
pub mod ports;

/// A client builder for talking to `url`, with rustls' ring provider installed as the process's
/// default TLS crypto provider (once; a provider the embedder installed first is left as it is).
/// reqwest is built with rustls and no provider of its own (`rustls-no-provider`, because
/// reqwest's default, aws-lc, needs cmake to build). An `https://` URL is verified against the
/// system's roots; for a plain `http://` one no roots are loaded (any TLS would fail closed).
pub fn client_builder_for(url: &str) -> reqwest::ClientBuilder {
    install_tls_provider();
    let builder = reqwest::Client::builder();
    if url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        builder
    } else {
        // Plain HTTP needs no roots: without this, building the client fails on a machine with
        // no CA bundle (a minimal container), although it would never speak TLS.
        builder.tls_certs_only(std::iter::empty())
    }
}

/// Installs rustls' ring provider (see [`client_builder_for`] for building clients).
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // rustls 0.23.48 deprecates the ring provider as lacking post-quantum key exchange; it is
        // the provider that builds with this toolchain (aws-lc needs cmake), so it is kept.
        #[allow(deprecated)]
        let ring = rustls::crypto::ring::default_provider();
        // An error means a provider is installed already, which is as good.
        let _ = ring.install_default();
    });
}
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "process")]
pub use process::{ProcessConfig, ProcessProvisioner};

/// Why provisioning failed, with a machine-readable code for each reason (DECISIONS.md §2.16).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No backend is configured.
    #[error(
        "no provisioning backend available — workspace requires either a Docker daemon (self-hosted) or control-plane provisioner (SaaS)"
    )]
    NoBackend,
    /// The runtime has no image (or command) to run.
    #[error("no image for runtime {0:?}")]
    ImageNotFound(String),
    /// Required environment variables are missing.
    #[error("missing required env var{} {}", if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))]
    MissingEnv(Vec<String>),
    /// The backend refused or failed to start the workspace.
    #[error("workspace start failed: {0}")]
    StartFailed(String),
    /// The agent would have no way to reach the platform (e.g. a container on a bridge network
    /// handed a loopback platform URL); the message names the fix.
    #[error("the platform is unreachable from the workspace: {0}")]
    PlatformUnreachable(String),
    /// The backend did not answer in time.
    #[error("provisioning timed out")]
    Timeout,
    /// The backend itself failed (daemon unreachable, control plane 5xx, …).
    #[error("provisioning backend error: {0}")]
    Backend(String),
}

impl Error {
    /// The machine-readable reason carried on the workspace and in the failure event.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NoBackend => "NO_BACKEND",
            Error::ImageNotFound(_) => "IMAGE_NOT_FOUND",
            Error::MissingEnv(_) => "MISSING_ENV",
            Error::StartFailed(_) => "START_FAILED",
            Error::PlatformUnreachable(_) => "PLATFORM_UNREACHABLE",
            Error::Timeout => "TIMEOUT",
            Error::Backend(_) => "BACKEND_ERROR",
        }
    }
}

/// Which kind of backend a provisioner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Nothing can be provisioned.
    None,
    /// Local child processes.
    Process,
    /// The local Docker daemon.
    Docker,
    /// A remote control plane.
    ControlPlane,
}

impl BackendKind {
    /// Whether a start reports the URL the platform reaches the agent at, so a workspace of
    /// this backend is never `online` before that URL is recorded. The control plane's machines
    /// report theirs only when they have a private address, so it does not count.
    pub fn reports_url(self) -> bool {
        matches!(self, BackendKind::Process | BackendKind::Docker)
    }
}

/// Everything a backend needs to start one workspace.
///
/// Each backend adds its own base environment in this order before `env`: `WORKSPACE_ID`,
/// `WORKSPACE_CONFIG_PATH`, `PLATFORM_URL`, `MOLECULE_URL`, `TIER` (REFERENCE.md §5.1.2), plus
/// what the backend itself needs (e.g. the agent's port). The admin credential is never in it.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its display name.
    pub name: String,
    /// Runtime label.
    pub runtime: String,
    /// Tier 1–4.
    pub tier: u8,
    /// Template directory to copy into the configs volume, if any.
    pub template_path: Option<PathBuf>,
    /// Config files (path → content) written over the template: the generated `config.yaml`
    /// when there is no template directory, a bundle's files, the files API's edits.
    pub config_files: BTreeMap<String, Vec<u8>>,
    /// Paths the files API deleted: each (a file, or a directory with everything in it) is
    /// removed from the template's copy before `config_files` are written.
    pub removed_config_files: Vec<String>,
    /// Host directory to mount.
    pub workspace_dir: Option<String>,
    /// `none` / `read_only` / `read_write`.
    pub workspace_access: String,
    /// Canonical compute JSON.
    pub compute: serde_json::Value,
    /// The URL the agent reaches the platform at.
    pub platform_url: String,
    /// Prepared environment (secrets, model, git identity, …), in order; values are secret.
    pub env: Vec<(String, SecretString)>,
    /// Files to write into the configs directory with mode 0600 before start (`.auth_token`,
    /// `.platform_inbound_secret`).
    pub secret_files: Vec<(String, SecretString)>,
}

/// The result of a successful start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The agent's URL as the platform reaches it, when the backend knows it.
    pub url: Option<String>,
    /// Backend instance id (container id, process id, machine id).
    pub instance_id: Option<String>,
}

/// The provisioning port.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Starts the workspace.
    async fn start(&self, request: ProvisionRequest) -> Result<Started, Error>;
    /// Stops the workspace; stopping one that does not run is not an error.
    async fn stop(&self, id: WorkspaceId) -> Result<(), Error>;
    /// Whether the workspace runs. A backend error is an error, never "not running".
    async fn is_running(&self, id: WorkspaceId) -> Result<bool, Error>;

    /// Resolves when the agent of the workspace's latest start exits, with what it said last
    /// (an exit code and the tail of its log); `None` when there is nothing to watch (stopped,
    /// replaced). The core watches a fresh start with it, so an agent that dies before it
    /// registers fails the workspace at once instead of at the provision timeout. Backends
    /// that cannot watch never resolve.
    async fn wait_exit(&self, _id: WorkspaceId) -> Result<Option<String>, Error> {
        std::future::pending().await
    }

    /// The URL of an agent whose start is still under way (the backend knows where the agent
    /// listens before it has watched the start through its grace period); `None` when no start
    /// of `id` is under way here or the backend cannot tell. An agent that registers during its
    /// start's grace is recorded at this URL at once instead of waiting for the grace to end.
    async fn starting_url(&self, _id: WorkspaceId) -> Option<String> {
        None
    }

    /// Removes everything the backend keeps for a stopped workspace (volumes, directories), for
    /// `DELETE …?purge=true`. Nothing to remove is not an error.
    async fn purge(&self, _id: WorkspaceId) -> Result<(), Error> {
        Ok(())
    }

    /// Every workspace the backend currently holds resources for (for the orphan sweeper).
    /// Backends whose resources die with the server (child processes) report none.
    async fn managed(&self) -> Result<Vec<WorkspaceId>, Error> {
        Ok(Vec::new())
    }

    /// The machine console of the workspace (boot log and the like), for
    /// `GET /workspaces/{id}/console`. `None` when the backend keeps no console: only a control
    /// plane does (REFERENCE.md §2.21).
    async fn console(&self, _id: WorkspaceId) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// Lists `dir` beneath `root`, `depth` levels deep (1 = its direct entries), in path order,
    /// without descending into [`inside::LISTING_PRUNED_DIRS`] and without symbolic links,
    /// device files, FIFOs or sockets. A missing `dir` is [`InsideError::NotFound`].
    async fn list_files(
        &self,
        _target: &Target,
        _root: FileRoot,
        _dir: &RelPath,
        _depth: u8,
    ) -> Result<Vec<FileEntry>, InsideError> {
        Err(no_way_in(self.kind()))
    }

    /// Reads the regular file `path` beneath `root`, whole: [`InsideError::TooLarge`] when it
    /// is over `limit` bytes, [`InsideError::Refused`] for a directory, a device file or a path
    /// through a symbolic link.
    async fn read_file(
        &self,
        _target: &Target,
        _root: FileRoot,
        _path: &RelPath,
        _limit: u64,
    ) -> Result<Vec<u8>, InsideError> {
        Err(no_way_in(self.kind()))
    }

    /// Writes each file beneath `root`, creating missing parent directories, each replaced
    /// atomically (a temporary file renamed over it), owned by the agent's user. A path whose
    /// existing parent is a symbolic link or a file is refused; the files are written in order
    /// and the first failure stops the rest.
    async fn write_files(
        &self,
        _target: &Target,
        _root: FileRoot,
        _files: Vec<(RelPath, Vec<u8>)>,
    ) -> Result<(), InsideError> {
        Err(no_way_in(self.kind()))
    }

    /// Deletes `path` beneath `root`: a file or a symbolic link itself, or a directory with
    /// everything in it. Missing is [`InsideError::NotFound`]; the root itself is refused.
    async fn delete_file(
        &self,
        _target: &Target,
        _root: FileRoot,
        _path: &RelPath,
    ) -> Result<(), InsideError> {
        Err(no_way_in(self.kind()))
    }

    /// Runs one command to completion (or its timeout) as the agent's user, with bounded
    /// output; on a timeout the command and everything it started are killed.
    async fn exec(
        &self,
        _target: &Target,
        _request: ExecRequest,
    ) -> Result<ExecOutput, InsideError> {
        Err(no_way_in(self.kind()))
    }

    /// Opens an interactive shell with a TTY of `size`, as the agent's user, in the workspace
    /// directory (see [`Terminal`] for how it ends).
    async fn open_terminal(
        &self,
        _target: &Target,
        _size: TermSize,
    ) -> Result<Terminal, InsideError> {
        Err(no_way_in(self.kind()))
    }
}

/// The refusal of the [`Provisioner`]'s default `list_files`, `exec`, … for a backend of `kind`.
pub fn no_way_in(kind: BackendKind) -> InsideError {
    match kind {
        BackendKind::ControlPlane => InsideError::Unsupported(
            "the control plane has no API for a workspace's files, commands or terminal".to_owned(),
        ),
        BackendKind::None => InsideError::Unsupported(
            "no provisioning backend is configured, so there is no workspace to look into"
                .to_owned(),
        ),
        _ => InsideError::Unsupported("this backend cannot look inside a workspace".to_owned()),
    }
}

/// The provisioner used when no backend is configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBackend;

#[async_trait]
impl Provisioner for NoBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::None
    }

    async fn start(&self, _request: ProvisionRequest) -> Result<Started, Error> {
        Err(Error::NoBackend)
    }

    async fn stop(&self, _id: WorkspaceId) -> Result<(), Error> {
        Ok(())
    }

    async fn is_running(&self, _id: WorkspaceId) -> Result<bool, Error> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_backend_refuses_with_the_reference_reason() {
        let p = NoBackend;
        let req = ProvisionRequest {
            workspace_id: WorkspaceId::new_v4(),
            name: "n".into(),
            runtime: "claude-code".into(),
            tier: 3,
            template_path: None,
            config_files: BTreeMap::new(),
            removed_config_files: vec![],
            workspace_dir: None,
            workspace_access: "none".into(),
            compute: serde_json::json!({}),
            platform_url: "http://127.0.0.1:8080".into(),
            env: vec![],
            secret_files: vec![],
        };
        let err = p.start(req).await.unwrap_err();
        assert_eq!(err.code(), "NO_BACKEND");
        assert!(
            err.to_string()
                .starts_with("no provisioning backend available")
        );
        assert!(!p.is_running(WorkspaceId::new_v4()).await.unwrap());
        assert_eq!(p.kind(), BackendKind::None);
    }

    #[test]
    fn missing_env_message_names_every_key() {
        assert_eq!(
            Error::MissingEnv(vec!["A".into()]).to_string(),
            "missing required env var \"A\""
        );
        assert_eq!(
            Error::MissingEnv(vec!["A".into(), "B".into()]).to_string(),
            "missing required env vars \"A\", \"B\""
        );
    }
}
