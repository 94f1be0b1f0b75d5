//! Warm pools: agents started before anyone asks for them, so a create can be online in
//! milliseconds instead of waiting for a container or a process to boot.
//!
//! A pool is a template and a size. Its members are started by the refill loop like any
//! workspace of that template, with two differences: the start carries no workspace secret, no
//! token and no inbound secret (only the member's own pool credential, `.pool_secret`, in the
//! configs directory), and the workspace id it is started under is not a workspace's yet. A
//! create whose shape (template, runtime, tier, compute: everything fixed when an agent starts)
//! equals a pool's takes the oldest ready member in its own transaction, and the row takes the
//! member's id, so the backend's container, volumes or directory are the workspace's from then
//! on: every later restart, stop, delete or purge acts on them as on any workspace's. The
//! provisioning task then prepares the start as always (secrets, a fresh token, the inbound
//! secret, the generated config) and hands it to the running agent (`POST /berth/pool/claim`,
//! protocol `berth.pool.v1`, docs/warm-pool.md) instead of starting one; the agent registers as
//! that workspace. When the handover fails, the member is stopped and the workspace starts cold.
//!
//! What is kept where: the members in the store (`pool_members`, shared by every server of an
//! installation); the targets, counters and the refill loop here, on the server that runs the
//! sweeps (one refiller per installation). Claims can happen on any server.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use base64::Engine as _;
use berth_domain::WorkspaceId;
use berth_provision::{BackendKind, ProvisionRequest};
use berth_store::{ClaimedMember, NewPoolMember, PoolMember, PoolMemberState};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Digest as _;
use tokio::sync::{Notify, Semaphore, watch};

use crate::provisioning::ProvisionPlan;
use crate::service::WorkspaceService;

/// The protocol a member speaks (docs/warm-pool.md).
pub const POOL_PROTOCOL: &str = "berth.pool.v1";
/// The member's credential file in its configs directory, never listed or served by the files
/// API (see `inside.rs`).
pub const POOL_SECRET_FILE: &str = ".pool_secret";

/// One pool the operator asks for: `--warm-pool TEMPLATE[:TIER]=SIZE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The template its members are started from (a directory of the templates root).
    pub template: String,
    /// The tier its members are started with; `None`: the template's own (as a create that
    /// names no tier gets).
    pub tier: Option<u8>,
    /// How many ready members to keep.
    pub size: usize,
}

impl PoolSpec {
    /// The pool's name: `TEMPLATE`, or `TEMPLATE:TIER` when a tier is named.
    pub fn name(&self) -> String {
        match self.tier {
            Some(tier) => format!("{}:{tier}", self.template),
            None => self.template.clone(),
        }
    }
}

impl std::str::FromStr for PoolSpec {
    type Err = String;

    /// `TEMPLATE[:TIER]=SIZE`, e.g. `echo=8` or `echo:4=8`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, size) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not TEMPLATE[:TIER]=SIZE"))?;
        let (template, tier) = match name.split_once(':') {
            Some((template, tier)) => {
                let tier = tier
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|t| (1..=4).contains(t))
                    .ok_or_else(|| format!("{s:?}: the tier must be 1–4"))?;
                (template.trim(), Some(tier))
            }
            None => (name.trim(), None),
        };
        if template.is_empty() {
            return Err(format!("{s:?} names no template"));
        }
        let size: usize = size
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the size is not a whole number"))?;
        if size == 0 || size > MAX_POOL_SIZE {
            return Err(format!("{s:?}: the size must be 1–{MAX_POOL_SIZE}"));
        }
        Ok(Self {
            template: template.to_owned(),
            tier,
            size,
        })
    }
}

/// The largest pool one server keeps.
pub const MAX_POOL_SIZE: usize = 1000;

/// How the pools are kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The pools; empty: none.
    pub pools: Vec<PoolSpec>,
    /// Member starts under way at once, over all pools. Cold creates never wait for them: they
    /// share no lock or queue with the refill.
    pub refill_concurrency: usize,
    /// How long a member may take from its start to answering its readiness probe.
    pub ready_timeout: Duration,
    /// How often the refill loop checks its members (it also wakes at once after a claim).
    pub check_interval: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            refill_concurrency: 2,
            ready_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// Why the pools could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The template does not resolve to a workspace the backend could start.
    #[error("warm pool {template:?}: {reason}")]
    Template {
        /// The pool's template.
        template: String,
        /// Why.
        reason: String,
    },
    /// Two pools start the same members.
    #[error("warm pool {0:?} is configured twice")]
    Duplicate(String),
    /// The backend cannot hand an agent its identity later.
    #[error("warm pools need the process or Docker backend, not {0}")]
    Backend(&'static str),
}

