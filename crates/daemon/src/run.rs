//! The daemon's shell: one loop that reads the TUN device (while the tunnel is up) and the UDP
//! socket, feeds the engine, writes what it returns, wakes the engine's timers, follows the
//! coordination server's map, and stops cleanly on SIGINT/SIGTERM. What to do about up, down,
//! login, logout, sign-ins, sign-outs, the netcheck schedule and the home relay is decided by
//! the state machine in `machine.rs`; this file carries out its actions (tasks, the TUN device,
//! talking to control) and feeds their results back. Peers come from a static file or control.

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
use pinhole_control_client::ControlClient;
use pinhole_dataplane::extra_sockets::ExtraSockets;
use pinhole_dataplane::tun_io::TunIo;
use pinhole_dataplane::udp;
use pinhole_dataplane::udp_batch::{send_runs, BatchSocket, Batcher, Receiver};
use pinhole_engine::{Engine, Event, Key, Netcheck, PeerSettings, PrivateKey, RelayEvent};
use pinhole_portmap as portmap;
use pinhole_proto::ipc::{
    Credential, LoginPrompt, LogoutResult, Nat, Op, PingReply, PortMapCheck, State, Status,
};
use pinhole_proto::stun;
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

/// The tunnel while it is up: the device and the routes added for it.
struct DataPlane {
    tun: TunIo,
    name: String,
    routes: Vec<IpNet>,
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
    /// What the port mapper holds on the gateway (a `portmap` endpoint to publish), and the
    /// port mapper itself while signed in.
    portmapped: watch::Sender<portmap::State>,
    portmapper: Option<PortMapper>,
    /// A port mapper told to stop, still deleting its mapping.
    portmap_stopping: Option<JoinHandle<()>>,
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
    netcheck_tx: mpsc::Sender<(netcheck::Prepared, Option<oneshot::Sender<Answer>>)>,
    netcheck_rx: mpsc::Receiver<(netcheck::Prepared, Option<oneshot::Sender<Answer>>)>,
    /// The STUN probes in flight and who waits for them.
    probing: Option<Probing>,
    /// Connections to relays: the home region, and the regions of peers reached through one.
    relays: Relays,
    /// Extra UDP sockets the engine asked for (birthday probing).
    extra: ExtraSockets,
}

/// The port-mapping task and its command channel.
struct PortMapper {
    commands: mpsc::Sender<portmap::Command>,
    task: JoinHandle<()>,
}

/// A netcheck's STUN probes in flight.
struct Probing {
    netcheck: Netcheck,
    waiters: Vec<(netcheck::Prepared, Option<oneshot::Sender<Answer>>)>,
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
        let ident = rand::random::<u16>();
        let (netcheck_tx, netcheck_rx) = mpsc::channel(4);
        let ca = match &args.control_ca {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        };
        let dialer =
            relay_link::Dialer::new(ca.as_deref(), args.proxy.as_deref(), args.relay_websocket)?;
        let prefs = Prefs::load(&args.state_dir);
        let machine = Machine::new(
            matches!(mode, Mode::Static { .. }),
            prefs.want_up,
            args.control_url.clone(),
            now,
        );
        let mut d = Daemon {
            relays: Relays::new(private.clone(), dialer),
            node_private: private,
            netcheck_tx,
            netcheck_rx,
            probing: None,
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
            portmapped: watch::Sender::new(portmap::State::default()),
            portmapper: None,
            portmap_stopping: None,
            extra: ExtraSockets::new(),
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

    /// The client for `url`: one per server for the daemon's run, so the map stream and the
    /// updates reuse the connections the sign-in opened (on a lossy network every new
    /// connection risks a lost SYN and a second's wait), and learn how fast the server answers.
    fn client(&self, url: &str) -> Result<ControlClient> {
        let mut cached = self
            .control_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.base_url() == url.trim_end_matches('/'))
        {
            return Ok(c.clone());
        }
        let c = ControlClient::new(url, self.control_ca.as_deref())?;
        *cached = Some(c.clone());
        Ok(c)
    }

