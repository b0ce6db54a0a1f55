-- Per-item memory of the workers that is not a directory row: the photo etag pbxgate last
-- uploaded for a user, the presence profile to restore after a meeting, why a mailbox is
-- skipped until when. One row per (worker, item); the value is the worker's JSON.
CREATE TABLE sync_items (
    worker     TEXT NOT NULL,
    item       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (worker, item)
);
