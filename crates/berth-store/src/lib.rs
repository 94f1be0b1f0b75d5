#![doc = include_str!("../README.md")]

mod activity;
mod bundle;
pub mod cipher;
mod error;
mod group;
mod model;
mod pool;
#[cfg(feature = "postgres")]
mod postgres;
mod queue;
mod session_search;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod viewport;
mod wake;

use async_trait::async_trait;
use berth_domain::WorkspaceId;
use berth_domain::status::Transition;
use secrecy::SecretString;

pub use activity::{ACTIVITY_PAGE_MAX, ActivityQuery, ActivityRecord, ActivitySource, NewActivity};
pub use bundle::{ConfigEdit, WorkspaceOrigin};
pub use cipher::{CipherError, KeyRing};
pub use error::Error;
pub use group::{FlushGuard, GroupCommit};
pub use model::*;
pub use pool::{ClaimedMember, NewPoolMember, PoolMember, PoolMemberState};
#[cfg(feature = "postgres")]
pub use postgres::PgStore;
pub use queue::{Enqueued, NewQueueItem, QUEUE_PRIORITY_TASK, QueueItem, QueueSettle, TokenUsage};
pub use session_search::SESSION_SEARCH_MAX;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use viewport::Viewport;
pub use wake::EventWakeups;

