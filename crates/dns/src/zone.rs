//! The account's zone, built from the network map: each node's name under the DNS suffix with
//! its overlay addresses (A, AAAA), the reverse names of those addresses (PTR), and what is
//! authoritatively absent (NXDOMAIN under the suffix, NODATA for a name without that type).

use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

/// How long resolvers may keep our answers: short, so a rename or a new peer shows at once.
pub const TTL: u32 = 10;

/// The account's DNS suffix when it has none of its own (`.internal` is reserved for
/// private use).
pub const DEFAULT_SUFFIX: &str = "pinhole.internal";

/// One node of the map as the zone sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneNode {
    /// Its label (already unique in the account).
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// Why a zone could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneError {
    #[error(
        "{0:?} is not a DNS suffix (labels of letters, digits and hyphens, separated by dots)"
    )]
    BadSuffix(String),
}

/// What the zone says about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// These records answer it.
    Records(Vec<Record>),
    /// The name exists but has no record of that type.
    NoData,
    /// The name is ours and does not exist.
    NxDomain,
    /// Not ours to answer: forward it.
    NotOurs,
}

/// The names the node answers for.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lower-case and fully qualified.
    suffix: Name,
    by_name: HashMap<String, Vec<IpAddr>>,
    by_address: HashMap<IpAddr, String>,
    /// The overlay's address ranges: reverse names inside them are ours.
    reverse: Vec<IpNet>,
    /// Changes with every map that changes the zone (the SOA's serial).
    serial: u32,
}

impl Zone {
    /// The zone for `suffix` with `nodes` (this node and its peers); PTR questions for
    /// addresses inside `reverse` are answered here (NXDOMAIN for unknown ones).
    pub fn new(
        suffix: &str,
        nodes: impl IntoIterator<Item = ZoneNode>,
        reverse: Vec<IpNet>,
        serial: u32,
    ) -> Result<Self, ZoneError> {
        let suffix = parse_suffix(suffix)?;
        let mut by_name = HashMap::new();
        let mut by_address = HashMap::new();
        for node in nodes {
            let name = node.name.to_ascii_lowercase();
            for a in &node.addresses {
                by_address.insert(*a, name.clone());
            }
            by_name.insert(name, node.addresses);
        }
        Ok(Self {
            suffix,
            by_name,
            by_address,
            reverse,
            serial,
        })
    }

