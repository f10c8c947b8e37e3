//! Port prediction: from the ports STUN servers saw a peer at, whether its NAT allocates in
//! sequence (and which ports come next) or at random (then birthday probing applies).

use super::*;

/// Port prediction: where a peer behind a NAT that allocates ports in sequence will map its
/// next flows. Its STUN-seen ports on one address, when two or more differ by at most
/// [`SEQUENTIAL_SPAN`], are followed by the next [`PREDICT_AHEAD`] ports; otherwise nothing
/// (one STUN port is an easy NAT; ports far apart are random).
pub(super) fn predict(endpoints: &[Endpoint]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let stun: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Stun)
        .map(|e| e.addr)
        .collect();
    let mut ips: Vec<IpAddr> = stun.iter().map(|a| a.ip()).collect();
    ips.sort();
    ips.dedup();
    for ip in ips {
        let mut ports: Vec<u16> = stun
            .iter()
            .filter(|a| a.ip() == ip)
            .map(|a| a.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let (Some(&low), Some(&high)) = (ports.first(), ports.last()) else {
            continue;
        };
        if ports.len() < 2 || high - low > SEQUENTIAL_SPAN {
            continue;
        }
        out.extend(
            (1..=PREDICT_AHEAD)
                .filter_map(|d| high.checked_add(d))
                .map(|p| SocketAddr::new(ip, p)),
        );
    }
    out
}

/// The widest gap between two ports STUN servers saw a node at on one address (0 when they
/// agree; none with fewer than two STUN endpoints on one address). Above zero the node's NAT
/// maps each destination to its own port; above [`SEQUENTIAL_SPAN`], to ports nobody can
/// predict.
pub fn stun_port_spread(endpoints: &[Endpoint]) -> Option<u16> {
    let stun: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|e| e.kind == EndpointKind::Stun)
        .map(|e| e.addr)
        .collect();
    let mut spread = None;
    for (i, a) in stun.iter().enumerate() {
        for b in stun[i + 1..].iter().filter(|b| b.ip() == a.ip()) {
            let gap = a.port().abs_diff(b.port());
            spread = Some(spread.map_or(gap, |s: u16| s.max(gap)));
        }
    }
    spread
}

/// Whether a node's own endpoints show a NAT that maps every destination to a random port.
pub(crate) fn random_ports(endpoints: &[Endpoint]) -> bool {
    stun_port_spread(endpoints).is_some_and(|s| s > SEQUENTIAL_SPAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::test_util::*;

    #[test]
    fn ports_seen_close_together_predict_the_next_ones_and_only_then() {
        let e = |s: &str, k| ep(s, k);
        let seq = [
            e("10.0.0.2:41641", EndpointKind::Local),
            e("203.0.113.2:20007", EndpointKind::Stun),
            e("203.0.113.2:20008", EndpointKind::Stun),
        ];
        let p = predict(&seq);
        assert_eq!(p.len(), usize::from(PREDICT_AHEAD));
        assert_eq!(p[0], "203.0.113.2:20009".parse().unwrap());
        assert_eq!(*p.last().unwrap(), "203.0.113.2:20024".parse().unwrap());
        // One STUN port (an easy NAT), ports far apart (random), the top of the range.
        assert!(predict(&seq[..2]).is_empty());
        assert!(predict(&[
            e("203.0.113.2:20007", EndpointKind::Stun),
            e("203.0.113.2:51234", EndpointKind::Stun)
        ])
        .is_empty());
        assert_eq!(
            predict(&[
                e("203.0.113.2:65533", EndpointKind::Stun),
                e("203.0.113.2:65534", EndpointKind::Stun)
            ]),
            vec!["203.0.113.2:65535".parse().unwrap()]
        );

        // A round pings the predicted ports with its candidates, until a path is trusted.
        let t0 = Instant::now();
        let mut d = Discovery::new();
        d.set_candidates(t0, &seq);
        let sent = pings(&d.note_traffic(t0).unwrap());
        assert_eq!(sent.len(), 3 + usize::from(PREDICT_AHEAD), "{sent:?}");
        assert!(sent.contains(&"203.0.113.2:20010".parse().unwrap()));
    }
}
