-- The sync workers: one run at a time (a lease), what each run planned and did, where each
-- delta left off, and which extensions the user sync created (only those may be deleted).
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE sync_runs (
    id         TEXT PRIMARY KEY,
    worker     TEXT NOT NULL,
    mode       TEXT NOT NULL,      -- 'delta' or 'full'
    dry_run    BIGINT NOT NULL,
    status     TEXT NOT NULL,      -- 'running', 'succeeded', 'failed', 'interrupted'
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    planned    TEXT NOT NULL,      -- JSON: action -> count
    applied    TEXT NOT NULL,      -- JSON: action -> count
    errors     TEXT NOT NULL,      -- JSON: [{item, error}]
    message    TEXT
);
CREATE INDEX sync_runs_worker_started ON sync_runs (worker, started_at);

CREATE TABLE sync_state (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

ALTER TABLE directory_users ADD COLUMN created_by_pbxgate BIGINT NOT NULL DEFAULT 0;
ALTER TABLE directory_users ADD COLUMN removed_at BIGINT;
