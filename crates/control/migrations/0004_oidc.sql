-- Sign-in with an identity provider (OpenID Connect): people who signed in there are users here,
-- known by the provider's issuer and subject (never by email alone, which can change hands); the
-- groups the provider last said they are in (comma-separated) feed the policy's groups. A sign-in
-- in progress waits in oidc_logins between the redirect to the provider and its way back: found by
-- the hash of its state, used once, bound to the browser that started it and to a device code.

ALTER TABLE users ADD COLUMN oidc_issuer TEXT;
ALTER TABLE users ADD COLUMN oidc_subject TEXT;
ALTER TABLE users ADD COLUMN idp_groups TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX users_oidc_identity ON users (oidc_issuer, oidc_subject);

CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    code_hash TEXT NOT NULL REFERENCES device_codes(code_hash) ON DELETE CASCADE,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
