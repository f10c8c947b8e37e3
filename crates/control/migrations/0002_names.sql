-- Names (DNS): each account's DNS suffix (none: pinhole.internal), and when an operator last
-- changed a node's name (a running server reads rows changed since it last looked and sends
-- them to the maps).

ALTER TABLE accounts ADD COLUMN dns_suffix TEXT;
ALTER TABLE nodes ADD COLUMN changed_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX nodes_changed_at ON nodes (changed_at);
