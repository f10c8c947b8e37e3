//! Birthday probing: the side behind a random-port NAT opens many extra sockets and pings the
//! peer from each; the peer probes random ports of its address until one mapping lets it in;
//! the socket that was hit carries the path while it is used.

use super::*;

impl Discovery {
    /// Whether this node's NAT maps every destination to a random port (its own STUN
    /// endpoints say so): the side that opens birthday sockets.
    pub fn set_own_random(&mut self, random: bool) {
        self.own_random = random;
    }

    /// The extra sockets this peer's discovery holds (birthday sockets open or kept).
    pub fn sockets(&self) -> Vec<SocketId> {
        let mut ids: Vec<SocketId> = self.kept_sockets.iter().map(|(k, _)| *k).collect();
        if let Some(Birthday::Open { sockets, .. }) = &self.birthday {
            for s in sockets {
                if !ids.contains(s) {
                    ids.push(*s);
                }
            }
        }
        ids
    }

    /// A ping arrived on birthday socket `socket`: it is in use.
    pub(super) fn socket_used(&mut self, socket: SocketId, now: Instant) {
        if let Some(Birthday::Open { hit, .. }) = &mut self.birthday {
            if !hit.contains(&socket) {
                hit.push(socket);
            }
        }
        if let Some(k) = self.kept_sockets.iter_mut().find(|(k, _)| *k == socket) {
            k.1 = now;
        }
    }

    /// The local socket the path in use leaves from.
    pub fn best_socket(&self) -> SocketId {
        self.best
            .and_then(|b| self.path(b))
            .map_or(MAIN_SOCKET, |p| p.socket)
    }

    /// The peer's single STUN endpoint, when its NAT maps endpoint-independently (every STUN
    /// server saw the same address): what birthday sockets ping.
    pub(super) fn easy_peer_endpoint(&self) -> Option<SocketAddr> {
        let mut stun = self
            .paths
            .iter()
            .filter(|p| p.published && p.endpoint.kind == EndpointKind::Stun)
            .map(|p| p.endpoint.addr)
            .filter(SocketAddr::is_ipv4);
        let first = stun.next()?;
        stun.all(|a| a == first).then_some(first)
    }

    /// An authentic packet from the peer came through a relay (a WireGuard packet, a call).
    pub fn heard_via_relay(&mut self, now: Instant) {
        self.heard_via_relay = Some(now);
    }

    /// After a round found nothing: asks for birthday sockets when this side's NAT uses
    /// random ports and the peer's does not (and none were asked for lately), once the peer
    /// is known to be at the relay (its window would pass unused otherwise: the lab's lossy
    /// runs asked a peer that reached the relay up to 2.3 s later).
    pub(super) fn maybe_birthday(&mut self, now: Instant) -> Vec<Send> {
        let recent = self
            .last_birthday
            .is_some_and(|t| now.saturating_duration_since(t) < BIRTHDAY_GAP);
        // Plain punching gets its chance first: the peer's endpoint pinged for a while.
        let tried = self
            .easy_peer_endpoint()
            .and_then(|e| self.path(e))
            .and_then(|p| p.first_ping)
            .is_some_and(|t| now.saturating_duration_since(t) >= BIRTHDAY_AFTER);
        let at_relay = self
            .heard_via_relay
            .is_some_and(|t| now.saturating_duration_since(t) < AT_RELAY_FOR);
        if !self.own_random
            || recent
            || self.birthday.is_some()
            || !self.active(now)
            || !tried
            || !at_relay
        {
            return Vec::new();
        }
        self.last_birthday = Some(now);
        self.birthday_rounds += 1;
        self.birthday = Some(Birthday::Asked { at: now });
        vec![Send::OpenSockets(BIRTHDAY_SOCKETS)]
    }

