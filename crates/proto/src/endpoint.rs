//! Endpoints a node can be reached at, each with the kind of evidence behind it: its own
//! interface address, what a STUN server saw, a port mapping from the gateway, or the source a
//! peer's ping came from.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Where an endpoint came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(rename_all = "kebab-case"))]
pub enum EndpointKind {
    /// An address of one of the node's interfaces.
    Local,
    /// The node's address as a STUN server saw it (its NAT's mapping).
    Stun,
    /// A mapping the node's gateway made for it (PCP, NAT-PMP or UPnP).
    Portmap,
    /// The source address a peer's ping or pong showed.
    PeerReflexive,
}

impl EndpointKind {
    /// Every kind, in wire order.
    pub const ALL: [EndpointKind; 4] = [
        EndpointKind::Local,
        EndpointKind::Stun,
        EndpointKind::Portmap,
        EndpointKind::PeerReflexive,
    ];

    /// The name used in JSON, the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Local => "local",
            EndpointKind::Stun => "stun",
            EndpointKind::Portmap => "portmap",
            EndpointKind::PeerReflexive => "peer-reflexive",
        }
    }

    /// The byte that stands for the kind in disco messages.
    pub fn code(self) -> u8 {
        match self {
            EndpointKind::Local => 1,
            EndpointKind::Stun => 2,
            EndpointKind::Portmap => 3,
            EndpointKind::PeerReflexive => 4,
        }
    }

    /// The kind a disco byte stands for.
    pub fn from_code(b: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == b)
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not an endpoint kind or not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("unknown endpoint kind {0:?} (local, stun, portmap or peer-reflexive)")]
    Kind(String),
    #[error("not a socket address: {0:?}")]
    Addr(String),
}

impl FromStr for EndpointKind {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| EndpointError::Kind(s.to_string()))
    }
}

/// An address a node may be reached at, and why it is believed to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub kind: EndpointKind,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, kind: EndpointKind) -> Self {
        Endpoint { addr, kind }
    }
}

/// `ADDR KIND`, e.g. `192.0.2.1:41641 stun`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.addr, self.kind)
    }
}

/// Reads `ADDR KIND` or a bare `ADDR` (an interface address, as endpoints were once published).
impl FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        let addr = parts.next().unwrap_or_default();
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| EndpointError::Addr(addr.to_string()))?;
        let kind = match parts.next() {
            Some(k) => k.parse()?,
            None => EndpointKind::Local,
        };
        if let Some(extra) = parts.next() {
            return Err(EndpointError::Kind(extra.to_string()));
        }
        Ok(Endpoint { addr, kind })
    }
}

/// In JSON an endpoint is `{"addr": "192.0.2.1:41641", "kind": "stun"}`; a bare address string
/// (as published before kinds existed) reads as a `local` endpoint.
#[cfg(feature = "serde")]
mod serde_impl {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Object {
        addr: SocketAddr,
        kind: String,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Object(Object),
        Bare(SocketAddr),
    }

    impl Serialize for Endpoint {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            Object {
                addr: self.addr,
                kind: self.kind.as_str().to_string(),
            }
            .serialize(s)
        }
    }

    impl<'de> Deserialize<'de> for Endpoint {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            match Either::deserialize(d)? {
                Either::Bare(addr) => Ok(Endpoint::new(addr, EndpointKind::Local)),
                Either::Object(o) => Ok(Endpoint::new(
                    o.addr,
                    o.kind.parse().map_err(D::Error::custom)?,
                )),
            }
        }
    }

    impl Serialize for EndpointKind {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.as_str())
        }
    }

    impl<'de> Deserialize<'de> for EndpointKind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            String::deserialize(d)?.parse().map_err(D::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_a_bare_address_is_local() {
        for s in ["192.0.2.1:41641 stun", "[2001:db8::1]:7 peer-reflexive"] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
        }
        let e: Endpoint = "10.0.0.2:41641".parse().unwrap();
        assert_eq!(e.kind, EndpointKind::Local);
        assert!(matches!(
            "10.0.0.2:41641 relay".parse::<Endpoint>(),
            Err(EndpointError::Kind(_))
        ));
        assert!(matches!(
            "10.0.0.2 stun".parse::<Endpoint>(),
            Err(EndpointError::Addr(_))
        ));
    }

    #[test]
    fn codes_round_trip() {
        for k in EndpointKind::ALL {
            assert_eq!(EndpointKind::from_code(k.code()), Some(k));
        }
        assert_eq!(EndpointKind::from_code(0), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn json_is_an_object_and_reads_bare_addresses() {
        let e = Endpoint::new("192.0.2.1:41641".parse().unwrap(), EndpointKind::Portmap);
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(j, r#"{"addr":"192.0.2.1:41641","kind":"portmap"}"#);
        assert_eq!(serde_json::from_str::<Endpoint>(&j).unwrap(), e);
        let bare: Endpoint = serde_json::from_str(r#""192.0.2.1:41641""#).unwrap();
        assert_eq!(bare.kind, EndpointKind::Local);
        assert!(serde_json::from_str::<Endpoint>(r#"{"addr":"192.0.2.1:1","kind":"x"}"#).is_err());
    }
}
