//! The daemon's one loop: reads the TUN device and the UDP socket, feeds the engine, writes what
//! it returns, wakes the engine's timers, and applies the coordination server's map; stops
//! cleanly on SIGINT/SIGTERM. Peers come from a static file or from control.

use crate::command::Command;
use crate::control_link;
#[cfg(unix)]
use crate::ipc_server;
use crate::mapped_peers::MappedPeers;
use crate::prefs::Prefs;
use crate::status::{self, Reporter};
use crate::tun_io::TunIo;
use crate::{args::Args, config, identity, routes, state_dir, tun_device, udp};
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use pinhole_control_client::ControlClient;
use pinhole_engine::{Engine, Event, Key, PeerSettings};
use pinhole_proto::ipc::{IpcError, Op, State, Status};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

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
    let (cmd_tx, mut cmds) = mpsc::channel::<Command>(16);
    #[cfg(unix)]
    let api = {
        let access = ipc_server::Access::system();
        let listener = ipc_server::listen(&args.socket, access).await?;
        tracing::info!(socket = %args.socket.display(), "local API listening");
        tokio::spawn(ipc_server::accept_loop(listener, access, status_rx, cmd_tx))
    };
    #[cfg(not(unix))]
    {
        drop((status_rx, cmd_tx));
        tracing::warn!("the local API is not served on this OS yet");
    }
    let mut reporter = Reporter::new(status_tx);
    let result = match args.config.clone() {
        Some(path) => run_static(&args, &path, &mut reporter, &mut cmds).await,
        None => run_with_control(&args, &mut reporter, &mut cmds).await,
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
    cmds: &mut mpsc::Receiver<Command>,
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
    let mut mapped = MappedPeers::new(None, args.state_dir.clone());
    supervise(args, &plan, &socket, &mut mapped, reporter, cmds).await
}

/// Control mode: join through the coordination server and follow its map.
async fn run_with_control(
    args: &Args,
    reporter: &mut Reporter,
    cmds: &mut mpsc::Receiver<Command>,
) -> Result<()> {
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
    let mut mapped = MappedPeers::new(Some(rx), args.state_dir.clone());
    let result = supervise(args, &plan, &socket, &mut mapped, reporter, cmds).await;
    follower.abort();
    result
}

/// Why the data plane stopped.
enum Exit {
    Signal,
    /// `pinhole down`: answered once the device is gone.
    Down(oneshot::Sender<Result<(), IpcError>>),
}

fn not_a_command(op: &Op) -> IpcError {
    IpcError {
        code: "bad-request".into(),
        message: format!("{op:?} is not an operation on the tunnel"),
    }
}

/// Runs the data plane while the user wants it up, and waits while they want it down; both
/// keep following control. Returns on SIGINT/SIGTERM.
async fn supervise(
    args: &Args,
    plan: &Plan,
    socket: &UdpSocket,
    mapped: &mut MappedPeers,
    reporter: &mut Reporter,
    cmds: &mut mpsc::Receiver<Command>,
) -> Result<()> {
    let mut prefs = Prefs::load(&args.state_dir);
    let mut on_up = None;
    // One engine for the daemon's life: sessions survive `down` and `up`, so peers need no new
    // handshake when the tunnel comes back.
    let now = Instant::now();
    let mut engine = Engine::new(plan.private, now);
    tracing::info!(public_key = %engine.public_key().to_base64(), "node key loaded");
    for p in &plan.peers {
        engine
            .upsert_peer(now, p.clone())
            .with_context(|| format!("peer {}", p.public_key.to_base64()))?;
    }
    loop {
        if prefs.want_up {
            let exit = run_dataplane(
                args,
                plan,
                socket,
                &mut engine,
                mapped,
                reporter,
                cmds,
                on_up.take(),
            );
            match exit.await? {
                Exit::Signal => return Ok(()),
                Exit::Down(reply) => {
                    prefs.set_want_up(false);
                    let _ = reply.send(Ok(()));
                }
            }
            continue;
        }
        reporter.publish(None, mapped);
        tracing::info!("the tunnel is down; `pinhole up` brings it back");
        let mut shutdown = std::pin::pin!(shutdown_signal());
        loop {
            tokio::select! {
                signal = &mut shutdown => {
                    tracing::info!("{signal}: shutting down");
                    return Ok(());
                }
                Some(c) = cmds.recv() => match c.op {
                    Op::Up => {
                        prefs.set_want_up(true);
                        on_up = Some(c.reply);
                        break;
                    }
                    Op::Down => {
                        let _ = c.reply.send(Ok(()));
                    }
                    other => {
                        let _ = c.reply.send(Err(not_a_command(&other)));
                    }
                },
                Some(msg) = mapped.recv() => {
                    mapped.apply(&mut engine, msg);
                    reporter.publish(None, mapped);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_dataplane(
    args: &Args,
    plan: &Plan,
    socket: &UdpSocket,
    engine: &mut Engine,
    mapped: &mut MappedPeers,
    reporter: &mut Reporter,
    cmds: &mut mpsc::Receiver<Command>,
    on_up: Option<oneshot::Sender<Result<(), IpcError>>>,
) -> Result<Exit> {
    let local = socket.local_addr()?;
    let device = match tun_device::create(&args.tun_name, &plan.addresses, plan.mtu) {
        Ok(d) => d,
        Err(e) => {
            if let Some(r) = on_up {
                let _ = r.send(Err(IpcError {
                    code: "tun-failed".into(),
                    message: format!("{e:#}"),
                }));
            }
            return Err(e);
        }
    };
    let dev_name = device.name().unwrap_or_else(|_| args.tun_name.clone());
    let mut tun = TunIo::new(device, plan.mtu);
    let routes = routes::needed(
        &plan.addresses,
        plan.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied()),
    );
    let mut added = Vec::new();
    let mut result = Ok(Exit::Signal);
    for net in &routes {
        match routes::add(&dev_name, net) {
            Ok(()) => added.push(*net),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if let Some(r) = on_up {
        let _ = r.send(match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(IpcError {
                code: "routes-failed".into(),
                message: format!("{e:#}"),
            }),
        });
    }
    if result.is_ok() {
        tracing::info!(
            device = %dev_name,
            port = local.port(),
            peers = plan.peers.len(),
            "pinholed is up"
        );
        result = event_loop(engine, socket, &mut tun, mapped, reporter, cmds).await;
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
    cmds: &mut mpsc::Receiver<Command>,
) -> Result<Exit> {
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
                return Ok(Exit::Signal);
            }
            Some(c) = cmds.recv() => match c.op {
                Op::Down => {
                    tracing::info!("taking the tunnel down");
                    return Ok(Exit::Down(c.reply));
                }
                Op::Up => {
                    let _ = c.reply.send(Ok(()));
                }
                other => {
                    let _ = c.reply.send(Err(not_a_command(&other)));
                }
            },
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
                reporter.publish(Some(engine), control);
            }
            _ = report.tick() => reporter.publish(Some(engine), control),
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
