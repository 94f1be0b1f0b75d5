-- The identity of this berth installation: one row, id 1, created once by the first server that
-- starts on the database (`WorkspaceStore::installation_id`); every server sharing the database
-- reads the same one. The Docker provisioner labels each container and volume with it
-- (`berth.installation=<id>`), and the orphan sweep only touches resources that carry this
-- installation's label, so two installations on one Docker daemon never purge each other's.
-- Mirrors migrations/sqlite/20261127150000_installation.sql.
CREATE TABLE installation (
    id               BIGINT PRIMARY KEY CHECK (id = 1),
    installation_id  UUID NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL
);
