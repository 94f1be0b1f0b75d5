//! The SQL both backends run, and the macro that stamps out the [`WorkspaceStore`] implementation
//! for each of them.
//!
//! The statements use only `$n` placeholders and the portable type set (UUID, TEXT, BIGINT,
//! DOUBLE, BOOLEAN, one timestamp type, JSON), so the same text serves PostgreSQL and SQLite. The
//! dialect differences live in the migrations, in how each backend opens its transaction, and in
//! the row lock of [`lock_live_workspace_sql`] (PostgreSQL only).
//!
//! [`WorkspaceStore`]: crate::WorkspaceStore

use berth_domain::WorkspaceId;
use berth_domain::status::{Transition, WorkspaceStatus};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Error, Workspace};

/// Columns List and Get read: the row joined with its layout.
pub(crate) const SELECT_WORKSPACE: &str = "\
SELECT w.id, w.name, w.role, w.tier, w.status, w.agent_card, w.url, w.parent_id, w.active_tasks, \
w.max_concurrent_tasks, w.last_error_rate, w.last_sample_error, w.failure_code, w.uptime_seconds, \
w.current_task, w.runtime, w.workspace_dir, w.workspace_access, w.delivery_mode, cl.x, cl.y, \
cl.collapsed, w.budget_limit, w.monthly_spend, w.broadcast_enabled, w.talk_to_user_enabled, \
w.compute, w.last_outbound_at, w.created_at, w.updated_at, w.url_from_provisioner, \
w.last_heartbeat_at \
FROM workspaces w LEFT JOIN canvas_layouts cl ON cl.workspace_id = w.id";

pub(crate) const INSERT_WORKSPACE: &str = "\
INSERT INTO workspaces (id, name, role, tier, runtime, status, url, parent_id, workspace_dir, \
workspace_access, budget_limit, max_concurrent_tasks, delivery_mode, compute, \
provisioning_started_at, created_at, updated_at, template) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16, $17) \
ON CONFLICT DO NOTHING";

/// What a bundle import adds to its row (REFERENCE-2.md §3.3).
pub(crate) const SET_ORIGIN: &str =
    "UPDATE workspaces SET source_bundle_id = $1, agent_card = $2 WHERE id = $3";

pub(crate) const INSERT_FILE: &str =
    "INSERT INTO workspace_files (workspace_id, path, content) VALUES ($1, $2, $3)";

pub(crate) const SELECT_TEMPLATE: &str = "SELECT template FROM workspaces WHERE id = $1";

pub(crate) const SET_TEMPLATE: &str = "UPDATE workspaces SET template = $1 WHERE id = $2";

pub(crate) const SELECT_FILES: &str =
    "SELECT path, content FROM workspace_files WHERE workspace_id = $1 ORDER BY path";

pub(crate) const SELECT_CONFIG_EDITS: &str = "SELECT path, content FROM workspace_config_edits \
WHERE workspace_id = $1 ORDER BY path";

pub(crate) const UPSERT_CONFIG_EDIT: &str = "\
INSERT INTO workspace_config_edits (workspace_id, path, content, updated_at) VALUES ($1, $2, $3, $4) \
ON CONFLICT (workspace_id, path) DO UPDATE SET content = excluded.content, \
updated_at = excluded.updated_at";

/// The edits strictly beneath a path: `$2` is the path followed by `/`, `$3` its length.
pub(crate) const DELETE_CONFIG_EDITS_BENEATH: &str = "DELETE FROM workspace_config_edits \
WHERE workspace_id = $1 AND substr(path, 1, $3) = $2";

pub(crate) const SELECT_VIEWPORT: &str = "SELECT x, y, zoom FROM canvas_viewport WHERE id = 1";

pub(crate) const UPSERT_VIEWPORT: &str = "\
INSERT INTO canvas_viewport (id, x, y, zoom, saved_at) VALUES (1, $1, $2, $3, $4) \
ON CONFLICT (id) DO UPDATE SET x = excluded.x, y = excluded.y, zoom = excluded.zoom, \
saved_at = excluded.saved_at";

/// Creates the installation row unless there is one; concurrent first starts on one database
/// agree (the loser's insert does nothing).
pub(crate) const INSERT_INSTALLATION: &str = "\
INSERT INTO installation (id, installation_id, created_at) VALUES (1, $1, $2) \
ON CONFLICT (id) DO NOTHING";

pub(crate) const SELECT_INSTALLATION: &str =
    "SELECT installation_id FROM installation WHERE id = 1";

/// Whether the backend needs explicit row locks. PostgreSQL does (its transactions run side by
/// side); SQLite does not: its write transactions (`BEGIN IMMEDIATE`) already run one at a time.
pub(crate) fn row_locks(database: &str) -> bool {
    database == "PostgreSQL"
}

/// Reads a live workspace row and, on PostgreSQL, locks it until the transaction ends (a
/// removal running meanwhile is waited for and then seen). The one dialect difference of the
/// statements: SQLite has no `FOR UPDATE` and needs none (see [`row_locks`]).
pub(crate) fn lock_live_workspace_sql(database: &str) -> &'static str {
    if row_locks(database) {
        "SELECT id FROM workspaces WHERE id = $1 AND status <> 'removed' FOR UPDATE"
    } else {
        "SELECT id FROM workspaces WHERE id = $1 AND status <> 'removed'"
    }
}

pub(crate) const UPSERT_WORKSPACE_SECRET: &str = "\
INSERT INTO workspace_secrets (id, workspace_id, key, encrypted_value, key_id, created_at, updated_at) \
VALUES ($1, $2, $3, $4, $5, $6, $6) \
ON CONFLICT (workspace_id, key) DO UPDATE SET encrypted_value = excluded.encrypted_value, \
key_id = excluded.key_id, updated_at = excluded.updated_at";

pub(crate) const INSERT_LAYOUT: &str =
    "INSERT INTO canvas_layouts (workspace_id, x, y) VALUES ($1, $2, $3)";

pub(crate) const INSERT_TOKEN: &str = "\
INSERT INTO workspace_auth_tokens (id, workspace_id, token_hash, prefix, created_at) \
VALUES ($1, $2, $3, $4, $5)";

pub(crate) const INSERT_EVENT: &str = "\
INSERT INTO structure_events (id, event_type, workspace_id, payload, created_at) \
VALUES ($1, $2, $3, $4, $5)";

pub(crate) const INSERT_IDEMPOTENCY: &str = "\
INSERT INTO idempotency_keys (key, request_hash, workspace_id, response_status, response_body, key_id, created_at) \
VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";

pub(crate) const SELECT_IDEMPOTENCY: &str = "\
SELECT key, request_hash, workspace_id, response_status, response_body, key_id \
FROM idempotency_keys WHERE key = $1";

pub(crate) const PRUNE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";

pub(crate) const UPSERT_CONFIG: &str = "\
INSERT INTO workspace_config (workspace_id, data, updated_at) VALUES ($1, $2, $3) \
ON CONFLICT (workspace_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at";

pub(crate) const SELECT_CONFIG: &str = "SELECT data FROM workspace_config WHERE workspace_id = $1";

pub(crate) const SELECT_SECRETS: &str = "\
SELECT key, encrypted_value, key_id FROM workspace_secrets WHERE workspace_id = $1 ORDER BY key";

pub(crate) const SELECT_WORKSPACE_SECRET_INFO: &str = "\
SELECT key, key_id, created_at, updated_at FROM workspace_secrets WHERE workspace_id = $1 ORDER BY key";

pub(crate) const SELECT_GLOBAL_SECRET_INFO: &str =
    "SELECT key, key_id, created_at, updated_at FROM global_secrets ORDER BY key";

pub(crate) const SELECT_GLOBAL_SECRETS: &str =
    "SELECT key, encrypted_value, key_id FROM global_secrets ORDER BY key";

pub(crate) const UPSERT_GLOBAL_SECRET: &str = "\
INSERT INTO global_secrets (id, key, encrypted_value, key_id, created_at, updated_at) \
VALUES ($1, $2, $3, $4, $5, $5) \
ON CONFLICT (key) DO UPDATE SET encrypted_value = excluded.encrypted_value, \
key_id = excluded.key_id, updated_at = excluded.updated_at";

pub(crate) const DELETE_WORKSPACE_SECRET: &str =
    "DELETE FROM workspace_secrets WHERE workspace_id = $1 AND key = $2";

pub(crate) const DELETE_GLOBAL_SECRET: &str = "DELETE FROM global_secrets WHERE key = $1";

/// Workspaces a global secret change restarts (REFERENCE.md §2.18, with the external-like
/// predicate instead of the literal `'external'`, §12 #48).
pub(crate) const GLOBAL_SECRET_DEPENDENTS: &str = "\
SELECT w.id FROM workspaces w \
WHERE w.status NOT IN ('removed', 'paused') AND NOT w.external_like \
AND NOT EXISTS (SELECT 1 FROM workspace_secrets s WHERE s.workspace_id = w.id AND s.key = $1) \
ORDER BY w.created_at, w.id";

pub(crate) const LATEST_EVENTS: &str = "\
SELECT seq, id, event_type, workspace_id, payload, created_at FROM structure_events \
ORDER BY seq DESC LIMIT $1";

pub(crate) const LATEST_EVENTS_OF: &str = "\
SELECT seq, id, event_type, workspace_id, payload, created_at FROM structure_events \
WHERE workspace_id = $1 ORDER BY seq DESC LIMIT $2";

pub(crate) const LAST_EVENT_SEQ: &str = "SELECT MAX(seq) FROM structure_events";

pub(crate) const PRUNE_EVENTS: &str = "DELETE FROM structure_events WHERE created_at < $1";

/// Event name of the audit record of a secret write.
pub(crate) const SECRET_SET_EVENT: &str = "secret.set";
/// Event name of the audit record of a secret delete.
pub(crate) const SECRET_DELETE_EVENT: &str = "secret.delete";

/// Associated data binding a sealed global secret to its key.
pub(crate) fn global_secret_aad(key: &str) -> Vec<u8> {
    format!("global_secrets/{key}").into_bytes()
}

/// Which associated data a sealed column uses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AadKind {
    WorkspaceSecret,
    GlobalSecret,
    Idempotency,
    Inbound,
}

/// One table holding sealed values, as the re-encryption pass walks it. Every select returns
/// `(cursor, owner workspace, key, sealed bytes, key id)`; `$1` is the active key id.
pub(crate) struct SealedTable {
    pub(crate) name: &'static str,
    pub(crate) aad: AadKind,
    /// `$2` limit.
    pub(crate) select_first: &'static str,
    /// `$2` cursor, `$3` limit.
    pub(crate) select_after: &'static str,
    /// `$1` new bytes, `$2` new key id, `$3` cursor, `$4` old key id, `$5` old bytes: a
    /// compare-and-set, so a value rewritten meanwhile is left alone.
    pub(crate) update: &'static str,
    /// `(key id, rows)` not under `$1`.
    pub(crate) count: &'static str,
    /// `(owner, key, bytes)` of a few rows under key id `$1`.
    pub(crate) sample: &'static str,
}

impl SealedTable {
    pub(crate) fn aad(&self, owner: Option<Uuid>, key: &str) -> Vec<u8> {
        let owner = owner.map(WorkspaceId::from);
        match (self.aad, owner) {
            (AadKind::WorkspaceSecret, Some(id)) => secret_aad(id, key),
            (AadKind::Inbound, Some(id)) => inbound_aad(id),
            (AadKind::GlobalSecret, _) => global_secret_aad(key),
            (AadKind::Idempotency, _) => idempotency_aad(key),
            // Never produced by the selects below (the owner column is NOT NULL there).
            (AadKind::WorkspaceSecret | AadKind::Inbound, None) => Vec::new(),
        }
    }
}

pub(crate) const WORKSPACE_SECRETS_TABLE: SealedTable = SealedTable {
    name: "workspace_secrets",
    aad: AadKind::WorkspaceSecret,
    select_first: "SELECT id, workspace_id, key, encrypted_value, key_id FROM workspace_secrets \
                   WHERE key_id <> $1 ORDER BY id LIMIT $2",
    select_after: "SELECT id, workspace_id, key, encrypted_value, key_id FROM workspace_secrets \
                   WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3",
    update: "UPDATE workspace_secrets SET encrypted_value = $1, key_id = $2 \
             WHERE id = $3 AND key_id = $4 AND encrypted_value = $5",
    count: "SELECT key_id, COUNT(*) FROM workspace_secrets WHERE key_id <> $1 GROUP BY key_id",
    sample: "SELECT workspace_id, key, encrypted_value FROM workspace_secrets WHERE key_id = $1 LIMIT 3",
};

