//! What every request handler shares: the store, the in-memory map, the limits, the settings; and
//! the steps that keep the two in step (a node changed → database, memory, other instances).

use crate::hub::Hub;
use crate::ratelimit::Limiter;
use crate::store::{NodeRow, Store, StoreError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pinhole_proto::control::{ApiError, Node, RelayMap};
use pinhole_proto::endpoint::Endpoint;
use pinhole_proto::key::Key;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub use crate::clock::{ms, now_ms, Clock};

/// Server settings that handlers read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://control.example.com` as people's browsers reach it; derived from Host if none.
    pub public_url: Option<String>,
    /// Whether this listener speaks TLS (for URLs derived from Host).
    pub tls: bool,
    /// How long a node stays signed in; none = forever.
    pub node_expiry: Option<Duration>,
    /// How long a person's sign-in session lasts.
    pub session_expiry: Duration,
    /// How long a device code may wait for approval.
    pub device_code_ttl: Duration,
    /// Seconds a device waits between token polls.
    pub device_poll_interval: u64,
    pub relay_map: RelayMap,
    /// Run the packet relay in-process on `/relay`.
    pub embedded_relay: bool,
    /// Serve the embedded relay on this address of its own instead of the API's.
    pub relay_listen: Option<std::net::SocketAddr>,
    /// Serve the embedded relay's Prometheus metrics (`/metrics`, plain HTTP) here only.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The secret relays present to ask who may use them (SHA-256 of it); none = no relays may ask.
    pub relay_secret_hash: Option<[u8; 32]>,
    /// Load balancers and reverse proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Sign-in through an identity provider (OpenID Connect), besides passwords.
    pub oidc: Option<std::sync::Arc<crate::oidc::Provider>>,
    /// The clock expiries and limits are read from (tests move it forward instead of sleeping).
    pub clock: Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            public_url: None,
            tls: false,
            node_expiry: Some(Duration::from_secs(180 * 86_400)),
            session_expiry: Duration::from_secs(30 * 86_400),
            device_code_ttl: Duration::from_secs(600),
            device_poll_interval: 2,
            relay_map: RelayMap::default(),
            embedded_relay: false,
            relay_listen: None,
            metrics_listen: None,
            relay_secret_hash: None,
            trusted_proxies: Vec::new(),
            oidc: None,
            clock: Clock::default(),
        }
    }
}

impl AppState {
    /// Now, on the server's clock (see [`Clock`]).
    pub fn now_ms(&self) -> i64 {
        self.settings.clock.now_ms()
    }

    /// A removed or expired node loses the embedded relay at once (other relays notice at
    /// their next check with control).
    pub fn revoke_relay(&self, key: Option<pinhole_proto::key::Key>) {
        if let (Some(relay), Some(key)) = (&self.relay, key) {
            relay.revoke(&key);
        }
    }
}

pub struct AppState {
    pub store: Store,
    pub hub: Hub,
    pub settings: Settings,
    /// This instance's id in the presence table.
    pub instance: String,
    /// The deployment's IPv6 /48.
    pub ula: Ipv6Addr,
    /// Failed password sign-ins, per user name and per client address.
    pub signin_limiter: Limiter,
    /// Rejected tokens, per client address and per presented token (valid tokens never wait).
    pub token_limiter: Limiter,
    /// Device codes requested, per client address.
    pub code_limiter: Limiter,
    /// The key and challenges of registration's proof of key possession.
    pub register_keys: crate::register_proof::RegisterKeys,
    /// Serialises address allocation within this instance.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// The embedded packet relay, if it runs.
    pub relay: Option<pinhole_relay::Relay>,
}

/// The client's address, attached to each request by the connection loop (and replaced by the
/// address a trusted proxy names, see [`client_behind_proxies`]).
pub use pinhole_relay::http_server::PeerAddr as ClientAddr;

/// The real client of a request that came from `peer`: when `peer` is a trusted proxy, the
/// right-most address in `X-Forwarded-For` that is not a trusted proxy (each proxy appends the
/// address it heard from, so only the right-most entries are vouched for); otherwise `peer`.
pub fn client_behind_proxies(
    peer: SocketAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> SocketAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(&canonical(*ip)));
    if !is_trusted(&peer.ip()) {
        return peer;
    }
    let mut real = peer.ip();
    // Several X-Forwarded-For headers count as one list, in order.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Unreadable: stop at the last address a trusted hop vouched for.
            break;
        };
        real = canonical(ip);
        if !is_trusted(&real) {
            break;
        }
    }
    SocketAddr::new(real, 0)
}

/// IPv4-mapped IPv6 addresses as IPv4, so that one client has one key.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// An error as the API returns it: a status, a stable code and a sentence.
#[derive(Debug)]
pub struct ApiErr {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiErr {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn too_many(wait: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many failed attempts; try again in {} s",
                wait.as_secs().max(1)
            ),
        )
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ApiError {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiErr::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::NotFound(m) => ApiErr::not_found(m),
            StoreError::AddressesExhausted => ApiErr::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "addresses_exhausted",
                "the overlay address range is full",
            ),
            e => {
                tracing::error!("{e}");
                ApiErr::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the server cannot reach its database; try again shortly",
                )
            }
        }
    }
}

/// A node's DNS name: its label under its account's suffix.
pub fn dns_name(row: &NodeRow) -> String {
    let suffix = row
        .dns_suffix
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(pinhole_dns::DEFAULT_SUFFIX);
    format!("{}.{suffix}", row.name)
}

