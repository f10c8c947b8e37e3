//! Discovery's side of the engine: disco messages opened and answered (pings, pongs,
//! call-me-maybe, birthday asks), each peer's discovery run when due, and what it asks for
//! sealed and sent (through the relay or from the right socket).

use super::*;

impl Engine {
    /// A disco packet: pings are answered with a pong to their source, pongs prove a path, a
    /// call-me-maybe starts pinging the caller's endpoints.
    pub(super) fn handle_disco(&mut self, now: Instant, via: Via<'_>, packet: &[u8]) {
        self.clock.sync(now);
        self.last_now = now;
        let Some(own) = self.disco.as_mut() else {
            self.stats.rx_invalid += 1;
            return;
        };
        let Some(&idx) = disco::sender(packet).and_then(|k| self.by_disco.get(&k)) else {
            self.stats.rx_unknown_peer += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&idx) else {
            return;
        };
        let before = peer.path(now);
        let Some(d) = &mut peer.disco else {
            return;
        };
        let msg = match d.boxed.open(packet) {
            Ok(m) => m,
            Err(e) => {
                tracing::trace!(%e, ?via, "dropped disco packet");
                self.stats.rx_invalid += 1;
                return;
            }
        };
        self.stats.rx_disco += 1;
        if let Via::Relay { from, .. } = via {
            if from == peer.settings.public_key {
                d.state.heard_via_relay(now);
            }
        }
        let sends = match (msg, via) {
            (Message::Ping { tx, node_key }, Via::Udp(socket, from)) => {
                if node_key != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                if socket != MAIN_SOCKET {
                    tracing::debug!(peer = %node_key.short(), socket, %from, "ping on a birthday socket");
                }
                let pong = seal(own, d, &Message::Pong { tx, observed: from });
                self.stats.tx_disco += 1;
                push_udp_on(&mut self.out, &mut self.stats, socket, from, &pong);
                d.state.ping_received_on(now, socket, from)
            }
            (Message::Pong { tx, observed }, Via::Udp(socket, from)) => {
                if let Some(best) = d.state.pong_on(now, socket, from, tx, observed) {
                    peer.endpoint = Some(best);
                    peer.endpoint_socket = d.state.best_socket();
                    self.events.push_back(Event::EndpointChanged {
                        peer: peer.settings.public_key,
                        endpoint: best,
                    });
                }
                Vec::new()
            }
            (Message::Birthday { ip, .. }, Via::Relay { from, .. }) => {
                if from != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                let sends = d.state.birthday_called(now, ip);
                tracing::debug!(peer = %from.short(), %ip, probing = !sends.is_empty(), "birthday probing asked");
                sends
            }
            (Message::CallMeMaybe { endpoints }, Via::Relay { from, .. }) => {
                if from != peer.settings.public_key {
                    self.stats.rx_invalid += 1;
                    return;
                }
                d.state.called(now, &endpoints)
            }
            // Pings and pongs through a relay prove nothing about UDP; a call over UDP is
            // not how calls come.
            _ => Vec::new(),
        };
        if !sends.is_empty() {
            perform(
                &mut self.out,
                &mut self.stats,
                Some(own),
                &self.public,
                peer,
                sends,
                now,
            );
        }
        if peer.path(now) != before {
            resend_pending_init(&mut self.out, &mut self.stats, peer, now);
        }
        self.next_disco = self.next_disco.min(disco_wake(peer, now));
    }

    /// Runs every disco peer's discovery (pings, heartbeats, fall-backs) and finds the next
    /// time one is due.
    pub(super) fn run_discovery(&mut self, now: Instant) {
        self.clock.sync(now);
        self.last_now = now;
        let mut next = now + IDLE_DEADLINE;
        for peer in self.peers.values_mut() {
            if peer.disco.is_none() {
                continue;
            }
            let before = peer.path(now);
            let Some(d) = &mut peer.disco else {
                continue;
            };
            let sends = d.state.poll(now);
            if !sends.is_empty() {
                perform(
                    &mut self.out,
                    &mut self.stats,
                    self.disco.as_mut(),
                    &self.public,
                    peer,
                    sends,
                    now,
                );
            }
            if let Some(d) = &peer.disco {
                if let (Path::Direct(_), Some(best)) = (&before, d.state.best()) {
                    peer.endpoint_socket = d.state.best_socket();
                    if peer.endpoint != Some(best) {
                        peer.endpoint = Some(best);
                        self.events.push_back(Event::EndpointChanged {
                            peer: peer.settings.public_key,
                            endpoint: best,
                        });
                    }
                }
            }
            let after = peer.path(now);
            // A proven path (a pong came back), not an endpoint tried for want of a relay.
            let direct = peer.direct(now).is_some();
            if peer.was_direct && !direct {
                self.events.push_back(Event::DirectLost {
                    peer: peer.settings.public_key,
                });
            }
            peer.was_direct = direct;
            if after != before {
                resend_pending_init(&mut self.out, &mut self.stats, peer, now);
            }
            next = next.min(disco_wake(peer, now));
        }
        self.next_disco = next;
    }
}

