//! The STUN service: answers Binding requests (RFC 8489) on UDP with the sender's address as
//! seen here (XOR-MAPPED-ADDRESS). With an alternate address and/or port it also serves RFC 5780:
//! OTHER-ADDRESS and RESPONSE-ORIGIN in every answer, and CHANGE-REQUEST honoured by answering
//! from the other socket, so that clients can classify their NAT. Anything that is not a Binding
//! request is counted and ignored.

use pinhole_proto::stun::{self, Message};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::UdpSocket;

const SOFTWARE: &str = concat!("pinhole-relay ", env!("CARGO_PKG_VERSION"));

/// Where the service listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunConfig {
    pub primary: SocketAddr,
    /// A second IP address of this host (RFC 5780 "alternate address").
    pub alternate_ip: Option<IpAddr>,
    /// A second port (RFC 5780 "alternate port").
    pub alternate_port: Option<u16>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct StunStats {
    pub requests: AtomicU64,
    pub ignored: AtomicU64,
}

/// The sockets' addresses: index 0 is primary, 1 alternate, for the IP and for the port.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    ips: [Option<IpAddr>; 2],
    ports: [Option<u16>; 2],
}

impl Layout {
    pub fn new(c: &StunConfig) -> Self {
        Layout {
            ips: [Some(c.primary.ip()), c.alternate_ip],
            ports: [Some(c.primary.port()), c.alternate_port],
        }
    }

    /// The address of socket (ip index, port index), if that socket exists.
    pub fn addr(&self, ip: usize, port: usize) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.ips[ip]?, self.ports[port]?))
    }

    /// Every socket the layout has, with its indices.
    pub fn sockets(&self) -> Vec<((usize, usize), SocketAddr)> {
        let mut v = Vec::new();
        for ip in 0..2 {
            for port in 0..2 {
                if let Some(a) = self.addr(ip, port) {
                    v.push(((ip, port), a));
                }
            }
        }
        v
    }

    /// OTHER-ADDRESS: the socket differing in every way this server can differ.
    fn other(&self, ip: usize, port: usize) -> Option<SocketAddr> {
        let oi = if self.ips[1].is_some() { 1 - ip } else { ip };
        let op = if self.ports[1].is_some() {
            1 - port
        } else {
            port
        };
        if (oi, op) == (ip, port) {
            return None;
        }
        self.addr(oi, op)
    }
}

/// The answer to one datagram that arrived on socket `on`: which socket sends what. None for
/// anything that is not a Binding request.
pub fn respond(
    layout: &Layout,
    on: (usize, usize),
    from: SocketAddr,
    datagram: &[u8],
) -> Option<((usize, usize), Vec<u8>)> {
    let Ok(Message::BindingRequest {
        tx,
        fingerprint,
        change_ip,
        change_port,
    }) = stun::parse(datagram)
    else {
        return None;
    };
    let ip = if change_ip { 1 - on.0 } else { on.0 };
    let port = if change_port { 1 - on.1 } else { on.1 };
    let Some(origin) = layout.addr(ip, port) else {
        // RFC 5780 section 6.1: a change this server cannot make is an unknown attribute.
        let e = stun::binding_error(
            tx,
            420,
            "Unknown Attribute: this server has no alternate address or port for CHANGE-REQUEST",
            &[stun::CHANGE_REQUEST],
            fingerprint,
        );
        return Some((on, e));
    };
    let rfc5780 = layout.ips[1].is_some() || layout.ports[1].is_some();
    let answer = stun::Answer {
        mapped: from,
        other: layout.other(ip, port),
        origin: rfc5780.then_some(origin),
        software: Some(SOFTWARE),
        fingerprint,
    };
    Some(((ip, port), stun::answer(tx, &answer)))
}

/// The STUN service, bound.
pub struct StunServer {
    layout: Layout,
    sockets: Vec<((usize, usize), Arc<UdpSocket>)>,
    pub stats: Arc<StunStats>,
}

