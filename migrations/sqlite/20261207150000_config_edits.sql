-- Files written or deleted under a workspace's configs root through the files API
-- (`PUT|DELETE /workspaces/{id}/files/{path}`, `PUT /workspaces/{id}/files`). The configs directory
-- is rebuilt at every start (template, generated config, bundle files), so these edits are what
-- makes a change survive the restart it schedules: each start writes them last. `content` NULL is
-- a deletion: the path (a file, or a directory with everything in it) is removed from what the
-- template and the bundle put there. Paths are relative to the configs directory and validated
-- by the core (no `..`, no absolute path). Mirrors migrations/postgres/20261207150000_config_edits.sql.
CREATE TABLE workspace_config_edits (
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    content       BLOB,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (workspace_id, path)
);
