//! The daemon's one loop: reads the TUN device and the UDP socket, feeds the engine, writes what
//! it returns, wakes the engine's timers, and applies the coordination server's map; stops
//! cleanly on SIGINT/SIGTERM. Peers come from a static file or from control.

use crate::control_link::{self, ControlMsg};
#[cfg(unix)]
use crate::ipc_server;
use crate::mapped_peers::MappedPeers;
use crate::status::{self, Reporter};
use crate::tun_io::TunIo;
use crate::{args::Args, config, identity, routes, state_dir, tun_device, udp};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use pinhole_control_client::ControlClient;
use pinhole_engine::{Engine, Event, Key, PeerSettings};
use pinhole_proto::ipc::{State, Status};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Packets read from one source before the loop writes out and looks at the others again.
const BATCH: usize = 256;

pub async fn run(args: Args) -> Result<()> {
    state_dir::prepare(&args.state_dir)?;
    let (status_tx, status_rx) = watch::channel(Status {
        state: State::Connecting,
        reason: None,
        login: None,
        self_node: None,
        peers: Vec::new(),
    });
    #[cfg(unix)]
    let api = {
        let access = ipc_server::Access::system();
        let listener = ipc_server::listen(&args.socket, access).await?;
        tracing::info!(socket = %args.socket.display(), "local API listening");
        tokio::spawn(ipc_server::accept_loop(listener, access, status_rx))
    };
    #[cfg(not(unix))]
    {
        drop(status_rx);
        tracing::warn!("the local API is not served on this OS yet");
    }
    let mut reporter = Reporter::new(status_tx);
    let result = match args.config.clone() {
        Some(path) => run_static(&args, &path, &mut reporter).await,
        None => run_with_control(&args, &mut reporter).await,
    };
    #[cfg(unix)]
    {
        api.abort();
        let _ = std::fs::remove_file(&args.socket);
    }
    result
}

/// What the data plane starts with.
struct Plan {
    private: Key,
    addresses: Vec<IpNet>,
    mtu: u16,
    peers: Vec<PeerSettings>,
}

/// Static mode: keys, addresses and peers from a WireGuard-format file.
async fn run_static(
    args: &Args,
    config_path: &std::path::Path,
    reporter: &mut Reporter,
) -> Result<()> {
    let config = config::load(config_path)?;
    let socket = udp::bind(config.interface.listen_port.unwrap_or(0))?;
    let plan = Plan {
        private: config.interface.private_key,
        addresses: config.interface.addresses.clone(),
        mtu: config.interface.mtu.unwrap_or(tun_device::DEFAULT_MTU),
        peers: config::peers(&config),
    };
    reporter.set_self(status::self_status(
        "this node".into(),
        pinhole_engine::public_key(&plan.private).to_base64(),
        plan.addresses
            .iter()
            .map(|a| a.addr().to_string())
            .collect(),
        Vec::new(),
    ));
    run_dataplane(args, plan, socket, None, reporter).await
}

