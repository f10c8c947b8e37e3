//! Every API endpoint, end to end over HTTP, against SQLite and against a real PostgreSQL server
//! started by the test. Each scenario runs on both databases.

mod common;

use common::pg::Postgres;
use pinhole_control::{admin, names};
use pinhole_control::{Server, Settings, Store, TlsFiles};
use pinhole_control_client::{ClientError, ControlClient, DevicePoll, MapStream};
use pinhole_proto::control::{MapMessage, NodeInfo, NodeUpdate, RegisterRequest, RegisterResponse};
use pinhole_proto::endpoint::Endpoint;
use pinhole_proto::key::{Key, PrivateKey};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

struct Harness {
    db: String,
    server: Option<Server>,
    client: ControlClient,
    settings: Settings,
}

impl Harness {
    async fn new(db: &str) -> Harness {
        Self::with(db, Settings::default()).await
    }

    async fn with(db: &str, settings: Settings) -> Harness {
        let store = Store::open(db).await.expect("open store");
        let server = Server::start(
            store,
            "127.0.0.1:0".parse().unwrap(),
            None,
            settings.clone(),
        )
        .await
        .expect("start server");
        let client = ControlClient::new(&format!("http://{}", server.local_addr()), None).unwrap();
        Harness {
            db: db.to_string(),
            server: Some(server),
            client,
            settings,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    async fn store(&self) -> Store {
        Store::open(&self.db).await.unwrap()
    }

    async fn authkey(&self, account: &str, reusable: bool, expiry: Option<Duration>) -> String {
        admin::create_auth_key(&self.store().await, account, reusable, expiry)
            .await
            .unwrap()
    }

    /// Stops the server and starts a new one on the same database and port.
    async fn restart(&mut self) {
        let addr = self.addr();
        self.server.take().unwrap().shutdown().await;
        let store = Store::open(&self.db).await.unwrap();
        let mut tries = 0;
        let server = loop {
            match Server::start(store.clone(), addr, None, self.settings.clone()).await {
                Ok(s) => break s,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        };
        self.server = Some(server);
    }
}

/// Node `n`'s private key.
fn private(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

/// How node `n` registers: its disco key and names.
fn info(n: u8, host: &str) -> NodeInfo {
    NodeInfo {
        disco_key: Key([n.wrapping_add(100); 32]),
        hostname: host.into(),
        os: "linux".into(),
        tags: Vec::new(),
        advertised_routes: Vec::new(),
    }
}

async fn next(stream: &mut MapStream) -> MapMessage {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a map message in time")
        .expect("stream readable")
        .expect("stream open")
}

/// Reads until a message matches; panics after WAIT.
async fn until(stream: &mut MapStream, mut want: impl FnMut(&MapMessage) -> bool) -> MapMessage {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the expected map message in time")
            .expect("stream readable")
            .expect("stream open");
        if want(&m) {
            return m;
        }
    }
}

/// The presence a `peers_online` message gives for `id`.
fn online(m: &MapMessage, id: &str) -> Option<bool> {
    match m {
        MapMessage::PeersOnline { peers } => peers.iter().find(|p| p.id == id).map(|p| p.online),
        _ => None,
    }
}

fn api_status(e: &ClientError) -> u16 {
    match e {
        ClientError::Api { status, .. } => *status,
        other => panic!("expected an API error, got {other}"),
    }
}

async fn register(h: &Harness, key: &str, n: u8, host: &str) -> RegisterResponse {
    h.client
        .register(key, &private(n), &info(n, host))
        .await
        .expect("register")
}

// ---------------------------------------------------------------- scenarios

async fn registration_gives_stable_unique_addresses(db: &str) {
    let mut h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "Alpha").await;
    let b = register(&h, &key, 2, "alpha").await;
    assert_eq!(a.name, "alpha");
    assert_eq!(b.name, "alpha-2", "names are unique per account");
    assert_eq!(a.addresses[0].to_string(), "100.64.0.1");
    assert_eq!(b.addresses[0].to_string(), "100.64.0.2");
    assert!(a.addresses[1].is_ipv6());
    let v6 = a.addresses[1].to_string();
    assert!(v6.starts_with("fd") && v6.ends_with(":6440:1"), "{v6}");
    assert!(a.node_token.starts_with("phn_"));
    // Signing in again keeps the addresses; across a restart too.
    let again = register(&h, &key, 1, "alpha").await;
    assert_eq!(again.addresses, a.addresses);
    assert_eq!(again.node_id, a.node_id);
    h.restart().await;
    let after = register(&h, &key, 1, "alpha").await;
    assert_eq!(after.addresses, a.addresses);
    let c = register(&h, &key, 3, "c").await;
    assert_eq!(c.addresses[0].to_string(), "100.64.0.3");
}

async fn auth_keys_are_checked(db: &str) {
    let h = Harness::new(db).await;
    let one_off = h.authkey("default", false, None).await;
    register(&h, &one_off, 1, "a").await;
    let e = h
        .client
        .register(&one_off, &private(2), &info(2, "b"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 401);
    assert!(e.to_string().contains("used already"), "{e}");

    let short = h
        .authkey("default", true, Some(Duration::from_secs(1)))
        .await;
    // The server's clock moves on (no sleep): the key has expired.
    h.settings.clock.advance(Duration::from_millis(1100));
    let e = h
        .client
        .register(&short, &private(3), &info(3, "c"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 401);
    assert!(e.to_string().contains("expired"), "{e}");

    let revoked = h.authkey("default", true, None).await;
    let store = h.store().await;
    let id = store.auth_keys().await.unwrap().last().unwrap().id.clone();
    store.revoke_auth_key(&id, 1).await.unwrap();
    let e = h
        .client
        .register(&revoked, &private(4), &info(4, "d"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");

    for bad in ["phk_nope", "garbage", "phn_abc"] {
        let e = h
            .client
            .register(bad, &private(5), &info(5, "e"))
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), 401, "{bad}: {e}");
    }
    // A node key registered in one account cannot be taken over from another.
    let other = h.authkey("other", true, None).await;
    let e = h
        .client
        .register(&other, &private(1), &info(1, "a"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 409, "{e}");
}

async fn map_stream_sends_full_map_then_deltas(db: &str) {
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "a").await;
    let b = register(&h, &key, 2, "b").await;
    let mut sa = h.client.map(&a.node_token).await.unwrap();
    match next(&mut sa).await {
        MapMessage::Full {
            self_node, peers, ..
        } => {
            assert_eq!(self_node.id, a.node_id);
            assert!(self_node.online);
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].id, b.node_id);
            assert!(!peers[0].online);
        }
        m => panic!("first message {m:?}"),
    }
    // b connects: a sees it online.
    let mut sb = h.client.map(&b.node_token).await.unwrap();
    next(&mut sb).await;
    until(&mut sa, |m| online(m, &b.node_id) == Some(true)).await;
    // b publishes endpoints and a home relay: a has them at once, b sees its own record.
    let eps: Vec<Endpoint> = vec![
        "192.0.2.2:41641 local".parse().unwrap(),
        "[2001:db8::2]:41641 stun".parse().unwrap(),
    ];
    let upd = NodeUpdate {
        endpoints: Some(eps.clone()),
        home_relay: Some("local".into()),
        disco_key: None,
        tags: None,
        advertised_routes: None,
    };
    let started = std::time::Instant::now();
    let me = h.client.update(&b.node_token, &upd).await.unwrap();
    assert_eq!(me.endpoints, eps);
    let m = until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.endpoints == eps),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    if let MapMessage::PeerChanged { peer } = m {
        assert_eq!(peer.home_relay.as_deref(), Some("local"));
    }
    until(
        &mut sb,
        |m| matches!(m, MapMessage::SelfChanged { node } if node.endpoints == eps),
    )
    .await;
    // A new node appears in both maps.
    let c = register(&h, &key, 3, "c").await;
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == c.node_id),
    )
    .await;
    until(
        &mut sb,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == c.node_id),
    )
    .await;
    // b goes away: a sees it offline.
    drop(sb);
    until(&mut sa, |m| online(m, &b.node_id) == Some(false)).await;
    // c logs out: a sees it removed; c's token is dead.
    h.client.delete_self(&c.node_token).await.unwrap();
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerRemoved { id, .. } if *id == c.node_id),
    )
    .await;
    let e = h.client.map(&c.node_token).await.err().expect("dead token");
    assert_eq!(api_status(&e), 401);
}

