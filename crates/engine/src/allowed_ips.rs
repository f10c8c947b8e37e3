//! Longest-prefix match from IP addresses to peers (WireGuard's cryptokey routing table).

use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// Maps prefixes to a value; a lookup returns the value of the longest prefix containing the address.
///
/// One hash map per prefix length in use, searched longest first: a lookup costs one hash probe per
/// distinct prefix length (a handful in practice), whatever the number of peers.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    /// (prefix length, is_v6) → network address → value, kept sorted longest prefix first.
    tables: Vec<(u8, bool, HashMap<IpAddr, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps { tables: Vec::new() }
    }
}

impl<T: Clone + PartialEq> AllowedIps<T> {
    /// Inserts (or replaces) a prefix.
    pub fn insert(&mut self, net: IpNet, value: T) {
        let net = net.trunc();
        let (len, v6) = (net.prefix_len(), net.addr().is_ipv6());
        let pos = match self
            .tables
            .iter()
            .position(|(l, is6, _)| *l == len && *is6 == v6)
        {
            Some(p) => p,
            None => {
                self.tables.push((len, v6, HashMap::new()));
                self.tables.sort_by_key(|t| std::cmp::Reverse(t.0));
                self.tables
                    .iter()
                    .position(|(l, is6, _)| *l == len && *is6 == v6)
                    .unwrap_or(0)
            }
        };
        self.tables[pos].2.insert(net.network(), value);
    }

    /// Removes every prefix that maps to `value`.
    pub fn remove_value(&mut self, value: &T) {
        for (_, _, t) in &mut self.tables {
            t.retain(|_, v| v != value);
        }
        self.tables.retain(|(_, _, t)| !t.is_empty());
    }

    /// The value of the longest prefix that contains `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let v6 = addr.is_ipv6();
        for (len, is6, table) in &self.tables {
            if *is6 != v6 {
                continue;
            }
            let Ok(net) = IpNet::new(addr, *len) else {
                continue;
            };
            if let Some(v) = table.get(&net.network()) {
                return Some(v);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        t.insert("10.1.0.0/16".parse().unwrap(), 2);
        t.insert("10.1.2.3/32".parse().unwrap(), 3);
        t.insert("fd00::/64".parse().unwrap(), 4);
        t.insert("0.0.0.0/0".parse().unwrap(), 5);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&3));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&2));
        assert_eq!(t.lookup(ip("10.2.0.1")), Some(&1));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&5));
        assert_eq!(t.lookup(ip("fd00::9")), Some(&4));
        assert_eq!(t.lookup(ip("fd01::9")), None);
    }

    #[test]
    fn removal_by_value() {
        let mut t = AllowedIps::default();
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        t.insert("10.1.0.0/16".parse().unwrap(), 2);
        t.remove_value(&2);
        assert_eq!(t.lookup(ip("10.1.0.1")), Some(&1));
        t.remove_value(&1);
        assert_eq!(t.lookup(ip("10.1.0.1")), None);
    }

    #[test]
    fn host_bits_are_ignored_on_insert() {
        let mut t = AllowedIps::default();
        t.insert("10.0.0.7/24".parse().unwrap(), 1);
        assert_eq!(t.lookup(ip("10.0.0.200")), Some(&1));
    }
}