/// One configured pool, resolved.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) size: usize,
    /// The shape its members are started with ([`shape_key`]).
    pub(crate) shape: String,
    /// What a member's start is prepared from (its id is replaced per member).
    plan: ProvisionPlan,
    claims: AtomicU64,
    misses: AtomicU64,
    failures: AtomicU64,
}

/// The pools of a service (none by default).
#[derive(Debug)]
pub(crate) struct Pools {
    pools: Vec<Pool>,
    settings: PoolSettings,
    /// Woken by a claim or a miss: the refill runs at once instead of at its next check.
    wake: Notify,
    /// Members whose start runs on this server now.
    starting: std::sync::Mutex<HashSet<WorkspaceId>>,
    /// The handover's and the readiness probe's client (no proxy, no redirects, short timeouts).
    http: reqwest::Client,
}

impl Default for Pools {
    fn default() -> Self {
        Self::new(Vec::new(), PoolSettings::default())
    }
}

impl Pools {
    fn new(pools: Vec<Pool>, settings: PoolSettings) -> Self {
        let http = berth_provision::client_builder_for("http://")
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(HANDOVER_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            pools,
            settings,
            wake: Notify::new(),
            starting: std::sync::Mutex::new(HashSet::new()),
            http,
        }
    }

    /// The pool a create of `shape` can claim from.
    pub(crate) fn by_shape(&self, shape: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.shape == shape)
    }

    fn starting(&self) -> std::sync::MutexGuard<'_, HashSet<WorkspaceId>> {
        self.starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A whole handover (connect, write, answer) may take this long before the workspace starts cold.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Claimed members' records are kept this long (for "claimed in the last minute").
const CLAIMED_KEPT: Duration = Duration::from_secs(600);
/// How long the refill waits after a claim or a miss before it starts members.
const REFILL_SETTLE: Duration = Duration::from_millis(50);
/// How often a starting member's readiness probe is tried.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// The key of everything an agent is started with that a later handover cannot change: the
/// template, the runtime (its image or command), the tier (resources) and the compute
/// settings. Two creates of one key can use one member.
pub(crate) fn shape_key(
    template: &str,
    runtime: &str,
    tier: u8,
    compute: &serde_json::Value,
) -> String {
    let canonical = json!([template, runtime, tier, compute]).to_string();
    sha2::Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One pool as `GET /admin/pools` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    /// The pool's name (its template).
    pub name: String,
    /// The backend its members run on.
    pub backend: &'static str,
    /// Ready members it keeps.
    pub target: usize,
    /// Members ready to be claimed.
    pub ready: usize,
    /// Members starting.
    pub starting: usize,
    /// Members claimed in the last minute (by any server of the installation).
    pub claimed_last_minute: usize,
    /// Creates of its shape that found no ready member and started cold, on this server since
    /// it started.
    pub misses: u64,
    /// Members claimed on this server since it started.
    pub claims: u64,
    /// Member starts that failed (or members found dead) on this server since it started.
    pub failures: u64,
}

/// What a member receives at its claim (`POST /berth/pool/claim`).
#[derive(serde::Serialize)]
struct Handover<'a> {
    workspace_id: WorkspaceId,
    name: &'a str,
    files: Vec<HandoverFile>,
    removed_files: &'a [String],
    env: BTreeMap<&'a str, &'a str>,
}

#[derive(serde::Serialize)]
struct HandoverFile {
    path: String,
    content_b64: String,
    mode: u32,
}

impl WorkspaceService {
    /// Sets up the warm pools: each template is resolved like a create of it (a template that
    /// a create would refuse is refused here, at start), and its shape computed.
    pub async fn with_pools(mut self, settings: PoolSettings) -> Result<Self, PoolError> {
        let kind = self.provisioner.kind();
        if !settings.pools.is_empty() && !matches!(kind, BackendKind::Process | BackendKind::Docker)
        {
            return Err(PoolError::Backend(crate::metrics::backend_label(kind)));
        }
        let mut pools = Vec::new();
        for spec in &settings.pools {
            let name = spec.name();
            let (shape, plan) = self
                .pool_member_plan(&spec.template, spec.tier)
                .await
                .map_err(|reason| PoolError::Template {
                    template: name.clone(),
                    reason,
                })?;
            if pools
                .iter()
                .any(|p: &Pool| p.name == name || p.shape == shape)
            {
                return Err(PoolError::Duplicate(name));
            }
            pools.push(Pool {
                name,
                size: spec.size,
                shape,
                plan,
                claims: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            });
        }
        self.pools = Arc::new(Pools::new(pools, settings));
        Ok(self)
    }

