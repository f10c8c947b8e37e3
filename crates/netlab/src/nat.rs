//! NAT router profiles (RFC 4787) and the nftables ruleset that makes a Linux namespace behave
//! as one.
//!
//! Mapping: endpoint-independent (EIM), address-dependent (ADM), address-and-port-dependent
//! (ADPM). Filtering: EIF, ADF, ADPF. Linux's own conntrack NAT is EIM with port preservation
//! and ADPF filtering; the rest is built from rules:
//! - the external port is chosen by a hash of what the mapping depends on (EIM without port
//!   preservation: internal address and port; ADM: plus the destination address; ADPM: plus
//!   the destination port), or at random per flow (`random`, as `masquerade random` does), or
//!   the next port of a counter per flow (`seq`: `numgen inc`, a NAT whose ports can be
//!   predicted);
//! - every outbound UDP flow records its external port → internal address and port in a
//!   dynamic map (and, for ADF, the external port and remote address in a set), refreshed by
//!   every outbound packet and expiring with the mapping; inbound packets to a recorded port
//!   are let in (EIF: from anyone; ADF: from an address the inside sent to) by a DNAT through
//!   that map. ADPF needs no rule: conntrack admits only replies.
//! - hairpinning: a packet from the LAN to the router's own external address and a mapped port
//!   goes through the same map and leaves with the sender's external address.
//! - port mapping (`+upnp`, or `+igd` for UPnP IGD alone): the router also runs miniupnpd
//!   (UPnP IGD, NAT-PMP and PCP, see [`crate::natlab`]), which adds its own forwarding rules
//!   in a table of its own.

use std::fmt;
use std::str::FromStr;

/// How the external address and port of a mapping are chosen (RFC 4787 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// Endpoint-independent: one external port per internal address and port.
    Eim,
    /// Address-dependent: one per internal endpoint and remote address.
    Adm,
    /// Address-and-port-dependent: one per internal endpoint and remote address and port.
    Adpm,
}

/// Which inbound packets reach a mapping (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Endpoint-independent: from anyone.
    Eif,
    /// Address-dependent: from addresses the inside has sent to.
    Adf,
    /// Address-and-port-dependent: from addresses and ports the inside has sent to.
    Adpf,
}

/// How external ports relate to internal ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ports {
    /// The internal port is kept when free (Linux's default; with EIM only).
    Preserve,
    /// A port derived from what the mapping depends on (the default for ADM and ADPM).
    Hash,
    /// A random port for every new flow (as `masquerade random`; ADPM only).
    Random,
    /// The next port of a counter for every new flow (ADPM only): a NAT whose next mappings
    /// can be predicted.
    Sequential,
}

/// A router's behaviour, by name: `eim-eif` … `adpm-adpf`, or a classic alias (`full-cone`,
/// `restricted-cone`, `port-restricted-cone`, `symmetric`), optionally followed by modifiers
/// joined with `+`: `preserve`, `hash`, `random` or `seq` (ports), `hairpin` or `no-hairpin`,
/// `timeout=SECONDS` (UDP mapping lifetime), `upnp` (the router grants port mappings by UPnP
/// IGD, NAT-PMP and PCP: miniupnpd) or `igd` (by UPnP IGD only). Two profiles stand alone: `public` (no NAT: the
/// node sits on the public network) and `udp-blocked` (only TCP leaves; NAT as `eim-adpf`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    pub kind: Kind,
    pub hairpin: bool,
    /// The UDP mapping lifetime in seconds (conntrack's and the rules'); Linux's own when None.
    pub udp_timeout: Option<u32>,
    /// Whether the router runs miniupnpd and grants port mappings, and by what.
    pub port_mapping: Option<Granting>,
}

/// The protocols a router grants port mappings by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granting {
    /// UPnP IGD, NAT-PMP and PCP.
    All,
    /// UPnP IGD alone (NAT-PMP and PCP off).
    IgdOnly,
}

/// A `seq` router's ports: the next of these for every new flow, wrapping around.
const SEQ_FIRST_PORT: u16 = 20000;
const SEQ_PORTS: u16 = 1024;
/// The seed of a hashing router's port choice, and the one it has after a reboot
/// ([`crate::natlab::reboot`]): every mapping comes back on another port, as a rebooted
/// router allocates them afresh.
pub const HASH_SEED: &str = "0x5eed";
pub const REBOOTED_HASH_SEED: &str = "0xb007";

/// The UDP ports of the STUN server miniupnpd asks whether its public address is reachable
/// (the lab's public addresses are in a reserved range, which miniupnpd refuses otherwise);
/// the second is RFC 5780's alternate port.
pub const UPNP_STUN_PORTS: [u16; 2] = [3490, 3491];

