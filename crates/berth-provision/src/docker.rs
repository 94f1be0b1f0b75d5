//! The Docker provisioner: each workspace is a container of the local Docker Engine, driven through
//! its API over the unix socket (`bollard`).
//!
//! This is the self-hosted backend of REFERENCE.md §5.1, with the fixes of DECISIONS.md §2: full
//! UUIDs in every name (§12 #76), the admin credential never in a container, SCM write tokens
//! stripped with no re-add or alias (§12 #65), a usable URL in host-network mode (§12 #71), and
//! every volume removable on delete. Per workspace `<uuid>`:
//!
//! ```text
//! container  berth-ws-<uuid>             restart policy unless-stopped, hostname/alias berth-ws-<uuid>
//! volume     berth-ws-<uuid>-configs     mounted at /configs (WORKSPACE_CONFIG_PATH), filled before start
//! volume     berth-ws-<uuid>-workspace   mounted at /workspace when workspace_access is `none`
//! labels     berth.managed=true, berth.workspace_id=<uuid>,   on the container and both volumes
//!            berth.installation=<installation id>
//! ```
//!
//! The installation label scopes the orphan sweep ([`DockerProvisioner::list_managed`]): it
//! reports only this installation's containers, so two berth installations (two databases) on
//! one daemon never purge each other's. Containers of a berth from before installation labels
//! are left alone too (and named in a warning, once).
//!
//! The agent gets the same environment contract as a process-provisioned one (see `process.rs`),
//! with container paths: `WORKSPACE_CONFIG_PATH=/configs`, `AGENT_HOST=0.0.0.0`, `AGENT_PORT=8000`
//! and `AGENT_URL=http://berth-ws-<uuid>:8000` (its name on the configured network). Port `8000/tcp`
//! is published on `127.0.0.1:<ephemeral>`, and the URL the server gets back is that loopback
//! address. In host-network mode (tier 4) nothing is published: the agent binds a free loopback
//! port of the host (`AGENT_HOST=127.0.0.1`, so a host-network agent is not reachable from the
//! LAN) and that is the URL.
//!
//! Tiers (REFERENCE.md §1.4), each tier's memory and CPU overridable ([`DockerConfig::tier_overrides`]):
//!
//! | tier | effect |
//! |---|---|
//! | 1 | only `/configs` mounted, read-only root fs, tmpfs `/tmp` (`rw,noexec,nosuid,size=64m`), no caps |
//! | 2 (and 0/unknown) | 512 MiB, 1 CPU |
//! | 3 | privileged, host PID, 2048 MiB, 2 CPUs, stays on the network |
//! | 4 | privileged, host PID, host network, the Docker socket mounted, 4096 MiB, 4 CPUs |
//!
//! CPU shares become a hard cap: `NanoCpus = shares × 10⁹ / 1024`, at most the daemon host's CPU
//! count (the daemon refuses more, which would fail every tier-4 start on a small host).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    HostConfig, Mount, MountType, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptions,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker, body_full};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};

mod inside;

use crate::ports::{PortPool, START_ATTEMPTS, is_address_in_use};
use crate::{BackendKind, Error, ProvisionRequest, Provisioner, Started};

/// Label on every container and volume berth creates, for the orphan sweeper.
pub const LABEL_MANAGED: &str = "berth.managed";
/// Label carrying the owning workspace's id.
pub const LABEL_WORKSPACE_ID: &str = "berth.workspace_id";
/// Label carrying the id of the berth installation (its database) that created the resource.
pub const LABEL_INSTALLATION: &str = "berth.installation";

/// Prepared variables never handed to a container: SCM write tokens (stripped strictly, REFERENCE.md
/// §12 #65) and the admin credential (DECISIONS.md §2.1), whatever put them there.
const STRIPPED_VARS: [&str; 7] = [
    "GITEA_TOKEN",
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "GITLAB_TOKEN",
    "GL_TOKEN",
    "BITBUCKET_TOKEN",
    "ADMIN_TOKEN",
];

/// Where the configs volume is mounted (`WORKSPACE_CONFIG_PATH`).
const CONFIGS_DIR: &str = "/configs";
/// Where the workspace volume or shared directory is mounted.
const WORKSPACE_DIR: &str = "/workspace";
/// The agent's port inside its own network namespace.
const AGENT_PORT: u16 = 8000;
/// The owner of everything written into `/configs`: the agent user of berth images.
const AGENT_UID: u64 = 1000;
/// How much of a crashed container's log a start failure quotes.
const LOG_TAIL_BYTES: usize = 2048;
/// Inspections for the published port after start, and the pause between them.
const PORT_LOOKUPS: u32 = 3;
const PORT_LOOKUP_PAUSE: Duration = Duration::from_millis(500);
/// How often the start grace looks at a fresh container.
const GRACE_POLL: Duration = Duration::from_millis(100);
/// Bound on connecting (version negotiation and ping), so `berth serve` decides quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading a crashed container's log.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);
const MIB: i64 = 1024 * 1024;

/// Memory and CPU of one tier; `None` keeps the tier's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TierResources {
    /// Memory limit in MiB (`TIER<n>_MEMORY_MB`).
    pub memory_mb: Option<u64>,
    /// CPU shares, 1024 per CPU (`TIER<n>_CPU_SHARES`); applied as a hard cap.
    pub cpu_shares: Option<u64>,
}

/// Settings of the Docker provisioner.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// The daemon's unix socket (a `unix://` prefix is accepted).
    pub socket: String,
    /// Runtime name → image reference; a runtime without one cannot be provisioned.
    pub images: HashMap<String, String>,
    /// A user-defined bridge network every (non-host-network) container joins, with alias
    /// `berth-ws-<uuid>`; `None` uses the daemon's default bridge.
    pub network: Option<String>,
    /// Per-tier memory/CPU overrides (tier number → resources).
    pub tier_overrides: HashMap<u8, TierResources>,
    /// How long a fresh container is watched for an exit (or a restart), which fails the start.
    pub start_grace: Duration,
    /// Upper bound on pulling a missing image; past it the start fails with `IMAGE_NOT_FOUND`.
    pub pull_timeout: Duration,
    /// Timeout of each Docker API request.
    pub request_timeout: Duration,
    /// How long `stop` lets the agent drain after SIGTERM (`docker stop -t`) before the daemon
    /// sends SIGKILL. Kept below [`DockerConfig::request_timeout`].
    pub stop_grace: Duration,
    /// The installation id written into [`LABEL_INSTALLATION`] of everything created, and the
    /// only one whose containers [`DockerProvisioner::list_managed`] reports. `berth serve` sets
    /// the store's (`WorkspaceStore::installation_id`); the default is a fresh random id, so a
    /// provisioner that is not told never sweeps another's containers.
    pub installation: String,
    /// The platform URL handed to containers that are not on the host network, when the URL of
    /// the request is a loopback one (which a container on a bridge cannot reach): `berth serve`
    /// sets it to an address of the platform on the bridge's gateway (see its `--listen`
    /// handling). `None` with a loopback platform URL fails such starts at once with
    /// `PLATFORM_UNREACHABLE` and the flags that fix it.
    pub bridge_platform_url: Option<String>,
}

