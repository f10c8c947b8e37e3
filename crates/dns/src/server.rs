//! The DNS server a node runs inside the tunnel, sans-IO: queries in (bytes, and an opaque
//! `C` saying who asked), answers out for the account's zone, every other query forwarded to
//! the resolvers the system had before (another one tried after a second, SERVFAIL after
//! five), and malformed input answered with FORMERR or dropped — never a panic.

use crate::zone::{Lookup, Zone};
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::DNSClass;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The largest query taken (a real one is under 300 bytes, padding included).
pub const MAX_QUERY: usize = 2048;
/// What our answers are cut to when the asker did not say it takes more (RFC 1035).
const PLAIN_UDP: usize = 512;
/// The most we send over UDP whatever the asker says (DNS flag day 2020).
const EDNS_PAYLOAD: u16 = 1232;
/// Forwarded queries waiting for an answer, at most.
pub const MAX_PENDING: usize = 1024;
/// After this long without an answer the next resolver is asked too.
const RETRY: Duration = Duration::from_secs(1);
/// After this long without an answer the asker gets SERVFAIL.
const GIVE_UP: Duration = Duration::from_secs(5);

/// What the server has done, for the status and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Questions answered from the zone.
    pub answered: u64,
    /// Questions sent on to a resolver.
    pub forwarded: u64,
    /// Malformed or refused queries answered with an error code.
    pub errors: u64,
    /// Input dropped without an answer (too short to answer, a response, an unsolicited or
    /// mismatched answer from a resolver).
    pub dropped: u64,
    /// Forwarded questions no resolver answered in time.
    pub timed_out: u64,
}

/// A forwarded query, waiting for a resolver.
struct Pending<C> {
    client: C,
    /// The asker's id (the resolver saw ours).
    id: u16,
    question: Query,
    /// The query as sent on, with our id.
    bytes: Vec<u8>,
    /// Which resolvers were asked, in order.
    asked: usize,
    next_try: Instant,
    deadline: Instant,
    recursion_desired: bool,
    edns: bool,
}

/// The server.
pub struct Server<C> {
    zone: Zone,
    upstreams: Vec<SocketAddr>,
    pending: HashMap<u16, Pending<C>>,
    replies: VecDeque<(C, Vec<u8>)>,
    to_upstream: VecDeque<(SocketAddr, Vec<u8>)>,
    stats: Stats,
}

impl<C: Clone> Server<C> {
    /// A server for `zone` forwarding to `upstreams` (none: other names get SERVFAIL).
    pub fn new(zone: Zone, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            zone,
            upstreams,
            pending: HashMap::new(),
            replies: VecDeque::new(),
            to_upstream: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Takes a new zone (a new map); questions after this are answered from it.
    pub fn set_zone(&mut self, zone: Zone) {
        self.zone = zone;
    }

    /// The zone answered from.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Takes a new list of resolvers; queries already sent on still take their answers.
    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.upstreams = upstreams;
    }

