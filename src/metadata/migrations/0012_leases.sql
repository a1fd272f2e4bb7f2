-- Work one node of a cluster does at a time (eviction): a named lease,
-- held by a node until it expires; the holder renews it as it works, and
-- any node takes an expired one.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    node       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