/// Sets up (or updates, or removes) a peer's discovery from its settings: a disco peer when both
/// this node and the peer have disco keys.
pub(super) fn set_discovery(
    out: &mut Outbox,
    own: Option<&OwnDisco>,
    by_disco: &mut HashMap<Key, u32>,
    idx: u32,
    peer: &mut Peer,
    settings: &PeerSettings,
    now: Instant,
) {
    let wanted = own.zip(settings.disco_key);
    match (wanted, &mut peer.disco) {
        (Some((own, key)), Some(d)) => {
            if d.key != key {
                // The peer restarted (a new disco key): a new box, and what its old pings
                // proved still stands until it stops answering.
                by_disco.remove(&d.key);
                d.key = key;
                d.boxed = DiscoBox::new(&own.private, &key);
                by_disco.insert(key, idx);
            }
            d.state.set_candidates(now, &settings.candidates);
        }
        (Some((own, key)), None) => {
            let mut state = Discovery::new();
            state.set_own_random(own.random_ports);
            state.set_candidates(now, &settings.candidates);
            by_disco.insert(key, idx);
            peer.disco = Some(PeerDisco {
                key,
                boxed: DiscoBox::new(&own.private, &key),
                state,
            });
        }
        (None, Some(d)) => {
            by_disco.remove(&d.key);
            close_sockets_of(out, &d.state);
            peer.disco = None;
        }
        (None, None) => {}
    }
}

/// Asks the shell to close the extra sockets a peer's discovery holds (it is going away).
pub(super) fn close_sockets_of(out: &mut Outbox, d: &Discovery) {
    let ids = d.sockets();
    if !ids.is_empty() {
        out.sockets.push_back(SocketRequest::Close { ids });
    }
}

/// Traffic for or from a peer: a disco peer's discovery may start a round (its pings and call
/// go out now); when its timers changed, when it is due next.
pub(super) fn traffic(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: Option<&mut OwnDisco>,
    public: &PublicKey,
    peer: &mut Peer,
    now: Instant,
) -> Option<Instant> {
    let sends = peer.disco.as_mut()?.state.note_traffic(now)?;
    if !sends.is_empty() {
        perform(out, stats, own, public, peer, sends, now);
    }
    Some(disco_wake(peer, now))
}

/// When a peer's discovery is due next (far away when nothing is).
pub(super) fn disco_wake(peer: &Peer, now: Instant) -> Instant {
    peer.disco
        .as_ref()
        .and_then(|d| d.state.next_wake(now))
        .unwrap_or(now + IDLE_DEADLINE)
}

/// A disco ping to `to` from `socket`, recorded with its transaction id.
#[allow(clippy::too_many_arguments)]
fn ping(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: &mut OwnDisco,
    public: &PublicKey,
    d: &mut PeerDisco,
    now: Instant,
    socket: SocketId,
    to: SocketAddr,
) {
    let tx = TxId(own.rng.gen());
    let msg = Message::Ping {
        tx,
        node_key: Key(public.to_bytes()),
    };
    let packet = seal(own, d, &msg);
    d.state.ping_sent_on(now, socket, to, tx);
    stats.tx_disco += 1;
    push_udp_on(out, stats, socket, to, &packet);
}

/// A disco message sealed for the peer with a fresh random nonce.
fn seal(own: &mut OwnDisco, d: &PeerDisco, msg: &Message) -> Vec<u8> {
    let nonce: [u8; 24] = own.rng.gen();
    d.boxed.seal(nonce, msg)
}

/// Sends what a peer's discovery asked for: pings over UDP (recorded with their ids), a
/// call-me-maybe with this node's endpoints through the peer's relay.
pub(super) fn perform(
    out: &mut Outbox,
    stats: &mut EngineStats,
    own: Option<&mut OwnDisco>,
    public: &PublicKey,
    peer: &mut Peer,
    sends: Vec<Send>,
    now: Instant,
) {
    let (Some(own), Some(d)) = (own, &mut peer.disco) else {
        return;
    };
    for s in sends {
        match s {
            Send::Ping(to) => ping(out, stats, own, public, d, now, MAIN_SOCKET, to),
            Send::PingFrom(socket, to) => ping(out, stats, own, public, d, now, socket, to),
            Send::ProbeRandom { ip, count } => {
                tracing::debug!(peer = %peer.settings.public_key.short(), %ip, count, "birthday probes");
                for _ in 0..count {
                    let port: u16 = own.rng.gen_range(1024..=65535);
                    let to = SocketAddr::new(ip, port);
                    ping(out, stats, own, public, d, now, MAIN_SOCKET, to);
                }
            }
            Send::Birthday { sockets } => {
                let Some(region) = peer.relay.clone() else {
                    tracing::debug!(peer = %peer.settings.public_key.short(), "birthday sockets open, but the peer has no relay to ask it through");
                    continue;
                };
                let ip = own
                    .endpoints
                    .iter()
                    .find(|e| e.kind == EndpointKind::Stun && e.addr.is_ipv4())
                    .map(|e| e.addr.ip());
                let Some(ip) = ip else {
                    tracing::debug!(peer = %peer.settings.public_key.short(), "birthday sockets open, but no STUN server has seen this node's IPv4 address");
                    continue;
                };
                tracing::debug!(peer = %peer.settings.public_key.short(), %ip, sockets, "birthday sockets open: asking the peer to probe");
                let packet = seal(own, d, &Message::Birthday { ip, sockets });
                stats.tx_disco += 1;
                push_relay(out, stats, region, peer.settings.public_key, &packet);
            }
            Send::OpenSockets(count) => out.sockets.push_back(SocketRequest::Open {
                for_peer: peer.settings.public_key,
                count,
            }),
            Send::CloseSockets(ids) => out.sockets.push_back(SocketRequest::Close { ids }),
            Send::CallMeMaybe => {
                let Some(region) = peer.relay.clone() else {
                    continue;
                };
                let mut endpoints = own.endpoints.clone();
                if let Some(seen) = d.state.observed_self() {
                    if !endpoints.iter().any(|e| e.addr == seen) {
                        endpoints.push(Endpoint::new(seen, EndpointKind::PeerReflexive));
                    }
                }
                endpoints.truncate(disco::MAX_ENDPOINTS);
                let packet = seal(own, d, &Message::CallMeMaybe { endpoints });
                stats.tx_disco += 1;
                push_relay(out, stats, region, peer.settings.public_key, &packet);
            }
        }
    }
}