    /// An empty zone (no nodes, nothing reverse) under the default suffix.
    pub fn empty() -> Self {
        Self {
            suffix: Name::from_labels(DEFAULT_SUFFIX.split('.')).unwrap_or_else(|_| Name::root()),
            by_name: HashMap::new(),
            by_address: HashMap::new(),
            reverse: Vec::new(),
            serial: 0,
        }
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether it holds no names.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// What the zone says about `name` (any case) and `qtype`; the records are owned by `name`
    /// as asked (its case kept, as resolvers using 0x20 encoding expect).
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Lookup {
        let mut lower = name.to_lowercase();
        lower.set_fqdn(true);
        if self.suffix.zone_of(&lower) {
            let depth = lower.num_labels().saturating_sub(self.suffix.num_labels());
            return match depth {
                0 if qtype == RecordType::SOA => Lookup::Records(vec![self.soa(name)]),
                0 => Lookup::NoData,
                1 => match self.host(&lower) {
                    Some(addresses) => self.addresses(name, addresses, qtype),
                    None => Lookup::NxDomain,
                },
                _ => Lookup::NxDomain,
            };
        }
        if lower.num_labels() == 1 {
            // A bare name that slipped past the search domain: ours if a node has it.
            return match self.host(&lower) {
                Some(addresses) => self.addresses(name, addresses, qtype),
                None => Lookup::NotOurs,
            };
        }
        if let Ok(net) = lower.parse_arpa_name() {
            return self.reverse(name, net, qtype);
        }
        Lookup::NotOurs
    }

    /// The zone's SOA record, owned by `owner` when it answers a question, else by the suffix
    /// (negative answers carry it for caching, RFC 2308).
    pub fn soa(&self, owner: &Name) -> Record {
        let mname = Name::from_labels(["dns"])
            .and_then(|n| n.append_domain(&self.suffix))
            .unwrap_or_else(|_| self.suffix.clone());
        let rname = Name::from_labels(["hostmaster"])
            .and_then(|n| n.append_domain(&self.suffix))
            .unwrap_or_else(|_| self.suffix.clone());
        let soa = SOA::new(mname, rname, self.serial, 3600, 600, 86400, TTL);
        Record::from_rdata(owner.clone(), TTL, RData::SOA(soa))
    }

    /// The SOA owned by the suffix itself.
    pub fn negative_soa(&self) -> Record {
        self.soa(&self.suffix)
    }

    fn host(&self, lower: &Name) -> Option<&Vec<IpAddr>> {
        let label = lower.iter().next()?;
        let label = std::str::from_utf8(label).ok()?;
        self.by_name.get(label)
    }

    fn addresses(&self, owner: &Name, addresses: &[IpAddr], qtype: RecordType) -> Lookup {
        let records: Vec<Record> = addresses
            .iter()
            .filter_map(|a| match (a, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), TTL, rdata))
            .collect();
        if records.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Records(records)
        }
    }

    fn reverse(&self, owner: &Name, net: IpNet, qtype: RecordType) -> Lookup {
        let host_len = if net.addr().is_ipv4() { 32 } else { 128 };
        if net.prefix_len() == host_len {
            if let Some(name) = self.by_address.get(&net.addr()) {
                if qtype != RecordType::PTR && qtype != RecordType::ANY {
                    return Lookup::NoData;
                }
                let Ok(target) =
                    Name::from_labels([name.as_str()]).and_then(|n| n.append_domain(&self.suffix))
                else {
                    return Lookup::NxDomain;
                };
                return Lookup::Records(vec![Record::from_rdata(
                    owner.clone(),
                    TTL,
                    RData::PTR(PTR(target)),
                )]);
            }
            if self.reverse.iter().any(|r| r.contains(&net.addr())) {
                return Lookup::NxDomain;
            }
            return Lookup::NotOurs;
        }
        // A partial reverse name inside one of our ranges exists (its children do) but holds
        // nothing itself.
        if self.reverse.iter().any(|r| r.contains(&net)) {
            return Lookup::NoData;
        }
        Lookup::NotOurs
    }
}

/// The suffix as a lower-case, fully qualified name, refused unless every label is LDH.
fn parse_suffix(suffix: &str) -> Result<Name, ZoneError> {
    let bad = || ZoneError::BadSuffix(suffix.to_string());
    let trimmed = suffix.trim().trim_end_matches('.').to_ascii_lowercase();
    if trimmed.is_empty() || trimmed.len() > 200 {
        return Err(bad());
    }
    let labels: Vec<&str> = trimmed.split('.').collect();
    if !labels.iter().all(|l| crate::label::is_valid(l)) {
        return Err(bad());
    }
    let mut name = Name::from_labels(labels).map_err(|_| bad())?;
    name.set_fqdn(true);
    Ok(name)
}

