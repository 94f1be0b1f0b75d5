//! Records written to and read from the store.

use berth_domain::WorkspaceId;
use berth_domain::event::EventType;
use berth_domain::status::{Transition, WorkspaceStatus};
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::SecretString;
use uuid::Uuid;

/// The current time at the precision both databases keep (microseconds).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Everything one create writes, in one transaction.
#[derive(Debug)]
pub struct NewWorkspace {
    /// The new id.
    pub id: WorkspaceId,
    /// The final (possibly auto-suffixed) name.
    pub name: String,
    /// Role, `None` when empty.
    pub role: Option<String>,
    /// Tier 1–4.
    pub tier: i64,
    /// Runtime label.
    pub runtime: String,
    /// Status the row starts in (`provisioning`, or the external branch's result).
    pub status: WorkspaceStatus,
    /// Agent URL (external workspaces only).
    pub url: Option<String>,
    /// Parent workspace.
    pub parent_id: Option<WorkspaceId>,
    /// Host directory.
    pub workspace_dir: Option<String>,
    /// `none` / `read_only` / `read_write`.
    pub workspace_access: String,
    /// Budget in cents.
    pub budget_limit: Option<i64>,
    /// Max concurrent tasks (≥ 1).
    pub max_concurrent_tasks: i64,
    /// `push` / `poll`.
    pub delivery_mode: String,
    /// Canonical compute JSON (`{}` when zero).
    pub compute: serde_json::Value,
    /// Initial secrets, including `MODEL` / `LLM_PROVIDER`; sealed by the store.
    pub secrets: Vec<(String, SecretString)>,
    /// Canvas position.
    pub canvas: (f64, f64),
    /// A workspace token to store (hash only).
    pub token: Option<NewToken>,
    /// The platform-inbound secret to store (sealed), when the create already mints it (a
    /// warm-pool claim hands the running agent its credentials at once).
    pub inbound_secret: Option<SecretString>,
    /// Events to append, in order.
    pub events: Vec<NewEvent>,
    /// When provisioning started (the provision-timeout clock), for container workspaces.
    pub provisioning_started_at: Option<DateTime<Utc>>,
    /// The idempotency record to store with the create.
    pub idempotency: Option<NewIdempotency>,
    /// The template it was created from (`None`: none named), read back by every later start.
    pub template: Option<String>,
    /// A warm-pool shape to claim a ready member of, in this transaction. When one is ready,
    /// the row takes the member's id instead of [`Self::id`] (so do its secrets, layout, events
    /// and idempotency record, whose body's top-level `"id"` is rewritten), and the member's URL
    /// and instance id are recorded as the provisioner's; the member is returned. When none is
    /// ready the create goes on as if no claim was asked for.
    pub claim: Option<String>,
}

/// A workspace token to store: never the plaintext.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Row id.
    pub id: Uuid,
    /// SHA-256 of the plaintext token.
    pub hash: [u8; 32],
    /// First 8 characters of the plaintext.
    pub prefix: String,
}

/// An event to append to the log.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Event name.
    pub event_type: EventType,
    /// JSON payload.
    pub payload: serde_json::Value,
}

/// The result of a create, kept for `Idempotency-Key` retries.
#[derive(Debug, Clone)]
pub struct NewIdempotency {
    /// The client's key.
    pub key: String,
    /// SHA-256 of the canonical request, to refuse a reused key with a different request.
    pub request_hash: [u8; 32],
    /// HTTP status of the first response.
    pub status: u16,
    /// Body of the first response (sealed at rest: it can carry a token).
    pub body: SecretString,
}

/// A stored create result.
#[derive(Debug, Clone)]
pub struct IdempotentCreate {
    /// The workspace the first request created.
    pub workspace_id: WorkspaceId,
    /// SHA-256 of the first request.
    pub request_hash: [u8; 32],
    /// HTTP status of the first response.
    pub status: u16,
    /// Body of the first response.
    pub body: SecretString,
}

/// A page request for lists in creation order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    /// Resume after this `(created_at, id)` position.
    pub after: Option<(DateTime<Utc>, WorkspaceId)>,
    /// At most this many rows (`None` = all).
    pub limit: Option<i64>,
}

/// A status change: a transition plus what to record with it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The transition (see the table in `berth_domain::status`).
    pub transition: Transition,
    /// Payload of the recorded event.
    pub payload: serde_json::Value,
    /// For failures: `(code, human message)`, kept on the row.
    pub failure: Option<(String, String)>,
}

