//! What every request handler shares: the store, the in-memory map, the limits, the settings; and
//! the steps that keep the two in step (a node changed → database, memory, other instances).

use crate::hub::Hub;
use crate::ratelimit::Limiter;
use crate::store::{NodeRow, Store, StoreError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pinhole_proto::control::{ApiError, Node, RelayMap};
use pinhole_proto::key::Key;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// Run the packet relay in-process on `/relay` (with `/metrics`).
    pub embedded_relay: bool,
    /// Serve the embedded relay on this address of its own instead of the API's.
    pub relay_listen: Option<std::net::SocketAddr>,
    /// The secret relays present to ask who may use them (SHA-256 of it); none = no relays may ask.
    pub relay_secret_hash: Option<[u8; 32]>,
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
            relay_secret_hash: None,
        }
    }
}

impl AppState {
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
    /// Rejected tokens, per client address.
    pub token_limiter: Limiter,
    /// Device codes requested, per client address.
    pub code_limiter: Limiter,
    /// Serialises address allocation within this instance.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// The embedded packet relay, if it runs.
    pub relay: Option<pinhole_relay::Relay>,
}

/// The client's address, attached to each request by the connection loop.
pub use pinhole_relay::http_server::PeerAddr as ClientAddr;

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

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Milliseconds in `d`, saturating.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
        Some(Node {
            id: row.id.clone(),
            name: row.name.clone(),
            node_key,
            disco_key,
            addresses: vec![IpAddr::V4(v4), IpAddr::V6(v6)],
            endpoints: parse_endpoints(&row.endpoints),
            home_relay: row.home_relay.clone().filter(|h| !h.is_empty()),
            online: row.online > 0,
            last_seen: row.last_seen,
            os: row.os.clone(),
            user: row.user_name.clone(),
            expires_at: row.expires_at,
        })
    }

    /// Reads a node afresh and hands it to local streams and the other instances; the node as
    /// published, none if it is gone (removed or expired).
    pub async fn publish(
        &self,
        account_id: &str,
        node_id: &str,
    ) -> Result<Option<Node>, StoreError> {
        let now = now_ms();
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
        let now = now_ms();
        let rows = self.store.nodes_in_account(account_id, now).await?;
        let nodes = rows.iter().filter_map(|r| self.to_node(r, now)).collect();
        self.hub.load(account_id, nodes);
        Ok(())
    }
}

/// Endpoints as stored: comma-separated socket addresses.
pub fn parse_endpoints(text: &str) -> Vec<SocketAddr> {
    text.split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

pub fn format_endpoints(eps: &[SocketAddr]) -> String {
    eps.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_with_ipv6() {
        let eps: Vec<SocketAddr> = vec![
            "192.0.2.1:41641".parse().unwrap(),
            "[2001:db8::1]:41641".parse().unwrap(),
        ];
        assert_eq!(parse_endpoints(&format_endpoints(&eps)), eps);
        assert!(parse_endpoints("").is_empty());
    }
}
