-- Blob fills in flight across a cluster: one row per digest, naming the
-- node that fetches it from its upstream and where the other nodes reach
-- it (its cluster port) to stream the bytes while they arrive. Removed
-- when the fill ends; a row of a node that stopped answering is taken
-- over by the next node that misses the blob.
CREATE TABLE fills (
    digest     TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    address    TEXT NOT NULL,
    started_at INTEGER NOT NULL
) WITHOUT ROWID;