/// Which events to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Only this workspace's events.
    pub workspace_id: Option<WorkspaceId>,
    /// Only events with a larger sequence id.
    pub after_seq: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<i64>,
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Monotonic sequence id (the resume cursor).
    pub seq: i64,
    /// Event id.
    pub id: Uuid,
    /// Event name.
    pub event_type: String,
    /// Workspace the event is about.
    pub workspace_id: Option<WorkspaceId>,
    /// JSON payload.
    pub payload: serde_json::Value,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// A workspace as List and Get read it (the row joined with its canvas layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    /// Id.
    pub id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Option<String>,
    /// Tier.
    pub tier: i64,
    /// Status.
    pub status: WorkspaceStatus,
    /// Agent card JSON.
    pub agent_card: Option<serde_json::Value>,
    /// Agent URL.
    pub url: Option<String>,
    /// Whether `url` was reported by berth's own provisioner (trusted: the platform set that
    /// address up itself) rather than supplied by a user or an agent (checked against the SSRF
    /// policy on every dispatch).
    pub url_from_provisioner: bool,
    /// Parent.
    pub parent_id: Option<WorkspaceId>,
    /// Active tasks.
    pub active_tasks: i64,
    /// Max concurrent tasks.
    pub max_concurrent_tasks: i64,
    /// Last error rate.
    pub last_error_rate: f64,
    /// Human-readable failure reason / last sample error.
    pub last_sample_error: Option<String>,
    /// Machine-readable failure reason.
    pub failure_code: Option<String>,
    /// Uptime.
    pub uptime_seconds: i64,
    /// Current task.
    pub current_task: Option<String>,
    /// Runtime.
    pub runtime: String,
    /// Host directory.
    pub workspace_dir: Option<String>,
    /// Workspace access mode.
    pub workspace_access: String,
    /// Delivery mode.
    pub delivery_mode: String,
    /// Canvas x.
    pub x: f64,
    /// Canvas y.
    pub y: f64,
    /// Canvas collapsed flag.
    pub collapsed: bool,
    /// Budget in cents.
    pub budget_limit: Option<i64>,
    /// Spend this month in cents.
    pub monthly_spend: i64,
    /// Broadcast ability.
    pub broadcast_enabled: bool,
    /// Talk-to-user ability.
    pub talk_to_user_enabled: bool,
    /// Compute JSON.
    pub compute: serde_json::Value,
    /// Last outbound A2A.
    pub last_outbound_at: Option<DateTime<Utc>>,
    /// The last heartbeat (or registration) the agent sent.
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last updated (the removal time of removed rows).
    pub updated_at: DateTime<Utc>,
}

/// A live token as listed (never the plaintext or the hash).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// Token row id.
    pub id: Uuid,
    /// First 8 characters of the plaintext.
    pub prefix: String,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Last authenticated use (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// How to issue a token.
#[derive(Debug, Clone, Default)]
pub struct IssueToken {
    /// Revoke every live token of the workspace first (rotate, provisioning).
    pub revoke_existing: bool,
    /// Refuse with [`crate::Error::TooManyTokens`] when this many are already live.
    pub max_live: Option<i64>,
    /// An event to record in the same transaction.
    pub event: Option<NewEvent>,
}

/// What an agent's register writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The agent URL (`None` keeps the stored one).
    pub url: Option<String>,
    /// The (reconciled) agent card.
    pub agent_card: serde_json::Value,
    /// The effective delivery mode.
    pub delivery_mode: String,
    /// Payload of the `WORKSPACE_ONLINE` event.
    pub event_payload: serde_json::Value,
    /// Refuse (as a conflict with the current status) unless the row already has a URL: set for
    /// workspaces whose backend reports the URL, so `online` always comes with one.
    pub require_url: bool,
}

/// What a heartbeat writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Error rate.
    pub error_rate: f64,
    /// Sample error.
    pub sample_error: String,
    /// Active tasks.
    pub active_tasks: i64,
    /// Uptime.
    pub uptime_seconds: i64,
    /// Current task.
    pub current_task: String,
    /// Spend this month (only written when present).
    pub monthly_spend: Option<i64>,
    /// The status-relevant report.
    pub report: berth_domain::heartbeat::HeartbeatReport,
    /// Do not come `online` through this heartbeat while the row has no URL (see
    /// [`Registration::require_url`]).
    pub require_url: bool,
}

