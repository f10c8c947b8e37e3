//! Path discovery for one peer (sans-IO, no crypto): its candidate endpoints, when to send disco
//! pings and call-me-maybes, what pongs prove, which direct path is best, and why there is none.
//!
//! A round starts when the peer gets traffic without a trusted direct path (or the peer calls):
//! a call-me-maybe goes through the relay so the peer pings at the same time, and every
//! candidate is pinged in a burst with short gaps, then more slowly until [`ROUND_FOR`] (a NAT
//! installs its filter late and packets get lost: one ping is not enough). A pong makes its
//! path trusted for [`TRUST`]; while traffic flows, the best path is pinged every
//! [`HEARTBEAT`] (more often once a pong is late), so a dead path is noticed and left within
//! [`TRUST`]. A round that finds nothing is retried with backoff while traffic flows.
//!
//! Port prediction: a peer whose STUN servers saw it on different ports close together sits
//! behind a NAT that maps per destination and allocates ports in sequence; its pings toward
//! this node will leave from the next ports. A round also pings those ([`PREDICT_AHEAD`] of
//! them per step), which opens this side's filter for the port the peer's pings come from.
//!
//! Birthday probing: a node behind a NAT that maps every destination to a random port, facing
//! a peer whose NAT maps endpoint-independently, asks the shell for [`BIRTHDAY_SOCKETS`] extra
//! sockets after a round found nothing, pings the peer's public endpoint from each (each opens a
//! mapping on a random port that lets the peer in), and tells the peer (`Birthday` through the
//! relay, once the peer has been heard there, and again every [`BIRTHDAY_CALL_EVERY`] until a
//! probe arrives: the peer may not yet know the address), which pings random ports of its
//! address ([`PROBE_FIRST`] at once, then [`PROBE_BATCH`] every [`PROBE_EVERY`] for
//! [`PROBE_FOR`]). With 256 mappings open, the first
//! probes hit one with a chance of about 64%, all 1,664 with about 1 − e^(−6.6); the path is
//! then the extra socket that was hit, kept while it is used.
//!
//! This module holds the tuning constants, the state and the entry points the engine calls on
//! every wake-up (`poll`, `next_wake`, traffic, network changes); the parts live beside it:
//! [`candidates`] (gathering), [`schedule`] (rounds and heartbeats), [`predict`] (port
//! prediction), [`birthday`] (birthday probing) and [`select`] (what pongs prove, which path).

mod birthday;
mod candidates;
mod predict;
mod schedule;
mod select;
#[cfg(test)]
mod test_util;

pub(crate) use predict::random_ports;
pub use predict::stun_port_spread;

