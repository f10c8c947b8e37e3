//! Simulated nodes for load on a coordination server: each registers (proving a fresh key) and
//! holds its map stream open, as a real pinholed would, without a TUN device or WireGuard.
//! `netlab-tool sim-nodes URL AUTHKEY_FILE COUNT HOLD_S` runs them inside a lab namespace.

use anyhow::{Context, Result};
use pinhole_control_client::ControlClient;
use pinhole_proto::control::{NodeInfo, NodeUpdate};
use pinhole_proto::key::{Key, PrivateKey};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many registrations are in flight at once ("at once" for a server: as fast as it goes).
const CONCURRENCY: usize = 64;

/// What happened: registered, streams opened, seconds until all streams were open.
#[derive(Debug)]
pub struct Report {
    pub registered: usize,
    pub streams: usize,
    pub connect_seconds: f64,
}

/// Registers `count` nodes at `url` with `authkey`, opens each one's map stream, publishes an
/// endpoint for each, and holds the streams open for `hold`.
pub async fn run(url: &str, authkey: &str, count: usize, hold: Duration) -> Result<Report> {
    let client = ControlClient::new(url, None)?;
    let started = Instant::now();
    let registered = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let (client, authkey, registered) =
            (client.clone(), authkey.to_string(), registered.clone());
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let private = PrivateKey::from_bytes(rand::random());
            let info = NodeInfo {
                disco_key: Key(rand::random()),
                hostname: format!("sim-{i}"),
                os: "linux".into(),
            };
            let r = client.register(&authkey, &private, &info).await?;
            registered.fetch_add(1, Ordering::Relaxed);
            let mut stream = client.map(&r.node_token).await?;
            stream.next().await?.context("the stream ended at once")?;
            let upd = NodeUpdate {
                endpoints: Some(vec![pinhole_proto::endpoint::Endpoint::new(
                    ([203, 0, 113, (i % 250) as u8], 41641).into(),
                    pinhole_proto::endpoint::EndpointKind::Stun,
                )]),
                ..NodeUpdate::default()
            };
            client.update(&r.node_token, &upd).await?;
            drop(permit);
            Ok::<_, anyhow::Error>(stream)
        }));
    }
    let mut streams = Vec::with_capacity(count);
    for t in tasks {
        streams.push(t.await??);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    println!(
        "registered={} streams={} seconds={connect_seconds:.2}",
        registered.load(Ordering::Relaxed),
        streams.len()
    );
    // Held open, reading what arrives (presence and endpoint changes of the others).
    let until = tokio::time::Instant::now() + hold;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                while let Ok(Ok(Some(_))) = tokio::time::timeout_at(until, s.next()).await {}
            })
        })
        .collect();
    for r in readers {
        let _ = r.await;
    }
    Ok(Report {
        registered: registered.load(Ordering::Relaxed),
        streams: count,
        connect_seconds,
    })
}