    /// Counts a create of `pool` that took a member (`Some`) or found none (`None`), and wakes
    /// the refill.
    pub(crate) fn note_claim(&self, shape: &str, claimed: Option<&ClaimedMember>) {
        if let Some(pool) = self.pools.by_shape(shape) {
            match claimed {
                Some(member) => {
                    pool.claims.fetch_add(1, Relaxed);
                    tracing::info!(workspace.id = %member.id, pool = %pool.name, "warm pool member claimed");
                }
                None => {
                    pool.misses.fetch_add(1, Relaxed);
                    tracing::info!(pool = %pool.name, "warm pool empty: starting cold");
                }
            }
        }
        self.pools.wake.notify_one();
    }

    /// Hands the prepared start to the claimed member: its configs and credential files, its
    /// environment and its name, over the member's pool credential. `Ok` once the member wrote
    /// them (it registers next).
    pub(crate) async fn hand_over(
        &self,
        member: &ClaimedMember,
        request: &ProvisionRequest,
    ) -> Result<(), String> {
        let Some(secret) = &member.secret else {
            return Err("the member's pool credential could not be opened".to_owned());
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut files: Vec<HandoverFile> = request
            .config_files
            .iter()
            .map(|(path, content)| HandoverFile {
                path: path.clone(),
                content_b64: b64.encode(content),
                mode: 0o644,
            })
            .collect();
        files.extend(
            request
                .secret_files
                .iter()
                .map(|(path, value)| HandoverFile {
                    path: path.clone(),
                    content_b64: b64.encode(value.expose_secret()),
                    mode: 0o600,
                }),
        );
        let body = Handover {
            workspace_id: member.id,
            name: &request.name,
            files,
            removed_files: &request.removed_config_files,
            env: request
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.expose_secret()))
                .collect(),
        };
        let url = format!("{}/berth/pool/claim", member.url.trim_end_matches('/'));
        let response = self
            .pools
            .http
            .post(&url)
            .bearer_auth(secret.expose_secret())
            .json(&body)
            .send()
            .await
            // The error names the URL, never the body.
            .map_err(|e| format!("handing the workspace to its pool member failed: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text: String = text.chars().take(300).collect();
        Err(format!(
            "the pool member refused the handover ({status}): {text}"
        ))
    }

    /// The pools as `GET /admin/pools` shows them.
    pub async fn pool_status(&self) -> Result<Vec<PoolStatus>, berth_store::Error> {
        let members = if self.pools.pools.is_empty() {
            Vec::new()
        } else {
            self.store.pool_members().await?
        };
        let minute_ago = berth_store::now() - chrono::Duration::seconds(60);
        let backend = crate::metrics::backend_label(self.provisioner.kind());
        Ok(self
            .pools
            .pools
            .iter()
            .map(|pool| {
                let mine = members.iter().filter(|m| m.shape == pool.shape);
                let count =
                    |state: PoolMemberState| mine.clone().filter(|m| m.state == state).count();
                PoolStatus {
                    name: pool.name.clone(),
                    backend,
                    target: pool.size,
                    ready: count(PoolMemberState::Ready),
                    starting: count(PoolMemberState::Starting),
                    claimed_last_minute: mine
                        .clone()
                        .filter(|m| m.claimed_at.is_some_and(|t| t >= minute_ago))
                        .count(),
                    misses: pool.misses.load(Relaxed),
                    claims: pool.claims.load(Relaxed),
                    failures: pool.failures.load(Relaxed),
                }
            })
            .collect())
    }

    /// The pools' series of `/metrics`: members by pool and state, target, claims, misses and
    /// failures (nothing when no pool is configured).
    pub(crate) async fn render_pool_metrics(
        &self,
        out: &mut String,
    ) -> Result<(), berth_store::Error> {
        use crate::metrics::{family, sample};
        if self.pools.pools.is_empty() {
            return Ok(());
        }
        let status = self.pool_status().await?;
        family(
            out,
            "berth_pool_members",
            "gauge",
            "Warm-pool members by pool and state.",
        );
        for p in &status {
            for (state, n) in [("ready", p.ready), ("starting", p.starting)] {
                let labels = [("pool", p.name.as_str()), ("state", state)];
                sample(out, "berth_pool_members", &labels, n as f64);
            }
        }
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PoolStatus) -> f64,
        );
        let series: [Series; 4] = [
            (
                "berth_pool_target",
                "gauge",
                "Ready members each warm pool keeps.",
                |p| p.target as f64,
            ),
            (
                "berth_pool_claims_total",
                "counter",
                "Creates that took a warm-pool member, on this server.",
                |p| p.claims as f64,
            ),
            (
                "berth_pool_misses_total",
                "counter",
                "Creates that matched a warm pool but found it empty and started cold, on this server.",
                |p| p.misses as f64,
            ),
            (
                "berth_pool_failures_total",
                "counter",
                "Warm-pool member starts that failed, and members found dead, on this server.",
                |p| p.failures as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            family(out, name, kind, help);
            for p in &status {
                sample(out, name, &[("pool", p.name.as_str())], value(p));
            }
        }
        Ok(())
    }

