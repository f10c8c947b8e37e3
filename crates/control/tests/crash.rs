//! pinhole-control (the binary this run built) killed with SIGKILL in the middle of a burst of
//! registrations and endpoint updates, on SQLite and on PostgreSQL: after a restart on the same
//! database it opens, every registration it had answered is there with its addresses and its
//! last answered endpoint update, and the nodes' map streams resume with their tokens.

mod common;

use common::pg::Postgres;
use pinhole_control_client::{ControlClient, MapStream};
use pinhole_proto::control::{MapMessage, NodeInfo, NodeUpdate};
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use pinhole_proto::key::{Key, PrivateKey};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 200;

/// The server process; killed (SIGKILL) when dropped.
struct ControlProc(Child);

impl Drop for ControlProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pinhole-control")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `pinhole-control serve` on `addr` and waits until it answers.
async fn start(db: &str, addr: SocketAddr, log: &std::path::Path) -> ControlProc {
    let log = std::fs::File::create(log).expect("log file");
    let child = Command::new(bin())
        .args(["--db", db, "serve", "--listen"])
        .arg(addr.to_string())
        .args(["--insecure-http", "--no-stun", "--no-relay"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting pinhole-control");
    let proc = ControlProc(child);
    let client = ControlClient::new(&format!("http://{addr}"), None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.health().await.is_err() {
        assert!(Instant::now() < deadline, "pinhole-control did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proc
}

fn authkey(db: &str) -> String {
    let out = Command::new(bin())
        .args(["--db", db, "authkey", "create", "--reusable"])
        .output()
        .expect("authkey create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What the server answered before it died.
#[derive(Debug, Clone)]
struct Accepted {
    id: String,
    token: String,
    addresses: Vec<std::net::IpAddr>,
    /// The last endpoint update it answered, if any.
    endpoints: Option<Vec<Endpoint>>,
    /// The last one sent (it may have been applied without the answer getting out).
    tried: Option<Vec<Endpoint>>,
}

async fn full(stream: &mut MapStream) -> pinhole_proto::control::Node {
    let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the map in time")
        .expect("readable")
        .expect("open");
    match m {
        MapMessage::Full { self_node, .. } => self_node,
        other => panic!("the stream starts with {other:?}"),
    }
}

async fn burst_kill_restart(db: &str, name: &str) {
    let dir = std::env::temp_dir().join(format!("pinhole-crash-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let key = authkey(db);
    let server = start(db, addr, &dir.join("first.log")).await;
    let client = ControlClient::new(&format!("http://{addr}"), None).unwrap();

    // A burst: 200 nodes registering, 16 at a time, each then updating its endpoints.
    let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..NODES {
        let (client, key, accepted, done, sem) = (
            client.clone(),
            key.clone(),
            accepted.clone(),
            done.clone(),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut k = [7u8; 32];
            k[..2].copy_from_slice(&(i as u16).to_be_bytes());
            let info = NodeInfo {
                disco_key: Key([9; 32]),
                hostname: format!("burst-{i}"),
                os: "linux".into(),
                tags: Vec::new(),
                advertised_routes: Vec::new(),
            };
            let Ok(r) = client
                .register(&key, &PrivateKey::from_bytes(k), &info)
                .await
            else {
                return;
            };
            let slot = {
                let mut a = accepted.lock().unwrap();
                a.push(Accepted {
                    id: r.node_id.clone(),
                    token: r.node_token.clone(),
                    addresses: r.addresses.clone(),
                    endpoints: None,
                    tried: None,
                });
                a.len() - 1
            };
            done.fetch_add(1, Ordering::Relaxed);
            for port in 1..=5u16 {
                let eps: Vec<Endpoint> = vec![Endpoint::new(
                    ([192, 0, 2, (i % 250) as u8], port).into(),
                    EndpointKind::Stun,
                )];
                let upd = NodeUpdate {
                    endpoints: Some(eps.clone()),
                    ..NodeUpdate::default()
                };
                accepted.lock().unwrap()[slot].tried = Some(eps.clone());
                if client.update(&r.node_token, &upd).await.is_err() {
                    return;
                }
                accepted.lock().unwrap()[slot].endpoints = Some(eps);
            }
        }));
    }
    // SIGKILL in the middle of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < NODES / 3 {
        assert!(Instant::now() < deadline, "the burst did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(server);
    for t in tasks {
        let _ = t.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= NODES / 3 && accepted.len() < NODES,
        "killed mid-burst: {} of {NODES} answered",
        accepted.len()
    );

    // Restarted on the same database: it opens, and nothing it answered is lost.
    let _server = start(db, addr, &dir.join("second.log")).await;
    for a in &accepted {
        let mut stream = client
            .map(&a.token)
            .await
            .unwrap_or_else(|e| panic!("{}'s stream after the restart: {e}", a.id));
        let me = full(&mut stream).await;
        assert_eq!(me.id, a.id);
        assert_eq!(me.addresses, a.addresses);
        if let Some(eps) = &a.endpoints {
            // The last answered update, or the one after it if that was applied as the server
            // died (its answer lost): never an older one.
            assert!(
                &me.endpoints == eps || Some(&me.endpoints) == a.tried.as_ref(),
                "{}: {:?}, answered {eps:?}",
                a.id,
                me.endpoints
            );
        }
    }
    eprintln!(
        "{name}: {} registrations answered before SIGKILL, all there after the restart",
        accepted.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill_mid_burst() {
    let dir = std::env::temp_dir().join(format!("pinhole-crash-db-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("control.db").display());
    burst_kill_restart(&db, "sqlite").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill_mid_burst() {
    let Some(pg) = Postgres::start() else { return };
    let db = pg.database("crash");
    burst_kill_restart(&db, "postgres").await;
}
