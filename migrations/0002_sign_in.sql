-- Sign-in: Entra's login_hint kept for logout; login attempts (state, nonce, PKCE verifier,
-- single use); the directory of who is which extension.
ALTER TABLE sessions ADD COLUMN login_hint TEXT;

CREATE TABLE login_attempts (
    state         TEXT PRIMARY KEY,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX login_attempts_created_at ON login_attempts (created_at);

CREATE TABLE directory_users (
    tenant_id        TEXT NOT NULL,
    object_id        TEXT NOT NULL,
    upn              TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    extension        TEXT NOT NULL,
    pbx_user_id      BIGINT NOT NULL,
    source           TEXT NOT NULL,   -- 'match' (3CX e-mail = UPN), 'override', 'sync'
    managed_password TEXT,            -- managed-password mode: AES-256-GCM, base64(nonce || sealed)
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, object_id)
);
CREATE INDEX directory_users_extension ON directory_users (extension);
