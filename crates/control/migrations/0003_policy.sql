-- Rules: each account's access policy (HuJSON as the operator wrote it; none: everyone reaches
-- everyone) and when it last changed (a running server reads accounts changed since it last
-- looked), and tags: a node's (comma-separated), and those an auth key gives the nodes it
-- registers.

ALTER TABLE accounts ADD COLUMN policy TEXT;
ALTER TABLE accounts ADD COLUMN policy_changed_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE auth_keys ADD COLUMN tags TEXT NOT NULL DEFAULT '';
-- An auth key may belong to a person: the nodes it registers are theirs (policy rules by user
-- and group apply to them), as with a sign-in.
ALTER TABLE auth_keys ADD COLUMN user_id TEXT REFERENCES users(id) ON DELETE CASCADE;
