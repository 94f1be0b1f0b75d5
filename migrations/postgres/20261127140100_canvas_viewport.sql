-- The canvas viewport (REFERENCE-2.md §7.1): one row for the whole server, id 1 (the reference's
-- fixed-id single row). Mirrors migrations/sqlite/20261127140100_canvas_viewport.sql.
CREATE TABLE canvas_viewport (
    id        BIGINT PRIMARY KEY CHECK (id = 1),
    x         DOUBLE PRECISION NOT NULL,
    y         DOUBLE PRECISION NOT NULL,
    zoom      DOUBLE PRECISION NOT NULL,
    saved_at  TIMESTAMPTZ NOT NULL
);
