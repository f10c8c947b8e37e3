//! Candidate gathering: the peer's published endpoints (kept while published), the addresses
//! its pings came from (peer-reflexive), what a call-me-maybe brings, and each candidate's
//! record as `pinhole status` shows it.

use super::*;

impl Discovery {
    /// The peer's published endpoints (from the map). Paths learnt from pings are kept.
    pub fn set_candidates(&mut self, now: Instant, endpoints: &[Endpoint]) {
        let mut added = false;
        self.paths.retain(|p| {
            !p.published || endpoints.iter().any(|e| e.addr == p.endpoint.addr) || p.trusted(now)
        });
        for e in endpoints {
            if let Some(p) = self.path_mut(e.addr) {
                p.published = true;
                p.endpoint.kind = e.kind;
            } else if self.paths.len() < MAX_PATHS {
                self.paths.push(PathInfo::new(*e, true));
                added = true;
            }
        }
        self.predicted = predict::predict(endpoints);
        if self
            .best
            .is_some_and(|b| !self.paths.iter().any(|p| p.endpoint.addr == b))
        {
            self.best = None;
        }
        // New places to try while traffic waits: try them now. A round under way starts over
        // (its later steps are a second or more apart: the peer's STUN-seen address, which
        // usually comes with the map a moment after the traffic, would wait for them).
        if added && self.active(now) && self.trusted_best(now).is_none() {
            if self
                .round
                .is_some_and(|r| now.saturating_duration_since(r.started) >= BURST[1])
            {
                self.round = None;
            }
            self.next_round = Some(now);
        }
        // The peer asked to be probed at an address the map did not list yet: now it may.
        if let Some((ip, at)) = self.birthday_asked.take() {
            if now.saturating_duration_since(at) < BIRTHDAY_ASK_KEPT {
                if self.published_stun_ip(ip) {
                    self.start_probing(now, ip);
                } else {
                    self.birthday_asked = Some((ip, at));
                }
            }
        }
    }

    /// This node's address as the peer last saw it.
    pub fn observed_self(&self) -> Option<SocketAddr> {
        self.observed_self
    }

    pub(super) fn add_path(&mut self, e: Endpoint, published: bool) -> bool {
        if self.path(e.addr).is_some() {
            return false;
        }
        if self.paths.len() >= MAX_PATHS {
            // Make room by forgetting the oldest untrusted address learnt from a ping.
            let Some(i) = self
                .paths
                .iter()
                .position(|p| !p.published && p.last_pong.is_none())
            else {
                return false;
            };
            self.paths.remove(i);
        }
        self.paths.push(PathInfo::new(e, published));
        true
    }

    /// A ping from the peer arrived from `from` on the main socket (a pong goes back to it;
    /// the engine sends it). Returns pings to send: the address pinged back when it is not
    /// proven yet.
    #[cfg(test)]
    pub fn ping_received(&mut self, now: Instant, from: SocketAddr) -> Vec<Send> {
        self.ping_received_on(now, MAIN_SOCKET, from)
    }

    /// A ping from the peer arrived from `from` on `socket`. An unproven path follows the
    /// socket the peer's pings reach (a birthday socket that was hit is the way back).
    pub fn ping_received_on(
        &mut self,
        now: Instant,
        socket: SocketId,
        from: SocketAddr,
    ) -> Vec<Send> {
        self.pings_received += 1;
        self.add_path(Endpoint::new(from, EndpointKind::PeerReflexive), false);
        let Some(p) = self.path_mut(from) else {
            return Vec::new();
        };
        if p.socket != socket && !p.trusted(now) {
            p.socket = socket;
        }
        if socket != MAIN_SOCKET {
            self.socket_used(socket, now);
        }
        let Some(p) = self.path(from) else {
            return Vec::new();
        };
        let recent = p
            .last_ping
            .is_some_and(|t| now.saturating_duration_since(t) < PING_BACK_GAP);
        if p.trusted(now) || recent {
            return Vec::new();
        }
        vec![p.ping()]
    }