    /// The shell opened the birthday sockets asked for: each pings the peer's endpoint, and
    /// the peer is told to probe. Sockets nobody asked for are handed back.
    pub fn sockets_opened(&mut self, now: Instant, ids: Vec<SocketId>) -> Vec<Send> {
        let target = self.easy_peer_endpoint();
        match (&self.birthday, target) {
            (Some(Birthday::Asked { .. }), Some(target)) if !ids.is_empty() => {
                self.birthday = Some(Birthday::Open {
                    started: now,
                    target,
                    sockets: ids,
                    step: 0,
                    calls: 0,
                    hit: Vec::new(),
                });
                self.birthday_step(now)
            }
            _ => vec![Send::CloseSockets(ids)],
        }
    }

    /// The peer opened birthday mappings on `ip` toward this node: random ports there are
    /// probed for a while. Only an address the peer published (a STUN endpoint of its own) is
    /// probed, and not while a direct path works or a probe ran lately.
    ///
    /// An address the map does not list yet is kept for [`BIRTHDAY_ASK_KEPT`] and probed if
    /// the map lists it by then (see [`Discovery::set_candidates`]).
    pub fn birthday_called(&mut self, now: Instant, ip: IpAddr) -> Vec<Send> {
        if !self.published_stun_ip(ip) {
            self.birthday_asked = Some((ip, now));
            return Vec::new();
        }
        if self.start_probing(now, ip) {
            self.birthday_step(now)
        } else {
            Vec::new()
        }
    }

    /// Whether `ip` is the address of one of the peer's published STUN endpoints.
    pub(super) fn published_stun_ip(&self, ip: IpAddr) -> bool {
        self.paths.iter().any(|p| {
            p.published && p.endpoint.kind == EndpointKind::Stun && p.endpoint.addr.ip() == ip
        })
    }

    /// Starts probing random ports of `ip` (its batches go out from [`Discovery::poll`]),
    /// unless a direct path works or a probe ran lately.
    pub(super) fn start_probing(&mut self, now: Instant, ip: IpAddr) -> bool {
        let recent = self
            .probing
            .is_some_and(|p| now.saturating_duration_since(p.started) < BIRTHDAY_GAP);
        if recent || self.trusted_best(now).is_some() {
            return false;
        }
        self.birthday_asked = None;
        self.probing = Some(Probing {
            ip,
            started: now,
            batches: 0,
            done: false,
        });
        self.active_until = Some(now + ACTIVE_FOR);
        true
    }