/// Routes: offered by a node, approved by the operator (or by the policy's autoApprovers),
/// and only then in its peers' maps; offers that cannot be routed are refused in words.
async fn routes_are_offered_approved_and_mapped(db: &str) {
    use pinhole_control::routes;
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "a").await;
    let b = register(&h, &key, 2, "router").await;
    let mut stream = h.client.map(&a.node_token).await.unwrap();
    next(&mut stream).await;
    let nets = |v: &[&str]| -> Vec<ipnet::IpNet> { v.iter().map(|s| s.parse().unwrap()).collect() };
    let offer = |routes: Vec<ipnet::IpNet>| NodeUpdate {
        advertised_routes: Some(routes),
        ..NodeUpdate::default()
    };
    let mine = h
        .client
        .update(
            &b.node_token,
            &offer(nets(&["192.168.1.0/24", "0.0.0.0/0", "::/0"])),
        )
        .await
        .unwrap();
    assert!(
        mine.routes.is_empty(),
        "offered, not approved: {:?}",
        mine.routes
    );
    let store = h.store().await;
    let listed = routes::list(&store, false).await.unwrap();
    assert!(
        listed.contains("192.168.1.0/24") && listed.contains("waiting for approval"),
        "{listed}"
    );
    // Approved by the operator: the peer's map follows.
    routes::approve(&store, "router", &["192.168.1.0/24".into()])
        .await
        .unwrap();
    let seen = until(&mut stream, |m| {
        matches!(m, MapMessage::PeerChanged { peer } if peer.id == b.node_id && !peer.routes.is_empty())
    })
    .await;
    let MapMessage::PeerChanged { peer } = seen else {
        unreachable!()
    };
    assert_eq!(peer.routes, nets(&["192.168.1.0/24"]));
    assert!(!peer.is_exit_node());
    routes::approve(&store, "router", &["exit".into()])
        .await
        .unwrap();
    until(&mut stream, |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == b.node_id && peer.is_exit_node())).await;
    routes::revoke(&store, "router", &["all".into()])
        .await
        .unwrap();
    until(&mut stream, |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == b.node_id && peer.routes.is_empty())).await;

    // Offers that cannot be routed.
    for (bad, words) in [
        (vec!["192.168.1.5/24"], "the network is 192.168.1.0/24"),
        (vec!["0.0.0.0/0"], "both 0.0.0.0/0 and ::/0"),
        (vec!["100.64.0.0/12"], "mesh's own addresses"),
    ] {
        let e = h
            .client
            .update(&b.node_token, &offer(nets(&bad)))
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), 400, "{bad:?}");
        assert!(e.to_string().contains(words), "{bad:?}: {e}");
    }

    // The policy's autoApprovers approve what a tagged router offers inside its prefixes.
    pinhole_control::policy::set(
        &store,
        "default",
        r#"{ "tagOwners": { "tag:router": [] },
             "autoApprovers": { "routes": { "10.0.0.0/8": ["tag:router"] }, "exitNode": ["tag:router"] },
             "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ] }"#,
    )
    .await
    .unwrap();
    let tagged = h.authkey("default", false, None).await;
    pinhole_control::policy::own_auth_key(&store, &tagged, &["tag:router".to_string()], None)
        .await
        .unwrap();
    let c = register(&h, &tagged, 3, "router-2").await;
    let node = h
        .client
        .update(
            &c.node_token,
            &offer(nets(&["10.1.0.0/16", "172.16.0.0/12", "0.0.0.0/0", "::/0"])),
        )
        .await
        .unwrap();
    assert_eq!(
        node.routes,
        nets(&["0.0.0.0/0", "10.1.0.0/16", "::/0"]),
        "172.16.0.0/12 waits for the operator"
    );
    assert!(node.is_exit_node());
}

