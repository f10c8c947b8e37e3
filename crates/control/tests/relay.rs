//! The relay embedded in pinhole-control: registered nodes of one account reach each other
//! through `/relay`; unknown keys are refused; a node removed by itself or by an operator is cut
//! off and refused from then on. `/metrics` counts it all.

use pinhole_control::{admin, Server, Settings, Store};
use pinhole_control_client::ControlClient;
use pinhole_proto::control::NodeInfo;
use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::relay::Frame;
use pinhole_relay::test_client::RawClient;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upgrades, proves `private`, and returns the connection with the relay's answer.
async fn open(addr: SocketAddr, private: &PrivateKey) -> (RawClient, Frame) {
    let mut c = RawClient::upgrade(addr).await.expect("upgrade");
    let answer = c.prove(private, false).await.expect("an answer");
    (c, answer)
}

/// The next frame (keepalives skipped); None when the relay closes the connection.
async fn recv(c: &mut RawClient) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(10), c.recv())
        .await
        .expect("a frame or the end within 10 s")
        .expect("well-formed frames")
}

/// Sends `body` from `a`'s connection to `b` and checks that it arrives on `b`'s, from `a`.
async fn deliver(
    ca: &mut RawClient,
    cb: &mut RawClient,
    a: &PrivateKey,
    b: &PrivateKey,
    body: &[u8],
) {
    ca.io
        .write_all(&Frame::packet_bytes(true, &b.public_key(), body))
        .await
        .unwrap();
    assert_eq!(
        recv(cb).await,
        Some(Frame::RecvPacket {
            src: a.public_key(),
            packet: body.to_vec()
        })
    );
}

/// A plain HTTP GET of `path`; the whole response.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut io = TcpStream::connect(addr).await.unwrap();
    io.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut m = String::new();
    io.read_to_string(&mut m).await.unwrap();
    m
}

/// A server on a fresh SQLite file in its own directory (removed by the caller).
async fn start(name: &str, settings: Settings) -> (std::path::PathBuf, Store, Server) {
    let dir = std::env::temp_dir().join(format!(
        "pinhole-control-relay-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}/c.db", dir.display()))
        .await
        .unwrap();
    let server = Server::start(
        store.clone(),
        "127.0.0.1:0".parse().unwrap(),
        None,
        settings,
    )
    .await
    .unwrap();
    (dir, store, server)
}

