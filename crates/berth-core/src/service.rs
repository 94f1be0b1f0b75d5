//! [`WorkspaceService`]: the workspace core, generic over its ports through trait objects.

use std::sync::Arc;
use std::time::Duration;

use berth_domain::access::Hierarchy;

use berth_domain::WorkspaceId;
use berth_domain::ssrf::SsrfPolicy;
use berth_domain::validation::Tier;
use berth_provision::Provisioner;
use berth_store::{Page, Workspace, WorkspaceStore};
use tokio::task::JoinSet;

use crate::memory::MemoryPlugin;
use crate::resolver::HostResolver;
use crate::templates::TemplateCatalog;

/// Settings of the workspace core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// `--dev`: the registry's bootstrap without a token is allowed while a workspace has none.
    pub dev: bool,
    /// A container workspace with no heartbeat for this long goes `offline`.
    pub liveness_window: Duration,
    /// An external-like workspace with no heartbeat for this long goes `awaiting_agent`.
    pub remote_stale_after: Duration,
    /// How often the liveness and health sweeps run.
    pub sweep_interval: Duration,
    /// Provisioning deadline when the runtime's manifest declares none (reference: 10 min,
    /// hermes 30 min).
    pub provision_timeout: Duration,
    /// Which agent URLs are acceptable (`--dev` allows loopback).
    pub ssrf: SsrfPolicy,
    /// When set, every workspace gets this tier (the reference's SaaS rule).
    pub forced_tier: Option<Tier>,
    /// The URL agents started by a provisioner use to reach this server (`PLATFORM_URL`).
    pub agent_platform_url: String,
    /// Limits and switches of the files, exec and terminal routes.
    pub inside: crate::inside::InsideConfig,
    /// Bounds of the heartbeats' group commit (`heartbeats.rs`).
    pub heartbeat_batching: crate::heartbeats::HeartbeatBatching,
    /// How long a verified workspace token is trusted without asking the database again; a
    /// revocation on another instance takes effect here within this (zero: ask every time).
    pub token_cache_ttl: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            dev: false,
            liveness_window: Duration::from_secs(180),
            remote_stale_after: Duration::from_secs(90),
            sweep_interval: Duration::from_secs(15),
            provision_timeout: Duration::from_secs(600),
            ssrf: SsrfPolicy::default(),
            forced_tier: None,
            agent_platform_url: "http://127.0.0.1:8080".into(),
            inside: crate::inside::InsideConfig::default(),
            heartbeat_batching: Default::default(),
            token_cache_ttl: Duration::from_secs(60),
        }
    }
}

/// A workspace as List and Get show it: the stored row plus what the server derives.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceView {
    /// The stored row.
    pub workspace: Workspace,
    /// The runtime's manifest-declared provision timeout, in milliseconds.
    pub provision_timeout_ms: Option<i64>,
}

/// The embeddable workspace service.
#[derive(Clone)]
pub struct WorkspaceService {
    pub(crate) store: Arc<dyn WorkspaceStore>,
    pub(crate) provisioner: Arc<dyn Provisioner>,
    pub(crate) resolver: Arc<dyn HostResolver>,
    pub(crate) memory: Option<Arc<dyn MemoryPlugin>>,
    pub(crate) templates: Arc<TemplateCatalog>,
    pub(crate) config: CoreConfig,
    pub(crate) tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    /// The workspace tree, cached for the access rule; dropped whenever a row is created.
    pub(crate) tree: Arc<tokio::sync::RwLock<Option<Arc<Hierarchy>>>>,
    /// Env-mutator hooks, in registration order.
    pub(crate) env_mutators: Vec<Arc<dyn crate::hooks::EnvMutator>>,
    /// Restart coalescing state.
    pub(crate) restarts: Arc<tokio::sync::Mutex<crate::lifecycle::RestartMap>>,
    /// Per-workspace locks that serialise backend starts and stops with the status changes
    /// around them (`lifecycle.rs`).
    pub(crate) backend_locks: Arc<crate::lifecycle::BackendLocks>,
    /// Per-workspace count of starts begun here: a start whose failure arrives after a newer
    /// start began (`provisioning.rs`) does not mark the newer one failed.
    pub(crate) start_generations:
        Arc<std::sync::Mutex<std::collections::HashMap<WorkspaceId, u64>>>,
    /// Woken whenever a provisioner's URL is recorded here, so a register that arrived before
    /// it (`registry.rs`) waits for it instead of polling hard.
    pub(crate) url_recorded: Arc<tokio::sync::Notify>,
    /// The live event bus and its log tailer (`events.rs`).
    pub(crate) events: Arc<crate::events::EventBus>,
    /// Prometheus metrics (`metrics.rs`).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Last ticks of the background loops (`loops.rs`).
    pub(crate) loops: Arc<crate::loops::LoopTicks>,
    /// Limits of the A2A proxy's upstream calls (`a2a.rs`).
    pub(crate) a2a: crate::a2a::A2aSettings,
    /// The configs-restart debounce and terminal counts (`inside.rs`).
    pub(crate) inside: crate::inside::SharedInside,
    /// The heartbeats' group commit (`heartbeats.rs`).
    pub(crate) heartbeats: Arc<crate::heartbeats::HeartbeatBatcher>,
    /// Verified workspace tokens (`token.rs`).
    pub(crate) token_cache: Arc<crate::token::TokenCache>,
    /// The warm pools (`pool.rs`); none unless [`Self::with_pools`] set them up.
    pub(crate) pools: Arc<crate::pool::Pools>,
}

