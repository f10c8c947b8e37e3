//! WireGuard's side of the engine: packets from the TUN device sealed for their peer, datagrams
//! from the network or a relay opened (rate limit, session lookup, roaming), and where what
//! comes out goes (UDP, a relay, the TUN device).

use super::*;

impl Engine {
    /// An IP packet read from the TUN device.
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8]) {
        let Some(dst) = ip::destination(packet) else {
            self.stats.tun_invalid += 1;
            return;
        };
        let Some(&idx) = self.routes.lookup(dst) else {
            self.stats.tun_no_route += 1;
            return;
        };
        self.clock.sync(now);
        self.last_now = now;
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        peer.active_at = Some(now);
        peer.touched_at = Some(now);
        self.next_tick = self.next_tick.min(now + TIMER_TICK);
        let own = self.disco.as_mut();
        if let Some(wake) = traffic(&mut self.out, &mut self.stats, own, &self.public, peer, now) {
            self.next_disco = self.next_disco.min(wake);
        }
        if let Some(f) = &mut self.filter {
            f.outbound(packet, now);
        }
        let tunn = session(&self.private, &self.rate_limiter, peer);
        match tunn.encapsulate(packet, &mut self.buf) {
            TunnResult::WriteToNetwork(out) => {
                peer.tx_bytes += packet.len() as u64;
                peer.tx_packets += 1;
                send_to_peer(&mut self.out, &mut self.stats, peer, now, out);
            }
            TunnResult::Err(e) => tracing::debug!(?e, "encapsulate failed"),
            _ => {}
        }
    }

    /// A UDP datagram received from `from` on the main socket.
    pub fn handle_network(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_network_on(now, MAIN_SOCKET, from, datagram)
    }

    /// A UDP datagram received from `from` on `socket`.
    pub fn handle_network_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        if disco::is_disco(datagram) {
            self.handle_disco(now, Via::Udp(socket, from), datagram);
        } else {
            self.handle_wire(now, Via::Udp(socket, from), datagram);
        }
    }

    /// A packet the node with key `from` sent through the relay of `region`.
    pub fn handle_relay(&mut self, now: Instant, region: &Arc<str>, from: Key, packet: &[u8]) {
        self.stats.rx_relayed += 1;
        if disco::is_disco(packet) {
            self.handle_disco(now, Via::Relay { region, from }, packet);
        } else {
            self.handle_wire(now, Via::Relay { region, from }, packet);
        }
    }

    /// WireGuard's checks before a datagram reaches a session: the handshake rate limit (a
    /// cookie reply under load), then the session index it is for, or the peer whose static key
    /// an initiation carries; a peer that exists, is the relay's sender, and has a session
    /// unless this starts one. None when it goes no further (counted).
    fn session_of(
        &mut self,
        via: Via<'_>,
        src_ip: Option<IpAddr>,
        datagram: &[u8],
    ) -> Option<(u32, bool, bool)> {
        let mut cookie = [0u8; 64];
        let packet = match self
            .rate_limiter
            .verify_packet(src_ip, datagram, &mut cookie)
        {
            Ok(p) => p,
            Err(TunnResult::WriteToNetwork(reply)) => {
                // Under load: answer with a cookie instead of doing the handshake's work.
                if let Via::Udp(socket, from) = via {
                    push_udp_on(&mut self.out, &mut self.stats, socket, from, reply);
                }
                return None;
            }
            Err(_) => {
                self.stats.rx_invalid += 1;
                return None;
            }
        };
        let idx = match &packet {
            Packet::HandshakeInit(init) => {
                match parse_handshake_anon(&self.private, &self.public, init) {
                    Ok(half) => match self.by_key.get(&Key(half.peer_static_public)) {
                        Some(&idx) => idx,
                        None => {
                            self.stats.rx_unknown_peer += 1;
                            return None;
                        }
                    },
                    Err(_) => {
                        self.stats.rx_invalid += 1;
                        return None;
                    }
                }
            }
            Packet::HandshakeResponse(p) => p.receiver_idx >> 8,
            Packet::PacketCookieReply(p) => p.receiver_idx >> 8,
            Packet::PacketData(p) => p.receiver_idx >> 8,
        };
        let is_data = matches!(packet, Packet::PacketData(_));
        let is_init = matches!(packet, Packet::HandshakeInit(_));
        let Some(peer) = self.peers.get(&idx) else {
            self.stats.rx_unknown_peer += 1;
            return None;
        };
        if let Via::Relay { from, .. } = via {
            if from != peer.settings.public_key {
                // The relay vouches for the sender's key: a packet for another peer's session
                // is not the sender's to send.
                self.stats.rx_invalid += 1;
                return None;
            }
        }
        if peer.tunn.is_none() && !is_init {
            // No session here: nothing but an initiation can be for this peer.
            self.stats.rx_invalid += 1;
            return None;
        }
        Some((idx, is_data, is_init))
    }

    pub(super) fn handle_wire(&mut self, now: Instant, via: Via<'_>, datagram: &[u8]) {
        self.clock.sync(now);
        self.last_now = now;
        self.reset_rate_limit(now);
        let src_ip = match via {
            Via::Udp(_, from) => Some(from.ip()),
            Via::Relay { .. } => None,
        };
        let Some((idx, is_data, is_init)) = self.session_of(via, src_ip, datagram) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        // Replies go back the way the packet came.
        let reply_via =
            |out: &mut Outbox, stats: &mut EngineStats, peer: &Peer, bytes: &[u8]| match via {
                Via::Udp(socket, from) => push_udp_on(out, stats, socket, from, bytes),
                Via::Relay { region, from } => {
                    let region = peer.relay.as_ref().unwrap_or(region).clone();
                    push_relay(out, stats, region, from, bytes);
                }
            };
        let tunn = session(&self.private, &self.rate_limiter, peer);
        let (out, src): (&[u8], Option<IpAddr>) =
            match tunn.decapsulate(src_ip, datagram, &mut self.buf) {
                TunnResult::WriteToTunnelV4(out, src) => (out, Some(src.into())),
                TunnResult::WriteToTunnelV6(out, src) => (out, Some(src.into())),
                TunnResult::Done => (&[], None),
                TunnResult::WriteToNetwork(out) => {
                    reply_via(&mut self.out, &mut self.stats, peer, out);
                    // Packets queued while the handshake was in flight go out now, once this
                    // side completed it (a response). Not after answering an initiation: the
                    // responder's session is not usable until the initiator's first packet, so
                    // boringtun would start a handshake of its own for them, and two peers
                    // with traffic answering each other's initiations that way kept starting
                    // new ones and evicting every session they made (a handshake storm: no
                    // packet got through for 15 s, 1 run in 12 over a slow lossy relay).
                    peer.awaiting_confirmation |= is_init;
                    if !is_init {
                        while let TunnResult::WriteToNetwork(out) = peer.next_queued(&mut self.buf)
                        {
                            reply_via(&mut self.out, &mut self.stats, peer, out);
                        }
                    }
                    if let Via::Udp(..) = via {
                        peer.udp_tx_at = Some(now);
                    }
                    (&[], None)
                }
                TunnResult::Err(WireGuardError::UnderLoad) => return,
                TunnResult::Err(
                    WireGuardError::DuplicateCounter
                    | WireGuardError::WrongTai64nTimestamp
                    | WireGuardError::UnexpectedPacket,
                ) if peer.relay.is_some() => {
                    // The second copy of a handshake sent both ways (over UDP and the relay), or
                    // the answer to it: expected, not an attack.
                    return;
                }
                TunnResult::Err(e) => {
                    tracing::trace!(?e, ?via, "dropped datagram");
                    self.stats.rx_invalid += 1;
                    return;
                }
            };
        // Authentic: the peer's timers run again (a handshake answered, a session renewed).
        peer.touched_at = Some(now);
        if let Via::Relay { region, .. } = via {
            peer.relay_seen(region);
            if let Some(d) = &mut peer.disco {
                d.state.heard_via_relay(now);
            }
        }
        self.next_tick = self.next_tick.min(now + TIMER_TICK);
        if let Some(src) = src.filter(|_| !out.is_empty()) {
            peer.active_at = Some(now);
            let own = self.disco.as_mut();
            if let Some(wake) =
                traffic(&mut self.out, &mut self.stats, own, &self.public, peer, now)
            {
                self.next_disco = self.next_disco.min(wake);
            }
            let filter = self.filter.as_mut().map(|f| (f, now));
            deliver(
                &self.routes,
                (idx, peer),
                src,
                out,
                filter,
                &mut self.tun_out,
                &mut self.stats,
            );
        }
        if let (Via::Udp(socket, from), None) = (via, &peer.disco) {
            if let Some(event) = roam(
                &mut self.out,
                &mut self.stats,
                peer,
                (socket, from),
                now,
                &mut self.buf,
            ) {
                self.events.push_back(event);
            }
        }
        if is_data && peer.awaiting_confirmation {
            // The initiator's first packet confirms a responder's session: what was queued
            // during the handshake goes now (checked only then, not on every packet).
            peer.awaiting_confirmation = false;
            send_queued(&mut self.out, &mut self.stats, peer, now, &mut self.buf);
        }
        if (!is_data || peer.handshakes == 0) && peer.check_new_handshake(now) {
            self.events.push_back(Event::HandshakeCompleted {
                peer: peer.settings.public_key,
            });
        }
    }
}

