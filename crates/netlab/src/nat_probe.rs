//! NAT behaviour discovery (RFC 5780 section 4.3 and 4.4) from behind a router, against a STUN
//! server with an alternate address and port (pinhole-relay with `--stun-alternate-ip` and
//! `--stun-alternate-port`): what mapping and filtering the router really does, to check a
//! lab profile against its name.

use crate::nat::{Filtering, Mapping};
use pinhole_proto::stun::{self, Message};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// What the probes found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub mapping: String,
    pub filtering: String,
    /// The mapped addresses seen by the primary, the alternate address, and the alternate
    /// address and port.
    pub mapped: Vec<String>,
    /// Whether the external port equals the local one.
    pub port_preserved: bool,
}

impl Behaviour {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mapping": self.mapping,
            "filtering": self.filtering,
            "mapped": self.mapped,
            "port_preserved": self.port_preserved,
        })
    }

    /// Reads back what [`Behaviour::to_json`] wrote.
    pub fn from_json(v: &serde_json::Value) -> Option<Behaviour> {
        Some(Behaviour {
            mapping: v["mapping"].as_str()?.to_string(),
            filtering: v["filtering"].as_str()?.to_string(),
            mapped: v["mapped"]
                .as_array()?
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            port_preserved: v["port_preserved"].as_bool()?,
        })
    }

    pub fn is(&self, m: Mapping, f: Filtering) -> bool {
        self.mapping == m.to_string() && self.filtering == f.to_string()
    }
}

/// What went wrong probing.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer from the STUN server at {0}: UDP blocked, or no server")]
    NoAnswer(SocketAddr),
    #[error("the STUN server at {0} has no alternate address and port (OTHER-ADDRESS)")]
    NoOtherAddress(SocketAddr),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One Binding request from `sock` to `to` (changing address/port on the way back if asked),
/// retried a few times; the answer, or None when nothing came back.
fn binding(
    sock: &UdpSocket,
    to: SocketAddr,
    change_ip: bool,
    change_port: bool,
) -> Result<Option<(SocketAddr, Option<SocketAddr>)>, ProbeError> {
    sock.set_read_timeout(Some(Duration::from_millis(250)))?;
    // A late answer to an earlier try counts too (a busy machine is not a filtering NAT).
    let mut sent: Vec<stun::TxId> = Vec::new();
    for _ in 0..4 {
        let tx: stun::TxId = rand::random();
        sent.push(tx);
        let req = if change_ip || change_port {
            stun::binding_request_with_change(tx, change_ip, change_port)
        } else {
            stun::binding_request(tx)
        };
        sock.send_to(&req, to)?;
        let mut buf = [0u8; 1500];
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Ok(Message::BindingSuccess {
                        tx: got,
                        mapped: Some(m),
                        other,
                    }) = stun::parse(&buf[..n])
                    {
                        if sent.contains(&got) {
                            return Ok(Some((m, other)));
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(None)
}

/// Finds the mapping and filtering behaviour against `server` (its primary address and
/// port), from local UDP port `port` (the filtering test uses `port + 1`, a socket that has
/// talked to the primary only).
pub fn discover(server: SocketAddr, port: u16) -> Result<Behaviour, ProbeError> {
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    let (m1, other) = binding(&sock, server, false, false)?.ok_or(ProbeError::NoAnswer(server))?;
    let other = other.ok_or(ProbeError::NoOtherAddress(server))?;
    // Test II: the alternate address, primary port. Test III: alternate address and port.
    let alt_ip = SocketAddr::new(other.ip(), server.port());
    let (m2, _) = binding(&sock, alt_ip, false, false)?.ok_or(ProbeError::NoAnswer(alt_ip))?;
    let (m3, _) = binding(&sock, other, false, false)?.ok_or(ProbeError::NoAnswer(other))?;
    let mapping = if m1 == m2 {
        Mapping::Eim
    } else if m2 == m3 {
        Mapping::Adm
    } else {
        Mapping::Adpm
    };
    // Filtering, on a socket that has sent to the primary only: an answer from the other
    // address and port means anyone gets in; from the other port only, the address counts.
    let fresh = UdpSocket::bind(("0.0.0.0", port + 1))?;
    binding(&fresh, server, false, false)?.ok_or(ProbeError::NoAnswer(server))?;
    let filtering = if binding(&fresh, server, true, true)?.is_some() {
        Filtering::Eif
    } else if binding(&fresh, server, false, true)?.is_some() {
        Filtering::Adf
    } else {
        Filtering::Adpf
    };
    Ok(Behaviour {
        mapping: mapping.to_string(),
        filtering: filtering.to_string(),
        port_preserved: m1.port() == port,
        mapped: [m1, m2, m3].iter().map(|m| m.to_string()).collect(),
    })
}