/// Whether `suffix` may be an account's DNS suffix: the error says why not.
pub fn check_suffix(suffix: &str) -> Result<String, ZoneError> {
    parse_suffix(suffix).map(|n| n.to_ascii().trim_end_matches('.').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone::new(
            "pinhole.internal",
            [
                ZoneNode {
                    name: "nas".into(),
                    addresses: vec![
                        "100.64.0.3".parse().unwrap(),
                        "fd7a:115c:a1e0::6440:3".parse().unwrap(),
                    ],
                },
                ZoneNode {
                    name: "laptop".into(),
                    addresses: vec!["100.64.0.1".parse().unwrap()],
                },
            ],
            vec![
                "100.64.0.0/10".parse().unwrap(),
                "fd7a:115c:a1e0::/48".parse().unwrap(),
            ],
            7,
        )
        .unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rdata(l: Lookup) -> Vec<RData> {
        match l {
            Lookup::Records(r) => r.into_iter().map(|r| r.data).collect(),
            other => panic!("no records: {other:?}"),
        }
    }

    #[test]
    fn a_and_aaaa_for_names_any_case() {
        let z = zone();
        assert_eq!(
            rdata(z.lookup(&name("nas.pinhole.internal."), RecordType::A)),
            vec![RData::A(A("100.64.0.3".parse().unwrap()))]
        );
        assert_eq!(
            rdata(z.lookup(&name("NaS.Pinhole.INTERNAL."), RecordType::AAAA)),
            vec![RData::AAAA(AAAA("fd7a:115c:a1e0::6440:3".parse().unwrap()))]
        );
        // The owner keeps the asker's case.
        match z.lookup(&name("NaS.pinhole.internal."), RecordType::A) {
            Lookup::Records(r) => assert_eq!(r[0].name.to_ascii(), "NaS.pinhole.internal."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodata_nxdomain_and_not_ours() {
        let z = zone();
        // laptop has no IPv6 address; nas has no MX.
        assert_eq!(
            z.lookup(&name("laptop.pinhole.internal."), RecordType::AAAA),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("nas.pinhole.internal."), RecordType::MX),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("printer.pinhole.internal."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            z.lookup(&name("a.nas.pinhole.internal."), RecordType::A),
            Lookup::NxDomain
        );
        assert_eq!(
            z.lookup(&name("pinhole.internal."), RecordType::A),
            Lookup::NoData
        );
        assert!(matches!(
            z.lookup(&name("pinhole.internal."), RecordType::SOA),
            Lookup::Records(_)
        ));
        assert_eq!(
            z.lookup(&name("example.com."), RecordType::A),
            Lookup::NotOurs
        );
        // A name that only ends like the suffix is not under it.
        assert_eq!(
            z.lookup(&name("nas.notpinhole.internal."), RecordType::A),
            Lookup::NotOurs
        );
    }

    #[test]
    fn bare_names_are_ours_only_when_a_node_has_them() {
        let z = zone();
        assert_eq!(
            rdata(z.lookup(&name("nas"), RecordType::A)),
            vec![RData::A(A("100.64.0.3".parse().unwrap()))]
        );
        assert_eq!(z.lookup(&name("printer"), RecordType::A), Lookup::NotOurs);
    }

    #[test]
    fn ptr_for_overlay_addresses() {
        let z = zone();
        assert_eq!(
            rdata(z.lookup(&name("3.0.64.100.in-addr.arpa."), RecordType::PTR)),
            vec![RData::PTR(PTR(name("nas.pinhole.internal.")))]
        );
        let v6 = "3.0.0.0.0.4.4.6.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.";
        assert_eq!(
            rdata(z.lookup(&name(v6), RecordType::PTR)),
            vec![RData::PTR(PTR(name("nas.pinhole.internal.")))]
        );
        assert_eq!(
            z.lookup(&name("9.0.64.100.in-addr.arpa."), RecordType::PTR),
            Lookup::NxDomain
        );
        assert_eq!(
            z.lookup(&name("64.100.in-addr.arpa."), RecordType::PTR),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("1.2.0.192.in-addr.arpa."), RecordType::PTR),
            Lookup::NotOurs
        );
    }

    #[test]
    fn suffixes_are_checked() {
        assert_eq!(check_suffix("Corp.Example.").unwrap(), "corp.example");
        assert!(check_suffix("").is_err());
        assert!(check_suffix("bad_label.internal").is_err());
        assert!(check_suffix("a..b").is_err());
        assert!(Zone::new("my corp", [], vec![], 1).is_err());
    }
}
