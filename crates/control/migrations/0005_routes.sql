-- Routes: the networks a node offers to forward for its peers (`pinhole up --advertise-routes`;
-- an exit node offers 0.0.0.0/0 and ::/0) and those control approved (`pinhole-control route
-- approve`, or the policy's autoApprovers), both comma-separated CIDRs. A node forwards a route
-- when it both offers it and has it approved.

ALTER TABLE nodes ADD COLUMN advertised_routes TEXT NOT NULL DEFAULT '';
ALTER TABLE nodes ADD COLUMN approved_routes TEXT NOT NULL DEFAULT '';