async fn accounts_are_isolated(db: &str) {
    let h = Harness::new(db).await;
    let mine = h.authkey("mine", true, None).await;
    let theirs = h.authkey("theirs", true, None).await;
    let a = register(&h, &mine, 1, "a").await;
    let x = register(&h, &theirs, 9, "x").await;
    let mut sx = h.client.map(&x.node_token).await.unwrap();
    match next(&mut sx).await {
        MapMessage::Full { peers, .. } => assert!(peers.is_empty(), "{peers:?}"),
        m => panic!("{m:?}"),
    }
    // A change in the other account never reaches x.
    h.client
        .update(
            &a.node_token,
            &NodeUpdate {
                endpoints: Some(vec!["192.0.2.1:1".parse().unwrap()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let b = register(&h, &mine, 2, "b").await;
    let mut sa = h.client.map(&a.node_token).await.unwrap();
    next(&mut sa).await;
    // x may hear about itself (its own presence); never about a or b.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(r) = tokio::time::timeout_at(deadline, sx.next()).await {
        let text = format!("{r:?}");
        assert!(
            !text.contains(&a.node_id) && !text.contains(&b.node_id),
            "x received {text}"
        );
    }
    // Session endpoints refuse node tokens; a person of another account cannot remove a's node.
    let e = h.client.nodes(&x.node_token).await.unwrap_err();
    assert_eq!(api_status(&e), 401);
    admin::add_user(&h.store().await, "theirs", "eve", "password-eve")
        .await
        .unwrap();
    let session = sign_in(&h, "eve", "password-eve").await;
    let resp = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/nodes/{}", h.addr(), a.node_id))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/nodes/{}", h.addr(), a.node_id))
        .bearer_auth(&x.node_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "a node token cannot remove other nodes");
    let listed = h.client.nodes(&session).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, x.node_id);
    // a is still there and still works.
    h.client.map(&a.node_token).await.expect("a unaffected");
}

/// Runs the device flow with a password; returns the session token.
async fn sign_in(h: &Harness, user: &str, password: &str) -> String {
    let code = h.client.device_code().await.unwrap();
    assert!(matches!(
        h.client.device_token(&code.device_code).await.unwrap(),
        DevicePoll::Pending
    ));
    let resp = approve(h, &code.user_code, user, password).await;
    assert_eq!(resp.0, 200, "{}", resp.1);
    // Past the poll interval on the server's clock (no sleep).
    h.settings.clock.advance(Duration::from_millis(1100));
    match h.client.device_token(&code.device_code).await.unwrap() {
        DevicePoll::Approved(t) => t.access_token,
        other => panic!("{other:?}"),
    }
}

