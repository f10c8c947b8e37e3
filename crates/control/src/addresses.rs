//! Overlay addresses: IPv4 from 100.64.0.0/10 (the shared address space of RFC 6598, as Tailscale
//! uses it) and IPv6 from a unique local /48 (RFC 4193) picked once per deployment. A node's IPv6
//! address carries its IPv4 address in its low 32 bits, so the two always match.

use rand::RngCore;
use std::net::{Ipv4Addr, Ipv6Addr};

/// First and last IPv4 address handed out (100.64.0.0 and 100.127.255.255 are left alone).
pub const V4_FIRST: u32 = u32::from_be_bytes([100, 64, 0, 1]);
pub const V4_LAST: u32 = u32::from_be_bytes([100, 127, 255, 254]);

/// A fresh RFC 4193 prefix: `fd` + 40 random bits, as text `fdxx:xxxx:xxxx::/48`.
pub fn new_ula_prefix() -> String {
    let mut id = [0u8; 5];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let p = Ipv6Addr::new(
        0xfd00 | u16::from(id[0]),
        u16::from_be_bytes([id[1], id[2]]),
        u16::from_be_bytes([id[3], id[4]]),
        0,
        0,
        0,
        0,
        0,
    );
    format!("{p}/48")
}

/// The IPv6 address matching `v4` inside the /48 `prefix` (its first three groups).
pub fn v6_for(prefix: &Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    let s = prefix.segments();
    let o = v4.octets();
    Ipv6Addr::new(
        s[0],
        s[1],
        s[2],
        0,
        0,
        0,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([o[2], o[3]]),
    )
}

/// The next IPv4 address after `max` (the highest in use), or the first gap in `used` (ascending)
/// once the range's end is reached; none when every address is taken.
pub fn next_v4(max: Option<u32>, used: impl FnOnce() -> Vec<u32>) -> Option<u32> {
    match max {
        None => Some(V4_FIRST),
        Some(m) if m < V4_FIRST => Some(V4_FIRST),
        Some(m) if m < V4_LAST => Some(m + 1),
        Some(_) => {
            let mut want = V4_FIRST;
            for u in used() {
                if u < want {
                    continue;
                }
                if u > want {
                    return Some(want);
                }
                if want == V4_LAST {
                    return None;
                }
                want += 1;
            }
            (want <= V4_LAST).then_some(want)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_then_fills_gaps() {
        assert_eq!(next_v4(None, Vec::new), Some(V4_FIRST));
        assert_eq!(next_v4(Some(V4_FIRST), Vec::new), Some(V4_FIRST + 1));
        assert_eq!(
            next_v4(Some(V4_LAST), || vec![
                V4_FIRST,
                V4_FIRST + 1,
                V4_FIRST + 3,
                V4_LAST
            ]),
            Some(V4_FIRST + 2)
        );
        assert_eq!(
            next_v4(Some(V4_LAST), || (V4_FIRST..=V4_LAST).collect()),
            None
        );
        assert_eq!(
            Ipv4Addr::from(V4_LAST),
            "100.127.255.254".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn ula_prefix_is_rfc4193_and_v6_follows_v4() {
        let p = new_ula_prefix();
        let net: ipnet::Ipv6Net = p.parse().unwrap();
        assert_eq!(net.prefix_len(), 48);
        assert_eq!(net.addr().segments()[0] & 0xff00, 0xfd00);
        let v6 = v6_for(&net.addr(), Ipv4Addr::new(100, 64, 0, 7));
        assert!(net.contains(&v6));
        assert_eq!(v6.segments()[6..], [0x6440, 0x0007]);
    }
}
