//! The local API between pinholed and its clients (the CLI, the app): length-delimited JSON
//! frames (4-byte big-endian length, then one JSON object), a hello with the protocol version
//! first, requests with ids that get one reply each, and state snapshots pushed to subscribers.
//! The status object is the one `pinhole status --json` prints (DESIGN.md).

pub use crate::endpoint::EndpointKind;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks; a client and a daemon must agree on it.
pub const VERSION: u32 = 1;

/// Largest frame a client may send (requests are small).
pub const MAX_REQUEST_FRAME: usize = 64 * 1024;

/// Largest frame a daemon may send (a status of a very large network).
pub const MAX_REPLY_FRAME: usize = 64 * 1024 * 1024;

/// Where pinholed serves the local API unless told otherwise.
pub fn default_socket_path() -> &'static str {
    if cfg!(windows) {
        r"\\.\pipe\pinholed"
    } else if cfg!(target_os = "macos") {
        "/var/run/pinholed.sock"
    } else {
        "/run/pinhole/pinholed.sock"
    }
}

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// `pinhole 0.1.0`, `pinholed 0.1.0`: for messages, not for decisions.
    pub software: String,
}

/// A frame from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClientFrame {
    Hello { hello: Hello },
    Request(Request),
}

/// One request; the reply carries the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a client asks for. A daemon answers an operation it does not know with
/// `unknown-operation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// The current status.
    Status,
    /// Connect: bring the tunnel up (remembered across restarts). The user's stored sign-in,
    /// if the client has one, lets the daemon sign in again after its session expired.
    Up {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<Credential>,
        /// Whether the system's resolver is pointed at the DNS server inside the tunnel
        /// (remembered; absent: as before, on at first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept_dns: Option<bool>,
        /// Tags to ask control for (an empty list: none); refused unless this node's user owns
        /// them under the account's policy (absent: as before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advertise_tags: Option<Vec<String>>,
        /// Networks to offer to forward for peers, CIDRs (an empty list: none; absent: as
        /// before); used once control approves them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advertise_routes: Option<Vec<String>>,
        /// Whether to offer to be an exit node (absent: as before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        advertise_exit_node: Option<bool>,
        /// Whether to reach the networks peers forward (their approved routes) through them
        /// (remembered; absent: as before, off at first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        accept_routes: Option<bool>,
        /// The peer (name, DNS name or overlay address) to send all internet traffic through;
        /// an empty string: none (remembered; absent: as before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_node: Option<String>,
        /// Whether the local network stays reachable directly while an exit node is used
        /// (remembered; absent: as before, off at first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_node_allow_lan: Option<bool>,
    },
    /// Disconnect: take the tunnel down and keep it down; stay signed in.
    Down,
    /// Receive a status snapshot now and after every change.
    Subscribe,
    /// Sign in to a coordination server: with an auth key, with a stored session, or
    /// interactively (the status then carries the URL and code to show until it is approved).
    /// Answered with a [`LoginResult`] once signed in.
    Login {
        /// The coordination server; the one signed in to before when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_key: Option<Secret>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<Credential>,
        /// The name to register under (default: the OS hostname).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
    },
    /// Sign out: the node leaves the network, its key is replaced, the session (if given) is
    /// revoked on the server.
    Logout {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<Credential>,
    },
    /// One ICMP echo through the tunnel to a peer (by name, overlay address or node key);
    /// answered with a [`PingReply`].
    Ping {
        peer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// Examine the local network: UDP, public address and NAT mapping (STUN), latency to each
    /// relay region and to the coordination server; answered with a [`NetcheckReport`].
    Netcheck,
    /// pinholed's last log lines (at most `lines`, default all it keeps), for a diagnostics
    /// bundle; answered with [`LogLines`].
    Logs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lines: Option<u32>,
    },
}

/// pinholed's recent log, oldest line first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub lines: Vec<String>,
}

/// A secret string (an auth key) that debug output never shows.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user's sign-in, kept by the client in the OS credential store and handed to the daemon.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub server: String,
    pub session_token: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("server", &self.server)
            .field("session_token", &"<redacted>")
            .finish()
    }
}

/// A finished sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    pub server: String,
    pub name: String,
    pub addresses: Vec<String>,
    /// The user's session from an interactive sign-in, for the client's credential store
    /// (sent only to the client that asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Credential>,
}

/// What `logout` did on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutResult {
    /// Why the server could not be told (the node is forgotten locally anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// One echo reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PingReply {
    pub peer: String,
    pub address: String,
    pub rtt_ms: f64,
    pub connection: Connection,
    pub endpoint: Option<String>,
    pub relay: Option<String>,
}

