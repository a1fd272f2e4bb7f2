-- Several nodes sharing one database. Each task records the node that
-- runs it (NULL: recorded before nodes were), and a cancel asked for on
-- another node, which the running node picks up. Each node says it is
-- alive in `nodes`; the tasks of a node silent past the lease are failed
-- by any other.
ALTER TABLE tasks ADD COLUMN node TEXT;
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX tasks_resource ON tasks (resource, state);

CREATE TABLE nodes (
    name         TEXT PRIMARY KEY,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;
