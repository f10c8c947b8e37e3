//! The node's DNS server inside the tunnel, a handle the shell holds: queries to
//! 100.100.100.100:53 (and `::53` of the account's IPv6 prefix) are taken off the TUN device,
//! answered from the map's zone or forwarded to the system's resolvers over a socket of its
//! own, and the answers are written back to the TUN device. While an exit node is in use, the
//! queries it does not answer go to the exit node's DNS server instead of the system's
//! resolvers; an approved exit node answers its peers' queries to its own overlay addresses
//! (taken off the tunnel before the TUN device, answered back into it).

use pinhole_dataplane::ip_udp;
use pinhole_dns::{Server, Zone, ZoneNode};
use pinhole_proto::control::Node;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;
use tokio::net::UdpSocket;

use pinhole_dns::SERVER_V4 as DNS_V4;
/// The last group of its IPv6 address in the account's /48.
const DNS_V6_HOST: u16 = 0x53;
/// The largest answer a resolver may send us.
const MAX_ANSWER: usize = 65_535;

/// Who asked, and which of our addresses they asked (the answer comes from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    client: SocketAddr,
    server: SocketAddr,
    /// A peer asked through the tunnel (this node is its exit node).
    peer: bool,
}

/// The server and its socket toward the system's resolvers.
pub struct Names {
    server: Server<Asker>,
    v6: Option<Ipv6Addr>,
    /// Opened at the first forwarded query.
    socket: Option<UdpSocket>,
    /// Where answers from resolvers are read into (made with the socket).
    buf: Option<Vec<u8>>,
    /// What the zone was last built from, to rebuild it only when names or addresses change.
    built_from: Vec<ZoneNode>,
    suffix: String,
    serial: u32,
    /// The system's resolvers (upstreams when no exit node is used).
    system: Vec<SocketAddr>,
    /// This node's overlay addresses, where peers using it as their exit node ask.
    serve_peers_at: Vec<IpAddr>,
}

