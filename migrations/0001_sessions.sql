-- Server-side sessions. The cookie carries a random id; only its SHA-256 is stored, so a copy
-- of the database does not hand out live sessions. Times are Unix seconds.
CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    user_key     TEXT NOT NULL,     -- "{tid}:{oid}" of the Entra user
    upn          TEXT NOT NULL,
    extension    TEXT NOT NULL,
    idp_sid      TEXT,              -- Entra session id, for front-channel logout
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,   -- absolute end
    revoked_at   BIGINT
);
CREATE INDEX sessions_user_key ON sessions (user_key);
CREATE INDEX sessions_idp_sid ON sessions (idp_sid);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
