-- Exports carry a random id of their own (export numbers of two wharfs
-- collide), and the imports of them are recorded by it: an export is
-- imported once, and an incremental one only after its base.
ALTER TABLE exports ADD COLUMN uuid TEXT;

CREATE TABLE imports (
    uuid        TEXT PRIMARY KEY,
    export_id   INTEGER NOT NULL,
    base_uuid   TEXT,
    imported_at INTEGER NOT NULL,
    versions    TEXT NOT NULL
) WITHOUT ROWID;