/// What kind of router a profile is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// No router: a public host.
    Public,
    /// A NAT that drops all UDP (only TCP leaves).
    UdpBlocked,
    Nat {
        mapping: Mapping,
        filtering: Filtering,
        ports: Ports,
    },
}

/// What is wrong with a profile's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProfileError(String);

impl Profile {
    /// A NAT of this mapping and filtering with the default ports (kept for EIM, hashed
    /// otherwise), no hairpinning and Linux's mapping lifetime.
    pub fn nat(mapping: Mapping, filtering: Filtering) -> Profile {
        let ports = match mapping {
            Mapping::Eim => Ports::Preserve,
            _ => Ports::Hash,
        };
        Profile {
            kind: Kind::Nat {
                mapping,
                filtering,
                ports,
            },
            hairpin: false,
            udp_timeout: None,
            port_mapping: None,
        }
    }

    /// The nine mapping × filtering profiles with default modifiers.
    pub fn all_nine() -> Vec<Profile> {
        let mut v = Vec::new();
        for m in [Mapping::Eim, Mapping::Adm, Mapping::Adpm] {
            for f in [Filtering::Eif, Filtering::Adf, Filtering::Adpf] {
                v.push(Profile::nat(m, f));
            }
        }
        v
    }

    /// The four classic cone/symmetric types.
    pub fn classic() -> Vec<Profile> {
        [
            "full-cone",
            "restricted-cone",
            "port-restricted-cone",
            "symmetric",
        ]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
    }

    /// Mapping and filtering, if this is a NAT that passes UDP.
    pub fn behaviour(&self) -> Option<(Mapping, Filtering)> {
        match self.kind {
            Kind::Nat {
                mapping, filtering, ..
            } => Some((mapping, filtering)),
            _ => None,
        }
    }

    /// The nftables ruleset (for `nft -f`) that makes a router with the external interface
    /// `wan` (address `wan_ip`) and the internal interface `lan` behave as this profile.
    /// `None` for a public host, which has no router.
    pub fn ruleset(&self, wan: &str, wan_ip: &str, lan: &str) -> Option<String> {
        let (mapping, filtering, ports) = match self.kind {
            Kind::Public => return None,
            Kind::UdpBlocked => (Mapping::Eim, Filtering::Adpf, Ports::Preserve),
            Kind::Nat {
                mapping,
                filtering,
                ports,
            } => (mapping, filtering, ports),
        };
        let timeout = self.udp_timeout.unwrap_or(180);
        let snat = snat_rule(mapping, ports, wan_ip);
        let mut r = String::new();
        r.push_str("table ip natlab {\n");
        r.push_str(&format!(
            "  map inbound {{ type inet_service : ipv4_addr . inet_service; \
             flags dynamic,timeout; timeout {timeout}s; }}\n"
        ));
        r.push_str(&format!(
            "  set contacted {{ type inet_service . ipv4_addr; \
             flags dynamic,timeout; timeout {timeout}s; }}\n"
        ));
        // Inbound: let packets to a mapped port through the map, as the filtering allows.
        r.push_str("  chain prerouting {\n    type nat hook prerouting priority dstnat;\n");
        match filtering {
            Filtering::Eif => r.push_str(&format!(
                "    iifname \"{wan}\" udp dport @inbound dnat ip to udp dport map @inbound\n"
            )),
            Filtering::Adf => r.push_str(&format!(
                "    iifname \"{wan}\" udp dport . ip saddr @contacted \
                 dnat ip to udp dport map @inbound\n"
            )),
            Filtering::Adpf => {}
        }
        if self.hairpin {
            r.push_str(&format!(
                "    iifname \"{lan}\" ip daddr {wan_ip} udp dport @inbound \
                 dnat ip to udp dport map @inbound\n"
            ));
        }
        r.push_str("  }\n");
        // Outbound: UDP mapped as the profile says; everything else masqueraded.
        r.push_str("  chain postrouting {\n    type nat hook postrouting priority srcnat;\n");
        // The router's own packets (miniupnpd's STUN check) leave untranslated.
        r.push_str(&format!("    ip saddr {wan_ip} accept\n"));
        r.push_str(&format!("    oifname \"{wan}\" meta l4proto udp {snat}\n"));
        if self.hairpin {
            // Hairpinned flows all end at the same internal endpoint, so a hash of the
            // translated addresses would give two of them one port (and the second would clash
            // and vanish): a mapping that depends on the destination takes a fresh port.
            let hairpin_snat = match mapping {
                Mapping::Eim => snat.clone(),
                _ => format!("snat ip to {wan_ip} random"),
            };
            r.push_str(&format!(
                "    iifname \"{lan}\" oifname \"{lan}\" ct status dnat meta l4proto udp {hairpin_snat}\n"
            ));
        }
        r.push_str(&format!("    oifname \"{wan}\" masquerade\n  }}\n"));
        // After the translation: remember each outbound flow's mapping.
        r.push_str("  chain remember {\n    type filter hook postrouting priority srcnat + 10;\n");
        r.push_str(&format!(
            "    oifname \"{wan}\" meta l4proto udp ct direction original \
             update @inbound {{ ct reply proto-dst : ct original ip saddr . ct original proto-src }}\n"
        ));
        r.push_str(&format!(
            "    oifname \"{wan}\" meta l4proto udp ct direction original \
             update @contacted {{ ct reply proto-dst . ip daddr }}\n"
        ));
        r.push_str("  }\n");
        r.push_str(&self.filter_chains(wan, lan));
        Some(r)
    }