    /// What birthday probing has due: the open sockets' pings, the next batch of random
    /// probes, closing sockets no longer needed.
    pub(super) fn birthday_step(&mut self, now: Instant) -> Vec<Send> {
        let mut out = Vec::new();
        let found = self.trusted_best(now).is_some();
        if let Some(mut p) = self.probing.filter(|p| !p.done) {
            let since = now.saturating_duration_since(p.started);
            let due = PROBE_EVERY * p.batches;
            if found || since >= PROBE_FOR {
                p.done = true;
                self.probing = Some(p);
            } else if since >= due {
                p.batches = (since.as_millis() / PROBE_EVERY.as_millis()) as u32 + 1;
                self.probing = Some(p);
                let count = if p.batches == 1 {
                    PROBE_FIRST
                } else {
                    PROBE_BATCH
                };
                out.push(Send::ProbeRandom { ip: p.ip, count });
            }
        }
        match self.birthday.clone() {
            Some(Birthday::Asked { at })
                if now.saturating_duration_since(at) >= BIRTHDAY_ASK_WAIT =>
            {
                self.birthday = None;
            }
            Some(Birthday::Open {
                started,
                target,
                sockets,
                mut step,
                mut calls,
                hit,
            }) => {
                let since = now.saturating_duration_since(started);
                if since >= BIRTHDAY_FOR || found {
                    // Keep the sockets the peer's probes reached (its path may be any of them)
                    // and the one a path found leaves from; hand the rest back.
                    let mut keep = hit;
                    let best = self.best_socket();
                    if found && best != MAIN_SOCKET && !keep.contains(&best) {
                        keep.push(best);
                    }
                    for k in &keep {
                        if !self.kept_sockets.iter().any(|(s, _)| s == k) {
                            self.kept_sockets.push((*k, now));
                        }
                    }
                    let close: Vec<SocketId> =
                        sockets.into_iter().filter(|s| !keep.contains(s)).collect();
                    self.paths
                        .retain(|p| p.socket == MAIN_SOCKET || keep.contains(&p.socket));
                    self.birthday = None;
                    if !close.is_empty() {
                        out.push(Send::CloseSockets(close));
                    }
                } else {
                    let mut ping = false;
                    while BIRTHDAY_PINGS_AT.get(step).is_some_and(|at| *at <= since) {
                        step += 1;
                        ping = true;
                    }
                    if ping {
                        out.extend(sockets.iter().map(|s| Send::PingFrom(*s, target)));
                    }
                    // The mappings are open (the pings above left first): ask the peer to
                    // probe, and again until one of its probes arrives.
                    if hit.is_empty()
                        && since < BIRTHDAY_CALL_FOR
                        && since >= BIRTHDAY_CALL_EVERY * calls
                    {
                        calls = (since.as_millis() / BIRTHDAY_CALL_EVERY.as_millis()) as u32 + 1;
                        let n = sockets.len().min(usize::from(u16::MAX)) as u16;
                        out.push(Send::Birthday { sockets: n });
                    }
                    self.birthday = Some(Birthday::Open {
                        started,
                        target,
                        sockets,
                        step,
                        calls,
                        hit,
                    });
                }
            }
            _ => {}
        }
        // Kept sockets stay while used: a trusted path leaves from one, or pings arrive on it.
        let mut close = Vec::new();
        let paths = &self.paths;
        self.kept_sockets.retain_mut(|(k, used)| {
            if paths.iter().any(|p| p.socket == *k && p.trusted(now)) {
                *used = now;
            }
            let keep = now.saturating_duration_since(*used) < BIRTHDAY_KEEP;
            if !keep {
                close.push(*k);
            }
            keep
        });
        if !close.is_empty() {
            self.paths.retain(|p| !close.contains(&p.socket));
            if self.best.is_some_and(|b| self.path(b).is_none()) {
                self.best = None;
            }
            out.push(Send::CloseSockets(close));
        }
        out
    }

