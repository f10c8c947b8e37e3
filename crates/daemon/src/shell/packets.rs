//! The data path: bringing the TUN device and its routes up and down (and the system's
//! resolver pointed at the DNS server inside it while it is up), datagrams and TUN packets
//! into the engine, and each flush of what the engine wants sent or written.

use super::*;

impl Daemon<'_> {
    /// The tunnel's addresses, once known.
    pub(super) fn addresses(&self) -> Vec<IpNet> {
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
    pub(super) fn start_dataplane(&mut self) -> Result<()> {
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
            table: crate::platform::route_table::RouteTable::new(&name),
            name,
            routes: Vec::new(),
            forwarding: None,
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
        self.forwarding_tried.clear();
        self.sync_os_dns();
        Ok(())
    }

    /// Points the system's resolver at the DNS server while the tunnel is up with a map, and
    /// puts it back otherwise. A failure is kept for the status; names by address still work.
    pub(super) fn sync_os_dns(&mut self) {
        if self.dataplane.is_none() || !self.mapped.has_map || !self.prefs.accept_dns {
            self.revert_os_dns();
            return;
        }
        let cfg = crate::platform::os_dns::DnsConfig {
            server: IpAddr::V4(pinhole_dns::SERVER_V4),
            interface: self.dataplane.as_ref().map(|dp| dp.name.clone()),
            suffix: self.names.suffix().to_string(),
        };
        match self.os_dns.apply(&cfg) {
            Ok(()) => self.os_dns_error = None,
            Err(e) => {
                let e = e.to_string();
                if self.os_dns_error.as_ref() != Some(&e) {
                    tracing::warn!("the system's resolver is not pointed at pinholed: {e}");
                }
                self.os_dns_error = Some(e);
            }
        }
    }

    /// Puts the system's resolver back as it was.
    pub(super) fn revert_os_dns(&mut self) {
        if let Err(e) = self.os_dns.revert() {
            tracing::warn!("putting the system's resolver back: {e}");
        }
    }

    pub(super) fn stop_dataplane(&mut self) {
        let Some(dp) = self.dataplane.take() else {
            return;
        };
        self.revert_os_dns();
        let DataPlane {
            name,
            routes,
            mut table,
            forwarding,
            ..
        } = dp;
        if let Some(f) = forwarding {
            f.disable();
        }
        table.clear();
        for net in routes.iter().rev() {
            routes::remove(&name, net);
        }
        let stats = self.engine.stats();
        tracing::info!(
            device = %name,
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

    /// Datagrams waiting on the main socket, a bounded batch of them.
    pub(super) fn udp_readable(&mut self, received: &mut Receiver) {
        let now = Instant::now();
        let mut total = 0;
        while total < BATCH {
            match self.udp.try_recv(&self.socket, received) {
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

    /// A datagram from the network: STUN answers to netcheck, the rest to the engine.
    pub(super) fn datagram(&mut self, now: Instant, from: std::net::SocketAddr, data: &[u8]) {
        if stun::is_stun(data) {
            self.probes.handle_stun(now, from, data);
            return;
        }
        self.engine.handle_network(now, from, data);
    }

    pub(super) fn tun_packets(&mut self, n: usize) {
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        let now = Instant::now();
        for i in 0..n {
            let packet = dp.tun.packet(i);
            if !self.names.handle_tun(now, packet) {
                self.engine.handle_tun(now, packet);
            }
        }
        let mut total = n;
        while total < BATCH {
            match dp.tun.try_recv_batch() {
                Ok(n) => {
                    for i in 0..n {
                        let packet = dp.tun.packet(i);
                        if !self.names.handle_tun(now, packet) {
                            self.engine.handle_tun(now, packet);
                        }
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

    /// Writes everything the engine produced: datagrams to the socket, packets to the TUN
    /// device (ping replies to whoever asked).
    pub(super) async fn flush(&mut self) {
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
        while let Some(t) = self.probes.poll_transmit() {
            send(&self.socket, &self.local, t).await;
        }
        self.names.flush_upstream().await;
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
            // A peer's DNS query to this exit node is answered here, not by the OS.
            if self.names.handle_peer(now, &p) {
                continue;
            }
            if let Some(dp) = &mut self.dataplane {
                dp.tun.queue(&p);
            }
        }
        let mut to_peers = false;
        while let Some((to_peer, p)) = self.names.poll_answer() {
            if to_peer {
                self.engine.handle_tun(now, &p);
                to_peers = true;
            } else if let Some(dp) = &mut self.dataplane {
                dp.tun.queue(&p);
            }
        }
        if let Some(dp) = &mut self.dataplane {
            if let Err(e) = dp.tun.flush().await {
                tracing::debug!("TUN write: {e}");
            }
        }
        // Answers to peers went into the engine: out with them now.
        if to_peers {
            while let Some(t) = self.engine.poll_transmit() {
                send(&self.socket, &self.local, t).await;
            }
            while let Some(t) = self.engine.poll_relay_transmit() {
                self.relays.send(t);
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
pub(super) async fn send(socket: &UdpSocket, local: &SocketAddr, t: pinhole_engine::Transmit) {
    let dst = udp::to_socket_family(local, t.dst);
    if let Err(e) = socket.send_to(&t.payload, dst).await {
        tracing::debug!("UDP send to {}: {e}", t.dst);
    }
}

/// The next batch from the TUN device; never resolves while the tunnel is down.
pub(super) async fn recv_tun(dp: &mut Option<DataPlane>) -> std::io::Result<usize> {
    match dp {
        Some(dp) => dp.tun.recv_batch().await,
        None => std::future::pending().await,
    }
}
