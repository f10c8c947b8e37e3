use super::*;
use std::net::IpAddr;
use std::time::Duration;

const ME: &str = "100.64.0.2";
const DEV: &str = "100.64.0.1";
const OTHER: &str = "100.64.0.9";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(proto: u8, src: &str, dst: &str, l4: &[u8]) -> Vec<u8> {
    v4_frag(proto, src, dst, l4, 7, 0, false)
}

fn v4_frag(
    proto: u8,
    src: &str,
    dst: &str,
    l4: &[u8],
    id: u16,
    offset8: u16,
    more: bool,
) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    let fo = offset8 | if more { 0x2000 } else { 0 };
    p[6..8].copy_from_slice(&fo.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    let (IpAddr::V4(s), IpAddr::V4(d)) = (ip(src), ip(dst)) else {
        panic!()
    };
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    p.extend_from_slice(l4);
    p
}

fn v6(next: u8, src: &str, dst: &str, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    let (IpAddr::V6(s), IpAddr::V6(d)) = (ip(src), ip(dst)) else {
        panic!()
    };
    p[8..24].copy_from_slice(&s.octets());
    p[24..40].copy_from_slice(&d.octets());
    p.extend_from_slice(l4);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h
}

fn icmp(kind: u8, id: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = kind;
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h
}

fn rule(src: &str, dst: &str, ports: &[u16], protos: &[u8]) -> FilterRule {
    FilterRule {
        src: vec![src.parse().unwrap()],
        dst: vec![dst.parse().unwrap()],
        ports: ports.iter().map(|p| PortRange::one(*p)).collect(),
        protos: protos.to_vec(),
    }
}

fn dev_may_ssh() -> Vec<FilterRule> {
    vec![rule("100.64.0.1/32", "100.64.0.2/32", &[22, 443], &[])]
}

#[test]
fn new_flows_need_a_rule() {
    let now = Instant::now();
    let mut f = Filter::new(&dev_may_ssh(), now);
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(50000, 22, 2)), now),
        Ok(())
    );
    assert_eq!(f.inbound(&v4(UDP, DEV, ME, &udp(50000, 443)), now), Ok(()));
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(50000, 5432, 2)), now),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v4(TCP, OTHER, ME, &tcp(50000, 22, 2)), now),
        Err(Drop::Policy)
    );
    // A rule for this node's address does not open another address.
    assert_eq!(
        f.inbound(&v4(TCP, DEV, "100.64.0.3", &tcp(50000, 22, 2)), now),
        Err(Drop::Policy)
    );
    // Ping: rules without proto allow ICMP.
    assert_eq!(f.inbound(&v4(ICMP, DEV, ME, &icmp(8, 1)), now), Ok(()));
    assert_eq!(
        f.inbound(&v4(ICMP, OTHER, ME, &icmp(8, 1)), now),
        Err(Drop::Policy)
    );
    assert_eq!(f.stats().dropped_policy, 4);
}

