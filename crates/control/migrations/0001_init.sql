-- Pinhole coordination server schema. Portable between SQLite and PostgreSQL: text ids made by
-- the server, times as BIGINT milliseconds since the Unix epoch, flags as BIGINT 0/1.

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE auth_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    key_hash TEXT NOT NULL UNIQUE,
    reusable BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE device_codes (
    code_hash TEXT PRIMARY KEY,
    user_code TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    approved_user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    last_poll BIGINT,
    consumed BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    user_id TEXT REFERENCES users(id) ON DELETE SET NULL,
    node_key TEXT NOT NULL UNIQUE,
    disco_key TEXT NOT NULL,
    hostname TEXT NOT NULL,
    name TEXT NOT NULL,
    os TEXT NOT NULL,
    ipv4 BIGINT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    endpoints TEXT NOT NULL DEFAULT '',
    home_relay TEXT,
    last_seen BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    removed_at BIGINT
);
CREATE UNIQUE INDEX nodes_account_name ON nodes (account_id, name);

-- Which control instance holds a node's map stream: a node is online while an instance that
-- still beats holds one.
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    seen BIGINT NOT NULL
);

CREATE TABLE presence (
    node_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    streams BIGINT NOT NULL,
    PRIMARY KEY (node_id, instance_id)
);
