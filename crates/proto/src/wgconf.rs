//! WireGuard's configuration file format (the subset `wg setconf` and `wg-quick` share):
//! `[Interface]` PrivateKey, Address, ListenPort, MTU; `[Peer]` PublicKey, PresharedKey,
//! AllowedIPs, Endpoint, PersistentKeepalive. Every error names the line it comes from.

use crate::key::{Key, KeyError, PrivateKey};
use ipnet::IpNet;
use std::net::SocketAddr;

/// A parsed configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgConfig {
    pub interface: InterfaceConfig,
    pub peers: Vec<PeerConfig>,
}

/// The `[Interface]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub private_key: PrivateKey,
    /// Overlay addresses with their prefix length (`Address = 10.0.0.1/24`).
    pub addresses: Vec<IpNet>,
    pub listen_port: Option<u16>,
    pub mtu: Option<u16>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// A configuration error, with the 1-based line number it was found on (0: the file as a whole).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {kind}")]
pub struct ConfigError {
    pub line: usize,
    pub kind: ConfigErrorKind,
}

/// What was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigErrorKind {
    #[error("unknown section {0:?} (expected [Interface] or [Peer])")]
    UnknownSection(String),
    #[error("expected 'Key = Value'")]
    NotKeyValue,
    #[error("{0} outside of a section")]
    OutsideSection(String),
    #[error("unknown key {key:?} in [{section}]")]
    UnknownKey { key: String, section: &'static str },
    #[error("{key} is given twice")]
    Duplicate { key: &'static str },
    #[error("invalid {key} {value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("invalid key in {key}: {source}")]
    BadKey { key: &'static str, source: KeyError },
    #[error("{key} is missing from [{section}]")]
    Missing {
        key: &'static str,
        section: &'static str,
    },
    #[error("the file has no [Interface] section")]
    NoInterface,
    #[error("more than one [Interface] section")]
    TwoInterfaces,
    #[error("peer {0} appears twice")]
    DuplicatePeer(String),
}

fn err(line: usize, kind: ConfigErrorKind) -> ConfigError {
    ConfigError { line, kind }
}

#[derive(Default)]
struct PartialInterface {
    line: usize,
    private_key: Option<PrivateKey>,
    addresses: Vec<IpNet>,
    listen_port: Option<u16>,
    mtu: Option<u16>,
}

#[derive(Default)]
struct PartialPeer {
    line: usize,
    public_key: Option<Key>,
    preshared_key: Option<Key>,
    allowed_ips: Vec<IpNet>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: Option<u16>,
}

enum Section {
    None,
    Interface,
    Peer,
}

fn parse_key(line: usize, key: &'static str, value: &str) -> Result<Key, ConfigError> {
    Key::from_base64(value).map_err(|source| err(line, ConfigErrorKind::BadKey { key, source }))
}

fn invalid(line: usize, key: &'static str, value: &str, why: impl ToString) -> ConfigError {
    err(
        line,
        ConfigErrorKind::Invalid {
            key,
            value: value.to_string(),
            why: why.to_string(),
        },
    )
}

fn parse_nets(line: usize, key: &'static str, value: &str) -> Result<Vec<IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains('/') {
                s.parse::<IpNet>().map_err(|e| invalid(line, key, s, e))
            } else {
                s.parse::<std::net::IpAddr>()
                    .map(IpNet::from)
                    .map_err(|e| invalid(line, key, s, e))
            }
        })
        .collect()
}

fn set_once<T>(
    line: usize,
    key: &'static str,
    slot: &mut Option<T>,
    v: T,
) -> Result<(), ConfigError> {
    if slot.is_some() {
        return Err(err(line, ConfigErrorKind::Duplicate { key }));
    }
    *slot = Some(v);
    Ok(())
}

fn parse_u16(line: usize, key: &'static str, value: &str) -> Result<u16, ConfigError> {
    value
        .parse::<u16>()
        .map_err(|e| invalid(line, key, value, e))
}

