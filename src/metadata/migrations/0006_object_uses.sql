-- When each stored object was last used (served or committed), in millis:
-- the order eviction takes cached blobs in, least recently used first.
-- Written in batches from memory (never once per request), so a crash
-- loses at most the last batch: those objects merely look older.
CREATE TABLE object_uses (
    digest    TEXT PRIMARY KEY,
    last_used INTEGER NOT NULL
) WITHOUT ROWID;