impl Names {
    /// A server with an empty zone that forwards to `upstreams`.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            server: Server::new(Zone::empty(), upstreams.clone()),
            system: upstreams,
            serve_peers_at: Vec::new(),
            v6: None,
            socket: None,
            buf: None,
            built_from: Vec::new(),
            suffix: pinhole_dns::DEFAULT_SUFFIX.to_string(),
            serial: 0,
        }
    }

    /// The addresses the server answers on.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut a = vec![IpAddr::V4(DNS_V4)];
        a.extend(self.v6.map(IpAddr::V6));
        a
    }

    /// The resolvers other names go to.
    pub fn upstreams(&self) -> &[SocketAddr] {
        self.server.upstreams()
    }

    /// The account's DNS suffix, as the map last gave it.
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// The server as `pinhole status` shows it.
    pub fn status(&self) -> pinhole_proto::ipc::DnsStatus {
        let stats = self.server.stats();
        pinhole_proto::ipc::DnsStatus {
            suffix: self.suffix.clone(),
            servers: self.addresses().iter().map(|a| a.to_string()).collect(),
            upstreams: self.upstreams().iter().map(|a| a.to_string()).collect(),
            os: String::new(),
            answered: stats.answered,
            forwarded: stats.forwarded,
        }
    }

    /// Rebuilds the zone from this node and its peers if a name or an address changed.
    pub fn set_map<'n>(&mut self, me: Option<&'n Node>, peers: impl Iterator<Item = &'n Node>) {
        let mut nodes: Vec<ZoneNode> = me
            .into_iter()
            .chain(peers)
            .map(|n| ZoneNode {
                name: n.name.to_ascii_lowercase(),
                addresses: n.addresses.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let suffix = me
            .and_then(|n| suffix_of(n))
            .unwrap_or(pinhole_dns::DEFAULT_SUFFIX)
            .to_string();
        if nodes == self.built_from && suffix == self.suffix {
            return;
        }
        // The DNS server's IPv6 address follows this node's prefix.
        self.v6 = me.and_then(|n| {
            n.addresses.iter().find_map(|a| match a {
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    Some(Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, DNS_V6_HOST))
                }
                IpAddr::V4(_) => None,
            })
        });
        let mut reverse = vec![ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default(),
        )];
        if let Some(v6) = self.v6 {
            if let Ok(net) = ipnet::Ipv6Net::new(v6, 48) {
                reverse.push(ipnet::IpNet::V6(net.trunc()));
            }
        }
        self.serial = self.serial.wrapping_add(1);
        match Zone::new(&suffix, nodes.iter().cloned(), reverse, self.serial) {
            Ok(zone) => {
                tracing::debug!(names = zone.len(), %suffix, "DNS zone rebuilt");
                self.server.set_zone(zone);
                self.built_from = nodes;
                self.suffix = suffix;
            }
            Err(e) => tracing::warn!("the map's DNS suffix is refused: {e}"),
        }
    }

    /// Takes a packet read from the TUN device if it is for the DNS server: true if it was
    /// (answered, forwarded or dropped here), false for the engine to route.
    pub fn handle_tun(&mut self, now: Instant, packet: &[u8]) -> bool {
        // Only the destination is read for every packet; the rest only for ours.
        let Some(dst) = pinhole_proto::ip::destination(packet) else {
            return false;
        };
        if dst != IpAddr::V4(DNS_V4) && Some(dst) != self.v6.map(IpAddr::V6) {
            return false;
        }
        // Anything but UDP to port 53 (TCP, ICMP, other ports) has nothing behind it.
        if let Some(d) = ip_udp::parse(packet).filter(|d| d.dst.port() == 53) {
            let asker = Asker {
                client: d.src,
                server: d.dst,
                peer: false,
            };
            self.server.handle_query(now, asker, d.payload);
        }
        true
    }

    /// Takes a packet a peer sent through the tunnel if it is a DNS query to this node's
    /// overlay address while it serves as an exit node: true if it was.
    pub fn handle_peer(&mut self, now: Instant, packet: &[u8]) -> bool {
        if self.serve_peers_at.is_empty() {
            return false;
        }
        let Some(d) = ip_udp::parse(packet) else {
            return false;
        };
        if d.dst.port() != 53 || !self.serve_peers_at.contains(&d.dst.ip()) {
            return false;
        }
        let asker = Asker {
            client: d.src,
            server: d.dst,
            peer: true,
        };
        self.server.handle_query(now, asker, d.payload);
        true
    }

    /// The next answer as an IP packet, and whether it goes to a peer through the tunnel
    /// (else to the TUN device).
    pub fn poll_answer(&mut self) -> Option<(bool, Vec<u8>)> {
        while let Some((asker, answer)) = self.server.poll_reply() {
            if let Some(p) = ip_udp::build(asker.server, asker.client, &answer) {
                return Some((asker.peer, p));
            }
        }
        None
    }

    /// Where names not in the zone are asked: the exit node's DNS server at `exit` while one
    /// is used (it asks its own resolvers, so answers fit where the traffic leaves), the
    /// system's resolvers otherwise.
    pub fn use_exit_node(&mut self, exit: Option<IpAddr>) {
        let want = match exit {
            Some(ip) => vec![SocketAddr::new(ip, 53)],
            None => self.system.clone(),
        };
        if self.server.upstreams() != want.as_slice() {
            tracing::info!(upstreams = ?want, "DNS forwards to");
            self.server.set_upstreams(want);
        }
    }

    /// Answers peers that use this node as their exit node at `addresses` (none: does not).
    pub fn serve_peers(&mut self, addresses: Vec<IpAddr>) {
        self.serve_peers_at = addresses;
    }

    /// Sends the queries waiting for a resolver (a failure is only logged: the next resolver
    /// or SERVFAIL follows).
    pub async fn flush_upstream(&mut self) {
        while let Some((to, query)) = self.server.poll_upstream() {
            if self.socket.is_none() {
                match pinhole_dataplane::udp::bind(0) {
                    Ok(s) => self.socket = Some(s),
                    Err(e) => {
                        tracing::warn!("no socket for forwarding DNS queries: {e}");
                        continue;
                    }
                }
            }
            if let Some(s) = &self.socket {
                let local = s.local_addr().unwrap_or(to);
                let dst = pinhole_dataplane::udp::to_socket_family(&local, to);
                if let Err(e) = s.send_to(&query, dst).await {
                    tracing::debug!("forwarding a DNS query to {to}: {e}");
                }
            }
        }
    }

    /// The next answer from a resolver; never resolves before a query was forwarded.
    /// Resolves when a resolver's answer waits on the socket; never before a query was
    /// forwarded. (Cheap to make on every turn of the loop: nothing is allocated here.)
    pub async fn upstream_readable(&self) {
        let Some(s) = &self.socket else {
            return std::future::pending().await;
        };
        if let Err(e) = s.readable().await {
            tracing::debug!("DNS forwarding socket: {e}");
        }
    }

    /// Takes the resolvers' answers waiting on the socket, into one buffer kept for it.
    pub fn read_upstream(&mut self) {
        let Some(s) = &self.socket else {
            return;
        };
        let buf = self.buf.get_or_insert_with(|| vec![0u8; MAX_ANSWER]);
        loop {
            match s.try_recv_from(buf) {
                Ok((n, from)) => {
                    let from = pinhole_dataplane::udp::canonical(from);
                    self.server.handle_upstream(from, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("DNS forwarding socket: {e}");
                    break;
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.server.handle_timeout(now);
    }
}

/// The suffix of a node's DNS name (`nas.corp.example` → `corp.example`).
fn suffix_of(n: &Node) -> Option<&str> {
    n.dns_name
        .strip_prefix(n.name.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::key::Key;

    fn node(name: &str, v4: &str, v6: &str) -> Node {
        Node {
            id: name.into(),
            name: name.into(),
            dns_name: format!("{name}.corp.example"),
            node_key: Key([1; 32]),
            disco_key: Key([2; 32]),
            addresses: vec![v4.parse().unwrap(), v6.parse().unwrap()],
            endpoints: Vec::new(),
            home_relay: None,
            online: true,
            last_seen: None,
            os: "linux".into(),
            user: None,
            expires_at: None,
            tags: Vec::new(),
            routes: Vec::new(),
        }
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn queries_off_the_tun_device_are_answered_back_to_the_asker() {
        let me = node("laptop", "100.64.0.1", "fd7a:115c:a1e0::6440:1");
        let nas = node("nas", "100.64.0.3", "fd7a:115c:a1e0::6440:3");
        let mut names = Names::new(Vec::new());
        names.set_map(Some(&me), [&nas].into_iter());
        assert_eq!(names.status().suffix, "corp.example");
        assert_eq!(
            names.addresses(),
            vec![
                IpAddr::V4(DNS_V4),
                "fd7a:115c:a1e0::53".parse::<IpAddr>().unwrap()
            ]
        );
        let now = Instant::now();
        for server in ["100.100.100.100:53", "[fd7a:115c:a1e0::53]:53"] {
            let server: SocketAddr = server.parse().unwrap();
            let client: SocketAddr = if server.is_ipv4() {
                "100.64.0.1:41000".parse().unwrap()
            } else {
                "[fd7a:115c:a1e0::6440:1]:41000".parse().unwrap()
            };
            let packet = ip_udp::build(client, server, &query(7, "nas.corp.example")).unwrap();
            assert!(names.handle_tun(now, &packet));
            let answer = names.poll_answer().expect("an answer packet").1;
            let d = ip_udp::parse(&answer).unwrap();
            assert_eq!((d.src, d.dst), (server, client));
            assert_eq!(&d.payload[..2], &[0, 7]);
            // One answer record (ANCOUNT), ending in 100.64.0.3.
            assert_eq!(&d.payload[6..8], &[0, 1]);
            assert!(d.payload.ends_with(&[100, 64, 0, 3]));
        }
        // Packets for anyone else are the engine's; other ports of ours are dropped.
        let other = ip_udp::build(
            "100.64.0.1:41000".parse().unwrap(),
            "100.64.0.3:53".parse().unwrap(),
            b"x",
        )
        .unwrap();
        assert!(!names.handle_tun(now, &other));
        let port = ip_udp::build(
            "100.64.0.1:41000".parse().unwrap(),
            "100.100.100.100:54".parse().unwrap(),
            &query(8, "nas.corp.example"),
        )
        .unwrap();
        assert!(names.handle_tun(now, &port));
        assert!(names.poll_answer().is_none());
    }

    #[test]
    fn the_zone_follows_renames() {
        let me = node("laptop", "100.64.0.1", "fd7a:115c:a1e0::6440:1");
        let mut names = Names::new(Vec::new());
        names.set_map(Some(&me), [node("nas", "100.64.0.3", "fd7a::3")].iter());
        let serial = names.serial;
        names.set_map(Some(&me), [node("nas", "100.64.0.3", "fd7a::3")].iter());
        assert_eq!(
            names.serial, serial,
            "an unchanged map leaves the zone alone"
        );
        names.set_map(Some(&me), [node("tv", "100.64.0.3", "fd7a::3")].iter());
        assert_ne!(names.serial, serial);
        let packet = ip_udp::build(
            "100.64.0.1:41000".parse().unwrap(),
            "100.100.100.100:53".parse().unwrap(),
            &query(9, "nas.corp.example"),
        )
        .unwrap();
        assert!(names.handle_tun(Instant::now(), &packet));
        let answer = names.poll_answer().unwrap().1;
        let d = ip_udp::parse(&answer).unwrap();
        assert_eq!(d.payload[3] & 0x0f, 3, "NXDOMAIN after the rename");
    }
}
