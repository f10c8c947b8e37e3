//! Opens a byte stream to a relay server, as the relay protocol expects it: TCP connections
//! raced so a lost SYN costs half a second, not seconds; an HTTP CONNECT proxy with Basic
//! credentials; TLS for `https`; the HTTP upgrade to the relay protocol, or a WebSocket carrying
//! it where a middlebox refuses the plain upgrade. What goes over the stream is the relay
//! client's business (`pinhole_engine::RelayClient`, sans-IO).

mod common;
mod dialer;
mod proxy;
pub mod tcp_race;

pub use common::{DialError, SetupError, Stream};
pub use dialer::Dialer;
