-- Warm pools: agents started before anyone asked for them (`berth-core/src/pool.rs`). Each row
-- is one member, identified by the workspace id it will take when a create claims it, so the
-- backend's container, volumes or directory already carry the workspace's id. `shape` is the
-- key of what the member was started with (template, runtime, tier, compute); a create whose
-- own shape is equal takes the oldest `ready` member in the create's own transaction
-- (`BEGIN IMMEDIATE` serialises writers: two creates, on one server or several, never take the same one).
-- `secret` is the member's pool credential (sealed, like every secret at rest), which the
-- platform presents when it hands the member its identity (docs/warm-pool.md).
-- `state`: starting → ready → claimed; claimed rows are kept a few minutes for the
-- "claimed in the last minute" figure of GET /admin/pools, then pruned.
-- Mirrors migrations/postgres/20261208000000_pool_members.sql.
CREATE TABLE pool_members (
    id             BLOB PRIMARY KEY,
    pool           TEXT NOT NULL,
    shape          TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('starting', 'ready', 'claimed')),
    url            TEXT,
    instance_id    TEXT,
    secret         BLOB NOT NULL,
    secret_key_id  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    ready_at       TEXT,
    claimed_at     TEXT
);
CREATE INDEX pool_members_ready ON pool_members (shape, ready_at) WHERE state = 'ready';
