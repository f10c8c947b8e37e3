//! Path selection: what a pong proves (the address it came from), which trusted path is
//! best (the LAN first, then the lowest RTT, a new one only when clearly better), and why there
//! is no direct path when there is none.

use super::*;

impl Discovery {
    /// The direct path in use, if it answered within [`TRUST`].
    pub fn trusted_best(&self, now: Instant) -> Option<SocketAddr> {
        let best = self.best?;
        self.path(best).filter(|p| p.trusted(now)).map(|_| best)
    }

    /// The last direct path chosen (trusted or not).
    pub fn best(&self) -> Option<SocketAddr> {
        self.best
    }

    pub(super) fn path(&self, addr: SocketAddr) -> Option<&PathInfo> {
        self.paths.iter().find(|p| p.endpoint.addr == addr)
    }

    pub(super) fn path_mut(&mut self, addr: SocketAddr) -> Option<&mut PathInfo> {
        self.paths.iter_mut().find(|p| p.endpoint.addr == addr)
    }

    /// The kind and RTT of the path in use.
    pub fn best_info(&self) -> Option<(EndpointKind, Option<Duration>)> {
        self.best
            .and_then(|b| self.path(b))
            .map(|p| (p.endpoint.kind, p.rtt))
    }

    /// A pong from `from` on the main socket. Returns the new best path if it changed.
    #[cfg(test)]
    pub fn pong(
        &mut self,
        now: Instant,
        from: SocketAddr,
        tx: TxId,
        observed: SocketAddr,
    ) -> Option<SocketAddr> {
        self.pong_on(now, MAIN_SOCKET, from, tx, observed)
    }

    /// A pong from `from` on `socket`. Returns the new best path if it changed.
    pub fn pong_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
        tx: TxId,
        observed: SocketAddr,
    ) -> Option<SocketAddr> {
        let i = self.pending.iter().position(|p| p.tx == tx)?;
        let sent = self.pending[i];
        if sent.socket != socket {
            // Answered to another of this node's sockets: proves nothing about either.
            return None;
        }
        self.pending.remove(i);
        if sent.to != from {
            // Answered from another address than pinged: the peer's NAT sent the answer
            // through the mapping it holds toward this very address (one that maps by
            // destination gives this node its own port once the peer sends to it), and that
            // mapping lets this node in whatever the NAT's filtering. That path is proven, not
            // the one pinged; a path in use whose answers now come from elsewhere gives way to
            // it at once (its heartbeats would never be answered from it again, and it would
            // be dropped, relayed for a moment, when its trust ran out).
            if self.best == Some(sent.to) {
                if let Some(p) = self.path_mut(sent.to) {
                    p.last_pong = None;
                }
            }
        }
        self.pongs_received += 1;
        self.observed_self = Some(observed);
        let rtt = now.saturating_duration_since(sent.at);
        if self.path(from).is_none() {
            // A path added by a ping and since dropped from the list: add it back.
            self.add_path(Endpoint::new(from, EndpointKind::PeerReflexive), false);
        }
        let p = self.path_mut(from)?;
        p.socket = socket;
        p.last_pong = Some(now);
        p.pongs += 1;
        p.rtt = Some(rtt);
        self.lost = false;
        self.failed_rounds = 0;
        self.next_round = None;
        self.choose(now)
    }

    /// Picks the best trusted path: the same LAN over anything else, then IPv6 over IPv4 when
    /// their RTTs are close, then the lowest RTT; the path in use stays unless another is
    /// clearly better. Returns the new best if it changed.
    pub(super) fn choose(&mut self, now: Instant) -> Option<SocketAddr> {
        let score = |p: &PathInfo| -> (u8, f64) {
            let lan = p.endpoint.kind == EndpointKind::Local && is_private(p.endpoint.addr.ip());
            let rtt = p.rtt.unwrap_or(TRUST).as_secs_f64() * 1000.0;
            // IPv6 wins over IPv4 within 10% (no NAT on the way, usually).
            let rtt = if p.endpoint.addr.is_ipv6() {
                rtt * 0.9
            } else {
                rtt
            };
            (u8::from(!lan), rtt)
        };
        let candidate = self
            .paths
            .iter()
            .filter(|p| p.trusted(now))
            .min_by(|a, b| {
                let (sa, sb) = (score(a), score(b));
                sa.0.cmp(&sb.0).then(sa.1.total_cmp(&sb.1))
            })?;
        let new = candidate.endpoint.addr;
        let current = self
            .best
            .and_then(|b| self.path(b))
            .filter(|p| p.trusted(now));
        if let Some(cur) = current {
            if cur.endpoint.addr == new {
                return None;
            }
            let (sc, sn) = (score(cur), score(candidate));
            let clearly_better = sn.0 < sc.0 || (sn.0 == sc.0 && sn.1 < sc.1 * SWITCH_RATIO - 1.0);
            if !clearly_better {
                return None;
            }
        }
        self.best = Some(new);
        Some(new)
    }

    /// Why there is no trusted direct path (none when there is one, or nothing was tried).
    pub fn reason(&self, now: Instant) -> Option<PathReason> {
        if self.trusted_best(now).is_some() {
            return None;
        }
        if self.lost {
            return Some(PathReason::Lost);
        }
        if self.paths.is_empty() {
            return Some(PathReason::NoCandidates);
        }
        if self.pings_sent == 0 {
            return None;
        }
        let just_pinged = self
            .last_ping
            .is_some_and(|t| now.saturating_duration_since(t) < PONG_WAIT);
        // Trying only until the first round fails: the retries after it (backed off) do not
        // hide what the first one showed.
        if self.failed_rounds == 0 && (self.round.is_some() || just_pinged) {
            return Some(PathReason::Trying {
                pings: self.pings_sent,
            });
        }
        if self.pings_received > 0 {
            return Some(PathReason::OneWay {
                pings: self.pings_sent,
                pings_received: self.pings_received,
            });
        }
        Some(PathReason::NoAnswer {
            pings: self.pings_sent,
        })
    }
}

