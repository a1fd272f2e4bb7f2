-- Remotes: where sync repositories get their content from. Tag filters are
-- JSON arrays of strings. Credentials are stored here (the API never shows
-- them back): whoever can read wharf.db can read them, as with the config
-- file's upstream passwords.
CREATE TABLE remotes (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    url                  TEXT NOT NULL,
    upstream_name        TEXT NOT NULL,
    include_tags         TEXT NOT NULL DEFAULT '[]',
    exclude_tags         TEXT NOT NULL DEFAULT '[]',
    policy               TEXT NOT NULL CHECK (policy IN ('immediate', 'on_demand')),
    username             TEXT,
    password             TEXT,
    credentials_from     TEXT,
    tls_verify           INTEGER NOT NULL DEFAULT 1,
    ca_cert              TEXT,
    sigstore             TEXT,
    download_concurrency INTEGER CHECK (download_concurrency IS NULL OR download_concurrency >= 1),
    rate_limit           INTEGER CHECK (rate_limit IS NULL OR rate_limit >= 1),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    CHECK ((username IS NULL) = (password IS NULL)),
    CHECK (username IS NULL OR credentials_from IS NULL)
);

-- Background work (syncs). `resource` names what a task works on (a
-- repository): tasks on the same resource run one at a time. `params` and
-- `created_resources` are JSON. A task is `waiting`, `running`, or done
-- (`completed`, `failed`, `canceled`) and never changes once done.
CREATE TABLE tasks (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    kind              TEXT NOT NULL,
    resource          TEXT,
    params            TEXT NOT NULL DEFAULT '{}',
    state             TEXT NOT NULL CHECK (state IN ('waiting', 'running', 'completed', 'failed', 'canceled')),
    items_done        INTEGER NOT NULL DEFAULT 0,
    items_total       INTEGER,
    bytes_done        INTEGER NOT NULL DEFAULT 0,
    error             TEXT,
    created_resources TEXT NOT NULL DEFAULT '[]',
    created_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER
);
CREATE INDEX tasks_state ON tasks (state);
