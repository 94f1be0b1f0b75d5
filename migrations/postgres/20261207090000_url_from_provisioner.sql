-- Where the workspace's URL came from: TRUE when berth's own provisioner reported it (the
-- platform trusts the address it set up itself and dispatches to it without the SSRF policy),
-- FALSE when a user (create) or an agent (register) supplied it (checked on every dispatch).
-- Rows that a provisioner already recorded (instance_id set on a container workspace) are
-- backfilled. Mirrors migrations/sqlite/20261207090000_url_from_provisioner.sql.
ALTER TABLE workspaces ADD COLUMN url_from_provisioner BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE workspaces SET url_from_provisioner = TRUE
 WHERE url IS NOT NULL AND instance_id IS NOT NULL AND NOT external_like;
