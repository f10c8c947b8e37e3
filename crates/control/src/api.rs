//! The JSON API nodes and clients call: registration, the map stream, a node's own updates and
//! removal, and an account's node list for signed-in people.

use crate::addresses;
use crate::hub::{to_line, FullMap, Subscription};
use crate::secret::{self, TokenKind};
use crate::state::{format_endpoints, ms, ApiErr, AppState, ClientAddr};
use crate::store::{NewNode, NodeRow, SessionRow, StoreError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use pinhole_proto::control::{
    MapMessage, Node, NodeUpdate, RegisterChallenge, RegisterRequest, RegisterResponse,
    MAP_KEEPALIVE_SECS,
};
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type St = State<Arc<AppState>>;

/// Most endpoints a node may publish.
const MAX_ENDPOINTS: usize = 32;
/// Longest hostname, OS name or relay code accepted.
const MAX_LABEL: usize = 255;
/// Bytes of the full map copied out per chunk.
const FULL_MAP_CHUNK: usize = 32 * 1024;
/// Most bytes one chunk of the map stream carries when several lines are waiting.
const MAX_CHUNK: usize = 256 * 1024;

/// The token in `Authorization: Bearer …`.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiErr> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiErr::unauthorized("missing Authorization: Bearer token"))?;
    let text = value
        .to_str()
        .map_err(|_| ApiErr::unauthorized("Authorization header is not text"))?;
    text.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| ApiErr::unauthorized("Authorization must be `Bearer TOKEN`"))
}

impl AppState {
    /// A token that was checked and refused. Failures count against the client's address and
    /// against the presented token; once either is over its limit the answer is 429 instead of
    /// 401. Valid tokens are checked before any limit, so a neighbour behind the same NAT that
    /// keeps presenting a bad token never locks a valid node out.
    fn token_failed(&self, client: &ClientAddr, token: &str, why: &str) -> ApiErr {
        let now = Instant::now();
        let by_address = format!("ip:{}", client.0.ip());
        let by_token = format!("token:{}", secret::hash_token(token));
        for key in [&by_address, &by_token] {
            if let Err(wait) = self.token_limiter.check(key, now) {
                return ApiErr::too_many(wait);
            }
        }
        self.token_limiter.fail(&by_address, now);
        self.token_limiter.fail(&by_token, now);
        ApiErr::unauthorized(why)
    }

    /// The session behind a presented session token.
    pub async fn session(
        &self,
        headers: &HeaderMap,
        client: &ClientAddr,
    ) -> Result<SessionRow, ApiErr> {
        let token = bearer(headers)?;
        if TokenKind::of(token) != Some(TokenKind::Session) {
            return Err(self.token_failed(
                client,
                token,
                "this needs a session token from signing in",
            ));
        }
        let Some(s) = self
            .store
            .session_by_hash(&secret::hash_token(token))
            .await?
        else {
            return Err(self.token_failed(client, token, "unknown session token: sign in again"));
        };
        if s.revoked_at.is_some() {
            return Err(ApiErr::unauthorized(
                "this session was signed out: sign in again",
            ));
        }
        if s.expires_at <= self.now_ms() {
            return Err(ApiErr::unauthorized(
                "this session has expired: sign in again",
            ));
        }
        Ok(s)
    }

