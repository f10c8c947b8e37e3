//! The relay client's state machine (sans-IO): after the owner has opened a transport (TCP,
//! TLS, HTTP upgrade), it answers the relay's challenge with the node key's proof, sends and
//! receives packets, keeps the connection alive both ways, notices a dead relay, and says when
//! to dial again (exponential backoff with jitter, reset by a successful connection: a relay that
//! restarts is not hit by every client in the same millisecond).

use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::relay::{self as wire, Decoder, Frame};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First wait before dialling again after a failure; doubled per failure up to the caps.
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait after a broken connection: a restarted relay is back in use within this.
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Longest wait after a refusal (not authorised yet, or control unreachable from the relay).
const BACKOFF_REFUSED_MAX: Duration = Duration::from_secs(30);
/// How long the relay has to greet and accept us after the transport is up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets held while (re)connecting, sent once connected; older ones are dropped.
const PENDING_MAX: usize = 64;
/// Keepalive interval until the relay says its own.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// Something the relay client has to tell its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// Authenticated: packets flow.
    Connected,
    /// A packet from the node with key `from`.
    Packet { from: Key, packet: Vec<u8> },
    /// The node with this key is not connected to this relay.
    PeerGone { key: Key },
    /// The connection ended (the owner must close the transport); the reason in words.
    Disconnected { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; dial at `at`.
    Waiting { at: Instant },
    /// The owner is opening the transport.
    Dialing,
    /// Transport up; waiting for the relay's key and challenge.
    Greeting { since: Instant },
    /// Proof sent; waiting for acceptance.
    Proving { since: Instant },
    /// Accepted.
    Ready,
}

/// One connection to one relay, as a state machine.
pub struct RelayClient {
    private: PrivateKey,
    state: State,
    decoder: Decoder,
    writes: VecDeque<Vec<u8>>,
    events: VecDeque<RelayEvent>,
    pending: VecDeque<(Key, Vec<u8>)>,
    backoff: Duration,
    /// State of the jitter's xorshift generator (seeded from the node key: clients differ).
    jitter: u64,
    keepalive: Duration,
    last_rx: Instant,
    next_keepalive: Instant,
    close: bool,
    last_error: Option<String>,
}

