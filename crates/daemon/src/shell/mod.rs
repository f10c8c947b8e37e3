//! The daemon's shell: one loop that reads the TUN device (while the tunnel is up) and the UDP
//! socket, feeds the engine, writes what it returns, wakes the engine's timers, follows the
//! coordination server's map, and stops cleanly on SIGINT/SIGTERM. What to do about up, down,
//! login, logout, sign-ins, sign-outs, the netcheck schedule and the home relay is decided by
//! the state machine in [`crate::control::machine`]; the shell carries out its actions (tasks,
//! the TUN device, talking to control) and feeds their results back. Peers come from a static
//! file or control.
//!
//! This module holds the daemon's state, its start and the loop (what wakes it, what is due
//! after each wake-up, the machine's actions performed); beside it, each part the loop drives:
//! [`registration`] (sign-in, the map, leaving), [`packets`] (the TUN device and the data
//! path), [`probing`] (netcheck's STUN probes), [`relaying`] (relay links), [`port_mapping`],
//! [`operations`] (the local API's requests) and [`report`] (the status it serves).

mod names;
mod operations;
mod packets;
mod port_mapping;
mod probing;
mod registration;
mod relaying;
mod report;
mod routing;

use crate::connectivity::netcheck;
use crate::connectivity::pinger::{Pinger, Target};
use crate::connectivity::relay_link::{self, Relays};
use crate::control::control_link::{self, ControlMsg, SignIn, SignedIn};
use crate::control::machine::{Action, Input, Machine, SignInStart, Signed};
use crate::control::mapped_peers::MappedPeers;
use crate::local_api::command::{failure, Answer, Command};
use crate::local_api::prefs::Prefs;
use crate::local_api::status::{self, Headline, Reporter};
use crate::platform::identity::{self, Registration};
use crate::platform::netwatch;
use crate::{
    args::Args, control::config, platform::routes, platform::state_dir, platform::tun_device,
};
use anyhow::{Context, Result};
use ipnet::IpNet;
use names::Names;
use pinhole_control_client::ControlClient;
use pinhole_dataplane::extra_sockets::ExtraSockets;
use pinhole_dataplane::tun_io::TunIo;
use pinhole_dataplane::udp;
use pinhole_dataplane::udp_batch::{send_runs, BatchSocket, Batcher, Receiver};
use pinhole_engine::{Engine, Event, Key, Netcheck, PeerSettings, PrivateKey, RelayEvent};
use pinhole_proto::ipc::{
    Credential, LoginPrompt, LogoutResult, Nat, Op, PingReply, State, Status,
};
use pinhole_proto::stun;
use port_mapping::PortMapping;
use probing::Probes;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Packets read from one source before the loop writes out and looks at the others again.
const BATCH: usize = 256;

/// How long `ping` waits for a reply unless told.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(args: Args) -> Result<()> {
    state_dir::prepare(&args.state_dir)?;
    let (status_tx, status_rx) = watch::channel(Status {
        dns: None,
        state: State::Stopped,
        reason: Some("starting".into()),
        login: None,
        self_node: None,
        peers: Vec::new(),
    });
    let (cmd_tx, cmds) = mpsc::channel::<Command>(16);
    let api = crate::local_api::ipc_server::serve(&args.socket, status_rx, cmd_tx).await?;
    let mut daemon = Daemon::new(&args, Reporter::new(status_tx)).await?;
    crate::platform::service_notify::notify("READY=1");
    let result = daemon.run(cmds).await;
    crate::platform::service_notify::notify("STOPPING=1");
    daemon.stop_dataplane();
    drop(api);
    result
}

/// Where the daemon's peers come from.
enum Mode {
    /// A WireGuard-format file: fixed addresses and peers, no sign-in.
    Static {
        addresses: Vec<IpNet>,
        peers: Vec<PeerSettings>,
        mtu: u16,
    },
    /// A coordination server, once signed in.
    Control,
}

