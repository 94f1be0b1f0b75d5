-- The A2A busy queue (REFERENCE-2.md §4.12) and the token-usage ledger (§4.14), adapted to
-- berth's portable types. Mirrors migrations/sqlite/20261127130000_a2a_queue.sql.
--
-- Changes from the reference (§9.4 #39–#41): `seq` orders a target's items strictly FIFO (rows
-- sharing a timestamp keep their order); `body` is the normalised payload as TEXT so its bytes
-- are delivered exactly as queued; a drained item that meets a busy target goes back to
-- `queued` in place (its idempotency key never points at a finished row); `response_body` keeps
-- the agent's answer to a drained item for `GET /workspaces/{id}/a2a/queue/{queue_id}`.
-- Timestamps are written by berth.
CREATE TABLE a2a_queue (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               UUID NOT NULL UNIQUE,
    workspace_id     UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    caller_id        UUID,
    priority         BIGINT NOT NULL DEFAULT 50,
    body             TEXT NOT NULL,
    method           TEXT,
    idempotency_key  TEXT,
    enqueued_at      TIMESTAMPTZ NOT NULL,
    dispatched_at    TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ,
    attempts         BIGINT NOT NULL DEFAULT 0,
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
    id                  UUID PRIMARY KEY,
    workspace_id        UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    period_start        TIMESTAMPTZ NOT NULL,
    input_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens       BIGINT NOT NULL DEFAULT 0,
    call_count          BIGINT NOT NULL DEFAULT 0,
    estimated_cost_usd  DOUBLE PRECISION NOT NULL DEFAULT 0,
    updated_at          TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, period_start)
);