    /// Keeps the pools filled until `stop` turns true, then stops and removes every member no
    /// create took. Run by the server that runs the sweeps.
    pub async fn run_pools(&self, mut stop: watch::Receiver<bool>) {
        if self.pools.pools.is_empty() {
            return;
        }
        let permits = Arc::new(Semaphore::new(
            self.pools.settings.refill_concurrency.max(1),
        ));
        let mut last_prune = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = self.refill_once(&permits).await {
                tracing::warn!(error = %e, "warm pool refill failed");
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                let before = berth_store::now()
                    - chrono::Duration::from_std(CLAIMED_KEPT).unwrap_or_default();
                if let Err(e) = self.store.prune_claimed_pool_members(before).await {
                    tracing::warn!(error = %e, "pruning claimed pool members failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.pools.settings.check_interval) => {}
                () = self.pools.wake.notified() => {
                    // Woken by a claim: its handover and the agent's register come first (a
                    // member's start forks a process or calls the daemon, which would compete
                    // with them for the CPU), and a burst's claims are refilled together.
                    tokio::time::sleep(REFILL_SETTLE).await;
                }
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        self.drain_pools().await;
    }

    /// One refill pass: members of pools no longer configured, dead members and starts that
    /// took too long are removed; each pool is topped up to its target, at most
    /// `refill_concurrency` starts at a time.
    async fn refill_once(&self, permits: &Arc<Semaphore>) -> Result<(), berth_store::Error> {
        let members = self.store.pool_members().await?;
        let now = berth_store::now();
        let timeout = chrono::Duration::from_std(self.pools.settings.ready_timeout)
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let mut live: BTreeMap<&str, usize> = BTreeMap::new();
        for member in &members {
            if member.state == PoolMemberState::Claimed {
                continue;
            }
            let Some(pool) = self.pools.by_shape(&member.shape) else {
                tracing::info!(workspace.id = %member.id, pool = %member.pool, "pool member of a pool no longer configured: removed");
                self.destroy_member(member.id).await;
                continue;
            };
            let alive = match member.state {
                PoolMemberState::Starting => {
                    self.pools.starting().contains(&member.id) || now - member.created_at < timeout
                }
                _ => matches!(self.provisioner.is_running(member.id).await, Ok(true)),
            };
            if !alive {
                tracing::warn!(workspace.id = %member.id, pool = %pool.name, state = member.state.as_str(), "pool member is gone or never became ready: replaced");
                pool.failures.fetch_add(1, Relaxed);
                self.destroy_member(member.id).await;
                continue;
            }
            *live.entry(pool.shape.as_str()).or_default() += 1;
        }
        for pool in &self.pools.pools {
            let have = live.get(pool.shape.as_str()).copied().unwrap_or(0);
            for _ in have..pool.size {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    return Ok(());
                };
                let id = WorkspaceId::new_v4();
                let secret = crate::token::mint().plaintext;
                self.store
                    .add_pool_member(NewPoolMember {
                        id,
                        pool: pool.name.clone(),
                        shape: pool.shape.clone(),
                        secret: secret.clone(),
                    })
                    .await?;
                self.pools.starting().insert(id);
                let svc = self.clone();
                let mut plan = pool.plan.clone();
                plan.id = id;
                let name = pool.name.clone();
                tokio::spawn(async move {
                    let started = svc.start_member(plan, secret).await;
                    svc.pools.starting().remove(&id);
                    drop(permit);
                    if let Err(e) = started {
                        tracing::warn!(workspace.id = %id, pool = %name, error = %e, "pool member start failed");
                        if let Some(pool) = svc.pools.pools.iter().find(|p| p.name == name) {
                            pool.failures.fetch_add(1, Relaxed);
                        }
                        svc.destroy_member(id).await;
                        // Not at once again: a failing start is retried at the next check.
                    }
                    svc.pools.wake.notify_one();
                });
            }
        }
        Ok(())
    }

    /// Starts one member and waits until its agent answers its readiness probe.
    async fn start_member(&self, plan: ProvisionPlan, secret: SecretString) -> Result<(), String> {
        let id = plan.id;
        let mut request = self.provision_request(&plan);
        // Nothing of any workspace: the generated config, secrets and credentials come with the
        // handover; the template's own files are the same for every workspace of the pool.
        request.config_files.clear();
        request.removed_config_files.clear();
        request.env.clear();
        request.name = String::new();
        request.secret_files = vec![(POOL_SECRET_FILE.to_owned(), secret.clone())];
        let started = self
            .provisioner
            .start(request)
            .await
            .map_err(|e| e.to_string())?;
        let url = started
            .url
            .ok_or_else(|| "the backend reported no URL for the member".to_owned())?;
        let probe = format!("{}/berth/pool", url.trim_end_matches('/'));
        let deadline = tokio::time::Instant::now() + self.pools.settings.ready_timeout;
        loop {
            let answer = self
                .pools
                .http
                .get(&probe)
                .bearer_auth(secret.expose_secret())
                .send()
                .await;
            if let Ok(r) = answer
                && r.status().is_success()
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the member did not answer {probe} within {:?}",
                    self.pools.settings.ready_timeout
                ));
            }
            if !matches!(self.provisioner.is_running(id).await, Ok(true)) {
                return Err("the member's agent exited while starting".to_owned());
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        if self
            .store
            .pool_member_ready(id, url, started.instance_id)
            .await
            .map_err(|e| e.to_string())?
        {
            tracing::info!(workspace.id = %id, "pool member ready");
            Ok(())
        } else {
            Err("the member was removed while it started".to_owned())
        }
    }

    /// Removes a member no create took and everything its backend holds. A member a create
    /// took meanwhile is left alone: it is that workspace's now.
    async fn destroy_member(&self, id: WorkspaceId) {
        match self.store.remove_pool_member(id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(workspace.id = %id, error = %e, "removing a pool member failed");
                return;
            }
        }
        if let Err(e) = self.provisioner.purge(id).await {
            tracing::warn!(workspace.id = %id, error = %e, "purging a pool member failed");
        }
    }