async fn approve(h: &Harness, user_code: &str, user: &str, password: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/device", h.addr()))
        .form(&[
            ("user_code", user_code),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn device_sign_in_and_sessions(db: &str) {
    let h = Harness::new(db).await;
    admin::add_user(&h.store().await, "default", "alice", "correct horse")
        .await
        .unwrap();
    let page = reqwest::get(format!("http://{}/device?code=bcdf-ghjk", h.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("value=\"BCDF-GHJK\""), "code prefilled");

    let code = h.client.device_code().await.unwrap();
    assert!(code.verification_uri_complete.ends_with(&code.user_code));
    assert_eq!(code.verification_uri, format!("http://{}/device", h.addr()));
    let (status, body) = approve(&h, &code.user_code, "alice", "wrong horse").await;
    assert_eq!(status, 401);
    assert!(body.contains("Wrong user name or password"));
    assert!(
        body.contains("value=\"alice\""),
        "the user name stays filled in"
    );
    let (status, _) = approve(&h, "BBBB-BBBB", "alice", "correct horse").await;
    assert_eq!(status, 400, "unknown code");
    let (status, body) =
        approve(&h, &code.user_code.to_lowercase(), "alice", "correct horse").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Device approved"));
    // Polling again at once is too fast; then the token comes, once.
    let token = loop {
        match h.client.device_token(&code.device_code).await.unwrap() {
            DevicePoll::Approved(t) => break t,
            DevicePoll::SlowDown | DevicePoll::Pending => {
                h.settings.clock.advance(Duration::from_millis(1100))
            }
        }
    };
    assert!(token.access_token.starts_with("phs_"));
    let e = h.client.device_token(&code.device_code).await.unwrap_err();
    assert!(e.to_string().contains("used already"), "{e}");

    // The session registers a node that belongs to alice.
    let n = h
        .client
        .register(&token.access_token, &private(7), &info(7, "laptop"))
        .await
        .unwrap();
    assert_eq!(n.user.as_deref(), Some("alice"));
    assert_eq!(h.client.nodes(&token.access_token).await.unwrap().len(), 1);
    // alice removes a second node of hers from her session; its token stops working.
    let spare = h
        .client
        .register(&token.access_token, &private(8), &info(8, "spare"))
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .delete(format!(
            "http://{}/api/v1/nodes/{}",
            h.addr(),
            spare.node_id
        ))
        .bearer_auth(&token.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let e = h
        .client
        .map(&spare.node_token)
        .await
        .err()
        .expect("removed");
    assert_eq!(api_status(&e), 401);
    assert_eq!(h.client.nodes(&token.access_token).await.unwrap().len(), 1);
    // Logout revokes it.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/logout", h.addr()))
        .bearer_auth(&token.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let e = h.client.nodes(&token.access_token).await.unwrap_err();
    assert_eq!(api_status(&e), 401);
    assert!(e.to_string().contains("signed out"), "{e}");
    // Revoking from the command line works the same way.
    let t2 = sign_in(&h, "alice", "correct horse").await;
    assert_eq!(
        admin::revoke_sessions(&h.store().await, "alice")
            .await
            .unwrap(),
        1
    );
    assert_eq!(api_status(&h.client.nodes(&t2).await.unwrap_err()), 401);
}

async fn failed_sign_ins_are_rate_limited(db: &str) {
    let h = Harness::new(db).await;
    admin::add_user(&h.store().await, "default", "bob", "bob-password")
        .await
        .unwrap();
    let code = h.client.device_code().await.unwrap();
    for _ in 0..5 {
        assert_eq!(approve(&h, &code.user_code, "bob", "guess").await.0, 401);
    }
    let (status, body) = approve(&h, &code.user_code, "bob", "bob-password").await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many failed sign-ins"));
}

async fn bad_requests_get_4xx_and_harm_nobody(db: &str) {
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "a").await;
    let mut sa = h.client.map(&a.node_token).await.unwrap();
    next(&mut sa).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{}{p}", h.addr());
    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        (
            "garbage json",
            http.post(url("/api/v1/register"))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body("{{{{"),
        ),
        (
            "truncated json",
            http.post(url("/api/v1/register"))
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(r#"{"node_key":"AQEB"#),
        ),
        (
            "wrong types",
            http.post(url("/api/v1/register"))
                .bearer_auth(&key)
                .json(&serde_json::json!({"node_key": 5})),
        ),
        (
            "bad key",
            http.post(url("/api/v1/register")).bearer_auth(&key).json(
                &serde_json::json!({"node_key":"AAAA","disco_key":"AAAA","hostname":"x","os":"y"}),
            ),
        ),
        (
            "too many endpoints",
            http.patch(url("/api/v1/node"))
                .bearer_auth(&a.node_token)
                .json(&NodeUpdate {
                    endpoints: Some(vec!["192.0.2.1:1".parse().unwrap(); 100]),
                    ..Default::default()
                }),
        ),
        ("no auth", http.get(url("/api/v1/map"))),
        (
            "bad auth scheme",
            http.get(url("/api/v1/map"))
                .header("authorization", "Basic abc"),
        ),
        ("unknown path", http.get(url("/api/v1/nope"))),
        (
            "token form garbage",
            http.post(url("/api/v1/device/token")).body("%%%"),
        ),
    ];
    for (what, rb) in cases {
        let resp = rb.send().await.unwrap();
        let s = resp.status().as_u16();
        assert!((400..500).contains(&s), "{what}: status {s}");
        let text = resp.text().await.unwrap();
        assert!(!text.is_empty(), "{what}: the error says what is wrong");
    }
    // An oversized body is refused from its declared length, before it is read.
    let mut raw = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let head = format!(
        "PATCH /api/v1/node HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        a.node_token,
        200 * 1024
    );
    raw.write_all(head.as_bytes()).await.unwrap();
    raw.write_all(&[b' '; 1024]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(raw);
    // Raw garbage, an oversized header and a truncated request on plain TCP.
    let mut raw = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    raw.write_all(b"\x16\x03\x01garbage\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    let mut raw = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = raw.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut buf)).await;
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&buf[..buf.len().min(100)])
    );
    let mut raw = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    raw.write_all(b"POST /api/v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"no")
        .await
        .unwrap();
    drop(raw);
    // Everyone else is served as before.
    let b = register(&h, &key, 2, "b").await;
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == b.node_id),
    )
    .await;
    assert_eq!(reqwest::get(url("/healthz")).await.unwrap().status(), 200);
}

async fn bad_tokens_are_rate_limited(db: &str) {
    let h = Harness::new(db).await;
    for _ in 0..30 {
        let e = h
            .client
            .register("phk_wrong", &private(1), &info(1, "a"))
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), 401);
    }
    let e = h
        .client
        .register("phk_wrong", &private(1), &info(1, "a"))
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 429, "{e}");
}

/// Somebody with an auth key of the same account presents another node's public key: without
/// that node's private key the registration is refused, and the real node keeps its record,
/// addresses and token.
async fn stolen_node_keys_cannot_be_registered(db: &str) {
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let victim = register(&h, &key, 1, "victim").await;
    let victim_pub = private(1).public_key();
    let thief = private(2);

    // A proof made with the thief's own key, presented for the victim's key.
    let challenge = h.client.register_challenge().await.unwrap();
    let mut stolen = RegisterRequest::new(&thief, &challenge, &info(2, "victim"));
    stolen.node_key = victim_pub;
    let e = h.client.register_request(&key, &stolen).await.unwrap_err();
    assert_eq!(api_status(&e), 403, "{e}");
    assert!(e.to_string().contains("could not prove"), "{e}");
    // No proof at all, a proof with a made-up challenge, an answer to an expired or foreign
    // challenge: refused too.
    let mut bare = stolen.clone();
    bare.proof = String::new();
    assert_eq!(
        api_status(&h.client.register_request(&key, &bare).await.unwrap_err()),
        403
    );
    let mut made_up = RegisterRequest::new(&private(1), &challenge, &info(1, "victim"));
    made_up.challenge = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into();
    let e = h.client.register_request(&key, &made_up).await.unwrap_err();
    assert_eq!(api_status(&e), 403, "{e}");
    assert!(e.to_string().contains("not made by this server"), "{e}");

    // The real node is untouched: same name and addresses, its token still works.
    let listing = admin::list_nodes(&h.store().await, true).await.unwrap();
    assert_eq!(listing.matches("\"name\"").count(), 1, "{listing}");
    let me = h
        .client
        .update(&victim.node_token, &NodeUpdate::default())
        .await
        .expect("the victim's token still works");
    assert_eq!(me.name, victim.name);
    assert_eq!(me.addresses, victim.addresses);
    assert_eq!(me.node_key, victim_pub);
    h.client
        .map(&victim.node_token)
        .await
        .expect("the victim's map");
    // The victim itself, proving its key, signs in again to the same record.
    let again = register(&h, &key, 1, "victim").await;
    assert_eq!(again.node_id, victim.node_id);
    assert_eq!(again.addresses, victim.addresses);
}

/// Thirty bad tokens from one address (a NAT, a CGNAT, a load balancer) do not lock out a valid
/// node behind the same address; the bad ones are refused with 429 from then on.
async fn valid_tokens_work_behind_an_address_full_of_bad_ones(db: &str) {
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let good = register(&h, &key, 1, "good").await;
    for i in 0..30 {
        let e = h
            .client
            .update(&format!("phn_forged{i}"), &NodeUpdate::default())
            .await
            .unwrap_err();
        assert_eq!(api_status(&e), 401, "{e}");
    }
    let e = h
        .client
        .update("phn_forged-again", &NodeUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 429, "the address is over its limit: {e}");
    // The valid node token, the auth key and a fresh session all still work from here.
    h.client
        .update(&good.node_token, &NodeUpdate::default())
        .await
        .expect("a valid node token works");
    h.client.map(&good.node_token).await.expect("its map works");
    register(&h, &key, 2, "newcomer").await;
}

/// Behind `--trusted-proxy`, failures count under the client address the proxy names; anyone
/// else's X-Forwarded-For is ignored.
async fn trusted_proxies_name_the_client(db: &str) {
    let settings = Settings {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..Settings::default()
    };
    let h = Harness::with(db, settings).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/node", h.addr());
    let attempt = |client_ip: &'static str, n: u32| {
        http.patch(&url)
            .bearer_auth(format!("phn_bad{client_ip}{n}"))
            .header("x-forwarded-for", format!("203.0.113.50, {client_ip}"))
            .json(&serde_json::json!({}))
            .send()
    };
    for n in 0..30 {
        assert_eq!(attempt("198.51.100.1", n).await.unwrap().status(), 401);
    }
    assert_eq!(attempt("198.51.100.1", 99).await.unwrap().status(), 429);
    // Another client behind the same proxy is counted on its own.
    assert_eq!(attempt("198.51.100.2", 0).await.unwrap().status(), 401);

    // Without trusted proxies, X-Forwarded-For changes nothing: every request counts under the
    // connection's own address.
    let h = Harness::new(db).await;
    let url = format!("http://{}/api/v1/node", h.addr());
    for n in 0..31u32 {
        let status = http
            .patch(&url)
            .bearer_auth(format!("phn_bad{n}"))
            .header("x-forwarded-for", format!("198.51.100.{n}"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, if n < 30 { 401 } else { 429 }, "attempt {n}");
    }
}

/// Guessing device codes costs like guessing passwords: five unknown codes from one address
/// and it waits, even for a real code with the right password.
async fn unknown_device_codes_count_against_the_address(db: &str) {
    let h = Harness::new(db).await;
    admin::add_user(&h.store().await, "default", "carol", "carol-password")
        .await
        .unwrap();
    let code = h.client.device_code().await.unwrap();
    for guess in [
        "BCDF-GHJK",
        "BCDF-GHJL",
        "BCDF-GHJM",
        "BCDF-GHJN",
        "BCDF-GHJP",
    ] {
        let (status, body) = approve(&h, guess, "carol", "carol-password").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("unknown or has expired"), "{body}");
    }
    let (status, body) = approve(&h, &code.user_code, "carol", "carol-password").await;
    assert_eq!(status, 429, "{body}");
}

