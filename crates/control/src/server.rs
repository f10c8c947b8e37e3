//! The HTTP(S) server: routes (the API, and the embedded relay's), the accept loop (shared with
//! pinhole-relay: TLS with rustls or plain HTTP by explicit choice, per-connection limits), and
//! the background work (expiry sweeps, instance heartbeat, change notices from other instances).

use crate::hub::Hub;
use crate::ratelimit::Limiter;
use crate::state::{AppState, Settings};
use crate::store::{DbKind, Store, StoreError};
use crate::{api, device, secret};
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, patch, post};
use axum::Router;
use pinhole_proto::control::{API_PREFIX, MAX_REQUEST_BODY};
pub use pinhole_relay::http_server::TlsFiles;
use pinhole_relay::http_server::{accept_loop, tls_acceptor, TlsError};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often removed and expired nodes are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long a removed node's row is kept (so other instances see the removal).
const PURGE_AFTER_MS: i64 = 10 * 60 * 1000;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored IPv6 prefix {0:?} is not an IPv6 /48")]
    BadPrefix(String),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    relay_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds `listen` and starts serving; returns once the socket is listening.
    pub async fn start(
        store: Store,
        listen: SocketAddr,
        tls: Option<TlsFiles>,
        mut settings: Settings,
    ) -> Result<Server, ServeError> {
        let acceptor = tls.as_ref().map(tls_acceptor).transpose()?;
        settings.tls = acceptor.is_some();
        let prefix = store
            .setting_or_init("ula_prefix", crate::addresses::new_ula_prefix)
            .await?;
        let ula: Ipv6Addr = prefix
            .parse::<ipnet::Ipv6Net>()
            .ok()
            .filter(|n| n.prefix_len() == 48)
            .map(|n| n.addr())
            .ok_or_else(|| ServeError::BadPrefix(prefix.clone()))?;
        let proof_secret = store
            .setting_or_init(
                crate::register_proof::SECRET_SETTING,
                secret::new_setting_secret,
            )
            .await?;
        let register_keys =
            crate::register_proof::RegisterKeys::from_secret(proof_secret.as_bytes());
        let instance = secret::new_id();
        if store.kind() == DbKind::Sqlite {
            // One instance per SQLite file: streams left from an earlier run are gone.
            for stale in store.stale_instances(i64::MAX).await? {
                store.clear_instance(&stale).await?;
            }
        }
        store
            .instance_beat(&instance, settings.clock.now_ms())
            .await?;
        let (listener, addr) = bind(listen).await?;
        // The relay's own listener (--relay-listen) and the metrics' (--metrics-listen), bound
        // before anything is served.
        let relay_listener = match settings.relay_listen.filter(|_| settings.embedded_relay) {
            Some(at) => Some(bind(at).await?),
            None => None,
        };
        let relay_addr = relay_listener.as_ref().map(|(_, a)| *a);
        let metrics_listener = match settings.metrics_listen.filter(|_| settings.embedded_relay) {
            Some(at) => Some(bind(at).await?),
            None => None,
        };
        let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
        let relay = settings.embedded_relay.then(|| {
            let auth = crate::relay_auth::StoreAuthorizer {
                store: store.clone(),
            };
            pinhole_relay::Relay::new(Arc::new(auth), pinhole_relay::RelayConfig::default())
        });
        let state = Arc::new(AppState {
            hub: Hub::new(&settings.relay_map),
            relay,
            store,
            settings,
            instance,
            ula,
            signin_limiter: Limiter::new(5, Duration::from_secs(60)),
            token_limiter: Limiter::new(30, Duration::from_secs(60)),
            code_limiter: Limiter::new(30, Duration::from_secs(60)),
            register_keys,
            alloc_lock: tokio::sync::Mutex::new(()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if let (Some((l, _)), Some(relay)) = (metrics_listener, &state.relay) {
            tasks.spawn(accept_loop(
                l,
                None,
                pinhole_relay::http::metrics_router(relay.clone()),
                stop_rx.clone(),
            ));
        }
        if let (Some((l, _)), Some(relay)) = (relay_listener, &state.relay) {
            tasks.spawn(accept_loop(
                l,
                acceptor.clone(),
                pinhole_relay::http::router(relay.clone()),
                stop_rx.clone(),
            ));
        }
        tasks.spawn(accept_loop(
            listener,
            acceptor,
            router(state.clone()),
            stop_rx.clone(),
        ));
        tasks.spawn(sweeper(state.clone(), stop_rx.clone()));
        tasks.spawn(renames(state.clone(), stop_rx.clone()));
        tasks.spawn(policies(state.clone(), stop_rx.clone()));
        if let Some(relay) = &state.relay {
            tasks.spawn(relay.clone().run_rechecks());
        }
        tasks.spawn(presence_flusher(state.clone(), stop_rx.clone()));
        if state.store.kind() == DbKind::Postgres {
            tasks.spawn(listen_for_changes(state.clone(), stop_rx));
        }
        tracing::info!(%addr, tls = state.settings.tls, "pinhole-control is listening");
        if let Some(relay_addr) = relay_addr {
            tracing::info!(%relay_addr, "the embedded relay is listening on its own address");
        }
        Ok(Server {
            addr,
            relay_addr,
            metrics_addr,
            state,
            stop,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the embedded relay listens when it has an address of its own (`relay_listen`).
    pub fn relay_addr(&self) -> Option<SocketAddr> {
        self.relay_addr
    }

    /// Where the embedded relay's metrics are served (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops accepting, closes every connection, and marks this instance's nodes offline.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(relay) = &self.state.relay {
            relay.shutdown();
        }
        while self.tasks.join_next().await.is_some() {}
        match self.state.store.clear_instance(&self.state.instance).await {
            Ok(nodes) => {
                for (account, node) in self.state.hub.streaming_nodes() {
                    if nodes.contains(&node) {
                        let _ = self.state.publish(&account, &node).await;
                    }
                }
            }
            Err(e) => tracing::warn!("clearing this instance's presence: {e}"),
        }
    }
}

/// A listening socket on `at` and the address it got (a port 0 becomes a real one).
async fn bind(at: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let l = TcpListener::bind(at)
        .await
        .map_err(|e| ServeError::Listen(at, e))?;
    let addr = l.local_addr().map_err(|e| ServeError::Listen(at, e))?;
    Ok((l, addr))
}

/// Every route the server answers: the API, and the embedded relay's `/relay` (unless the
/// relay has an address of its own).
pub fn router(state: Arc<AppState>) -> Router {
    let relay = state
        .relay
        .clone()
        .filter(|_| state.settings.relay_listen.is_none());
    let control = control_router(state);
    match relay {
        Some(relay) => control.merge(pinhole_relay::http::router(relay)),
        None => control,
    }
}

fn control_router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/device/code", post(device::code))
        .route("/device/token", post(device::token))
        .route("/register/challenge", post(api::register_challenge))
        .route("/register", post(api::register))
        .route("/map", get(api::map))
        .route("/node", patch(api::update_node).delete(api::delete_self))
        .route("/nodes", get(api::list_nodes))
        .route("/nodes/{id}", delete(api::delete_node))
        .route("/logout", post(api::logout))
        .route("/relay/authorize", get(api::relay_authorize));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/device", get(device::page).post(device::approve))
        .route("/oidc/start", post(crate::device_oidc::start))
        .route("/oidc/callback", get(crate::device_oidc::callback))
        .nest(API_PREFIX, api)
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            real_client_address,
        ))
        .with_state(state)
}

