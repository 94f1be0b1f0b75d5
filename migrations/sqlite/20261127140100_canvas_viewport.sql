-- The canvas viewport (REFERENCE-2.md §7.1): one row for the whole server, id 1 (the reference's
-- fixed-id single row). Mirrors migrations/postgres/20261127140100_canvas_viewport.sql.
CREATE TABLE canvas_viewport (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    x         REAL NOT NULL,
    y         REAL NOT NULL,
    zoom      REAL NOT NULL,
    saved_at  TEXT NOT NULL
);
