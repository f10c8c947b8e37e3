// Generated from the Rust types by src-tauri/src/bindings.rs: do not edit.
// PINHOLE_UPDATE_BINDINGS=1 cargo test -p pinhole-app bindings  rewrites it.

export type View = { 
/**
 * The connection to pinholed, or what is wrong with it and how to fix it.
 */
daemon: DaemonLink, 
/**
 * pinholed's last state snapshot (none until connected to it).
 */
status: Status | null, 
/**
 * What the app is doing for the person right now.
 */
action: Action | null, 
/**
 * Why the last action failed, until the next one starts.
 */
error: ActionError | null, 
/**
 * The last network check (the Network view), if one ran.
 */
netcheck: NetcheckReport | null, settings: Settings, 
/**
 * This app's version (`0.1.0`).
 */
version: string, };

export type DaemonLink = { "kind": "connecting" } | { "kind": "ready", 
/**
 * `pinholed 0.1.0`.
 */
software: string, } | { "kind": "not-running", socket: string, fix: string, } | { "kind": "not-allowed", detail: string, fix: string, joined_since_login: boolean, } | { "kind": "wrong-version", message: string, fix: string, } | { "kind": "unreachable", message: string, };

export type Action = "signing-in" | "connecting" | "disconnecting" | "signing-out";

export type ActionError = { code: string | null, message: string, };

export type Settings = { 
/**
 * The coordination server last signed in to (or typed in), offered at the next sign-in.
 */
server: string | null, start_at_login: boolean, 
/**
 * Start with the window hidden (in the tray).
 */
start_minimised: boolean, 
/**
 * Bring the tunnel up when the app starts and it is down.
 */
connect_on_start: boolean, 
/**
 * Notify when the session has expired (the tunnel needs a new sign-in).
 */
notify_session: boolean, 
/**
 * Notify when a peer's path falls back from direct to a relay.
 */
notify_relayed: boolean, };

export type Status = { state: State, 
/**
 * Why the state is not what the user asked for, in words (control unreachable, …).
 */
reason?: string, 
/**
 * An interactive sign-in waiting for approval.
 */
login?: LoginPrompt, self: SelfStatus | null, peers: Array<PeerStatus>, 
/**
 * Names inside the tunnel, while the node has a map.
 */
dns?: DnsStatus, };

export type DnsStatus = { 
/**
 * The account's DNS suffix (`pinhole.internal`): peers are `NAME.SUFFIX`.
 */
suffix: string, 
/**
 * The addresses pinholed answers DNS on, inside the tunnel (`100.100.100.100`).
 */
servers: Array<string>, 
/**
 * The resolvers queries for other names are forwarded to (the system's own).
 */
upstreams: Array<string>, 
/**
 * How the system's resolver is pointed at pinholed (`/etc/resolv.conf (managed by
 * pinholed)`), or why it is not.
 */
os: string, 
/**
 * Questions answered from the map, and forwarded, since pinholed started.
 */
answered: number, forwarded: number, };

export type State = "needs-login" | "stopped" | "connecting" | "connected" | "session-expired";

export type LoginPrompt = { url: string, code: string, };

export type SelfStatus = { name: string, 
/**
 * The name under the account's DNS suffix (`laptop.pinhole.internal`); empty when there
 * is none (a static configuration).
 */
dns_name: string, node_key: string, addresses: Array<string>, endpoints: Array<string>, nat: Nat, home_relay: string | null, 
/**
 * When this node's sign-in expires (RFC 3339, UTC); none if it does not.
 */
expires?: string, 
/**
 * This node's tags.
 */
tags?: Array<string>, 
/**
 * Whether the account has an access policy (this node's packets are filtered by it).
 */
policy: boolean, 
/**
 * Networks this node offers to forward for peers (`--advertise-routes`, and both default
 * routes with `--advertise-exit-node`).
 */
advertised_routes?: Array<string>, 
/**
 * Those of them control approved (this node forwards and masquerades them).
 */
approved_routes?: Array<string>, 
/**
 * Whether peers' routes are used (`--accept-routes`).
 */
accept_routes?: boolean, 
/**
 * The exit node all internet traffic goes through, if one is chosen.
 */
exit_node?: ExitNodeStatus, 
/**
 * Why routes or forwarding could not be set up as asked, if so.
 */
routing_error?: string, };

