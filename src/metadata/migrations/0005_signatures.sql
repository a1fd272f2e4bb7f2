-- Atomic container signatures ("simple signing"), as the docker API
-- extension (`/extensions/v2/<name>/signatures/<digest>`) and lookaside
-- stores carry them. A signature is content like a tag: shared by every
-- repository that holds it, identified by the digest of its bytes and the
-- manifest it signs, and a member of repository versions through
-- `repository_content` (type 'signature'), so versions, copies and
-- reverts carry it with the manifest. `name` is the one the source gave
-- (`<manifest digest>@<id>`); the bytes are small (a signed JSON claim).
CREATE TABLE signatures (
    id              INTEGER PRIMARY KEY,
    manifest_digest TEXT NOT NULL,
    digest          TEXT NOT NULL,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL,
    content         BLOB NOT NULL,
    UNIQUE (manifest_digest, digest)
);

-- `repository_content` gains the 'signature' type. SQLite cannot change a
-- CHECK in place: the table is rebuilt with the same rows and indexes.
CREATE TABLE repository_content_new (
    repository_id   INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    content_type    TEXT NOT NULL CHECK (content_type IN ('tag', 'manifest', 'blob', 'signature')),
    content_id      INTEGER NOT NULL,
    version_added   INTEGER NOT NULL,
    version_removed INTEGER,
    PRIMARY KEY (repository_id, content_type, content_id, version_added)
) WITHOUT ROWID;
INSERT INTO repository_content_new SELECT repository_id, content_type, content_id, version_added, version_removed
    FROM repository_content;
DROP TABLE repository_content;
ALTER TABLE repository_content_new RENAME TO repository_content;
CREATE INDEX repository_content_removed ON repository_content (repository_id, version_removed);
CREATE INDEX repository_content_added ON repository_content (repository_id, version_added);
