-- Identities, tokens, client applications and pending federated logins.
-- Times are milliseconds since the Unix epoch (BIGINT) in both back ends.

CREATE TABLE identities (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT,
    email TEXT,
    identity_provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    primary_id TEXT REFERENCES identities(id),
    created_at BIGINT NOT NULL,
    UNIQUE (identity_provider, subject)
);
CREATE INDEX identities_primary ON identities(primary_id);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    identity_id TEXT NOT NULL REFERENCES identities(id),
    scopes TEXT NOT NULL,
    family_id TEXT NOT NULL,
    client_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX tokens_family ON tokens(family_id);

CREATE TABLE clients (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    identity_id TEXT NOT NULL REFERENCES identities(id),
    owner_id TEXT NOT NULL REFERENCES identities(id),
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX clients_owner ON clients(owner_id);

CREATE TABLE logins (
    id TEXT PRIMARY KEY NOT NULL,
    csrf_state TEXT NOT NULL UNIQUE,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    redirect_uri TEXT,
    device_code_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    callback_at BIGINT,
    identity_id TEXT REFERENCES identities(id),
    error TEXT,
    redeemed_at BIGINT
);