use crate::transmit::{SocketId, MAIN_SOCKET};
use pinhole_proto::disco::TxId;
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// When, after a round starts, its pings go out: dense at first (a NAT opens its filter only
/// once its own side has sent, so the first pings often die), then every 0.3–0.8 s, so that on
/// a lossy path a lost ping or pong costs a fraction of a second, not seconds.
const BURST: [Duration; 14] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(600),
    Duration::from_millis(900),
    Duration::from_millis(1200),
    Duration::from_millis(1600),
    Duration::from_millis(2000),
    Duration::from_millis(2500),
    Duration::from_millis(3000),
    Duration::from_millis(3500),
    Duration::from_millis(4200),
    Duration::from_millis(5000),
];
/// How long a round lasts: its last ping, then a second for late answers.
pub const ROUND_FOR: Duration = Duration::from_millis(6000);
/// A ping this recent still counts as trying (its pong may be on the way).
const PONG_WAIT: Duration = Duration::from_secs(1);
/// A round that found a path still pings the others this long (a LAN answer may come later).
const ROUND_AT_LEAST: Duration = Duration::from_millis(1000);
/// How long a path stays trusted after its last pong.
pub const TRUST: Duration = Duration::from_secs(5);
/// How often the path in use is pinged while traffic flows.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the path in use is pinged once a pong is late.
const HEARTBEAT_LATE: Duration = Duration::from_millis(500);
/// While a direct path works, the other candidates are pinged this often (a better one may work).
const UPGRADE_EVERY: Duration = Duration::from_secs(30);
/// How long after the last packet a peer counts as active (pinged and kept alive).
pub const ACTIVE_FOR: Duration = Duration::from_secs(45);
/// Waits between rounds that found nothing, while traffic flows.
const BACKOFF: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(30),
];
/// A ping from an unproven address is pinged back at most this often.
const PING_BACK_GAP: Duration = Duration::from_millis(300);
/// A call-me-maybe restarts the burst at most this often.
const CALLED_GAP: Duration = Duration::from_secs(1);
/// Pings waiting for their pong (older ones are forgotten).
const MAX_PENDING: usize = 256;
/// STUN-seen ports of one address at most this far apart mean sequential allocation.
const SEQUENTIAL_SPAN: u16 = 64;
/// How many ports after the highest one seen a round step pings (the prediction's budget:
/// at most this many extra pings per step, nine steps per round).
pub const PREDICT_AHEAD: u16 = 16;
/// Extra sockets (mappings) the side behind a random-port NAT opens for birthday probing.
pub const BIRTHDAY_SOCKETS: u16 = 256;
/// When, after its sockets opened, each pings the peer (the second in case the first was lost).
const BIRTHDAY_PINGS_AT: [Duration; 2] = [Duration::ZERO, Duration::from_millis(2500)];
/// How long birthday sockets stay open: the peer probes for [`PROBE_FOR`], starting at most
/// [`BIRTHDAY_CALL_FOR`] and [`BIRTHDAY_ASK_KEPT`] (and a relay's delay) after they opened.
const BIRTHDAY_FOR: Duration = Duration::from_secs(7);
/// The peer is asked to probe again this often until its first probe arrives, for this long
/// (so that probes it starts on the last call still end while the sockets are open): the ask
/// goes through the relay, where the peer may not be yet, and the peer refuses an address its
/// map does not list yet; either is only a matter of a moment after both sides came up.
const BIRTHDAY_CALL_EVERY: Duration = Duration::from_millis(500);
const BIRTHDAY_CALL_FOR: Duration = Duration::from_millis(2500);
/// An ask for an address the map does not list yet is kept this long on the probing side: the
/// map that lists it (the peer's STUN-seen address) may come a moment after the ask, which
/// took the relay; probing starts when it does.
const BIRTHDAY_ASK_KEPT: Duration = Duration::from_secs(1);
/// Sockets asked for and not given within this long are not waited for.
const BIRTHDAY_ASK_WAIT: Duration = Duration::from_secs(3);
/// A peer endpoint pinged this long without an answer starts birthday probing (where it
/// applies): three burst steps have had their chance (plain punching answers within a round
/// trip).
const BIRTHDAY_AFTER: Duration = Duration::from_millis(250);
/// Birthday probing with one peer at most this often (either side).
const BIRTHDAY_GAP: Duration = Duration::from_secs(60);
/// A peer heard through the relay this recently is taken to be there (birthday probing asks
/// it through the relay, which drops what is sent to a node not connected to it).
const AT_RELAY_FOR: Duration = Duration::from_secs(60);
/// Random ports probed at first (a hit with a chance of about 64%), then at a time, how often,
/// and for how long (1,664 probes in all; all miss with a chance of about e^−6.6).
pub const PROBE_FIRST: u16 = 256;
pub const PROBE_BATCH: u16 = 128;
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_FOR: Duration = Duration::from_secs(3);
/// A birthday socket no trusted path has used for this long is closed.
const BIRTHDAY_KEEP: Duration = Duration::from_secs(30);
/// Candidates kept per peer: its published endpoints and the addresses its pings came from.
pub const MAX_PATHS: usize = 16;
/// A new path replaces the one in use only when its RTT is lower by this factor (and 1 ms).
const SWITCH_RATIO: f64 = 0.8;

/// What a candidate has shown so far.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateStatus {
    pub endpoint: Endpoint,
    /// The round-trip time of its last pong.
    pub rtt: Option<Duration>,
    /// Whether a pong came back from it within [`TRUST`].
    pub trusted: bool,
    pub pings_sent: u32,
    pub pongs: u32,
}

/// Why a peer has no direct path, as the engine knows it (the daemon adds what netcheck knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathReason {
    /// The peer is a plain WireGuard peer (no disco key): only its configured endpoint is tried.
    NoDisco,
    /// The peer published no endpoints (and none of its pings arrived).
    NoCandidates,
    /// Pings are going out and nothing has answered yet.
    Trying { pings: u32 },
    /// Pings were sent and none answered, and none of the peer's pings arrived either.
    NoAnswer { pings: u32 },
    /// The peer's pings arrive (it can reach this node) but none of ours is answered.
    OneWay { pings: u32, pings_received: u32 },
    /// A direct path worked, then stopped answering.
    Lost,
}

#[derive(Debug, Clone)]
struct PathInfo {
    endpoint: Endpoint,
    /// Published in the map (kept while published) rather than learnt from a ping.
    published: bool,
    /// The local socket this path leaves from (the main one, or a birthday socket the peer's
    /// pings arrived on).
    socket: SocketId,
    /// The first ping sent to it (how long it has been tried).
    first_ping: Option<Instant>,
    last_ping: Option<Instant>,
    last_pong: Option<Instant>,
    rtt: Option<Duration>,
    pings: u32,
    pongs: u32,
}