    /// The router's firewall chains: what the inside may send and what may come in.
    fn filter_chains(&self, wan: &str, lan: &str) -> String {
        let mut r = String::new();
        // The router's firewall: the inside goes out; only replies and mapped packets come in.
        r.push_str(
            "  chain forward {\n    type filter hook forward priority filter; policy drop;\n",
        );
        if matches!(self.kind, Kind::UdpBlocked) {
            r.push_str("    meta l4proto udp drop\n");
        }
        r.push_str("    ct state established,related accept\n");
        // LANs reach the internet, and each other only by hairpinning through the public
        // address (as if isolated: two nodes behind one router have no direct LAN path).
        r.push_str(&format!("    iifname \"{lan}\" oifname \"{wan}\" accept\n"));
        r.push_str(&format!(
            "    iifname \"{lan}\" oifname \"{lan}\" ct status dnat accept\n"
        ));
        r.push_str(&format!("    iifname \"{wan}\" ct status dnat accept\n"));
        r.push_str("  }\n");
        // Unsolicited UDP for the router itself is dropped, as home routers do: before its
        // connection-tracking entry is confirmed, so it cannot take the tuple a later outbound
        // mapping needs (that clash made Linux pick another port: two port-restricted cones
        // punching at once never met).
        r.push_str("  chain input {\n    type filter hook input priority filter; policy accept;\n");
        if self.port_mapping.is_some() {
            // miniupnpd's reachability check: answers from the other address and port of its
            // STUN server come unasked.
            let [a, b] = UPNP_STUN_PORTS;
            r.push_str(&format!(
                "    iifname \"{wan}\" udp sport {{ {a}, {b} }} accept\n"
            ));
        }
        r.push_str(&format!(
            "    iifname \"{wan}\" meta l4proto udp ct state new drop\n  }}\n}}\n"
        ));
        r
    }

    /// The sysctls (name, value) of the router's namespace for this profile.
    pub fn sysctls(&self) -> Vec<(String, String)> {
        match self.udp_timeout {
            Some(t) => vec![
                (
                    "net.netfilter.nf_conntrack_udp_timeout".into(),
                    t.to_string(),
                ),
                (
                    "net.netfilter.nf_conntrack_udp_timeout_stream".into(),
                    t.to_string(),
                ),
            ],
            None => Vec::new(),
        }
    }
}

