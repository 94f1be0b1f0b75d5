-- The identity of this berth installation: one row, id 1, created once by the first server that
-- starts on the database (`WorkspaceStore::installation_id`). The Docker provisioner labels each
-- container and volume with it (`berth.installation=<id>`), and the orphan sweep only touches
-- resources that carry this installation's label, so two installations on one Docker daemon
-- never purge each other's. Mirrors migrations/postgres/20261127150000_installation.sql.
CREATE TABLE installation (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    installation_id  BLOB NOT NULL,
    created_at       TEXT NOT NULL
);
