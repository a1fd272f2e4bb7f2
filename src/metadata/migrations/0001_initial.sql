-- Repositories, their numbered versions, content and distributions.
-- Migrations are numbered and never edited once released: add a new file.

CREATE TABLE repositories (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('pull-through', 'push', 'sync')),
    upstream        TEXT,
    remote_name     TEXT,
    retain_versions INTEGER CHECK (retain_versions IS NULL OR retain_versions >= 1),
    latest_version  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);

-- Immutable once written, but for the summary of the version that follows
-- a deleted one (the deleted version's changes fold into it).
CREATE TABLE repository_versions (
    repository_id     INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    number            INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    base_version      INTEGER,
    added_tags        INTEGER NOT NULL DEFAULT 0,
    added_manifests   INTEGER NOT NULL DEFAULT 0,
    added_blobs       INTEGER NOT NULL DEFAULT 0,
    removed_tags      INTEGER NOT NULL DEFAULT 0,
    removed_manifests INTEGER NOT NULL DEFAULT 0,
    removed_blobs     INTEGER NOT NULL DEFAULT 0,
    present_tags      INTEGER NOT NULL DEFAULT 0,
    present_manifests INTEGER NOT NULL DEFAULT 0,
    present_blobs     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repository_id, number)
) WITHOUT ROWID;

-- Content units are shared by every repository that holds them.
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    digest     TEXT NOT NULL UNIQUE,
    media_type TEXT,
    size       INTEGER
);

CREATE TABLE manifests (
    id            INTEGER PRIMARY KEY,
    digest        TEXT NOT NULL UNIQUE,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    os            TEXT,
    architecture  TEXT,
    variant       TEXT
);
CREATE INDEX manifests_subject ON manifests (subject) WHERE subject IS NOT NULL;

-- What a manifest points at, in document order: its config and layers, or
-- an index's child manifests with the platform the index gives them.
CREATE TABLE manifest_references (
    manifest_id  INTEGER NOT NULL REFERENCES manifests (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('config', 'layer', 'manifest')),
    digest       TEXT NOT NULL,
    media_type   TEXT,
    size         INTEGER,
    os           TEXT,
    architecture TEXT,
    variant      TEXT,
    PRIMARY KEY (manifest_id, position)
) WITHOUT ROWID;
CREATE INDEX manifest_references_digest ON manifest_references (digest);

CREATE TABLE tags (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    manifest_id INTEGER NOT NULL REFERENCES manifests (id),
    UNIQUE (name, manifest_id)
);

-- Membership: content_id is in the repository from version_added until
-- version_removed (exclusive; NULL: still present).
CREATE TABLE repository_content (
    repository_id   INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    content_type    TEXT NOT NULL CHECK (content_type IN ('tag', 'manifest', 'blob')),
    content_id      INTEGER NOT NULL,
    version_added   INTEGER NOT NULL,
    version_removed INTEGER,
    PRIMARY KEY (repository_id, content_type, content_id, version_added)
) WITHOUT ROWID;
CREATE INDEX repository_content_removed ON repository_content (repository_id, version_removed);
CREATE INDEX repository_content_added ON repository_content (repository_id, version_added);

CREATE TABLE distributions (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    base_path     TEXT NOT NULL UNIQUE,
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    version       INTEGER,
    private       INTEGER NOT NULL DEFAULT 0,
    description   TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- The pull-through cache's own memory of what each upstream tag pointed at
-- when last confirmed: serves a tag while the upstream is down, even right
-- after a restart. Not versioned; written only when a tag is new or moved.
CREATE TABLE upstream_tags (
    upstream    TEXT NOT NULL,
    remote_name TEXT NOT NULL,
    tag         TEXT NOT NULL,
    digest      TEXT NOT NULL,
    PRIMARY KEY (upstream, remote_name, tag)
) WITHOUT ROWID;