impl WgConfig {
    /// Parses a configuration file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut section = Section::None;
        let mut iface: Option<PartialInterface> = None;
        let mut peers: Vec<PartialPeer> = Vec::new();

        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            if content.starts_with('[') {
                let name = content.trim_start_matches('[').trim_end_matches(']').trim();
                if !content.ends_with(']') {
                    return Err(err(line, ConfigErrorKind::UnknownSection(content.into())));
                }
                if name.eq_ignore_ascii_case("interface") {
                    if iface.is_some() {
                        return Err(err(line, ConfigErrorKind::TwoInterfaces));
                    }
                    iface = Some(PartialInterface {
                        line,
                        ..Default::default()
                    });
                    section = Section::Interface;
                } else if name.eq_ignore_ascii_case("peer") {
                    peers.push(PartialPeer {
                        line,
                        ..Default::default()
                    });
                    section = Section::Peer;
                } else {
                    return Err(err(line, ConfigErrorKind::UnknownSection(name.into())));
                }
                continue;
            }
            let Some((k, v)) = content.split_once('=') else {
                return Err(err(line, ConfigErrorKind::NotKeyValue));
            };
            let (k, v) = (k.trim(), v.trim());
            match section {
                Section::None => {
                    return Err(err(line, ConfigErrorKind::OutsideSection(k.into())));
                }
                Section::Interface => {
                    let Some(i) = iface.as_mut() else {
                        return Err(err(line, ConfigErrorKind::OutsideSection(k.into())));
                    };
                    i.set(line, k, v)?;
                }
                Section::Peer => {
                    let Some(p) = peers.last_mut() else {
                        return Err(err(line, ConfigErrorKind::OutsideSection(k.into())));
                    };
                    p.set(line, k, v)?;
                }
            }
        }
        finish(iface, peers)
    }
}

impl PartialInterface {
    /// One `key = value` line of the [Interface] section.
    fn set(&mut self, line: usize, k: &str, v: &str) -> Result<(), ConfigError> {
        match k.to_ascii_lowercase().as_str() {
            "privatekey" => {
                let key = PrivateKey::from_base64(v).map_err(|source| {
                    err(
                        line,
                        ConfigErrorKind::BadKey {
                            key: "PrivateKey",
                            source,
                        },
                    )
                })?;
                set_once(line, "PrivateKey", &mut self.private_key, key)?;
            }
            "address" => self.addresses.extend(parse_nets(line, "Address", v)?),
            "listenport" => {
                let p = parse_u16(line, "ListenPort", v)?;
                set_once(line, "ListenPort", &mut self.listen_port, p)?;
            }
            "mtu" => {
                let m = parse_u16(line, "MTU", v)?;
                if !(576..=9000).contains(&m) {
                    return Err(invalid(line, "MTU", v, "must be between 576 and 9000"));
                }
                set_once(line, "MTU", &mut self.mtu, m)?;
            }
            _ => {
                return Err(err(
                    line,
                    ConfigErrorKind::UnknownKey {
                        key: k.into(),
                        section: "Interface",
                    },
                ))
            }
        }
        Ok(())
    }
}

impl PartialPeer {
    /// One `key = value` line of a [Peer] section.
    fn set(&mut self, line: usize, k: &str, v: &str) -> Result<(), ConfigError> {
        match k.to_ascii_lowercase().as_str() {
            "publickey" => {
                let key = parse_key(line, "PublicKey", v)?;
                set_once(line, "PublicKey", &mut self.public_key, key)?;
            }
            "presharedkey" => {
                let key = parse_key(line, "PresharedKey", v)?;
                set_once(line, "PresharedKey", &mut self.preshared_key, key)?;
            }
            "allowedips" => self.allowed_ips.extend(parse_nets(line, "AllowedIPs", v)?),
            "endpoint" => {
                let ep = v
                    .parse::<SocketAddr>()
                    .map_err(|_| invalid(line, "Endpoint", v, "expected IP:PORT or [IPv6]:PORT"))?;
                set_once(line, "Endpoint", &mut self.endpoint, ep)?;
            }
            "persistentkeepalive" => {
                let ka = if v.eq_ignore_ascii_case("off") {
                    0
                } else {
                    parse_u16(line, "PersistentKeepalive", v)?
                };
                set_once(
                    line,
                    "PersistentKeepalive",
                    &mut self.persistent_keepalive,
                    ka,
                )?;
            }
            _ => {
                return Err(err(
                    line,
                    ConfigErrorKind::UnknownKey {
                        key: k.into(),
                        section: "Peer",
                    },
                ))
            }
        }
        Ok(())
    }
}