/// Sends what WireGuard queued for `peer` while its handshake was in flight.
fn send_queued(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    now: Instant,
    buf: &mut [u8],
) {
    while let TunnResult::WriteToNetwork(bytes) = peer.next_queued(buf) {
        send_to_peer(out, stats, peer, now, bytes);
    }
}

/// Sends a WireGuard message to `peer` on its current path; handshake initiations go over both
/// the relay and UDP while the direct path is not confirmed (whichever arrives first wins; the
/// other copy is a replay the responder ignores).
pub(super) fn send_to_peer(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    now: Instant,
    bytes: &[u8],
) {
    if bytes.first() == Some(&1) {
        peer.pending_init = Some((now, bytes.to_vec()));
        // A new attempt after WireGuard gave up on the last one (90 s) retries quickly again.
        if peer
            .init_first_at
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(90))
        {
            peer.init_first_at = Some(now);
        }
    }
    match peer.path(now) {
        // No relay and nothing confirmed yet: a handshake tries every candidate.
        Path::Direct(_) if bytes.first() == Some(&1) && peer.direct(now).is_none() => {
            peer.udp_tx_at = Some(now);
            for ep in unproven(peer) {
                push_udp(out, stats, ep, bytes);
            }
        }
        Path::Direct(ep) => {
            peer.udp_tx_at = Some(now);
            push_udp_on(out, stats, peer.endpoint_socket, ep, bytes);
        }
        Path::Relayed(region) => {
            if bytes.first() == Some(&1) && peer.disco.is_none() {
                for ep in unproven(peer) {
                    peer.udp_tx_at = Some(now);
                    push_udp(out, stats, ep, bytes);
                }
            }
            push_relay(out, stats, region, peer.settings.public_key, bytes);
        }
        Path::None => stats.tx_no_endpoint += 1,
    }
}

