//! A minimal relay client over plain TCP, for tests and benchmarks: the HTTP upgrade, the key
//! proof (or a forged one), frames in and out. Nodes use the engine's `RelayClient` driven by
//! pinholed, which adds keepalives, reconnects, TLS and proxies.

use pinhole_proto::key::PrivateKey;
use pinhole_proto::relay::{self as wire, Decoder, Frame, FrameError};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// What went wrong talking to a relay.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("no upgrade: {0}")]
    Http(String),
    #[error("the relay closed the connection")]
    Closed,
    #[error("not accepted: {0:?}")]
    NotAccepted(Frame),
}

/// A connection to a relay after the upgrade.
pub struct RawClient {
    pub io: TcpStream,
    decoder: Decoder,
}

impl RawClient {
    /// Connects to `addr` and switches to the relay protocol on `/relay`.
    pub async fn upgrade(addr: SocketAddr) -> Result<RawClient, RawError> {
        Self::upgrade_from(addr, None).await
    }

    /// Like [`RawClient::upgrade`], from the local address `from` when given (many clients
    /// on one machine from many loopback addresses, as real clients come from many hosts).
    pub async fn upgrade_from(
        addr: SocketAddr,
        from: Option<IpAddr>,
    ) -> Result<RawClient, RawError> {
        let mut io = match from {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
        };
        io.set_nodelay(true)?;
        let req = format!(
            "GET /relay HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: {}\r\n\r\n",
            wire::UPGRADE_PROTOCOL
        );
        io.write_all(req.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = io.read(&mut buf).await?;
            if n == 0 {
                return Err(RawError::Closed);
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !head.starts_with(b"HTTP/1.1 101") {
                    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                    return Err(RawError::Http(String::from_utf8_lossy(line).into_owned()));
                }
                let mut decoder = Decoder::default();
                decoder.push(&head[end + 4..]);
                return Ok(RawClient { io, decoder });
            }
        }
    }

    /// Answers the relay's challenge for `private` (a proof with one bit flipped when `forge`);
    /// the relay's answer (`ServerInfo`, or `Refused` with the reason).
    pub async fn prove(&mut self, private: &PrivateKey, forge: bool) -> Result<Frame, RawError> {
        let Frame::ServerKey { key, challenge, .. } = self.recv().await?.ok_or(RawError::Closed)?
        else {
            return Err(RawError::Http("no server key first".into()));
        };
        let mut proof = wire::key_proof(private, &key, &challenge);
        if forge {
            proof[3] ^= 0x40;
        }
        self.send(&Frame::ClientInfo {
            key: private.public_key(),
            proof,
        })
        .await?;
        self.recv().await?.ok_or(RawError::Closed)
    }

    /// Upgrades and proves `private`; an error unless the relay accepts.
    pub async fn connect(addr: SocketAddr, private: &PrivateKey) -> Result<RawClient, RawError> {
        Self::connect_from(addr, private, None).await
    }

    /// Like [`RawClient::connect`], from the local address `from` when given.
    pub async fn connect_from(
        addr: SocketAddr,
        private: &PrivateKey,
        from: Option<IpAddr>,
    ) -> Result<RawClient, RawError> {
        let mut c = RawClient::upgrade_from(addr, from).await?;
        match c.prove(private, false).await? {
            Frame::ServerInfo { .. } => Ok(c),
            other => Err(RawError::NotAccepted(other)),
        }
    }

    pub async fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        self.io.write_all(&f.to_bytes()).await
    }

    /// The next frame other than a keepalive; `None` once the relay closed the connection.
    pub async fn recv(&mut self) -> Result<Option<Frame>, RawError> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.decoder.next_frame()? {
                Some(Frame::KeepAlive) => continue,
                Some(f) => return Ok(Some(f)),
                None => {}
            }
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => self.decoder.push(&buf[..n]),
            }
        }
    }
}