impl AppState {
    /// A database row as nodes see it; none if the row is unreadable (logged) or has expired.
    pub fn to_node(&self, row: &NodeRow, now: i64) -> Option<Node> {
        if row.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        let (Ok(node_key), Ok(disco_key)) = (
            Key::from_base64(&row.node_key),
            Key::from_base64(&row.disco_key),
        ) else {
            tracing::warn!(node = %row.id, "unreadable key in the database: node skipped");
            return None;
        };
        let v4 = Ipv4Addr::from(u32::try_from(row.ipv4).ok()?);
        let v6 = crate::addresses::v6_for(&self.ula, v4);
        let tags = crate::policy::grants::tags_of(&row.tags);
        Some(Node {
            id: row.id.clone(),
            name: row.name.clone(),
            dns_name: dns_name(row),
            node_key,
            disco_key,
            addresses: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
            endpoints: parse_endpoints(&row.endpoints),
            home_relay: row.home_relay.clone().filter(|h| !h.is_empty()),
            online: row.online > 0,
            last_seen: row.last_seen,
            os: row.os.clone(),
            // A tagged node belongs to its tags, not to whoever set it up.
            user: row.user_name.clone().filter(|_| tags.is_empty()),
            expires_at: row.expires_at,
            tags,
            routes: crate::routes::served(row),
        })
    }

    /// Reads a node afresh and hands it to local streams and the other instances; the node as
    /// published, none if it is gone (removed or expired).
    pub async fn publish(
        &self,
        account_id: &str,
        node_id: &str,
    ) -> Result<Option<Node>, StoreError> {
        let now = self.now_ms();
        let node = match self.store.node_by_id(node_id, now).await? {
            Some(row) => match self.to_node(&row, now) {
                Some(node) => {
                    self.hub.upsert(account_id, node.clone());
                    Some(node)
                }
                None => {
                    let key = self.hub.remove(account_id, node_id, "node key expired");
                    self.revoke_relay(key);
                    None
                }
            },
            None => {
                let key = self.hub.remove(account_id, node_id, "node removed");
                self.revoke_relay(key);
                None
            }
        };
        self.store
            .notify(&format!("{} {account_id} {node_id}", self.instance))
            .await?;
        Ok(node)
    }

    /// Makes sure the account's nodes are in memory.
    pub async fn load_account(&self, account_id: &str) -> Result<(), StoreError> {
        if self.hub.is_loaded(account_id) {
            return Ok(());
        }
        let now = self.now_ms();
        let rows = self.store.nodes_in_account(account_id, now).await?;
        let nodes = rows.iter().filter_map(|r| self.to_node(r, now)).collect();
        let policy = self.policy_of(account_id).await?;
        self.hub.load(account_id, nodes, policy);
        Ok(())
    }

    /// The account's policy as the hub uses it; none if it has none.
    pub async fn policy_of(
        &self,
        account_id: &str,
    ) -> Result<Option<std::sync::Arc<pinhole_policy::Policy>>, StoreError> {
        let Some(text) = self.store.policy(account_id).await? else {
            return Ok(None);
        };
        let mut policy = crate::policy::grants::parse_stored(account_id, &text);
        let idp = self.store.idp_groups(account_id).await?;
        crate::policy::grants::add_idp_groups(&mut policy, &idp);
        Ok(Some(std::sync::Arc::new(policy)))
    }
}

/// Endpoints as stored: comma-separated `ADDR KIND` (a bare `ADDR`, as stored before kinds
/// existed, reads as a local endpoint).
pub fn parse_endpoints(text: &str) -> Vec<Endpoint> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

pub fn format_endpoints(eps: &[Endpoint]) -> String {
    eps.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::endpoint::EndpointKind;

    #[test]
    fn endpoints_round_trip_with_ipv6_and_kinds() {
        let eps: Vec<Endpoint> = vec![
            "192.0.2.1:41641 local".parse().unwrap(),
            "[2001:db8::1]:41641 stun".parse().unwrap(),
            "198.51.100.2:5000 portmap".parse().unwrap(),
        ];
        assert_eq!(parse_endpoints(&format_endpoints(&eps)), eps);
        assert!(parse_endpoints("").is_empty());
        // Rows written before kinds existed.
        assert_eq!(
            parse_endpoints("192.0.2.1:41641,[2001:db8::1]:41641"),
            [
                Endpoint::new("192.0.2.1:41641".parse().unwrap(), EndpointKind::Local),
                Endpoint::new("[2001:db8::1]:41641".parse().unwrap(), EndpointKind::Local)
            ]
        );
    }

    #[test]
    fn only_trusted_proxies_name_the_client() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = axum::http::HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        let via_proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        // From the proxy: the right-most hop that is not a trusted proxy (a client can put
        // anything in front, e.g. 203.0.113.9, but not behind what the proxy appended).
        assert_eq!(
            client_behind_proxies(via_proxy, &h, &trusted).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // From anyone else the header is ignored.
        let direct: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        assert_eq!(client_behind_proxies(direct, &h, &trusted), direct);
        // No header, or garbage: the proxy's own address (or the last vouched-for hop).
        let empty = axum::http::HeaderMap::new();
        assert_eq!(
            client_behind_proxies(via_proxy, &empty, &trusted).ip(),
            via_proxy.ip()
        );
        let mut junk = axum::http::HeaderMap::new();
        junk.append("x-forwarded-for", "198.51.100.7, nonsense".parse().unwrap());
        assert_eq!(
            client_behind_proxies(via_proxy, &junk, &trusted).ip(),
            via_proxy.ip()
        );
        // IPv4-mapped IPv6 peers count as the IPv4 address.
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:5000".parse().unwrap();
        assert_eq!(
            client_behind_proxies(mapped, &h, &trusted).ip(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }
}