/// `pinhole netcheck --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct NetcheckReport {
    /// Whether UDP gets out (a STUN answer came back); unknown without STUN servers.
    pub udp: Option<bool>,
    /// The local UDP port WireGuard and discovery use.
    pub port: u16,
    /// Addresses of this host's interfaces that peers may try.
    pub local_endpoints: Vec<String>,
    /// This node's address:port as STUN servers saw it.
    pub public_endpoints: Vec<String>,
    /// Whether the NAT maps to a different port per destination (a hard NAT); unknown with
    /// fewer than two STUN answers (two ports of one server count as two).
    pub mapping_varies_by_dest: Option<bool>,
    /// Whether IPv4 / IPv6 STUN servers answered; unknown without a server of that family.
    #[serde(default)]
    pub ipv4: Option<bool>,
    #[serde(default)]
    pub ipv6: Option<bool>,
    /// Whether a packet to this node's own public address came back in (the NAT hairpins);
    /// unknown without a public address.
    #[serde(default)]
    pub hairpinning: Option<bool>,
    /// The port mapping this node holds on its gateway (PCP, NAT-PMP or UPnP), or why none.
    #[serde(default)]
    pub port_mapping: PortMapCheck,
    pub regions: Vec<RegionLatency>,
    /// The region with the lowest latency.
    pub preferred_relay: Option<String>,
    pub control: ControlCheck,
}

/// `netcheck`'s port mapping: the protocol the gateway answered (`pcp`, `nat-pmp`, `upnp`)
/// with the public address it forwards, or, without one, why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PortMapCheck {
    pub protocol: Option<String>,
    pub external: Option<String>,
    pub gateway: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RegionLatency {
    pub code: String,
    pub name: String,
    /// STUN round trip; none when no answer came.
    pub latency_ms: Option<f64>,
    pub public_endpoint: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ControlCheck {
    pub url: Option<String>,
    pub reachable: bool,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

/// A frame from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DaemonFrame {
    Hello { hello: Hello },
    Reply(Reply),
    Event { event: Event },
}

/// The answer to request `id`: a value, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The request's id; 0 when the request was too broken to have one.
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<IpcError>,
}

/// Something pushed to a subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    State { status: Box<Status> },
}

/// A failed request: a stable code and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpcError {
    pub code: String,
    pub message: String,
}

/// The daemon's state, as `pinhole status` shows it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum State {
    NeedsLogin,
    Stopped,
    Connecting,
    Connected,
    SessionExpired,
}

/// `pinhole status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Status {
    pub state: State,
    /// Why the state is not what the user asked for, in words (control unreachable, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub reason: Option<String>,
    /// An interactive sign-in waiting for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub login: Option<LoginPrompt>,
    #[serde(rename = "self")]
    pub self_node: Option<SelfStatus>,
    pub peers: Vec<PeerStatus>,
    /// Names inside the tunnel, while the node has a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub dns: Option<DnsStatus>,
}

/// The node's DNS server: where it answers, for which suffix, where other names go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DnsStatus {
    /// The account's DNS suffix (`pinhole.internal`): peers are `NAME.SUFFIX`.
    pub suffix: String,
    /// The addresses pinholed answers DNS on, inside the tunnel (`100.100.100.100`).
    pub servers: Vec<String>,
    /// The resolvers queries for other names are forwarded to (the system's own).
    pub upstreams: Vec<String>,
    /// How the system's resolver is pointed at pinholed (`/etc/resolv.conf (managed by
    /// pinholed)`), or why it is not.
    pub os: String,
    /// Questions answered from the map, and forwarded, since pinholed started.
    pub answered: u64,
    pub forwarded: u64,
}

/// Where to approve an interactive sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LoginPrompt {
    pub url: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SelfStatus {
    pub name: String,
    /// The name under the account's DNS suffix (`laptop.pinhole.internal`); empty when there
    /// is none (a static configuration).
    #[serde(default)]
    pub dns_name: String,
    pub node_key: String,
    pub addresses: Vec<String>,
    pub endpoints: Vec<String>,
    pub nat: Nat,
    pub home_relay: Option<String>,
    /// When this node's sign-in expires (RFC 3339, UTC); none if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub expires: Option<String>,
    /// This node's tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub tags: Vec<String>,
    /// Whether the account has an access policy (this node's packets are filtered by it).
    #[serde(default)]
    pub policy: bool,
    /// Networks this node offers to forward for peers (`--advertise-routes`, and both default
    /// routes with `--advertise-exit-node`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub advertised_routes: Vec<String>,
    /// Those of them control approved (this node forwards and masquerades them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub approved_routes: Vec<String>,
    /// Whether peers' routes are used (`--accept-routes`).
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub accept_routes: bool,
    /// The exit node all internet traffic goes through, if one is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub exit_node: Option<ExitNodeStatus>,
    /// Why routes or forwarding could not be set up as asked, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub routing_error: Option<String>,
}