impl PathInfo {
    fn new(endpoint: Endpoint, published: bool) -> Self {
        PathInfo {
            endpoint,
            published,
            socket: MAIN_SOCKET,
            first_ping: None,
            last_ping: None,
            last_pong: None,
            rtt: None,
            pings: 0,
            pongs: 0,
        }
    }

    fn trusted(&self, now: Instant) -> bool {
        self.last_pong
            .is_some_and(|t| now.saturating_duration_since(t) < TRUST)
    }

    fn ping(&self) -> Send {
        ping_from(self.socket, self.endpoint.addr)
    }
}

/// A ping to `to` from `socket`.
fn ping_from(socket: SocketId, to: SocketAddr) -> Send {
    if socket == MAIN_SOCKET {
        Send::Ping(to)
    } else {
        Send::PingFrom(socket, to)
    }
}

#[derive(Debug, Clone, Copy)]
struct Round {
    started: Instant,
    /// The next step of [`BURST`] to send.
    step: usize,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    tx: TxId,
    socket: SocketId,
    to: SocketAddr,
    at: Instant,
}

/// Birthday probing on the side behind the random-port NAT.
#[derive(Debug, Clone)]
enum Birthday {
    /// Extra sockets asked of the shell.
    Asked { at: Instant },
    /// Their mappings are open toward the peer's endpoint `target`.
    Open {
        started: Instant,
        target: SocketAddr,
        sockets: Vec<SocketId>,
        /// Steps of [`BIRTHDAY_PINGS_AT`] sent.
        step: usize,
        /// `Birthday` messages sent (one every [`BIRTHDAY_CALL_EVERY`] until a probe arrives).
        calls: u32,
        /// Sockets the peer's probes reached (the peer may use any of them).
        hit: Vec<SocketId>,
    },
}

/// Birthday probing on the other side: random ports of the peer's address.
#[derive(Debug, Clone, Copy)]
struct Probing {
    ip: IpAddr,
    started: Instant,
    batches: u32,
    done: bool,
}

/// What discovery wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send {
    /// A ping to this address (the engine picks the transaction id and calls
    /// [`Discovery::ping_sent`]).
    Ping(SocketAddr),
    /// A call-me-maybe through the relay.
    CallMeMaybe,
    /// A ping to this address from an extra socket (birthday probing).
    PingFrom(SocketId, SocketAddr),
    /// Pings to this many random ports of the address (birthday probing).
    ProbeRandom { ip: IpAddr, count: u16 },
    /// A `Birthday` message through the relay: this many mappings are open toward the peer.
    Birthday { sockets: u16 },
    /// Extra sockets wanted from the shell (it answers with `sockets_opened`).
    OpenSockets(u16),
    /// Extra sockets no longer needed.
    CloseSockets(Vec<SocketId>),
}

/// One peer's discovery state.
#[derive(Debug, Default)]
pub struct Discovery {
    paths: Vec<PathInfo>,
    pending: VecDeque<Pending>,
    best: Option<SocketAddr>,
    round: Option<Round>,
    /// While traffic flows and no path works, the next round starts at this time.
    next_round: Option<Instant>,
    failed_rounds: usize,
    last_upgrade: Option<Instant>,
    last_called: Option<Instant>,
    active_until: Option<Instant>,
    /// A trusted path was lost and none has replaced it.
    lost: bool,
    /// This node's address as the peer's pongs showed it.
    observed_self: Option<SocketAddr>,
    /// Where the peer's next mappings are expected (port prediction), pinged in rounds.
    predicted: Vec<SocketAddr>,
    /// Whether this node's NAT maps every destination to a random port (from its own STUN
    /// endpoints): it is the side that opens birthday sockets.
    own_random: bool,
    birthday: Option<Birthday>,
    probing: Option<Probing>,
    /// The peer's latest ask to probe an address the map did not list then, and when.
    birthday_asked: Option<(IpAddr, Instant)>,
    /// When an authentic packet from the peer last came through a relay: it is there to be
    /// asked to probe.
    heard_via_relay: Option<Instant>,
    last_birthday: Option<Instant>,
    /// Birthday sockets kept open (the peer's probes reached them), and when they were last
    /// used (a ping arrived, or a trusted path leaves from it).
    kept_sockets: Vec<(SocketId, Instant)>,
    pub birthday_rounds: u32,
    last_ping: Option<Instant>,
    pub pings_sent: u32,
    pub pongs_received: u32,
    pub pings_received: u32,
    pub calls_sent: u32,
    pub calls_received: u32,
}

impl Discovery {
    pub fn new() -> Self {
        Self::default()
    }