pub(crate) const GLOBAL_SECRETS_TABLE: SealedTable = SealedTable {
    name: "global_secrets",
    aad: AadKind::GlobalSecret,
    select_first: "SELECT id, id, key, encrypted_value, key_id FROM global_secrets \
                   WHERE key_id <> $1 ORDER BY id LIMIT $2",
    select_after: "SELECT id, id, key, encrypted_value, key_id FROM global_secrets \
                   WHERE key_id <> $1 AND id > $2 ORDER BY id LIMIT $3",
    update: "UPDATE global_secrets SET encrypted_value = $1, key_id = $2 \
             WHERE id = $3 AND key_id = $4 AND encrypted_value = $5",
    count: "SELECT key_id, COUNT(*) FROM global_secrets WHERE key_id <> $1 GROUP BY key_id",
    sample: "SELECT id, key, encrypted_value FROM global_secrets WHERE key_id = $1 LIMIT 3",
};

pub(crate) const IDEMPOTENCY_TABLE: SealedTable = SealedTable {
    name: "idempotency_keys",
    aad: AadKind::Idempotency,
    select_first: "SELECT key, workspace_id, key, response_body, key_id FROM idempotency_keys \
                   WHERE key_id <> $1 ORDER BY key LIMIT $2",
    select_after: "SELECT key, workspace_id, key, response_body, key_id FROM idempotency_keys \
                   WHERE key_id <> $1 AND key > $2 ORDER BY key LIMIT $3",
    update: "UPDATE idempotency_keys SET response_body = $1, key_id = $2 \
             WHERE key = $3 AND key_id = $4 AND response_body = $5",
    count: "SELECT key_id, COUNT(*) FROM idempotency_keys WHERE key_id <> $1 GROUP BY key_id",
    sample: "SELECT workspace_id, key, response_body FROM idempotency_keys WHERE key_id = $1 LIMIT 3",
};

pub(crate) const INBOUND_TABLE: SealedTable = SealedTable {
    name: "workspaces.inbound_secret",
    aad: AadKind::Inbound,
    select_first: "SELECT id, id, name, inbound_secret, inbound_secret_key_id FROM workspaces \
                   WHERE inbound_secret IS NOT NULL AND inbound_secret_key_id <> $1 \
                   ORDER BY id LIMIT $2",
    select_after: "SELECT id, id, name, inbound_secret, inbound_secret_key_id FROM workspaces \
                   WHERE inbound_secret IS NOT NULL AND inbound_secret_key_id <> $1 AND id > $2 \
                   ORDER BY id LIMIT $3",
    update: "UPDATE workspaces SET inbound_secret = $1, inbound_secret_key_id = $2 \
             WHERE id = $3 AND inbound_secret_key_id = $4 AND inbound_secret = $5",
    count: "SELECT inbound_secret_key_id, COUNT(*) FROM workspaces \
            WHERE inbound_secret IS NOT NULL AND inbound_secret_key_id <> $1 \
            GROUP BY inbound_secret_key_id",
    sample: "SELECT id, name, inbound_secret FROM workspaces \
             WHERE inbound_secret IS NOT NULL AND inbound_secret_key_id = $1 LIMIT 3",
};

/// `UPDATE … WHERE status IN (…)` for a transition leaving from `n_from` statuses. A URL the
/// provisioner reported belongs to the agent it started: it goes when that agent does (a new
/// start, a pause, a hibernation), so `url` never names a stopped agent's port. Placeholders:
/// `$1` new status, `$2` now, `$3` failure message, `$4` failure code, `$5` id, `$6…` statuses.
pub(crate) fn transition_sql(n_from: usize) -> String {
    let list: Vec<String> = (0..n_from).map(|i| format!("${}", i + 6)).collect();
    format!(
        "UPDATE workspaces SET status = $1, updated_at = $2, \
         last_sample_error = CASE WHEN $4 IS NULL THEN last_sample_error ELSE $3 END, \
         failure_code = CASE WHEN $4 IS NULL THEN failure_code ELSE $4 END, \
         provisioning_started_at = CASE WHEN $1 = 'provisioning' THEN $2 ELSE provisioning_started_at END, \
         url = CASE WHEN $1 = 'hibernated' AND NOT external_like THEN NULL \
                    WHEN $1 IN ('provisioning', 'paused') AND url_from_provisioner THEN NULL \
                    ELSE url END, \
         url_from_provisioner = CASE WHEN ($1 = 'hibernated' AND NOT external_like) \
                                       OR $1 IN ('provisioning', 'paused') THEN FALSE \
                                     ELSE url_from_provisioner END \
         WHERE id = $5 AND status IN ({})",
        list.join(", ")
    )
}

/// The hibernation claim: the `HibernateStarted` transition, optionally only when idle.
/// `$1` now, `$2` id.
pub(crate) fn claim_hibernation_sql(require_idle: bool) -> String {
    format!(
        "UPDATE workspaces SET status = '{}', updated_at = $1 WHERE id = $2 AND status IN ({}){}",
        Transition::HibernateStarted.to().as_str(),
        status_list(Transition::HibernateStarted.from()),
        if require_idle {
            " AND active_tasks = 0"
        } else {
            ""
        }
    )
}

/// Hibernation monitor candidates with what their idle clock is made of.
pub(crate) const HIBERNATION_CANDIDATES: &str = "\
SELECT w.id, w.hibernation_idle_minutes, w.created_at, w.last_outbound_at, \
(SELECT MAX(e.created_at) FROM structure_events e WHERE e.workspace_id = w.id) AS last_event_at \
FROM workspaces w \
WHERE w.hibernation_idle_minutes > 0 AND w.status IN ('online', 'degraded') \
AND w.active_tasks = 0 AND NOT w.external_like \
ORDER BY w.created_at, w.id";

/// Touches the config row first (the write lock: SQLite's `BEGIN IMMEDIATE` already holds it,
/// PostgreSQL row-locks it until commit), so concurrent merges serialise. `$1` id, `$2` now.
pub(crate) const LOCK_CONFIG: &str = "\
INSERT INTO workspace_config (workspace_id, data, updated_at) VALUES ($1, '{}', $2) \
ON CONFLICT (workspace_id) DO UPDATE SET updated_at = excluded.updated_at";

/// `SELECT name … WHERE name IN (…)` among live siblings: `$1` is the parent (the nil id at the
/// root level), `$2…` the names. The parent is compared through the very expression of the
/// `workspaces_parent_name_uniq` index (and the query repeats its `WHERE`), so both databases
/// answer from that index: `parent_id IS NULL` could not use it and read every root workspace
/// per create (found by the soak: creates slowed to ~100/s at 55,000 workspaces on SQLite).
pub(crate) fn taken_names_sql(sqlite: bool, n: usize) -> String {
    let nil = if sqlite {
        "X'00000000000000000000000000000000'"
    } else {
        "'00000000-0000-0000-0000-000000000000'::uuid"
    };
    format!(
        "SELECT name FROM workspaces WHERE COALESCE(parent_id, {nil}) = $1 \
         AND status <> 'removed' AND name IN ({})",
        placeholders(2, n)
    )
}

/// Events query with optional filters. `$1` workspace, `$2` after, `$3` limit.
pub(crate) fn events_sql(by_workspace: bool, after: bool) -> String {
    let mut sql = String::from(
        "SELECT seq, id, event_type, workspace_id, payload, created_at FROM structure_events WHERE 1 = 1",
    );
    if by_workspace {
        sql.push_str(" AND workspace_id = $1");
    }
    if after {
        sql.push_str(if by_workspace {
            " AND seq > $2"
        } else {
            " AND seq > $1"
        });
    }
    let limit_n = 1 + usize::from(by_workspace) + usize::from(after);
    sql.push_str(&format!(" ORDER BY seq LIMIT ${limit_n}"));
    sql
}

/// List query with an optional keyset cursor.
pub(crate) fn list_sql(after: bool, limit: bool) -> String {
    let mut sql = format!("{SELECT_WORKSPACE} WHERE w.status <> 'removed'");
    if after {
        sql.push_str(" AND (w.created_at > $1 OR (w.created_at = $1 AND w.id > $2))");
    }
    sql.push_str(" ORDER BY w.created_at, w.id");
    if limit {
        sql.push_str(if after { " LIMIT $3" } else { " LIMIT $1" });
    }
    sql
}

pub(crate) const VALIDATE_TOKEN: &str = "\
SELECT t.id, t.workspace_id, t.last_used_at FROM workspace_auth_tokens t \
JOIN workspaces w ON w.id = t.workspace_id \
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND w.status <> 'removed'";

pub(crate) const COUNT_LIVE_TOKENS: &str =
    "SELECT COUNT(*) FROM workspace_auth_tokens WHERE workspace_id = $1 AND revoked_at IS NULL";

pub(crate) const REVOKE_TOKENS: &str = "UPDATE workspace_auth_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND revoked_at IS NULL";

pub(crate) const REVOKE_TOKEN: &str = "\
UPDATE workspace_auth_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND id = $3 AND revoked_at IS NULL";

pub(crate) const LIST_TOKENS: &str = "\
SELECT id, prefix, created_at, last_used_at FROM workspace_auth_tokens \
WHERE workspace_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT $2 OFFSET $3";

pub(crate) const WORKSPACE_STATUS: &str = "SELECT status FROM workspaces WHERE id = $1";

/// Rows per statement of a heartbeat batch (the store splits a larger batch, in one
/// transaction): 7 parameters a row stays far below SQLite's and PostgreSQL's limits.
pub(crate) const HEARTBEAT_ROWS_PER_STATEMENT: usize = 500;

/// `$1, $2, …, $n` from `$first`.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a batch of heartbeats reads before its writes, in its transaction, for `n` workspaces:
/// the status and task each compares with, the sealed inbound secret it answers with, and how
/// many A2A messages wait in its queue (so a drain starts only when there is one).
pub(crate) fn heartbeat_before_sql(n: usize) -> String {
    format!(
        "SELECT id, status, current_task, max_concurrent_tasks, \
         inbound_secret, inbound_secret_key_id, \
         (SELECT COUNT(*) FROM a2a_queue q WHERE q.workspace_id = workspaces.id AND q.status = 'queued') \
         FROM workspaces WHERE id IN ({})",
        placeholders(1, n)
    )
}

