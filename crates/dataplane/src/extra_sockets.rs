//! Extra UDP sockets opened on request (birthday probing: many mappings on a NAT that gives
//! every destination a random port). Each is bound to any free port; a task per socket hands
//! what arrives to the loop, tagged with the socket's id; closing one stops its task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An extra socket's id (0 is left for the main socket: ids start at 1).
pub type SocketId = u16;

/// Most extra sockets open at once (a bound on what a misbehaving peer could make us open).
const MAX_OPEN: usize = 512;

/// A datagram that arrived on an extra socket.
pub struct Received {
    pub socket: SocketId,
    pub from: SocketAddr,
    pub data: Vec<u8>,
}

struct Open {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

/// The open extra sockets.
pub struct ExtraSockets {
    open: HashMap<SocketId, Open>,
    next: SocketId,
    tx: mpsc::Sender<Received>,
    rx: mpsc::Receiver<Received>,
}

impl ExtraSockets {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(1024);
        ExtraSockets {
            open: HashMap::new(),
            next: 1,
            tx,
            rx,
        }
    }

    /// Opens up to `count` sockets (IPv4, any port); the ids of those that opened.
    pub fn open(&mut self, count: u16) -> Vec<SocketId> {
        let mut ids = Vec::new();
        for _ in 0..count {
            if self.open.len() >= MAX_OPEN {
                tracing::debug!("extra sockets: {MAX_OPEN} already open");
                break;
            }
            let socket = match bind_marked()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(UdpSocket::from_std)
            {
                Ok(s) => Arc::new(s),
                Err(e) => {
                    tracing::debug!("extra socket: {e}");
                    break;
                }
            };
            let id = self.free_id();
            let task = tokio::spawn(receive(id, socket.clone(), self.tx.clone()));
            self.open.insert(id, Open { socket, task });
            ids.push(id);
        }
        ids
    }

    /// The next id no open socket has (never the main socket's).
    fn free_id(&mut self) -> SocketId {
        loop {
            let id = self.next;
            self.next = self.next.wrapping_add(1).max(1);
            if !self.open.contains_key(&id) {
                return id;
            }
        }
    }

    /// Closes these sockets (unknown ids are ignored).
    pub fn close(&mut self, ids: &[SocketId]) {
        for id in ids {
            if let Some(o) = self.open.remove(id) {
                o.task.abort();
            }
        }
    }

    /// Sends from socket `id`; false when it is not open.
    pub async fn send(&self, id: SocketId, dst: SocketAddr, payload: &[u8]) -> bool {
        let Some(o) = self.open.get(&id) else {
            return false;
        };
        if let Err(e) = o.socket.send_to(payload, dst).await {
            tracing::debug!("UDP send from extra socket {id} to {dst}: {e}");
        }
        true
    }

    /// The next datagram that arrived on any of them.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

impl Default for ExtraSockets {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ExtraSockets {
    fn drop(&mut self) {
        for o in self.open.values() {
            o.task.abort();
        }
    }
}

async fn receive(socket: SocketId, udp: Arc<UdpSocket>, tx: mpsc::Sender<Received>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let r = Received {
                    socket,
                    from: crate::udp::canonical(from),
                    data: buf[..n].to_vec(),
                };
                if tx.send(r).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!("UDP receive on extra socket {socket}: {e}"),
        }
    }
}

/// An IPv4 UDP socket on any port, marked to stay outside the tunnel (see [`crate::bypass`]).
fn bind_marked() -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    crate::bypass::mark(&s);
    s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_open_receive_with_their_id_send_and_close() {
        let mut x = ExtraSockets::new();
        let ids = x.open(3);
        assert_eq!(ids, vec![1, 2, 3]);
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = x.open[&2].socket.local_addr().unwrap().port();
        peer.send_to(b"hello", ("127.0.0.1", port)).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), x.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.socket, got.data.as_slice()), (2, &b"hello"[..]));
        assert_eq!(got.from, peer.local_addr().unwrap());
        // Answers leave from the same socket.
        assert!(x.send(2, peer.local_addr().unwrap(), b"back").await);
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from.port()), (&b"back"[..], port));
        x.close(&[1, 2, 99]);
        assert_eq!(x.len(), 1);
        assert!(!x.send(2, peer.local_addr().unwrap(), b"gone").await);
        assert_eq!(x.open(1), vec![4], "ids are not reused at once");
    }
}
