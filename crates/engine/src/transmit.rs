//! What the engine hands its shell to send, shared by the engine and its parts: the sockets
//! datagrams leave from ([`SocketId`]), a UDP datagram ([`Transmit`]), a packet for a relay
//! ([`RelayTransmit`]) and a request to open or close extra sockets ([`SocketRequest`]).

use pinhole_proto::key::Key;
use std::net::SocketAddr;
use std::sync::Arc;

/// Which local UDP socket a datagram leaves from or came in on: the main one (the WireGuard
/// port), or an extra one the shell opened when asked (birthday probing).
pub type SocketId = u16;
/// The main socket.
pub const MAIN_SOCKET: SocketId = 0;

/// A UDP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub socket: SocketId,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What the engine asks of the shell's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketRequest {
    /// Open `count` extra UDP sockets (any port) for the peer, and say which with
    /// [`crate::Engine::sockets_opened`]; fewer (or none) is an answer too.
    Open { for_peer: Key, count: u16 },
    /// Close these extra sockets.
    Close { ids: Vec<SocketId> },
}

/// A packet to send through a relay: to the node with key `peer`, via the relay of `region`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTransmit {
    pub region: Arc<str>,
    pub peer: Key,
    pub payload: Vec<u8>,
}