/// What a heartbeat did.
#[derive(Debug, Clone)]
pub struct HeartbeatOutcome {
    /// Status before the heartbeat.
    pub previous_status: WorkspaceStatus,
    /// Status after it.
    pub status: WorkspaceStatus,
    /// Whether `current_task` changed.
    pub task_changed: bool,
    /// The workspace's concurrency limit.
    pub max_concurrent_tasks: i64,
    /// The workspace's platform-inbound secret (read in the heartbeat's transaction, so the
    /// answer needs no second query), `None` when none was minted yet.
    pub inbound_secret: Option<secrecy::SecretString>,
    /// A2A messages waiting (`queued`) for the workspace when it beat.
    pub a2a_queued: i64,
}

/// A workspace whose liveness lapsed and the status it was moved to.
#[derive(Debug, Clone, PartialEq)]
pub struct Lapsed {
    /// The workspace.
    pub id: WorkspaceId,
    /// `offline` or `awaiting_agent`.
    pub status: WorkspaceStatus,
}

/// A change to a workspace's settings (`PATCH /workspaces/{id}`); `None` leaves a field alone,
/// `Some(None)` clears a nullable one. Applied in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkspacePatch {
    /// New name.
    pub name: Option<String>,
    /// New role (`Some(None)` clears).
    pub role: Option<Option<String>>,
    /// New tier.
    pub tier: Option<i64>,
    /// New parent (`Some(None)` makes it a root).
    pub parent_id: Option<Option<WorkspaceId>>,
    /// New runtime.
    pub runtime: Option<String>,
    /// New host directory (`Some(None)` clears).
    pub workspace_dir: Option<Option<String>>,
    /// Hibernation idle minutes (`Some(None)` disables).
    pub hibernation_idle_minutes: Option<Option<i64>>,
    /// Canvas position.
    pub position: Option<(f64, f64)>,
    /// Canvas collapsed flag.
    pub collapsed: Option<bool>,
    /// Budget in USD cents (`Some(None)` makes it unlimited).
    pub budget_limit: Option<Option<i64>>,
    /// The broadcast ability.
    pub broadcast_enabled: Option<bool>,
    /// The talk-to-user ability.
    pub talk_to_user_enabled: Option<bool>,
}

/// A workspace the hibernation monitor may put to sleep: `online`/`degraded`, not external-like,
/// no active tasks, `hibernation_idle_minutes` set. Whether it has been idle long enough is the
/// caller's arithmetic (timestamps compare the same way in Rust for both backends).
#[derive(Debug, Clone, PartialEq)]
pub struct HibernationCandidate {
    /// The workspace.
    pub id: WorkspaceId,
    /// Its idle window in minutes (> 0).
    pub idle_minutes: i64,
    /// The last sign of activity: the newest of its latest recorded event (status changes, task
    /// changes, card updates, …), its last outbound message, and its creation. Heartbeats that
    /// change nothing do not count, so a healthy idle agent still becomes a candidate
    /// (REFERENCE.md §12 #30).
    pub last_active_at: DateTime<Utc>,
}

/// A workspace in `provisioning`: its id, runtime, and when provisioning started.
pub type ProvisioningRow = (WorkspaceId, String, Option<DateTime<Utc>>);

/// Whose secret: one workspace's, or the global set every workspace inherits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretScope {
    /// A workspace secret (overrides a global one of the same key).
    Workspace(WorkspaceId),
    /// A global secret.
    Global,
}

impl SecretScope {
    /// The workspace, for a workspace secret.
    pub fn workspace_id(self) -> Option<WorkspaceId> {
        match self {
            Self::Workspace(id) => Some(id),
            Self::Global => None,
        }
    }
}

/// A stored secret as listed: never its value.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretInfo {
    /// The key (an environment variable name).
    pub key: String,
    /// Id of the key ring key that sealed the value.
    pub key_id: String,
    /// First written.
    pub created_at: DateTime<Utc>,
    /// Last written.
    pub updated_at: DateTime<Utc>,
}

/// A stored secret, opened: the value, or why it could not be opened (e.g. sealed with a key
/// this server does not have). One bad row never hides the others.
#[derive(Debug)]
pub struct OpenedSecret {
    /// The key.
    pub key: String,
    /// Id of the key ring key that sealed the value.
    pub key_id: String,
    /// The plaintext, or the cipher error.
    pub value: std::result::Result<SecretString, crate::CipherError>,
}

/// What a re-encryption pass did.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReencryptReport {
    /// The key every re-sealed row now uses.
    pub active_key_id: String,
    /// Rows re-sealed by this pass.
    pub rows: u64,
    /// Sealed rows still under another key afterwards, by key id (rows sealed with a key this
    /// server does not have, or a pass stopped early). Empty when the rotation is complete.
    pub remaining_by_key_id: std::collections::BTreeMap<String, u64>,
}