async fn expired_and_removed_nodes_leave_the_map(db: &str) {
    let settings = Settings {
        node_expiry: Some(Duration::from_secs(3)),
        ..Settings::default()
    };
    let h = Harness::with(db, settings).await;
    let key = h.authkey("default", true, None).await;
    let short = register(&h, &key, 1, "short").await;
    let store = h.store().await;
    // b lives longer: registered through a second server without expiry on the same database.
    let long_server = Server::start(
        store.clone(),
        "127.0.0.1:0".parse().unwrap(),
        None,
        Settings {
            node_expiry: None,
            ..Settings::default()
        },
    )
    .await
    .unwrap();
    let long_client =
        ControlClient::new(&format!("http://{}", long_server.local_addr()), None).unwrap();
    let b = long_client
        .register(&key, &private(2), &info(2, "b"))
        .await
        .unwrap();
    let c = long_client
        .register(&key, &private(3), &info(3, "c"))
        .await
        .unwrap();
    let mut sb = h.client.map(&b.node_token).await.unwrap();
    next(&mut sb).await;
    // Three seconds pass on the server's clock: `short` has expired at its next sweep.
    h.settings.clock.advance(Duration::from_secs(3));
    let m = until(
        &mut sb,
        |m| matches!(m, MapMessage::PeerRemoved { id, .. } if *id == short.node_id),
    )
    .await;
    assert!(matches!(m, MapMessage::PeerRemoved { .. }));
    let e = h.client.map(&short.node_token).await.err().unwrap();
    assert_eq!(api_status(&e), 401);
    assert!(e.to_string().contains("expired"), "{e}");
    // The operator removes c: b sees it go within a sweep, c's stream ends with a goodbye.
    let mut sc = h.client.map(&c.node_token).await.unwrap();
    next(&mut sc).await;
    let name = admin::remove_node(&store, &c.node_id).await.unwrap();
    assert_eq!(name, "c");
    until(
        &mut sb,
        |m| matches!(m, MapMessage::PeerRemoved { id, .. } if *id == c.node_id),
    )
    .await;
    until(&mut sc, |m| matches!(m, MapMessage::Goodbye { .. })).await;
    let listing = admin::list_nodes(&store, false).await.unwrap();
    assert!(
        listing.contains(" b ") || listing.contains("b  "),
        "{listing}"
    );
    assert!(!listing.contains(&c.node_id));
    long_server.shutdown().await;
}

