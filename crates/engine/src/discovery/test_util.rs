//! Helpers the discovery tests share.

use super::*;

pub fn ep(s: &str, kind: EndpointKind) -> Endpoint {
    Endpoint::new(s.parse().unwrap(), kind)
}

pub fn pings(sends: &[Send]) -> Vec<SocketAddr> {
    sends
        .iter()
        .filter_map(|s| match s {
            Send::Ping(a) => Some(*a),
            Send::CallMeMaybe => None,
            _ => None,
        })
        .collect()
}

/// Sends the pings as the engine would, with ids 0, 1, 2…, returning the ids by address.
pub fn send(
    d: &mut Discovery,
    now: Instant,
    sends: &[Send],
    n: &mut u8,
) -> Vec<(SocketAddr, TxId)> {
    pings(sends)
        .into_iter()
        .map(|a| {
            *n += 1;
            let tx = TxId([*n; 12]);
            d.ping_sent(now, a, tx);
            (a, tx)
        })
        .collect()
}

pub const OBS: &str = "192.0.2.99:1";
