-- A manifest's own annotations (a JSON object), which the referrers API
-- lists with each referrer.
ALTER TABLE manifests ADD COLUMN annotations TEXT;

-- Push repositories: blobs a client uploaded that no manifest of the
-- repository references yet. Deliberately outside the version model: an
-- upload is not a change of the repository's published content, so it makes
-- no version; the manifest that references the blob moves it into one.
CREATE TABLE uploaded_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    blob_id       INTEGER NOT NULL REFERENCES blobs (id),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, blob_id)
) WITHOUT ROWID;