    /// When birthday probing has something due, after `now`.
    pub(super) fn birthday_wake(&self, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        };
        if let Some(p) = self.probing.filter(|p| !p.done) {
            consider((p.started + PROBE_EVERY * p.batches).min(p.started + PROBE_FOR));
        }
        match &self.birthday {
            Some(Birthday::Asked { at }) => consider(*at + BIRTHDAY_ASK_WAIT),
            Some(Birthday::Open {
                started,
                step,
                calls,
                hit,
                ..
            }) => {
                if let Some(d) = BIRTHDAY_PINGS_AT.get(*step) {
                    consider(*started + *d);
                }
                let call = BIRTHDAY_CALL_EVERY * *calls;
                if hit.is_empty() && call < BIRTHDAY_CALL_FOR {
                    consider(*started + call);
                }
                consider(*started + BIRTHDAY_FOR);
            }
            None => {}
        }
        for (_, used) in &self.kept_sockets {
            consider(*used + BIRTHDAY_KEEP);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_util::*;

    #[test]
    fn birthday_probing_is_asked_only_where_it_applies_and_probes_only_published_addresses() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let easy = [
            ep("10.0.0.2:41641", EndpointKind::Local),
            ep("198.51.100.7:41641", EndpointKind::Stun),
        ];
        // The random-port side: once the peer's endpoint went 0.25 s unanswered, sockets are
        // asked, but only once the peer has been heard through the relay (the ask goes there).
        let mut d = Discovery::new();
        d.set_own_random(true);
        d.set_candidates(t0, &easy);
        let mut n = 0;
        let first = d.note_traffic(t0).unwrap();
        send(&mut d, t0, &first, &mut n);
        assert!(!d
            .poll(t0 + BIRTHDAY_AFTER)
            .iter()
            .any(|s| matches!(s, Send::OpenSockets(_))));
        d.heard_via_relay(t0 + BIRTHDAY_AFTER + ms(50));
        let asked = d.poll(t0 + BIRTHDAY_AFTER + ms(100));
        assert!(
            asked.contains(&Send::OpenSockets(BIRTHDAY_SOCKETS)),
            "{asked:?}"
        );
        let opened = d.sockets_opened(t0 + BIRTHDAY_AFTER + ms(100), vec![1, 2, 3]);
        assert!(opened.contains(&Send::Birthday { sockets: 3 }));
        assert!(opened.contains(&Send::PingFrom(2, easy[1].addr)));
        // Sockets nobody asked for go back.
        assert_eq!(
            Discovery::new().sockets_opened(t0, vec![7]),
            vec![Send::CloseSockets(vec![7])]
        );
        // The window ends: sockets no probe reached are closed.
        let end = d.poll(t0 + BIRTHDAY_AFTER + ms(100) + BIRTHDAY_FOR);
        assert!(end.contains(&Send::CloseSockets(vec![1, 2, 3])), "{end:?}");

        // Not when this side's NAT keeps its port, nor toward a peer with random ports.
        let mut keeps = Discovery::new();
        keeps.set_candidates(t0, &easy);
        keeps.heard_via_relay(t0);
        let first = keeps.note_traffic(t0).unwrap();
        send(&mut keeps, t0, &first, &mut n);
        assert!(!keeps
            .poll(t0 + BIRTHDAY_AFTER)
            .iter()
            .any(|s| matches!(s, Send::OpenSockets(_))));
        let mut hard_peer = Discovery::new();
        hard_peer.set_own_random(true);
        hard_peer.heard_via_relay(t0);
        hard_peer.set_candidates(
            t0,
            &[
                ep("198.51.100.7:20000", EndpointKind::Stun),
                ep("198.51.100.7:51000", EndpointKind::Stun),
            ],
        );
        let first = hard_peer.note_traffic(t0).unwrap();
        send(&mut hard_peer, t0, &first, &mut n);
        assert!(!hard_peer
            .poll(t0 + BIRTHDAY_AFTER)
            .iter()
            .any(|s| matches!(s, Send::OpenSockets(_))));

        // The other side probes random ports of an address the peer published, in batches,
        // and of no other address (a peer cannot aim this node's probes elsewhere).
        let mut cone = Discovery::new();
        cone.set_candidates(t0, &[ep("203.0.113.9:20001", EndpointKind::Stun)]);
        assert!(cone
            .birthday_called(t0, "192.0.2.50".parse().unwrap())
            .is_empty());
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(
            cone.birthday_called(t0, ip),
            vec![Send::ProbeRandom {
                ip,
                count: PROBE_FIRST
            }]
        );
        assert!(
            cone.birthday_called(t0 + ms(10), ip).is_empty(),
            "once per gap"
        );
        let mut batches = 1;
        let mut t = t0;
        while t < t0 + PROBE_FOR + ms(500) {
            t += ms(50);
            batches += cone
                .poll(t)
                .iter()
                .filter(|s| matches!(s, Send::ProbeRandom { .. }))
                .count();
        }
        assert_eq!(
            batches,
            (PROBE_FOR.as_millis() / PROBE_EVERY.as_millis()) as usize
        );
    }