/// Whether a disco peer's unanswered handshake is due a new initiation.
/// WireGuard's roaming for a plain peer: the last authentic source over UDP is where the peer
/// is (disco peers keep the path disco chose until it chooses another). A peer that may not
/// know yet that UDP works back to it (it may be sending through the relay) is told so over
/// UDP. The event when the endpoint changed.
fn roam(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    (socket, from): (SocketId, SocketAddr),
    now: Instant,
    buf: &mut [u8],
) -> Option<Event> {
    peer.endpoint_socket = socket;
    let changed = (peer.endpoint != Some(from)).then(|| {
        peer.endpoint = Some(from);
        Event::EndpointChanged {
            peer: peer.settings.public_key,
            endpoint: from,
        }
    });
    peer.udp_rx_at = Some(now);
    let quiet = peer
        .udp_tx_at
        .is_none_or(|t| now.saturating_duration_since(t) >= ANSWER_GAP);
    if quiet && peer.relay.is_some() {
        probe(out, stats, peer, now, buf);
    }
    changed
}

/// A peer's WireGuard state, made when it is first needed.
/// The peer's WireGuard state, made on first use.
fn session<'p>(
    private: &StaticSecret,
    rate_limiter: &Arc<RateLimiter>,
    peer: &'p mut Peer,
) -> &'p mut Tunn {
    peer.tunn
        .get_or_insert_with(|| new_tunn(private, rate_limiter, &peer.settings, peer.index))
}

pub(super) fn new_tunn(
    private: &StaticSecret,
    rate_limiter: &Arc<RateLimiter>,
    settings: &PeerSettings,
    index: u32,
) -> Box<Tunn> {
    Box::new(Tunn::new(
        private.clone(),
        PublicKey::from(settings.public_key.0),
        settings.preshared_key.map(|k| k.0),
        settings.persistent_keepalive,
        index,
        Some(rate_limiter.clone()),
    ))
}

pub(super) fn push_udp(out: &mut Outbox, stats: &mut EngineStats, dst: SocketAddr, payload: &[u8]) {
    push_udp_on(out, stats, MAIN_SOCKET, dst, payload)
}

pub(super) fn push_udp_on(
    out: &mut Outbox,
    stats: &mut EngineStats,
    socket: SocketId,
    dst: SocketAddr,
    payload: &[u8],
) {
    if out.udp.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    out.udp.push_back(Transmit {
        socket,
        dst,
        payload: payload.to_vec(),
    });
}

pub(super) fn push_relay(
    out: &mut Outbox,
    stats: &mut EngineStats,
    region: Arc<str>,
    peer: Key,
    payload: &[u8],
) {
    if out.relay.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    stats.tx_relayed += 1;
    out.relay.push_back(RelayTransmit {
        region,
        peer,
        payload: payload.to_vec(),
    });
}

/// Hands a decrypted packet to the TUN queue if its source is one of the sender's allowed IPs
/// and the policy's filter (if any) lets it in.
fn deliver(
    routes: &AllowedIps<u32>,
    (idx, peer): (u32, &mut Peer),
    src: IpAddr,
    packet: &[u8],
    filter: Option<(&mut Filter, Instant)>,
    tun_out: &mut VecDeque<Vec<u8>>,
    stats: &mut EngineStats,
) {
    if routes.lookup(src) != Some(&idx) {
        stats.rx_disallowed_source += 1;
        return;
    }
    if let Some((f, now)) = filter {
        if let Err(why) = f.inbound(packet, now) {
            tracing::trace!(?why, peer = %peer.settings.public_key.short(), "packet refused by the policy");
            peer.filtered_packets += 1;
            stats.rx_filtered += 1;
            return;
        }
    }
    if tun_out.len() >= MAX_QUEUE {
        stats.queue_full += 1;
        return;
    }
    peer.rx_bytes += packet.len() as u64;
    peer.rx_packets += 1;
    tun_out.push_back(packet.to_vec());
}