/// Behind a trusted proxy (`--trusted-proxy`), the client is the address the proxies name in
/// `X-Forwarded-For`: the last one there that is not itself a trusted proxy. Anyone else's
/// `X-Forwarded-For` is ignored, so a client cannot choose the address it is counted under.
async fn real_client_address(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let trusted = &st.settings.trusted_proxies;
    if let Some(peer) = req.extensions().get::<crate::state::ClientAddr>().copied() {
        let real = crate::state::client_behind_proxies(peer.0, req.headers(), trusted);
        if real != peer.0 {
            req.extensions_mut().insert(crate::state::ClientAddr(real));
        }
    }
    next.run(req).await
}

/// Refuses a body declared larger than the limit at once, without reading it (chunked bodies
/// are cut off by the body limit as they are read).
async fn refuse_oversized(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        return crate::state::ApiErr::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body larger than {} KiB", MAX_REQUEST_BODY / 1024),
        )
        .into_response();
    }
    next.run(req).await
}

/// How often gathered presence changes go out.
const PRESENCE_EVERY: Duration = Duration::from_millis(250);

async fn presence_flusher(st: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => st.hub.flush_presence(),
        }
    }
}

/// Removes expired and removed nodes from memory, keeps this instance's heartbeat, and takes
/// over presence of instances that stopped beating.
async fn sweeper(st: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        if let Err(e) = sweep(&st, n).await {
            tracing::warn!("sweep: {e}");
        }
    }
}