impl DockerConfig {
    /// Default for [`DockerConfig::socket`].
    pub const DEFAULT_SOCKET: &'static str = "/var/run/docker.sock";
    /// Default for [`DockerConfig::start_grace`].
    pub const DEFAULT_START_GRACE: Duration = Duration::from_secs(1);
    /// Default for [`DockerConfig::pull_timeout`].
    pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default for [`DockerConfig::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default for [`DockerConfig::stop_grace`] (as the process provisioner's).
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

    /// The default socket, no images, no network, no overrides and the default timeouts.
    pub fn new() -> Self {
        Self {
            socket: Self::DEFAULT_SOCKET.to_owned(),
            images: HashMap::new(),
            network: None,
            tier_overrides: HashMap::new(),
            start_grace: Self::DEFAULT_START_GRACE,
            pull_timeout: Self::DEFAULT_PULL_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            // A fresh v4 UUID (the workspace id type is one).
            installation: WorkspaceId::new_v4().to_string(),
            bridge_platform_url: None,
        }
    }

    /// Adds (or replaces) the image of `runtime`.
    pub fn with_image(mut self, runtime: impl Into<String>, image: impl Into<String>) -> Self {
        self.images.insert(runtime.into(), image.into());
        self
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The name of a workspace's container: `berth-ws-<uuid>`.
pub fn container_name(id: WorkspaceId) -> String {
    format!("berth-ws-{id}")
}

/// The name of a workspace's configs volume: `berth-ws-<uuid>-configs`.
pub fn configs_volume(id: WorkspaceId) -> String {
    format!("berth-ws-{id}-configs")
}

/// The name of a workspace's isolated workspace volume: `berth-ws-<uuid>-workspace`.
pub fn workspace_volume(id: WorkspaceId) -> String {
    format!("berth-ws-{id}-workspace")
}

/// Runs each workspace as a container of the local Docker Engine (see the module docs).
#[derive(Debug)]
pub struct DockerProvisioner {
    docker: Docker,
    config: DockerConfig,
    /// The daemon host's CPUs in NanoCPUs: the daemon refuses a larger cap, so tiers are
    /// clamped to it (a tier-4 workspace on a 2-CPU host gets 2 CPUs, not a failed start).
    host_nano_cpus: Option<i64>,
    /// Whether the containers without an installation label were reported already (once).
    unlabelled_reported: std::sync::atomic::AtomicBool,
    /// Host ports of host-network agents (see `ports.rs`), and which workspace holds which.
    ports: PortPool,
    host_ports: std::sync::Mutex<HashMap<WorkspaceId, u16>>,
    /// The URLs of agents whose start is in its grace period (`Provisioner::starting_url`).
    starting: crate::ports::StartingUrls,
}

impl DockerProvisioner {
    /// Connects to the daemon at `config.socket` and pings it, so a server can choose Docker when,
    /// and only when, a daemon answers. The API version is negotiated down to the daemon's.
    pub async fn connect(config: DockerConfig) -> Result<Self, Error> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::Backend(format!(
                "docker daemon at {} not reachable: {e}",
                config.socket
            ))
        };
        let timeout_secs = config.request_timeout.as_secs().max(1);
        let docker = Docker::connect_with_unix(&config.socket, timeout_secs, API_DEFAULT_VERSION)
            .map_err(|e| unreachable(&e))?;
        let (docker, info) = tokio::time::timeout(CONNECT_TIMEOUT, async move {
            let docker = docker.negotiate_version().await?;
            docker.ping().await?;
            let info = docker.info().await;
            Ok::<_, DockerError>((docker, info))
        })
        .await
        .map_err(|_| unreachable(&"no answer in time"))?
        .map_err(|e| unreachable(&e))?;
        let host_nano_cpus = match info {
            Ok(info) => info
                .ncpu
                .filter(|n| *n > 0)
                .map(|n| n.saturating_mul(1_000_000_000)),
            Err(e) => {
                tracing::warn!(error = %e, "docker info failed; CPU caps are not clamped");
                None
            }
        };
        tracing::info!(socket = %config.socket, "connected to the docker daemon");
        tracing::info!(installation = %config.installation, "docker resources are labelled {LABEL_INSTALLATION}");
        Ok(Self {
            docker,
            config,
            host_nano_cpus,
            unlabelled_reported: std::sync::atomic::AtomicBool::new(false),
            ports: PortPool::new(),
            host_ports: std::sync::Mutex::new(HashMap::new()),
            starting: Default::default(),
        })
    }

    /// The gateway address of the daemon's default bridge network (`docker0`, usually
    /// `172.17.0.1`): an address of this host that containers on a bridge can reach. `None`
    /// when the daemon reports none.
    pub async fn bridge_gateway(&self) -> Result<Option<std::net::IpAddr>, Error> {
        let network = self
            .docker
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| backend("inspecting the default bridge network", e))?;
        let configs = network
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default();
        // Some daemons report only the subnet; the bridge's gateway is then its first address.
        Ok(configs
            .iter()
            .filter_map(|c| c.gateway.as_deref())
            .find_map(|g| g.parse().ok())
            .or_else(|| {
                configs
                    .iter()
                    .filter_map(|c| c.subnet.as_deref())
                    .find_map(first_host_of)
            }))
    }

    /// Hands the host port of `id`'s host-network agent back, if it had one.
    fn release_host_port(&self, id: WorkspaceId) {
        let port = self
            .host_ports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
        if let Some(port) = port {
            self.ports.release(port);
        }
    }

    /// The platform URL a container of `profile` is handed: the request's, except that a
    /// loopback one becomes [`DockerConfig::bridge_platform_url`] off the host network.
    fn container_platform_url(
        &self,
        request: &ProvisionRequest,
        host_network: bool,
    ) -> Result<String, Error> {
        if host_network || !is_loopback_url(&request.platform_url) {
            return Ok(request.platform_url.clone());
        }
        self.config.bridge_platform_url.clone().ok_or_else(|| {
            Error::PlatformUnreachable(format!(
                "the platform URL {} is a loopback address, which a container on a bridge network \
                 cannot reach, and berth has no address on the bridge; listen on an address the \
                 containers can reach (--listen 0.0.0.0:8080) or give one (--platform-url \
                 http://<host address>:8080), attach the containers to your own network \
                 (--docker-network), or use tier 4 (host network)",
                request.platform_url
            ))
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Sets [`DockerConfig::bridge_platform_url`] once connected (the server learns the
    /// bridge's gateway from the daemon).
    pub fn set_bridge_platform_url(&mut self, url: impl Into<String>) {
        self.config.bridge_platform_url = Some(url.into());
    }

    /// Removes the workspace's configs and workspace volumes; volumes that do not exist are fine.
    /// The container must be gone first ([`Provisioner::stop`]): a volume in use is an error.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    pub async fn remove_volumes(&self, id: WorkspaceId) -> Result<(), Error> {
        self.remove_volumes_named(&[configs_volume(id), workspace_volume(id)])
            .await
    }

    async fn remove_volumes_named(&self, volumes: &[String]) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        for volume in volumes {
            loop {
                match self
                    .docker
                    .remove_volume(volume, None::<RemoveVolumeOptions>)
                    .await
                {
                    Ok(()) => tracing::info!(volume, "volume removed"),
                    Err(e) if is_not_found(&e) => {}
                    // In use: a container holding it is still being removed (by a concurrent stop
                    // or a failed start's cleanup); retried until that removal ends.
                    Err(DockerError::DockerResponseServerError {
                        status_code: 409, ..
                    }) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(REMOVAL_POLL).await;
                        continue;
                    }
                    Err(e) => return Err(backend(&format!("removing volume {volume}"), e)),
                }
                break;
            }
        }
        Ok(())
    }

    /// The workspaces that have a berth-managed container (running or not) of this installation
    /// ([`DockerConfig::installation`]), for the orphan sweeper. Containers of other
    /// installations are left out, and so are containers without an installation label (made
    /// by a berth from before the label; the first listing names them in a warning, as they are
    /// for an operator to remove), and those whose id label is missing or malformed.
    pub async fn list_managed(&self) -> Result<Vec<WorkspaceId>, Error> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_MANAGED}=true")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| backend("listing containers", e))?;
        let mut ids = BTreeSet::new();
        let mut unlabelled = Vec::new();
        for c in &containers {
            let Some(labels) = c.labels.as_ref() else {
                continue;
            };
            match labels.get(LABEL_INSTALLATION) {
                Some(owner) if *owner == self.config.installation => {}
                Some(_) => continue,
                None => {
                    let name = c.names.as_ref().and_then(|n| n.first()).map_or_else(
                        || c.id.clone().unwrap_or_default(),
                        |n| n.trim_start_matches('/').to_owned(),
                    );
                    unlabelled.push(name);
                    continue;
                }
            }
            if let Some(id) = labels
                .get(LABEL_WORKSPACE_ID)
                .and_then(|id| WorkspaceId::parse(id).ok())
            {
                ids.insert(id);
            }
        }
        if !unlabelled.is_empty()
            && !self
                .unlabelled_reported
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                count = unlabelled.len(),
                containers = ?unlabelled,
                "berth containers without a {LABEL_INSTALLATION} label (made before installation \
                 ids) are left alone by the orphan sweep; remove the ones no berth uses by hand"
            );
        }
        Ok(ids.into_iter().collect())
    }

    fn image_for(&self, runtime: &str) -> Result<&str, Error> {
        match self.config.images.get(runtime) {
            Some(image) if !image.trim().is_empty() => Ok(image),
            _ => Err(Error::ImageNotFound(runtime.to_owned())),
        }
    }

    /// Makes sure `image` is present, pulling it (bounded by the pull timeout) when it is not.
    async fn ensure_image(&self, runtime: &str, image: &str) -> Result<(), Error> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(backend(&format!("inspecting image {image}"), e)),
        }
        tracing::info!(image, "image not present locally; pulling it");
        let reference = with_default_tag(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(&reference)
            .build();
        let pull = self
            .docker
            .create_image(Some(options), None, None)
            .try_for_each(|_progress| async { Ok(()) });
        let missing = |why: String| {
            Error::ImageNotFound(format!(
                "{runtime} (image {image} is not present locally and {why})"
            ))
        };
        match tokio::time::timeout(self.config.pull_timeout, pull).await {
            Ok(Ok(())) => {
                tracing::info!(image, "image pulled");
                Ok(())
            }
            Ok(Err(e)) => Err(missing(format!(
                "pulling it failed: {}",
                daemon_message(&e)
            ))),
            Err(_) => Err(missing(format!(
                "pulling it did not finish within {:?}",
                self.config.pull_timeout
            ))),
        }
    }

    /// Creates (or reuses) a labelled volume.
    async fn create_volume(&self, id: WorkspaceId, name: &str) -> Result<(), Error> {
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels(id, &self.config.installation)),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(drop)
            .map_err(|e| start_failed(&format!("creating volume {name}"), e))
    }

    /// Force-removes a container; one that does not exist, or is being removed already, is fine.
    async fn remove_container(&self, name: &str) -> Result<(), Error> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Another caller is removing it: wait until it is gone, so what follows (a purge
            // removing the volumes, a start re-using the name) does not meet it half-removed.
            Err(DockerError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => {
                let deadline = tokio::time::Instant::now() + self.config.request_timeout;
                loop {
                    match self.docker.inspect_container(name, None).await {
                        Err(e) if is_not_found(&e) => return Ok(()),
                        _ if tokio::time::Instant::now() >= deadline => {
                            return Err(Error::Backend(format!(
                                "removing container {name}: still being removed after {:?}",
                                self.config.request_timeout
                            )));
                        }
                        _ => tokio::time::sleep(REMOVAL_POLL).await,
                    }
                }
            }
            Err(e) => Err(backend(&format!("removing container {name}"), e)),
        }
    }

    /// `docker stop -t <stop grace>`: SIGTERM, then SIGKILL once the grace is over. A manual
    /// stop is not undone by the restart policy. Failures are only logged: the force-removal
    /// that follows kills whatever is left.
    async fn stop_container(&self, name: &str) {
        let grace = self.config.stop_grace.min(
            self.config
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        );
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
            .build();
        match self.docker.stop_container(name, Some(options)).await {
            Ok(()) => tracing::info!(container = name, "container stopped"),
            // Gone already, or not running (304).
            Err(e) if is_not_found(&e) => {}
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => {
                tracing::warn!(container = name, error = %e, "graceful stop failed; removing by force");
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInspectResponse, Error> {
        self.docker
            .inspect_container(name, None)
            .await
            .map_err(|e| backend(&format!("inspecting container {name}"), e))
    }

    /// Fills `/configs`, starts the container, watches it through the start grace and finds its
    /// URL. The caller removes the container when this fails.
    async fn upload_and_start(
        &self,
        id: WorkspaceId,
        name: &str,
        archive: Vec<u8>,
        agent: &AgentAddr,
    ) -> Result<Option<String>, Error> {
        let options = UploadToContainerOptionsBuilder::new()
            .path(CONFIGS_DIR)
            .build();
        self.docker
            .upload_to_container(name, Some(options), body_full(archive.into()))
            .await
            .map_err(|e| start_failed(&format!("writing {CONFIGS_DIR}"), e))?;

        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| start_failed(&format!("starting container {name}"), e))?;
        // Where the agent listens is known before the grace is over (a host-network agent's
        // port, else the port the daemon published): an agent that registers meanwhile is
        // recorded there at once (`Provisioner::starting_url`).
        let early = if agent.host_network {
            Some(agent.url.clone())
        } else {
            self.inspect(name)
                .await
                .ok()
                .and_then(|info| published_port(&info))
                .map(|port| format!("http://127.0.0.1:{port}"))
        };
        if let Some(url) = early {
            self.starting.insert(id, url);
        }

        let mut info = self.watch_start_grace(name).await?;
        if agent.host_network {
            return Ok(Some(agent.url.clone()));
        }
        for lookup in 1..=PORT_LOOKUPS {
            if let Some(port) = published_port(&info) {
                return Ok(Some(format!("http://127.0.0.1:{port}")));
            }
            if lookup < PORT_LOOKUPS {
                tokio::time::sleep(PORT_LOOKUP_PAUSE).await;
                info = self.inspect(name).await?;
            }
        }
        // The reference falls back to the internal URL, which only a platform on the same
        // network can resolve; without a network there is nothing better to offer.
        tracing::warn!(container = name, "no published port found for 8000/tcp");
        Ok(self.config.network.as_ref().map(|_| agent.url.clone()))
    }

    /// Looks at the fresh container until the start grace is over; an exit or a restart (the
    /// restart policy brings a crashing agent back) fails the start with the log's tail.
    async fn watch_start_grace(&self, name: &str) -> Result<ContainerInspectResponse, Error> {
        let deadline = tokio::time::Instant::now() + self.config.start_grace;
        loop {
            let info = self.inspect(name).await?;
            let state = info.state.clone().unwrap_or_default();
            let restarts = info.restart_count.unwrap_or(0);
            if state.status != Some(ContainerStateStatusEnum::RUNNING) || restarts > 0 {
                let how = match state.exit_code {
                    Some(code) if restarts > 0 => {
                        format!("exited at once (exit code {code}, restarts: {restarts})")
                    }
                    Some(code) => format!("exited at once (exit code {code})"),
                    None => "exited at once".to_owned(),
                };
                let tail = self.log_tail(name).await;
                return Err(Error::StartFailed(format!(
                    "container {name} {how}; last output:\n{tail}"
                )));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(info);
            }
            tokio::time::sleep(GRACE_POLL.min(deadline - now)).await;
        }
    }

    /// The last `LOG_TAIL_BYTES` of the container's stdout and stderr, as text.
    async fn log_tail(&self, name: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("200")
            .build();
        let collect = self.docker.logs(name, Some(options)).try_fold(
            Vec::new(),
            |mut all, chunk| async move {
                all.extend_from_slice(&chunk.into_bytes());
                Ok(all)
            },
        );
        match tokio::time::timeout(LOG_TIMEOUT, collect).await {
            Ok(Ok(bytes)) => {
                let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
                String::from_utf8_lossy(&bytes[start..]).into_owned()
            }
            Ok(Err(e)) => format!("<log unreadable: {e}>"),
            Err(_) => "<log unreadable: timed out>".to_owned(),
        }
    }
}

#[async_trait]
impl Provisioner for DockerProvisioner {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn starting_url(&self, id: WorkspaceId) -> Option<String> {
        self.starting.get(id)
    }

    async fn managed(&self) -> Result<Vec<WorkspaceId>, Error> {
        self.list_managed().await
    }

    #[tracing::instrument(skip_all, fields(workspace.id = %request.workspace_id, runtime = %request.runtime))]
    async fn start(&self, request: ProvisionRequest) -> Result<Started, Error> {
        let id = request.workspace_id;
        let name = container_name(id);
        let image = self.image_for(&request.runtime)?.to_owned();

        // Everything the request alone decides is checked before anything is created.
        let profile = TierProfile::of(request.tier, &self.config.tier_overrides);
        let workspace = workspace_mount(&request, profile)?;
        let mut request = request;
        request.platform_url = self.container_platform_url(&request, profile.host_network)?;
        let archive = {
            let template = request.template_path.clone();
            let config_files = request.config_files.clone();
            let secret_files = request.secret_files.clone();
            let removed = request.removed_config_files.clone();
            tokio::task::spawn_blocking(move || {
                configs_archive(template.as_deref(), &removed, &config_files, &secret_files)
            })
            .await
            .map_err(|e| Error::Backend(format!("preparing {CONFIGS_DIR}: {e}")))??
        };

        self.ensure_image(&request.runtime, &image).await?;
        self.release_host_port(id);
        // A host-network agent binds a host port reserved below the ephemeral range; should
        // something else still have bound it, the start is tried again on another (`ports.rs`).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let agent = if profile.host_network {
                let port = self.ports.reserve()?;
                AgentAddr {
                    host_network: true,
                    host: "127.0.0.1",
                    port,
                    url: format!("http://127.0.0.1:{port}"),
                }
            } else {
                AgentAddr {
                    host_network: false,
                    host: "0.0.0.0",
                    port: AGENT_PORT,
                    url: format!("http://{name}:{AGENT_PORT}"),
                }
            };
            let started = self
                .start_container(
                    id,
                    &request,
                    &image,
                    profile,
                    &workspace,
                    &agent,
                    archive.clone(),
                )
                .await;
            match started {
                Ok(started) => {
                    if agent.host_network {
                        self.host_ports
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(id, agent.port);
                    }
                    return Ok(started);
                }
                Err(e) => {
                    if agent.host_network {
                        self.ports.release(agent.port);
                    }
                    let retry = agent.host_network
                        && matches!(&e, Error::StartFailed(msg) if is_address_in_use(msg));
                    if retry && attempt < START_ATTEMPTS {
                        tracing::warn!(
                            port = agent.port,
                            attempt,
                            "agent port was taken; starting again on another"
                        );
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The graceful stop: SIGTERM, up to the stop grace for the agent to finish what it is
    /// doing and exit, then SIGKILL (`docker stop -t`); then the container is removed.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    async fn stop(&self, id: WorkspaceId) -> Result<(), Error> {
        let name = container_name(id);
        self.stop_container(&name).await;
        self.release_host_port(id);
        self.remove_container(&name).await
    }

    /// Removes the container if it is still there, then both volumes.
    #[tracing::instrument(skip_all, fields(workspace.id = %id))]
    async fn purge(&self, id: WorkspaceId) -> Result<(), Error> {
        self.remove_container(&container_name(id)).await?;
        self.release_host_port(id);
        self.remove_volumes(id).await
    }

    /// Waits for the container to stop (`docker wait`; with the restart policy the daemon
    /// starts it again, but the exit is the news), then quotes its log. A container that is
    /// removed meanwhile (a stop, a restart) ends the watch with `None`.
    async fn wait_exit(&self, id: WorkspaceId) -> Result<Option<String>, Error> {
        let name = container_name(id);
        let Ok(before) = self.docker.inspect_container(&name, None).await else {
            return Ok(None);
        };
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        // The wait stream ends with an error for a non-zero exit; either way the container
        // stopped, unless it is gone or was replaced by a newer start's container.
        let waited = self
            .docker
            .wait_container(&name, Some(options))
            .try_next()
            .await;
        let code = match waited {
            Ok(Some(answer)) => Some(answer.status_code),
            Ok(None) => None,
            Err(DockerError::DockerContainerWaitError { code, .. }) => Some(code),
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(backend(&format!("waiting for container {name}"), e)),
        };
        match self.docker.inspect_container(&name, None).await {
            Ok(now) if now.id == before.id => {}
            _ => return Ok(None),
        }
        let tail = self.log_tail(&name).await;
        let how = code.map_or_else(|| "exited".to_owned(), |c| format!("exited with code {c}"));
        Ok(Some(format!(
            "container {name} {how}; last output:\n{tail}"
        )))
    }

    async fn is_running(&self, id: WorkspaceId) -> Result<bool, Error> {
        let name = container_name(id);
        match self.docker.inspect_container(&name, None).await {
            Ok(info) => {
                let status = info.state.and_then(|s| s.status);
                Ok(status == Some(ContainerStateStatusEnum::RUNNING))
            }
            Err(e) if is_not_found(&e) => Ok(false),
            // A daemon hiccup is not the death of the workspace.
            Err(e) => Err(backend(&format!("inspecting container {name}"), e)),
        }
    }

    async fn list_files(
        &self,
        target: &crate::Target,
        root: crate::FileRoot,
        dir: &crate::RelPath,
        depth: u8,
    ) -> Result<Vec<crate::FileEntry>, crate::InsideError> {
        inside::list_files(self, target, root, dir, depth).await
    }

    async fn read_file(
        &self,
        target: &crate::Target,
        root: crate::FileRoot,
        path: &crate::RelPath,
        limit: u64,
    ) -> Result<Vec<u8>, crate::InsideError> {
        inside::read_file(self, target, root, path, limit).await
    }

    async fn write_files(
        &self,
        target: &crate::Target,
        root: crate::FileRoot,
        files: Vec<(crate::RelPath, Vec<u8>)>,
    ) -> Result<(), crate::InsideError> {
        inside::write_files(self, target, root, files).await
    }

    async fn delete_file(
        &self,
        target: &crate::Target,
        root: crate::FileRoot,
        path: &crate::RelPath,
    ) -> Result<(), crate::InsideError> {
        inside::delete_file(self, target, root, path).await
    }

    async fn exec(
        &self,
        target: &crate::Target,
        request: crate::ExecRequest,
    ) -> Result<crate::ExecOutput, crate::InsideError> {
        inside::exec(self, target, request).await
    }

    async fn open_terminal(
        &self,
        target: &crate::Target,
        size: crate::TermSize,
    ) -> Result<crate::Terminal, crate::InsideError> {
        inside::open_terminal(self, target, size).await
    }
}

impl DockerProvisioner {
    /// One try of a start: replaces the container (and the configs volume), fills `/configs`,
    /// starts it and watches it through the start grace. A failed try removes its container.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        id: WorkspaceId,
        request: &ProvisionRequest,
        image: &str,
        profile: TierProfile,
        workspace: &WorkspaceMount,
        agent: &AgentAddr,
        archive: Vec<u8>,
    ) -> Result<Started, Error> {
        let name = container_name(id);
        let env = container_env(request, agent)?;
        // A restart replaces the container. `/configs` is derived state: it is rebuilt from
        // scratch on every start (template, generated config, secrets), as the process backend
        // does, so a file of an earlier template or config never lingers. The workspace volume
        // (the agent's own files) stays.
        self.remove_container(&name).await?;
        self.remove_volumes_named(&[configs_volume(id)]).await?;
        self.create_volume(id, &configs_volume(id)).await?;
        if matches!(workspace, WorkspaceMount::Volume) {
            self.create_volume(id, &workspace_volume(id)).await?;
        }

        let body = self.container_body(id, image, env, profile, workspace, agent);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| start_failed(&format!("creating container {name}"), e))?;

        let started = self.upload_and_start(id, &name, archive, agent).await;
        self.starting.remove(id);
        match started {
            Ok(url) => {
                tracing::info!(
                    container.id = %created.id,
                    agent.url = url.as_deref().unwrap_or("-"),
                    tier = request.tier,
                    "workspace container started"
                );
                Ok(Started {
                    url,
                    instance_id: Some(created.id),
                })
            }
            Err(e) => {
                if let Err(cleanup) = self.remove_container(&name).await {
                    tracing::warn!(error = %cleanup, "could not remove the failed container");
                }
                Err(e)
            }
        }
    }

    fn container_body(
        &self,
        id: WorkspaceId,
        image: &str,
        env: Vec<String>,
        profile: TierProfile,
        workspace: &WorkspaceMount,
        agent: &AgentAddr,
    ) -> ContainerCreateBody {
        let name = container_name(id);
        let mut mounts = vec![Mount {
            target: Some(CONFIGS_DIR.to_owned()),
            source: Some(configs_volume(id)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        match workspace {
            WorkspaceMount::None => {}
            WorkspaceMount::Volume => mounts.push(Mount {
                target: Some(WORKSPACE_DIR.to_owned()),
                source: Some(workspace_volume(id)),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }),
            WorkspaceMount::Bind { dir, read_only } => mounts.push(Mount {
                target: Some(WORKSPACE_DIR.to_owned()),
                source: Some(dir.clone()),
                typ: Some(MountType::BIND),
                read_only: Some(*read_only),
                ..Default::default()
            }),
        }
        if profile.docker_socket {
            let socket = self.config.socket.trim_start_matches("unix://").to_owned();
            mounts.push(Mount {
                target: Some(DockerConfig::DEFAULT_SOCKET.to_owned()),
                source: Some(socket),
                typ: Some(MountType::BIND),
                ..Default::default()
            });
        }

        let mut host = HostConfig {
            mounts: Some(mounts),
            memory: profile.memory_bytes,
            nano_cpus: profile
                .nano_cpus
                .map(|n| self.host_nano_cpus.map_or(n, |max| n.min(max))),
            // Docker's init as pid 1: it forwards signals to the agent and reaps what the
            // files API's and the terminal's killed processes leave (an agent rarely reaps
            // orphans it did not start).
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        if profile.privileged {
            host.privileged = Some(true);
            host.pid_mode = Some("host".to_owned());
        }
        if profile.read_only_root {
            host.readonly_rootfs = Some(true);
            host.tmpfs = Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,noexec,nosuid,size=64m".to_owned(),
            )]));
        }

        let mut body = ContainerCreateBody {
            image: Some(image.to_owned()),
            env: Some(env),
            labels: Some(labels(id, &self.config.installation)),
            ..Default::default()
        };
        if agent.host_network {
            // Host mode shares the host's ports: nothing to publish, no network to join.
            host.network_mode = Some("host".to_owned());
        } else {
            let port = format!("{AGENT_PORT}/tcp");
            body.hostname = Some(name.clone());
            body.exposed_ports = Some(vec![port.clone()]);
            host.port_bindings = Some(HashMap::from([(
                port,
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )]));
            // Lets a platform on the host be addressed as host.docker.internal, as on Docker
            // Desktop (the reference's default PLATFORM_URL).
            host.extra_hosts = Some(vec!["host.docker.internal:host-gateway".to_owned()]);
            if let Some(network) = &self.config.network {
                host.network_mode = Some(network.clone());
                body.networking_config = Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.clone(),
                        EndpointSettings {
                            aliases: Some(vec![name]),
                            ..Default::default()
                        },
                    )])),
                });
            }
        }
        body.host_config = Some(host);
        body
    }
}

/// Where the agent listens and the URL it is reached at.
#[derive(Debug, Clone)]
struct AgentAddr {
    host_network: bool,
    host: &'static str,
    port: u16,
    /// `AGENT_URL`; in host-network mode also the URL handed back to the server.
    url: String,
}

/// The Docker effect of a tier (REFERENCE.md §1.4), overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TierProfile {
    memory_bytes: Option<i64>,
    nano_cpus: Option<i64>,
    privileged: bool,
    host_network: bool,
    docker_socket: bool,
    read_only_root: bool,
    /// Whether `/workspace` is mounted at all (tier 1 gets only `/configs`).
    workspace: bool,
}

impl TierProfile {
    fn of(tier: u8, overrides: &HashMap<u8, TierResources>) -> Self {
        let (memory_mb, cpu_shares) = match tier {
            1 => (None, None),
            3 => (Some(2048), Some(2048)),
            4 => (Some(4096), Some(4096)),
            _ => (Some(512), Some(1024)),
        };
        let extra = overrides.get(&tier).copied().unwrap_or_default();
        let memory_mb = extra.memory_mb.or(memory_mb).filter(|mb| *mb > 0);
        let cpu_shares = extra.cpu_shares.or(cpu_shares).filter(|s| *s > 0);
        let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            memory_bytes: memory_mb.map(|mb| to_i64(mb).saturating_mul(MIB)),
            nano_cpus: cpu_shares.map(|s| to_i64(s).saturating_mul(1_000_000_000) / 1024),
            privileged: matches!(tier, 3 | 4),
            host_network: tier == 4,
            docker_socket: tier == 4,
            read_only_root: tier == 1,
            workspace: tier != 1,
        }
    }
}

/// What is mounted at `/workspace` (REFERENCE.md §1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkspaceMount {
    /// Nothing (tier 1).
    None,
    /// The workspace's own named volume.
    Volume,
    /// A host directory.
    Bind { dir: String, read_only: bool },
}

fn workspace_mount(
    request: &ProvisionRequest,
    profile: TierProfile,
) -> Result<WorkspaceMount, Error> {
    if !profile.workspace {
        return Ok(WorkspaceMount::None);
    }
    let read_only = match request.workspace_access.as_str() {
        // With `none` the directory is ignored even when set.
        "none" | "" => return Ok(WorkspaceMount::Volume),
        "read_only" => true,
        "read_write" => false,
        other => {
            return Err(Error::StartFailed(format!(
                "unknown workspace_access {other:?}"
            )));
        }
    };
    let dir = request
        .workspace_dir
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    match dir {
        None => Err(Error::StartFailed(format!(
            "workspace_access {} needs a workspace_dir",
            request.workspace_access
        ))),
        Some(dir) if !Path::new(dir).is_absolute() => Err(Error::StartFailed(format!(
            "workspace_dir {dir:?} is not an absolute path"
        ))),
        Some(dir) => Ok(WorkspaceMount::Bind {
            dir: dir.to_owned(),
            read_only,
        }),
    }
}

/// The container's environment, in order: the base contract, then the prepared pairs minus
/// [`STRIPPED_VARS`]. A later pair replaces an earlier one with the same name in its place, as
/// with the process provisioner, so no name appears twice.
fn container_env(request: &ProvisionRequest, agent: &AgentAddr) -> Result<Vec<String>, Error> {
    let base = [
        ("WORKSPACE_ID", request.workspace_id.to_string()),
        ("WORKSPACE_CONFIG_PATH", CONFIGS_DIR.to_owned()),
        ("PLATFORM_URL", request.platform_url.clone()),
        ("MOLECULE_URL", request.platform_url.clone()),
        ("TIER", request.tier.to_string()),
        ("WORKSPACE_NAME", request.name.clone()),
        ("AGENT_HOST", agent.host.to_owned()),
        ("AGENT_PORT", agent.port.to_string()),
        ("AGENT_URL", agent.url.clone()),
    ];
    let mut names: Vec<String> = Vec::new();
    let mut values: HashMap<String, String> = HashMap::new();
    let mut set = |key: &str, value: String| {
        if values.insert(key.to_owned(), value).is_none() {
            names.push(key.to_owned());
        }
    };
    for (key, value) in base {
        set(key, value);
    }
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(Error::StartFailed(format!(
                "invalid environment variable name {key:?}"
            )));
        }
        if STRIPPED_VARS.contains(&key.as_str()) {
            continue;
        }
        set(key, value.expose_secret().to_owned());
    }
    Ok(names
        .into_iter()
        .map(|key| {
            let value = &values[&key];
            format!("{key}={value}")
        })
        .collect())
}

fn labels(id: WorkspaceId, installation: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
        (LABEL_WORKSPACE_ID.to_owned(), id.to_string()),
        (LABEL_INSTALLATION.to_owned(), installation.to_owned()),
    ])
}

/// One file of the configs archive.
struct ArchiveFile {
    content: Vec<u8>,
    mode: u32,
}

/// The tar uploaded into `/configs` before start: the template directory (regular files and
/// directories only; symlinks, which could point anywhere on the host, are skipped) without the
/// `removed` paths (and what is beneath them), then the
/// generated config files (0644), then the secret files (0600); a later source replaces an
/// earlier file of the same path. Everything is owned by uid/gid 1000; directories are 0755.
fn configs_archive(
    template: Option<&Path>,
    removed: &[String],
    config_files: &BTreeMap<String, Vec<u8>>,
    secret_files: &[(String, SecretString)],
) -> Result<Vec<u8>, Error> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files: BTreeMap<PathBuf, ArchiveFile> = BTreeMap::new();

    if let Some(template) = template {
        let io = |path: &Path, e: std::io::Error| {
            Error::StartFailed(format!("reading template {}: {e}", path.display()))
        };
        // A symlinked template root is followed once; links inside it are not.
        let root = fs::canonicalize(template).map_err(|e| io(template, e))?;
        collect_template(&root, Path::new(""), &mut dirs, &mut files).map_err(|e| io(&root, e))?;
    }
    for name in removed {
        let gone = contained(name)?;
        dirs.retain(|d| !d.starts_with(&gone));
        files.retain(|f, _| !f.starts_with(&gone));
    }
    for (name, content) in config_files {
        let path = contained(name)?;
        files.insert(
            path,
            ArchiveFile {
                content: content.clone(),
                mode: 0o644,
            },
        );
    }
    for (name, secret) in secret_files {
        let path = contained(name)?;
        files.insert(
            path,
            ArchiveFile {
                content: secret.expose_secret().as_bytes().to_vec(),
                mode: 0o600,
            },
        );
    }
    for path in files.keys() {
        dirs.extend(
            path.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .map(Path::to_path_buf),
        );
    }
    if let Some(clash) = files.keys().find(|f| dirs.contains(*f)) {
        return Err(Error::StartFailed(format!(
            "config path {} is both a file and a directory",
            clash.display()
        )));
    }

    agent_tar(
        &dirs,
        files
            .iter()
            .map(|(path, f)| (path.as_path(), f.content.as_slice(), f.mode)),
    )
    .map_err(|e| Error::Backend(format!("building the {CONFIGS_DIR} archive: {e}")))
}

/// A tar of `dirs` (0755) then `files` (path, content, mode), everything owned by the agent
/// user (uid/gid 1000) and stamped now: what `/configs` is filled with before a start, and
/// what the files API uploads (`docker/inside.rs`).
fn agent_tar<'a, D: AsRef<Path> + 'a>(
    dirs: impl IntoIterator<Item = D>,
    files: impl IntoIterator<Item = (&'a Path, &'a [u8], u32)>,
) -> std::io::Result<Vec<u8>> {
    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(AGENT_UID);
        h.set_gid(AGENT_UID);
        h.set_mtime(mtime);
        h
    };
    let mut builder = tar::Builder::new(Vec::new());
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder.append_data(&mut h, dir, std::io::empty())?;
    }
    for (path, content, mode) in files {
        let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
        let mut h = header(tar::EntryType::Regular, size, mode);
        builder.append_data(&mut h, path, content)?;
    }
    builder.into_inner()
}

/// Adds the directories and regular files under `dir` (at `rel` inside the archive).
fn collect_template(
    dir: &Path,
    rel: &Path,
    dirs: &mut BTreeSet<PathBuf>,
    files: &mut BTreeMap<PathBuf, ArchiveFile>,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        // `DirEntry::file_type` does not follow symlinks, so a link is seen as a link.
        let kind = entry.file_type()?;
        let rel = rel.join(entry.file_name());
        if kind.is_dir() {
            dirs.insert(rel.clone());
            collect_template(&entry.path(), &rel, dirs, files)?;
        } else if kind.is_file() {
            let mut content = Vec::new();
            let mut file = fs::File::open(entry.path())?;
            let executable = file.metadata()?.permissions().mode() & 0o111 != 0;
            file.read_to_end(&mut content)?;
            let mode = if executable { 0o755 } else { 0o644 };
            files.insert(rel, ArchiveFile { content, mode });
        }
    }
    Ok(())
}

/// `name` as a relative path that stays inside `/configs` (no `..`, no root, not empty).
fn contained(name: &str) -> Result<PathBuf, Error> {
    let rel = Path::new(name);
    let plain = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    let normal: PathBuf = rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    if !plain || normal.as_os_str().is_empty() {
        return Err(Error::StartFailed(format!(
            "config file path {name:?} escapes the configs directory"
        )));
    }
    Ok(normal)
}

/// The host port published for the agent's `8000/tcp`, if the daemon reports one.
fn published_port(info: &ContainerInspectResponse) -> Option<u16> {
    let ports = info.network_settings.as_ref()?.ports.as_ref()?;
    ports
        .get(&format!("{AGENT_PORT}/tcp"))?
        .as_ref()?
        .iter()
        .filter_map(|b| b.host_port.as_deref())
        .find_map(|p| p.parse().ok())
}

/// `image` with `:latest` added when it names no tag or digest, so a pull never fetches every
/// tag of a repository.
fn with_default_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` → `172.17.0.1`).
fn first_host_of(subnet: &str) -> Option<std::net::IpAddr> {
    let (net, len) = subnet.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if !(1..=30).contains(&len) {
        return None;
    }
    let mask = u32::MAX << (32 - len);
    Some(std::net::Ipv4Addr::from((u32::from(net) & mask) + 1).into())
}

/// Whether `url` points at this host's loopback (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback_url(url: &str) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = parsed.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Pause between looks at a container or volume that another removal still holds.
const REMOVAL_POLL: Duration = Duration::from_millis(50);

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The daemon's own words for an error, or the client's description of it.
fn daemon_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// An error of the daemon (or of reaching it).
fn backend(what: &str, e: DockerError) -> Error {
    match e {
        DockerError::RequestTimeoutError => Error::Timeout,
        e => Error::Backend(format!("{what}: {}", daemon_message(&e))),
    }
}

/// A refusal by the daemon during start is the start failing; not reaching it is a backend error.
fn start_failed(what: &str, e: DockerError) -> Error {
    match e {
        DockerError::DockerResponseServerError { message, .. } => {
            Error::StartFailed(format!("{what}: {message}"))
        }
        e => backend(what, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ProvisionRequest {
        ProvisionRequest {
            workspace_id: WorkspaceId::new_v4(),
            name: "Agent".into(),
            runtime: "r".into(),
            tier: 2,
            template_path: None,
            config_files: BTreeMap::new(),
            removed_config_files: Vec::new(),
            workspace_dir: None,
            workspace_access: "none".into(),
            compute: serde_json::json!({}),
            platform_url: "http://p:8080".into(),
            env: vec![],
            secret_files: vec![],
        }
    }

    fn bridge(id: WorkspaceId) -> AgentAddr {
        AgentAddr {
            host_network: false,
            host: "0.0.0.0",
            port: AGENT_PORT,
            url: format!("http://{}:8000", container_name(id)),
        }
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn names_use_the_full_uuid() {
        let id = WorkspaceId::parse("6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b").unwrap();
        assert_eq!(
            container_name(id),
            "berth-ws-6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
        );
        assert_eq!(
            configs_volume(id),
            "berth-ws-6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b-configs"
        );
        assert_eq!(
            workspace_volume(id),
            "berth-ws-6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b-workspace"
        );
    }

    #[test]
    fn env_is_ordered_stripped_and_deduplicated() {
        let mut req = request();
        let id = req.workspace_id;
        req.env = vec![
            ("MODEL".into(), secret("m")),
            ("GITHUB_TOKEN".into(), secret("ghp")),
            ("GH_PAT".into(), secret("pat")),
            ("ADMIN_TOKEN".into(), secret("adm")),
            ("GITEA_TOKEN".into(), secret("g")),
            ("MODEL".into(), secret("m2")),
            ("TIER".into(), secret("9")),
        ];
        let env = container_env(&req, &bridge(id)).unwrap();
        let name = container_name(id);
        assert_eq!(
            env,
            [
                format!("WORKSPACE_ID={id}"),
                "WORKSPACE_CONFIG_PATH=/configs".into(),
                "PLATFORM_URL=http://p:8080".into(),
                "MOLECULE_URL=http://p:8080".into(),
                "TIER=9".into(),
                "WORKSPACE_NAME=Agent".into(),
                "AGENT_HOST=0.0.0.0".into(),
                "AGENT_PORT=8000".into(),
                format!("AGENT_URL=http://{name}:8000"),
                "MODEL=m2".into(),
                // Kept as it is: no alias to GH_TOKEN/GITHUB_TOKEN.
                "GH_PAT=pat".into(),
            ]
        );
        req.env = vec![("A=B".into(), secret("x"))];
        assert_eq!(
            container_env(&req, &bridge(id)).unwrap_err().code(),
            "START_FAILED"
        );
    }

    #[test]
    fn tiers_follow_the_reference_table() {
        let none = HashMap::new();
        let t1 = TierProfile::of(1, &none);
        assert_eq!((t1.memory_bytes, t1.nano_cpus), (None, None));
        assert!(t1.read_only_root && !t1.workspace && !t1.privileged && !t1.host_network);

        let t2 = TierProfile::of(2, &none);
        assert_eq!(t2.memory_bytes, Some(512 * MIB));
        assert_eq!(t2.nano_cpus, Some(1_000_000_000));
        assert!(!t2.read_only_root && t2.workspace && !t2.privileged);
        assert_eq!(TierProfile::of(0, &none), t2);
        assert_eq!(TierProfile::of(7, &none), t2);

        let t3 = TierProfile::of(3, &none);
        assert_eq!(t3.memory_bytes, Some(2048 * MIB));
        assert_eq!(t3.nano_cpus, Some(2_000_000_000));
        assert!(t3.privileged && !t3.host_network && !t3.docker_socket);

        let t4 = TierProfile::of(4, &none);
        assert_eq!(t4.memory_bytes, Some(4096 * MIB));
        assert_eq!(t4.nano_cpus, Some(4_000_000_000));
        assert!(t4.privileged && t4.host_network && t4.docker_socket);

        let overrides = HashMap::from([
            (
                2,
                TierResources {
                    memory_mb: Some(256),
                    cpu_shares: Some(512),
                },
            ),
            (
                3,
                TierResources {
                    memory_mb: None,
                    cpu_shares: Some(1536),
                },
            ),
        ]);
        let t2 = TierProfile::of(2, &overrides);
        assert_eq!(t2.memory_bytes, Some(256 * MIB));
        assert_eq!(t2.nano_cpus, Some(500_000_000));
        let t3 = TierProfile::of(3, &overrides);
        assert_eq!(t3.memory_bytes, Some(2048 * MIB));
        assert_eq!(t3.nano_cpus, Some(1_500_000_000));
    }

    #[test]
    fn workspace_access_picks_the_mount() {
        let t2 = TierProfile::of(2, &HashMap::new());
        let mut req = request();
        req.workspace_dir = Some("/srv/code".into());
        assert_eq!(workspace_mount(&req, t2).unwrap(), WorkspaceMount::Volume);
        req.workspace_access = "read_only".into();
        assert_eq!(
            workspace_mount(&req, t2).unwrap(),
            WorkspaceMount::Bind {
                dir: "/srv/code".into(),
                read_only: true
            }
        );
        req.workspace_access = "read_write".into();
        assert_eq!(
            workspace_mount(&req, t2).unwrap(),
            WorkspaceMount::Bind {
                dir: "/srv/code".into(),
                read_only: false
            }
        );
        assert_eq!(
            workspace_mount(&req, TierProfile::of(1, &HashMap::new())).unwrap(),
            WorkspaceMount::None
        );
        for (dir, access) in [
            (None, "read_write"),
            (Some("rel/dir"), "read_only"),
            (Some("/x"), "sometimes"),
        ] {
            req.workspace_dir = dir.map(Into::into);
            req.workspace_access = access.into();
            assert_eq!(
                workspace_mount(&req, t2).unwrap_err().code(),
                "START_FAILED",
                "{access}"
            );
        }
    }

    fn entries(archive: &[u8]) -> Vec<(String, u32, u64, String)> {
        let mut out = Vec::new();
        let mut reader = tar::Archive::new(archive);
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            out.push((
                entry.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                content,
            ));
        }
        out
    }

    #[test]
    fn configs_archive_layers_template_files_and_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        fs::create_dir_all(t.join("prompts")).unwrap();
        fs::write(t.join("config.yaml"), "name: from-template\n").unwrap();
        fs::write(t.join("prompts/a.md"), "A").unwrap();
        fs::write(t.join("run.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(t.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.join("leak")).unwrap();
        std::os::unix::fs::symlink("/etc", t.join("leakdir")).unwrap();

        let config_files = BTreeMap::from([
            ("config.yaml".to_owned(), b"name: generated\n".to_vec()),
            ("./deep/nested/x.txt".to_owned(), b"x".to_vec()),
        ]);
        let secrets = vec![(".auth_token".to_owned(), secret("tok"))];
        let archive = configs_archive(Some(t), &[], &config_files, &secrets).unwrap();
        let got = entries(&archive);
        let find = |p: &str| got.iter().find(|e| e.0.trim_end_matches('/') == p).cloned();

        assert_eq!(
            find("config.yaml").unwrap(),
            (
                "config.yaml".into(),
                0o644,
                1000,
                "name: generated\n".into()
            )
        );
        assert_eq!(find(".auth_token").unwrap().1, 0o600);
        assert_eq!(find(".auth_token").unwrap().3, "tok");
        assert_eq!(find("prompts/a.md").unwrap().1, 0o644);
        assert_eq!(find("run.sh").unwrap().1, 0o755);
        assert_eq!(find("deep/nested/x.txt").unwrap().3, "x");
        for d in ["prompts", "deep", "deep/nested"] {
            let e = find(d).unwrap_or_else(|| panic!("{d} missing"));
            assert_eq!((e.1, e.2), (0o755, 1000), "{d}");
        }
        assert!(
            find("leak").is_none() && find("leakdir").is_none(),
            "{got:?}"
        );
        assert!(got.iter().all(|e| e.2 == 1000));
    }

    #[test]
    fn configs_archive_refuses_escaping_paths() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", ".", "a/.."] {
            let files = BTreeMap::from([(bad.to_owned(), b"x".to_vec())]);
            assert_eq!(
                configs_archive(None, &[], &files, &[]).unwrap_err().code(),
                "START_FAILED",
                "{bad}"
            );
        }
        let files = BTreeMap::from([
            ("a".to_owned(), b"x".to_vec()),
            ("a/b".to_owned(), b"y".to_vec()),
        ]);
        assert_eq!(
            configs_archive(None, &[], &files, &[]).unwrap_err().code(),
            "START_FAILED"
        );
    }

    #[test]
    fn a_subnets_first_host_is_its_gateway() {
        assert_eq!(
            first_host_of("172.17.0.0/16"),
            Some("172.17.0.1".parse().unwrap())
        );
        assert_eq!(
            first_host_of("10.1.2.128/25"),
            Some("10.1.2.129".parse().unwrap())
        );
        assert_eq!(first_host_of("fd00::/64"), None);
        assert_eq!(first_host_of("nonsense"), None);
    }

    #[test]
    fn loopback_platform_urls_are_recognised() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:80",
            "http://127.8.9.1/",
        ] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in [
            "http://172.17.0.1:8080",
            "https://berth.example",
            "not a url",
        ] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn default_tag_is_added_only_when_missing() {
        assert_eq!(with_default_tag("berth-agent"), "berth-agent:latest");
        assert_eq!(with_default_tag("berth-agent:test"), "berth-agent:test");
        assert_eq!(
            with_default_tag("127.0.0.1:5000/a/b"),
            "127.0.0.1:5000/a/b:latest"
        );
        assert_eq!(
            with_default_tag("127.0.0.1:5000/a/b:v1"),
            "127.0.0.1:5000/a/b:v1"
        );
        assert_eq!(with_default_tag("a/b@sha256:00"), "a/b@sha256:00");
    }
}