export type ExitNodeStatus = { 
/**
 * The peer's name (as the user named it, if the map has no such peer).
 */
name: string, 
/**
 * Whether internet traffic goes through it now (false: it is dropped, see `problem`).
 */
in_use: boolean, 
/**
 * Whether the local network is reached directly (`--exit-node-allow-lan`).
 */
allow_lan: boolean, 
/**
 * Why traffic cannot go through it right now.
 */
problem?: string, };

export type Nat = { mapping_varies_by_dest: boolean | null, udp: boolean | null, };

export type PeerStatus = { name: string, 
/**
 * The name other programs reach the peer by (`nas.pinhole.internal`); empty when there
 * is none (a static configuration).
 */
dns_name: string, node_key: string, addresses: Array<string>, online: boolean, connection: Connection, endpoint: string | null, relay: string | null, rtt_ms: number | null, path_reason: string | null, 
/**
 * RFC 3339, UTC.
 */
last_handshake: string | null, 
/**
 * When the peer was last connected to the coordination server (RFC 3339, UTC); none if
 * it never was.
 */
last_seen?: string, rx_bytes: number, tx_bytes: number, 
/**
 * The kind of the candidate the direct path uses (`local`, `stun`, `portmap`,
 * `peer-reflexive`).
 */
endpoint_kind?: EndpointKind, 
/**
 * Every address the peer may be reached at, and what pinging it has shown.
 */
candidates?: Array<Candidate>, 
/**
 * Disco pings sent to the peer in all (its candidates, predicted ports, birthday probes).
 */
disco_pings_sent: number, 
/**
 * The peer's tags (a tagged node belongs to its tags, not to a person).
 */
tags?: Array<string>, 
/**
 * Packets from the peer that the account's policy refused.
 */
filtered_packets: number, 
/**
 * What this node may reach on the peer under the account's policy, in words ("ports 22
 * and 443 and ping", "nothing"); none when the account has no policy (everything).
 */
may_reach?: string, 
/**
 * Networks the peer forwards for this node (offered by it, approved by control).
 */
routes?: Array<string>, 
/**
 * Whether the peer is an exit node (it forwards all traffic: both default routes).
 */
exit_node?: boolean, 
/**
 * Those of its routes this node sends through it now (with `--accept-routes`; another
 * router may carry the rest), and both default routes while it is the exit node in use.
 */
routes_in_use?: Array<string>, };

export type Connection = "direct" | "relayed" | "connecting" | "idle" | "offline";

export type Candidate = { addr: string, kind: EndpointKind, 
/**
 * The round trip of its last answered ping.
 */
rtt_ms: number | null, 
/**
 * Whether it answered within the last few seconds.
 */
answering: boolean, pings_sent: number, pongs: number, };

export type EndpointKind = "local" | "stun" | "portmap" | "peer-reflexive";

export type PingReply = { peer: string, address: string, rtt_ms: number, connection: Connection, endpoint: string | null, relay: string | null, };

export type NetcheckReport = { 
/**
 * Whether UDP gets out (a STUN answer came back); unknown without STUN servers.
 */
udp: boolean | null, 
/**
 * The local UDP port WireGuard and discovery use.
 */
port: number, 
/**
 * Addresses of this host's interfaces that peers may try.
 */
local_endpoints: Array<string>, 
/**
 * This node's address:port as STUN servers saw it.
 */
public_endpoints: Array<string>, 
/**
 * Whether the NAT maps to a different port per destination (a hard NAT); unknown with
 * fewer than two STUN answers (two ports of one server count as two).
 */
mapping_varies_by_dest: boolean | null, 
/**
 * Whether IPv4 / IPv6 STUN servers answered; unknown without a server of that family.
 */
ipv4: boolean | null, ipv6: boolean | null, 
/**
 * Whether a packet to this node's own public address came back in (the NAT hairpins);
 * unknown without a public address.
 */
hairpinning: boolean | null, 
/**
 * The port mapping this node holds on its gateway (PCP, NAT-PMP or UPnP), or why none.
 */
port_mapping: PortMapCheck, regions: Array<RegionLatency>, 
/**
 * The region with the lowest latency.
 */
preferred_relay: string | null, control: ControlCheck, };

export type PortMapCheck = { protocol: string | null, external: string | null, gateway: string | null, error: string | null, };

export type RegionLatency = { code: string, name: string, 
/**
 * STUN round trip; none when no answer came.
 */
latency_ms: number | null, public_endpoint: string | null, error: string | null, };

export type ControlCheck = { url: string | null, reachable: boolean, latency_ms: number | null, error: string | null, };