/// Private (RFC 1918, ULA) addresses: a path to one is a path within a LAN.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_util::*;

    /// A pong from another address than pinged proves the address it came from (the peer's
    /// NAT answered through its mapping toward this node), not the one pinged; one with an
    /// unknown id, or to another of this node's sockets, proves nothing. A path in use whose
    /// answers start coming from elsewhere gives way at once (netsim's lossy matrix saw an
    /// address-dependent NAT answer from its STUN port, then, once its side had sent to this
    /// node, from the port it maps toward it: the old path was relayed for a moment when its
    /// trust ran out).
    #[test]
    fn a_pong_from_another_address_proves_that_address_not_the_one_pinged() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let obs: SocketAddr = OBS.parse().unwrap();
        let mut d = Discovery::new();
        let wan = ep("198.51.100.7:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[wan]);
        let mut n = 0;
        let s = d.note_traffic(t0).unwrap_or_default();
        let ids = send(&mut d, t0, &s, &mut n);
        assert_eq!(d.pong(t0, wan.addr, TxId([200; 12]), obs), None);
        assert_eq!(d.pong_on(t0, 7, wan.addr, ids[0].1, obs), None);
        assert_eq!(d.trusted_best(t0), None, "unknown id, other socket");
        // Answered from the pinged address: that path.
        assert_eq!(d.pong(t0 + ms(20), wan.addr, ids[0].1, obs), Some(wan.addr));
        // A heartbeat answered from the port the peer's NAT now maps toward this node.
        let mapped: SocketAddr = "198.51.100.7:2001".parse().unwrap();
        let beat = d.poll(t0 + HEARTBEAT + ms(20));
        let ids = send(&mut d, t0 + HEARTBEAT + ms(20), &beat, &mut n);
        assert_eq!(ids[0].0, wan.addr, "{beat:?}");
        assert_eq!(
            d.pong(t0 + HEARTBEAT + ms(40), mapped, ids[0].1, obs),
            Some(mapped)
        );
        assert_eq!(d.trusted_best(t0 + HEARTBEAT + ms(40)), Some(mapped));
        // No moment without a direct path: the old one is not waited out.
        let mut t = t0 + HEARTBEAT + ms(40);
        while t < t0 + Duration::from_secs(8) {
            t += ms(100);
            let s = d.poll(t);
            for (to, tx) in send(&mut d, t, &s, &mut n) {
                if to == mapped {
                    d.pong(t, mapped, tx, obs);
                }
            }
            assert_eq!(d.trusted_best(t), Some(mapped), "at {:?}", t - t0);
        }
    }

    #[test]
    fn the_lan_wins_and_a_nearly_equal_path_does_not_take_over() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let lan = ep("10.0.0.2:41641", EndpointKind::Local);
        let a = ep("198.51.100.7:2000", EndpointKind::Stun);
        let b = ep("203.0.113.9:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[a, b, lan]);
        let mut n = 0;
        let s = d.note_traffic(t0).unwrap_or_default();
        let ids = send(&mut d, t0, &s, &mut n);
        let obs = OBS.parse().unwrap();
        let tx = |addr: SocketAddr| ids.iter().find(|(x, _)| *x == addr).unwrap().1;
        let ms = Duration::from_millis;
        assert_eq!(d.pong(t0 + ms(20), a.addr, tx(a.addr), obs), Some(a.addr));
        // 18 ms is not clearly better than 20 ms: stay.
        assert_eq!(d.pong(t0 + ms(18), b.addr, tx(b.addr), obs), None);
        // The LAN is better even when slower.
        assert_eq!(
            d.pong(t0 + ms(30), lan.addr, tx(lan.addr), obs),
            Some(lan.addr)
        );
    }
}