    /// The resolvers forwarded to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// A query from `client`. The answer (if any) comes out of [`Server::poll_reply`], a
    /// forwarded query out of [`Server::poll_upstream`].
    pub fn handle_query(&mut self, now: Instant, client: C, bytes: &[u8]) {
        if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
            // Too short to carry an id to answer, or a response: nothing to say to it.
            self.stats.dropped += 1;
            return;
        }
        let id = u16::from_be_bytes([bytes[0], bytes[1]]);
        if bytes.len() > MAX_QUERY {
            self.error(client, id, OpCode::Query, ResponseCode::FormErr);
            return;
        }
        let query = match Message::from_vec(bytes) {
            Ok(q) => q,
            Err(_) => {
                let op = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
                self.error(client, id, op, ResponseCode::FormErr);
                return;
            }
        };
        if query.metadata.op_code != OpCode::Query {
            self.error(client, id, query.metadata.op_code, ResponseCode::NotImp);
            return;
        }
        let [question] = query.queries.as_slice() else {
            self.error(client, id, OpCode::Query, ResponseCode::FormErr);
            return;
        };
        if question.query_class != DNSClass::IN {
            self.error(client, id, OpCode::Query, ResponseCode::FormErr);
            return;
        }
        let lookup = self.zone.lookup(&question.name, question.query_type);
        if lookup == Lookup::NotOurs {
            self.forward(now, client, &query, question.clone(), bytes);
            return;
        }
        let mut answer = response_to(&query, question);
        answer.metadata.authoritative = true;
        match lookup {
            Lookup::Records(records) => answer.answers = records,
            Lookup::NoData => answer.authorities = vec![self.zone.negative_soa()],
            Lookup::NxDomain => {
                answer.metadata.response_code = ResponseCode::NXDomain;
                answer.authorities = vec![self.zone.negative_soa()];
            }
            Lookup::NotOurs => {}
        }
        self.stats.answered += 1;
        let limit = payload_limit(&query);
        self.reply(client, answer, limit);
    }

    /// An answer from a resolver at `from`: handed back to whoever asked if it matches a
    /// query sent on to that resolver (our id and the same question), else dropped.
    pub fn handle_upstream(&mut self, from: SocketAddr, bytes: &[u8]) {
        if bytes.len() < 12 || bytes[2] & 0x80 == 0 {
            self.stats.dropped += 1;
            return;
        }
        let ours = u16::from_be_bytes([bytes[0], bytes[1]]);
        let Some(p) = self.pending.get(&ours) else {
            self.stats.dropped += 1;
            return;
        };
        let asked_it = self.upstreams[..p.asked.min(self.upstreams.len())].contains(&from);
        let same_question = Message::from_vec(bytes)
            .is_ok_and(|m| m.queries.len() == 1 && same_query(&m.queries[0], &p.question));
        if !asked_it || !same_question {
            self.stats.dropped += 1;
            return;
        }
        let Some(p) = self.pending.remove(&ours) else {
            return;
        };
        let mut answer = bytes.to_vec();
        answer[..2].copy_from_slice(&p.id.to_be_bytes());
        self.replies.push_back((p.client, answer));
    }

    /// The next answer to send: to whom, and the DNS message.
    pub fn poll_reply(&mut self) -> Option<(C, Vec<u8>)> {
        self.replies.pop_front()
    }

    /// The next query to send to a resolver.
    pub fn poll_upstream(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.to_upstream.pop_front()
    }

    /// When [`Server::handle_timeout`] has something to do; none while nothing is forwarded.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| {
                if p.asked < self.upstreams.len() {
                    p.next_try.min(p.deadline)
                } else {
                    p.deadline
                }
            })
            .min()
    }

    /// Asks the next resolver for queries unanswered for a second; SERVFAIL for those
    /// unanswered for five.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(id, _)| *id)
            .collect();
        for ours in expired {
            if let Some(p) = self.pending.remove(&ours) {
                self.stats.timed_out += 1;
                let mut answer = Message::response(p.id, OpCode::Query);
                answer.metadata.recursion_desired = p.recursion_desired;
                answer.metadata.recursion_available = true;
                answer.metadata.response_code = ResponseCode::ServFail;
                answer.queries = vec![p.question];
                if p.edns {
                    answer.edns = Some(our_edns());
                }
                self.reply(p.client, answer, PLAIN_UDP);
            }
        }
        for p in self.pending.values_mut() {
            if now >= p.next_try && p.asked < self.upstreams.len() {
                self.to_upstream
                    .push_back((self.upstreams[p.asked], p.bytes.clone()));
                p.asked += 1;
                p.next_try = now + RETRY;
            }
        }
    }

    fn forward(&mut self, now: Instant, client: C, query: &Message, question: Query, bytes: &[u8]) {
        // No resolver to ask, or too many questions waiting already: SERVFAIL at once.
        let first = match self.upstreams.first() {
            Some(first) if self.pending.len() < MAX_PENDING => *first,
            _ => {
                let id = query.metadata.id;
                self.error(client, id, OpCode::Query, ResponseCode::ServFail);
                return;
            }
        };
        let ours = loop {
            let candidate = rand::random::<u16>();
            if !self.pending.contains_key(&candidate) {
                break candidate;
            }
        };
        let mut sent = bytes.to_vec();
        sent[..2].copy_from_slice(&ours.to_be_bytes());
        self.to_upstream.push_back((first, sent.clone()));
        self.stats.forwarded += 1;
        self.pending.insert(
            ours,
            Pending {
                client,
                id: query.metadata.id,
                question,
                bytes: sent,
                asked: 1,
                next_try: now + RETRY,
                deadline: now + GIVE_UP,
                recursion_desired: query.metadata.recursion_desired,
                edns: query.edns.is_some(),
            },
        );
    }

    fn error(&mut self, client: C, id: u16, op: OpCode, code: ResponseCode) {
        self.stats.errors += 1;
        let answer = Message::error_msg(id, op, code);
        self.reply(client, answer, PLAIN_UDP);
    }

    /// Encodes `answer`; one over `limit` goes out truncated (TC set, records dropped) so the
    /// asker knows to retry over TCP.
    fn reply(&mut self, client: C, answer: Message, limit: usize) {
        let bytes = match answer.to_vec() {
            Ok(b) if b.len() <= limit => b,
            Ok(_) => match answer.truncate().to_vec() {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("a truncated DNS answer could not be encoded: {e}");
                    return;
                }
            },
            Err(e) => {
                tracing::debug!("a DNS answer could not be encoded: {e}");
                return;
            }
        };
        self.replies.push_back((client, bytes));
    }
}

