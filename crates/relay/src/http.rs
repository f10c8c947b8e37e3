//! The relay's HTTP face: `GET /relay` with `Upgrade: pinhole-relay` switches the connection to
//! relay frames (an HTTP/1.1 upgrade passes proxies and 443-only firewalls), and with
//! `Upgrade: websocket` carries the same frames in binary WebSocket messages. `GET /metrics`
//! serves the counters in Prometheus' text format, on a router of its own for an address the
//! operator chooses.

use crate::relay::Relay;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use pinhole_proto::relay::UPGRADE_PROTOCOL;

/// The path nodes upgrade on.
pub const RELAY_PATH: &str = "/relay";

/// `/relay`, to serve alone or to merge into another router.
pub fn router(relay: Relay) -> Router {
    Router::new()
        .route(RELAY_PATH, get(upgrade))
        .with_state(relay)
}

/// `/metrics`, served only on an address of the operator's choosing (`--metrics-listen`): the
/// counters tell how busy the relay is and whom it refuses, which is not for everyone.
pub fn metrics_router(relay: Relay) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(relay)
}

fn wants(req: &Request, proto: &str) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case(proto)))
}

async fn upgrade(State(relay): State<Relay>, mut req: Request) -> Response {
    let peer = req
        .extensions()
        .get::<crate::http_server::PeerAddr>()
        .map(|p| p.0.ip());
    if wants(&req, "websocket") {
        return websocket(relay, req, peer);
    }
    if !wants(&req, UPGRADE_PROTOCOL) {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, UPGRADE_PROTOCOL)],
            format!(
                "this is a Pinhole relay: connect with Upgrade: {UPGRADE_PROTOCOL} or a WebSocket\n"
            ),
        )
            .into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let end = relay.serve_connection(TokioIo::new(upgraded), peer).await;
                tracing::trace!("relay connection ended: {end}");
            }
            Err(e) => tracing::debug!("relay upgrade failed: {e}"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    res
}

/// The WebSocket handshake (RFC 6455 §4.2): on success the connection carries binary messages
/// that the relay reads as its frame stream (through [`pinhole_wsio::WsByteStream`], the same
/// adapter pinholed uses on its side).
fn websocket(relay: Relay, mut req: Request, peer: Option<std::net::IpAddr>) -> Response {
    use pinhole_wsio::tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use pinhole_wsio::tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use pinhole_wsio::tokio_tungstenite::WebSocketStream;
    let h = req.headers();
    let version_13 = h
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY).filter(|_| version_13) else {
        return (
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13\n",
        )
            .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    // The subprotocol is named back only when the client offered it (RFC 6455 §4.2.2).
    let offered = h
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == UPGRADE_PROTOCOL));
    let Ok(accept) = HeaderValue::from_str(&accept) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(pinhole_proto::relay::MAX_FRAME + 64));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let end = relay
                    .serve_connection(pinhole_wsio::WsByteStream::new(ws), peer)
                    .await;
                tracing::trace!("relay WebSocket ended: {end}");
            }
            Err(e) => tracing::debug!("relay WebSocket upgrade failed: {e}"),
        }
    });
    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if offered {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(UPGRADE_PROTOCOL),
        );
    }
    res
}

async fn metrics(State(relay): State<Relay>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        relay.metrics_text(),
    )
        .into_response()
}
