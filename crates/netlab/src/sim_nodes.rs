//! Simulated nodes for load on a coordination server: each registers (proving a fresh key) and
//! holds its map stream open, as a real pinholed would, without a TUN device or WireGuard.
//! `netlab-tool sim-nodes URL AUTHKEY_FILE COUNT HOLD_S [--endpoints-first]` runs them inside a
//! lab namespace.

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

/// In which order the simulated nodes come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Each node registers, opens its stream, then publishes its endpoint, while the others
    /// do the same (every endpoint is sent to every stream already open: a crowd arriving).
    Crowd,
    /// Every node registers and publishes its endpoint first, then all open their streams
    /// (no endpoint fan-out: a large network quickly, for measuring the node that joins it).
    EndpointsFirst,
}

/// Registers `count` nodes at `url` with `authkey`, opens each one's map stream, publishes an
/// endpoint for each, and holds the streams open for `hold`.
pub async fn run(
    url: &str,
    authkey: &str,
    count: usize,
    hold: Duration,
    order: Order,
) -> Result<Report> {
    let client = ControlClient::new(url, None)?;
    let started = Instant::now();
    let registered = Arc::new(AtomicUsize::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    // Endpoints first: no stream opens until every node has published its endpoint.
    let published = Arc::new(tokio::sync::Barrier::new(match order {
        Order::Crowd => 1,
        Order::EndpointsFirst => count,
    }));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let (client, authkey, registered, sem, published, mut stopped) = (
            client.clone(),
            authkey.to_string(),
            registered.clone(),
            sem.clone(),
            published.clone(),
            stopped.clone(),
        );
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let node = tokio::spawn(async move {
            let upd = NodeUpdate {
                endpoints: Some(vec![pinhole_proto::endpoint::Endpoint::new(
                    ([203, 0, 113, (i % 250) as u8], 41641).into(),
                    pinhole_proto::endpoint::EndpointKind::Stun,
                )]),
                ..NodeUpdate::default()
            };
            let up = async {
                let joined = async {
                    let _permit = sem.clone().acquire_owned().await?;
                    let private = PrivateKey::from_bytes(rand::random());
                    let info = NodeInfo {
                        disco_key: Key(rand::random()),
                        hostname: format!("sim-{i}"),
                        os: "linux".into(),
                        tags: Vec::new(),
                        advertised_routes: Vec::new(),
                    };
                    let r = client.register(&authkey, &private, &info).await?;
                    registered.fetch_add(1, Ordering::Relaxed);
                    if order == Order::EndpointsFirst {
                        client.update(&r.node_token, &upd).await?;
                    }
                    Ok::<_, anyhow::Error>(r)
                }
                .await;
                // Also after a failure: the others do not wait for this node forever.
                published.wait().await;
                let r = joined?;
                let _permit = sem.acquire_owned().await?;
                let mut stream = client.map(&r.node_token).await?;
                stream.next().await?.context("the stream ended at once")?;
                if order == Order::Crowd {
                    client.update(&r.node_token, &upd).await?;
                }
                Ok::<_, anyhow::Error>(stream)
            }
            .await;
            let mut stream = match up {
                Ok(s) => {
                    let _ = up_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = up_tx.send(Err(e));
                    return;
                }
            };
            // Read from the moment it is open (presence and endpoint changes of the others)
            // until `stop`: unread, the streams would pile up in memory.
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    m = stream.next_raw() => if !matches!(m, Ok(Some(_))) { break },
                }
            }
        });
        nodes.push((up_rx, node));
    }
    let mut readers = Vec::with_capacity(count);
    for (up, node) in nodes {
        up.await.context("a simulated node's task ended")??;
        readers.push(node);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    println!(
        "registered={} streams={} seconds={connect_seconds:.2}",
        registered.load(Ordering::Relaxed),
        readers.len()
    );
    tokio::time::sleep(hold).await;
    let _ = stop.send(true);
    for r in readers {
        let _ = r.await;
    }
    Ok(Report {
        registered: registered.load(Ordering::Relaxed),
        streams: count,
        connect_seconds,
    })
}
