//! The packet relay over real TCP on loopback: key proof, control's authorisation, forwarding
//! only within a network, peer-gone notices, bounded queues, keepalives, bad frames, metrics.

use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::relay::{self as wire, Decoder, Frame};
use pinhole_relay::http_server::accept_loop;
use pinhole_relay::test_client::RawClient;
use pinhole_relay::{Relay, RelayConfig, StaticAuthorizer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Server {
    addr: SocketAddr,
    /// Where `/metrics` is served (only there).
    metrics: SocketAddr,
    relay: Relay,
    auth: Arc<StaticAuthorizer>,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// A relay on loopback behind the accept loop pinhole-relay and pinhole-control use (which
/// tells the relay each client's address), with its metrics on a second address.
async fn server(config: RelayConfig) -> Server {
    let auth = Arc::new(StaticAuthorizer::default());
    let relay = Relay::new(auth.clone(), config);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = pinhole_relay::http::router(relay.clone());
    tokio::spawn(accept_loop(listener, None, router, stop_rx.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = listener.local_addr().unwrap();
    let router = pinhole_relay::http::metrics_router(relay.clone());
    tokio::spawn(accept_loop(listener, None, router, stop_rx));
    Server {
        addr,
        metrics,
        relay,
        auth,
        _stop: stop,
    }
}

/// The library's raw client with the timeouts and assertions these tests want.
struct Client {
    raw: RawClient,
}

impl Client {
    /// Connects and proves `private` (or a wrong proof when `forge`); returns the answer frame.
    async fn connect(addr: SocketAddr, private: &PrivateKey, forge: bool) -> (Client, Frame) {
        let mut raw = RawClient::upgrade(addr).await.expect("upgrade");
        let answer = raw.prove(private, forge).await.expect("an answer");
        (Client { raw }, answer)
    }

    async fn ok(addr: SocketAddr, private: &PrivateKey) -> Client {
        let (c, answer) = Client::connect(addr, private, false).await;
        assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
        c
    }

    async fn send(&mut self, f: &Frame) {
        self.raw.send(f).await.unwrap();
    }

    async fn recv(&mut self) -> Frame {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("a frame within 5 s")
    }

    /// The next frame other than a keepalive, or None on timeout or end of stream.
    async fn try_recv(&mut self, within: Duration) -> Option<Frame> {
        tokio::time::timeout(within, self.raw.recv())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    /// Whether the relay closed the connection (within 5 s).
    async fn closed(&mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 4096];
            loop {
                match self.raw.io.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

fn keys(n: u8) -> (PrivateKey, Key) {
    let private = PrivateKey::from_bytes([n; 32]);
    let public = private.public_key();
    (private, public)
}

fn packet(dst: Key, body: &[u8]) -> Frame {
    Frame::SendPacket {
        dst,
        packet: body.to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorised_nodes_exchange_packets_and_strangers_are_refused() {
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    let (x, x_pub) = keys(3);
    s.auth.allow(a_pub, "acme");
    s.auth.allow(b_pub, "acme");
    s.auth.allow(x_pub, "other");
    let mut ca = Client::ok(s.addr, &a).await;
    let mut cb = Client::ok(s.addr, &b).await;
    ca.send(&packet(b_pub, b"hello b")).await;
    assert_eq!(
        cb.recv().await,
        Frame::RecvPacket {
            src: a_pub,
            packet: b"hello b".to_vec()
        }
    );
    // The largest packet passes.
    cb.send(&packet(a_pub, &vec![7; wire::MAX_PACKET])).await;
    match ca.recv().await {
        Frame::RecvPacket { src, packet } => {
            assert_eq!(src, b_pub);
            assert_eq!(packet.len(), wire::MAX_PACKET);
        }
        f => panic!("{f:?}"),
    }
    // A node of another network cannot reach them: it hears "peer gone", they hear nothing.
    let mut cx = Client::ok(s.addr, &x).await;
    cx.send(&packet(a_pub, b"from outside")).await;
    assert_eq!(cx.recv().await, Frame::PeerGone { key: a_pub });
    assert_eq!(ca.try_recv(Duration::from_millis(300)).await, None);

    // Unknown key, forged proof: refused with the reason, counted.
    let (_, answer) = Client::connect(s.addr, &PrivateKey::from_bytes([9; 32]), false).await;
    assert!(
        matches!(&answer, Frame::Refused { reason } if reason.contains("not authorised")),
        "{answer:?}"
    );
    let (_, answer) = Client::connect(s.addr, &a, true).await;
    assert!(
        matches!(&answer, Frame::Refused { reason } if reason.contains("proof")),
        "{answer:?}"
    );
    // A forged proof for a key that is connected leaves that connection alone.
    ca.send(&packet(b_pub, b"still here")).await;
    assert!(matches!(cb.recv().await, Frame::RecvPacket { .. }));

    let m = get_metrics(s.metrics).await;
    assert!(m.contains("pinhole_relay_clients 3"), "{m}");
    assert!(
        m.contains(r#"pinhole_relay_refused_total{reason="unknown_key"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"pinhole_relay_refused_total{reason="bad_proof"} 1"#),
        "{m}"
    );
    assert!(m.contains("pinhole_relay_forwarded_packets_total 3"), "{m}");
    assert!(
        m.contains(r#"pinhole_relay_dropped_packets_total{reason="no_peer"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_to_many_destinations_in_one_write_arrive_in_order_at_each() {
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    s.auth.allow(a_pub, "acme");
    let mut ca = Client::ok(s.addr, &a).await;
    // More destinations than one read's packets are grouped by, so groups are forwarded
    // while the read is still being taken apart.
    let mut dsts = Vec::new();
    for n in 10..30u8 {
        let (k, public) = keys(n);
        s.auth.allow(public, "acme");
        dsts.push((public, Client::ok(s.addr, &k).await));
    }
    let stranger = keys(99).1;
    let mut write = Vec::new();
    for round in 0..5 {
        for (i, (dst, _)) in dsts.iter().enumerate() {
            let body = format!("{i}:{round}:").into_bytes();
            // Sizes from tiny to a full datagram, so frames straddle the relay's reads.
            let mut body = body.clone();
            body.resize(body.len() + (i * 97 + round * 311) % 1400, b'x');
            packet(*dst, &body).encode(&mut write);
        }
        packet(stranger, b"nobody").encode(&mut write);
    }
    ca.raw.io.write_all(&write).await.unwrap();
    for (i, (_, c)) in dsts.iter_mut().enumerate() {
        for round in 0..5 {
            match c.recv().await {
                Frame::RecvPacket { src, packet } => {
                    assert_eq!(src, a_pub);
                    let want = format!("{i}:{round}:");
                    assert!(packet.starts_with(want.as_bytes()), "{i} {round}");
                    assert_eq!(packet.len(), want.len() + (i * 97 + round * 311) % 1400);
                }
                f => panic!("{f:?}"),
            }
        }
    }
    assert_eq!(ca.recv().await, Frame::PeerGone { key: stranger });
    let m = get_metrics(s.metrics).await;
    assert!(
        m.contains("pinhole_relay_forwarded_packets_total 100"),
        "{m}"
    );
    assert!(
        m.contains(r#"pinhole_relay_dropped_packets_total{reason="no_peer"} 5"#),
        "{m}"
    );
}

/// GET /metrics over a plain socket (no HTTP client crate needed).
async fn get_metrics(addr: SocketAddr) -> String {
    let out = get(addr, "/metrics").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// A plain GET; the whole answer.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut io = TcpStream::connect(addr).await.unwrap();
    io.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    io.read_to_string(&mut out).await.unwrap();
    out
}

/// The relay's own port does not serve its counters to the world.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_only_on_their_own_address() {
    let s = server(RelayConfig::default()).await;
    assert!(get(s.addr, "/metrics").await.starts_with("HTTP/1.1 404"));
    assert!(get_metrics(s.metrics)
        .await
        .contains("pinhole_relay_clients 0"));
    assert!(get(s.metrics, "/relay").await.starts_with("HTTP/1.1 404"));
}

/// A client that names 100,000 destinations (none of them here) leaves no trace in the relay's
/// tables; 3,000 connections from keys control never heard of leave only bounded answers (the
/// connection-rate limit is lifted here; the next test checks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_name_cannot_grow_the_relay() {
    let s = server(RelayConfig {
        handshakes_per_address: 1_000_000,
        ..RelayConfig::default()
    })
    .await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    s.auth.allow(a_pub, "acme");
    s.auth.allow(b_pub, "acme");
    let mut ca = Client::ok(s.addr, &a).await;
    let mut cb = Client::ok(s.addr, &b).await;
    let before = s.relay.table_sizes();
    let mut burst = Vec::new();
    for i in 0..100_000u32 {
        let mut dst = [7u8; 32];
        dst[..4].copy_from_slice(&i.to_be_bytes());
        Frame::SendPacket {
            dst: Key(dst),
            packet: b"x".to_vec(),
        }
        .encode(&mut burst);
        if burst.len() > 256 * 1024 {
            ca.raw.io.write_all(&burst).await.unwrap();
            burst.clear();
        }
    }
    ca.raw.io.write_all(&burst).await.unwrap();
    // A real packet after them arrives: the relay read everything and is still serving.
    ca.send(&packet(b_pub, b"after the flood")).await;
    match cb.recv().await {
        Frame::RecvPacket { packet, .. } => assert_eq!(packet, b"after the flood"),
        other => panic!("{other:?}"),
    }
    let after = s.relay.table_sizes();
    assert_eq!(
        after.noted_destinations, 1,
        "only b, who is here: {after:?}"
    );
    assert_eq!(after.auth_cache, before.auth_cache, "{after:?}");
    let m = get_metrics(s.metrics).await;
    assert!(
        m.contains(r#"pinhole_relay_dropped_packets_total{reason="no_peer"} 100000"#),
        "{m}"
    );
    // Keys nobody knows, each proving itself: refusals are cached, but within bounds.
    for i in 0..3_000u32 {
        let mut k = [9u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        let (_, answer) = Client::connect(s.addr, &PrivateKey::from_bytes(k), false).await;
        assert!(matches!(answer, Frame::Refused { .. }), "{answer:?}");
    }
    let sizes = s.relay.table_sizes();
    assert!(sizes.auth_cache <= 3_002, "{sizes:?}");
    assert_eq!(sizes.handshake_addresses, 1, "{sizes:?}");
    drop(ca);
    drop(cb);
    // When the sender leaves, it is forgotten as b's sender too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.relay.table_sizes().noted_destinations != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            s.relay.table_sizes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_connects_too_fast_is_refused() {
    let s = server(RelayConfig {
        handshakes_per_address: 5,
        handshake_window: Duration::from_secs(60),
        ..RelayConfig::default()
    })
    .await;
    let (a, a_pub) = keys(1);
    s.auth.allow(a_pub, "acme");
    for _ in 0..5 {
        let (_, answer) = Client::connect(s.addr, &a, false).await;
        assert!(matches!(answer, Frame::ServerInfo { .. }), "{answer:?}");
    }
    let asked = s.auth.asked.load(std::sync::atomic::Ordering::Relaxed);
    let mut raw = RawClient::upgrade(s.addr).await.expect("upgrade");
    let answer = raw.recv().await.expect("an answer").expect("a frame");
    assert!(
        matches!(&answer, Frame::Refused { reason } if reason.contains("too many connection attempts")),
        "{answer:?}"
    );
    assert_eq!(
        s.auth.asked.load(std::sync::atomic::Ordering::Relaxed),
        asked,
        "control was not asked"
    );
    let m = get_metrics(s.metrics).await;
    assert!(
        m.contains(r#"pinhole_relay_refused_total{reason="rate_limited"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_disconnected_and_refused() {
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    s.auth.allow(a_pub, "acme");
    let mut ca = Client::ok(s.addr, &a).await;
    s.auth.deny(&a_pub);
    s.relay.revoke(&a_pub);
    assert!(ca.closed().await, "the revoked node's connection is closed");
    let (_, answer) = Client::connect(s.addr, &a, false).await;
    assert!(matches!(answer, Frame::Refused { .. }), "{answer:?}");

    // Revoked at control without telling the relay: the periodic recheck finds it.
    let (b, b_pub) = keys(2);
    s.auth.allow(b_pub, "acme");
    let mut cb = Client::ok(s.addr, &b).await;
    s.auth.deny(&b_pub);
    s.relay.recheck_clients().await;
    assert!(cb.closed().await);
    assert_eq!(s.relay.client_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_own_connection() {
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    let (c, c_pub) = keys(3);
    for k in [a_pub, b_pub, c_pub] {
        s.auth.allow(k, "acme");
    }
    let mut ca = Client::ok(s.addr, &a).await;
    let mut cb = Client::ok(s.addr, &b).await;
    let mut cc = Client::ok(s.addr, &c).await;
    // Malformed: a peer-gone frame from a client, then an unknown type, then an oversized length.
    cb.raw
        .io
        .write_all(&[7, 0, 0, 0, 3, 1, 2, 3])
        .await
        .unwrap();
    assert!(cb.closed().await);
    cc.raw
        .io
        .write_all(&[4, 0x7f, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(
        cc.closed().await,
        "an oversized frame closes the connection"
    );
    let mut cb = Client::ok(s.addr, &b).await;
    ca.send(&packet(b_pub, b"after")).await;
    assert!(
        matches!(cb.recv().await, Frame::RecvPacket { .. }),
        "the relay serves on"
    );
    // Its sender heard that C left.
    ca.send(&packet(c_pub, b"to c")).await;
    assert_eq!(ca.recv().await, Frame::PeerGone { key: c_pub });
    let m = get_metrics(s.metrics).await;
    assert!(m.contains("pinhole_relay_protocol_errors_total 2"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_hear_when_their_destination_disconnects() {
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    s.auth.allow(a_pub, "acme");
    s.auth.allow(b_pub, "acme");
    let mut ca = Client::ok(s.addr, &a).await;
    let mut cb = Client::ok(s.addr, &b).await;
    ca.send(&packet(b_pub, b"x")).await;
    cb.recv().await;
    drop(cb);
    assert_eq!(ca.recv().await, Frame::PeerGone { key: b_pub });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_does_not_stall_the_others() {
    let s = server(RelayConfig {
        queue_frames: 64,
        ..RelayConfig::default()
    })
    .await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    let (slow, slow_pub) = keys(3);
    for k in [a_pub, b_pub, slow_pub] {
        s.auth.allow(k, "acme");
    }
    let mut ca = Client::ok(s.addr, &a).await;
    let mut cb = Client::ok(s.addr, &b).await;
    let _never_reads = Client::ok(s.addr, &slow).await;
    // 40 MB at the client that never reads: its socket buffers and queue fill, then drops.
    let big = vec![1u8; 60_000];
    for i in 0..700 {
        ca.send(&packet(slow_pub, &big)).await;
        if i % 100 == 0 {
            ca.send(&packet(b_pub, format!("{i}").as_bytes())).await;
        }
    }
    ca.send(&packet(b_pub, b"last")).await;
    let mut got = Vec::new();
    while let Some(f) = cb.try_recv(Duration::from_secs(5)).await {
        if let Frame::RecvPacket { packet, .. } = f {
            let done = packet == b"last";
            got.push(packet);
            if done {
                break;
            }
        }
    }
    assert_eq!(got.len(), 8, "every packet to B arrived");
    let m = get_metrics(s.metrics).await;
    let drops: u64 = m
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"pinhole_relay_dropped_packets_total{reason="queue_full"} "#)
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(drops > 0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_flow_and_a_silent_client_is_dropped() {
    let s = server(RelayConfig {
        keepalive: Duration::from_secs(1),
        ..RelayConfig::default()
    })
    .await;
    let (a, a_pub) = keys(1);
    s.auth.allow(a_pub, "acme");
    let (mut ca, answer) = Client::connect(s.addr, &a, false).await;
    assert_eq!(answer, Frame::ServerInfo { keepalive_secs: 1 });
    // Keepalives arrive from the relay; answering keeps the connection.
    for _ in 0..3 {
        let f = tokio::time::timeout(Duration::from_secs(3), async {
            let mut buf = [0u8; 64];
            let n = ca.raw.io.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        })
        .await
        .unwrap();
        assert_eq!(f, Frame::KeepAlive.to_bytes());
        ca.send(&Frame::KeepAlive).await;
    }
    assert_eq!(s.relay.client_count(), 1);
    // Silence: closed after 2.5 keepalive intervals.
    let t = std::time::Instant::now();
    assert!(ca.closed().await);
    assert!(t.elapsed() >= Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_proves_its_key_is_cut_off() {
    let s = server(RelayConfig {
        handshake_timeout: Duration::from_millis(500),
        ..RelayConfig::default()
    })
    .await;
    let mut c = RawClient::upgrade(s.addr).await.unwrap();
    assert!(matches!(c.recv().await, Ok(Some(Frame::ServerKey { .. }))));
    let closed = tokio::time::timeout(Duration::from_secs(3), c.recv()).await;
    assert!(matches!(closed, Ok(Ok(None))), "{closed:?}");
    // Plain GET without the upgrade: told what this is.
    let mut io = TcpStream::connect(s.addr).await.unwrap();
    io.write_all(b"GET /relay HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    io.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
    assert!(out.contains("Pinhole relay"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_clients_talk_to_upgraded_ones() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = server(RelayConfig::default()).await;
    let (a, a_pub) = keys(1);
    let (b, b_pub) = keys(2);
    s.auth.allow(a_pub, "acme");
    s.auth.allow(b_pub, "acme");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/relay", s.addr))
        .await
        .expect("WebSocket upgrade");
    let mut d = Decoder::default();
    // Frames arrive as a byte stream in binary messages.
    let next = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, d: &mut Decoder| loop {
        if let Some(f) = d.next_frame().unwrap() {
            if f != Frame::KeepAlive {
                return f;
            }
            continue;
        }
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => d.push(&b),
            Some(Ok(_)) => {}
            other => panic!("WebSocket ended: {other:?}"),
        }
    };
    let Frame::ServerKey { key, challenge, .. } = next(&mut ws, &mut d).await else {
        panic!("no server key")
    };
    let hello = Frame::ClientInfo {
        key: a_pub,
        proof: wire::key_proof(&a, &key, &challenge),
    }
    .to_bytes();
    // Split over two messages: the relay reads a stream, not messages.
    ws.send(Message::Binary(hello[..10].to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(hello[10..].to_vec().into()))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut ws, &mut d).await,
        Frame::ServerInfo { .. }
    ));
    let mut cb = Client::ok(s.addr, &b).await;
    ws.send(Message::Binary(
        packet(b_pub, b"from a WebSocket").to_bytes().into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        cb.recv().await,
        Frame::RecvPacket {
            src: a_pub,
            packet: b"from a WebSocket".to_vec()
        }
    );
    cb.send(&packet(a_pub, b"to a WebSocket")).await;
    assert_eq!(
        next(&mut ws, &mut d).await,
        Frame::RecvPacket {
            src: b_pub,
            packet: b"to a WebSocket".to_vec()
        }
    );
    // A text message is not relay protocol: that connection ends, the relay goes on.
    ws.send(Message::Text("hello".into())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    assert_eq!(s.relay.client_count(), 1);
}