/// Names: hostnames become unique DNS labels, every map carries DNS names, and an operator's
/// rename or new suffix reaches the peers' maps at once; bad names and suffixes are refused
/// in words and change nothing.
async fn names_are_dns_names_and_renames_reach_the_map(db: &str) {
    let h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "Jane's Laptop.example.com").await;
    assert_eq!(a.name, "jane-s-laptop");
    let b = register(&h, &key, 2, "b").await;
    let mut sb = h.client.map(&b.node_token).await.unwrap();
    match next(&mut sb).await {
        MapMessage::Full {
            self_node, peers, ..
        } => {
            assert_eq!(self_node.dns_name, "b.pinhole.internal");
            assert_eq!(peers[0].dns_name, "jane-s-laptop.pinhole.internal");
        }
        m => panic!("{m:?}"),
    }
    let store = h.store().await;
    let renamed = |name: &'static str| move |m: &MapMessage| matches!(m, MapMessage::PeerChanged { peer } if peer.dns_name == name);
    let started = std::time::Instant::now();
    let (old, new) = names::rename_node(&store, &a.node_id, "nas").await.unwrap();
    assert_eq!((old.as_str(), new.as_str()), ("jane-s-laptop", "nas"));
    until(&mut sb, renamed("nas.pinhole.internal")).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the rename took {took:?} to reach the map"
    );

    let e = names::rename_node(&store, &a.node_id, "B")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("try \"b\""), "{e}");
    let e = names::rename_node(&store, &a.node_id, "b")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("called \"b\""), "{e}");
    let e = names::rename_node(&store, "nobody", "x").await.unwrap_err();
    assert!(e.to_string().contains("no node"), "{e}");

    let e = names::set_dns_suffix(&store, "default", "bad_suffix")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a DNS suffix"), "{e}");
    let e = names::set_dns_suffix(&store, "nobody", "corp.example")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no account"), "{e}");
    let suffix = names::set_dns_suffix(&store, "default", "Corp.Example.")
        .await
        .unwrap();
    assert_eq!(suffix, "corp.example");
    // The peer's new name and this node's own, in either order.
    let (mut peer_seen, mut self_seen) = (false, false);
    until(&mut sb, |m| {
        match m {
            MapMessage::PeerChanged { peer } => peer_seen |= peer.dns_name == "nas.corp.example",
            MapMessage::SelfChanged { node } => self_seen |= node.dns_name == "b.corp.example",
            _ => {}
        }
        peer_seen && self_seen
    })
    .await;
    // A later sign-in keeps the name the operator gave.
    let again = register(&h, &key, 1, "Jane's Laptop").await;
    assert_eq!(again.name, "nas");
}