    fn hostname(&self, asked: Option<String>) -> String {
        asked
            .or_else(|| self.args.hostname.clone())
            .unwrap_or_else(crate::args::os_hostname)
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
                    self.stop_port_mapping();
                    self.link = None;
                    self.mapped.reset(&mut self.engine, None);
                    self.relay_regions.clear();
                    self.reporter.set_self(None);
                    self.reporter.set_home_relay(None);
                    None
                }
                Action::StartTunnel => Some(Input::TunnelStarted(
                    self.start_dataplane().map_err(|e| format!("{e:#}")),
                )),
                Action::StopTunnel => {
                    self.stop_dataplane();
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

    /// Starts the sign-in task; a server that cannot be used fails the sign-in at once.
    fn start_sign_in(
        &mut self,
        server: String,
        start: SignInStart,
    ) -> Option<Input<oneshot::Sender<Answer>>> {
        self.signing_in = None;
        let client = match self.client(&server) {
            Ok(c) => c,
            Err(e) => {
                return Some(Input::SignInDone(Err(failure(
                    "bad-server",
                    format!("{e:#}"),
                ))))
            }
        };
        let how = SignIn {
            hostname: self.hostname(start.hostname),
            how: start.how,
            patient: start.patient,
            interactive_fallback: start.interactive_fallback,
        };
        let (prompt_tx, prompts) = mpsc::channel(4);
        let task = tokio::spawn({
            let dir = self.args.state_dir.clone();
            let (private, disco_key) = (self.node_private.clone(), self.disco_key);
            async move {
                control_link::sign_in(&client, &dir, &private, disco_key, how, prompt_tx).await
            }
        });
        self.signing_in = Some(SigningIn { task, prompts });
        None
    }

    /// Starts following the map stream of a registration.
    fn follow(&mut self, registration: Registration) -> Option<Input<oneshot::Sender<Answer>>> {
        let client = match self.client(&registration.control_url) {
            Ok(c) => c,
            Err(e) => {
                return Some(Input::SignedOut(format!(
                    "the server's address cannot be used: {e:#}"
                )))
            }
        };
        let port = self.local.port();
        let (tx, rx) = mpsc::channel(256);
        let node = control_link::Following {
            client: client.clone(),
            reg: registration.clone(),
            disco_key: self.disco_key,
            port,
        };
        let follower = tokio::spawn(control_link::follow(
            node,
            tx,
            control_link::Discovered {
                reflexive: self.reflexive.subscribe(),
                portmapped: self.portmapped.subscribe(),
                network_changed: self.network_changed.clone(),
            },
        ));
        self.start_port_mapping();
        self.mapped.reset(&mut self.engine, Some(rx));
        self.relay_regions.clear();
        self.reporter.set_home_relay(None);
        self.reporter.set_self(Some(status::self_status(
            registration.name.clone(),
            self.engine.public_key().to_base64(),
            registration
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect(),
            registration.expires_at,
        )));
        self.link = Some(Link { client, follower });
        None
    }

    /// The tunnel's addresses, once known.
    fn addresses(&self) -> Vec<IpNet> {
        match &self.mode {
            Mode::Static { addresses, .. } => addresses.clone(),
            Mode::Control => self
                .machine
                .registration()
                .map(|r| {
                    r.addresses
                        .iter()
                        .filter_map(|a| match a {
                            // The whole overlay is on-link through the device: one route per family.
                            IpAddr::V4(v4) => IpNet::new(IpAddr::V4(*v4), 10).ok(),
                            IpAddr::V6(v6) => IpNet::new(IpAddr::V6(*v6), 48).ok(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// Creates the device and its routes; the error says what went wrong.
    fn start_dataplane(&mut self) -> Result<()> {
        if self.dataplane.is_some() {
            return Ok(());
        }
        let addresses = self.addresses();
        let (mtu, peer_nets) = match &self.mode {
            Mode::Static { mtu, peers, .. } => (
                *mtu,
                peers
                    .iter()
                    .flat_map(|p| p.allowed_ips.iter().copied())
                    .collect(),
            ),
            Mode::Control => (tun_device::DEFAULT_MTU, Vec::new()),
        };
        let device = tun_device::create(&self.args.tun_name, &addresses, mtu)
            .context("the TUN device could not be created")?;
        let name = device.name().unwrap_or_else(|_| self.args.tun_name.clone());
        let mut dp = DataPlane {
            tun: TunIo::new(device, mtu),
            name,
            routes: Vec::new(),
        };
        for net in routes::needed(&addresses, peer_nets) {
            if let Err(e) = routes::add(&dp.name, &net) {
                for added in dp.routes.iter().rev() {
                    routes::remove(&dp.name, added);
                }
                return Err(e).context("the routes could not be added");
            }
            dp.routes.push(net);
        }
        tracing::info!(
            device = %dp.name,
            port = self.local.port(),
            peers = self.engine.peers().len(),
            "pinholed is up"
        );
        self.dataplane = Some(dp);
        Ok(())
    }

    fn stop_dataplane(&mut self) {
        let Some(dp) = self.dataplane.take() else {
            return;
        };
        for net in dp.routes.iter().rev() {
            routes::remove(&dp.name, net);
        }
        let stats = self.engine.stats();
        tracing::info!(
            device = %dp.name,
            rx_invalid = stats.rx_invalid,
            rx_unknown_peer = stats.rx_unknown_peer,
            rx_disallowed_source = stats.rx_disallowed_source,
            tun_no_route = stats.tun_no_route,
            tx_no_endpoint = stats.tx_no_endpoint,
            queue_full = stats.queue_full,
            relay_queue_full = self.relays.dropped,
            "the tunnel is down; dropped packets so far"
        );
    }

    fn headline(&self) -> Headline {
        crate::local_api::headline::headline(&crate::local_api::headline::Facts {
            static_config: matches!(self.mode, Mode::Static { .. }),
            signing_in: self.machine.signing_in(),
            signed_in: self.machine.signed_in(),
            signed_out: self.machine.signed_out(),
            login_error: self.machine.login_error(),
            tunnel_up: self.dataplane.is_some(),
            tun_error: self.machine.tun_error(),
            has_map: self.mapped.has_map,
            unreachable: self.mapped.unreachable.as_deref(),
        })
    }

    /// Relay connections follow what changed; the status is rebuilt while a local API client
    /// is connected (with 10,000 peers a rebuild is several milliseconds of work, every second).
    fn publish(&mut self) {
        self.sync_relays();
        if self.reporter.watched() {
            self.rebuild_status();
        }
    }

    fn rebuild_status(&mut self) {
        let head = self.headline();
        let relay_errors = self.relays.errors();
        self.reporter
            .publish(head, &self.engine, &self.mapped, &relay_errors);
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
            let mut deadline = self.engine.poll_timeout();
            if let Some(d) = self.pinger.next_deadline() {
                deadline = deadline.min(d);
            }
            if let Some(d) = self
                .probing
                .as_ref()
                .and_then(|p| p.netcheck.poll_timeout())
            {
                deadline = deadline.min(d);
            }
            if let Some(d) = self.machine.next_wake() {
                deadline = deadline.min(d);
            }
            let deadline = tokio::time::Instant::from_std(deadline);
            tokio::select! {
                biased;
                signal = &mut shutdown => {
                    tracing::info!("{signal}: shutting down");
                    if let Some(pm) = self.stop_port_mapping() {
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
                r = recv_tun(&mut self.dataplane) => {
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
                    let now = Instant::now();
                    let mut total = 0;
                    while total < BATCH {
                        match self.udp.try_recv(&self.socket, &mut received) {
                            Ok(n) => {
                                total += n.max(1);
                                for (from, d) in received.datagrams() {
                                    self.datagram(now, udp::canonical(from), d);
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!("UDP receive: {e}");
                                break;
                            }
                        }
                    }
                }
                Some(msg) = self.mapped.recv() => {
                    let signed_out = matches!(msg, ControlMsg::SignedOut(_)) || matches!(&msg, ControlMsg::Map(m) if matches!(**m, pinhole_proto::control::MapMessage::Goodbye { .. }));
                    self.mapped.apply(&mut self.engine, msg);
                    if let Some(why) = self.mapped.signed_out.clone().filter(|_| signed_out) {
                        self.feed(Input::SignedOut(why)).await;
                    }
                    let regions: Vec<String> = self
                        .mapped
                        .relay_map()
                        .map(|m| m.regions.iter().map(|r| r.code.clone()).collect())
                        .unwrap_or_default();
                    if regions != self.relay_regions {
                        self.relay_regions = regions.clone();
                        self.feed(Input::RelayRegions(regions)).await;
                    }
                    self.publish();
                }
                e = sign_in_event(&mut self.signing_in) => {
                    let input = match e {
                        SignInEvent::Prompt(p) => Input::SignInPrompt(p),
                        SignInEvent::Done(r) => {
                            // The task is finished: it must not be polled again.
                            self.signing_in = None;
                            Input::SignInDone(r.map(|done| Signed {
                                registration: done.registration,
                                session_token: done.session_token,
                            }).map_err(|e| failure("login-failed", format!("{e:#}"))))
                        }
                    };
                    self.feed(input).await;
                    self.publish();
                }
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
                Some((prepared, reply)) = self.netcheck_rx.recv() => {
                    let now = Instant::now();
                    match &mut self.probing {
                        Some(p) => p.waiters.push((prepared, reply)),
                        None => {
                            let netcheck = Netcheck::new(now, prepared.servers.clone(), rand::random());
                            self.probing = Some(Probing { netcheck, waiters: vec![(prepared, reply)] });
                        }
                    }
                }
                Some(()) = self.network.recv() => {
                    // Another network: measure the NAT again, publish the endpoints again,
                    // and let every active peer's path be checked now.
                    self.feed(Input::NetworkChanged).await;
                    if let Some(pm) = &self.portmapper {
                        let _ = pm.commands.try_send(portmap::Command::Refresh);
                    }
                    self.network_changed.notify_one();
                    self.engine.network_changed(Instant::now());
                }
                _ = report.tick() => self.publish(),
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            self.engine.handle_timeout(now);
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
                    .map(|e| match (&e.path, e.last_handshake) {
                        (pinhole_engine::Path::None, _) => {
                            "no endpoint or relay known for the peer yet".to_string()
                        }
                        (pinhole_engine::Path::Direct(ep), None) => {
                            format!("no handshake with {ep} yet")
                        }
                        (pinhole_engine::Path::Relayed(r), None) => {
                            format!("no handshake through relay {r} yet")
                        }
                        (pinhole_engine::Path::Direct(ep), Some(_)) => format!("path direct {ep}"),
                        (pinhole_engine::Path::Relayed(r), Some(_)) => {
                            format!("path relayed via {r}")
                        }
                    })
                    .unwrap_or_else(|| "the peer left".into());
                let _ = p.waiter.send(Err(failure(
                    "ping-timeout",
                    format!("no reply from {} ({}) ({why})", p.name, p.address),
                )));
            }
        }
    }

    /// Something from a relay connection: a packet for the engine, or a change to show.
    fn relay_event(&mut self, inc: relay_link::Incoming) {
        match inc.event {
            RelayEvent::Packet { from, packet } => {
                self.engine
                    .handle_relay(Instant::now(), &inc.region, from, &packet)
            }
            RelayEvent::PeerGone { key } => {
                tracing::debug!(region = %inc.region, peer = %key.short(), "peer not at the relay")
            }
            RelayEvent::Connected | RelayEvent::Disconnected { .. } => self.publish(),
        }
    }

    /// Relay connections follow the map, the home region and the tunnel: the home relay is
    /// connected while the tunnel is up (peers reach this node there), none while it is down.
    fn sync_relays(&mut self) {
        let base = self.link.as_ref().map(|l| l.client.base_url().to_string());
        self.relays
            .set_map(self.mapped.relay_map(), base.as_deref());
        if self.dataplane.is_none() {
            self.relays.close_all();
            return;
        }
        let home = self.machine.home_relay().map(str::to_string);
        if let Some(home) = &home {
            self.relays.ensure(home);
        }
        for region in
            self.relays
                .close_idle(home.as_deref(), Instant::now(), relay_link::RELAY_IDLE)
        {
            tracing::debug!(%region, "relay connection closed: idle");
        }
    }

    /// A datagram from the network: STUN answers to netcheck, the rest to the engine.
    fn datagram(&mut self, now: Instant, from: std::net::SocketAddr, data: &[u8]) {
        if stun::is_stun(data) {
            if let Some(p) = &mut self.probing {
                p.netcheck.handle_stun(now, from, data);
            }
            return;
        }
        self.engine.handle_network(now, from, data);
    }

    /// Sends due STUN retries; answers everyone waiting once the probes are done.
    async fn netcheck_timeout(&mut self, now: Instant) {
        let Some(p) = &mut self.probing else {
            return;
        };
        p.netcheck.handle_timeout(now);
        if !p.netcheck.is_done(now) {
            // The public addresses are published as soon as every server answered (the
            // hairpin probe's wait must not hold them back).
            if p.netcheck.all_answered() {
                let public = p.netcheck.report().public;
                self.publish_reflexive(&public);
            }
            return;
        }
        let Some(p) = self.probing.take() else {
            return;
        };
        let found = p.netcheck.report();
        self.reporter.set_nat(Nat {
            mapping_varies_by_dest: found.mapping_varies_by_dest,
            udp: found.udp,
        });
        self.publish_reflexive(&found.public);
        if let Some(map) = self.mapped.relay_map() {
            let regions = map.regions.iter().map(|r| r.code.clone()).collect();
            let latencies = best_latencies(&found);
            self.feed(Input::NetcheckDone { latencies, regions }).await;
        }
        self.publish();
        for (prepared, reply) in p.waiters {
            if let Some(reply) = reply {
                let report = netcheck::report(&prepared, &found);
                let _ = reply.send(Ok(serde_json::to_value(&report).unwrap_or_default()));
            }
        }
    }

    /// This node's addresses as STUN servers saw them, for the map-stream task to publish:
    /// only when they changed (a netcheck without answers keeps the last ones).
    fn publish_reflexive(&self, public: &[SocketAddr]) {
        if public.is_empty() {
            return;
        }
        self.reflexive.send_if_modified(|seen| {
            let changed = seen.as_slice() != public;
            if changed {
                *seen = public.to_vec();
            }
            changed
        });
    }

    fn tun_packets(&mut self, n: usize) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        let now = Instant::now();
        for i in 0..n {
            self.engine.handle_tun(now, dp.tun.packet(i));
        }
        let mut total = n;
        while total < BATCH {
            match dp.tun.try_recv_batch() {
                Ok(n) => {
                    for i in 0..n {
                        self.engine.handle_tun(now, dp.tun.packet(i));
                    }
                    total += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("TUN read: {e}");
                    break;
                }
            }
        }
    }

    async fn command(&mut self, c: Command) {
        let Command { op, reply } = c;
        match op {
            Op::Up { credential } => self.feed(Input::Up { credential, reply }).await,
            Op::Down => {
                self.feed(Input::Down { reply }).await;
                tracing::info!("the tunnel is down; `pinhole up` brings it back");
            }
            Op::Login {
                server,
                auth_key,
                credential,
                hostname,
            } => {
                let input = Input::Login {
                    server,
                    auth_key,
                    credential,
                    hostname,
                    reply,
                };
                self.feed(input).await
            }
            Op::Logout { credential } => self.feed(Input::Logout { credential, reply }).await,
            Op::Ping { peer, timeout_ms } => self.ping(&peer, timeout_ms, reply),
            Op::Netcheck => self.start_netcheck(Some(reply)),
            // The local API answers these itself; it asks first for a status up to date.
            Op::Status | Op::Subscribe => {
                self.rebuild_status();
                let _ = reply.send(Ok(serde_json::Value::Null));
            }
            Op::Logs { .. } => {
                let _ = reply.send(Err(failure(
                    "bad-request",
                    "logs are answered by the local API itself",
                )));
            }
        }
    }

    /// Gathers what a netcheck needs off the loop, then probes from the loop; `reply` is the
    /// client waiting for the report (none for the daemon's own periodic check).
    fn start_netcheck(&mut self, reply: Option<oneshot::Sender<Answer>>) {
        let input = netcheck::Input {
            port: self.local.port(),
            skip: self
                .machine
                .registration()
                .map(|r| r.addresses.clone())
                .unwrap_or_default(),
            client: self
                .link
                .as_ref()
                .map(|l| l.client.clone())
                .or_else(|| self.machine.last_server().and_then(|u| self.client(u).ok())),
            relay_map: self.mapped.relay_map().cloned(),
            port_mapping: self.port_mapping_check(),
        };
        let back = self.netcheck_tx.clone();
        tokio::spawn(async move {
            let prepared = netcheck::prepare(input).await;
            let _ = back.send((prepared, reply)).await;
        });
    }

    /// Starts the port mapper (unless turned off), which maps this node's UDP port on the
    /// gateway while the node is signed in.
    fn start_port_mapping(&mut self) {
        if self.args.no_port_mapping || self.portmapper.is_some() {
            return;
        }
        let (commands, rx) = mpsc::channel(4);
        // A mapper still deleting its mapping finishes first (it would delete the new one).
        let stopping = self.portmap_stopping.take();
        let (port, state) = (self.local.port(), self.portmapped.clone());
        let task = tokio::spawn(async move {
            if let Some(old) = stopping {
                let _ = old.await;
            }
            portmap::run(port, portmap::default_gateway, state, rx).await
        });
        self.portmapper = Some(PortMapper { commands, task });
    }

    /// Tells the port mapper to delete its mapping and end; its task, to wait for.
    fn stop_port_mapping(&mut self) -> Option<&mut JoinHandle<()>> {
        let pm = self.portmapper.take()?;
        let _ = pm.commands.try_send(portmap::Command::Stop);
        self.portmap_stopping = Some(pm.task);
        self.portmap_stopping.as_mut()
    }

    /// The port mapper's state as netcheck reports it.
    fn port_mapping_check(&self) -> PortMapCheck {
        if self.args.no_port_mapping {
            return PortMapCheck {
                error: Some("turned off (--no-port-mapping)".into()),
                ..Default::default()
            };
        }
        if self.portmapper.is_none() {
            return PortMapCheck {
                error: Some("not tried: not signed in".into()),
                ..Default::default()
            };
        }
        let state = self.portmapped.borrow();
        match &state.mapped {
            Some(m) => PortMapCheck {
                protocol: Some(m.protocol.to_string()),
                external: Some(m.external.to_string()),
                gateway: Some(m.gateway.to_string()),
                error: None,
            },
            None => PortMapCheck {
                error: Some(
                    state
                        .error
                        .clone()
                        .unwrap_or_else(|| "still asking the gateway".into()),
                ),
                ..Default::default()
            },
        }
    }

    /// Tells control this node's new home relay (peers reach it there) and shows it.
    fn publish_home_relay(&mut self, code: String) {
        tracing::info!(region = %code, "home relay chosen");
        self.reporter.set_home_relay(Some(code.clone()));
        let (Some(l), Some(r)) = (&self.link, self.machine.registration()) else {
            return;
        };
        let (client, token) = (l.client.clone(), r.node_token.clone());
        tokio::spawn(async move {
            let upd = pinhole_proto::control::NodeUpdate {
                endpoints: None,
                home_relay: Some(code),
                disco_key: None,
            };
            if let Err(e) = client.update(&token, &upd).await {
                tracing::warn!("publishing the home relay: {e}");
            }
        });
    }

    /// Logout's part with the outside world: forget the registration, take a new node key
    /// (the next sign-in is a new node), tell control that `left` left and revoke `revoke`,
    /// each bounded in time; the answer says what could not be done.
    async fn leave(&mut self, left: Option<Registration>, revoke: Option<Credential>) -> Answer {
        identity::forget_registration(&self.args.state_dir);
        match identity::new_node_key(&self.args.state_dir) {
            Ok(k) => {
                self.engine = Engine::new(&k, Instant::now());
                self.engine.set_disco_key(self.disco_private.clone());
                self.relays.set_key(k.clone());
                self.node_private = k;
            }
            Err(e) => tracing::warn!("keeping the node key: {e:#}"),
        }
        let mut warnings = Vec::new();
        if let Some(r) = &left {
            let told = match self.client(&r.control_url) {
                Ok(client) => bounded(client.delete_self(&r.node_token)).await,
                Err(e) => Err(format!("{e:#}")),
            };
            match told {
                Ok(()) => tracing::info!("logged out: the node left the network"),
                Err(e) => warnings.push(format!("the coordination server was not told: {e}")),
            }
        }
        if let Some(c) = revoke {
            let revoked = match self.client(&c.server) {
                Ok(client) => bounded(client.logout(&c.session_token)).await,
                Err(e) => Err(format!("{e:#}")),
            };
            match revoked {
                Ok(()) => tracing::info!("the session was revoked"),
                Err(e) => warnings.push(format!("the session could not be revoked: {e}")),
            }
        }
        let result = LogoutResult {
            warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
        };
        Ok(serde_json::to_value(&result).unwrap_or_default())
    }

    fn ping(&mut self, what: &str, timeout_ms: Option<u64>, reply: oneshot::Sender<Answer>) {
        if self.dataplane.is_none() {
            let _ = reply.send(Err(failure(
                "not-up",
                "the tunnel is down: run `pinhole up` first",
            )));
            return;
        }
        let (key, name, addresses) = match self.mapped.find(what) {
            Some(n) => (n.node_key, n.name.clone(), n.addresses.clone()),
            None => match self.static_peer(what) {
                Some(found) => found,
                None => {
                    let _ = reply.send(Err(failure(
                        "no-such-peer",
                        format!("no peer called {what:?}: `pinhole status` lists them"),
                    )));
                    return;
                }
            },
        };
        let src = self.addresses().iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            _ => None,
        });
        let dst = addresses.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        });
        let (Some(src), Some(dst)) = (src, dst) else {
            let _ = reply.send(Err(failure(
                "no-ipv4",
                format!("{name} or this node has no IPv4 overlay address to ping"),
            )));
            return;
        };
        let timeout = timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(PING_TIMEOUT)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        let now = Instant::now();
        let target = Target {
            peer: key,
            name,
            src,
            dst,
        };
        let packet = self.pinger.request(now, target, timeout, reply);
        self.engine.handle_tun(now, &packet);
    }

    /// A static-mode peer by node key or address.
    fn static_peer(&self, what: &str) -> Option<(Key, String, Vec<IpAddr>)> {
        let Mode::Static { peers, .. } = &self.mode else {
            return None;
        };
        peers
            .iter()
            .find(|p| {
                p.public_key.to_base64().starts_with(what)
                    || p.allowed_ips.iter().any(|n| n.addr().to_string() == what)
            })
            .map(|p| {
                (
                    p.public_key,
                    p.public_key.short(),
                    p.allowed_ips.iter().map(|n| n.addr()).collect(),
                )
            })
    }

    /// Writes everything the engine produced: datagrams to the socket, packets to the TUN
    /// device (ping replies to whoever asked).
    async fn flush(&mut self) {
        while let Some(r) = self.engine.poll_socket_request() {
            match r {
                pinhole_engine::SocketRequest::Open { for_peer, count } => {
                    let ids = self.extra.open(count);
                    tracing::debug!(peer = %for_peer.short(), opened = ids.len(), open = self.extra.len(), "birthday sockets");
                    self.engine.sockets_opened(Instant::now(), &for_peer, ids);
                }
                pinhole_engine::SocketRequest::Close { ids } => self.extra.close(&ids),
            }
        }
        let max_segments = self.udp.max_segments();
        while let Some(t) = self.engine.poll_transmit() {
            if t.socket == pinhole_engine::MAIN_SOCKET {
                let dst = udp::to_socket_family(&self.local, t.dst);
                self.outgoing.push(dst, &t.payload, max_segments);
            } else {
                self.extra.send(t.socket, t.dst, &t.payload).await;
            }
        }
        if !self.outgoing.is_empty() {
            let (udp, socket) = (&self.udp, &self.socket);
            let sent = send_runs(&self.outgoing, |dst, bytes, segment| {
                udp.send(socket, dst, bytes, segment)
            })
            .await;
            if let Some(e) = sent.first_error {
                // UDP may lose datagrams anyway: WireGuard and disco resend what matters.
                tracing::debug!(failed_runs = sent.failed, "UDP send: {e}");
            }
            self.outgoing.clear();
        }
        while let Some(t) = self.engine.poll_relay_transmit() {
            if self.dataplane.is_some() {
                self.relays.send(t);
            }
        }
        if let Some(p) = &mut self.probing {
            while let Some(t) = p.netcheck.poll_transmit() {
                send(&self.socket, &self.local, t).await;
            }
        }
        let now = Instant::now();
        while let Some(p) = self.engine.poll_tun() {
            if let Some((pending, rtt)) = self.pinger.take_reply(now, &p) {
                let path = self
                    .engine
                    .peer(&pending.peer)
                    .map_or(pinhole_engine::Path::None, |e| e.path);
                self.reporter
                    .set_rtt(pending.peer, rtt.as_secs_f64() * 1000.0);
                let (connection, endpoint, relay) = crate::local_api::status::path_fields(&path);
                let r = PingReply {
                    peer: pending.name.clone(),
                    address: pending.address.to_string(),
                    rtt_ms: rtt.as_secs_f64() * 1000.0,
                    connection,
                    endpoint,
                    relay,
                };
                let _ = pending
                    .waiter
                    .send(Ok(serde_json::to_value(&r).unwrap_or_default()));
                continue;
            }
            if let Some(dp) = &mut self.dataplane {
                dp.tun.queue(&p);
            }
        }
        if let Some(dp) = &mut self.dataplane {
            if let Err(e) = dp.tun.flush().await {
                tracing::debug!("TUN write: {e}");
            }
        }
        let mut changed = false;
        let mut direct_lost = false;
        while let Some(e) = self.engine.poll_event() {
            changed = true;
            match e {
                Event::DirectLost { peer } => {
                    tracing::info!(peer = %peer.short(), "direct path lost: relayed while a new one is sought; asking STUN for this node's address again");
                    direct_lost = true;
                }
                Event::HandshakeCompleted { peer } => {
                    tracing::info!(peer = %peer.short(), "handshake completed")
                }
                Event::EndpointChanged { peer, endpoint } => {
                    tracing::info!(peer = %peer.short(), %endpoint, "peer endpoint changed")
                }
            }
        }
        // A new handshake or endpoint shows in the status at once, not at the next tick.
        if changed {
            self.publish();
        }
        if direct_lost {
            self.feed(Input::DirectLost).await;
        }
    }
}

/// Sends one datagram from the node's socket (a failure is only logged: UDP may lose it anyway).
async fn send(socket: &UdpSocket, local: &SocketAddr, t: pinhole_engine::Transmit) {
    let dst = udp::to_socket_family(local, t.dst);
    if let Err(e) = socket.send_to(&t.payload, dst).await {
        tracing::debug!("UDP send to {}: {e}", t.dst);
    }
}

/// A call to control on logout, bounded to 10 s: Ok also when control no longer knows the
/// node or session (nothing left to undo), else what went wrong.
async fn bounded(
    call: impl std::future::Future<Output = Result<(), pinhole_control_client::ClientError>>,
) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.is_auth() => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

/// The best latency per relay region that answered a netcheck.
fn best_latencies(found: &pinhole_engine::NetcheckReport) -> Vec<(String, Duration)> {
    let mut latencies: Vec<(String, Duration)> = Vec::new();
    for p in &found.probes {
        let Some(l) = p.latency else { continue };
        match latencies.iter_mut().find(|(r, _)| *r == p.server.region) {
            Some((_, best)) => *best = (*best).min(l),
            None => latencies.push((p.server.region.clone(), l)),
        }
    }
    latencies
}

/// The next batch from the TUN device; never resolves while the tunnel is down.
async fn recv_tun(dp: &mut Option<DataPlane>) -> std::io::Result<usize> {
    match dp {
        Some(dp) => dp.tun.recv_batch().await,
        None => std::future::pending().await,
    }
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