/// Control mode: join through the coordination server and follow its map.
async fn run_with_control(args: &Args, reporter: &mut Reporter) -> Result<()> {
    let saved = identity::registration(&args.state_dir)?;
    let url = match (&args.control_url, &saved) {
        (Some(u), _) => u.trim_end_matches('/').to_string(),
        (None, Some(r)) => r.control_url.clone(),
        (None, None) => bail!(
            "no coordination server: give --control-url URL (or --config FILE for a static WireGuard configuration)"
        ),
    };
    let ca = match &args.control_ca {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?),
        None => None,
    };
    let client = ControlClient::new(&url, ca.as_deref())?;
    let private = identity::node_key(&args.state_dir)?;
    let node_key = pinhole_engine::public_key(&private);
    // The disco key is new on every start and only announced through control.
    let disco_key = pinhole_engine::public_key(&identity::random_private_key()?);
    let registration = match saved {
        Some(r) if r.control_url == url && r.node_key == node_key => r,
        _ => {
            let auth_key = match (&args.authkey_file, std::env::var("PINHOLE_AUTHKEY")) {
                (Some(f), _) => Some(identity::read_auth_key(f)?),
                (None, Ok(k)) if !k.trim().is_empty() => Some(k.trim().to_string()),
                _ => None,
            };
            reporter.set(
                if auth_key.is_some() {
                    State::Connecting
                } else {
                    State::NeedsLogin
                },
                Some("signing in to the coordination server".into()),
            );
            let how = control_link::SignIn {
                auth_key,
                hostname: args
                    .hostname
                    .clone()
                    .unwrap_or_else(crate::args::os_hostname),
            };
            tokio::select! {
                r = control_link::register(&client, &args.state_dir, node_key, disco_key, &how) => r?,
                signal = shutdown_signal() => bail!("{signal} while signing in"),
            }
        }
    };
    tracing::info!(name = %registration.name, control = %url, "node identity loaded");
    reporter.set_self(status::self_status(
        registration.name.clone(),
        node_key.to_base64(),
        registration
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect(),
        Vec::new(),
    ));
    let socket = match udp::bind(args.port) {
        Ok(s) => s,
        Err(e) if args.port != 0 => {
            tracing::warn!("UDP port {} unavailable ({e:#}); using any port", args.port);
            udp::bind(0)?
        }
        Err(e) => return Err(e),
    };
    let port = socket.local_addr()?.port();
    let addresses = registration
        .addresses
        .iter()
        .map(|a| match a {
            // The whole overlay is on-link through the device: one route per family.
            IpAddr::V4(v4) => IpNet::new(IpAddr::V4(*v4), 10),
            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(*v6), 48),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (tx, rx) = mpsc::channel(256);
    let follower = tokio::spawn(control_link::follow(
        client,
        registration.clone(),
        disco_key,
        port,
        tx,
    ));
    let plan = Plan {
        private,
        addresses,
        mtu: tun_device::DEFAULT_MTU,
        peers: Vec::new(),
    };
    let result = run_dataplane(args, plan, socket, Some(rx), reporter).await;
    follower.abort();
    result
}

async fn run_dataplane(
    args: &Args,
    plan: Plan,
    socket: UdpSocket,
    control: Option<mpsc::Receiver<ControlMsg>>,
    reporter: &mut Reporter,
) -> Result<()> {
    let now = Instant::now();
    let mut engine = Engine::new(plan.private, now);
    tracing::info!(public_key = %engine.public_key().to_base64(), "node key loaded");
    for p in &plan.peers {
        engine
            .upsert_peer(now, p.clone())
            .with_context(|| format!("peer {}", p.public_key.to_base64()))?;
    }
    let local = socket.local_addr()?;
    let device = tun_device::create(&args.tun_name, &plan.addresses, plan.mtu)?;
    let dev_name = device.name().unwrap_or_else(|_| args.tun_name.clone());
    let mut tun = TunIo::new(device, plan.mtu);
    let routes = routes::needed(
        &plan.addresses,
        plan.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied()),
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
            peers = plan.peers.len(),
            "pinholed is up"
        );
        let mut ctl = MappedPeers::new(control, args.state_dir.clone());
        result = event_loop(&mut engine, &socket, &mut tun, &mut ctl, reporter).await;
        reporter.set(State::Stopped, None);
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

async fn event_loop(
    engine: &mut Engine,
    socket: &UdpSocket,
    tun: &mut TunIo,
    control: &mut MappedPeers,
    reporter: &mut Reporter,
) -> Result<()> {
    let mut report = tokio::time::interval(std::time::Duration::from_secs(1));
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
            Some(msg) = control.recv() => {
                control.apply(engine, msg);
                reporter.publish(engine, control);
            }
            _ = report.tick() => reporter.publish(engine, control),
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