/// A registration in use (the machine holds it): the map stream followed in the background.
struct Link {
    client: ControlClient,
    follower: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// A sign-in task in progress (the machine knows whose and where to).
struct SigningIn {
    task: JoinHandle<Result<SignedIn>>,
    prompts: mpsc::Receiver<LoginPrompt>,
}

impl Drop for SigningIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tunnel while it is up: the device and the routes added for it (a static
/// configuration's in the main table; peers' networks and the exit node's in pinholed's own
/// table), and forwarding for peers while this node's routes are approved.
struct DataPlane {
    tun: TunIo,
    name: String,
    routes: Vec<IpNet>,
    table: crate::platform::route_table::RouteTable,
    forwarding: Option<crate::platform::forwarding::Forwarding>,
}

struct Daemon<'a> {
    args: &'a Args,
    mode: Mode,
    engine: Engine,
    /// The node key (the engine holds its own copy for WireGuard); proves the node's identity
    /// when it registers.
    node_private: PrivateKey,
    socket: UdpSocket,
    /// The socket's own address (read once: the loop sends to every peer's family with it).
    local: SocketAddr,
    /// Batched sends and receives on `socket` (GSO, GRO, sendmmsg/recvmmsg where the kernel
    /// has them).
    udp: BatchSocket,
    /// The datagrams of one flush, gathered into runs for GSO.
    outgoing: Batcher,
    prefs: Prefs,
    reporter: Reporter,
    mapped: MappedPeers,
    /// The control logic: sign-in, up/down, logout, sign-outs, netcheck schedule, home relay.
    machine: Machine<oneshot::Sender<Answer>>,
    link: Option<Link>,
    signing_in: Option<SigningIn>,
    dataplane: Option<DataPlane>,
    pinger: Pinger<oneshot::Sender<Answer>>,
    /// The disco key of this run: it seals discovery messages; its public half is announced
    /// through control. New on every start.
    disco_private: PrivateKey,
    disco_key: Key,
    /// This node's addresses as STUN servers saw them (the last netcheck), for the map stream
    /// task to publish.
    reflexive: watch::Sender<Vec<SocketAddr>>,
    /// The port mapper (running while signed in).
    port_mapping: PortMapping,
    /// Settled changes of this machine's addresses (from the OS), and the map-stream task's
    /// cue to publish the endpoints again at once.
    network: mpsc::Receiver<()>,
    network_changed: std::sync::Arc<tokio::sync::Notify>,
    /// The relay regions of the map, as last told to the machine.
    relay_regions: Vec<String>,
    /// Extra CA certificates (PEM) trusted for control.
    control_ca: Option<Vec<u8>>,
    /// The client of the last coordination server used (see `client`).
    control_client: std::sync::Mutex<Option<ControlClient>>,
    /// Netchecks whose preparation (DNS, control check) is done, for the loop to probe.
    /// The STUN probes in flight and who waits for them.
    probes: Probes,
    /// Connections to relays: the home region, and the regions of peers reached through one.
    relays: Relays,
    /// Extra UDP sockets the engine asked for (birthday probing).
    extra: ExtraSockets,
    /// The DNS server inside the tunnel.
    names: Names,
    /// How the system's resolver is pointed at it, and why it could not be, if it could not.
    os_dns: Box<dyn crate::platform::os_dns::OsDns>,
    os_dns_error: Option<String>,
    /// Which peer carries which route (see [`routing`]), why the OS's routes for it could not
    /// all be set, and why this node cannot forward for peers, if so.
    route_plan: crate::control::route_plan::RoutePlan,
    routes_error: Option<String>,
    forwarding_error: Option<String>,
    /// The approved routes forwarding last failed for (not tried again until they change).
    forwarding_tried: Vec<IpNet>,
    /// The coordination server's URL and addresses, kept outside the tunnel.
    control_ips: Option<(String, Vec<IpAddr>)>,
    /// Offers sent to control one at a time, in order (see [`routing`]).
    offer_order: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Removes the routing rules and forwarding when this process ends, however it ends.
    #[cfg(target_os = "linux")]
    _janitor: Option<crate::platform::janitor::Janitor>,
}

impl<'a> Daemon<'a> {
    async fn new(args: &'a Args, reporter: Reporter) -> Result<Daemon<'a>> {
        let now = Instant::now();
        let (mode, private, port) = match &args.config {
            Some(path) => {
                let config = config::load(path)?;
                let mode = Mode::Static {
                    addresses: config.interface.addresses.clone(),
                    peers: config::peers(&config),
                    mtu: config.interface.mtu.unwrap_or(tun_device::DEFAULT_MTU),
                };
                let port = config.interface.listen_port.unwrap_or(0);
                (mode, config.interface.private_key, port)
            }
            None => (
                Mode::Control,
                identity::node_key(&args.state_dir)?,
                args.port,
            ),
        };
        let socket = match udp::bind(port) {
            Ok(s) => s,
            Err(e) if port != 0 && args.config.is_none() => {
                tracing::warn!("UDP port {port} unavailable ({e:#}); using any port");
                udp::bind(0)?
            }
            Err(e) => return Err(e.into()),
        };
        let local = socket.local_addr()?;
        let udp = BatchSocket::new(&socket);
        tracing::debug!(
            gso_segments = udp.max_segments(),
            gro_segments = udp.gro_segments(),
            "UDP offloads"
        );
        let mut engine = Engine::new(&private, now);
        let disco_private = identity::random_private_key()?;
        engine.set_disco_key(disco_private.clone());
        tracing::info!(public_key = %engine.public_key().to_base64(), "node key loaded");
        if let Mode::Static { peers, .. } = &mode {
            for p in peers {
                engine
                    .upsert_peer(now, p.clone())
                    .with_context(|| format!("peer {}", p.public_key.to_base64()))?;
            }
        }
        if let Some(path) = &args.filter {
            engine.set_filter(Some(&filter_file(path)?), now);
        }
        let ident = rand::random::<u16>();
        let ca = match &args.control_ca {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        };
        let dialer =
            relay_link::Dialer::new(ca.as_deref(), args.proxy.as_deref(), args.relay_websocket)?;
        let prefs = Prefs::load(&args.state_dir);
        #[cfg(target_os = "linux")]
        let janitor = routing::prepare(matches!(mode, Mode::Control), &args.state_dir);
        // First of all, a crashed pinholed's resolver settings are put back.
        let os_dns = crate::platform::os_dns::for_this_system(&args.state_dir).await;
        let machine = Machine::new(
            matches!(mode, Mode::Static { .. }),
            prefs.want_up,
            args.control_url.clone(),
            now,
        );
        let mut d = Daemon {
            relays: Relays::new(private.clone(), dialer),
            node_private: private,
            probes: Probes::new(),
            args,
            mode,
            engine,
            socket,
            local,
            udp,
            outgoing: Batcher::default(),
            prefs,
            reporter,
            mapped: MappedPeers::new(None, args.state_dir.clone()),
            machine,
            link: None,
            signing_in: None,
            dataplane: None,
            pinger: Pinger::new(ident),
            disco_key: disco_private.public_key(),
            disco_private,
            control_ca: ca,
            control_client: std::sync::Mutex::new(None),
            relay_regions: Vec::new(),
            reflexive: watch::Sender::new(Vec::new()),
            port_mapping: PortMapping::new(!args.no_port_mapping, local.port()),
            extra: ExtraSockets::new(),
            names: Names::new(os_dns.upstreams()),
            os_dns,
            os_dns_error: None,
            route_plan: Default::default(),
            routes_error: None,
            forwarding_error: None,
            forwarding_tried: Vec::new(),
            control_ips: None,
            offer_order: Default::default(),
            #[cfg(target_os = "linux")]
            _janitor: janitor,
            network: netwatch::watch(),
            network_changed: std::sync::Arc::new(tokio::sync::Notify::new()),
        };
        d.start().await?;
        Ok(d)
    }

    /// At start: follow the saved registration, or sign in with an auth key, or wait for
    /// `pinhole login`; bring the tunnel up if wanted and possible.
    async fn start(&mut self) -> Result<()> {
        let (saved, auth_key) = match &self.mode {
            Mode::Static { addresses, .. } => {
                let me = status::self_status(
                    "this node".into(),
                    self.engine.public_key().to_base64(),
                    addresses.iter().map(|a| a.addr().to_string()).collect(),
                    None,
                );
                self.reporter.set_self(Some(me));
                (None, None)
            }
            Mode::Control => {
                let auth_key = match (&self.args.authkey_file, std::env::var("PINHOLE_AUTHKEY")) {
                    (Some(f), _) => Some(identity::read_auth_key(f)?),
                    (None, Ok(k)) if !k.trim().is_empty() => Some(k.trim().to_string()),
                    _ => None,
                };
                (identity::registration(&self.args.state_dir)?, auth_key)
            }
        };
        let had_saved = saved.is_some();
        let actions = self
            .machine
            .start(Instant::now(), saved, &self.engine.public_key(), auth_key)
            .map_err(anyhow::Error::msg)?;
        if had_saved && !self.machine.signed_in() {
            identity::forget_registration(&self.args.state_dir);
        }
        if let Some(r) = self.machine.registration() {
            tracing::info!(name = %r.name, control = %r.control_url, "node identity loaded");
        } else if matches!(self.mode, Mode::Control) && self.machine.signing_in().is_none() {
            tracing::info!(
                "not signed in: run `pinhole login{}`",
                if self.machine.last_server().is_some() {
                    ""
                } else {
                    " --server URL"
                }
            );
        }
        self.perform(actions).await;
        Ok(())
    }

    /// Feeds the machine one input and carries out what it decides.
    async fn feed(&mut self, input: Input<oneshot::Sender<Answer>>) {
        let actions = self.machine.handle(Instant::now(), input);
        self.perform(actions).await;
    }

    /// Carries out the machine's actions, feeding back what they report (which may lead to
    /// more actions).
    async fn perform(&mut self, actions: Vec<Action<oneshot::Sender<Answer>>>) {
        let mut todo = std::collections::VecDeque::from(actions);
        while let Some(action) = todo.pop_front() {
            let back = match action {
                Action::Reply(to, value) => {
                    let _ = to.send(value);
                    None
                }
                Action::SaveWantUp(up) => {
                    self.prefs.set_want_up(up);
                    None
                }
                Action::StartSignIn { server, start } => self.start_sign_in(server, start),
                Action::CancelSignIn => {
                    self.signing_in = None;
                    None
                }
                Action::Follow { registration } => self.follow(registration),
                Action::Unfollow => {
                    self.port_mapping.stop();
                    self.link = None;
                    self.mapped.reset(&mut self.engine, None);
                    self.sync_os_dns();
                    self.relay_regions.clear();
                    self.reporter.set_self(None);
                    self.reporter.set_home_relay(None);
                    None
                }
                Action::StartTunnel => {
                    let started = self.start_dataplane().map_err(|e| format!("{e:#}"));
                    if started.is_ok() {
                        self.sync_routes().await;
                        self.publish_offer(true);
                    }
                    Some(Input::TunnelStarted(started))
                }
                Action::StopTunnel => {
                    self.stop_dataplane();
                    self.publish_offer(false);
                    None
                }
                Action::Leave {
                    left,
                    revoke,
                    reply,
                } => {
                    let r = self.leave(left, revoke).await;
                    let _ = reply.send(r);
                    None
                }
                Action::StartNetcheck => {
                    self.start_netcheck(None);
                    None
                }
                Action::HomeRelay(code) => {
                    self.publish_home_relay(code);
                    None
                }
            };
            if let Some(input) = back {
                todo.extend(self.machine.handle(Instant::now(), input));
            }
        }
    }

    async fn run(&mut self, mut cmds: mpsc::Receiver<Command>) -> Result<()> {
        if let Some(why) = self.machine.tun_error() {
            tracing::warn!("the tunnel stays down: {why}");
        }
        self.publish();
        let mut report = tokio::time::interval(Duration::from_secs(1));
        let mut shutdown = std::pin::pin!(shutdown_signal());
        let mut received = Receiver::default();
        loop {
            self.flush().await;
            let deadline = tokio::time::Instant::from_std(self.next_deadline());
            tokio::select! {
                biased;
                signal = &mut shutdown => {
                    tracing::info!("{signal}: shutting down");
                    self.revert_os_dns();
                    if let Some(pm) = self.port_mapping.stop() {
                        // The gateway's mapping is deleted before the daemon goes (briefly:
                        // a gateway that does not answer is not waited for).
                        let _ = tokio::time::timeout(Duration::from_secs(3), pm).await;
                    }
                    return Ok(());
                }
                Some(c) = cmds.recv() => {
                    // A status refresh rebuilt it already; anything else may change it.
                    let refresh = matches!(c.op, Op::Status | Op::Subscribe);
                    self.command(c).await;
                    if !refresh {
                        self.publish();
                    }
                }
                r = packets::recv_tun(&mut self.dataplane) => {
                    match r {
                        Ok(n) => self.tun_packets(n),
                        Err(e) => {
                            let msg = format!("reading the TUN device failed: {e}");
                            tracing::error!("{msg}");
                            self.feed(Input::TunnelFailed(msg)).await;
                            self.publish();
                        }
                    }
                }
                r = self.socket.readable() => {
                    if let Err(e) = r {
                        tracing::debug!("UDP receive: {e}");
                    }
                    self.udp_readable(&mut received);
                }
                Some(msg) = self.mapped.recv() => self.control_message(msg).await,
                e = sign_in_event(&mut self.signing_in) => self.sign_in_event(e).await,
                Some(r) = self.extra.recv() => {
                    if !stun::is_stun(&r.data) {
                        self.engine.handle_network_on(Instant::now(), r.socket, r.from, &r.data);
                    }
                }
                Some(inc) = self.relays.recv() => {
                    self.relay_event(inc);
                    // Drain what else arrived without another turn of the loop.
                    for _ in 1..BATCH {
                        match self.relays.try_recv() {
                            Some(inc) => self.relay_event(inc),
                            None => break,
                        }
                    }
                }
                Some(prepared) = self.probes.recv() => self.probes.handle_prepared(Instant::now(), prepared),
                _ = self.names.upstream_readable() => self.names.read_upstream(),
                Some(()) = self.network.recv() => self.network_moved().await,
                _ = report.tick() => {
                    // A router gone, a better one measured: the routes follow.
                    self.sync_routes().await;
                    self.publish();
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            self.after_wake().await;
        }
    }

    /// The earliest moment something is due: the engine's timers, a ping's timeout, STUN
    /// probes, the machine's own schedule.
    fn next_deadline(&self) -> Instant {
        let mut deadline = self.engine.poll_timeout();
        if let Some(d) = self.pinger.next_deadline() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.probes.poll_timeout() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.names.poll_timeout() {
            deadline = deadline.min(d);
        }
        if let Some(d) = self.machine.next_wake() {
            deadline = deadline.min(d);
        }
        deadline
    }

    /// What is due after any wake-up: the engine's timers, STUN probes, the machine's tick,
    /// pings that timed out.
    async fn after_wake(&mut self) {
        let now = Instant::now();
        self.engine.handle_timeout(now);
        self.names.handle_timeout(now);
        self.netcheck_timeout(now).await;
        let relay_regions = self
            .mapped
            .relay_map()
            .is_some_and(|m| !m.regions.is_empty());
        self.feed(Input::Tick { relay_regions }).await;
        for p in self.pinger.expire(now) {
            let why = self
                .engine
                .peer(&p.peer)
                .map(|e| operations::no_reply_why(&e.path, e.last_handshake.is_some()))
                .unwrap_or_else(|| "the peer left".into());
            let _ = p.waiter.send(Err(failure(
                "ping-timeout",
                format!("no reply from {} ({}) ({why})", p.name, p.address),
            )));
        }
    }
}

/// The packet filter rules in `path` (`--filter`).
fn filter_file(path: &std::path::Path) -> Result<Vec<pinhole_proto::filter::FilterRule>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let rules: Vec<pinhole_proto::filter::FilterRule> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a list of filter rules", path.display()))?;
    tracing::info!(
        rules = rules.len(),
        "packet filter set from {}",
        path.display()
    );
    Ok(rules)
}

enum SignInEvent {
    Prompt(LoginPrompt),
    Done(Result<SignedIn>),
}

/// A prompt to show or the end of the sign-in in progress; never resolves without one.
async fn sign_in_event(s: &mut Option<SigningIn>) -> SignInEvent {
    let Some(s) = s else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(p) = s.prompts.recv() => SignInEvent::Prompt(p),
        r = &mut s.task => SignInEvent::Done(match r {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the sign-in stopped: {e}")),
        }),
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
    #[cfg(windows)]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = crate::platform::win_service::stop_requested() => "the service control manager's stop",
        }
    }
}
