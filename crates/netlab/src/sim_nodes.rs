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
            let upd = NodeUpdate {
                endpoints: Some(vec![pinhole_proto::endpoint::Endpoint::new(
                    ([203, 0, 113, (i % 250) as u8], 41641).into(),
                    pinhole_proto::endpoint::EndpointKind::Stun,
                )]),
                ..NodeUpdate::default()
            };
            let stream = match order {
                Order::Crowd => {
                    let mut stream = client.map(&r.node_token).await?;
                    stream.next().await?.context("the stream ended at once")?;
                    client.update(&r.node_token, &upd).await?;
                    Some(stream)
                }
                Order::EndpointsFirst => {
                    client.update(&r.node_token, &upd).await?;
                    None
                }
            };
            drop(permit);
            Ok::<_, anyhow::Error>((r.node_token, stream))
        }));
    }
    let mut opened = Vec::with_capacity(count);
    for t in tasks {
        opened.push(t.await??);
    }
    // Every stream is read from the moment it is open (what arrives: presence and endpoint
    // changes of the others) until `stop`; unread, they would pile up in memory.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    for (token, stream) in opened {
        let (client, sem, mut stopped) = (client.clone(), sem.clone(), stopped.clone());
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let reader = tokio::spawn(async move {
            let mut stream = match stream {
                Some(s) => s,
                None => {
                    // Endpoints first: the stream now, as many at once as registrations were.
                    let permit = sem.acquire_owned().await;
                    let opened = async {
                        let mut s = client.map(&token).await?;
                        s.next().await?.context("the stream ended at once")?;
                        Ok::<_, anyhow::Error>(s)
                    }
                    .await;
                    drop(permit);
                    match opened {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = up_tx.send(Err(e));
                            return;
                        }
                    }
                }
            };
            let _ = up_tx.send(Ok(()));
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    m = stream.next_raw() => if !matches!(m, Ok(Some(_))) { break },
                }
            }
        });
        tasks.push((up_rx, reader));
    }
    let mut readers = Vec::with_capacity(count);
    for (up, reader) in tasks {
        up.await.context("a simulated node's task ended")??;
        readers.push(reader);
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