#[test]
fn replies_to_what_this_node_opened_come_in() {
    let t0 = Instant::now();
    let mut f = Filter::new(&[], t0);
    // Nothing may come in...
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(5432, 40000, 0x12)), t0),
        Err(Drop::Policy)
    );
    // ...except answers to flows this node opened.
    f.outbound(&v4(TCP, ME, DEV, &tcp(40000, 5432, 2)), t0);
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(5432, 40000, 0x12)), t0),
        Ok(())
    );
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(5432, 40001, 0x12)), t0),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v4(TCP, OTHER, ME, &tcp(5432, 40000, 0x12)), t0),
        Err(Drop::Policy)
    );
    f.outbound(&v4(UDP, ME, DEV, &udp(5353, 53)), t0);
    assert_eq!(f.inbound(&v4(UDP, DEV, ME, &udp(53, 5353)), t0), Ok(()));
    // Ping out, the echo reply in; an echo request from the peer is still refused.
    f.outbound(&v4(ICMP, ME, DEV, &icmp(8, 77)), t0);
    assert_eq!(f.inbound(&v4(ICMP, DEV, ME, &icmp(0, 77)), t0), Ok(()));
    assert_eq!(
        f.inbound(&v4(ICMP, DEV, ME, &icmp(0, 78)), t0),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v4(ICMP, DEV, ME, &icmp(8, 77)), t0),
        Err(Drop::Policy)
    );
    // An ICMP error about a packet this node sent comes in; one about nothing does not.
    let quoted = v4(UDP, ME, DEV, &udp(5353, 53));
    let mut err = icmp(3, 0);
    err.extend_from_slice(&quoted[..28]);
    assert_eq!(f.inbound(&v4(ICMP, DEV, ME, &err), t0), Ok(()));
    let other = v4(UDP, ME, DEV, &udp(5354, 53));
    let mut err = icmp(3, 0);
    err.extend_from_slice(&other[..28]);
    assert_eq!(f.inbound(&v4(ICMP, DEV, ME, &err), t0), Err(Drop::Policy));
    // Idle flows are forgotten: UDP after two minutes.
    let later = t0 + Duration::from_secs(121);
    assert_eq!(
        f.inbound(&v4(UDP, DEV, ME, &udp(53, 5353)), later),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(5432, 40000, 0x10)), later),
        Ok(())
    );
}

#[test]
fn ipv6_is_filtered_the_same_way() {
    let now = Instant::now();
    let me = "fd7a:115c:a1e0::2";
    let dev = "fd7a:115c:a1e0::1";
    let rules = vec![rule(
        "fd7a:115c:a1e0::1/128",
        "fd7a:115c:a1e0::2/128",
        &[22],
        &[TCP],
    )];
    let mut f = Filter::new(&rules, now);
    assert_eq!(f.inbound(&v6(TCP, dev, me, &tcp(1, 22, 2)), now), Ok(()));
    assert_eq!(
        f.inbound(&v6(TCP, dev, me, &tcp(1, 23, 2)), now),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v6(UDP, dev, me, &udp(1, 22)), now),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v6(ICMPV6, dev, me, &icmp(128, 1)), now),
        Err(Drop::Policy)
    );
    f.outbound(&v6(ICMPV6, me, dev, &icmp(128, 9)), now);
    assert_eq!(f.inbound(&v6(ICMPV6, dev, me, &icmp(129, 9)), now), Ok(()));
    // Behind a destination-options header the port is still found.
    let mut opts = vec![TCP, 0, 0, 0, 0, 0, 0, 0];
    opts.extend_from_slice(&tcp(1, 22, 2));
    assert_eq!(f.inbound(&v6(60, dev, me, &opts), now), Ok(()));
}

#[test]
fn fragments_follow_their_first() {
    let now = Instant::now();
    let mut f = Filter::new(&dev_may_ssh(), now);
    let first = v4_frag(UDP, DEV, ME, &udp(1, 443), 99, 0, true);
    let later = v4_frag(UDP, DEV, ME, &[0u8; 64], 99, 3, false);
    // A later fragment whose first was not seen is dropped...
    assert_eq!(f.inbound(&later, now), Err(Drop::Fragment));
    // ...and let in once its first fragment was.
    assert_eq!(f.inbound(&first, now), Ok(()));
    assert_eq!(f.inbound(&later, now), Ok(()));
    // A refused first fragment opens nothing for the rest.
    let bad_first = v4_frag(UDP, DEV, ME, &udp(1, 9999), 100, 0, true);
    let bad_later = v4_frag(UDP, DEV, ME, &[0u8; 64], 100, 3, false);
    assert_eq!(f.inbound(&bad_first, now), Err(Drop::Policy));
    assert_eq!(f.inbound(&bad_later, now), Err(Drop::Fragment));
    // A first fragment too short to show its ports is malformed.
    let tiny = v4_frag(TCP, DEV, ME, &[0, 22], 101, 0, true);
    assert_eq!(f.inbound(&tiny, now), Err(Drop::Malformed));
    // IPv6: the fragment header.
    let (me, dev) = ("fd7a::2", "fd7a::1");
    let rules = vec![rule("fd7a::1/128", "fd7a::2/128", &[443], &[UDP])];
    let mut f = Filter::new(&rules, now);
    let frag = |offset8: u16, more: bool, rest: &[u8]| {
        let mut h = vec![UDP, 0, 0, 0, 0, 0, 0, 5];
        h[2..4].copy_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
        h.extend_from_slice(rest);
        v6(44, dev, me, &h)
    };
    assert_eq!(
        f.inbound(&frag(100, false, &[0; 16]), now),
        Err(Drop::Fragment)
    );
    assert_eq!(f.inbound(&frag(0, true, &udp(1, 443)), now), Ok(()));
    assert_eq!(f.inbound(&frag(100, false, &[0; 16]), now), Ok(()));
}