/// A batch's heartbeat fields, `rows` workspaces in one statement: `$1` now, then per row
/// (id, error rate, sample error, active tasks, uptime, current task, spend or NULL). Standard
/// `UPDATE … FROM (VALUES …)`, which PostgreSQL and SQLite (3.33+) both run; a `VALUES` list's
/// columns are `column1…` in both.
pub(crate) fn heartbeat_update_sql(rows: usize) -> String {
    let values = (0..rows)
        .map(|r| format!("({})", placeholders(2 + r * 7, 7)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "UPDATE workspaces SET last_heartbeat_at = $1, updated_at = $1, \
         last_error_rate = v.column2, last_sample_error = v.column3, active_tasks = v.column4, \
         uptime_seconds = v.column5, current_task = v.column6, \
         monthly_spend = COALESCE(v.column7, workspaces.monthly_spend) \
         FROM (VALUES {values}) AS v \
         WHERE workspaces.id = v.column1 AND workspaces.status <> 'removed'"
    )
}

/// Register: `$1` url (NULL keeps), `$2` card, `$3` mode, `$4` now, `$5` id; only from the
/// statuses the `AgentRegistered` transition leaves from. A URL its provisioner recorded is kept:
/// the platform knows how it reaches its own agents. With `require_url` the row must already
/// have a URL (a workspace whose backend reports one is never `online` without it).
pub(crate) fn register_sql(require_url: bool) -> String {
    format!(
        "UPDATE workspaces SET \
         url = CASE WHEN $1 IS NULL OR url_from_provisioner THEN url ELSE $1 END, \
         agent_card = $2, delivery_mode = $3, last_heartbeat_at = $4, updated_at = $4, status = '{}' \
         WHERE id = $5 AND status IN ({}){}",
        Transition::AgentRegistered.to().as_str(),
        status_list(Transition::AgentRegistered.from()),
        if require_url {
            " AND (external_like OR COALESCE(url, '') <> '')"
        } else {
            ""
        }
    )
}

/// Whether the row may be `online` as far as its URL goes (`$1` id): it has one, or it is
/// external-like (its agent may use poll delivery and have none).
pub(crate) const ONLINE_URL_OK: &str =
    "SELECT external_like OR COALESCE(url, '') <> '' FROM workspaces WHERE id = $1";

/// A SQL list of status literals (static strings from the domain table, never user input).
fn status_list(statuses: &[WorkspaceStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) const UPDATE_CARD: &str =
    "UPDATE workspaces SET agent_card = $1, updated_at = $2 WHERE id = $3 AND status <> 'removed'";

pub(crate) const SELECT_INBOUND_SECRET: &str =
    "SELECT inbound_secret, inbound_secret_key_id FROM workspaces WHERE id = $1";

pub(crate) const SET_INBOUND_SECRET: &str =
    "UPDATE workspaces SET inbound_secret = $1, inbound_secret_key_id = $2 WHERE id = $3";

/// Only while the start's agent may run: a start that a pause, hibernation or delete overtook
/// (its agent is being stopped) must not put its URL back on a row those cleared.
pub(crate) const SET_PROVISIONED: &str = "\
UPDATE workspaces SET url = COALESCE($1, url), \
url_from_provisioner = CASE WHEN $1 IS NULL THEN url_from_provisioner ELSE TRUE END, \
instance_id = COALESCE($2, instance_id), updated_at = $3 \
WHERE id = $4 AND status IN ('provisioning', 'online', 'degraded', 'offline')";

pub(crate) const PROVISIONING: &str =
    "SELECT id, runtime, provisioning_started_at FROM workspaces WHERE status = 'provisioning'";

pub(crate) const LIVE_DESCENDANTS: &str = "\
WITH RECURSIVE d(id, depth) AS ( \
  SELECT id, 1 FROM workspaces WHERE parent_id = $1 AND status <> 'removed' \
  UNION ALL \
  SELECT w.id, d.depth + 1 FROM workspaces w JOIN d ON w.parent_id = d.id \
  WHERE w.status <> 'removed' AND d.depth < 64 \
) SELECT id FROM d ORDER BY depth";

pub(crate) const TOUCH_WORKSPACE: &str =
    "UPDATE workspaces SET updated_at = $1 WHERE id = $2 AND status <> 'removed'";

pub(crate) const DELETE_LAYOUT: &str = "DELETE FROM canvas_layouts WHERE workspace_id = $1";
pub(crate) const DELETE_SECRETS: &str = "DELETE FROM workspace_secrets WHERE workspace_id = $1";
pub(crate) const DELETE_TOKENS: &str = "DELETE FROM workspace_auth_tokens WHERE workspace_id = $1";
pub(crate) const DELETE_CONFIG: &str = "DELETE FROM workspace_config WHERE workspace_id = $1";
pub(crate) const DELETE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE workspace_id = $1";
pub(crate) const UNLINK_CHILDREN: &str =
    "UPDATE workspaces SET parent_id = NULL WHERE parent_id = $1";
pub(crate) const UNLINK_FORWARDS: &str =
    "UPDATE workspaces SET forwarded_to = NULL WHERE forwarded_to = $1";
pub(crate) const DELETE_WORKSPACE: &str = "DELETE FROM workspaces WHERE id = $1";

pub(crate) const UPSERT_POSITION: &str = "\
INSERT INTO canvas_layouts (workspace_id, x, y) VALUES ($1, $2, $3) \
ON CONFLICT (workspace_id) DO UPDATE SET x = excluded.x, y = excluded.y";

pub(crate) const UPSERT_COLLAPSED: &str = "\
INSERT INTO canvas_layouts (workspace_id, collapsed) VALUES ($1, $2) \
ON CONFLICT (workspace_id) DO UPDATE SET collapsed = excluded.collapsed";

/// One settings column update: `$1` value, `$2` now, `$3` id.
pub(crate) fn update_column_sql(column: &str) -> String {
    format!(
        "UPDATE workspaces SET {column} = $1, updated_at = $2 WHERE id = $3 AND status <> 'removed'"
    )
}

pub(crate) const HIERARCHY: &str = "SELECT id, parent_id FROM workspaces";

/// Live workspaces per status: one aggregate over the status index, not the rows.
pub(crate) const COUNT_BY_STATUS: &str =
    "SELECT status, COUNT(*) FROM workspaces WHERE status <> 'removed' GROUP BY status";

/// Lapsed liveness. `$1` container cutoff, `$2` external cutoff, `$3` now.
pub(crate) const MARK_LAPSED: &str = "\
UPDATE workspaces SET status = CASE WHEN external_like THEN 'awaiting_agent' ELSE 'offline' END, updated_at = $3 \
WHERE status IN ('online', 'degraded') \
AND COALESCE(last_heartbeat_at, updated_at) < CASE WHEN external_like THEN $2 ELSE $1 END \
RETURNING id, status";

/// `base` with `patch` merged in: top-level keys replaced, `null` values delete the key. A
/// stored document that is not an object (written by the reference) is replaced.
pub(crate) fn merge_shallow(
    base: serde_json::Value,
    patch: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut map = match base {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    serde_json::Value::Object(map)
}

/// Associated data binding a sealed inbound secret to its workspace.
pub(crate) fn inbound_aad(id: WorkspaceId) -> Vec<u8> {
    format!("workspaces/{id}/inbound_secret").into_bytes()
}

/// The raw row of [`SELECT_WORKSPACE`].
#[derive(sqlx::FromRow)]
pub(crate) struct WorkspaceRow {
    id: Uuid,
    name: String,
    role: Option<String>,
    tier: i64,
    status: String,
    agent_card: Option<Json<serde_json::Value>>,
    url: Option<String>,
    parent_id: Option<Uuid>,
    active_tasks: i64,
    max_concurrent_tasks: i64,
    last_error_rate: f64,
    last_sample_error: Option<String>,
    failure_code: Option<String>,
    uptime_seconds: i64,
    current_task: Option<String>,
    runtime: String,
    workspace_dir: Option<String>,
    workspace_access: String,
    delivery_mode: String,
    x: Option<f64>,
    y: Option<f64>,
    collapsed: Option<bool>,
    budget_limit: Option<i64>,
    monthly_spend: i64,
    broadcast_enabled: bool,
    talk_to_user_enabled: bool,
    compute: Json<serde_json::Value>,
    last_outbound_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    url_from_provisioner: bool,
    last_heartbeat_at: Option<DateTime<Utc>>,
}

impl TryFrom<WorkspaceRow> for Workspace {
    type Error = Error;
    fn try_from(r: WorkspaceRow) -> Result<Self, Error> {
        let status: WorkspaceStatus = r
            .status
            .parse()
            .map_err(|e: berth_domain::status::UnknownStatus| Error::Corrupt(e.to_string()))?;
        Ok(Workspace {
            id: r.id.into(),
            name: r.name,
            role: r.role.filter(|s| !s.is_empty()),
            tier: r.tier,
            status,
            agent_card: r.agent_card.map(|j| j.0).filter(|v| !v.is_null()),
            url: r.url,
            url_from_provisioner: r.url_from_provisioner,
            parent_id: r.parent_id.map(WorkspaceId::from),
            active_tasks: r.active_tasks,
            max_concurrent_tasks: r.max_concurrent_tasks,
            last_error_rate: r.last_error_rate,
            last_sample_error: r.last_sample_error,
            failure_code: r.failure_code,
            uptime_seconds: r.uptime_seconds,
            current_task: r.current_task,
            runtime: r.runtime,
            workspace_dir: r.workspace_dir.filter(|s| !s.is_empty()),
            workspace_access: r.workspace_access,
            delivery_mode: r.delivery_mode,
            x: r.x.unwrap_or(0.0),
            y: r.y.unwrap_or(0.0),
            collapsed: r.collapsed.unwrap_or(false),
            budget_limit: r.budget_limit,
            monthly_spend: r.monthly_spend,
            broadcast_enabled: r.broadcast_enabled,
            talk_to_user_enabled: r.talk_to_user_enabled,
            compute: if r.compute.0.is_null() {
                serde_json::json!({})
            } else {
                r.compute.0
            },
            last_outbound_at: r.last_outbound_at,
            last_heartbeat_at: r.last_heartbeat_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// The raw event row.
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    pub(crate) seq: i64,
    pub(crate) id: Uuid,
    pub(crate) event_type: String,
    pub(crate) workspace_id: Option<Uuid>,
    pub(crate) payload: Json<serde_json::Value>,
    pub(crate) created_at: DateTime<Utc>,
}

impl From<EventRow> for crate::EventRecord {
    fn from(r: EventRow) -> Self {
        crate::EventRecord {
            seq: r.seq,
            id: r.id,
            event_type: r.event_type,
            workspace_id: r.workspace_id.map(WorkspaceId::from),
            payload: r.payload.0,
            created_at: r.created_at,
        }
    }
}

/// The raw idempotency row.
#[derive(sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    pub(crate) key: String,
    pub(crate) request_hash: Vec<u8>,
    pub(crate) workspace_id: Uuid,
    pub(crate) response_status: i64,
    pub(crate) response_body: Vec<u8>,
    pub(crate) key_id: String,
}

/// Associated data binding a sealed workspace secret to its row.
pub(crate) fn secret_aad(id: WorkspaceId, key: &str) -> Vec<u8> {
    format!("workspace_secrets/{id}/{key}").into_bytes()
}

/// Associated data binding a sealed idempotent response to its key.
pub(crate) fn idempotency_aad(key: &str) -> Vec<u8> {
    format!("idempotency_keys/{key}").into_bytes()
}

/// Implements [`crate::WorkspaceStore`] for a store type with `pool` and `keys` fields and an
/// inherent `begin()` returning a [`crate::wake::Tx`] of database `$db` with an inherent `commit()`.
macro_rules! impl_workspace_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// The one create transaction (see [`crate::WorkspaceStore::create_workspace`]),
            /// plus what a bundle import adds when `origin` is given.
            async fn write_create(
                &self,
                new: $crate::NewWorkspace,
                origin: Option<$crate::WorkspaceOrigin>,
            ) -> $crate::Result<Option<$crate::ClaimedMember>> {
                use secrecy::ExposeSecret as _;
                use sqlx::types::Json;
                let mut new = new;
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                // A warm-pool member first: the row takes its id (see `NewWorkspace::claim`).
                let claimed = match &new.claim {
                    Some(shape) => {
                        let sqlite = <$db as sqlx::Database>::NAME == "SQLite";
                        let sql = $crate::pool::claim_sql(sqlite);
                        sqlx::query_as::<$db, $crate::pool::ClaimRow>(sqlx::AssertSqlSafe(sql))
                            .bind(shape)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    None => None,
                };
                let claimed = match claimed {
                    Some(row) => {
                        let member = berth_domain::WorkspaceId::from(row.id);
                        // A credential this ring cannot open (its key was retired since the
                        // member started) does not fail the create: the member is still taken
                        // (it cannot be handed to anyone else), without a credential, so the
                        // workspace starts cold.
                        let secret = self
                            .keys
                            .open_str(
                                &row.secret_key_id,
                                &row.secret,
                                &$crate::pool::secret_aad(member),
                            )
                            .ok();
                        let url = row.url.ok_or_else(|| {
                            $crate::Error::Corrupt(format!("ready pool member {member} has no URL"))
                        })?;
                        new.id = member;
                        if let Some(idem) = &mut new.idempotency {
                            let mut body: serde_json::Value =
                                serde_json::from_str(idem.body.expose_secret())
                                    .map_err(|e| $crate::Error::Corrupt(e.to_string()))?;
                            if let Some(object) = body.as_object_mut() {
                                object.insert("id".to_owned(), member.to_string().into());
                            }
                            idem.body = secrecy::SecretString::from(body.to_string());
                        }
                        Some($crate::ClaimedMember {
                            id: member,
                            url,
                            instance_id: row.instance_id,
                            secret,
                        })
                    }
                    None => None,
                };
                let id = uuid::Uuid::from(new.id);
                // The parent first, locked until the commit: a delete that is removing it is
                // waited for (and the create refused), and a delete that comes later waits for
                // this create, so it sees the new child. No live child under a removed parent.
                // The lock is the create's first, so it never holds one a delete waits for.
                // (SQLite's `BEGIN IMMEDIATE` holds the write lock already: reading first is
                // safe there.)
                if let Some(parent) = new.parent_id
                    && !Self::lock_live(&mut tx, parent).await?
                {
                    return Err($crate::Error::ParentNotFound);
                }
                let inserted = sqlx::query::<$db>($crate::sql::INSERT_WORKSPACE)
                    .bind(id)
                    .bind(&new.name)
                    .bind(&new.role)
                    .bind(new.tier)
                    .bind(&new.runtime)
                    .bind(new.status.as_str())
                    .bind(&new.url)
                    .bind(new.parent_id.map(uuid::Uuid::from))
                    .bind(&new.workspace_dir)
                    .bind(&new.workspace_access)
                    .bind(new.budget_limit)
                    .bind(new.max_concurrent_tasks)
                    .bind(&new.delivery_mode)
                    .bind(Json(&new.compute))
                    .bind(new.provisioning_started_at)
                    .bind(now)
                    .bind(&new.template)
                    .execute(&mut *tx)
                    .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::Error::NameTaken);
                }
                if let Some(member) = &claimed {
                    sqlx::query::<$db>($crate::sql::SET_PROVISIONED)
                        .bind(&member.url)
                        .bind(&member.instance_id)
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                for (key, value) in &new.secrets {
                    let sealed = self
                        .keys
                        .seal_str(value, &$crate::sql::secret_aad(new.id, key));
                    sqlx::query::<$db>($crate::sql::UPSERT_WORKSPACE_SECRET)
                        .bind(uuid::Uuid::new_v4())
                        .bind(id)
                        .bind(key)
                        .bind(sealed.bytes)
                        .bind(sealed.key_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query::<$db>($crate::sql::INSERT_LAYOUT)
                    .bind(id)
                    .bind(new.canvas.0)
                    .bind(new.canvas.1)
                    .execute(&mut *tx)
                    .await?;
                if let Some(secret) = &new.inbound_secret {
                    let sealed = self.keys.seal_str(secret, &$crate::sql::inbound_aad(new.id));
                    sqlx::query::<$db>($crate::sql::SET_INBOUND_SECRET)
                        .bind(sealed.bytes)
                        .bind(sealed.key_id)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(token) = &new.token {
                    sqlx::query::<$db>($crate::sql::INSERT_TOKEN)
                        .bind(token.id)
                        .bind(id)
                        .bind(&token.hash[..])
                        .bind(&token.prefix)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                for event in &new.events {
                    Self::record_event(&mut tx, event.event_type.as_str(), id, &event.payload, now).await?;
                }
                if let Some(idem) = &new.idempotency {
                    let sealed = self.keys.seal(
                        idem.body.expose_secret().as_bytes(),
                        &$crate::sql::idempotency_aad(&idem.key),
                    );
                    let stored = sqlx::query::<$db>($crate::sql::INSERT_IDEMPOTENCY)
                        .bind(&idem.key)
                        .bind(&idem.request_hash[..])
                        .bind(id)
                        .bind(i64::from(idem.status))
                        .bind(sealed.bytes)
                        .bind(sealed.key_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    if stored.rows_affected() == 0 {
                        return Err($crate::Error::IdempotencyKeyUsed);
                    }
                }
                if let Some(origin) = &origin {
                    sqlx::query::<$db>($crate::sql::SET_ORIGIN)
                        .bind(&origin.source_bundle_id)
                        .bind(origin.agent_card.as_ref().map(Json))
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    for (path, content) in &origin.files {
                        sqlx::query::<$db>($crate::sql::INSERT_FILE)
                            .bind(id)
                            .bind(path)
                            .bind(content)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(claimed)
            }

            /// Whether `id` is live, locking its row until `tx` ends on PostgreSQL
            /// ([`crate::sql::lock_live_workspace_sql`]).
            async fn lock_live(
                tx: &mut $crate::wake::Tx<$db>,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<bool> {
                let sql = $crate::sql::lock_live_workspace_sql(<$db as sqlx::Database>::NAME);
                let row = sqlx::query_scalar::<$db, uuid::Uuid>(sqlx::AssertSqlSafe(sql))
                    .bind(uuid::Uuid::from(id))
                    .fetch_optional(&mut **tx)
                    .await?;
                Ok(row.is_some())
            }

            /// Appends one event inside `tx`: every event is recorded in the transaction of the
            /// change it describes.
            async fn record_event(
                tx: &mut $crate::wake::Tx<$db>,
                event_type: &str,
                workspace: impl Into<Option<uuid::Uuid>>,
                payload: &serde_json::Value,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::INSERT_EVENT)
                    .bind(uuid::Uuid::new_v4())
                    .bind(event_type)
                    .bind(workspace.into())
                    .bind(sqlx::types::Json(payload))
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
                tx.recorded_event();
                Ok(())
            }

            /// The one compare-and-set of a status change: the row moves only from the statuses
            /// the transition leaves from, and its event is recorded only when the row changed.
            async fn apply_transition(
                tx: &mut $crate::wake::Tx<$db>,
                workspace: uuid::Uuid,
                t: berth_domain::status::Transition,
                failure: Option<(&str, &str)>,
                payload: &serde_json::Value,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<bool> {
                let sql = $crate::sql::transition_sql(t.from().len());
                let mut q = sqlx::query::<$db>(sqlx::AssertSqlSafe(sql))
                    .bind(t.to().as_str())
                    .bind(at)
                    .bind(failure.map(|(_, message)| message))
                    .bind(failure.map(|(code, _)| code))
                    .bind(workspace);
                for st in t.from() {
                    q = q.bind(st.as_str());
                }
                let changed = q.execute(&mut **tx).await?.rows_affected() == 1;
                if changed && let Some(event) = t.event() {
                    Self::record_event(tx, event.as_str(), workspace, payload, at).await?;
                }
                Ok(changed)
            }
        }

        #[async_trait::async_trait]
        impl $crate::WorkspaceStore for $store {
            async fn ping(&self) -> $crate::Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn taken_names(
                &self,
                parent: Option<berth_domain::WorkspaceId>,
                candidates: Vec<String>,
            ) -> $crate::Result<Vec<String>> {
                if candidates.is_empty() {
                    return Ok(Vec::new());
                }
                let sqlite = <$db as sqlx::Database>::NAME == "SQLite";
                let sql = $crate::sql::taken_names_sql(sqlite, candidates.len());
                let mut q = sqlx::query_scalar::<$db, String>(sqlx::AssertSqlSafe(sql))
                    .bind(parent.map_or(uuid::Uuid::nil(), uuid::Uuid::from));
                for c in candidates {
                    q = q.bind(c);
                }
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn create_workspace(
                &self,
                new: $crate::NewWorkspace,
            ) -> $crate::Result<Option<$crate::ClaimedMember>> {
                self.write_create(new, None).await
            }

            async fn create_imported_workspace(
                &self,
                new: $crate::NewWorkspace,
                origin: $crate::WorkspaceOrigin,
            ) -> $crate::Result<Option<$crate::ClaimedMember>> {
                self.write_create(new, Some(origin)).await
            }

            async fn add_pool_member(&self, member: $crate::NewPoolMember) -> $crate::Result<()> {
                let sealed = self
                    .keys
                    .seal_str(&member.secret, &$crate::pool::secret_aad(member.id));
                let mut tx = self.begin().await?;
                sqlx::query::<$db>($crate::pool::INSERT)
                    .bind(uuid::Uuid::from(member.id))
                    .bind(&member.pool)
                    .bind(&member.shape)
                    .bind(sealed.bytes)
                    .bind(sealed.key_id)
                    .bind($crate::model::now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pool_member_ready(
                &self,
                id: berth_domain::WorkspaceId,
                url: String,
                instance_id: Option<String>,
            ) -> $crate::Result<bool> {
                let mut tx = self.begin().await?;
                let n = sqlx::query::<$db>($crate::pool::MARK_READY)
                    .bind(url)
                    .bind(instance_id)
                    .bind($crate::model::now())
                    .bind(uuid::Uuid::from(id))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn remove_pool_member(&self, id: berth_domain::WorkspaceId) -> $crate::Result<bool> {
                let mut tx = self.begin().await?;
                let n = sqlx::query::<$db>($crate::pool::REMOVE_UNCLAIMED)
                    .bind(uuid::Uuid::from(id))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn pool_members(&self) -> $crate::Result<Vec<$crate::PoolMember>> {
                sqlx::query_as::<$db, $crate::pool::MemberRow>(sqlx::AssertSqlSafe($crate::pool::list_sql()))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::pool::MemberRow::into_member)
                    .collect()
            }

            async fn prune_claimed_pool_members(
                &self,
                older_than: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let mut tx = self.begin().await?;
                let n = sqlx::query::<$db>($crate::pool::PRUNE_CLAIMED)
                    .bind(older_than)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn workspace_files(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Vec<(String, String)>> {
                Ok(sqlx::query_as::<$db, (String, String)>($crate::sql::SELECT_FILES)
                    .bind(uuid::Uuid::from(id))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn config_edits(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Vec<$crate::ConfigEdit>> {
                let rows = sqlx::query_as::<$db, (String, Option<Vec<u8>>)>(
                    $crate::sql::SELECT_CONFIG_EDITS,
                )
                .bind(uuid::Uuid::from(id))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(path, content)| $crate::ConfigEdit { path, content })
                    .collect())
            }

            async fn record_config_edits(
                &self,
                id: berth_domain::WorkspaceId,
                edits: Vec<$crate::ConfigEdit>,
            ) -> $crate::Result<()> {
                let ws = uuid::Uuid::from(id);
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                if !Self::lock_live(&mut tx, id).await? {
                    return Err($crate::Error::NotFound);
                }
                for edit in edits {
                    if edit.content.is_none() {
                        let prefix = format!("{}/", edit.path);
                        // Paths are at most a few KiB (the core's limit): the count fits.
                        let len = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
                        sqlx::query::<$db>($crate::sql::DELETE_CONFIG_EDITS_BENEATH)
                            .bind(ws)
                            .bind(&prefix)
                            .bind(len)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query::<$db>($crate::sql::UPSERT_CONFIG_EDIT)
                        .bind(ws)
                        .bind(&edit.path)
                        .bind(edit.content)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn workspace_template(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Option<String>> {
                let row = sqlx::query_as::<$db, (Option<String>,)>($crate::sql::SELECT_TEMPLATE)
                    .bind(uuid::Uuid::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.and_then(|(t,)| t).filter(|t| !t.is_empty()))
            }

            async fn set_workspace_template(
                &self,
                id: berth_domain::WorkspaceId,
                template: Option<String>,
            ) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_TEMPLATE)
                    .bind(template)
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn viewport(&self) -> $crate::Result<Option<$crate::Viewport>> {
                let row = sqlx::query_as::<$db, (f64, f64, f64)>($crate::sql::SELECT_VIEWPORT)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(x, y, zoom)| $crate::Viewport { x, y, zoom }))
            }

            async fn installation_id(&self) -> $crate::Result<uuid::Uuid> {
                sqlx::query::<$db>($crate::sql::INSERT_INSTALLATION)
                    .bind(uuid::Uuid::new_v4())
                    .bind($crate::model::now())
                    .execute(&self.pool)
                    .await?;
                Ok(sqlx::query_scalar::<$db, uuid::Uuid>($crate::sql::SELECT_INSTALLATION)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn save_viewport(&self, v: $crate::Viewport) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::UPSERT_VIEWPORT)
                    .bind(v.x)
                    .bind(v.y)
                    .bind(v.zoom)
                    .bind($crate::model::now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn idempotent_create(
                &self,
                key: &str,
            ) -> $crate::Result<Option<$crate::IdempotentCreate>> {
                let row = sqlx::query_as::<$db, $crate::sql::IdempotencyRow>(
                    $crate::sql::SELECT_IDEMPOTENCY,
                )
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let body = self.keys.open_str(
                    &row.key_id,
                    &row.response_body,
                    &$crate::sql::idempotency_aad(&row.key),
                )?;
                let request_hash: [u8; 32] = row
                    .request_hash
                    .as_slice()
                    .try_into()
                    .map_err(|_| $crate::Error::Corrupt("idempotency request hash".into()))?;
                let status = u16::try_from(row.response_status)
                    .map_err(|_| $crate::Error::Corrupt("idempotency status".into()))?;
                Ok(Some($crate::IdempotentCreate {
                    workspace_id: row.workspace_id.into(),
                    request_hash,
                    status,
                    body,
                }))
            }

            async fn list_workspaces(
                &self,
                page: $crate::Page,
            ) -> $crate::Result<Vec<$crate::Workspace>> {
                let sql = $crate::sql::list_sql(page.after.is_some(), page.limit.is_some());
                let mut q =
                    sqlx::query_as::<$db, $crate::sql::WorkspaceRow>(sqlx::AssertSqlSafe(sql));
                if let Some((at, id)) = page.after {
                    q = q.bind(at).bind(uuid::Uuid::from(id));
                }
                if let Some(limit) = page.limit {
                    q = q.bind(limit);
                }
                q.fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::Workspace::try_from)
                    .collect()
            }

            async fn get_workspace(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Option<$crate::Workspace>> {
                let sql = format!("{} WHERE w.id = $1", $crate::sql::SELECT_WORKSPACE);
                sqlx::query_as::<$db, $crate::sql::WorkspaceRow>(sqlx::AssertSqlSafe(sql))
                    .bind(uuid::Uuid::from(id))
                    .fetch_optional(&self.pool)
                    .await?
                    .map($crate::Workspace::try_from)
                    .transpose()
            }

            async fn transition(
                &self,
                id: berth_domain::WorkspaceId,
                change: $crate::StatusChange,
            ) -> $crate::Result<bool> {
                let now = $crate::model::now();
                let failure = change.failure.as_ref().map(|(c, m)| (c.as_str(), m.as_str()));
                let mut tx = self.begin().await?;
                let changed = Self::apply_transition(
                    &mut tx,
                    uuid::Uuid::from(id),
                    change.transition,
                    failure,
                    &change.payload,
                    now,
                )
                .await?;
                tx.commit().await?;
                Ok(changed)
            }

            async fn put_workspace_config(
                &self,
                id: berth_domain::WorkspaceId,
                data: serde_json::Value,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::UPSERT_CONFIG)
                    .bind(uuid::Uuid::from(id))
                    .bind(sqlx::types::Json(data))
                    .bind($crate::model::now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn merge_workspace_config(
                &self,
                id: berth_domain::WorkspaceId,
                patch: serde_json::Map<String, serde_json::Value>,
            ) -> $crate::Result<serde_json::Value> {
                use sqlx::types::Json;
                let now = $crate::model::now();
                let uid = uuid::Uuid::from(id);
                let mut tx = self.begin().await?;
                // Write first (lock order), then check the workspace, then read-modify-write.
                match sqlx::query::<$db>($crate::sql::LOCK_CONFIG)
                    .bind(uid)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                {
                    Ok(_) => {}
                    Err(e) => {
                        return Err(match $crate::Error::from(e) {
                            $crate::Error::ParentNotFound => $crate::Error::NotFound,
                            other => other,
                        });
                    }
                }
                let status: Option<String> =
                    sqlx::query_scalar::<$db, String>($crate::sql::WORKSPACE_STATUS)
                        .bind(uid)
                        .fetch_optional(&mut *tx)
                        .await?;
                match status.as_deref() {
                    None | Some("removed") => return Err($crate::Error::NotFound),
                    Some(_) => {}
                }
                let stored: Json<serde_json::Value> =
                    sqlx::query_scalar::<$db, Json<serde_json::Value>>($crate::sql::SELECT_CONFIG)
                        .bind(uid)
                        .fetch_one(&mut *tx)
                        .await?;
                let merged = $crate::sql::merge_shallow(stored.0, patch);
                sqlx::query::<$db>($crate::sql::UPSERT_CONFIG)
                    .bind(uid)
                    .bind(Json(&merged))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(merged)
            }

            async fn workspace_config(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Option<serde_json::Value>> {
                let v: Option<sqlx::types::Json<serde_json::Value>> =
                    sqlx::query_scalar::<$db, sqlx::types::Json<serde_json::Value>>(
                        $crate::sql::SELECT_CONFIG,
                    )
                    .bind(uuid::Uuid::from(id))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(v.map(|j| j.0))
            }

            async fn workspace_secrets(
                &self,
                id: berth_domain::WorkspaceId,
            ) -> $crate::Result<Vec<(String, secrecy::SecretString)>> {
                let rows: Vec<(String, Vec<u8>, String)> =
                    sqlx::query_as::<$db, (String, Vec<u8>, String)>($crate::sql::SELECT_SECRETS)
                        .bind(uuid::Uuid::from(id))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(|(key, bytes, key_id)| {
                        let value = self.keys.open_str(
                            &key_id,
                            &bytes,
                            &$crate::sql::secret_aad(id, &key),
                        )?;
                        Ok((key, value))
                    })
                    .collect()
            }

            async fn event_wakeups(&self) -> $crate::EventWakeups {
                self.open_event_wakeups().await
            }

            async fn events(
                &self,
                filter: $crate::EventFilter,
            ) -> $crate::Result<Vec<$crate::EventRecord>> {
                let sql = $crate::sql::events_sql(
                    filter.workspace_id.is_some(),
                    filter.after_seq.is_some(),
                );
                let mut q = sqlx::query_as::<$db, $crate::sql::EventRow>(sqlx::AssertSqlSafe(sql));
                if let Some(ws) = filter.workspace_id {
                    q = q.bind(uuid::Uuid::from(ws));
                }
                if let Some(after) = filter.after_seq {
                    q = q.bind(after);
                }
                q = q.bind(filter.limit.unwrap_or(100).clamp(1, 10_000));
                Ok(q.fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|r| $crate::EventRecord {
                        seq: r.seq,
                        id: r.id,
                        event_type: r.event_type,
                        workspace_id: r.workspace_id.map(berth_domain::WorkspaceId::from),
                        payload: r.payload.0,
                        created_at: r.created_at,
                    })
                    .collect())
            }

            async fn prune_idempotency(
                &self,
                older_than: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                Ok(sqlx::query::<$db>($crate::sql::PRUNE_IDEMPOTENCY)
                    .bind(older_than)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }
            async fn validate_token(&self, hash: [u8; 32]) -> $crate::Result<Option<berth_domain::WorkspaceId>> {
                let row: Option<(uuid::Uuid, uuid::Uuid, Option<chrono::DateTime<chrono::Utc>>)> =
                    sqlx::query_as::<$db, (uuid::Uuid, uuid::Uuid, Option<chrono::DateTime<chrono::Utc>>)>($crate::sql::VALIDATE_TOKEN)
                        .bind(&hash[..])
                        .fetch_optional(&self.pool)
                        .await?;
                let Some((token_id, workspace, last_used)) = row else { return Ok(None) };
                let stale = $crate::model::now() - chrono::Duration::seconds(60);
                if last_used.is_none_or(|t| t < stale) {
                    // Written with the other uses noted meanwhile (`group.rs`), before answering.
                    let (written, start) = self.touches.join(token_id);
                    if start {
                        let store = self.clone();
                        tokio::spawn(async move { store.flush_touches().await });
                    }
                    let _ = written.await;
                }
                Ok(Some(workspace.into()))
            }

            async fn has_live_token(&self, id: berth_domain::WorkspaceId) -> $crate::Result<bool> {
                let n: i64 = sqlx::query_scalar::<$db, i64>($crate::sql::COUNT_LIVE_TOKENS)
                    .bind(uuid::Uuid::from(id))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn issue_token(
                &self,
                id: berth_domain::WorkspaceId,
                token: $crate::NewToken,
                how: $crate::IssueToken,
            ) -> $crate::Result<()> {
                let now = $crate::model::now();
                let uid = uuid::Uuid::from(id);
                let mut tx = self.begin().await?;
                // Write first (SQLite lock order), then check the workspace.
                if how.revoke_existing {
                    sqlx::query::<$db>($crate::sql::REVOKE_TOKENS).bind(now).bind(uid).execute(&mut *tx).await?;
                }
                let status: Option<String> = sqlx::query_scalar::<$db, String>($crate::sql::WORKSPACE_STATUS)
                    .bind(uid)
                    .fetch_optional(&mut *tx)
                    .await?;
                match status.as_deref() {
                    None | Some("removed") => return Err($crate::Error::NotFound),
                    Some(_) => {}
                }
                if let Some(max) = how.max_live {
                    let live: i64 = sqlx::query_scalar::<$db, i64>($crate::sql::COUNT_LIVE_TOKENS)
                        .bind(uid)
                        .fetch_one(&mut *tx)
                        .await?;
                    if live >= max {
                        return Err($crate::Error::TooManyTokens);
                    }
                }
                sqlx::query::<$db>($crate::sql::INSERT_TOKEN)
                    .bind(token.id)
                    .bind(uid)
                    .bind(&token.hash[..])
                    .bind(&token.prefix)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if let Some(event) = &how.event {
                    Self::record_event(&mut tx, event.event_type.as_str(), uid, &event.payload, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn list_tokens(
                &self,
                id: berth_domain::WorkspaceId,
                limit: i64,
                offset: i64,
            ) -> $crate::Result<Vec<$crate::TokenInfo>> {
                let rows: Vec<(uuid::Uuid, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>)> =
                    sqlx::query_as::<$db, (uuid::Uuid, String, chrono::DateTime<chrono::Utc>, Option<chrono::DateTime<chrono::Utc>>)>($crate::sql::LIST_TOKENS)
                        .bind(uuid::Uuid::from(id))
                        .bind(limit)
                        .bind(offset)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, prefix, created_at, last_used_at)| $crate::TokenInfo { id, prefix, created_at, last_used_at })
                    .collect())
            }

            async fn revoke_token(&self, id: berth_domain::WorkspaceId, token_id: uuid::Uuid) -> $crate::Result<bool> {
                let r = sqlx::query::<$db>($crate::sql::REVOKE_TOKEN)
                    .bind($crate::model::now())
                    .bind(uuid::Uuid::from(id))
                    .bind(token_id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoke_tokens(&self, id: berth_domain::WorkspaceId) -> $crate::Result<u64> {
                let r = sqlx::query::<$db>($crate::sql::REVOKE_TOKENS)
                    .bind($crate::model::now())
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn register(
                &self,
                id: berth_domain::WorkspaceId,
                registration: $crate::Registration,
            ) -> $crate::Result<()> {
                use sqlx::types::Json;
                let now = $crate::model::now();
                let uid = uuid::Uuid::from(id);
                let mut tx = self.begin().await?;
                let changed = sqlx::query::<$db>(sqlx::AssertSqlSafe($crate::sql::register_sql(registration.require_url)))
                    .bind(&registration.url)
                    .bind(Json(&registration.agent_card))
                    .bind(&registration.delivery_mode)
                    .bind(now)
                    .bind(uid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if changed == 0 {
                    let status: Option<String> = sqlx::query_scalar::<$db, String>($crate::sql::WORKSPACE_STATUS)
                        .bind(uid)
                        .fetch_optional(&mut *tx)
                        .await?;
                    return Err(match status {
                        None => $crate::Error::NotFound,
                        Some(s) => $crate::Error::InvalidState(
                            s.parse().map_err(|e: berth_domain::status::UnknownStatus| $crate::Error::Corrupt(e.to_string()))?,
                        ),
                    });
                }
                Self::record_event(&mut tx, berth_domain::event::EventType::WorkspaceOnline.as_str(), uid, &registration.event_payload, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn heartbeats(
                &self,
                batch: Vec<(berth_domain::WorkspaceId, $crate::Heartbeat)>,
            ) -> $crate::Result<Vec<$crate::Result<$crate::HeartbeatOutcome>>> {
                use berth_domain::status::WorkspaceStatus;
                /// A workspace's row as the batch sees it, updated after each of its heartbeats.
                struct Seen {
                    status: WorkspaceStatus,
                    task: Option<String>,
                    max_concurrent: i64,
                    sealed: Option<(Vec<u8>, String)>,
                    a2a_queued: i64,
                    /// Index into `last` of this workspace's row for the fields' UPDATE.
                    row: Option<usize>,
                }
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                let now = $crate::model::now();
                let mut ids: Vec<uuid::Uuid> = batch.iter().map(|(id, _)| uuid::Uuid::from(*id)).collect();
                ids.sort_unstable();
                ids.dedup();
                let mut tx = self.begin().await?;
                type Before = (uuid::Uuid, String, Option<String>, i64, Option<Vec<u8>>, Option<String>, i64);
                let mut seen: std::collections::HashMap<uuid::Uuid, Seen> = std::collections::HashMap::with_capacity(ids.len());
                for chunk in ids.chunks($crate::sql::HEARTBEAT_ROWS_PER_STATEMENT) {
                    let sql = $crate::sql::heartbeat_before_sql(chunk.len());
                    let mut q = sqlx::query_as::<$db, Before>(sqlx::AssertSqlSafe(sql));
                    for id in chunk {
                        q = q.bind(*id);
                    }
                    for (uid, status, task, max_concurrent, sealed, key_id, a2a_queued) in q.fetch_all(&mut *tx).await? {
                        if status == "removed" {
                            continue;
                        }
                        let status: WorkspaceStatus = status
                            .parse()
                            .map_err(|e: berth_domain::status::UnknownStatus| $crate::Error::Corrupt(e.to_string()))?;
                        seen.insert(uid, Seen {
                            status,
                            task,
                            max_concurrent,
                            sealed: sealed.zip(key_id),
                            a2a_queued,
                            row: None,
                        });
                    }
                }
                // Each heartbeat in arrival order, against the row as the ones before it left it:
                // the same compare-and-set transitions and events, in the same order per
                // workspace, as one transaction per heartbeat would give.
                let mut outcomes = Vec::with_capacity(batch.len());
                let order: Vec<uuid::Uuid> = batch.iter().map(|(id, _)| uuid::Uuid::from(*id)).collect();
                // The fields each workspace ends with: its last heartbeat's, and the last spend
                // one of them reported.
                let mut last: Vec<(uuid::Uuid, $crate::Heartbeat)> = Vec::with_capacity(ids.len());
                for (id, hb) in batch {
                    let uid = uuid::Uuid::from(id);
                    let Some(row) = seen.get_mut(&uid) else {
                        outcomes.push(Err($crate::Error::NotFound));
                        continue;
                    };
                    let task_changed = row.task.as_deref().unwrap_or_default() != hb.current_task;
                    if task_changed {
                        // Recorded (the reference only broadcast it) so subscribers can resume it;
                        // plain heartbeats are not events: liveness lives in the row.
                        Self::record_event(&mut tx, berth_domain::event::EventType::TaskUpdated.as_str(), uid, &serde_json::json!({"current_task": hb.current_task, "active_tasks": hb.active_tasks}), now).await?;
                    }
                    let previous_status = row.status;
                    if let Some((t, payload)) = berth_domain::heartbeat::evaluate(previous_status, &hb.report) {
                        // A workspace whose backend reports its URL comes online only with one.
                        let url_missing = hb.require_url
                            && t.to() == WorkspaceStatus::Online
                            && !sqlx::query_scalar::<$db, bool>($crate::sql::ONLINE_URL_OK)
                                .bind(uid)
                                .fetch_one(&mut *tx)
                                .await?;
                        if !url_missing && Self::apply_transition(&mut tx, uid, t, None, &payload, now).await? {
                            row.status = t.to();
                        }
                    }
                    row.task = Some(hb.current_task.clone());
                    outcomes.push(Ok($crate::HeartbeatOutcome {
                        previous_status,
                        status: row.status,
                        task_changed,
                        max_concurrent_tasks: row.max_concurrent,
                        inbound_secret: None,
                        a2a_queued: row.a2a_queued,
                    }));
                    match row.row {
                        Some(i) => {
                            let spend = hb.monthly_spend.or(last[i].1.monthly_spend);
                            last[i].1 = $crate::Heartbeat { monthly_spend: spend, ..hb };
                        }
                        None => {
                            row.row = Some(last.len());
                            last.push((uid, hb));
                        }
                    }
                }
                for chunk in last.chunks($crate::sql::HEARTBEAT_ROWS_PER_STATEMENT) {
                    let sql = $crate::sql::heartbeat_update_sql(chunk.len());
                    let mut q = sqlx::query::<$db>(sqlx::AssertSqlSafe(sql)).bind(now);
                    for (uid, hb) in chunk {
                        q = q
                            .bind(*uid)
                            .bind(hb.error_rate)
                            .bind(&hb.sample_error)
                            .bind(hb.active_tasks)
                            .bind(hb.uptime_seconds)
                            .bind(&hb.current_task)
                            .bind(hb.monthly_spend);
                    }
                    q.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                // Opened after the commit, once per workspace.
                let mut opened: std::collections::HashMap<uuid::Uuid, secrecy::SecretString> = std::collections::HashMap::new();
                for (uid, row) in &seen {
                    if row.row.is_some() && let Some((bytes, key_id)) = &row.sealed {
                        opened.insert(*uid, self.keys.open_str(key_id, bytes, &$crate::sql::inbound_aad((*uid).into()))?);
                    }
                }
                for (outcome, uid) in outcomes.iter_mut().zip(&order) {
                    if let Ok(o) = outcome {
                        o.inbound_secret = opened.get(uid).cloned();
                    }
                }
                Ok(outcomes)
            }

            async fn update_card(&self, id: berth_domain::WorkspaceId, card: serde_json::Value) -> $crate::Result<()> {
                use sqlx::types::Json;
                let now = $crate::model::now();
                let uid = uuid::Uuid::from(id);
                let mut tx = self.begin().await?;
                let n = sqlx::query::<$db>($crate::sql::UPDATE_CARD)
                    .bind(Json(&card))
                    .bind(now)
                    .bind(uid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err($crate::Error::NotFound);
                }
                Self::record_event(&mut tx, berth_domain::event::EventType::AgentCardUpdated.as_str(), uid, &serde_json::json!({"agent_card": card}), now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn inbound_secret(&self, id: berth_domain::WorkspaceId) -> $crate::Result<Option<secrecy::SecretString>> {
                let row: Option<(Option<Vec<u8>>, Option<String>)> =
                    sqlx::query_as::<$db, (Option<Vec<u8>>, Option<String>)>($crate::sql::SELECT_INBOUND_SECRET)
                        .bind(uuid::Uuid::from(id))
                        .fetch_optional(&self.pool)
                        .await?;
                match row {
                    Some((Some(bytes), Some(key_id))) => {
                        Ok(Some(self.keys.open_str(&key_id, &bytes, &$crate::sql::inbound_aad(id))?))
                    }
                    _ => Ok(None),
                }
            }

            async fn set_inbound_secret(&self, id: berth_domain::WorkspaceId, secret: secrecy::SecretString) -> $crate::Result<()> {
                let sealed = self.keys.seal_str(&secret, &$crate::sql::inbound_aad(id));
                let n = sqlx::query::<$db>($crate::sql::SET_INBOUND_SECRET)
                    .bind(sealed.bytes)
                    .bind(sealed.key_id)
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if n == 0 { Err($crate::Error::NotFound) } else { Ok(()) }
            }

            async fn set_provisioned(
                &self,
                id: berth_domain::WorkspaceId,
                url: Option<String>,
                instance_id: Option<String>,
            ) -> $crate::Result<()> {
                let n = sqlx::query::<$db>($crate::sql::SET_PROVISIONED)
                    .bind(url)
                    .bind(instance_id)
                    .bind($crate::model::now())
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if n == 0 { Err($crate::Error::NotFound) } else { Ok(()) }
            }

            async fn provisioning(
                &self,
            ) -> $crate::Result<Vec<$crate::ProvisioningRow>> {
                let rows: Vec<(uuid::Uuid, String, Option<chrono::DateTime<chrono::Utc>>)> =
                    sqlx::query_as::<$db, (uuid::Uuid, String, Option<chrono::DateTime<chrono::Utc>>)>($crate::sql::PROVISIONING)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(i, r, t)| (i.into(), r, t)).collect())
            }

            async fn live_descendants(&self, id: berth_domain::WorkspaceId) -> $crate::Result<Vec<berth_domain::WorkspaceId>> {
                let rows: Vec<uuid::Uuid> = sqlx::query_scalar::<$db, uuid::Uuid>($crate::sql::LIVE_DESCENDANTS)
                    .bind(uuid::Uuid::from(id))
                    .fetch_all(&self.pool)
                    .await?;
                let mut seen = std::collections::HashSet::new();
                Ok(rows.into_iter().filter(|u| seen.insert(*u)).map(Into::into).collect())
            }

            async fn remove_workspaces(
                &self,
                root: berth_domain::WorkspaceId,
                descendants: Vec<berth_domain::WorkspaceId>,
            ) -> $crate::Result<u64> {
                let t = berth_domain::status::Transition::Removed;
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                // Locks parent before children (the root, then the descendants shallow to
                // deep), the order a create takes its one lock in, so the two never deadlock.
                if $crate::sql::row_locks(<$db as sqlx::Database>::NAME) {
                    for id in std::iter::once(root).chain(descendants.iter().copied()) {
                        Self::lock_live(&mut tx, id).await?;
                    }
                }
                let mut changed = 0u64;
                let total = descendants.len();
                for (id, payload) in descendants
                    .into_iter()
                    .map(|d| (d, serde_json::json!({})))
                    .chain(std::iter::once((root, serde_json::json!({"cascade_deleted": total}))))
                {
                    let uid = uuid::Uuid::from(id);
                    if Self::apply_transition(&mut tx, uid, t, None, &payload, now).await? {
                        changed += 1;
                    }
                    sqlx::query::<$db>($crate::sql::DELETE_LAYOUT).bind(uid).execute(&mut *tx).await?;
                    sqlx::query::<$db>($crate::sql::REVOKE_TOKENS).bind(now).bind(uid).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn purge_workspaces(&self, ids: Vec<berth_domain::WorkspaceId>) -> $crate::Result<()> {
                let mut tx = self.begin().await?;
                for id in &ids {
                    let uid = uuid::Uuid::from(*id);
                    for sql in [
                        $crate::sql::DELETE_SECRETS,
                        $crate::sql::DELETE_TOKENS,
                        $crate::sql::DELETE_CONFIG,
                        $crate::sql::DELETE_LAYOUT,
                        $crate::sql::DELETE_IDEMPOTENCY,
                        $crate::sql::UNLINK_CHILDREN,
                        $crate::sql::UNLINK_FORWARDS,
                    ] {
                        sqlx::query::<$db>(sql).bind(uid).execute(&mut *tx).await?;
                    }
                }
                for id in &ids {
                    sqlx::query::<$db>($crate::sql::DELETE_WORKSPACE).bind(uuid::Uuid::from(*id)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn update_workspace(&self, id: berth_domain::WorkspaceId, patch: $crate::WorkspacePatch) -> $crate::Result<()> {
                let now = $crate::model::now();
                let uid = uuid::Uuid::from(id);
                let mut tx = self.begin().await?;
                // Write first (SQLite lock order): touch the row, then check it exists.
                let exists = sqlx::query::<$db>($crate::sql::TOUCH_WORKSPACE)
                    .bind(now)
                    .bind(uid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if exists == 0 {
                    return Err($crate::Error::NotFound);
                }
                macro_rules! set {
                    ($col:literal, $val:expr) => {
                        sqlx::query::<$db>(sqlx::AssertSqlSafe($crate::sql::update_column_sql($col)))
                            .bind($val)
                            .bind(now)
                            .bind(uid)
                            .execute(&mut *tx)
                            .await
                    };
                }
                if let Some(name) = &patch.name {
                    if let Err(e) = set!("name", name) {
                        return Err(match $crate::Error::from(e) {
                            $crate::Error::Conflict { .. } => $crate::Error::NameTaken,
                            other => other,
                        });
                    }
                }
                if let Some(role) = &patch.role {
                    set!("role", role)?;
                }
                if let Some(tier) = patch.tier {
                    set!("tier", tier)?;
                }
                if let Some(runtime) = &patch.runtime {
                    set!("runtime", runtime)?;
                }
                if let Some(dir) = &patch.workspace_dir {
                    set!("workspace_dir", dir)?;
                }
                if let Some(minutes) = patch.hibernation_idle_minutes {
                    set!("hibernation_idle_minutes", minutes)?;
                }
                if let Some(parent) = patch.parent_id {
                    // Locked like a create's parent: a move under a workspace that a delete is
                    // removing is refused.
                    if let Some(p) = parent
                        && !Self::lock_live(&mut tx, p).await?
                    {
                        return Err($crate::Error::ParentNotFound);
                    }
                    if let Err(e) = set!("parent_id", parent.map(uuid::Uuid::from)) {
                        return Err(match $crate::Error::from(e) {
                            $crate::Error::Conflict { .. } => $crate::Error::NameTaken,
                            other => other,
                        });
                    }
                }
                if let Some(limit) = patch.budget_limit {
                    set!("budget_limit", limit)?;
                }
                if let Some(on) = patch.broadcast_enabled {
                    set!("broadcast_enabled", on)?;
                }
                if let Some(on) = patch.talk_to_user_enabled {
                    set!("talk_to_user_enabled", on)?;
                }
                if let Some((x, y)) = patch.position {
                    sqlx::query::<$db>($crate::sql::UPSERT_POSITION).bind(uid).bind(x).bind(y).execute(&mut *tx).await?;
                }
                if let Some(c) = patch.collapsed {
                    sqlx::query::<$db>($crate::sql::UPSERT_COLLAPSED).bind(uid).bind(c).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn claim_hibernation(
                &self,
                id: berth_domain::WorkspaceId,
                require_idle: bool,
            ) -> $crate::Result<bool> {
                // `HibernateStarted` records no event: the claim is internal until `Hibernated`.
                let sql = $crate::sql::claim_hibernation_sql(require_idle);
                let changed = sqlx::query::<$db>(sqlx::AssertSqlSafe(sql))
                    .bind($crate::model::now())
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(changed == 1)
            }

            async fn hibernation_candidates(
                &self,
            ) -> $crate::Result<Vec<$crate::HibernationCandidate>> {
                type Row = (
                    uuid::Uuid,
                    i64,
                    chrono::DateTime<chrono::Utc>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<chrono::DateTime<chrono::Utc>>,
                );
                let rows: Vec<Row> =
                    sqlx::query_as::<$db, Row>($crate::sql::HIBERNATION_CANDIDATES)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, idle_minutes, created, outbound, event)| {
                        let last_active_at = [Some(created), outbound, event]
                            .into_iter()
                            .flatten()
                            .max()
                            .unwrap_or(created);
                        $crate::HibernationCandidate {
                            id: id.into(),
                            idle_minutes,
                            last_active_at,
                        }
                    })
                    .collect())
            }

            async fn hierarchy(&self) -> $crate::Result<Vec<(berth_domain::WorkspaceId, Option<berth_domain::WorkspaceId>)>> {
                let rows: Vec<(uuid::Uuid, Option<uuid::Uuid>)> =
                    sqlx::query_as::<$db, (uuid::Uuid, Option<uuid::Uuid>)>($crate::sql::HIERARCHY)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(i, p)| (i.into(), p.map(Into::into))).collect())
            }

            async fn count_by_status(&self) -> $crate::Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<$db, (String, i64)>($crate::sql::COUNT_BY_STATUS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn mark_lapsed(
                &self,
                container_cutoff: chrono::DateTime<chrono::Utc>,
                external_cutoff: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<$crate::Lapsed>> {
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as::<$db, (uuid::Uuid, String)>($crate::sql::MARK_LAPSED)
                    .bind(container_cutoff)
                    .bind(external_cutoff)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut lapsed = Vec::with_capacity(rows.len());
                for (uid, status) in rows {
                    let status: berth_domain::status::WorkspaceStatus = status
                        .parse()
                        .map_err(|e: berth_domain::status::UnknownStatus| $crate::Error::Corrupt(e.to_string()))?;
                    let event = if status == berth_domain::status::WorkspaceStatus::AwaitingAgent {
                        berth_domain::event::EventType::WorkspaceAwaitingAgent
                    } else {
                        berth_domain::event::EventType::WorkspaceOffline
                    };
                    Self::record_event(&mut tx, event.as_str(), uid, &serde_json::json!({}), now).await?;
                    lapsed.push($crate::Lapsed { id: uid.into(), status });
                }
                tx.commit().await?;
                Ok(lapsed)
            }

            async fn list_secrets(
                &self,
                scope: $crate::SecretScope,
            ) -> $crate::Result<Vec<$crate::SecretInfo>> {
                type Row = (String, String, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);
                let rows: Vec<Row> = match scope {
                    $crate::SecretScope::Workspace(id) => {
                        sqlx::query_as::<$db, Row>($crate::sql::SELECT_WORKSPACE_SECRET_INFO)
                            .bind(uuid::Uuid::from(id))
                            .fetch_all(&self.pool)
                            .await?
                    }
                    $crate::SecretScope::Global => {
                        sqlx::query_as::<$db, Row>($crate::sql::SELECT_GLOBAL_SECRET_INFO)
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                // Byte order, whatever the database's collation.
                let mut list: Vec<$crate::SecretInfo> = rows
                    .into_iter()
                    .map(|(key, key_id, created_at, updated_at)| $crate::SecretInfo {
                        key,
                        key_id,
                        created_at,
                        updated_at,
                    })
                    .collect();
                list.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(list)
            }

            async fn open_secrets(
                &self,
                scope: $crate::SecretScope,
            ) -> $crate::Result<Vec<$crate::OpenedSecret>> {
                type Row = (String, Vec<u8>, String);
                let rows: Vec<Row> = match scope {
                    $crate::SecretScope::Workspace(id) => {
                        sqlx::query_as::<$db, Row>($crate::sql::SELECT_SECRETS)
                            .bind(uuid::Uuid::from(id))
                            .fetch_all(&self.pool)
                            .await?
                    }
                    $crate::SecretScope::Global => {
                        sqlx::query_as::<$db, Row>($crate::sql::SELECT_GLOBAL_SECRETS)
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                let mut opened: Vec<$crate::OpenedSecret> = rows
                    .into_iter()
                    .map(|(key, bytes, key_id)| {
                        let aad = match scope {
                            $crate::SecretScope::Workspace(id) => $crate::sql::secret_aad(id, &key),
                            $crate::SecretScope::Global => $crate::sql::global_secret_aad(&key),
                        };
                        let value = self.keys.open_str(&key_id, &bytes, &aad);
                        $crate::OpenedSecret { key, key_id, value }
                    })
                    .collect();
                opened.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(opened)
            }

            async fn set_secret(
                &self,
                scope: $crate::SecretScope,
                key: String,
                value: secrecy::SecretString,
                audit: serde_json::Value,
            ) -> $crate::Result<()> {
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                match scope {
                    $crate::SecretScope::Workspace(id) => {
                        let uid = uuid::Uuid::from(id);
                        // SQLite: BEGIN IMMEDIATE already holds the write lock, so reading first
                        // cannot deadlock a lock upgrade.
                        let status: Option<String> =
                            sqlx::query_scalar::<$db, String>($crate::sql::WORKSPACE_STATUS)
                                .bind(uid)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if matches!(status.as_deref(), None | Some("removed")) {
                            return Err($crate::Error::NotFound);
                        }
                        let sealed = self.keys.seal_str(&value, &$crate::sql::secret_aad(id, &key));
                        sqlx::query::<$db>($crate::sql::UPSERT_WORKSPACE_SECRET)
                            .bind(uuid::Uuid::new_v4())
                            .bind(uid)
                            .bind(&key)
                            .bind(sealed.bytes)
                            .bind(sealed.key_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    $crate::SecretScope::Global => {
                        let sealed = self.keys.seal_str(&value, &$crate::sql::global_secret_aad(&key));
                        sqlx::query::<$db>($crate::sql::UPSERT_GLOBAL_SECRET)
                            .bind(uuid::Uuid::new_v4())
                            .bind(&key)
                            .bind(sealed.bytes)
                            .bind(sealed.key_id)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Self::record_event(&mut tx, $crate::sql::SECRET_SET_EVENT, scope.workspace_id().map(uuid::Uuid::from), &audit, now).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn delete_secret(
                &self,
                scope: $crate::SecretScope,
                key: String,
                audit: serde_json::Value,
            ) -> $crate::Result<bool> {
                let now = $crate::model::now();
                let mut tx = self.begin().await?;
                let n = match scope {
                    $crate::SecretScope::Workspace(id) => {
                        sqlx::query::<$db>($crate::sql::DELETE_WORKSPACE_SECRET)
                            .bind(uuid::Uuid::from(id))
                            .bind(&key)
                            .execute(&mut *tx)
                            .await?
                    }
                    $crate::SecretScope::Global => {
                        sqlx::query::<$db>($crate::sql::DELETE_GLOBAL_SECRET)
                            .bind(&key)
                            .execute(&mut *tx)
                            .await?
                    }
                }
                .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                Self::record_event(&mut tx, $crate::sql::SECRET_DELETE_EVENT, scope.workspace_id().map(uuid::Uuid::from), &audit, now).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn global_secret_dependents(
                &self,
                key: String,
            ) -> $crate::Result<Vec<berth_domain::WorkspaceId>> {
                let rows: Vec<uuid::Uuid> =
                    sqlx::query_scalar::<$db, uuid::Uuid>($crate::sql::GLOBAL_SECRET_DEPENDENTS)
                        .bind(key)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn reencrypt(
                &self,
                batch_size: u32,
                max_batches: Option<u32>,
            ) -> $crate::Result<$crate::ReencryptReport> {
                let active = self.keys.active_key_id().to_owned();
                let limit = i64::from(batch_size.max(1));
                let mut resealed = 0u64;
                let mut batches = 0u32;
                // One table, in keyset pages; each page is its own transaction.
                macro_rules! pass {
                    ($table:expr, $cur:ty) => {{
                        let table: &$crate::sql::SealedTable = &$table;
                        type Row = ($cur, Option<uuid::Uuid>, String, Vec<u8>, String);
                        let mut cursor: Option<$cur> = None;
                        loop {
                            if max_batches.is_some_and(|m| batches >= m) {
                                break;
                            }
                            let mut tx = self.begin().await?;
                            let found: Vec<Row> = match &cursor {
                                None => sqlx::query_as::<$db, Row>(table.select_first)
                                    .bind(&active)
                                    .bind(limit)
                                    .fetch_all(&mut *tx)
                                    .await?,
                                Some(c) => sqlx::query_as::<$db, Row>(table.select_after)
                                    .bind(&active)
                                    .bind(c)
                                    .bind(limit)
                                    .fetch_all(&mut *tx)
                                    .await?,
                            };
                            if found.is_empty() {
                                tx.commit().await?;
                                break;
                            }
                            batches += 1;
                            for (cur, owner, key, bytes, key_id) in &found {
                                let aad = table.aad(*owner, key);
                                match self.keys.open(key_id, bytes, &aad) {
                                    Ok(plain) => {
                                        let sealed = self.keys.seal(&plain, &aad);
                                        resealed += sqlx::query::<$db>(table.update)
                                            .bind(sealed.bytes)
                                            .bind(sealed.key_id)
                                            .bind(cur)
                                            .bind(key_id)
                                            .bind(bytes)
                                            .execute(&mut *tx)
                                            .await?
                                            .rows_affected();
                                    }
                                    Err(e) => {
                                        tracing::warn!(
                                            table = table.name,
                                            key_id = %key_id,
                                            error = %e,
                                            "cannot re-seal a value; left under its old key"
                                        );
                                    }
                                }
                            }
                            tx.commit().await?;
                            let full = i64::try_from(found.len()).unwrap_or(i64::MAX) >= limit;
                            cursor = found.into_iter().last().map(|r| r.0);
                            if !full {
                                break;
                            }
                        }
                    }};
                }
                pass!($crate::sql::WORKSPACE_SECRETS_TABLE, uuid::Uuid);
                pass!($crate::sql::GLOBAL_SECRETS_TABLE, uuid::Uuid);
                pass!($crate::sql::IDEMPOTENCY_TABLE, String);
                pass!($crate::sql::INBOUND_TABLE, uuid::Uuid);
                let mut remaining = std::collections::BTreeMap::new();
                for table in [
                    &$crate::sql::WORKSPACE_SECRETS_TABLE,
                    &$crate::sql::GLOBAL_SECRETS_TABLE,
                    &$crate::sql::IDEMPOTENCY_TABLE,
                    &$crate::sql::INBOUND_TABLE,
                ] {
                    let counts: Vec<(String, i64)> =
                        sqlx::query_as::<$db, (String, i64)>(table.count)
                            .bind(&active)
                            .fetch_all(&self.pool)
                            .await?;
                    for (key_id, n) in counts {
                        *remaining.entry(key_id).or_insert(0u64) += u64::try_from(n).unwrap_or(0);
                    }
                }
                Ok($crate::ReencryptReport {
                    active_key_id: active,
                    rows: resealed,
                    remaining_by_key_id: remaining,
                })
            }

            async fn unreadable_key_ids(
                &self,
            ) -> $crate::Result<Vec<(String, $crate::CipherError)>> {
                let mut bad: std::collections::BTreeMap<String, $crate::CipherError> =
                    std::collections::BTreeMap::new();
                for table in [
                    &$crate::sql::WORKSPACE_SECRETS_TABLE,
                    &$crate::sql::GLOBAL_SECRETS_TABLE,
                    &$crate::sql::IDEMPOTENCY_TABLE,
                    &$crate::sql::INBOUND_TABLE,
                ] {
                    // No key id is empty: this counts the rows of every key id in use.
                    let in_use: Vec<(String, i64)> =
                        sqlx::query_as::<$db, (String, i64)>(table.count)
                            .bind("")
                            .fetch_all(&self.pool)
                            .await?;
                    for (key_id, _) in in_use {
                        if bad.contains_key(&key_id) {
                            continue;
                        }
                        let rows: Vec<(Option<uuid::Uuid>, String, Vec<u8>)> =
                            sqlx::query_as::<$db, (Option<uuid::Uuid>, String, Vec<u8>)>(
                                table.sample,
                            )
                            .bind(&key_id)
                            .fetch_all(&self.pool)
                            .await?;
                        // The key is wrong only if no sample opens (one damaged row is not a
                        // wrong key).
                        let mut first_error = None;
                        for (owner, key, bytes) in &rows {
                            match self.keys.open(&key_id, bytes, &table.aad(*owner, key)) {
                                Ok(_) => {
                                    first_error = None;
                                    break;
                                }
                                Err(e) => {
                                    first_error.get_or_insert(e);
                                }
                            }
                        }
                        if let Some(e) = first_error {
                            bad.insert(key_id, e);
                        }
                    }
                }
                Ok(bad.into_iter().collect())
            }

            async fn latest_events(
                &self,
                workspace_id: Option<berth_domain::WorkspaceId>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::EventRecord>> {
                let limit = limit.clamp(1, 10_000);
                let rows = match workspace_id {
                    Some(ws) => {
                        sqlx::query_as::<$db, $crate::sql::EventRow>($crate::sql::LATEST_EVENTS_OF)
                            .bind(uuid::Uuid::from(ws))
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        sqlx::query_as::<$db, $crate::sql::EventRow>($crate::sql::LATEST_EVENTS)
                            .bind(limit)
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                Ok(rows.into_iter().map($crate::EventRecord::from).collect())
            }

            async fn last_event_seq(&self) -> $crate::Result<Option<i64>> {
                Ok(sqlx::query_scalar::<$db, Option<i64>>($crate::sql::LAST_EVENT_SEQ)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn prune_events(
                &self,
                older_than: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                Ok(sqlx::query::<$db>($crate::sql::PRUNE_EVENTS)
                    .bind(older_than)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            }

            async fn log_activity(
                &self,
                entry: $crate::NewActivity,
                events: Vec<$crate::NewEvent>,
            ) -> $crate::Result<$crate::ActivityRecord> {
                use sqlx::types::Json;
                let ws = uuid::Uuid::from(entry.workspace_id);
                let mut tx = self.begin().await?;
                let seq: i64 = sqlx::query_scalar::<$db, i64>($crate::activity::INSERT_ACTIVITY)
                    .bind(entry.id)
                    .bind(ws)
                    .bind(&entry.activity_type)
                    .bind(entry.source_id)
                    .bind(entry.target_id)
                    .bind(&entry.method)
                    .bind(&entry.summary)
                    .bind(entry.request_body.as_ref().map(Json))
                    .bind(entry.response_body.as_ref().map(Json))
                    .bind(entry.tool_trace.as_ref().map(Json))
                    .bind(entry.duration_ms)
                    .bind(&entry.status)
                    .bind(&entry.error_detail)
                    .bind(entry.created_at)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| match &e {
                        // No row: the workspace is missing or removed (the insert's guard);
                        // a foreign key violation: it went meanwhile.
                        sqlx::Error::RowNotFound => $crate::Error::NotFound,
                        sqlx::Error::Database(d)
                            if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
                        {
                            $crate::Error::NotFound
                        }
                        _ => $crate::Error::from(e),
                    })?;
                for event in &events {
                    Self::record_event(&mut tx, event.event_type.as_str(), ws, &event.payload, entry.created_at).await?;
                }
                tx.commit().await?;
                Ok($crate::ActivityRecord {
                    seq,
                    id: entry.id,
                    workspace_id: entry.workspace_id,
                    activity_type: entry.activity_type,
                    source_id: entry.source_id,
                    target_id: entry.target_id,
                    method: entry.method,
                    summary: entry.summary,
                    request_body: entry.request_body,
                    response_body: entry.response_body,
                    tool_trace: entry.tool_trace,
                    duration_ms: entry.duration_ms,
                    status: entry.status,
                    error_detail: entry.error_detail,
                    created_at: entry.created_at,
                })
            }

            async fn activity(
                &self,
                workspace_id: berth_domain::WorkspaceId,
                query: $crate::ActivityQuery,
            ) -> $crate::Result<Vec<$crate::ActivityRecord>> {
                let ws = uuid::Uuid::from(workspace_id);
                let cursor = match query.since_id {
                    Some(id) => Some(
                        sqlx::query_scalar::<$db, i64>($crate::activity::ACTIVITY_CURSOR)
                            .bind(id)
                            .bind(ws)
                            .fetch_optional(&self.pool)
                            .await?
                            .ok_or($crate::Error::NotFound)?,
                    ),
                    None => None,
                };
                let sql = $crate::activity::activity_sql(&query, cursor.is_some());
                let mut q = sqlx::query_as::<$db, $crate::activity::ActivityRow>(
                    sqlx::AssertSqlSafe(sql),
                )
                .bind(ws);
                if let Some(t) = query.activity_type {
                    q = q.bind(t);
                }
                if let Some(p) = query.peer_id {
                    q = q.bind(p);
                }
                if let Some(t) = query.since {
                    q = q.bind(t);
                }
                if let Some(t) = query.before {
                    q = q.bind(t);
                }
                if let Some(c) = cursor {
                    q = q.bind(c);
                }
                q = q.bind(query.limit.clamp(1, $crate::ACTIVITY_PAGE_MAX));
                Ok(q.fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::ActivityRecord::from)
                    .collect())
            }

            async fn prune_activity(
                &self,
                older_than: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let mut total = 0;
                loop {
                    let n = sqlx::query::<$db>($crate::activity::PRUNE_ACTIVITY_BATCH)
                        .bind(older_than)
                        .bind($crate::activity::PRUNE_ACTIVITY_BATCH_SIZE)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    total += n;
                    if n < $crate::activity::PRUNE_ACTIVITY_BATCH_SIZE as u64 {
                        return Ok(total);
                    }
                }
            }

            async fn search_activity(
                &self,
                workspace_id: berth_domain::WorkspaceId,
                term: Option<String>,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::ActivityRecord>> {
                let pattern = term.as_deref().map($crate::session_search::like_pattern);
                let sql = $crate::session_search::search_sql(pattern.is_some());
                let mut q = sqlx::query_as::<$db, $crate::activity::ActivityRow>(
                    sqlx::AssertSqlSafe(sql),
                )
                .bind(uuid::Uuid::from(workspace_id));
                if let Some(p) = pattern {
                    q = q.bind(p);
                }
                Ok(q.bind(limit.clamp(1, $crate::SESSION_SEARCH_MAX))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::ActivityRecord::from)
                    .collect())
            }

            async fn enqueue_a2a(&self, item: $crate::NewQueueItem) -> $crate::Result<$crate::Enqueued> {
                let ws = uuid::Uuid::from(item.workspace_id);
                let mut tx = self.begin().await?;
                let exists: i64 = sqlx::query_scalar::<$db, i64>($crate::queue::WORKSPACE_EXISTS)
                    .bind(ws)
                    .fetch_one(&mut *tx)
                    .await?;
                if exists == 0 {
                    return Err($crate::Error::NotFound);
                }
                let inserted = sqlx::query::<$db>($crate::queue::ENQUEUE)
                    .bind(item.id)
                    .bind(ws)
                    .bind(item.caller_id)
                    .bind(&item.body)
                    .bind(&item.method)
                    .bind(&item.idempotency_key)
                    .bind(item.enqueued_at)
                    .bind(item.expires_at)
                    .bind(item.max_pending)
                    .bind($crate::QUEUE_PRIORITY_TASK)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                let depth: i64 = sqlx::query_scalar::<$db, i64>($crate::queue::QUEUED_DEPTH)
                    .bind(ws)
                    .fetch_one(&mut *tx)
                    .await?;
                let outcome = if inserted {
                    $crate::Enqueued::Queued { id: item.id, depth }
                } else {
                    let pending = match &item.idempotency_key {
                        Some(key) => sqlx::query_scalar::<$db, uuid::Uuid>($crate::queue::PENDING_WITH_KEY)
                            .bind(ws)
                            .bind(key)
                            .fetch_optional(&mut *tx)
                            .await?,
                        None => None,
                    };
                    match pending {
                        Some(id) => $crate::Enqueued::Duplicate { id, depth },
                        None => $crate::Enqueued::Full {
                            pending: sqlx::query_scalar::<$db, i64>($crate::queue::PENDING_COUNT)
                                .bind(ws)
                                .fetch_one(&mut *tx)
                                .await?,
                        },
                    }
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn claim_a2a(
                &self,
                workspace_id: berth_domain::WorkspaceId,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<$crate::QueueItem>> {
                // Most calls (every heartbeat with spare capacity) find nothing: a plain read
                // answers them without taking the write lock.
                let queued: i64 = sqlx::query_scalar::<$db, i64>($crate::queue::QUEUED_DEPTH)
                    .bind(uuid::Uuid::from(workspace_id))
                    .fetch_one(&self.pool)
                    .await?;
                if queued == 0 {
                    return Ok(None);
                }
                let mut tx = self.begin().await?;
                let row = sqlx::query_as::<$db, $crate::queue::QueueRow>(sqlx::AssertSqlSafe($crate::queue::claim_sql()))
                    .bind(uuid::Uuid::from(workspace_id))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row.map($crate::QueueItem::from))
            }

            async fn settle_a2a(&self, id: uuid::Uuid, settle: $crate::QueueSettle) -> $crate::Result<bool> {
                let requeue = settle.status == "queued";
                let dispatched_at: Option<chrono::DateTime<chrono::Utc>> = None;
                let completed_at = (!requeue).then_some(settle.at);
                let n = sqlx::query::<$db>($crate::queue::SETTLE)
                    .bind(id)
                    .bind(&settle.status)
                    .bind(if requeue { dispatched_at } else { Some(settle.at) })
                    .bind(completed_at)
                    .bind(&settle.last_error)
                    .bind(&settle.response_body)
                    .bind(i64::from(!settle.counts))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn a2a_queue_item(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::QueueItem>> {
                Ok(sqlx::query_as::<$db, $crate::queue::QueueRow>(sqlx::AssertSqlSafe($crate::queue::select_item_sql()))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map($crate::QueueItem::from))
            }

            async fn a2a_queue_of(&self, workspace_id: berth_domain::WorkspaceId) -> $crate::Result<Vec<$crate::QueueItem>> {
                Ok(sqlx::query_as::<$db, $crate::queue::QueueRow>(sqlx::AssertSqlSafe($crate::queue::list_items_sql()))
                    .bind(uuid::Uuid::from(workspace_id))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::QueueItem::from)
                    .collect())
            }

            async fn a2a_queue_page(
                &self,
                workspace_id: berth_domain::WorkspaceId,
                limit: usize,
            ) -> $crate::Result<Vec<$crate::QueueItem>> {
                Ok(sqlx::query_as::<$db, $crate::queue::QueueRow>(sqlx::AssertSqlSafe($crate::queue::page_items_sql()))
                    .bind(uuid::Uuid::from(workspace_id))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::QueueItem::from)
                    .collect())
            }

            async fn a2a_queued_targets(
                &self,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Vec<berth_domain::WorkspaceId>> {
                Ok(sqlx::query_scalar::<$db, uuid::Uuid>($crate::queue::QUEUED_TARGETS)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(berth_domain::WorkspaceId::from)
                    .collect())
            }

            async fn a2a_queue_upkeep(
                &self,
                now: chrono::DateTime<chrono::Utc>,
                stale_before: chrono::DateTime<chrono::Utc>,
                finished_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<(u64, u64, u64)> {
                let dropped = sqlx::query::<$db>($crate::queue::EXPIRE)
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                let requeued = sqlx::query::<$db>($crate::queue::REQUEUE_STALE)
                    .bind(stale_before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                let deleted = sqlx::query::<$db>($crate::queue::DELETE_FINISHED)
                    .bind(finished_before)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok((dropped, requeued, deleted))
            }

            async fn drop_stale_a2a(
                &self,
                older_than: chrono::DateTime<chrono::Utc>,
                workspace_id: Option<berth_domain::WorkspaceId>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<u64> {
                let q = match workspace_id {
                    Some(w) => sqlx::query::<$db>($crate::queue::DROP_STALE_OF)
                        .bind(now)
                        .bind(older_than)
                        .bind(uuid::Uuid::from(w)),
                    None => sqlx::query::<$db>($crate::queue::DROP_STALE).bind(now).bind(older_than),
                };
                Ok(q.execute(&self.pool).await?.rows_affected())
            }

            async fn touch_last_outbound(
                &self,
                id: berth_domain::WorkspaceId,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::queue::TOUCH_OUTBOUND)
                    .bind(at)
                    .bind(uuid::Uuid::from(id))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn add_token_usage(
                &self,
                id: berth_domain::WorkspaceId,
                period_start: chrono::DateTime<chrono::Utc>,
                input_tokens: i64,
                output_tokens: i64,
                cost_usd: f64,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::queue::ADD_TOKEN_USAGE)
                    .bind(uuid::Uuid::new_v4())
                    .bind(uuid::Uuid::from(id))
                    .bind(period_start)
                    .bind(input_tokens)
                    .bind(output_tokens)
                    .bind(cost_usd)
                    .bind($crate::model::now())
                    .execute(&self.pool)
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(d)
                            if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
                        {
                            $crate::Error::NotFound
                        }
                        _ => $crate::Error::from(e),
                    })?;
                Ok(())
            }

            async fn token_usage(&self, id: berth_domain::WorkspaceId) -> $crate::Result<Vec<$crate::TokenUsage>> {
                Ok(sqlx::query_as::<$db, $crate::queue::TokenUsageRow>($crate::queue::TOKEN_USAGE)
                    .bind(uuid::Uuid::from(id))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map($crate::TokenUsage::from)
                    .collect())
            }
        }

        impl $store {
            /// Writes the noted token uses until none waits (one flush at a time; see `group.rs`).
            async fn flush_touches(&self) {
                let guard = $crate::FlushGuard::new(&*self.touches);
                while let Some(batch) = self.touches.next_batch(usize::MAX) {
                    let mut ids: Vec<uuid::Uuid> = batch.iter().map(|(id, _)| *id).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let now = $crate::model::now();
                    let written: $crate::Result<()> = async {
                        let mut tx = self.begin().await?;
                        for chunk in ids.chunks($crate::group::TOUCH_ROWS_PER_STATEMENT) {
                            let mut q = sqlx::query::<$db>(sqlx::AssertSqlSafe($crate::group::touch_sql(chunk.len()))).bind(now);
                            for id in chunk {
                                q = q.bind(*id);
                            }
                            q.execute(&mut *tx).await?;
                        }
                        tx.commit().await
                    }
                    .await;
                    if let Err(e) = written {
                        tracing::warn!(error = %e, tokens = ids.len(), "recording token use failed");
                    }
                    for (_, done) in batch {
                        let _ = done.send(());
                    }
                }
                guard.done();
            }

            /// The same database with another key ring (a rotation: the new active key first,
            /// the old ones after it).
            pub fn with_key_ring(&self, keys: $crate::KeyRing) -> Self {
                // The same pool, event signal and (SQLite) writer queue.
                Self {
                    keys,
                    ..self.clone()
                }
            }
        }
    };
}

pub(crate) use impl_workspace_store;