/// A pooled connection idle longer than this is pinged before it is handed out (both stores).
pub(crate) const PING_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The persistence port of the workspace core.
///
/// Implemented by [`SqliteStore`] (the embedded default) and [`PgStore`] (production), which pass
/// one shared contract suite. Secret values cross this trait in plaintext (as [`SecretString`]) and
/// are sealed with the store's [`KeyRing`] before they reach the database.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<()>;

    /// Which of the given candidate names are taken among live (non-removed) siblings under
    /// `parent` (`None` = the root level).
    async fn taken_names(
        &self,
        parent: Option<WorkspaceId>,
        candidates: Vec<String>,
    ) -> Result<Vec<String>>;

    /// Writes a whole create in one transaction: the row, compute, secrets, canvas layout, token,
    /// events and idempotency record. Fails with [`Error::NameTaken`] if the name was taken
    /// concurrently, [`Error::ParentNotFound`] if the parent does not exist or is removed,
    /// [`Error::IdempotencyKeyUsed`] if another create already used the key; nothing is written
    /// on any error. With [`NewWorkspace::claim`], returns the warm-pool member the row took.
    async fn create_workspace(&self, new: NewWorkspace) -> Result<Option<ClaimedMember>>;

    /// [`Self::create_workspace`] for a workspace imported from a bundle: the same transaction
    /// also records its source bundle id, its agent card and its configuration files.
    async fn create_imported_workspace(
        &self,
        new: NewWorkspace,
        origin: WorkspaceOrigin,
    ) -> Result<Option<ClaimedMember>>;

    /// The configuration files a workspace was imported with (path → content), by path.
    async fn workspace_files(&self, id: WorkspaceId) -> Result<Vec<(String, String)>>;

    /// The edits made to a workspace's configs directory through the files API, by path
    /// (a `None` content is a deletion).
    async fn config_edits(&self, id: WorkspaceId) -> Result<Vec<ConfigEdit>>;

    /// Records edits of a workspace's configs directory, in order, in one transaction: a write
    /// replaces the path's earlier edit; a deletion also drops every edit beneath the path.
    /// [`Error::NotFound`] when the workspace does not exist.
    async fn record_config_edits(&self, id: WorkspaceId, edits: Vec<ConfigEdit>) -> Result<()>;

    /// The template a workspace was created (or last restarted) from; `None` when none was named
    /// or the workspace does not exist.
    async fn workspace_template(&self, id: WorkspaceId) -> Result<Option<String>>;

    /// Records the template a workspace's later starts build from (a restart's explicit choice).
    /// `Ok(false)` when no such workspace exists.
    async fn set_workspace_template(
        &self,
        id: WorkspaceId,
        template: Option<String>,
    ) -> Result<bool>;

    /// The saved canvas viewport, if one was saved.
    async fn viewport(&self) -> Result<Option<Viewport>>;

    /// Saves the canvas viewport (replacing the previous one).
    async fn save_viewport(&self, viewport: Viewport) -> Result<()>;

    /// The identity of this installation: a random id created by the first call on a fresh
    /// database and the same one ever after, for every server sharing the database. The Docker
    /// provisioner labels what it creates with it, so its orphan sweep leaves other
    /// installations' containers alone.
    async fn installation_id(&self) -> Result<uuid::Uuid>;

    /// Records a warm-pool member whose start begins (`starting`), its secret sealed.
    async fn add_pool_member(&self, member: NewPoolMember) -> Result<()>;

    /// A `starting` member answered: it becomes `ready` at `url`. `false` when it is no longer
    /// `starting` (removed meanwhile).
    async fn pool_member_ready(
        &self,
        id: WorkspaceId,
        url: String,
        instance_id: Option<String>,
    ) -> Result<bool>;

    /// Deletes a member no create took; `false` when there is none (or a create took it).
    async fn remove_pool_member(&self, id: WorkspaceId) -> Result<bool>;

    /// Every member, by pool and age.
    async fn pool_members(&self) -> Result<Vec<PoolMember>>;

    /// Deletes the records of members claimed before `older_than`.
    async fn prune_claimed_pool_members(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64>;

    /// The stored result of a create that used this idempotency key, if any.
    async fn idempotent_create(&self, key: &str) -> Result<Option<IdempotentCreate>>;

    /// Live workspaces in creation order, one page.
    async fn list_workspaces(&self, page: Page) -> Result<Vec<Workspace>>;

    /// One workspace, including removed ones.
    async fn get_workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>>;

    /// Applies a status transition as a compare-and-set; records its event in the same
    /// transaction only when the row changed. Returns whether it changed.
    async fn transition(&self, id: WorkspaceId, change: StatusChange) -> Result<bool>;

    /// Replaces the workspace's `workspace_config` document.
    async fn put_workspace_config(&self, id: WorkspaceId, data: serde_json::Value) -> Result<()>;

    /// The workspace's `workspace_config` document, if any.
    async fn workspace_config(&self, id: WorkspaceId) -> Result<Option<serde_json::Value>>;

    /// Shallow-merges `patch` into the workspace's `workspace_config` document in one
    /// transaction (read, merge in Rust, write), so both backends agree: each top-level key of
    /// `patch` replaces the stored one, and a key whose value is `null` is deleted. Returns the
    /// merged document. [`Error::NotFound`] for a workspace that is missing or removed.
    async fn merge_workspace_config(
        &self,
        id: WorkspaceId,
        patch: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value>;

    /// The workspace's secrets, decrypted, ordered by key.
    async fn workspace_secrets(&self, id: WorkspaceId) -> Result<Vec<(String, SecretString)>>;

    /// Secrets of one scope, without values, ordered by key.
    async fn list_secrets(&self, scope: SecretScope) -> Result<Vec<SecretInfo>>;

    /// Secrets of one scope, each opened on its own (a row sealed with an unknown key is
    /// reported in its [`OpenedSecret::value`], never returned as garbage), ordered by key.
    async fn open_secrets(&self, scope: SecretScope) -> Result<Vec<OpenedSecret>>;

    /// Upserts one secret (sealed with the active key) and records the `secret.set` audit event
    /// with `audit` as its payload, in one transaction. [`Error::NotFound`] for a workspace that
    /// is missing or removed.
    async fn set_secret(
        &self,
        scope: SecretScope,
        key: String,
        value: SecretString,
        audit: serde_json::Value,
    ) -> Result<()>;

    /// Deletes one secret and records the `secret.delete` audit event, in one transaction;
    /// `false` (and no event) when there was no such secret.
    async fn delete_secret(
        &self,
        scope: SecretScope,
        key: String,
        audit: serde_json::Value,
    ) -> Result<bool>;

    /// Workspaces a change of the global secret `key` affects: not removed or paused, not
    /// external-like, and without a workspace secret of that key overriding it.
    async fn global_secret_dependents(&self, key: String) -> Result<Vec<WorkspaceId>>;

    /// Re-seals with the active key every sealed value under another key (workspace and global
    /// secrets, idempotent responses, inbound secrets), `batch_size` rows per transaction, so an
    /// interrupted pass loses nothing and a later one continues. Each row is updated only if it
    /// did not change meanwhile. Rows under a key this server lacks are skipped and reported.
    /// `max_batches` stops early (tests, throttled tools); `None` runs to the end.
    async fn reencrypt(&self, batch_size: u32, max_batches: Option<u32>)
    -> Result<ReencryptReport>;

    /// Checks the key ring against what is stored: for every key id a sealed value uses, whether
    /// the ring has that key and it opens a sample of the values sealed under it. Returns the key
    /// ids it cannot open with, and why (empty: every key in use is present and right). The
    /// server refuses to start unless this is empty.
    async fn unreadable_key_ids(&self) -> Result<Vec<(String, CipherError)>>;

    /// The newest events first, optionally of one workspace, at most `limit`.
    async fn latest_events(
        &self,
        workspace_id: Option<WorkspaceId>,
        limit: i64,
    ) -> Result<Vec<EventRecord>>;

    /// The largest sequence id in the log (`None` when it is empty).
    async fn last_event_seq(&self) -> Result<Option<i64>>;

    /// Deletes events recorded before `older_than`; returns how many went.
    async fn prune_events(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<u64>;

    /// Events in sequence order, optionally for one workspace, after a sequence id.
    async fn events(&self, filter: EventFilter) -> Result<Vec<EventRecord>>;

    /// Wakes the event tailer when events may have been committed: after this store commits a
    /// transaction that recorded events and, on PostgreSQL, when another instance sharing the
    /// database does (`LISTEN/NOTIFY`). A hint to read the log now; the tailer still polls.
    async fn event_wakeups(&self) -> EventWakeups;

    /// Deletes idempotency records older than `older_than`; returns how many went.
    async fn prune_idempotency(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<u64>;

    /// The workspace a live token belongs to (the workspace must not be removed). Updates the
    /// token's `last_used_at` when it is older than a minute (no write per request).
    async fn validate_token(&self, hash: [u8; 32]) -> Result<Option<WorkspaceId>>;

    /// Whether the workspace has any live token.
    async fn has_live_token(&self, id: WorkspaceId) -> Result<bool>;

    /// Stores a token for a live workspace ([`Error::NotFound`] if missing or removed).
    async fn issue_token(&self, id: WorkspaceId, token: NewToken, how: IssueToken) -> Result<()>;

    /// Live tokens, newest first.
    async fn list_tokens(&self, id: WorkspaceId, limit: i64, offset: i64)
    -> Result<Vec<TokenInfo>>;

    /// Revokes one live token; `false` when there was none.
    async fn revoke_token(&self, id: WorkspaceId, token_id: uuid::Uuid) -> Result<bool>;

    /// Revokes every live token; returns how many.
    async fn revoke_tokens(&self, id: WorkspaceId) -> Result<u64>;

    /// Applies an agent's register: URL, card, delivery mode, heartbeat time and the
    /// `AgentRegistered` transition with its `WORKSPACE_ONLINE` event, in one transaction.
    /// [`Error::NotFound`] when the row is missing; [`Error::InvalidState`] when its status does
    /// not allow registration (removed, paused, hibernat*, failed).
    async fn register(&self, id: WorkspaceId, registration: Registration) -> Result<()>;

    /// Applies a batch of heartbeats in one transaction: each one's fields, then the status the
    /// domain rule derives (compare-and-set with its event), in the batch's order, each against
    /// the row as the earlier ones of the same workspace left it — what one transaction per
    /// heartbeat would do, with one read and one write statement for the whole batch. One result
    /// per heartbeat, in order: [`Error::NotFound`] for a missing or removed row. The outer error
    /// means nothing was written.
    async fn heartbeats(
        &self,
        batch: Vec<(WorkspaceId, Heartbeat)>,
    ) -> Result<Vec<Result<HeartbeatOutcome>>>;

    /// Applies one heartbeat (a batch of one).
    async fn heartbeat(&self, id: WorkspaceId, heartbeat: Heartbeat) -> Result<HeartbeatOutcome> {
        self.heartbeats(vec![(id, heartbeat)])
            .await?
            .pop()
            .unwrap_or(Err(Error::NotFound))
    }

    /// Replaces the agent card of a live workspace and records `AGENT_CARD_UPDATED`.
    async fn update_card(&self, id: WorkspaceId, card: serde_json::Value) -> Result<()>;

    /// The workspace's platform-inbound secret, decrypted.
    async fn inbound_secret(&self, id: WorkspaceId) -> Result<Option<SecretString>>;

    /// Stores (sealed) a new platform-inbound secret.
    async fn set_inbound_secret(&self, id: WorkspaceId, secret: SecretString) -> Result<()>;

    /// Records where a provisioned workspace runs (its URL and backend instance id).
    async fn set_provisioned(
        &self,
        id: WorkspaceId,
        url: Option<String>,
        instance_id: Option<String>,
    ) -> Result<()>;

    /// Workspaces in `provisioning` with their runtime and when provisioning started.
    async fn provisioning(&self) -> Result<Vec<ProvisioningRow>>;

    /// Live (non-removed) descendants of `id` at any depth, children first.
    async fn live_descendants(&self, id: WorkspaceId) -> Result<Vec<WorkspaceId>>;

    /// Marks `root` and `descendants` removed, deletes their layouts and revokes their tokens, and
    /// records `WORKSPACE_REMOVED` (`{"cascade_deleted": N}` for the root, `{}` for the others),
    /// in one transaction. Returns how many rows changed.
    async fn remove_workspaces(
        &self,
        root: WorkspaceId,
        descendants: Vec<WorkspaceId>,
    ) -> Result<u64>;

    /// Deletes every row the workspaces own and the workspaces themselves (the event log keeps
    /// its history), in one transaction.
    async fn purge_workspaces(&self, ids: Vec<WorkspaceId>) -> Result<()>;

    /// Applies a settings change in one transaction ([`Error::NameTaken`] on a sibling's name,
    /// [`Error::ParentNotFound`] for a missing parent, [`Error::NotFound`] for a missing row).
    async fn update_workspace(&self, id: WorkspaceId, patch: WorkspacePatch) -> Result<()>;

    /// The hibernation claim (REFERENCE.md §5.7): the `HibernateStarted` compare-and-set
    /// (`online`/`degraded` → `hibernating`), additionally guarded by `active_tasks = 0` when
    /// `require_idle`. Returns whether the row changed.
    async fn claim_hibernation(&self, id: WorkspaceId, require_idle: bool) -> Result<bool>;

    /// Workspaces the hibernation monitor considers (REFERENCE.md §11.3): `online`/`degraded`,
    /// not external-like, `active_tasks = 0`, `hibernation_idle_minutes > 0`.
    async fn hibernation_candidates(&self) -> Result<Vec<HibernationCandidate>>;

    /// Every workspace and its parent (removed ones included: the access rule ignores status).
    async fn hierarchy(&self) -> Result<Vec<(WorkspaceId, Option<WorkspaceId>)>>;

    /// How many live (not removed) workspaces have each status (statuses with none are absent).
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>>;

    /// Moves `online`/`degraded` workspaces whose last heartbeat (or last update, if none) is older
    /// than the cutoff of their kind to `offline` (container runtimes) or `awaiting_agent`
    /// (external-like), recording the events, in one transaction.
    async fn mark_lapsed(
        &self,
        container_cutoff: chrono::DateTime<chrono::Utc>,
        external_cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Lapsed>>;

    /// Writes one activity row and `events` (the caller's `ACTIVITY_LOGGED` and any others,
    /// recorded against the row's workspace) in one transaction; returns the stored row.
    /// [`Error::NotFound`] when the workspace does not exist or is removed (nothing is written).
    async fn log_activity(
        &self,
        entry: NewActivity,
        events: Vec<NewEvent>,
    ) -> Result<ActivityRecord>;

    /// One workspace's activity rows (REFERENCE-2.md §2.5): newest first, or, with a `since_id`
    /// cursor, the rows after it in write order. [`Error::NotFound`] when the cursor is not a row
    /// of this workspace.
    async fn activity(
        &self,
        workspace_id: WorkspaceId,
        query: ActivityQuery,
    ) -> Result<Vec<ActivityRecord>>;

    /// Deletes activity rows written before `older_than`, in bounded batches; returns how many.
    async fn prune_activity(&self, older_than: chrono::DateTime<chrono::Utc>) -> Result<u64>;

    /// One workspace's activity rows for `GET /workspaces/{id}/session-search` (REFERENCE-2.md
    /// §2.6), newest first, at most `limit` (clamped to 1..=[`SESSION_SEARCH_MAX`]); with a
    /// `term`, only rows whose summary, type, method, status or documents contain it
    /// (case-insensitively; `%` and `_` match themselves).
    async fn search_activity(
        &self,
        workspace_id: WorkspaceId,
        term: Option<String>,
        limit: i64,
    ) -> Result<Vec<ActivityRecord>>;

    /// Queues a message for a busy target (REFERENCE-2.md §4.12) in one transaction: refused
    /// ([`Enqueued::Full`]) when the target already has `max_pending` pending items, answered
    /// with the pending item ([`Enqueued::Duplicate`]) when one has the same idempotency key.
    /// [`Error::NotFound`] when the target does not exist.
    async fn enqueue_a2a(&self, item: NewQueueItem) -> Result<Enqueued>;

    /// Claims the target's next deliverable item (highest priority, then oldest; not expired)
    /// and marks it `dispatched` with one more attempt, unless another item of the target is
    /// already `dispatched` (one delivery per target at a time keeps them in order).
    async fn claim_a2a(
        &self,
        workspace_id: WorkspaceId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<QueueItem>>;

    /// Ends the attempt of a `dispatched` item; `false` when it was not `dispatched`.
    async fn settle_a2a(&self, id: uuid::Uuid, settle: QueueSettle) -> Result<bool>;

    /// One queue item.
    async fn a2a_queue_item(&self, id: uuid::Uuid) -> Result<Option<QueueItem>>;

    /// A target's queue items, oldest first (every status).
    async fn a2a_queue_of(&self, workspace_id: WorkspaceId) -> Result<Vec<QueueItem>>;

    /// A target's queue for a reader (`GET /workspaces/{id}/a2a/queue`), at most `limit` items
    /// (the caller bounds it): the pending ones first in delivery order (`dispatched`, then
    /// `queued` by priority and age), then the finished ones, newest first. The default reads
    /// [`WorkspaceStore::a2a_queue_of`] and cuts it; a store can answer with one bounded query
    /// instead.
    async fn a2a_queue_page(
        &self,
        workspace_id: WorkspaceId,
        limit: usize,
    ) -> Result<Vec<QueueItem>> {
        Ok(queue::page(self.a2a_queue_of(workspace_id).await?, limit))
    }

    /// Targets with deliverable `queued` items.
    async fn a2a_queued_targets(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<WorkspaceId>>;

    /// Queue upkeep: expired `queued` items become `dropped`, `dispatched` items whose attempt
    /// started before `stale_before` (a crash or a lost drain) go back to `queued`, and items
    /// that finished (`completed`, `failed`, `dropped`) before `finished_before` are deleted.
    /// Returns (dropped, requeued, deleted).
    async fn a2a_queue_upkeep(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        stale_before: chrono::DateTime<chrono::Utc>,
        finished_before: chrono::DateTime<chrono::Utc>,
    ) -> Result<(u64, u64, u64)>;

    /// Marks `queued` items enqueued before `older_than` (of one target, or all) `dropped`.
    async fn drop_stale_a2a(
        &self,
        older_than: chrono::DateTime<chrono::Utc>,
        workspace_id: Option<WorkspaceId>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64>;

    /// Sets a live workspace's `last_outbound_at` (its A2A message was delivered).
    async fn touch_last_outbound(
        &self,
        id: WorkspaceId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;

    /// Adds one response's token usage to the workspace's row of the UTC day starting at
    /// `period_start` (§4.14). [`Error::NotFound`] when the workspace does not exist.
    async fn add_token_usage(
        &self,
        id: WorkspaceId,
        period_start: chrono::DateTime<chrono::Utc>,
        input_tokens: i64,
        output_tokens: i64,
        cost_usd: f64,
    ) -> Result<()>;

    /// The workspace's token-usage rows, oldest day first.
    async fn token_usage(&self, id: WorkspaceId) -> Result<Vec<TokenUsage>>;
}

/// Shorthand used by [`WorkspaceStore::transition`] callers.
impl StatusChange {
    /// A change with an empty event payload.
    pub fn new(transition: Transition) -> Self {
        Self {
            transition,
            payload: serde_json::json!({}),
            failure: None,
        }
    }
}
