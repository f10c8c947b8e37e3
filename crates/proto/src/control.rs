//! The coordination server's HTTP API: request and response bodies, the network-map stream's
//! messages and the relay map, as JSON. Shared by `pinhole-control` and its clients.
//!
//! Endpoints (all under [`API_PREFIX`] unless noted):
//! - `POST /device/code`, `POST /device/token`: device authorisation (RFC 8628) for people;
//!   the code is approved on the server's page `GET/POST /device`.
//! - `POST /register/challenge`: a fresh [`RegisterChallenge`] (no credentials needed).
//! - `POST /register` with `Authorization: Bearer <auth key or session token>`: registers a node
//!   and returns its addresses and node token. The request proves that the node holds its node
//!   key's private half (see [`RegisterRequest::new`]), so nobody can register another node's key.
//! - `GET /map` with the node token: newline-delimited JSON [`MapMessage`]s, the full map first.
//! - `PATCH /node` with the node token: the node's endpoints, home relay, disco key.
//! - `DELETE /node` with the node token: the node leaves (logout).
//! - `GET /nodes`, `DELETE /nodes/{id}` with a session token: the account's nodes.
//! - `POST /logout` with a session token: revokes it.

use crate::endpoint::Endpoint;
use crate::filter::NodePolicy;
use crate::key::{Key, PrivateKey};
use crate::key_proof::{self, Purpose};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Where the API lives on the server.
pub const API_PREFIX: &str = "/api/v1";

/// Largest request body the server accepts.
pub const MAX_REQUEST_BODY: usize = 64 * 1024;

/// Longest line a map-stream client must accept (a full map of a very large network).
pub const MAX_MAP_LINE: usize = 256 * 1024 * 1024;

/// Seconds between keepalive messages on an idle map stream; a client that hears nothing for
/// three times this long treats the stream as dead.
pub const MAP_KEEPALIVE_SECS: u64 = 20;

/// What the server hands out before a registration: its key for the proof and a challenge it
/// can check later without keeping state (any instance of a scaled-out server can).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterChallenge {
    /// The server's X25519 key that the proof is made for.
    pub server_key: Key,
    /// 32 bytes, standard base64; valid for [`RegisterChallenge::expires_in`] seconds.
    pub challenge: String,
    pub expires_in: u64,
}

/// How a node calls itself and its per-run disco key, as it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub disco_key: Key,
    pub hostname: String,
    pub os: String,
    /// Tags the node asks for (`pinhole up --advertise-tags`); its user must own them.
    pub tags: Vec<String>,
    /// Routes it offers (`pinhole up --advertise-routes`, `--advertise-exit-node`).
    pub advertised_routes: Vec<ipnet::IpNet>,
}

/// A node asks to join: its keys, how it calls itself, and the proof that it holds the private
/// half of `node_key` (an answer to the server's challenge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub node_key: Key,
    pub disco_key: Key,
    pub hostname: String,
    pub os: String,
    /// Tags asked for; granted only to their owners (the policy's `tagOwners`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The routes the node offers (see [`NodeUpdate::advertised_routes`]); approved by control.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertised_routes: Vec<ipnet::IpNet>,
    /// The challenge, as the server gave it.
    pub challenge: String,
    /// HMAC proof of key possession ([`key_proof`], purpose Register), standard base64.
    pub proof: String,
}

/// Why a registration's proof cannot even be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFormatError {
    #[error("the challenge is not 32 bytes of base64")]
    Challenge,
    #[error("the proof is not 32 bytes of base64")]
    Proof,
}

impl RegisterRequest {
    /// A registration for the node holding `private`, answering `challenge`.
    pub fn new(private: &PrivateKey, challenge: &RegisterChallenge, info: &NodeInfo) -> Self {
        let bytes = decode32(&challenge.challenge).unwrap_or([0; 32]);
        let proof = key_proof::prove(Purpose::Register, private, &challenge.server_key, &bytes);
        RegisterRequest {
            node_key: private.public_key(),
            disco_key: info.disco_key,
            hostname: info.hostname.clone(),
            os: info.os.clone(),
            tags: info.tags.clone(),
            advertised_routes: info.advertised_routes.clone(),
            challenge: challenge.challenge.clone(),
            proof: STANDARD.encode(proof),
        }
    }

    /// The challenge and proof as bytes.
    pub fn proof_bytes(&self) -> Result<([u8; 32], [u8; 32]), ProofFormatError> {
        let c = decode32(&self.challenge).ok_or(ProofFormatError::Challenge)?;
        let p = decode32(&self.proof).ok_or(ProofFormatError::Proof)?;
        Ok((c, p))
    }
}

fn decode32(s: &str) -> Option<[u8; 32]> {
    if s.len() > 64 {
        return None;
    }
    STANDARD.decode(s).ok()?.as_slice().try_into().ok()
}

/// What a node gets on registration. `node_token` authenticates its map stream and updates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub node_id: String,
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub node_token: String,
    /// Milliseconds since the Unix epoch after which the node must sign in again; none = never.
    pub expires_at: Option<i64>,
    pub account: String,
    pub user: Option<String>,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .field("node_token", &"…")
            .field("expires_at", &self.expires_at)
            .field("account", &self.account)
            .field("user", &self.user)
            .finish()
    }
}

/// A node changes its own record; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<Endpoint>>,
    /// The relay region the node is reachable through; an empty string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_relay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<Key>,
    /// The node's tags (an empty list: none); refused unless its user owns every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The routes the node offers to forward (`pinhole up --advertise-routes`; an exit node
    /// offers `0.0.0.0/0` and `::/0`); an empty list: none. Used once control approves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_routes: Option<Vec<ipnet::IpNet>>,
}