    /// Stops and removes every member no create took (at shutdown: a member never outlives its
    /// pool).
    pub async fn drain_pools(&self) {
        let members = match self.store.pool_members().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "draining the warm pools: members unreadable");
                return;
            }
        };
        let unclaimed: Vec<&PoolMember> = members
            .iter()
            .filter(|m| m.state != PoolMemberState::Claimed)
            .collect();
        for m in &unclaimed {
            self.destroy_member(m.id).await;
        }
        if !unclaimed.is_empty() {
            tracing::info!(members = unclaimed.len(), "warm pools drained");
        }
    }

    /// The ids of members no create took, which the orphan sweep leaves alone.
    pub(crate) async fn unclaimed_members(
        &self,
    ) -> Result<HashSet<WorkspaceId>, berth_store::Error> {
        Ok(self
            .store
            .pool_members()
            .await?
            .into_iter()
            .filter(|m| m.state != PoolMemberState::Claimed)
            .map(|m| m.id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_spec_is_template_equals_size() {
        assert_eq!(
            "echo=8".parse::<PoolSpec>(),
            Ok(PoolSpec {
                template: "echo".into(),
                tier: None,
                size: 8
            })
        );
        let tiered = "echo:4=2".parse::<PoolSpec>().unwrap();
        assert_eq!(
            (tiered.tier, tiered.size, tiered.name()),
            (Some(4), 2, "echo:4".into())
        );
        for bad in ["echo:5=1", "echo:0=1", "echo:x=1", ":2=1"] {
            assert!(bad.parse::<PoolSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            " demo = 2 ".parse::<PoolSpec>().map(|p| p.template),
            Ok("demo".into())
        );
        for bad in [
            "echo",
            "=3",
            "echo=",
            "echo=0",
            "echo=-1",
            "echo=x",
            "echo=1001",
        ] {
            assert!(bad.parse::<PoolSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_shape_changes_with_everything_fixed_at_start() {
        let base = shape_key("echo", "echo", 2, &json!({}));
        assert_eq!(base, shape_key("echo", "echo", 2, &json!({})));
        assert_ne!(base, shape_key("other", "echo", 2, &json!({})));
        assert_ne!(base, shape_key("echo", "claude-code", 2, &json!({})));
        assert_ne!(base, shape_key("echo", "echo", 3, &json!({})));
        assert_ne!(base, shape_key("echo", "echo", 2, &json!({"cpu": 2})));
    }
}
