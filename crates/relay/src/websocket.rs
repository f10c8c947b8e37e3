//! The relay over WebSocket: binary messages carry the same frame stream as the plain upgrade
//! (a frame may span messages, a message may hold several frames), for networks and proxies that
//! pass WebSockets and nothing else. This adapter makes a WebSocket a byte stream.

use axum::extract::ws::{Message, WebSocket};
use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A WebSocket read and written as bytes (binary messages only).
pub struct WsStream {
    ws: WebSocket,
    /// The part of the last message not yet read.
    pending: bytes::Bytes,
}

impl WsStream {
    pub fn new(ws: WebSocket) -> Self {
        WsStream {
            ws,
            pending: bytes::Bytes::new(),
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // End of stream: a close, or the connection gone.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on a relay WebSocket",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(other(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(other)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(bytes::Bytes::copy_from_slice(buf)))
            .map_err(other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(other)
    }
}
