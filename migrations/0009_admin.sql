-- The admin console (issue 18 §2). Written in the subset both SQLite and PostgreSQL accept,
-- like every migration here.
-- Sessions: whether the user was in `admin_groups` at sign-in (decided once, kept with the
-- session), and where the sign-in came from, for the sessions page.
ALTER TABLE sessions ADD COLUMN is_admin BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN client_addr TEXT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;

-- The directory: the last sign-in, and whether the extension was provisioned at sign-in.
ALTER TABLE directory_users ADD COLUMN last_sign_in_at BIGINT;
ALTER TABLE directory_users ADD COLUMN provisioned_at_sign_in BIGINT NOT NULL DEFAULT 0;

-- Overrides an admin added in the console (UPN in canonical lower case → extension). The
-- config file's `[[directory.overrides]]` still win over these.
CREATE TABLE directory_overrides (
    upn        TEXT PRIMARY KEY,
    extension  TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every admin action: who, what, when.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    client_addr TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

-- One row per running replica, rewritten every minute: the console lists the recent ones.
CREATE TABLE replicas (
    id         TEXT PRIMARY KEY,
    version    TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