#[test]
fn a_new_policy_rejudges_what_the_old_one_let_in() {
    let now = Instant::now();
    let mut f = Filter::new(&dev_may_ssh(), now);
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(50000, 22, 2)), now),
        Ok(())
    );
    f.outbound(&v4(TCP, ME, DEV, &tcp(41000, 80, 2)), now);
    f.set_rules(&[]);
    // The peer's SSH session is cut; this node's own connection keeps its replies.
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(50000, 22, 0x10)), now),
        Err(Drop::Policy)
    );
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(80, 41000, 0x10)), now),
        Ok(())
    );
    // And a looser policy opens what was closed, at once.
    f.set_rules(&[rule("100.64.0.1/32", "100.64.0.2/32", &[5432], &[TCP])]);
    assert_eq!(
        f.inbound(&v4(TCP, DEV, ME, &tcp(50001, 5432, 2)), now),
        Ok(())
    );
}

#[test]
fn the_flow_table_stays_within_its_bound() {
    let now = Instant::now();
    let mut f = Filter::with_bounds(&[], now, 64, 8);
    for port in 0..1000u16 {
        f.outbound(&v4(UDP, ME, DEV, &udp(10000 + port, 53)), now);
    }
    assert!(f.tracked_flows() <= 64, "{}", f.tracked_flows());
    assert!(f.stats().evicted >= 900);
    // The newest flows are the ones kept.
    assert_eq!(f.inbound(&v4(UDP, DEV, ME, &udp(53, 10999)), now), Ok(()));
    assert!(
        Filter::bytes_per_flow() <= 64,
        "{}",
        Filter::bytes_per_flow()
    );
}

#[test]
fn garbage_is_dropped_not_a_panic() {
    let now = Instant::now();
    let mut f = Filter::new(&dev_may_ssh(), now);
    for junk in [&[][..], &[0x45], &[0x60; 39], &[0x4f; 20], &[0x12; 100]] {
        assert!(f.inbound(junk, now).is_err());
        f.outbound(junk, now);
    }
    // A header length past the end.
    let mut p = v4(TCP, DEV, ME, &tcp(1, 22, 2));
    p[0] = 0x4f;
    assert_eq!(f.inbound(&p[..30], now), Err(Drop::Malformed));
}

proptest::proptest! {
    #[test]
    fn any_bytes_get_a_verdict(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
        let now = Instant::now();
        let mut f = Filter::new(&dev_may_ssh(), now);
        f.outbound(&bytes, now);
        let _ = f.inbound(&bytes, now);
    }
}

/// Every input in the committed corpus of the `filter` fuzz target (and any crash the fuzzer
/// found, kept there) runs cleanly.
#[test]
fn the_filter_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/filter");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus of filter ({}): {e}", dir.display()));
    let mut inputs = 0;
    for e in entries {
        let data = std::fs::read(e.expect("a corpus entry").path()).expect("a corpus file");
        fuzz(&data);
        inputs += 1;
    }
    assert!(inputs >= 20, "the corpus of filter has {inputs} inputs");
}
