-- Where the workspace's URL came from: 1 when berth's own provisioner reported it (the
-- platform trusts the address it set up itself and dispatches to it without the SSRF policy),
-- 0 when a user (create) or an agent (register) supplied it (checked on every dispatch).
-- Rows that a provisioner already recorded (instance_id set on a container workspace) are
-- backfilled. Mirrors migrations/postgres/20261207090000_url_from_provisioner.sql.
ALTER TABLE workspaces ADD COLUMN url_from_provisioner INTEGER NOT NULL DEFAULT 0;
UPDATE workspaces SET url_from_provisioner = 1
 WHERE url IS NOT NULL AND instance_id IS NOT NULL AND NOT external_like;
