-- berth initial schema (SQLite). Mirrors migrations/postgres/20261127000000_initial.sql; the
-- schema-parity test in berth-store compares the two.
-- Timestamps are always written by berth (never by column defaults), so both dialects agree.

CREATE TABLE workspaces (
    id                        BLOB PRIMARY KEY,
    name                      TEXT NOT NULL,
    role                      TEXT,
    tier                      INTEGER NOT NULL DEFAULT 3,
    status                    TEXT NOT NULL DEFAULT 'provisioning' CHECK (status IN (
                                  'provisioning', 'online', 'offline', 'degraded', 'failed', 'removed',
                                  'paused', 'hibernating', 'hibernated', 'awaiting_agent')),
    source_bundle_id          TEXT,
    agent_card                TEXT,
    url                       TEXT,
    parent_id                 BLOB REFERENCES workspaces (id),
    forwarded_to              BLOB REFERENCES workspaces (id),
    last_heartbeat_at         TEXT,
    last_error_rate           REAL NOT NULL DEFAULT 0,
    last_sample_error         TEXT,
    failure_code              TEXT,
    active_tasks              INTEGER NOT NULL DEFAULT 0,
    uptime_seconds            INTEGER NOT NULL DEFAULT 0,
    current_task              TEXT,
    runtime                   TEXT NOT NULL DEFAULT 'claude-code',
    -- The single "external-like" predicate (DECISIONS.md §2.11), kept equal to
    -- berth_domain::runtime::EXTERNAL_LIKE_RUNTIMES by a contract test.
    external_like             INTEGER NOT NULL GENERATED ALWAYS AS (runtime IN ('external', 'kimi', 'kimi-cli')) STORED,
    workspace_dir             TEXT,
    workspace_access          TEXT NOT NULL DEFAULT 'none' CHECK (workspace_access IN ('none', 'read_only', 'read_write')),
    budget_limit              INTEGER,
    monthly_spend             INTEGER NOT NULL DEFAULT 0,
    hibernation_idle_minutes  INTEGER,
    last_outbound_at          TEXT,
    max_concurrent_tasks      INTEGER NOT NULL DEFAULT 1,
    instance_id               TEXT,
    inbound_secret            BLOB,
    inbound_secret_key_id     TEXT,
    delivery_mode             TEXT NOT NULL DEFAULT 'push' CHECK (delivery_mode IN ('push', 'poll')),
    runtime_image_digest      TEXT,
    compute                   TEXT NOT NULL DEFAULT '{}',
    update_tier               TEXT NOT NULL DEFAULT 'production' CHECK (update_tier IN ('canary', 'production')),
    broadcast_enabled         INTEGER NOT NULL DEFAULT 0,
    talk_to_user_enabled      INTEGER NOT NULL DEFAULT 1,
    provisioning_started_at   TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL
);

CREATE INDEX idx_workspaces_parent_id ON workspaces (parent_id);
CREATE INDEX idx_workspaces_status ON workspaces (status);
CREATE INDEX idx_workspaces_created_at ON workspaces (created_at, id);
CREATE INDEX idx_workspaces_instance_id ON workspaces (instance_id) WHERE instance_id IS NOT NULL;
-- One name per parent among live rows; NULL parents share one bucket.
CREATE UNIQUE INDEX workspaces_parent_name_uniq
    ON workspaces (COALESCE(parent_id, X'00000000000000000000000000000000'), name)
    WHERE status <> 'removed';

CREATE TABLE canvas_layouts (
    workspace_id  BLOB PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    x             REAL NOT NULL DEFAULT 0,
    y             REAL NOT NULL DEFAULT 0,
    collapsed     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workspace_secrets (
    id               BLOB PRIMARY KEY,
    workspace_id     BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    encrypted_value  BLOB NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (workspace_id, key)
);

CREATE TABLE global_secrets (
    id               BLOB PRIMARY KEY,
    key              TEXT NOT NULL UNIQUE,
    encrypted_value  BLOB NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE workspace_auth_tokens (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash    BLOB NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_used_at  TEXT,
    revoked_at    TEXT
);
CREATE INDEX idx_workspace_auth_tokens_live ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL;

-- Append-only event log; `seq` is the cursor clients resume from.
CREATE TABLE structure_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    event_type    TEXT NOT NULL,
    workspace_id  BLOB,
    agent_id      BLOB,
    target_id     BLOB,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX idx_structure_events_workspace ON structure_events (workspace_id, seq);
CREATE INDEX idx_structure_events_created_at ON structure_events (created_at);

CREATE TABLE workspace_config (
    workspace_id  BLOB PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    data          TEXT NOT NULL DEFAULT '{}',
    updated_at    TEXT NOT NULL
);

-- Create requests carrying an Idempotency-Key: the first result, sealed (it can hold a token).
CREATE TABLE idempotency_keys (
    key              TEXT PRIMARY KEY,
    request_hash     BLOB NOT NULL,
    workspace_id     BLOB NOT NULL,
    response_status  INTEGER NOT NULL,
    response_body    BLOB NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);
