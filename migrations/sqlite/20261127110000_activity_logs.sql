-- Activity logs (REFERENCE-2.md §2.1), adapted to berth's portable types. `seq` is the cursor
-- `GET /workspaces/{id}/activity?since_id=` pages on, so rows sharing a timestamp are never
-- skipped (§9.2 #12). `status` and `created_at` are NOT NULL (§9.2 #16); timestamps are written
-- by berth. Mirrors migrations/postgres/20261127110000_activity_logs.sql.
CREATE TABLE activity_logs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               BLOB NOT NULL UNIQUE,
    workspace_id     BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    activity_type    TEXT NOT NULL,
    source_id        BLOB,
    target_id        BLOB,
    method           TEXT,
    summary          TEXT,
    request_body     TEXT,
    response_body    TEXT,
    tool_trace       TEXT,
    duration_ms      INTEGER,
    status           TEXT NOT NULL DEFAULT 'ok',
    error_detail     TEXT,
    idempotency_key  TEXT,
    created_at       TEXT NOT NULL
);
CREATE INDEX idx_activity_ws_seq ON activity_logs (workspace_id, seq);
CREATE INDEX idx_activity_ws_type_seq ON activity_logs (workspace_id, activity_type, seq);
CREATE INDEX idx_activity_created_at ON activity_logs (created_at);
CREATE UNIQUE INDEX activity_logs_idempotency_uniq ON activity_logs (workspace_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
