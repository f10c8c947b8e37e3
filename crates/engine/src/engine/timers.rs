//! The engine's timers: WireGuard's (handshake retry, rekey, keepalive, expiry) on their tick,
//! handshake initiations resent when the path changes, the direct path of plain peers probed
//! while their packets go through a relay, and the handshake rate limit's reset.

use super::*;

impl Engine {
    /// Runs WireGuard's timers if their tick is due, and discovery's if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_disco {
            self.run_discovery(now);
        }
        if now < self.next_tick {
            return;
        }
        self.clock.sync(now);
        self.last_now = now;
        self.reset_rate_limit(now);
        let mut busy = false;
        for peer in self.peers.values_mut() {
            if !peer.needs_timers(now) {
                // Quiet for QUIET_AFTER: the session's keys are gone; so goes its memory (and
                // any initiation still waiting: the next packet starts a handshake afresh).
                if peer.tunn.take().is_some() {
                    peer.pending_init = None;
                    peer.awaiting_confirmation = false;
                }
                continue;
            }
            busy = true;
            let Some(tunn) = peer.tunn.as_deref_mut() else {
                continue;
            };
            match tunn.update_timers(&mut self.buf) {
                TunnResult::WriteToNetwork(out) => {
                    send_to_peer(&mut self.out, &mut self.stats, peer, now, out)
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {}
                TunnResult::Err(e) => tracing::debug!(?e, "timer error"),
                _ => {}
            }
            if peer.check_new_handshake(now) {
                self.events.push_back(Event::HandshakeCompleted {
                    peer: peer.settings.public_key,
                });
            }
            if init_retry_due(peer, now) {
                // A new initiation (a resent copy of the old one would be refused as a replay,
                // and could not make up for a lost response).
                let init = match peer.tunn.as_deref_mut() {
                    Some(t) => t.format_handshake_initiation(&mut self.buf, true),
                    None => TunnResult::Done,
                };
                if let TunnResult::WriteToNetwork(init) = init {
                    self.stats.tx_init_resent += 1;
                    peer.init_resent_at = Some(now);
                    send_to_peer(&mut self.out, &mut self.stats, peer, now, init);
                }
            }
            if probe_due(peer, now) {
                probe(&mut self.out, &mut self.stats, peer, now, &mut self.buf);
            }
        }
        self.next_tick = now + if busy { TIMER_TICK } else { IDLE_DEADLINE };
    }

    /// WireGuard's handshake rate limit counts per second; its count is reset lazily (an idle
    /// engine has no tick to do it on).
    pub(super) fn reset_rate_limit(&mut self, now: Instant) {
        if now >= self.next_rate_reset {
            self.rate_limiter.reset_count();
            self.next_rate_reset = now + Duration::from_secs(1);
        }
    }
}

fn init_retry_due(peer: &Peer, now: Instant) -> bool {
    let (Some((at, _)), Some(first)) = (&peer.pending_init, peer.init_first_at) else {
        return false;
    };
    let last = peer.init_resent_at.map_or(*at, |r| r.max(*at));
    peer.disco.is_some()
        && now.saturating_duration_since(last) >= INIT_RETRY_EVERY
        && now.saturating_duration_since(first) < INIT_RETRY_FOR
}

/// Sends the handshake initiation still waiting for an answer again, on the peer's path now.
pub(super) fn resend_pending_init(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    now: Instant,
) {
    let Some((at, init)) = peer.pending_init.take() else {
        return;
    };
    if now.saturating_duration_since(at) >= INIT_RESEND_WITHIN {
        return;
    }
    stats.tx_init_resent += 1;
    peer.init_resent_at = Some(now);
    send_to_peer(out, stats, peer, now, &init);
    // Keep the original time: it expires when WireGuard's own retry comes.
    if let Some((_, bytes)) = peer.pending_init.take() {
        peer.pending_init = Some((at, bytes));
    }
}

/// Whether the direct path of `peer` needs a probe now: while relayed (every [`PROBE_EVERY`]),
/// or when a trusted direct path has been quiet (a heartbeat); only for peers in use.
fn probe_due(peer: &Peer, now: Instant) -> bool {
    if peer.endpoint.is_none() || peer.relay.is_none() || peer.disco.is_some() {
        return false;
    }
    let active = peer
        .active_at
        .is_some_and(|t| now.saturating_duration_since(t) < PROBE_WHILE_ACTIVE);
    let session = peer
        .since_handshake()
        .is_some_and(|d| d < Duration::from_secs(170));
    if !active || !session {
        return false;
    }
    let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
    if since(peer.probe_at) < PROBE_EVERY {
        return false;
    }
    match peer.direct(now) {
        None => true,
        Some(_) => since(peer.udp_rx_at) >= HEARTBEAT_AFTER,
    }
}

/// Where UDP to a peer without a confirmed direct path goes: its endpoint and every other
/// candidate (at most [`MAX_CANDIDATES`]); each send opens the way through this side's NAT,
/// and whichever answers becomes the endpoint.
pub(super) fn unproven(peer: &Peer) -> Vec<SocketAddr> {
    let mut v: Vec<SocketAddr> = peer.endpoint.into_iter().collect();
    for c in &peer.settings.candidates {
        if v.len() >= MAX_CANDIDATES {
            break;
        }
        if !v.contains(&c.addr) {
            v.push(c.addr);
        }
    }
    v
}

/// A WireGuard keepalive over UDP to the peer's endpoint, and while no direct path works to
/// every candidate (only with a session: without one, boringtun would start a handshake).
pub(super) fn probe(
    out: &mut Outbox,
    stats: &mut EngineStats,
    peer: &mut Peer,
    now: Instant,
    buf: &mut [u8],
) {
    if peer.since_handshake().is_none() {
        return;
    }
    let targets = match peer.direct(now) {
        Some(ep) => vec![ep],
        None => unproven(peer),
    };
    if targets.is_empty() {
        return;
    }
    let Some(tunn) = peer.tunn.as_deref_mut() else {
        return;
    };
    if let TunnResult::WriteToNetwork(bytes) = tunn.encapsulate(&[], buf) {
        stats.tx_probes += 1;
        peer.probe_at = Some(now);
        peer.udp_tx_at = Some(now);
        for ep in targets {
            push_udp(out, stats, ep, bytes);
        }
    }
}
