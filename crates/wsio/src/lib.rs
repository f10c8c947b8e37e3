//! A WebSocket read and written as a byte stream. The relay protocol's frames travel in binary
//! messages (a frame may span messages, a message may hold several frames), for networks and
//! proxies that pass WebSockets and nothing else; the relay (server side) and pinholed (client
//! side) both read and write the WebSocket through this one adapter, as if it were TCP.

use futures_util::{Sink, Stream};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub use tokio_tungstenite;

/// A WebSocket as bytes: each write is one binary message; reads return binary messages'
/// bytes in order; pings and pongs are answered by the WebSocket layer and skipped; a close
/// is the end of the stream; a text message is an error.
pub struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    /// The part of the last message not yet read.
    pending: bytes::Bytes,
}

impl<S> WsByteStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsByteStream {
            ws,
            pending: bytes::Bytes::new(),
        }
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsByteStream<S> {
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
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsByteStream<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    #[tokio::test]
    async fn bytes_cross_in_binary_messages_and_text_is_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let mut c = WsByteStream::new(client);
        let mut s = WsByteStream::new(server);
        // Two writes (two messages) read back as one byte stream, in pieces of any size.
        c.write_all(b"hello ").await.unwrap();
        c.write_all(b"relay").await.unwrap();
        c.flush().await.unwrap();
        let mut got = [0u8; 11];
        s.read_exact(&mut got[..3]).await.unwrap();
        s.read_exact(&mut got[3..]).await.unwrap();
        assert_eq!(&got, b"hello relay");
        // A ping is skipped (and answered by the WebSocket layer); a text message is an error.
        let mut raw = c.ws;
        raw.send(Message::Ping(bytes::Bytes::from_static(b"p")))
            .await
            .unwrap();
        raw.send(Message::Binary(bytes::Bytes::from_static(b"!")))
            .await
            .unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"!");
        raw.send(Message::Text("no".into())).await.unwrap();
        let e = s.read(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // A close ends the stream.
        raw.close(None).await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(s.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