async fn map_resumes_after_restart(db: &str) {
    let mut h = Harness::new(db).await;
    let key = h.authkey("default", true, None).await;
    let a = register(&h, &key, 1, "a").await;
    let b = register(&h, &key, 2, "b").await;
    let mut sa = h.client.map(&a.node_token).await.unwrap();
    next(&mut sa).await;
    h.restart().await;
    // The old stream ends; a new one with the same token gets the full map again.
    let end =
        tokio::time::timeout(WAIT, async { while let Ok(Some(_)) = sa.next().await {} }).await;
    assert!(end.is_ok(), "the stream ends when the server stops");
    let mut sa = h.client.map(&a.node_token).await.unwrap();
    match next(&mut sa).await {
        MapMessage::Full { peers, .. } => assert_eq!(peers[0].id, b.node_id),
        m => panic!("{m:?}"),
    }
}

/// PostgreSQL only: two control instances on one database, as behind a load balancer. A node
/// streaming from one sees what a node does through the other, and its presence.
async fn two_instances_share_changes(db: &str) {
    let h1 = Harness::new(db).await;
    let h2 = Harness::new(db).await;
    let key = h1.authkey("default", true, None).await;
    let a = register(&h1, &key, 1, "a").await;
    let mut sa = h1.client.map(&a.node_token).await.unwrap();
    next(&mut sa).await;
    let b = register(&h2, &key, 2, "b").await;
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == b.node_id),
    )
    .await;
    let mut sb = h2.client.map(&b.node_token).await.unwrap();
    match next(&mut sb).await {
        MapMessage::Full { peers, .. } => {
            assert!(
                peers.iter().any(|p| p.id == a.node_id && p.online),
                "{peers:?}"
            )
        }
        m => panic!("{m:?}"),
    }
    until(&mut sa, |m| online(m, &b.node_id) == Some(true)).await;
    let eps: Vec<Endpoint> = vec!["192.0.2.2:41641".parse().unwrap()];
    h2.client
        .update(
            &b.node_token,
            &NodeUpdate {
                endpoints: Some(eps.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.endpoints == eps),
    )
    .await;
    h2.client.delete_self(&b.node_token).await.unwrap();
    until(
        &mut sa,
        |m| matches!(m, MapMessage::PeerRemoved { id, .. } if *id == b.node_id),
    )
    .await;
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?; postgres only: $($pg:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = std::env::temp_dir().join(format!("pinhole-api-{}-{}", std::process::id(), stringify!($name)));
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::create_dir_all(&dir).unwrap();
                    let url = format!("sqlite://{}", dir.join("control.db").display());
                    super::$name(&url).await;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            )*
        }

        /// The same scenarios on one PostgreSQL server, each on its own database.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres_suite() {
            let Some(pg) = Postgres::start() else { return };
            $(
                let url = pg.database(stringify!($name));
                eprintln!("postgres: {}", stringify!($name));
                $name(&url).await;
            )*
            $(
                let url = pg.database(stringify!($pg));
                eprintln!("postgres: {}", stringify!($pg));
                $pg(&url).await;
            )*
            drop(pg);
        }
    };
}

scenarios!(
    registration_gives_stable_unique_addresses,
    routes_are_offered_approved_and_mapped,
    auth_keys_are_checked,
    map_stream_sends_full_map_then_deltas,
    accounts_are_isolated,
    device_sign_in_and_sessions,
    failed_sign_ins_are_rate_limited,
    bad_requests_get_4xx_and_harm_nobody,
    bad_tokens_are_rate_limited,
    stolen_node_keys_cannot_be_registered,
    valid_tokens_work_behind_an_address_full_of_bad_ones,
    trusted_proxies_name_the_client,
    unknown_device_codes_count_against_the_address,
    expired_and_removed_nodes_leave_the_map,
    names_are_dns_names_and_renames_reach_the_map,
    map_resumes_after_restart,
    policies_shape_maps_and_reach_nodes_within_a_second;
    postgres only: two_instances_share_changes
);