/// The exit node chosen with `--exit-node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ExitNodeStatus {
    /// The peer's name (as the user named it, if the map has no such peer).
    pub name: String,
    /// Whether internet traffic goes through it now (false: it is dropped, see `problem`).
    pub in_use: bool,
    /// Whether the local network is reached directly (`--exit-node-allow-lan`).
    pub allow_lan: bool,
    /// Why traffic cannot go through it right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub problem: Option<String>,
}

/// What netcheck learned about the local network; none while unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Nat {
    pub mapping_varies_by_dest: Option<bool>,
    pub udp: Option<bool>,
}

/// How traffic reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    Direct,
    Relayed,
    /// Traffic is waiting for a path.
    Connecting,
    /// Online, and nothing to connect: no traffic yet or lately (with the last path, if any).
    Idle,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PeerStatus {
    pub name: String,
    /// The name other programs reach the peer by (`nas.pinhole.internal`); empty when there
    /// is none (a static configuration).
    #[serde(default)]
    pub dns_name: String,
    pub node_key: String,
    pub addresses: Vec<String>,
    pub online: bool,
    pub connection: Connection,
    pub endpoint: Option<String>,
    pub relay: Option<String>,
    pub rtt_ms: Option<f64>,
    pub path_reason: Option<String>,
    /// RFC 3339, UTC.
    pub last_handshake: Option<String>,
    /// When the peer was last connected to the coordination server (RFC 3339, UTC); none if
    /// it never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub last_seen: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The kind of the candidate the direct path uses (`local`, `stun`, `portmap`,
    /// `peer-reflexive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub endpoint_kind: Option<EndpointKind>,
    /// Every address the peer may be reached at, and what pinging it has shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<Candidate>>", optional))]
    pub candidates: Vec<Candidate>,
    /// Disco pings sent to the peer in all (its candidates, predicted ports, birthday probes).
    #[serde(default)]
    pub disco_pings_sent: u32,
    /// The peer's tags (a tagged node belongs to its tags, not to a person).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub tags: Vec<String>,
    /// Packets from the peer that the account's policy refused.
    #[serde(default)]
    pub filtered_packets: u64,
    /// What this node may reach on the peer under the account's policy, in words ("ports 22
    /// and 443 and ping", "nothing"); none when the account has no policy (everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "ts", ts(optional))]
    pub may_reach: Option<String>,
    /// Networks the peer forwards for this node (offered by it, approved by control).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub routes: Vec<String>,
    /// Whether the peer is an exit node (it forwards all traffic: both default routes).
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(as = "Option<bool>", optional))]
    pub exit_node: bool,
    /// Those of its routes this node sends through it now (with `--accept-routes`; another
    /// router may carry the rest), and both default routes while it is the exit node in use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "ts", ts(as = "Option<Vec<String>>", optional))]
    pub routes_in_use: Vec<String>,
}

/// One of a peer's candidate endpoints, as discovery has seen it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Candidate {
    pub addr: String,
    pub kind: EndpointKind,
    /// The round trip of its last answered ping.
    pub rtt_ms: Option<f64>,
    /// Whether it answered within the last few seconds.
    pub answering: bool,
    pub pings_sent: u32,
    pub pongs: u32,
}

/// Why a byte stream could not be cut into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit of {1}")]
    TooLarge(usize, usize),
}

/// One frame: the length, then the JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Cuts a byte stream into frames.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max: usize,
}