impl std::fmt::Debug for WorkspaceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkspaceService")
            .field("provisioner", &self.provisioner.kind())
            .field("templates", &self.templates.root())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How long the health check waits for the database before calling it down (`/health` answers
/// 503 within this, well under the 2 s a load balancer's probe typically allows).
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_millis(1500);

impl WorkspaceService {
    /// A service over the given ports.
    pub fn new(
        store: Arc<dyn WorkspaceStore>,
        provisioner: Arc<dyn Provisioner>,
        resolver: Arc<dyn HostResolver>,
        templates: TemplateCatalog,
        config: CoreConfig,
    ) -> Self {
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let heartbeats = Arc::new(crate::heartbeats::HeartbeatBatcher::new(
            store.clone(),
            config.heartbeat_batching,
            metrics.clone(),
        ));
        let token_cache = Arc::new(crate::token::TokenCache::new(config.token_cache_ttl));
        Self {
            store,
            provisioner,
            resolver,
            memory: None,
            templates: Arc::new(templates),
            config,
            tasks: Arc::new(tokio::sync::Mutex::new(JoinSet::new())),
            tree: Arc::new(tokio::sync::RwLock::new(None)),
            restarts: Arc::new(tokio::sync::Mutex::new(Default::default())),
            backend_locks: Arc::default(),
            start_generations: Arc::default(),
            url_recorded: Arc::default(),
            env_mutators: Vec::new(),
            events: Arc::new(crate::events::EventBus::new(
                crate::events::EventConfig::default(),
            )),
            metrics,
            loops: Arc::default(),
            a2a: crate::a2a::A2aSettings::default(),
            inside: Arc::default(),
            heartbeats,
            token_cache,
            pools: Arc::default(),
        }
    }

    /// Registers an env-mutator hook (run after the earlier ones).
    pub fn with_env_mutator(mut self, hook: Arc<dyn crate::hooks::EnvMutator>) -> Self {
        self.env_mutators.push(hook);
        self
    }

    /// Seeds `initial_memories` into this memory plugin.
    pub fn with_memory_plugin(mut self, plugin: Arc<dyn MemoryPlugin>) -> Self {
        self.memory = Some(plugin);
        self
    }

    /// The store (for callers that embed the core and need raw reads).
    pub fn store(&self) -> &Arc<dyn WorkspaceStore> {
        &self.store
    }

    /// The templates directory.
    pub fn templates(&self) -> &TemplateCatalog {
        &self.templates
    }

    /// Whether the database answers within [`HEALTH_CHECK_TIMEOUT`]. Bounded here because the
    /// store's ping waits for a pooled connection, and while PostgreSQL is down the pool keeps
    /// retrying the connect until its acquire timeout (10 s): `/health` hung that long before
    /// answering 503.
    pub async fn healthy(&self) -> bool {
        matches!(
            tokio::time::timeout(HEALTH_CHECK_TIMEOUT, self.store.ping()).await,
            Ok(Ok(()))
        )
    }

    /// Live workspaces in creation order (one page).
    pub async fn list(&self, page: Page) -> Result<Vec<WorkspaceView>, berth_store::Error> {
        let rows = self.store.list_workspaces(page).await?;
        Ok(rows.into_iter().map(|w| self.view(w)).collect())
    }

    /// One workspace (removed ones included; the caller decides about 410).
    pub async fn get(&self, id: WorkspaceId) -> Result<Option<WorkspaceView>, berth_store::Error> {
        Ok(self.store.get_workspace(id).await?.map(|w| self.view(w)))
    }

    fn view(&self, workspace: Workspace) -> WorkspaceView {
        let provision_timeout_ms = self
            .templates
            .provision_timeout_secs(&workspace.runtime)
            .filter(|s| *s > 0)
            .map(|s| s * 1000);
        WorkspaceView {
            workspace,
            provision_timeout_ms,
        }
    }

    /// The workspace tree (cached until the next create).
    pub(crate) async fn hierarchy(&self) -> Result<Arc<Hierarchy>, berth_store::Error> {
        if let Some(h) = self.tree.read().await.as_ref() {
            return Ok(h.clone());
        }
        let h = Arc::new(Hierarchy::new(self.store.hierarchy().await?));
        *self.tree.write().await = Some(h.clone());
        Ok(h)
    }

    /// Forgets the cached tree (after a write that changes it).
    pub(crate) async fn invalidate_hierarchy(&self) {
        *self.tree.write().await = None;
    }

    /// Spawns background work tracked for graceful shutdown.
    pub(crate) async fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut tasks = self.tasks.lock().await;
        // Reap finished tasks so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    /// Waits for in-flight background work (provisioning, memory seeding) to finish, including
    /// what that work spawned meanwhile (a failed start's backend stop, a restart).
    pub async fn drain(&self) {
        loop {
            let mut tasks = std::mem::take(&mut *self.tasks.lock().await);
            if tasks.is_empty() {
                return;
            }
            while let Some(res) = tasks.join_next().await {
                if let Err(e) = res {
                    tracing::error!(error = %e, "background task failed");
                }
            }
        }
    }
}
