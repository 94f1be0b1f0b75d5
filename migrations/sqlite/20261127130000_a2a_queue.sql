-- The A2A busy queue (REFERENCE-2.md §4.12) and the token-usage ledger (§4.14), adapted to
-- berth's portable types. Mirrors migrations/postgres/20261127130000_a2a_queue.sql (see there
-- for the changes from the reference).
CREATE TABLE a2a_queue (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL UNIQUE,
    workspace_id     BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    caller_id        BLOB,
    priority         INTEGER NOT NULL DEFAULT 50,
    body             TEXT NOT NULL,
    method           TEXT,
    idempotency_key  TEXT,
    enqueued_at      TEXT NOT NULL,
    dispatched_at    TEXT,
    completed_at     TEXT,
    expires_at       TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'dispatched', 'completed', 'dropped', 'failed')),
    last_error       TEXT,
    response_body    TEXT
);
CREATE INDEX idx_a2a_queue_dispatch ON a2a_queue (workspace_id, priority DESC, seq) WHERE status = 'queued';
CREATE INDEX idx_a2a_queue_inflight ON a2a_queue (workspace_id) WHERE status = 'dispatched';
CREATE UNIQUE INDEX idx_a2a_queue_idempotency ON a2a_queue (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'dispatched');

CREATE TABLE workspace_token_usage (
    id                  BLOB PRIMARY KEY,
    workspace_id        BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    period_start        TEXT NOT NULL,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    call_count          INTEGER NOT NULL DEFAULT 0,
    estimated_cost_usd  REAL NOT NULL DEFAULT 0,
    updated_at          TEXT NOT NULL,
    UNIQUE (workspace_id, period_start)
);