impl RelayClient {
    /// A client for the node with `private` key that wants to dial at once.
    pub fn new(private: PrivateKey, now: Instant) -> Self {
        let public = private.public_key();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&public.0[..8]);
        RelayClient {
            jitter: u64::from_le_bytes(seed) | 1,
            private,
            state: State::Waiting { at: now },
            decoder: Decoder::default(),
            writes: VecDeque::new(),
            events: VecDeque::new(),
            pending: VecDeque::new(),
            backoff: BACKOFF_START,
            keepalive: DEFAULT_KEEPALIVE,
            last_rx: now,
            next_keepalive: now + DEFAULT_KEEPALIVE,
            close: false,
            last_error: None,
        }
    }

    /// Whether the owner should open a transport now; if so the client waits for it.
    pub fn poll_dial(&mut self, now: Instant) -> bool {
        match self.state {
            State::Waiting { at } if now >= at => {
                self.state = State::Dialing;
                true
            }
            _ => false,
        }
    }

    /// The transport is open (the HTTP upgrade was accepted).
    pub fn handle_connected(&mut self, now: Instant) {
        self.decoder = Decoder::default();
        self.writes.clear();
        self.close = false;
        self.last_rx = now;
        self.state = State::Greeting { since: now };
    }

    /// Opening the transport failed, or it broke: dial again after the backoff.
    pub fn handle_disconnected(&mut self, now: Instant, reason: &str) {
        let was_up = !matches!(self.state, State::Waiting { .. });
        if was_up {
            self.events.push_back(RelayEvent::Disconnected {
                reason: reason.to_string(),
            });
        }
        self.last_error = Some(reason.to_string());
        self.state = State::Waiting {
            at: now + self.jittered(self.backoff),
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX.max(self.backoff));
        self.close = false;
        self.writes.clear();
    }

    /// Bytes read from the transport.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.close {
            return;
        }
        self.decoder.push(bytes);
        self.last_rx = now;
        loop {
            match self.decoder.next_frame() {
                Ok(Some(f)) => self.handle_frame(now, f),
                Ok(None) => return,
                Err(e) => return self.fail(now, format!("relay sent a bad frame: {e}")),
            }
            if self.close {
                return;
            }
        }
    }

    fn handle_frame(&mut self, now: Instant, f: Frame) {
        match (self.state, f) {
            (
                State::Greeting { .. },
                Frame::ServerKey {
                    version,
                    key,
                    challenge,
                },
            ) => {
                if version != wire::VERSION {
                    return self.fail(
                        now,
                        format!(
                            "relay speaks protocol version {version}, this node {}",
                            wire::VERSION
                        ),
                    );
                }
                let proof = wire::key_proof(&self.private, &key, &challenge);
                let me = self.private.public_key();
                self.writes
                    .push_back(Frame::ClientInfo { key: me, proof }.to_bytes());
                self.state = State::Proving { since: now };
            }
            (State::Proving { .. }, Frame::ServerInfo { keepalive_secs }) => {
                self.keepalive = Duration::from_secs(u64::from(keepalive_secs.max(1)));
                self.next_keepalive = now + self.keepalive;
                self.state = State::Ready;
                self.backoff = BACKOFF_START;
                self.last_error = None;
                self.events.push_back(RelayEvent::Connected);
                while let Some((dst, p)) = self.pending.pop_front() {
                    self.write_packet(&dst, &p);
                }
            }
            (_, Frame::Refused { reason }) => {
                let reason = format!("refused by the relay: {reason}");
                self.fail(now, reason);
                // Refusals do not go away by retrying fast.
                self.backoff = (self.backoff * 4).min(BACKOFF_REFUSED_MAX);
            }
            (State::Ready, Frame::RecvPacket { src, packet }) => {
                self.events
                    .push_back(RelayEvent::Packet { from: src, packet });
            }
            (State::Ready, Frame::PeerGone { key }) => {
                self.events.push_back(RelayEvent::PeerGone { key })
            }
            (State::Ready, Frame::KeepAlive) => {}
            (_, other) => self.fail(
                now,
                format!("relay sent an unexpected {} frame", frame_name(&other)),
            ),
        }
    }

    /// Ends the connection: the owner closes the transport when it sees `wants_close`.
    /// Between half of `d` and all of it, spread by the client's generator.
    fn jittered(&mut self, d: Duration) -> Duration {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        let half = d / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
        half + Duration::from_nanos(x % nanos)
    }

    fn fail(&mut self, now: Instant, reason: String) {
        tracing::debug!("relay connection: {reason}");
        self.handle_disconnected(now, &reason);
        self.close = true;
    }

    /// Sends `packet` to `dst`; while not connected the last few are held (oldest dropped).
    pub fn send(&mut self, dst: &Key, packet: &[u8]) {
        if self.state == State::Ready {
            self.write_packet(dst, packet);
            return;
        }
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
        }
        self.pending.push_back((*dst, packet.to_vec()));
    }

    fn write_packet(&mut self, dst: &Key, packet: &[u8]) {
        self.writes
            .push_back(Frame::packet_bytes(true, dst, packet));
    }

    /// Keepalives, and a relay gone silent or a handshake that does not finish.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Greeting { since } | State::Proving { since }
                if now >= since + HANDSHAKE_TIMEOUT =>
            {
                self.fail(now, "the relay did not accept the node in time".into())
            }
            State::Ready => {
                if now >= self.last_rx + self.keepalive * 5 / 2 {
                    self.fail(now, "the relay went silent".into());
                } else if now >= self.next_keepalive {
                    self.writes.push_back(Frame::KeepAlive.to_bytes());
                    self.next_keepalive = now + self.keepalive;
                }
            }
            _ => {}
        }
    }

    /// When `handle_timeout` (or `poll_dial`) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Dialing => None,
            State::Greeting { since } | State::Proving { since } => Some(since + HANDSHAKE_TIMEOUT),
            State::Ready => Some(
                self.next_keepalive
                    .min(self.last_rx + self.keepalive * 5 / 2),
            ),
        }
    }

    /// The next bytes to write to the transport.
    pub fn poll_write(&mut self) -> Option<Vec<u8>> {
        self.writes.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// The connection failed: the owner must close the transport and call `handle_disconnected`
    /// (already done by the client itself: the owner just drops the transport).
    pub fn wants_close(&self) -> bool {
        self.close
    }

    /// Whether packets flow right now.
    pub fn is_connected(&self) -> bool {
        self.state == State::Ready
    }

    /// Why the last attempt or connection failed, while not connected.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
}

fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::ServerKey { .. } => "server-key",
        Frame::ClientInfo { .. } => "client-info",
        Frame::ServerInfo { .. } => "server-info",
        Frame::SendPacket { .. } => "send-packet",
        Frame::RecvPacket { .. } => "recv-packet",
        Frame::KeepAlive => "keepalive",
        Frame::PeerGone { .. } => "peer-gone",
        Frame::Refused { .. } => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeRelay {
        private: PrivateKey,
        challenge: [u8; 32],
    }

    impl FakeRelay {
        fn hello(&self) -> Vec<u8> {
            Frame::ServerKey {
                version: wire::VERSION,
                key: self.private.public_key(),
                challenge: self.challenge,
            }
            .to_bytes()
        }
    }

    fn frames(c: &mut RelayClient) -> Vec<Frame> {
        let mut d = Decoder::default();
        while let Some(w) = c.poll_write() {
            d.push(&w);
        }
        let mut v = Vec::new();
        while let Some(f) = d.next_frame().unwrap() {
            v.push(f);
        }
        v
    }

    fn connected(now: Instant) -> (RelayClient, Key) {
        let me = PrivateKey::from_bytes([7; 32]);
        let me_pub = me.public_key();
        let relay = FakeRelay {
            private: PrivateKey::from_bytes([9; 32]),
            challenge: [3; 32],
        };
        let mut c = RelayClient::new(me, now);
        assert!(c.poll_dial(now));
        c.handle_connected(now);
        c.handle_input(now, &relay.hello());
        let sent = frames(&mut c);
        let [Frame::ClientInfo { key, proof }] = sent.as_slice() else {
            panic!("{sent:?}")
        };
        assert!(wire::verify_key_proof(
            &relay.private,
            &relay.challenge,
            key,
            proof
        ));
        c.handle_input(now, &Frame::ServerInfo { keepalive_secs: 5 }.to_bytes());
        assert_eq!(c.poll_event(), Some(RelayEvent::Connected));
        (c, me_pub)
    }

    #[test]
    fn proves_its_key_then_carries_packets_both_ways() {
        let now = Instant::now();
        let (mut c, _) = connected(now);
        c.send(&Key([1; 32]), b"hello");
        assert_eq!(
            frames(&mut c),
            vec![Frame::SendPacket {
                dst: Key([1; 32]),
                packet: b"hello".to_vec()
            }]
        );
        let mut bytes = Frame::RecvPacket {
            src: Key([2; 32]),
            packet: b"hi".to_vec(),
        }
        .to_bytes();
        bytes.extend(Frame::PeerGone { key: Key([1; 32]) }.to_bytes());
        // Cut in the middle of a frame: nothing until the rest arrives.
        c.handle_input(now, &bytes[..10]);
        assert_eq!(c.poll_event(), None);
        c.handle_input(now, &bytes[10..]);
        assert_eq!(
            c.poll_event(),
            Some(RelayEvent::Packet {
                from: Key([2; 32]),
                packet: b"hi".to_vec()
            })
        );
        assert_eq!(
            c.poll_event(),
            Some(RelayEvent::PeerGone { key: Key([1; 32]) })
        );
    }

    #[test]
    fn packets_sent_while_connecting_go_out_once_accepted() {
        let now = Instant::now();
        let me = PrivateKey::from_bytes([7; 32]);
        let relay = FakeRelay {
            private: PrivateKey::from_bytes([9; 32]),
            challenge: [3; 32],
        };
        let mut c = RelayClient::new(me, now);
        c.send(&Key([1; 32]), b"early");
        assert!(c.poll_dial(now));
        c.handle_connected(now);
        c.handle_input(now, &relay.hello());
        let _ = frames(&mut c);
        c.handle_input(now, &Frame::ServerInfo { keepalive_secs: 5 }.to_bytes());
        assert!(c.is_connected());
        assert!(matches!(
            frames(&mut c).as_slice(),
            [Frame::SendPacket { packet, .. }] if packet == b"early"
        ));
    }

    #[test]
    fn keepalives_go_out_and_a_silent_relay_is_left() {
        let t0 = Instant::now();
        let (mut c, _) = connected(t0);
        let t = c.poll_timeout().unwrap();
        assert_eq!(t, t0 + Duration::from_secs(5));
        c.handle_timeout(t);
        assert_eq!(frames(&mut c), vec![Frame::KeepAlive]);
        // The relay's keepalive counts as life.
        c.handle_input(t, &Frame::KeepAlive.to_bytes());
        c.handle_timeout(t + Duration::from_secs(12));
        assert!(!c.wants_close());
        c.handle_timeout(t + Duration::from_secs(13));
        assert!(c.wants_close());
        assert!(
            matches!(c.poll_event(), Some(RelayEvent::Disconnected { reason }) if reason.contains("silent"))
        );
    }

    #[test]
    fn reconnects_with_backoff_that_a_success_resets() {
        let t0 = Instant::now();
        let mut c = RelayClient::new(PrivateKey::from_bytes([7; 32]), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert!(c.poll_dial(now));
            assert!(!c.poll_dial(now), "one dial at a time");
            c.handle_disconnected(now, "connection refused");
            let at = c.poll_timeout().unwrap();
            waits.push(at - now);
            assert!(!c.poll_dial(at - Duration::from_millis(1)));
            now = at;
        }
        // Doubling up to 3 s, each wait jittered into its upper half.
        for (w, full) in waits.iter().zip([250u64, 500, 1000, 2000, 3000, 3000]) {
            let full = Duration::from_millis(full);
            assert!(*w >= full / 2 && *w <= full, "{w:?} for {full:?}");
        }
        assert_eq!(c.last_error(), Some("connection refused"));
        let (mut c, _) = connected(now);
        c.handle_input(now, &[99, 0, 0, 0, 0]);
        assert!(c.wants_close(), "a bad frame ends the connection");
        let at = c.poll_timeout().unwrap();
        assert!(
            at > now && at <= now + BACKOFF_START,
            "reset by the success"
        );
    }

    /// After a relay restart, 100 clients do not all come back in the same millisecond.
    #[test]
    fn reconnects_are_spread_out() {
        let now = Instant::now();
        let mut at = std::collections::BTreeSet::new();
        for i in 0..100u8 {
            let mut c = RelayClient::new(PrivateKey::from_bytes([i; 32]), now);
            assert!(c.poll_dial(now));
            c.handle_disconnected(now, "relay restarting");
            let wait = c.poll_timeout().unwrap() - now;
            assert!(wait >= BACKOFF_START / 2 && wait <= BACKOFF_START);
            at.insert(wait.as_millis());
        }
        assert!(at.len() >= 50, "{} distinct milliseconds of 125", at.len());
    }

    #[test]
    fn a_refusal_is_reported_and_retried_slowly() {
        let now = Instant::now();
        let mut c = RelayClient::new(PrivateKey::from_bytes([7; 32]), now);
        assert!(c.poll_dial(now));
        c.handle_connected(now);
        c.handle_input(
            now,
            &Frame::Refused {
                reason: "the node key is not authorised by the coordination server".into(),
            }
            .to_bytes(),
        );
        assert!(c.wants_close());
        assert!(c.last_error().unwrap().contains("not authorised"));
        assert!(c.poll_timeout().is_some_and(|t| t <= now + BACKOFF_START));
        assert!(c.poll_dial(now + BACKOFF_START));
        c.handle_disconnected(now, "again");
        // Four times slower than after a broken connection (jittered into the upper half).
        assert!(c.poll_timeout().unwrap() >= now + Duration::from_secs(1));
    }
}
