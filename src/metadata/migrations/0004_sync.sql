-- Sync repositories, created through the admin API: a description, the
-- remote a scheduled sync takes content from, and the schedule itself.
-- `sync_interval` is in seconds; `next_sync_at` (millis) already carries
-- the jitter. `remote` has no foreign key: deleting a remote leaves the
-- repositories synced from it intact (their schedule then fails loudly).
ALTER TABLE repositories ADD COLUMN description TEXT;
ALTER TABLE repositories ADD COLUMN remote TEXT;
ALTER TABLE repositories ADD COLUMN sync_mirror INTEGER NOT NULL DEFAULT 0;
ALTER TABLE repositories ADD COLUMN sync_interval INTEGER CHECK (sync_interval IS NULL OR sync_interval >= 60);
ALTER TABLE repositories ADD COLUMN next_sync_at INTEGER;
-- Set once a sync in mirror mode has run: such a repository mirrors a
-- remote and refuses pushes for good.
ALTER TABLE repositories ADD COLUMN mirrored INTEGER NOT NULL DEFAULT 0;

-- Where the bytes of a blob synced on demand can be fetched: a remote and
-- the repository's name there. Not versioned: a blob's source does not
-- change what any version holds, and a copy of the blob into another
-- repository is served from the same source.
CREATE TABLE blob_sources (
    digest          TEXT NOT NULL,
    remote          TEXT NOT NULL,
    remote_name     TEXT NOT NULL,
    PRIMARY KEY (digest, remote, remote_name)
) WITHOUT ROWID;
