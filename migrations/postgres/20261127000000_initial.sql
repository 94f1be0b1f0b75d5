-- berth initial schema (PostgreSQL). Mirrors migrations/sqlite/20261127000000_initial.sql; the
-- schema-parity test in berth-store compares the two.
-- Timestamps are always written by berth (never by column defaults), so both dialects agree.

CREATE TABLE workspaces (
    id                        UUID PRIMARY KEY,
    name                      TEXT NOT NULL,
    role                      TEXT,
    tier                      BIGINT NOT NULL DEFAULT 3,
    status                    TEXT NOT NULL DEFAULT 'provisioning' CHECK (status IN (
                                  'provisioning', 'online', 'offline', 'degraded', 'failed', 'removed',
                                  'paused', 'hibernating', 'hibernated', 'awaiting_agent')),
    source_bundle_id          TEXT,
    agent_card                JSONB,
    url                       TEXT,
    parent_id                 UUID REFERENCES workspaces (id),
    forwarded_to              UUID REFERENCES workspaces (id),
    last_heartbeat_at         TIMESTAMPTZ,
    last_error_rate           DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_sample_error         TEXT,
    failure_code              TEXT,
    active_tasks              BIGINT NOT NULL DEFAULT 0,
    uptime_seconds            BIGINT NOT NULL DEFAULT 0,
    current_task              TEXT,
    runtime                   TEXT NOT NULL DEFAULT 'claude-code',
    -- The single "external-like" predicate (DECISIONS.md §2.11), kept equal to
    -- berth_domain::runtime::EXTERNAL_LIKE_RUNTIMES by a contract test.
    external_like             BOOLEAN NOT NULL GENERATED ALWAYS AS (runtime IN ('external', 'kimi', 'kimi-cli')) STORED,
    workspace_dir             TEXT,
    workspace_access          TEXT NOT NULL DEFAULT 'none' CHECK (workspace_access IN ('none', 'read_only', 'read_write')),
    budget_limit              BIGINT,
    monthly_spend             BIGINT NOT NULL DEFAULT 0,
    hibernation_idle_minutes  BIGINT,
    last_outbound_at          TIMESTAMPTZ,
    max_concurrent_tasks      BIGINT NOT NULL DEFAULT 1,
    instance_id               TEXT,
    inbound_secret            BYTEA,
    inbound_secret_key_id     TEXT,
    delivery_mode             TEXT NOT NULL DEFAULT 'push' CHECK (delivery_mode IN ('push', 'poll')),
    runtime_image_digest      TEXT,
    compute                   JSONB NOT NULL DEFAULT '{}',
    update_tier               TEXT NOT NULL DEFAULT 'production' CHECK (update_tier IN ('canary', 'production')),
    broadcast_enabled         BOOLEAN NOT NULL DEFAULT FALSE,
    talk_to_user_enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    provisioning_started_at   TIMESTAMPTZ,
    created_at                TIMESTAMPTZ NOT NULL,
    updated_at                TIMESTAMPTZ NOT NULL
);

CREATE INDEX idx_workspaces_parent_id ON workspaces (parent_id);
CREATE INDEX idx_workspaces_status ON workspaces (status);
CREATE INDEX idx_workspaces_created_at ON workspaces (created_at, id);
CREATE INDEX idx_workspaces_instance_id ON workspaces (instance_id) WHERE instance_id IS NOT NULL;
-- One name per parent among live rows; NULL parents share one bucket.
CREATE UNIQUE INDEX workspaces_parent_name_uniq
    ON workspaces (COALESCE(parent_id, '00000000-0000-0000-0000-000000000000'::uuid), name)
    WHERE status <> 'removed';

CREATE TABLE canvas_layouts (
    workspace_id  UUID PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    x             DOUBLE PRECISION NOT NULL DEFAULT 0,
    y             DOUBLE PRECISION NOT NULL DEFAULT 0,
    collapsed     BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE workspace_secrets (
    id               UUID PRIMARY KEY,
    workspace_id     UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    encrypted_value  BYTEA NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, key)
);

CREATE TABLE global_secrets (
    id               UUID PRIMARY KEY,
    key              TEXT NOT NULL UNIQUE,
    encrypted_value  BYTEA NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspace_auth_tokens (
    id            UUID PRIMARY KEY,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    token_hash    BYTEA NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    last_used_at  TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX idx_workspace_auth_tokens_live ON workspace_auth_tokens (workspace_id) WHERE revoked_at IS NULL;

-- Append-only event log; `seq` is the cursor clients resume from.
CREATE TABLE structure_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            UUID NOT NULL UNIQUE,
    event_type    TEXT NOT NULL,
    workspace_id  UUID,
    agent_id      UUID,
    target_id     UUID,
    payload       JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_structure_events_workspace ON structure_events (workspace_id, seq);
CREATE INDEX idx_structure_events_created_at ON structure_events (created_at);

CREATE TABLE workspace_config (
    workspace_id  UUID PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    data          JSONB NOT NULL DEFAULT '{}',
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Create requests carrying an Idempotency-Key: the first result, sealed (it can hold a token).
CREATE TABLE idempotency_keys (
    key              TEXT PRIMARY KEY,
    request_hash     BYTEA NOT NULL,
    workspace_id     UUID NOT NULL,
    response_status  BIGINT NOT NULL,
    response_body    BYTEA NOT NULL,
    key_id           TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX idx_idempotency_keys_created_at ON idempotency_keys (created_at);