/// The whole file read: the interface and the peers checked for what they must have.
fn finish(
    iface: Option<PartialInterface>,
    peers: Vec<PartialPeer>,
) -> Result<WgConfig, ConfigError> {
    let iface = iface.ok_or(err(0, ConfigErrorKind::NoInterface))?;
    let private_key = iface.private_key.ok_or(err(
        iface.line,
        ConfigErrorKind::Missing {
            key: "PrivateKey",
            section: "Interface",
        },
    ))?;
    let mut out_peers: Vec<PeerConfig> = Vec::with_capacity(peers.len());
    for p in peers {
        let public_key = p.public_key.ok_or(err(
            p.line,
            ConfigErrorKind::Missing {
                key: "PublicKey",
                section: "Peer",
            },
        ))?;
        if out_peers.iter().any(|q| q.public_key == public_key) {
            return Err(err(
                p.line,
                ConfigErrorKind::DuplicatePeer(public_key.to_base64()),
            ));
        }
        out_peers.push(PeerConfig {
            public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips,
            endpoint: p.endpoint,
            persistent_keepalive: p.persistent_keepalive.filter(|&k| k != 0),
        });
    }
    Ok(WgConfig {
        interface: InterfaceConfig {
            private_key,
            addresses: iface.addresses,
            listen_port: iface.listen_port,
            mtu: iface.mtu,
        },
        peers: out_peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    const K2: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn sample() -> String {
        format!(
            "# a comment\n[Interface]\nPrivateKey = {K1}\nAddress = 10.0.0.1/24, fd00::1/64\nListenPort = 51820\n\n[Peer]\nPublicKey = {K2}\nAllowedIPs = 10.0.0.2/32,fd00::2/128\nEndpoint = [2001:db8::1]:51820\nPersistentKeepalive = 25 # seconds\n"
        )
    }

    #[test]
    fn parses_full_file() {
        let c = WgConfig::parse(&sample()).unwrap();
        assert_eq!(*c.interface.private_key.to_base64(), K1);
        assert_eq!(c.interface.addresses.len(), 2);
        assert_eq!(c.interface.listen_port, Some(51820));
        assert_eq!(c.peers.len(), 1);
        let p = &c.peers[0];
        assert_eq!(p.public_key.to_base64(), K2);
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
    }

    #[test]
    fn errors_name_the_line() {
        let bad = sample().replace("AllowedIPs = 10.0.0.2/32", "AllowedIPs = 10.0.0.300/32");
        let e = WgConfig::parse(&bad).unwrap_err();
        assert_eq!(e.line, 9);
        assert!(
            e.to_string().starts_with("line 9: invalid AllowedIPs"),
            "{e}"
        );

        let bad = sample().replace("ListenPort = 51820", "ListenPort = 70000");
        assert_eq!(WgConfig::parse(&bad).unwrap_err().line, 5);

        let bad = sample().replace("Endpoint", "Endpiont");
        let e = WgConfig::parse(&bad).unwrap_err();
        assert_eq!(e.line, 10);
        assert!(e.to_string().contains("unknown key \"Endpiont\""), "{e}");

        let bad = sample().replace(K2, "short");
        assert_eq!(WgConfig::parse(&bad).unwrap_err().line, 8);
    }

    #[test]
    fn missing_pieces_are_reported() {
        assert_eq!(
            WgConfig::parse("").unwrap_err().kind,
            ConfigErrorKind::NoInterface
        );
        let e = WgConfig::parse("[Interface]\nListenPort=1\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("PrivateKey is missing"));
        let e = WgConfig::parse("Address = 10.0.0.1/24\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = WgConfig::parse(&format!(
            "[Interface]\nPrivateKey={K1}\n[Peer]\nAllowedIPs=10.0.0.0/8\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, 3);
    }

    #[test]
    fn survives_arbitrary_text() {
        for s in [
            "[",
            "]",
            "=",
            "[Peer",
            "[Interface]\n=\n",
            "[Interface]\nPrivateKey==\n",
        ] {
            assert!(WgConfig::parse(s).is_err());
        }
    }
}
