-- The template a workspace was created from (POST /workspaces `template`, or a restart's explicit
-- `template`), so every later start builds its config from it. NULL: none (runtime default or a
-- generated config.yaml). Mirrors migrations/sqlite/20261127160000_workspace_template.sql.
ALTER TABLE workspaces ADD COLUMN template TEXT;
