//! The addresses peers can try to reach this node at: the local address used toward the
//! coordination server first, then every other usable interface address, all with the UDP port;
//! then the gateway's port mapping, then the addresses STUN servers saw. Each is published with
//! its kind.

use pinhole_dataplane::udp::source_toward;
use pinhole_proto::endpoint::{Endpoint, EndpointKind};
use std::net::{IpAddr, SocketAddr};

/// Most endpoints published.
const MAX: usize = 16;

/// Local endpoints on `port`: the source address toward `toward` first; loopback, link-local,
/// multicast and `skip` (the node's own overlay addresses) left out.
pub fn local(port: u16, toward: Option<IpAddr>, skip: &[IpAddr]) -> Vec<SocketAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(dst) = toward {
        if let Some(src) = source_toward(dst) {
            ips.push(src);
        }
    }
    match if_addrs::get_if_addrs() {
        Ok(list) => {
            let mut rest: Vec<IpAddr> = list.into_iter().map(|i| i.ip()).collect();
            rest.sort_by_key(|ip| ip.is_ipv6());
            ips.extend(rest);
        }
        Err(e) => tracing::debug!("listing interface addresses: {e}"),
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for ip in ips {
        if usable(&ip) && !skip.contains(&ip) && !out.iter().any(|e| e.ip() == ip) {
            out.push(SocketAddr::new(ip, port));
        }
        if out.len() == MAX {
            break;
        }
    }
    out
}

/// The endpoints to publish: the interface addresses (`local`), the port the gateway maps to
/// this node (`mapped`, `portmap`), then the reflexive ones (as STUN servers saw this node,
/// `stun`), each address once, at most [`MAX`] in all (a port mapping always has a place).
pub fn merge(
    local: Vec<SocketAddr>,
    mapped: Option<SocketAddr>,
    reflexive: &[SocketAddr],
) -> Vec<Endpoint> {
    let room = MAX - usize::from(mapped.is_some());
    let mut out: Vec<Endpoint> = local
        .into_iter()
        .take(room)
        .map(|a| Endpoint::new(a, EndpointKind::Local))
        .collect();
    let more = mapped
        .map(|m| (m, EndpointKind::Portmap))
        .into_iter()
        .chain(reflexive.iter().map(|r| (*r, EndpointKind::Stun)));
    for (addr, kind) in more {
        if out.len() >= MAX {
            break;
        }
        if !out.iter().any(|e| e.addr == addr) {
            out.push(Endpoint::new(addr, kind));
        }
    }
    out
}

fn usable(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_broadcast(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflexive_addresses_come_after_the_local_ones_once_each() {
        let e = |s: &str| s.parse::<SocketAddr>().unwrap();
        let merged = merge(
            vec![e("10.0.0.2:41641"), e("192.0.2.7:41641")],
            None,
            &[e("198.51.100.3:20000"), e("192.0.2.7:41641")],
        );
        let kinds: Vec<(SocketAddr, EndpointKind)> =
            merged.iter().map(|x| (x.addr, x.kind)).collect();
        assert_eq!(
            kinds,
            [
                (e("10.0.0.2:41641"), EndpointKind::Local),
                (e("192.0.2.7:41641"), EndpointKind::Local),
                (e("198.51.100.3:20000"), EndpointKind::Stun)
            ]
        );
        let many: Vec<SocketAddr> = (0..20).map(|i| e(&format!("10.0.0.{i}:41641"))).collect();
        assert_eq!(merge(many.clone(), None, &[e("198.51.100.3:1")]).len(), MAX);
        // A port mapping comes before the STUN addresses and keeps its place in a full list.
        let with_map = merge(many, Some(e("198.51.100.3:41641")), &[e("198.51.100.3:1")]);
        assert_eq!(with_map.len(), MAX);
        assert_eq!(
            with_map.last().map(|x| (x.addr, x.kind)),
            Some((e("198.51.100.3:41641"), EndpointKind::Portmap))
        );
        let kinds: Vec<EndpointKind> = merge(
            vec![e("10.0.0.2:41641")],
            Some(e("198.51.100.3:41641")),
            &[e("198.51.100.3:20000")],
        )
        .iter()
        .map(|x| x.kind)
        .collect();
        assert_eq!(
            kinds,
            [
                EndpointKind::Local,
                EndpointKind::Portmap,
                EndpointKind::Stun
            ]
        );
    }

    #[test]
    fn leaves_out_what_peers_cannot_reach() {
        for bad in [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!usable(&bad.parse().unwrap()), "{bad}");
        }
        for good in ["192.0.2.1", "2001:db8::1", "10.0.0.1"] {
            assert!(usable(&good.parse().unwrap()), "{good}");
        }
    }

    #[test]
    fn lists_no_loopback_and_skips_own_addresses() {
        let all = local(41641, None, &[]);
        assert!(all
            .iter()
            .all(|e| !e.ip().is_loopback() && e.port() == 41641));
        if let Some(first) = all.first() {
            let fewer = local(41641, None, &[first.ip()]);
            assert!(!fewer.contains(first));
        }
    }
}
