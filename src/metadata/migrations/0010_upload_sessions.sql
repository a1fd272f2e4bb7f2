-- Blob upload sessions shared by a cluster's nodes (PostgreSQL metadata
-- and S3 storage): a session started on one node is continued and
-- finished on any. Each request's bytes are one object in the bucket
-- (upload_chunks, in order); size is how many bytes the session holds,
-- advanced only by compare-and-set, so two nodes never both append at
-- one offset. A single node keeps its sessions on its own disk instead.
CREATE TABLE upload_sessions (
    id         TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    size       INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE upload_chunks (
    upload       TEXT NOT NULL,
    start_offset INTEGER NOT NULL,
    end_offset   INTEGER NOT NULL,
    object_key   TEXT NOT NULL,
    PRIMARY KEY (upload, start_offset)
) WITHOUT ROWID;