impl Decoder {
    /// A decoder that refuses frames over `max` bytes.
    pub fn new(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's JSON, if one is complete. A frame over the limit is an error
    /// (the stream cannot be trusted after it: close it).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge(len, self.max));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Bytes of an unfinished frame (a client that stops mid-frame).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_any_split() {
        let req = ClientFrame::Request(Request {
            id: 7,
            op: Op::Login {
                server: Some("https://control.example".into()),
                auth_key: None,
                credential: Some(Credential {
                    server: "https://control.example".into(),
                    session_token: "phs_secret".into(),
                }),
                hostname: None,
            },
        });
        let mut bytes = encode(&ClientFrame::Hello {
            hello: Hello {
                version: VERSION,
                software: "pinhole test".into(),
            },
        });
        bytes.extend(encode(&req));
        for split in 0..bytes.len() {
            let mut d = Decoder::new(MAX_REQUEST_FRAME);
            d.push(&bytes[..split]);
            let mut frames = Vec::new();
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            d.push(&bytes[split..]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
            assert_eq!(frames.len(), 2);
            let parsed: ClientFrame = serde_json::from_slice(&frames[1]).unwrap();
            assert_eq!(parsed, req);
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn requests_read_as_documented() {
        let f: ClientFrame = serde_json::from_str(r#"{"id":1,"op":"status"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Request(Request {
                id: 1,
                op: Op::Status
            })
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"hello":{"version":1,"software":"x"}}"#).unwrap();
        assert!(matches!(f, ClientFrame::Hello { .. }));
        let f: ClientFrame = serde_json::from_str(r#"{"id":2,"op":"up"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Request(Request {
                id: 2,
                op: Op::Up {
                    credential: None,
                    accept_dns: None,
                    advertise_tags: None,
                    advertise_routes: None,
                    advertise_exit_node: None,
                    accept_routes: None,
                    exit_node: None,
                    exit_node_allow_lan: None,
                }
            })
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"id":3,"op":"ping","peer":"server"}"#).unwrap();
        assert!(matches!(
            f,
            ClientFrame::Request(Request {
                op: Op::Ping { .. },
                ..
            })
        ));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"id":1,"op":"explode"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"[1,2]"#).is_err());
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let c = Credential {
            server: "https://control.example".into(),
            session_token: "phs_topsecret".into(),
        };
        let shown = format!(
            "{:?}",
            Op::Logout {
                credential: Some(c)
            }
        );
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("control.example"));
    }

    #[test]
    fn oversized_frames_are_refused_before_they_arrive() {
        let mut d = Decoder::new(16);
        d.push(&1000u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(1000, 16)));
    }

    #[test]
    fn status_matches_the_contract() {
        let s = Status {
            state: State::Connected,
            reason: None,
            login: None,
            self_node: Some(SelfStatus {
                name: "laptop".into(),
                dns_name: "laptop.pinhole.internal".into(),
                node_key: "k".into(),
                addresses: vec!["100.64.0.1".into()],
                endpoints: vec!["192.0.2.1:41641".into()],
                nat: Nat::default(),
                home_relay: None,
                expires: None,
                tags: vec![],
                policy: false,
                advertised_routes: Vec::new(),
                approved_routes: Vec::new(),
                accept_routes: false,
                exit_node: None,
                routing_error: None,
            }),
            peers: vec![PeerStatus {
                name: "server".into(),
                dns_name: "server.pinhole.internal".into(),
                node_key: "k2".into(),
                addresses: vec!["100.64.0.2".into()],
                online: true,
                connection: Connection::Direct,
                endpoint: Some("198.51.100.7:41641".into()),
                relay: None,
                rtt_ms: Some(1.3),
                path_reason: None,
                last_handshake: Some("2026-11-22T17:00:00Z".into()),
                last_seen: None,
                rx_bytes: 0,
                tx_bytes: 0,
                endpoint_kind: Some(EndpointKind::Stun),
                candidates: vec![Candidate {
                    addr: "198.51.100.7:41641".into(),
                    kind: EndpointKind::Stun,
                    rtt_ms: Some(1.3),
                    answering: true,
                    pings_sent: 3,
                    pongs: 2,
                }],
                disco_pings_sent: 3,
                tags: vec![],
                filtered_packets: 0,
                may_reach: None,
                routes: Vec::new(),
                exit_node: false,
                routes_in_use: Vec::new(),
            }],
            dns: Some(DnsStatus {
                suffix: "pinhole.internal".into(),
                servers: vec!["100.100.100.100".into()],
                upstreams: vec![],
                os: "/etc/resolv.conf (managed by pinholed)".into(),
                answered: 0,
                forwarded: 0,
            }),
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "connected");
        assert_eq!(v["self"]["name"], "laptop");
        assert_eq!(v["peers"][0]["connection"], "direct");
        assert_eq!(v["peers"][0]["relay"], serde_json::Value::Null);
        assert_eq!(v["peers"][0]["endpoint_kind"], "stun");
        assert_eq!(v["peers"][0]["candidates"][0]["kind"], "stun");
        assert_eq!(v["self"]["dns_name"], "laptop.pinhole.internal");
        assert_eq!(v["peers"][0]["dns_name"], "server.pinhole.internal");
        assert_eq!(v["dns"]["suffix"], "pinhole.internal");
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), s);
    }
}
