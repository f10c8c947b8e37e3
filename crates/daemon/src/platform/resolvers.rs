//! The resolvers a resolv.conf names: where the DNS server inside the tunnel forwards names
//! that are not the account's.

use std::net::{IpAddr, SocketAddr};

/// The `nameserver` addresses of a resolv.conf, port 53, without pinholed's own (a
/// resolv.conf pointing at it must not make it forward to itself).
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) keeps only its address.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .filter(|a| *a != IpAddr::V4(pinhole_dns::SERVER_V4))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_are_read_and_ours_left_out() {
        let text = "# generated\nsearch example.com\nnameserver 127.0.0.53\n  nameserver   2001:db8::1\nnameserver fe80::1%eth0\nnameserver 100.100.100.100\nnameserver not-an-address\noptions edns0\n";
        let got: Vec<String> = nameservers(text).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.53:53", "[2001:db8::1]:53", "[fe80::1]:53"]);
    }
}