const TEAM_POLICY: &str = r#"{
  // group:dev may reach tag:server on 22 and 443; the server reaches nobody.
  "groups": { "group:dev": ["alice"] },
  "tagOwners": { "tag:server": ["group:dev"] },
  "acls": [ { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,443"] }, ],
}"#;

/// A full map's peers and policy.
fn full(
    m: MapMessage,
) -> (
    Vec<pinhole_proto::control::Node>,
    Option<pinhole_proto::filter::NodePolicy>,
) {
    match m {
        MapMessage::Full { peers, policy, .. } => (peers, policy),
        other => panic!("expected a full map, got {other:?}"),
    }
}

async fn policies_shape_maps_and_reach_nodes_within_a_second(db: &str) {
    use pinhole_control::policy;
    use pinhole_proto::filter::{describe, PortRange};
    let h = Harness::new(db).await;
    let store = h.store().await;
    for user in ["alice", "carol"] {
        admin::add_user(&store, "default", user, "a long password")
            .await
            .unwrap();
    }
    policy::set(&store, "default", TEAM_POLICY).await.unwrap();
    let alice_s = sign_in(&h, "alice", "a long password").await;
    let carol_s = sign_in(&h, "carol", "a long password").await;
    let server_key = h.authkey("default", false, None).await;
    policy::own_auth_key(&store, &server_key, &["tag:server".to_string()], None)
        .await
        .unwrap();
    let alice = register(&h, &alice_s, 1, "alice-laptop").await;
    let server = register(&h, &server_key, 2, "db-server").await;
    let carol = register(&h, &carol_s, 3, "carol-laptop").await;

    // Tags go to their owners only, in words.
    let mut asks = info(4, "carol-server");
    asks.tags = vec!["tag:server".into()];
    let e = h
        .client
        .register(&carol_s, &private(4), &asks)
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 403);
    assert!(
        e.to_string().contains("carol may not tag nodes tag:server"),
        "{e}"
    );

    // A node asks for tags later (pinhole up --advertise-tags): the same rule.
    let e = h
        .client
        .update(
            &carol.node_token,
            &NodeUpdate {
                tags: Some(vec!["tag:server".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(api_status(&e), 403);
    let spare = register(&h, &alice_s, 5, "alice-spare").await;
    let tagged = h
        .client
        .update(
            &spare.node_token,
            &NodeUpdate {
                tags: Some(vec!["tag:server".into()]),
                ..Default::default()
            },
        )
        .await
        .expect("alice owns tag:server");
    assert_eq!(
        (tagged.tags, tagged.user),
        (vec!["tag:server".to_string()], None)
    );
    h.client.delete_self(&spare.node_token).await.unwrap();

    // The outsider's map has no trace of the server, on the wire.
    let mut carol_map = h.client.map(&carol.node_token).await.unwrap();
    let raw = tokio::time::timeout(WAIT, carol_map.next_raw())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    assert!(
        !text.contains(&private(2).public_key().to_base64()),
        "{text}"
    );
    assert!(
        !text.contains(&server.node_id) && !text.contains("db-server"),
        "{text}"
    );
    // The developer sees the server (a tagged node: no user), and what she may reach on it.
    let mut alice_map = h.client.map(&alice.node_token).await.unwrap();
    let (peers, share) = full(next(&mut alice_map).await);
    assert_eq!(
        peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["db-server"]
    );
    assert_eq!(peers[0].tags, ["tag:server"]);
    assert_eq!(peers[0].user, None);
    let share = share.expect("a policy share");
    assert!(
        share.filter.is_empty(),
        "the server may reach nobody: {share:?}"
    );
    assert_eq!(describe(&share.reach[0].allow), "ports 22 and 443 and ping");
    // The server's filter lets alice's addresses in on 22 and 443.
    let mut server_map = h.client.map(&server.node_token).await.unwrap();
    let (peers, share) = full(next(&mut server_map).await);
    assert_eq!(peers.len(), 1);
    let filter = share.unwrap().filter;
    assert!(filter[0]
        .src
        .iter()
        .any(|n| n.contains(&alice.addresses[0])));
    assert_eq!(filter[0].ports, [PortRange::one(22), PortRange::one(443)]);

    // A refused policy changes nothing.
    let e = policy::set(
        &store,
        "default",
        r#"{ "acls": [ { "action": "accept", "src": ["group:ops"], "dst": ["*:*"] } ] }"#,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("line 1, column 43: unknown group"),
        "{e}"
    );
    assert_eq!(
        policy::get(&store, "default").await.unwrap().as_deref(),
        Some(TEAM_POLICY)
    );

    // A looser policy reaches the server's stream within a second.
    let t = std::time::Instant::now();
    policy::set(
        &store,
        "default",
        &TEAM_POLICY.replace("22,443", "22,443,5432"),
    )
    .await
    .unwrap();
    let m = until(&mut server_map, |m| matches!(m, MapMessage::Policy { .. })).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let MapMessage::Policy { policy: Some(p) } = m else {
        panic!("{m:?}")
    };
    assert!(p.filter[0].ports.contains(&PortRange::one(5432)));

    // No policy: the outsider sees the server again, and her filter goes.
    policy::remove(&store, "default").await.unwrap();
    until(
        &mut carol_map,
        |m| matches!(m, MapMessage::PeerChanged { peer } if peer.id == server.node_id),
    )
    .await;
    until(&mut carol_map, |m| {
        matches!(m, MapMessage::Policy { policy: None })
    })
    .await;
}

/// HTTPS with a certificate the client trusts through an extra CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https() {
    let dir = std::env::temp_dir().join(format!("pinhole-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("c.db").display()))
        .await
        .unwrap();
    let tls = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let server = Server::start(
        store.clone(),
        "127.0.0.1:0".parse().unwrap(),
        Some(tls),
        Settings::default(),
    )
    .await
    .unwrap();
    let port = server.local_addr().port();
    let key = admin::create_auth_key(&store, "default", false, None)
        .await
        .unwrap();
    let client = ControlClient::new(
        &format!("https://localhost:{port}"),
        Some(cert.cert.pem().as_bytes()),
    )
    .unwrap();
    let r = client
        .register(&key, &private(1), &info(1, "a"))
        .await
        .unwrap();
    assert_eq!(r.addresses[0].to_string(), "100.64.0.1");
    // Without the CA, the certificate is refused.
    let untrusting = ControlClient::new(&format!("https://localhost:{port}"), None).unwrap();
    let e = untrusting.device_code().await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