/// One node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// The name under the account's DNS suffix (`nas.pinhole.internal`); empty from a server
    /// that predates names.
    #[serde(default)]
    pub dns_name: String,
    pub node_key: Key,
    pub disco_key: Key,
    pub addresses: Vec<IpAddr>,
    /// Where the node may be reached, each with its kind (local, stun, portmap).
    pub endpoints: Vec<Endpoint>,
    pub home_relay: Option<String>,
    pub online: bool,
    /// Milliseconds since the Unix epoch; none if it never connected.
    pub last_seen: Option<i64>,
    pub os: String,
    /// The person the node belongs to; none for a tagged node (it belongs to its tags).
    pub user: Option<String>,
    pub expires_at: Option<i64>,
    /// The node's tags (`tag:server`), from its auth key or granted to its owner.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The routes it forwards for its peers: offered by it and approved by control (`0.0.0.0/0`
    /// and `::/0`: an exit node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<ipnet::IpNet>,
}

impl Node {
    /// Whether the node forwards all traffic for its peers (both default routes approved).
    pub fn is_exit_node(&self) -> bool {
        let default = |v4: bool| {
            self.routes
                .iter()
                .any(|r| r.prefix_len() == 0 && matches!(r, ipnet::IpNet::V4(_)) == v4)
        };
        default(true) && default(false)
    }
}

/// Whether a node is connected to control, and when it last was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub id: String,
    pub online: bool,
    pub last_seen: Option<i64>,
}

/// Relays by region, as served to nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayMap {
    pub regions: Vec<RelayRegion>,
}

/// A region: one or more relays that are interchangeable for a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayRegion {
    /// Short code nodes publish as their home relay (`"fra"`, `"local"`).
    pub code: String,
    pub name: String,
    pub relays: Vec<Relay>,
}

/// One relay server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relay {
    /// `https://host[:port]/relay` (or `http://` for a lab). Relative to the coordination
    /// server: `/relay` (on its address), `:PORT/relay` (its host, another port). Empty: this
    /// server relays no packets (STUN only).
    #[serde(default)]
    pub url: String,
    /// `host:port` of its STUN service; none if it has none.
    #[serde(default)]
    pub stun: Option<String>,
}

/// `GET /api/v1/relay/authorize?key=…` (a relay asking with the relay secret): the network
/// (account) of the node with that key; 404 when no registered, unexpired node has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayGrant {
    pub network: String,
}

/// One line of the map stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MapMessage {
    /// Sent first on every stream: this node, every peer it may see, the relays.
    Full {
        #[serde(rename = "self")]
        self_node: Node,
        peers: Vec<Node>,
        relay_map: RelayMap,
        /// This node's part of the account's policy; none: the account has no policy and
        /// everything is allowed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<NodePolicy>,
    },
    /// This node's part of the policy changed (none: the account's policy was removed).
    Policy { policy: Option<NodePolicy> },
    /// A peer appeared or changed.
    PeerChanged { peer: Node },
    /// Only peers' presence changed (they connected or went away): the short form of
    /// `peer_changed`, gathered over a fraction of a second, since every node's connect reaches
    /// every peer.
    PeersOnline { peers: Vec<Presence> },
    /// A peer is gone (removed, expired).
    PeerRemoved { id: String, node_key: Key },
    /// This node's own record changed.
    SelfChanged { node: Node },
    /// The relay map changed.
    RelayMap { relay_map: RelayMap },
    /// Nothing happened; the stream is alive.
    Keepalive,
    /// The server ends the stream for good: the node was removed or has expired.
    Goodbye { reason: String },
}

/// RFC 8628 §3.2: the device authorisation response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCode {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// RFC 8628 §3.5 / RFC 6749 §5.1: the token a device gets once its code was approved.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// RFC 6749 §5.2 error body, used by the token endpoint: `authorization_pending`, `slow_down`,
/// `access_denied`, `expired_token`, `invalid_grant`, `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

/// Every other error: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub message: String,
}

/// Parses one map-stream line.
pub fn parse_map_line(line: &[u8]) -> Result<MapMessage, serde_json::Error> {
    serde_json::from_slice(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            id: "n1".into(),
            name: "laptop".into(),
            dns_name: String::new(),
            node_key: Key([1; 32]),
            disco_key: Key([2; 32]),
            addresses: vec!["100.64.0.1".parse().unwrap()],
            endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
            home_relay: Some("local".into()),
            online: true,
            last_seen: Some(1),
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    #[test]
    fn map_messages_round_trip_with_a_type_tag() {
        let m = MapMessage::Full {
            self_node: node(),
            peers: vec![node()],
            relay_map: RelayMap::default(),
            policy: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.starts_with(r#"{"type":"full","self":{"#), "{text}");
        assert_eq!(parse_map_line(text.as_bytes()).unwrap(), m);
        let k = serde_json::to_string(&MapMessage::Keepalive).unwrap();
        assert_eq!(k, r#"{"type":"keepalive"}"#);
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_map_line(b"{").is_err());
        assert!(parse_map_line(br#"{"type":"nope"}"#).is_err());
        assert!(parse_map_line(br#"{"type":"peer_removed","id":"x","node_key":"AAAA"}"#).is_err());
    }

    #[test]
    fn tokens_stay_out_of_debug_output() {
        let r = RegisterResponse {
            node_id: "n".into(),
            name: "a".into(),
            addresses: vec![],
            node_token: "secret-token".into(),
            expires_at: None,
            account: "default".into(),
            user: None,
        };
        assert!(!format!("{r:?}").contains("secret-token"));
        let t = AccessToken {
            access_token: "secret-token".into(),
            token_type: "Bearer".into(),
            expires_in: 1,
        };
        assert!(!format!("{t:?}").contains("secret-token"));
    }
}