    /// The ask goes through the relay, where the peer may not be yet, and the peer refuses an
    /// address its map does not list yet (the lab's lossy runs missed both ways): it is sent
    /// again every 0.5 s until a probe arrives, the last at 2 s into the window, so that
    /// probes started by the last one still end while the sockets are open.
    #[test]
    fn the_birthday_ask_is_repeated_until_a_probe_arrives() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let easy = [ep("198.51.100.7:41641", EndpointKind::Stun)];
        let asks = |s: &[Send]| {
            s.iter()
                .filter(|s| matches!(s, Send::Birthday { .. }))
                .count()
        };
        let open = |d: &mut Discovery, n: &mut u8| {
            d.set_own_random(true);
            d.heard_via_relay(t0);
            d.set_candidates(t0, &easy);
            let first = d.note_traffic(t0).unwrap();
            send(d, t0, &first, n);
            assert!(d
                .poll(t0 + BIRTHDAY_AFTER)
                .contains(&Send::OpenSockets(BIRTHDAY_SOCKETS)));
            d.sockets_opened(t0 + BIRTHDAY_AFTER, vec![1, 2, 3])
        };
        let mut n = 0;
        // Nobody answers: asked at 0, 0.5, 1, 1.5 and 2 s into the window, then no more.
        let mut d = Discovery::new();
        let start = t0 + BIRTHDAY_AFTER;
        let first = open(&mut d, &mut n);
        assert_eq!(asks(&first), 1, "{first:?}");
        // The sockets' pings leave before the ask (their mappings must exist first).
        let ask_at = first
            .iter()
            .position(|s| matches!(s, Send::Birthday { .. }));
        let ping_at = first.iter().position(|s| matches!(s, Send::PingFrom(..)));
        assert!(ping_at < ask_at, "{first:?}");
        let mut at = vec![Duration::ZERO];
        let mut t = start;
        while t < start + BIRTHDAY_FOR {
            t = d.next_wake(t).unwrap().min(start + BIRTHDAY_FOR);
            if asks(&d.poll(t)) > 0 {
                at.push(t - start);
            }
        }
        assert_eq!(at, [0, 500, 1000, 1500, 2000].map(ms));

        // A probe arrived on socket 2 at 0.7 s: no ask after that.
        let mut d = Discovery::new();
        open(&mut d, &mut n);
        assert_eq!(asks(&d.poll(start + ms(500))), 1);
        let peer = easy[0].addr;
        d.ping_received_on(start + ms(700), 2, peer);
        let mut t = start + ms(700);
        while t < start + BIRTHDAY_FOR {
            t = d.next_wake(t).unwrap().min(start + BIRTHDAY_FOR);
            assert_eq!(asks(&d.poll(t)), 0, "asked again at {:?}", t - start);
        }

        // The peer's side: an ask for an address its map does not list yet waits; the map
        // that lists it within a second starts the probes (their first batch on the poll the
        // engine makes after new candidates), and a repeated ask changes nothing.
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let hard = [ep("203.0.113.9:20001", EndpointKind::Stun)];
        let mut cone = Discovery::new();
        assert!(cone.birthday_called(t0, ip).is_empty());
        assert!(cone.birthday_called(t0 + ms(500), ip).is_empty());
        assert!(cone.poll(t0 + ms(600)).is_empty(), "nothing to probe yet");
        cone.set_candidates(t0 + ms(1400), &hard);
        assert!(cone.poll(t0 + ms(1400)).contains(&Send::ProbeRandom {
            ip,
            count: PROBE_FIRST
        }));
        assert!(cone.birthday_called(t0 + ms(1500), ip).is_empty());
        // Kept no longer than a second: a map that comes later probes nothing.
        let mut late = Discovery::new();
        assert!(late.birthday_called(t0, ip).is_empty());
        late.set_candidates(t0 + BIRTHDAY_ASK_KEPT, &hard);
        assert!(!late
            .poll(t0 + BIRTHDAY_ASK_KEPT)
            .iter()
            .any(|s| matches!(s, Send::ProbeRandom { .. })));
        // Nor a map that lists another address.
        let mut other = Discovery::new();
        assert!(other
            .birthday_called(t0, "192.0.2.50".parse().unwrap())
            .is_empty());
        other.set_candidates(t0 + ms(100), &hard);
        assert!(!other
            .poll(t0 + ms(100))
            .iter()
            .any(|s| matches!(s, Send::ProbeRandom { .. })));
    }
}