impl StunServer {
    /// Binds every socket the configuration asks for.
    pub async fn bind(config: StunConfig) -> std::io::Result<StunServer> {
        let layout = Layout::new(&config);
        let mut sockets = Vec::new();
        for (idx, addr) in layout.sockets() {
            let s = UdpSocket::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot bind STUN on {addr}: {e}"))
            })?;
            sockets.push((idx, Arc::new(s)));
        }
        Ok(StunServer {
            layout,
            sockets,
            stats: Arc::default(),
        })
    }

    /// The primary socket's address (its port when 0 was asked).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self.sockets.first() {
            Some((_, s)) => s.local_addr(),
            None => Err(std::io::Error::other("no STUN socket")),
        }
    }

    /// The alternate port, when the server has one (its sockets there answer Binding requests
    /// like the primary one).
    pub fn alternate_port(&self) -> Option<u16> {
        self.layout.ports[1]
    }

    /// Answers on every socket until the task is dropped.
    pub async fn run(self) {
        let mut tasks = tokio::task::JoinSet::new();
        for (idx, socket) in &self.sockets {
            let (idx, socket) = (*idx, socket.clone());
            let all = self.sockets.clone();
            let (layout, stats) = (self.layout, self.stats.clone());
            tasks.spawn(async move {
                let mut buf = vec![0u8; 2048];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::debug!("STUN receive: {e}");
                            continue;
                        }
                    };
                    match respond(&layout, idx, from, &buf[..n]) {
                        Some((via, bytes)) => {
                            stats.requests.fetch_add(1, Ordering::Relaxed);
                            let out = all.iter().find(|(i, _)| *i == via).map(|(_, s)| s);
                            if let Some(out) = out {
                                if let Err(e) = out.send_to(&bytes, from).await {
                                    tracing::debug!("STUN send to {from}: {e}");
                                }
                            }
                        }
                        None => {
                            stats.ignored.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: stun::TxId = [3; 12];

    fn config(alt_ip: Option<&str>, alt_port: Option<u16>) -> Layout {
        Layout::new(&StunConfig {
            primary: "192.0.2.1:3478".parse().unwrap(),
            alternate_ip: alt_ip.map(|a| a.parse().unwrap()),
            alternate_port: alt_port,
        })
    }

    fn client() -> SocketAddr {
        "198.51.100.9:40000".parse().unwrap()
    }

    #[test]
    fn a_plain_server_tells_the_client_its_address() {
        let l = config(None, None);
        let (via, bytes) = respond(&l, (0, 0), client(), &stun::binding_request(TX)).unwrap();
        assert_eq!(via, (0, 0));
        assert_eq!(
            stun::parse(&bytes),
            Ok(Message::BindingSuccess {
                tx: TX,
                mapped: Some(client()),
                other: None
            })
        );
        // It cannot change address or port: 420.
        let req = stun::binding_request_with_change(TX, true, false);
        let (_, bytes) = respond(&l, (0, 0), client(), &req).unwrap();
        assert!(matches!(
            stun::parse(&bytes),
            Ok(Message::BindingError { code: 420, .. })
        ));
    }

    #[test]
    fn rfc_5780_changes_are_answered_from_the_other_socket() {
        let l = config(Some("192.0.2.2"), Some(3479));
        assert_eq!(l.sockets().len(), 4);
        let req = stun::binding_request_with_change(TX, true, true);
        let (via, bytes) = respond(&l, (0, 0), client(), &req).unwrap();
        assert_eq!(via, (1, 1));
        match stun::parse(&bytes) {
            Ok(Message::BindingSuccess { mapped, other, .. }) => {
                assert_eq!(mapped, Some(client()));
                // OTHER-ADDRESS of the answering socket is the primary one.
                assert_eq!(other, Some("192.0.2.1:3478".parse().unwrap()));
            }
            other => panic!("{other:?}"),
        }
        let req = stun::binding_request_with_change(TX, false, true);
        assert_eq!(respond(&l, (0, 0), client(), &req).unwrap().0, (0, 1));
    }

    #[test]
    fn garbage_gets_no_answer() {
        let l = config(None, None);
        assert!(respond(&l, (0, 0), client(), b"hello").is_none());
        let ans = stun::binding_success(TX, client(), None, None, true);
        assert!(
            respond(&l, (0, 0), client(), &ans).is_none(),
            "answers are not requests"
        );
    }
}