    fn active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|t| now < t)
    }

    /// Traffic for or from the peer: keeps its path alive, and starts a round when there is no
    /// direct path (and none is running or waiting for its backoff). None when nothing changed
    /// but the time the peer stays active (the common case, once per packet: no timer moved).
    pub fn note_traffic(&mut self, now: Instant) -> Option<Vec<Send>> {
        let was_active = self.active(now);
        let old_until = self.active_until;
        let far = old_until.is_some_and(|t| t > now + 2 * HEARTBEAT);
        self.active_until = Some(now + ACTIVE_FOR);
        // Well inside an active spell every timer (round steps, heartbeats, the end of trust, a
        // retry inside the spell) is already with the engine: a packet changes nothing, also
        // on a relayed path (the common case, once per packet).
        let retry_scheduled = self
            .next_round
            .is_none_or(|t| old_until.is_some_and(|u| t < u));
        if far && retry_scheduled {
            return None;
        }
        if !was_active && self.trusted_best(now).is_none() {
            // After a quiet spell the last backoff no longer applies.
            self.next_round = Some(now);
            self.failed_rounds = 0;
        }
        Some(self.poll(now))
    }

    /// This node's network changed (another address, another NAT mapping): the path in use is
    /// pinged at once, and a peer with traffic but no working path is tried again at once.
    pub fn network_changed(&mut self, now: Instant) -> Vec<Send> {
        if !self.active(now) {
            return Vec::new();
        }
        if let Some(p) = self.best.and_then(|b| self.path_mut(b)) {
            p.last_ping = None;
        }
        if self.trusted_best(now).is_none() && self.round.is_none() {
            self.next_round = Some(now);
            self.failed_rounds = 0;
        }
        self.poll(now)
    }

    /// Does what is due at `now`: round steps, heartbeats, the fall-back when the path in use
    /// stops answering, retries while traffic waits.
    pub fn poll(&mut self, now: Instant) -> Vec<Send> {
        let mut out = Vec::new();
        if let Some(b) = self.best {
            if !self.path(b).is_some_and(|p| p.trusted(now)) {
                // The path in use stopped answering: the relay carries the traffic again.
                self.best = None;
                self.lost = true;
                if let Some(c) = self.choose(now) {
                    self.best = Some(c);
                }
                if self.best.is_none() && self.active(now) && self.round.is_none() {
                    self.next_round = Some(now);
                    self.failed_rounds = 0;
                }
            }
        }
        let active = self.active(now);
        if self.round.is_none() && active && self.next_round.is_some_and(|t| now >= t) {
            out.extend(self.start_round(now, true));
        } else {
            out.extend(self.round_step(now));
        }
        if active {
            if let Some(b) = self.trusted_best(now) {
                let beat = self.path(b).map(PathInfo::ping);
                if let Some(beat) = beat.filter(|p| self.heartbeat_due(now, b) && !out.contains(p))
                {
                    out.push(beat);
                }
                let upgrade_due = self
                    .last_upgrade
                    .is_none_or(|t| now.saturating_duration_since(t) >= UPGRADE_EVERY);
                if self.round.is_none() && upgrade_due {
                    if self.last_upgrade.is_some() {
                        for p in self.paths.iter().filter(|p| p.endpoint.addr != b) {
                            out.push(p.ping());
                        }
                    }
                    self.last_upgrade = Some(now);
                }
            }
        }
        out.extend(self.birthday_step(now));
        out
    }

    /// When [`Discovery::poll`] has something to do next, after `now` (the caller has just
    /// polled at `now`).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut at_least = |t: Instant| {
            if t > now {
                at = Some(at.map_or(t, |a: Instant| a.min(t)));
            }
        };
        if let Some(r) = self.round {
            match BURST.get(r.step) {
                Some(d) => at_least(r.started + *d),
                None => at_least(r.started + ROUND_FOR),
            }
            if self.own_random && self.birthday.is_none() && self.best.is_none() {
                at_least(r.started + BIRTHDAY_AFTER);
            }
            if self.best.is_some() {
                at_least(r.started + ROUND_AT_LEAST);
            }
        }
        let active_until = self.active_until;
        if let Some(until) = active_until {
            if let Some(t) = self.next_round {
                if t < until {
                    at_least(t);
                }
            }
            if let Some(p) = self.best.and_then(|b| self.path(b)) {
                if let (Some(ping), Some(pong)) = (p.last_ping, p.last_pong) {
                    let late = pong + HEARTBEAT + HEARTBEAT_LATE;
                    let next = (ping + HEARTBEAT).min(late.max(ping + HEARTBEAT_LATE));
                    if next < until {
                        at_least(next);
                    }
                }
                if let Some(t) = self.last_upgrade {
                    if t + UPGRADE_EVERY < until {
                        at_least(t + UPGRADE_EVERY);
                    }
                }
            }
        }
        if let Some(pong) = self
            .best
            .and_then(|b| self.path(b))
            .and_then(|p| p.last_pong)
        {
            // The moment the path in use stops being trusted.
            at_least(pong + TRUST);
        }
        match (at, self.birthday_wake(now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