impl FromStr for Profile {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Profile, ProfileError> {
        let mut parts = s.split('+');
        let base = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let mut p = match base.as_str() {
            "public" | "none" | "no-nat" => Profile {
                kind: Kind::Public,
                hairpin: false,
                udp_timeout: None,
                port_mapping: None,
            },
            "udp-blocked" => Profile {
                kind: Kind::UdpBlocked,
                hairpin: false,
                udp_timeout: None,
                port_mapping: None,
            },
            "full-cone" => Profile::nat(Mapping::Eim, Filtering::Eif),
            "restricted-cone" => Profile::nat(Mapping::Eim, Filtering::Adf),
            "port-restricted-cone" => Profile::nat(Mapping::Eim, Filtering::Adpf),
            "symmetric" => Profile::nat(Mapping::Adpm, Filtering::Adpf),
            other => {
                let (m, f) = other.split_once('-').ok_or_else(|| unknown(s))?;
                let mapping = match m {
                    "eim" => Mapping::Eim,
                    "adm" => Mapping::Adm,
                    "adpm" => Mapping::Adpm,
                    _ => return Err(unknown(s)),
                };
                let filtering = match f {
                    "eif" => Filtering::Eif,
                    "adf" => Filtering::Adf,
                    "adpf" => Filtering::Adpf,
                    _ => return Err(unknown(s)),
                };
                Profile::nat(mapping, filtering)
            }
        };
        for m in parts {
            let m = m.trim().to_ascii_lowercase();
            match (m.as_str(), &mut p.kind) {
                ("hairpin", _) => p.hairpin = true,
                ("upnp", Kind::Nat { .. }) => p.port_mapping = Some(Granting::All),
                ("igd", Kind::Nat { .. }) => p.port_mapping = Some(Granting::IgdOnly),
                ("upnp" | "igd", _) => {
                    return Err(ProfileError(format!(
                        "{s}: port mapping ({m}) needs a router that passes UDP"
                    )))
                }
                ("no-hairpin", _) => p.hairpin = false,
                (t, _) if t.starts_with("timeout=") => {
                    let secs = t["timeout=".len()..]
                        .trim_end_matches('s')
                        .parse::<u32>()
                        .ok()
                        .filter(|s| (1..=86_400).contains(s))
                        .ok_or_else(|| {
                            ProfileError(format!(
                                "{s}: the timeout is whole seconds from 1 to 86400"
                            ))
                        })?;
                    p.udp_timeout = Some(secs);
                }
                ("preserve" | "hash" | "random" | "seq", Kind::Nat { mapping, ports, .. }) => {
                    *ports = match (m.as_str(), *mapping) {
                        ("preserve", Mapping::Eim) => Ports::Preserve,
                        ("preserve", _) => {
                            return Err(ProfileError(format!(
                                "{s}: port preservation makes Linux map endpoint-independently; \
                                 it goes with eim only"
                            )))
                        }
                        ("hash", _) => Ports::Hash,
                        ("random", Mapping::Adpm) => Ports::Random,
                        ("seq", Mapping::Adpm) => Ports::Sequential,
                        ("seq", _) => {
                            return Err(ProfileError(format!(
                                "{s}: sequential ports are a new mapping per flow: adpm only"
                            )))
                        }
                        _ => {
                            return Err(ProfileError(format!(
                                "{s}: random ports are a new mapping per flow: adpm only"
                            )))
                        }
                    }
                }
                _ => return Err(ProfileError(format!("{s}: unknown modifier {m:?}"))),
            }
        }
        Ok(p)
    }
}

fn unknown(s: &str) -> ProfileError {
    ProfileError(format!(
        "unknown NAT profile {s:?}: one of eim|adm|adpm-eif|adf|adpf (e.g. eim-adf), full-cone, \
         restricted-cone, port-restricted-cone, symmetric, public, udp-blocked, with optional \
         +preserve|+hash|+random|+seq, +hairpin, +timeout=SECONDS, +upnp|+igd"
    ))
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mapping::Eim => "eim",
            Mapping::Adm => "adm",
            Mapping::Adpm => "adpm",
        })
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Filtering::Eif => "eif",
            Filtering::Adf => "adf",
            Filtering::Adpf => "adpf",
        })
    }
}

/// The canonical name: parsing it gives the same profile.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Public => f.write_str("public")?,
            Kind::UdpBlocked => f.write_str("udp-blocked")?,
            Kind::Nat {
                mapping,
                filtering,
                ports,
            } => {
                write!(f, "{mapping}-{filtering}")?;
                let default = Profile::nat(mapping, filtering);
                if !matches!(default.kind, Kind::Nat { ports: p, .. } if p == ports) {
                    f.write_str(match ports {
                        Ports::Preserve => "+preserve",
                        Ports::Hash => "+hash",
                        Ports::Random => "+random",
                        Ports::Sequential => "+seq",
                    })?;
                }
            }
        }
        if self.hairpin {
            f.write_str("+hairpin")?;
        }
        if let Some(t) = self.udp_timeout {
            write!(f, "+timeout={t}")?;
        }
        match self.port_mapping {
            Some(Granting::All) => f.write_str("+upnp")?,
            Some(Granting::IgdOnly) => f.write_str("+igd")?,
            None => {}
        }
        Ok(())
    }
}