fn pk(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

fn info(host: &str) -> NodeInfo {
    NodeInfo {
        disco_key: Key([0x55; 32]),
        hostname: host.into(),
        os: "linux".into(),
        tags: Vec::new(),
        advertised_routes: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_relay_serves_only_the_nodes_control_knows() {
    let (dir, store, server) = start(
        "embedded",
        Settings {
            embedded_relay: true,
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        },
    )
    .await;
    let addr = server.local_addr();
    let client = ControlClient::new(&format!("http://{addr}"), None).unwrap();
    let authkey = admin::create_auth_key(&store, "default", true, None)
        .await
        .unwrap();
    let other_key = admin::create_auth_key(&store, "other", true, None)
        .await
        .unwrap();
    let (a, b, c, x) = (pk(1), pk(2), pk(3), pk(4));
    let ra = client.register(&authkey, &a, &info("a")).await.unwrap();
    let rb = client.register(&authkey, &b, &info("b")).await.unwrap();
    let rc = client.register(&authkey, &c, &info("c")).await.unwrap();
    client.register(&other_key, &x, &info("x")).await.unwrap();

    let (mut ca, answer) = open(addr, &a).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
    let (mut cb, answer) = open(addr, &b).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
    deliver(&mut ca, &mut cb, &a, &b, b"through control").await;
    let send = |dst: &PrivateKey, body: &[u8]| Frame::packet_bytes(true, &dst.public_key(), body);
    // A node of another account is not reachable (and cannot tell whether b exists).
    let (mut cx, answer) = open(addr, &x).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }));
    cx.io.write_all(&send(&b, b"hi")).await.unwrap();
    assert!(matches!(recv(&mut cx).await, Some(Frame::PeerGone { .. })));

    // A key control never registered.
    let (_, answer) = open(addr, &pk(9)).await;
    assert!(
        matches!(&answer, Frame::Refused { reason } if reason.contains("not authorised")),
        "{answer:?}"
    );

    // b logs out: its relay connection ends at once and it is refused from then on.
    client.delete_self(&rb.node_token).await.unwrap();
    assert_eq!(recv(&mut cb).await, None, "b's relay connection closed");
    let (_, answer) = open(addr, &b).await;
    assert!(matches!(answer, Frame::Refused { .. }), "{answer:?}");

    // The operator removes c (from another process, through the database): cut off once the
    // server notices (its sweep), refused after.
    let (mut cc, answer) = open(addr, &c).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }));
    let mut map_c = client.map(&rc.node_token).await.unwrap();
    let _ = map_c.next().await;
    admin::remove_node(&store, &rc.node_id).await.unwrap();
    assert_eq!(recv(&mut cc).await, None, "c's relay connection closed");
    let (_, answer) = open(addr, &c).await;
    assert!(matches!(answer, Frame::Refused { .. }), "{answer:?}");
    let _ = ra;

    // The counters are on the metrics address only, not on the API's.
    assert!(http_get(addr, "/metrics").await.starts_with("HTTP/1.1 404"));
    let metrics = server.metrics_addr().expect("the metrics address");
    let m = http_get(metrics, "/metrics").await;
    assert!(m.contains("pinhole_relay_clients 2"), "{m}");
    assert!(
        m.contains(r#"pinhole_relay_refused_total{reason="unknown_key"} 3"#),
        "{m}"
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_relays_ask_with_the_relay_secret() {
    use sha2::Digest;
    let secret = "relay-secret-for-tests-0123";
    let (dir, store, server) = start(
        "secret",
        Settings {
            relay_secret_hash: Some(sha2::Sha256::digest(secret.as_bytes()).into()),
            ..Settings::default()
        },
    )
    .await;
    let client = ControlClient::new(&format!("http://{}", server.local_addr()), None).unwrap();
    let authkey = admin::create_auth_key(&store, "default", true, None)
        .await
        .unwrap();
    let a = pk(1);
    let ra = client.register(&authkey, &a, &info("a")).await.unwrap();
    let a_pub = a.public_key();
    let network = client.relay_authorize(secret, &a_pub).await.unwrap();
    assert!(network.is_some_and(|n| !n.is_empty()));
    assert_eq!(
        client.relay_authorize(secret, &Key([7; 32])).await.unwrap(),
        None
    );
    let e = client
        .relay_authorize("not-the-secret-at-all", &a_pub)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("relay secret"), "{e}");
    // A node token is not the relay secret.
    let e = client
        .relay_authorize(&ra.node_token, &a_pub)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("relay secret"), "{e}");
    // Once the node leaves, relays hear "no such node".
    client.delete_self(&ra.node_token).await.unwrap();
    assert_eq!(client.relay_authorize(secret, &a_pub).await.unwrap(), None);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_relay_can_have_an_address_of_its_own() {
    let (dir, store, server) = start(
        "own-address",
        Settings {
            embedded_relay: true,
            relay_listen: Some("127.0.0.1:0".parse().unwrap()),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        },
    )
    .await;
    let api = server.local_addr();
    let relay = server.relay_addr().expect("the relay's own address");
    assert_ne!(relay.port(), api.port());
    let client = ControlClient::new(&format!("http://{api}"), None).unwrap();
    let authkey = admin::create_auth_key(&store, "default", true, None)
        .await
        .unwrap();
    let (a, b) = (pk(1), pk(2));
    client.register(&authkey, &a, &info("a")).await.unwrap();
    client.register(&authkey, &b, &info("b")).await.unwrap();
    let (mut ca, answer) = open(relay, &a).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
    let (mut cb, answer) = open(relay, &b).await;
    assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
    deliver(&mut ca, &mut cb, &a, &b, b"on its own port").await;
    // The API's address no longer answers /relay; the API itself is not on the relay's.
    let e = RawClient::upgrade(api).await.err().expect("no relay there");
    assert!(e.to_string().contains("404"), "{e}");
    let m = http_get(relay, "/api/v1/map").await;
    assert!(m.starts_with("HTTP/1.1 404"), "{m}");
    assert!(http_get(relay, "/metrics")
        .await
        .starts_with("HTTP/1.1 404"));
    assert!(http_get(server.metrics_addr().unwrap(), "/metrics")
        .await
        .contains("pinhole_relay_clients 2"));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