async fn sweep(st: &AppState, n: u64) -> Result<(), StoreError> {
    let now = st.now_ms();
    for (id, account) in st.store.gone_nodes(now).await? {
        if st.hub.contains(&account, &id) {
            st.publish(&account, &id).await?;
        }
    }
    if n.is_multiple_of(5) {
        st.store.instance_beat(&st.instance, now).await?;
        for stale in st.store.stale_instances(now).await? {
            if stale == st.instance {
                continue;
            }
            tracing::info!(instance = %stale, "a control instance stopped: its nodes are offline");
            for node in st.store.clear_instance(&stale).await? {
                if let Some(row) = st.store.node_by_id(&node, now).await? {
                    st.publish(&row.account_id, &node).await?;
                }
            }
        }
        st.store.purge_removed(now, PURGE_AFTER_MS).await?;
    }
    Ok(())
}

/// How often rows an operator changed (renames, a new DNS suffix) are looked for.
const RENAMES_EVERY: Duration = Duration::from_millis(500);
/// How far behind the newest change seen each look starts.
const RENAMES_OVERLAP_MS: i64 = 2_000;

/// Sends nodes an operator changed (`node rename`, `account set --dns-suffix`) to the maps.
async fn renames(st: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(RENAMES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Changes made before this server started are in the maps it builds anyway. Rows are read
    // a little behind the newest mark seen (a change committed in the same millisecond as a
    // read, or by a slightly slower clock, is not missed) and each change is sent once.
    let mut seen = st.now_ms();
    let mut sent: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let since = seen - RENAMES_OVERLAP_MS;
        sent.retain(|_, at| *at > since);
        match st.store.changed_nodes(since).await {
            Ok(rows) => {
                for (id, account, at) in rows {
                    seen = seen.max(at);
                    if sent.get(&id) == Some(&at) {
                        continue;
                    }
                    sent.insert(id.clone(), at);
                    if st.hub.is_loaded(&account) {
                        if let Err(e) = st.publish(&account, &id).await {
                            tracing::warn!("sending a renamed node: {e}");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("looking for renamed nodes: {e}"),
        }
    }
}

/// How often accounts whose policy changed are looked for (a change reaches every node within
/// a second).
const POLICIES_EVERY: Duration = Duration::from_millis(200);

/// Applies policies an operator set (`policy set`, here or on another instance) to the maps.
async fn policies(st: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(POLICIES_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = st.now_ms();
    let mut applied: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let since = seen - RENAMES_OVERLAP_MS;
        applied.retain(|_, at| *at > since);
        let rows = match st.store.changed_policies(since).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("looking for changed policies: {e}");
                continue;
            }
        };
        for (account, at) in rows {
            seen = seen.max(at);
            if applied.get(&account) == Some(&at) || !st.hub.is_loaded(&account) {
                continue;
            }
            match st.policy_of(&account).await {
                Ok(p) => {
                    applied.insert(account.clone(), at);
                    tracing::info!(%account, policy = p.is_some(), "applying the account's policy");
                    st.hub.set_policy(&account, p);
                }
                Err(e) => tracing::warn!("reading a changed policy: {e}"),
            }
        }
    }
}

/// PostgreSQL: hears other instances' node changes and applies them to this one's streams.
async fn listen_for_changes(st: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        let r = async {
            let mut l = sqlx::postgres::PgListener::connect(st.store.url()).await?;
            l.listen("pinhole_nodes").await?;
            loop {
                let n = l.recv().await?;
                apply_notice(&st, n.payload()).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.changed() => return,
            r = r => if let Err(e) = r {
                tracing::warn!("listening for other instances' changes: {e}");
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn apply_notice(st: &AppState, payload: &str) {
    let mut parts = payload.split(' ');
    let (Some(instance), Some(account), Some(node)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if instance == st.instance || !st.hub.is_loaded(account) {
        return;
    }
    let now = st.now_ms();
    match st.store.node_by_id(node, now).await {
        Ok(Some(row)) => match st.to_node(&row, now) {
            Some(n) => st.hub.upsert(account, n),
            None => st.revoke_relay(st.hub.remove(account, node, "node key expired")),
        },
        Ok(None) => st.revoke_relay(st.hub.remove(account, node, "node removed")),
        Err(e) => tracing::warn!("reading a changed node: {e}"),
    }
}
