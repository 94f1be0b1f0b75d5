-- Configuration files a workspace was imported with (REFERENCE-2.md §3.3, `POST /bundles/import`):
-- `system-prompt.md`, `config.yaml`, other prompts and `skills/<id>/<path>`, keyed by their path
-- relative to the workspace's configs directory. Every provisioning of the workspace (the first
-- one, restarts, wakes) writes them over its template, and `GET /bundles/export/{id}` reads them
-- back, so a bundle round-trips. Paths are validated by the core before they are stored.
-- Mirrors migrations/sqlite/20261127140000_bundles.sql.
CREATE TABLE workspace_files (
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    path          TEXT NOT NULL,
    content       TEXT NOT NULL,
    PRIMARY KEY (workspace_id, path)
);