/// The answer's frame for `query`: its id, question and RD flag, RA set, our OPT if it had one.
fn response_to(query: &Message, question: &Query) -> Message {
    let mut answer = Message::response(query.metadata.id, OpCode::Query);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.metadata.checking_disabled = query.metadata.checking_disabled;
    answer.queries = vec![question.clone()];
    if query.edns.is_some() {
        answer.edns = Some(our_edns());
    }
    answer
}

fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns
}

/// How large an answer the asker takes over UDP.
fn payload_limit(query: &Message) -> usize {
    match &query.edns {
        Some(e) => usize::from(e.max_payload().clamp(PLAIN_UDP as u16, EDNS_PAYLOAD)),
        None => PLAIN_UDP,
    }
}

/// The same question, the name compared without case (resolvers may change it, 0x20).
fn same_query(a: &Query, b: &Query) -> bool {
    a.query_type == b.query_type
        && a.query_class == b.query_class
        && a.name.to_lowercase() == b.name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::ZoneNode;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::{Name, RData, RecordType};
    use std::str::FromStr;

    type Client = u32;

    fn zone() -> Zone {
        Zone::new(
            "pinhole.internal",
            [ZoneNode {
                name: "nas".into(),
                addresses: vec!["100.64.0.3".parse().unwrap()],
            }],
            vec!["100.64.0.0/10".parse().unwrap()],
            1,
        )
        .unwrap()
    }

    fn upstreams() -> Vec<SocketAddr> {
        vec![
            "192.0.2.53:53".parse().unwrap(),
            "192.0.2.54:53".parse().unwrap(),
        ]
    }

    fn query(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    fn answer_of(s: &mut Server<Client>) -> (Client, Message) {
        let (c, bytes) = s.poll_reply().expect("an answer");
        (c, Message::from_vec(&bytes).expect("a well-formed answer"))
    }

    #[test]
    fn answers_its_zone_authoritatively() {
        let now = Instant::now();
        let mut s = Server::new(zone(), upstreams());
        s.handle_query(
            now,
            7,
            &query(0x1234, "nas.pinhole.internal.", RecordType::A, true),
        );
        let (c, m) = answer_of(&mut s);
        assert_eq!(c, 7);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A("100.64.0.3".parse().unwrap()));
        assert!(m.edns.is_some(), "an EDNS query gets an EDNS answer");
        assert!(s.poll_upstream().is_none(), "nothing forwarded");

        s.handle_query(
            now,
            7,
            &query(1, "tv.pinhole.internal.", RecordType::A, false),
        );
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "the SOA for negative caching");
        assert!(m.edns.is_none());

        s.handle_query(
            now,
            7,
            &query(2, "nas.pinhole.internal.", RecordType::AAAA, false),
        );
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(s.stats().answered, 3);
    }

    #[test]
    fn forwards_other_names_and_hands_back_the_answer() {
        let now = Instant::now();
        let mut s = Server::new(zone(), upstreams());
        s.handle_query(now, 9, &query(0x4242, "example.com.", RecordType::A, false));
        assert!(s.poll_reply().is_none());
        let (to, sent) = s.poll_upstream().expect("forwarded");
        assert_eq!(to, upstreams()[0]);
        let mut m = Message::from_vec(&sent).unwrap();
        assert_eq!(m.queries[0].name.to_ascii(), "example.com.");

        // A stranger's answer, or one to another question, is dropped.
        m.metadata.message_type = MessageType::Response;
        s.handle_upstream("192.0.2.99:53".parse().unwrap(), &m.to_vec().unwrap());
        let mut other = m.clone();
        other.queries[0].name = Name::from_str("example.net.").unwrap();
        s.handle_upstream(to, &other.to_vec().unwrap());
        assert!(s.poll_reply().is_none());
        assert_eq!(s.stats().dropped, 2);

        // The resolver's answer goes back with the asker's id.
        m.add_answer(hickory_proto::rr::Record::from_rdata(
            Name::from_str("example.com.").unwrap(),
            60,
            RData::A("192.0.2.80".parse().unwrap()),
        ));
        s.handle_upstream(to, &m.to_vec().unwrap());
        let (c, back) = answer_of(&mut s);
        assert_eq!((c, back.metadata.id), (9, 0x4242));
        assert_eq!(back.answers.len(), 1);
        assert!(s.poll_timeout().is_none(), "nothing left waiting");
    }

    #[test]
    fn a_silent_resolver_means_the_next_one_then_servfail() {
        let now = Instant::now();
        let mut s = Server::new(zone(), upstreams());
        s.handle_query(now, 1, &query(5, "example.com.", RecordType::A, true));
        let (first, _) = s.poll_upstream().unwrap();
        assert_eq!(s.poll_timeout(), Some(now + RETRY));
        s.handle_timeout(now + RETRY);
        let (second, _) = s.poll_upstream().expect("the next resolver asked");
        assert_eq!((first, second), (upstreams()[0], upstreams()[1]));
        assert_eq!(s.poll_timeout(), Some(now + GIVE_UP));
        s.handle_timeout(now + GIVE_UP);
        let (_, m) = answer_of(&mut s);
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (5, ResponseCode::ServFail)
        );
        assert!(m.edns.is_some());
        assert_eq!(s.stats().timed_out, 1);
        assert!(s.poll_timeout().is_none());
    }

    #[test]
    fn without_resolvers_other_names_fail_at_once() {
        let mut s = Server::new(zone(), Vec::new());
        s.handle_query(
            Instant::now(),
            1,
            &query(5, "example.com.", RecordType::A, false),
        );
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    }

    #[test]
    fn bad_queries_get_formerr_or_are_dropped() {
        let now = Instant::now();
        let mut s = Server::new(zone(), upstreams());
        // Too short for an id, and a response: dropped.
        s.handle_query(now, 1, &[0u8; 5]);
        let mut response = query(3, "nas.pinhole.internal.", RecordType::A, false);
        response[2] |= 0x80;
        s.handle_query(now, 1, &response);
        assert!(s.poll_reply().is_none());
        assert_eq!(s.stats().dropped, 2);

        // Truncated: FORMERR with its id.
        let whole = query(0x0a0b, "nas.pinhole.internal.", RecordType::A, false);
        s.handle_query(now, 1, &whole[..whole.len() - 3]);
        let (_, m) = answer_of(&mut s);
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (0x0a0b, ResponseCode::FormErr)
        );

        // A compression pointer to itself (a loop).
        let mut looped = whole[..12].to_vec();
        looped[5] = 1; // one question
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        s.handle_query(now, 1, &looped);
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

        // Huge.
        let mut huge = whole.clone();
        huge.resize(MAX_QUERY + 1, 0);
        s.handle_query(now, 1, &huge);
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

        // Wrong class.
        let mut chaos = Message::new(4, MessageType::Query, OpCode::Query);
        let mut q = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        chaos.add_query(q);
        s.handle_query(now, 1, &chaos.to_vec().unwrap());
        let (_, m) = answer_of(&mut s);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

        // Two questions; another opcode.
        let mut two = Message::new(6, MessageType::Query, OpCode::Query);
        two.add_query(Query::query(Name::from_str("a.").unwrap(), RecordType::A));
        two.add_query(Query::query(Name::from_str("b.").unwrap(), RecordType::A));
        s.handle_query(now, 1, &two.to_vec().unwrap());
        assert_eq!(
            answer_of(&mut s).1.metadata.response_code,
            ResponseCode::FormErr
        );
        let mut update = Message::new(8, MessageType::Query, OpCode::Update);
        update.add_query(Query::query(Name::from_str("a.").unwrap(), RecordType::A));
        s.handle_query(now, 1, &update.to_vec().unwrap());
        assert_eq!(
            answer_of(&mut s).1.metadata.response_code,
            ResponseCode::NotImp
        );

        // Nothing was forwarded, and good queries are still answered.
        assert!(s.poll_upstream().is_none());
        s.handle_query(now, 1, &whole);
        assert_eq!(answer_of(&mut s).1.answers.len(), 1);
    }

    #[test]
    fn pending_queries_are_bounded() {
        let now = Instant::now();
        let mut s = Server::new(zone(), upstreams());
        for i in 0..MAX_PENDING as u16 + 3 {
            s.handle_query(now, 1, &query(i, "example.com.", RecordType::A, false));
        }
        let mut servfails = 0;
        while let Some((_, b)) = s.poll_reply() {
            let m = Message::from_vec(&b).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            servfails += 1;
        }
        assert_eq!(servfails, 3);
        assert_eq!(s.stats().forwarded, MAX_PENDING as u64);
    }
}
