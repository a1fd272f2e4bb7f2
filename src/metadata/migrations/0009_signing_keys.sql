-- Token signing keys shared by the nodes of a cluster: the key document
-- (the same JSON a single node keeps in <storage.path>/auth/keys.json),
-- replaced whole by compare-and-set so two nodes never lose a key.
CREATE TABLE signing_keys (
    name       TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
