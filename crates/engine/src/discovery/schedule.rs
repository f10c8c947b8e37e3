//! The punching schedule: a round's burst of pings (dense at first, then slower until
//! [`ROUND_FOR`]), the call-me-maybe that makes the peer ping at the same time, the pings sent
//! and awaited, and the heartbeats that keep the path in use proven.

use super::*;

impl Discovery {
    pub(super) fn start_round(&mut self, now: Instant, call: bool) -> Vec<Send> {
        self.round = Some(Round {
            started: now,
            step: 0,
        });
        self.next_round = None;
        let mut out = Vec::new();
        if call {
            self.calls_sent += 1;
            out.push(Send::CallMeMaybe);
        }
        out.extend(self.round_step(now));
        out
    }

    /// Sends the round's due steps; ends the round when it is over.
    pub(super) fn round_step(&mut self, now: Instant) -> Vec<Send> {
        let Some(mut r) = self.round else {
            return Vec::new();
        };
        let elapsed = now.saturating_duration_since(r.started);
        let found = self.trusted_best(now).is_some();
        if (found && elapsed >= ROUND_AT_LEAST) || (r.step >= BURST.len() && elapsed >= ROUND_FOR) {
            self.round = None;
            if !found {
                let wait = BACKOFF[self.failed_rounds.min(BACKOFF.len() - 1)];
                self.failed_rounds += 1;
                self.next_round = Some(now + wait);
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        if !found && elapsed >= BIRTHDAY_AFTER {
            out.extend(self.maybe_birthday(now));
        }
        if BURST.get(r.step).is_none_or(|at| *at > elapsed) {
            return out;
        }
        // Skip steps that are already past (a late wake-up sends one step, not several).
        while r.step < BURST.len() && BURST[r.step] <= elapsed {
            r.step += 1;
        }
        self.round = Some(r);
        out.extend(
            self.paths
                .iter()
                .filter(|p| !p.trusted(now))
                .map(PathInfo::ping),
        );
        if !found {
            out.extend(
                self.predicted
                    .iter()
                    .filter(|a| self.path(**a).is_none())
                    .map(|a| Send::Ping(*a)),
            );
        }
        out
    }

    /// Records a ping sent from the main socket (with the id the engine chose).
    #[cfg(test)]
    pub fn ping_sent(&mut self, now: Instant, to: SocketAddr, tx: TxId) {
        self.ping_sent_on(now, MAIN_SOCKET, to, tx)
    }

    /// Records a ping sent from `socket`.
    pub fn ping_sent_on(&mut self, now: Instant, socket: SocketId, to: SocketAddr, tx: TxId) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(Pending {
            tx,
            socket,
            to,
            at: now,
        });
        self.pings_sent += 1;
        self.last_ping = Some(now);
        if let Some(p) = self.path_mut(to) {
            p.first_ping.get_or_insert(now);
            p.last_ping = Some(now);
            p.pings += 1;
        }
    }

    pub(super) fn heartbeat_due(&self, now: Instant, addr: SocketAddr) -> bool {
        let Some(p) = self.path(addr) else {
            return false;
        };
        let since =
            |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let late = since(p.last_pong) >= HEARTBEAT + HEARTBEAT_LATE;
        since(p.last_ping) >= if late { HEARTBEAT_LATE } else { HEARTBEAT }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_util::*;

    #[test]
    fn traffic_starts_a_round_that_calls_and_pings_every_candidate_in_a_burst() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let lan = ep("10.0.0.2:41641", EndpointKind::Local);
        let wan = ep("198.51.100.7:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[lan, wan]);
        assert!(d.poll(t0).is_empty(), "no traffic, no pings");
        assert_eq!(d.next_wake(t0), None, "an idle peer has no timer");
        let s = d.note_traffic(t0).unwrap_or_default();
        assert_eq!(s[0], Send::CallMeMaybe);
        assert_eq!(pings(&s), [lan.addr, wan.addr]);
        let mut n = 0;
        send(&mut d, t0, &s, &mut n);
        let mut sent_at = vec![Duration::ZERO];
        let mut now = t0;
        while let Some(w) = d.next_wake(now) {
            if w > t0 + ROUND_FOR {
                break;
            }
            now = w;
            let s = d.poll(now);
            if !send(&mut d, now, &s, &mut n).is_empty() {
                sent_at.push(now - t0);
            }
        }
        assert_eq!(
            now - t0,
            ROUND_FOR,
            "the round ends a second after its last ping"
        );
        assert_eq!(sent_at, BURST.to_vec(), "one ping per step, none answered");
        assert_eq!(
            d.reason(now),
            Some(PathReason::NoAnswer { pings: 28 }),
            "{:?}",
            d
        );
        // Backoff: the next round is 5 s later, and a quiet peer has no timer.
        assert_eq!(d.next_wake(now), Some(now + BACKOFF[0]));
        let s = d.poll(now + BACKOFF[0]);
        assert_eq!(
            s.first(),
            Some(&Send::CallMeMaybe),
            "tried again while traffic waits"
        );
        // Once the traffic has stopped for ACTIVE_FOR, nothing more is tried.
        let mut now = now + BACKOFF[0];
        while let Some(w) = d.next_wake(now) {
            now = w;
            d.poll(now);
            assert!(now < t0 + ACTIVE_FOR, "woke at {:?}", now - t0);
        }
    }

    #[test]
    fn a_pong_makes_the_path_direct_and_heartbeats_keep_it_then_loss_falls_back_within_trust() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let wan = ep("198.51.100.7:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[wan]);
        let mut n = 0;
        let s = d.note_traffic(t0).unwrap_or_default();
        let ids = send(&mut d, t0, &s, &mut n);
        let rtt = Duration::from_millis(40);
        assert_eq!(
            d.pong(t0 + rtt, wan.addr, ids[0].1, OBS.parse().unwrap()),
            Some(wan.addr)
        );
        assert_eq!(d.trusted_best(t0 + rtt), Some(wan.addr));
        assert_eq!(d.best_info(), Some((EndpointKind::Stun, Some(rtt))));
        assert_eq!(d.observed_self(), Some(OBS.parse().unwrap()));
        assert_eq!(
            d.note_traffic(t0 + rtt),
            None,
            "a packet on a working path moves no timer"
        );
        // Keep the traffic going and answer every ping: the path stays for a minute.
        let mut now = t0 + rtt;
        let end = t0 + Duration::from_secs(60);
        while now < end {
            now = d.next_wake(now).unwrap().min(end);
            let _ = d.note_traffic(now);
            let s = d.poll(now);
            for (a, tx) in send(&mut d, now, &s, &mut n) {
                d.pong(now + rtt, a, tx, OBS.parse().unwrap());
            }
            assert_eq!(d.trusted_best(now), Some(wan.addr), "at {:?}", now - t0);
        }
        // Now nothing answers: the path is left within TRUST of the last pong.
        let last_pong = now + rtt;
        loop {
            now = d.next_wake(now).unwrap();
            let _ = d.note_traffic(now);
            let s = d.poll(now);
            send(&mut d, now, &s, &mut n);
            if d.trusted_best(now).is_none() {
                break;
            }
        }
        assert!(now - last_pong <= TRUST, "{:?}", now - last_pong);
        assert_eq!(d.reason(now), Some(PathReason::Lost));
        assert!(d.round.is_some(), "a new round starts at once");
    }

    #[test]
    fn a_network_change_pings_the_path_at_once_and_retries_a_waiting_peer() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        let wan = ep("198.51.100.7:2000", EndpointKind::Stun);
        d.set_candidates(t0, &[wan]);
        assert!(
            d.network_changed(t0).is_empty(),
            "no traffic: nothing to do"
        );
        let mut n = 0;
        let s = d.note_traffic(t0).unwrap_or_default();
        let ids = send(&mut d, t0, &s, &mut n);
        d.pong(t0, wan.addr, ids[0].1, OBS.parse().unwrap());
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(
            d.network_changed(t1),
            [Send::Ping(wan.addr)],
            "not 2 s later"
        );
        // No path and a round that failed, backing off: the change tries again now.
        let mut e = Discovery::new();
        e.set_candidates(t0, &[wan]);
        let _ = e.note_traffic(t0);
        let mut now = t0;
        while e.round.is_some() {
            now = e.next_wake(now).unwrap();
            let s = e.poll(now);
            send(&mut e, now, &s, &mut n);
        }
        let s = e.network_changed(now + Duration::from_secs(1));
        assert_eq!(s.first(), Some(&Send::CallMeMaybe), "{s:?}");
    }
}
