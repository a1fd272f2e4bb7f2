-- Exports for air-gapped sites: what each carried (the repository
-- versions, as JSON), where it was written, and every digest it carried,
-- so the next incremental export leaves out what its base chain holds.
CREATE TABLE exports (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at   INTEGER NOT NULL,
    path         TEXT NOT NULL,
    base         INTEGER,
    repositories TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('writing', 'complete', 'failed')),
    size         INTEGER NOT NULL DEFAULT 0,
    files        INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);

CREATE TABLE export_digests (
    export INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (export, digest)
) WITHOUT ROWID;
