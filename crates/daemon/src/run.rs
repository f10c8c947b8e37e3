//! The daemon's one loop: reads the TUN device and the UDP socket, feeds the engine, writes what
//! it returns, and wakes the engine's timers; stops cleanly on SIGINT/SIGTERM.

use crate::tun_io::TunIo;
use crate::{args::Args, config, routes, state_dir, tun_device, udp};
use anyhow::{bail, Context, Result};
use pinhole_engine::{Engine, Event};
use std::io::ErrorKind;
use std::time::Instant;
use tokio::net::UdpSocket;

/// Packets read from one source before the loop writes out and looks at the others again.
const BATCH: usize = 256;

pub async fn run(args: Args) -> Result<()> {
    state_dir::prepare(&args.state_dir)?;
    let Some(config_path) = args.config.as_deref() else {
        bail!("no --config FILE given: pinholed needs a WireGuard-format configuration file until it can join through a coordination server");
    };
    let config = config::load(config_path)?;
    let now = Instant::now();
    let mut engine = Engine::new(config.interface.private_key, now);
    tracing::info!(public_key = %engine.public_key().to_base64(), "node key loaded");
    let peers = config::peers(&config);
    for p in &peers {
        engine
            .upsert_peer(now, p.clone())
            .with_context(|| format!("peer {}", p.public_key.to_base64()))?;
    }

    let socket = udp::bind(config.interface.listen_port.unwrap_or(0))?;
    let local = socket.local_addr()?;
    let mtu = config.interface.mtu.unwrap_or(tun_device::DEFAULT_MTU);
    let device = tun_device::create(&args.tun_name, &config.interface.addresses, mtu)?;
    let dev_name = device.name().unwrap_or_else(|_| args.tun_name.clone());
    let mut tun = TunIo::new(device, mtu);
    let routes = routes::needed(
        &config.interface.addresses,
        peers.iter().flat_map(|p| p.allowed_ips.iter().copied()),
    );
    let mut added = Vec::new();
    let mut result = Ok(());
    for net in &routes {
        match routes::add(&dev_name, net) {
            Ok(()) => added.push(*net),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        tracing::info!(
            device = %dev_name,
            port = local.port(),
            peers = peers.len(),
            "pinholed is up"
        );
        result = event_loop(&mut engine, &socket, &mut tun).await;
    }
    for net in added.iter().rev() {
        routes::remove(&dev_name, net);
    }
    let stats = engine.stats();
    tracing::info!(
        rx_invalid = stats.rx_invalid,
        rx_unknown_peer = stats.rx_unknown_peer,
        rx_disallowed_source = stats.rx_disallowed_source,
        tun_no_route = stats.tun_no_route,
        tx_no_endpoint = stats.tx_no_endpoint,
        queue_full = stats.queue_full,
        "pinholed stopped; dropped packets"
    );
    drop(tun);
    result
}

async fn event_loop(engine: &mut Engine, socket: &UdpSocket, tun: &mut TunIo) -> Result<()> {
    let local = socket.local_addr()?;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut udp_buf = vec![0u8; 65536];
    loop {
        flush(engine, socket, &local, tun).await;
        let deadline = tokio::time::Instant::from_std(engine.poll_timeout());
        tokio::select! {
            biased;
            signal = &mut shutdown => {
                tracing::info!("{signal}: shutting down");
                return Ok(());
            }
            r = tun.recv_batch() => {
                let n = r.context("reading the TUN device")?;
                let now = Instant::now();
                for i in 0..n {
                    engine.handle_tun(now, tun.packet(i));
                }
                let mut total = n;
                while total < BATCH {
                    match tun.try_recv_batch() {
                        Ok(n) => {
                            for i in 0..n {
                                engine.handle_tun(now, tun.packet(i));
                            }
                            total += n;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e).context("reading the TUN device"),
                    }
                }
            }
            r = socket.recv_from(&mut udp_buf) => {
                let now = Instant::now();
                match r {
                    Ok((n, from)) => engine.handle_network(now, udp::canonical(from), &udp_buf[..n]),
                    Err(e) => tracing::debug!("UDP receive: {e}"),
                }
                for _ in 1..BATCH {
                    match socket.try_recv_from(&mut udp_buf) {
                        Ok((n, from)) => engine.handle_network(now, udp::canonical(from), &udp_buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!("UDP receive: {e}");
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
        engine.handle_timeout(Instant::now());
    }
}

/// Writes everything the engine produced: datagrams to the socket, packets to the TUN device.
async fn flush(
    engine: &mut Engine,
    socket: &UdpSocket,
    local: &std::net::SocketAddr,
    tun: &mut TunIo,
) {
    while let Some(t) = engine.poll_transmit() {
        let dst = udp::to_socket_family(local, t.dst);
        if let Err(e) = socket.send_to(&t.payload, dst).await {
            tracing::debug!("UDP send to {}: {e}", t.dst);
        }
    }
    while let Some(p) = engine.poll_tun() {
        tun.queue(&p);
    }
    if let Err(e) = tun.flush().await {
        tracing::debug!("TUN write: {e}");
    }
    while let Some(e) = engine.poll_event() {
        match e {
            Event::HandshakeCompleted { peer } => {
                tracing::info!(peer = %peer.short(), "handshake completed")
            }
            Event::EndpointChanged { peer, endpoint } => {
                tracing::info!(peer = %peer.short(), %endpoint, "peer endpoint changed")
            }
        }
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
