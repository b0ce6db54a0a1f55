-- The 3CX service extension's session (impersonation through the service extension): its
-- rotating RefreshTokenCookie, sealed (AES-256-GCM under a key derived from the service
-- extension's password), shared by the replicas. One row per service extension number;
-- `version` grows by one with every stored rotation, and writers compare-and-swap on it so
-- that a replica never replaces a newer cookie with an older one.
CREATE TABLE pbx_service_session (
    id         TEXT PRIMARY KEY,
    sealed     TEXT NOT NULL,
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
