-- The 3CX API client's access token (client credentials), shared by the replicas: 3CX keeps
-- one live token per API client, so a replica that fetched its own would invalidate the
-- token the others hold. One row per API client id: the token sealed (AES-256-GCM under a
-- key derived from the client secret and id) with its expiry; `version` grows by one with
-- every stored token (writers compare-and-swap on it); the fetch lease (`lease_holder` until
-- `lease_until`) lets one replica at a time ask 3CX for a new token while the others wait
-- and read it from here. `sealed` is NULL while the first fetch is under way.
CREATE TABLE pbx_api_token (
    id           TEXT PRIMARY KEY,
    sealed       TEXT,
    expires_at   BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    lease_holder TEXT,
    lease_until  BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