/// The rule that translates a router's outbound UDP as its mapping and port allocation say.
fn snat_rule(mapping: Mapping, ports: Ports, wan_ip: &str) -> String {
    // The external port: a hash of what the mapping depends on (nft hands the hash to NAT
    // in host byte order, so the ports spread over the whole range: still one per input).
    let hashed = |what: &str| {
        format!("snat ip to {wan_ip} : jhash {what} mod 40000 seed {HASH_SEED} offset 20000")
    };
    match (mapping, ports) {
        (_, Ports::Random) => format!("snat ip to {wan_ip} random"),
        // A counter through a map of ports: nft would hand the counter itself to NAT in
        // host byte order (ports 256 apart on the wire); mapped values are ports as such.
        (_, Ports::Sequential) => {
            let ports: Vec<String> = (0..SEQ_PORTS)
                .map(|i| format!("{i} : {}", SEQ_FIRST_PORT + i))
                .collect();
            format!(
                "snat ip to {wan_ip} : numgen inc mod {SEQ_PORTS} map {{ {} }}",
                ports.join(", ")
            )
        }
        (Mapping::Eim, Ports::Preserve) => format!("snat ip to {wan_ip}"),
        (Mapping::Eim, _) => hashed("ip saddr . udp sport"),
        (Mapping::Adm, _) => hashed("ip saddr . udp sport . ip daddr"),
        (Mapping::Adpm, _) => hashed("ip saddr . udp sport . ip daddr . udp dport"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse_and_print_back() {
        let sym: Profile = "symmetric".parse().unwrap();
        assert_eq!(sym.behaviour(), Some((Mapping::Adpm, Filtering::Adpf)));
        assert_eq!(sym.to_string(), "adpm-adpf");
        let cone: Profile = "Full-Cone".parse().unwrap();
        assert_eq!(cone.to_string(), "eim-eif");
        for p in Profile::all_nine() {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        }
        let p: Profile = "eim-adf+hash+hairpin+timeout=30+upnp".parse().unwrap();
        assert!(p.hairpin && p.port_mapping == Some(Granting::All));
        assert_eq!(p.udp_timeout, Some(30));
        assert_eq!(p.to_string(), "eim-adf+hash+hairpin+timeout=30+upnp");
        assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
        let seq: Profile = "symmetric+seq".parse().unwrap();
        assert_eq!(seq.to_string(), "adpm-adpf+seq");
        assert!("eim-adpf+seq".parse::<Profile>().is_err());
        let igd: Profile = "symmetric+igd".parse().unwrap();
        assert_eq!(igd.to_string(), "adpm-adpf+igd");
        assert_eq!(
            "adpm-adpf+random"
                .parse::<Profile>()
                .unwrap()
                .to_string()
                .as_str(),
            "adpm-adpf+random"
        );
        assert_eq!(Profile::classic().len(), 4);
    }

    #[test]
    fn wrong_names_say_what_is_wrong() {
        let e = "cone".parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("full-cone"), "{e}");
        let e = "adm-eif+preserve"
            .parse::<Profile>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("eim only"), "{e}");
        let e = "eim-eif+random".parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("adpm only"), "{e}");
        let e = "eim-eif+timeout=0"
            .parse::<Profile>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("seconds"), "{e}");
        let e = "eim-eif+sparkles"
            .parse::<Profile>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("sparkles"), "{e}");
        let e = "public+upnp".parse::<Profile>().unwrap_err().to_string();
        assert!(e.contains("passes UDP"), "{e}");
    }

    #[test]
    fn rulesets_follow_the_profile() {
        let rules = |s: &str| {
            s.parse::<Profile>()
                .unwrap()
                .ruleset("wan", "198.18.5.2", "lan")
                .unwrap_or_default()
        };
        assert!(rules("public").is_empty());
        let eim = rules("port-restricted-cone");
        assert!(eim.contains("snat ip to 198.18.5.2\n"), "{eim}");
        assert!(
            !eim.contains("dnat ip to"),
            "conntrack alone filters ADPF:\n{eim}"
        );
        let eif = rules("eim-eif+hash");
        assert!(eif.contains("jhash ip saddr . udp sport mod"), "{eif}");
        assert!(eif.contains("udp dport @inbound dnat"), "{eif}");
        assert!(rules("adm-adf").contains("jhash ip saddr . udp sport . ip daddr mod"));
        assert!(rules("adm-adf").contains("udp dport . ip saddr @contacted"));
        assert!(rules("symmetric").contains(". ip daddr . udp dport mod"));
        assert!(rules("adpm-adpf+random").contains("random"));
        assert!(rules("udp-blocked").contains("meta l4proto udp drop"));
        let hp = rules("eim-adpf+hairpin");
        assert!(hp.contains("iifname \"lan\" ip daddr 198.18.5.2"), "{hp}");
        assert!(rules("eim-eif+timeout=30").contains("timeout 30s"));
        let t: Profile = "eim-eif+timeout=30".parse().unwrap();
        assert_eq!(t.sysctls().len(), 2);
    }
}