    /// The node behind a presented node token.
    async fn node_by_token(
        &self,
        headers: &HeaderMap,
        client: &ClientAddr,
    ) -> Result<NodeRow, ApiErr> {
        let token = bearer(headers)?;
        if TokenKind::of(token) != Some(TokenKind::Node) {
            return Err(self.token_failed(
                client,
                token,
                "this needs the node token from registration",
            ));
        }
        let now = self.now_ms();
        let Some(row) = self
            .store
            .node_by_token(&secret::hash_token(token), now)
            .await?
        else {
            return Err(self.token_failed(
                client,
                token,
                "unknown node token (the node may have been removed): register again",
            ));
        };
        if row.expires_at.is_some_and(|e| e <= now) {
            return Err(ApiErr::unauthorized("node key expired: sign in again"));
        }
        Ok(row)
    }
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiErr> {
    body.map(|Json(t)| t)
        .map_err(|e| ApiErr::bad_request(format!("invalid request body: {}", e.body_text())))
}

/// Who may register a node: an auth key or a person's session.
struct Registrar {
    account_id: String,
    account_name: String,
    user_id: Option<String>,
    user_name: Option<String>,
    /// A one-off auth key to mark used.
    one_off_key: Option<String>,
    /// Tags the auth key gives.
    key_tags: Vec<String>,
}

async fn registrar(
    st: &AppState,
    headers: &HeaderMap,
    client: &ClientAddr,
) -> Result<Registrar, ApiErr> {
    let token = bearer(headers)?;
    match TokenKind::of(token) {
        Some(TokenKind::AuthKey) => {
            let Some(k) = st
                .store
                .auth_key_by_hash(&secret::hash_token(token))
                .await?
            else {
                return Err(st.token_failed(client, token, "unknown auth key"));
            };
            if k.revoked_at.is_some() {
                return Err(ApiErr::unauthorized("this auth key was revoked"));
            }
            if k.expires_at.is_some_and(|e| e <= st.now_ms()) {
                return Err(ApiErr::unauthorized(
                    "this auth key has expired: create a new one",
                ));
            }
            if k.reusable == 0 && k.used_at.is_some() {
                return Err(ApiErr::unauthorized(
                    "this auth key was used already (create one with --reusable for several machines)",
                ));
            }
            Ok(Registrar {
                account_id: k.account_id,
                account_name: k.account_name,
                user_id: k.user_id,
                user_name: k.user_name,
                one_off_key: (k.reusable == 0).then_some(k.id),
                key_tags: crate::policy::tags_of(&k.tags),
            })
        }
        Some(TokenKind::Session) => {
            let s = st.session(headers, client).await?;
            Ok(Registrar {
                account_id: s.account_id,
                account_name: s.account_name,
                user_id: Some(s.user_id),
                user_name: Some(s.user_name),
                one_off_key: None,
                key_tags: Vec::new(),
            })
        }
        _ => Err(st.token_failed(
            client,
            token,
            "registration needs an auth key or a session token",
        )),
    }
}

/// `POST /api/v1/register/challenge`: the server's registration key and a fresh challenge.
/// Stateless (checked by its MAC), so it needs no credentials and costs no database work.
pub async fn register_challenge(State(st): St) -> Json<RegisterChallenge> {
    Json(st.register_keys.challenge(st.now_ms()))
}

/// `POST /api/v1/register`
pub async fn register(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Result<Json<RegisterResponse>, ApiErr> {
    let who = registrar(&st, &headers, &client).await?;
    let req = json_body(body)?;
    // Only the holder of the node key's private half may register it (or take its record back).
    if let Err(e) = st.register_keys.verify(&req, st.now_ms()) {
        tracing::info!(client = %client.0.ip(), key = %req.node_key.short(), "registration refused: {e}");
        return Err(ApiErr::new(
            StatusCode::FORBIDDEN,
            "key_proof",
            e.to_string(),
        ));
    }
    if req.hostname.len() > MAX_LABEL || req.os.len() > MAX_LABEL {
        return Err(ApiErr::bad_request(
            "hostname and os must be at most 255 bytes",
        ));
    }
    if req.node_key == req.disco_key {
        return Err(ApiErr::bad_request(
            "the disco key must differ from the node key",
        ));
    }
    let now = st.now_ms();
    let node_key = req.node_key.to_base64();
    let disco_key = req.disco_key.to_base64();
    let (token, token_hash) = secret::new_token(TokenKind::Node);
    let expires_at = st.settings.node_expiry.map(|d| now.saturating_add(ms(d)));
    let os: String = req.os.chars().filter(|c| !c.is_control()).collect();

    let existing = st.store.node_by_key(&node_key, now).await?;
    let had_tags = existing.as_ref().is_some_and(|e| !e.tags.is_empty());
    if let Some(e) = &existing {
        if e.account_id != who.account_id {
            return Err(ApiErr::new(
                StatusCode::CONFLICT,
                "node_key_taken",
                "this node key belongs to another account: log out on that node first",
            ));
        }
    }
    // Routes and tags are checked (or the registration refused) before anything is written.
    crate::routes::check_offered(&req.advertised_routes, st.ula).map_err(ApiErr::bad_request)?;
    let tags = granted_tags(
        &st,
        &who.account_id,
        who.user_name.as_deref(),
        &req.tags,
        &who.key_tags,
    )
    .await?;
    if let Some(id) = &who.one_off_key {
        if !st.store.use_auth_key(id, now).await? {
            return Err(ApiErr::unauthorized("this auth key was used already"));
        }
    }
    let node_id = match existing {
        Some(e) => {
            st.store
                .reregister_node(
                    &e.id,
                    who.user_id.as_deref(),
                    &disco_key,
                    &req.hostname,
                    &os,
                    &token_hash,
                    expires_at,
                )
                .await?;
            e.id
        }
        None => {
            st.store.purge_removed_node_key(&node_key).await?;
            insert_new_node(
                &st,
                &who,
                &req.hostname,
                &os,
                &node_key,
                &disco_key,
                &token_hash,
                now,
                expires_at,
            )
            .await?
        }
    };
    if !tags.is_empty() || had_tags {
        st.store.set_node_tags(&node_id, &tags).await?;
    }
    if let Some(row) = st.store.node_by_id(&node_id, now).await? {
        if !req.advertised_routes.is_empty() || !row.advertised_routes.is_empty() {
            offer_routes(&st, &row, &req.advertised_routes).await?;
        }
    }
    st.load_account(&who.account_id).await?;
    let node = st
        .publish(&who.account_id, &node_id)
        .await?
        .ok_or_else(|| ApiErr::not_found("the node was removed while registering"))?;
    tracing::info!(node = %node.name, account = %who.account_name, "node registered");
    Ok(Json(RegisterResponse {
        node_id,
        name: node.name,
        addresses: node.addresses,
        node_token: token,
        expires_at: node.expires_at,
        account: who.account_name,
        user: who.user_name,
    }))
}

/// The tags a node gets: its auth key's, or those it asks for that its user owns under the
/// account's policy; a tag it may not have is a refusal in words.
async fn granted_tags(
    st: &AppState,
    account_id: &str,
    user: Option<&str>,
    asked: &[String],
    key_tags: &[String],
) -> Result<Vec<String>, ApiErr> {
    if asked.len() > MAX_TAGS {
        return Err(ApiErr::bad_request(format!("at most {MAX_TAGS} tags")));
    }
    // The policy says who owns a tag: read only when a node asks for tags itself (most
    // registrations ask for none; an auth key's tags need no owner).
    let policy = if asked.is_empty() || !key_tags.is_empty() {
        None
    } else {
        st.policy_of(account_id).await?
    };
    crate::policy::grant_tags(policy.as_deref(), user, asked, key_tags)
        .map_err(|m| ApiErr::new(StatusCode::FORBIDDEN, "tag_not_allowed", m))
}

/// Most tags one node may have.
const MAX_TAGS: usize = 32;

#[allow(clippy::too_many_arguments)]
async fn insert_new_node(
    st: &AppState,
    who: &Registrar,
    hostname: &str,
    os: &str,
    node_key: &str,
    disco_key: &str,
    token_hash: &str,
    now: i64,
    expires_at: Option<i64>,
) -> Result<String, ApiErr> {
    let base = pinhole_dns::label::label(hostname);
    // One allocation at a time in this instance; other instances (PostgreSQL) are told apart by
    // the unique constraints, and a retry after a clash skips ahead by a random stride.
    let _one_at_a_time = st.alloc_lock.lock().await;
    for attempt in 0..16u32 {
        let max = st
            .store
            .max_ipv4()
            .await?
            .and_then(|v| u32::try_from(v).ok());
        let used = if max.is_some_and(|m| m >= addresses::V4_LAST) {
            st.store
                .used_ipv4()
                .await?
                .into_iter()
                .filter_map(|v| u32::try_from(v).ok())
                .collect()
        } else {
            Vec::new()
        };
        let max = match (attempt, max) {
            (0, m) => m,
            (a, Some(m)) => Some(m.saturating_add(rand::random::<u32>() % (a * 8))),
            (_, None) => None,
        };
        let ip = addresses::next_v4(max, || used).ok_or(StoreError::AddressesExhausted)?;
        let mut n = 1;
        let mut name = base.clone();
        while st.store.name_taken(&who.account_id, &name).await? {
            n += 1;
            name = pinhole_dns::label::numbered(&base, n);
        }
        let id = secret::new_id();
        let r = st
            .store
            .insert_node(&NewNode {
                id: &id,
                account_id: &who.account_id,
                user_id: who.user_id.as_deref(),
                node_key,
                disco_key,
                hostname,
                name: &name,
                os,
                ipv4: i64::from(ip),
                token_hash,
                now,
                expires_at,
            })
            .await;
        match r {
            Ok(()) => {
                tracing::debug!(%id, addr = %Ipv4Addr::from(ip), "address allocated");
                return Ok(id);
            }
            // Another registration took the address or the name at the same moment: pick again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiErr::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many registrations at once; try again",
    ))
}

/// `GET /api/v1/map`: the full map, then every change, as newline-delimited JSON.
pub async fn map(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiErr> {
    let row = st.node_by_token(&headers, &client).await?;
    let account = row.account_id.clone();
    st.load_account(&account).await?;
    st.store.presence(&row.id, &st.instance, 1).await?;
    let mut guard = StreamGuard {
        st: st.clone(),
        account: account.clone(),
        node: row.id.clone(),
        sub: 0,
    };
    st.store.touch_node(&row.id, st.now_ms()).await?;
    st.publish(&account, &row.id).await?;
    let Some(Subscription { id, full_map, rx }) = st.hub.subscribe(&account, &row.id) else {
        return Err(ApiErr::not_found("the node was removed"));
    };
    guard.sub = id;
    let period = Duration::from_secs(MAP_KEEPALIVE_SECS);
    let body = MapBody {
        first: full_map,
        rx,
        keepalive: tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        keepalive_line: to_line(&MapMessage::Keepalive),
        _guard: guard,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Ends a node's presence here when its stream goes (client gone, server closing it).
struct StreamGuard {
    st: Arc<AppState>,
    account: String,
    node: String,
    sub: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.sub != 0 {
            self.st.hub.unsubscribe(&self.account, &self.node, self.sub);
        }
        let st = self.st.clone();
        let account = std::mem::take(&mut self.account);
        let node = std::mem::take(&mut self.node);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let r = async {
                    st.store.presence(&node, &st.instance, -1).await?;
                    st.store.touch_node(&node, st.now_ms()).await?;
                    st.publish(&account, &node).await.map(drop)
                };
                if let Err(e) = r.await {
                    tracing::warn!("marking a node offline: {e}");
                }
            });
        }
    }
}

struct MapBody {
    first: FullMap,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    keepalive: tokio::time::Interval,
    keepalive_line: Bytes,
    _guard: StreamGuard,
}

impl Stream for MapBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(b) = this.first.next_chunk(FULL_MAP_CHUNK) {
            return Poll::Ready(Some(Ok(b)));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(line)) => {
                this.keepalive.reset();
                // Lines that queued up while the socket was busy go out in one chunk.
                let Ok(next) = this.rx.try_recv() else {
                    return Poll::Ready(Some(Ok(line)));
                };
                let mut chunk = BytesMut::from(&line[..]);
                chunk.extend_from_slice(&next);
                while chunk.len() < MAX_CHUNK {
                    match this.rx.try_recv() {
                        Ok(more) => chunk.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                return Poll::Ready(Some(Ok(chunk.freeze())));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.keepalive.poll_tick(cx).is_ready() {
            return Poll::Ready(Some(Ok(this.keepalive_line.clone())));
        }
        Poll::Pending
    }
}

/// `PATCH /api/v1/node`: a node changes its own endpoints, home relay, disco key or tags.
pub async fn update_node(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Result<Json<NodeUpdate>, JsonRejection>,
) -> Result<Json<Node>, ApiErr> {
    let row = st.node_by_token(&headers, &client).await?;
    let upd = json_body(body)?;
    if upd
        .endpoints
        .as_ref()
        .is_some_and(|e| e.len() > MAX_ENDPOINTS)
    {
        return Err(ApiErr::bad_request(format!(
            "at most {MAX_ENDPOINTS} endpoints"
        )));
    }
    if upd.home_relay.as_ref().is_some_and(|h| h.len() > MAX_LABEL) {
        return Err(ApiErr::bad_request("home_relay is too long"));
    }
    if upd
        .disco_key
        .is_some_and(|d| Some(d) == pinhole_proto::key::Key::from_base64(&row.node_key).ok())
    {
        return Err(ApiErr::bad_request(
            "the disco key must differ from the node key",
        ));
    }
    if let Some(asked) = &upd.tags {
        let mut asked = asked.clone();
        asked.sort();
        asked.dedup();
        if asked != crate::policy::tags_of(&row.tags) {
            let tags =
                granted_tags(&st, &row.account_id, row.user_name.as_deref(), &asked, &[]).await?;
            st.store.set_node_tags(&row.id, &tags).await?;
        }
    }
    if let Some(offered) = &upd.advertised_routes {
        offer_routes(&st, &row, offered).await?;
    }
    let endpoints = upd.endpoints.as_deref().map(format_endpoints);
    let disco = upd.disco_key.map(|k| k.to_base64());
    st.store
        .update_node(
            &row.id,
            endpoints.as_deref(),
            upd.home_relay
                .as_deref()
                .map(|h| (!h.is_empty()).then_some(h)),
            disco.as_deref(),
            st.now_ms(),
        )
        .await?;
    let fresh = st
        .publish(&row.account_id, &row.id)
        .await?
        .ok_or_else(|| ApiErr::not_found("the node was removed"))?;
    Ok(Json(fresh))
}

/// A node's new offer of routes: checked, recorded, and approved where the policy's
/// `autoApprovers` say so (its caller publishes the node).
async fn offer_routes(
    st: &AppState,
    row: &crate::store::NodeRow,
    offered: &[ipnet::IpNet],
) -> Result<(), ApiErr> {
    let offered = crate::routes::check_offered(offered, st.ula).map_err(ApiErr::bad_request)?;
    if offered == crate::routes::parse(&row.advertised_routes) {
        return Ok(());
    }
    st.store.set_advertised_routes(&row.id, &offered).await?;
    let Some(policy) = st.policy_of(&row.account_id).await? else {
        return Ok(());
    };
    let tags = crate::policy::tags_of(&row.tags);
    let auto = policy.auto_approved(row.user_name.as_deref(), &tags, &offered);
    let mut approved = crate::routes::parse(&row.approved_routes);
    if auto.iter().all(|r| approved.contains(r)) {
        return Ok(());
    }
    approved.extend(auto);
    approved.sort();
    approved.dedup();
    tracing::info!(node = %row.name, routes = %crate::routes::format(&approved), "routes approved by the policy's autoApprovers");
    st.store
        .set_approved_routes(&row.id, &approved, None)
        .await?;
    Ok(())
}

/// `DELETE /api/v1/node`: the node leaves (logout).
pub async fn delete_self(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiErr> {
    let row = st.node_by_token(&headers, &client).await?;
    st.store.remove_node(&row.id, st.now_ms()).await?;
    st.revoke_relay(pinhole_proto::key::Key::from_base64(&row.node_key).ok());
    st.publish(&row.account_id, &row.id).await?;
    tracing::info!(node = %row.name, "node logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/nodes`: the signed-in person's account's nodes.
pub async fn list_nodes(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<Json<Vec<Node>>, ApiErr> {
    let s = st.session(&headers, &client).await?;
    let now = st.now_ms();
    let rows = st.store.nodes_in_account(&s.account_id, now).await?;
    Ok(Json(
        rows.iter().filter_map(|r| st.to_node(r, now)).collect(),
    ))
}

/// `DELETE /api/v1/nodes/{id}`: a signed-in person removes a node of their account.
pub async fn delete_node(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiErr> {
    let s = st.session(&headers, &client).await?;
    let row = st.store.node_by_id(&id, st.now_ms()).await?;
    // Another account's node is reported exactly like a missing one.
    let Some(row) = row.filter(|r| r.account_id == s.account_id) else {
        return Err(ApiErr::not_found("no such node in your account"));
    };
    st.store.remove_node(&row.id, st.now_ms()).await?;
    st.revoke_relay(pinhole_proto::key::Key::from_base64(&row.node_key).ok());
    st.publish(&row.account_id, &row.id).await?;
    tracing::info!(node = %row.name, by = %s.user_name, "node removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/logout`: revokes the presented session.
pub async fn logout(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiErr> {
    let s = st.session(&headers, &client).await?;
    st.store.revoke_session(&s.id, st.now_ms()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unknown paths get a JSON 404 like every other error.
pub async fn not_found() -> ApiErr {
    ApiErr::not_found("no such endpoint")
}

/// The query of `GET /api/v1/relay/authorize`.
#[derive(Debug, serde::Deserialize)]
pub struct RelayQuery {
    key: String,
}

/// `GET /api/v1/relay/authorize?key=…`: a relay (bearer relay secret) asks which network the node
/// with that key belongs to; 404 when no registered, unexpired node has it.
pub async fn relay_authorize(
    State(st): St,
    Extension(client): Extension<ClientAddr>,
    axum::extract::Query(q): axum::extract::Query<RelayQuery>,
    headers: HeaderMap,
) -> Result<Json<pinhole_proto::control::RelayGrant>, ApiErr> {
    let secret = bearer(&headers)?;
    use sha2::Digest;
    let presented: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    // Digests of equal length compared in full: no early exit on the first differing byte.
    let ok = st.settings.relay_secret_hash.is_some_and(|h| {
        h.iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !ok {
        return Err(st.token_failed(&client, secret, "this needs the relay secret"));
    }
    let key = pinhole_proto::key::Key::from_base64(&q.key)
        .map_err(|_| ApiErr::bad_request("key is not a base64 node key"))?;
    match crate::relay_auth::network_of(&st.store, &key).await? {
        Some(network) => Ok(Json(pinhole_proto::control::RelayGrant { network })),
        None => Err(ApiErr::not_found("no node with this key")),
    }
}