    /// The peer asks to be pinged at `endpoints` now (it is pinging us).
    pub fn called(&mut self, now: Instant, endpoints: &[Endpoint]) -> Vec<Send> {
        self.calls_received += 1;
        for e in endpoints {
            self.add_path(*e, false);
        }
        let predicted = predict::predict(endpoints);
        if !predicted.is_empty() {
            self.predicted = predicted;
        }
        if self.trusted_best(now).is_some() {
            return Vec::new();
        }
        let recent = self
            .last_called
            .is_some_and(|t| now.saturating_duration_since(t) < CALLED_GAP);
        if recent {
            return Vec::new();
        }
        self.last_called = Some(now);
        // The peer has traffic for us: treat it as ours too (it keeps both sides pinging).
        self.active_until = Some(now + ACTIVE_FOR);
        self.start_round(now, false)
    }

    /// What each candidate has shown.
    pub fn candidates(&self, now: Instant) -> Vec<CandidateStatus> {
        self.paths
            .iter()
            .map(|p| CandidateStatus {
                endpoint: p.endpoint,
                rtt: p.rtt,
                trusted: p.trusted(now),
                pings_sent: p.pings,
                pongs: p.pongs,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_util::*;

    #[test]
    fn candidates_arriving_during_a_round_are_pinged_at_once_and_the_peer_called_again() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let lan = ep("10.0.0.2:41641", EndpointKind::Local);
        let wan = ep("198.51.100.7:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[lan]);
        let mut n = 0;
        let s = d.note_traffic(t0).unwrap_or_default();
        send(&mut d, t0, &s, &mut n);
        let mut now = t0;
        while let Some(w) = d
            .next_wake(now)
            .filter(|w| *w <= t0 + Duration::from_millis(1000))
        {
            now = w;
            let s = d.poll(now);
            send(&mut d, now, &s, &mut n);
        }
        // The STUN-seen address comes with the map 1.0 s in (the round's next step is at 1.2 s).
        let at = t0 + Duration::from_millis(1000);
        d.set_candidates(at, &[lan, wan]);
        // (The engine polls right after new candidates.)
        let s = d.poll(at);
        assert_eq!(s.first(), Some(&Send::CallMeMaybe));
        assert!(pings(&s).contains(&wan.addr), "{s:?}");
        // A fresh burst: the next step 0.1 s later, not at the old round's 1.2 s.
        send(&mut d, at, &s, &mut n);
        assert_eq!(d.next_wake(at), Some(at + BURST[1]));
        // Candidates that change nothing do not start it over.
        d.set_candidates(at + BURST[1], &[lan, wan]);
        assert_eq!(d.next_wake(at), Some(at + BURST[1]));
    }

    #[test]
    fn a_ping_from_an_unknown_address_becomes_a_peer_reflexive_candidate_pinged_back() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let from: SocketAddr = "203.0.113.5:31000".parse().unwrap();
        assert_eq!(d.ping_received(t0, from), [Send::Ping(from)]);
        let c = d.candidates(t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].endpoint.kind, EndpointKind::PeerReflexive);
        let mut n = 0;
        send(&mut d, t0, &[Send::Ping(from)], &mut n);
        assert!(
            d.ping_received(t0, from).is_empty(),
            "not twice within the gap"
        );
        assert_eq!(d.reason(t0), Some(PathReason::Trying { pings: 1 }));
        assert_eq!(
            d.reason(t0 + PONG_WAIT),
            Some(PathReason::OneWay {
                pings: 1,
                pings_received: 2
            }),
            "its pings arrive, ours are not answered"
        );
    }

    #[test]
    fn a_call_starts_pinging_its_endpoints_at_once_but_not_on_every_call() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let e = ep("198.51.100.7:2000", EndpointKind::Stun);
        let s = d.called(t0, &[e]);
        assert_eq!(s, [Send::Ping(e.addr)], "the callee does not call back");
        assert!(d.called(t0 + Duration::from_millis(10), &[e]).is_empty());
        assert!(d.next_wake(t0).is_some(), "the burst continues");
    }
}
