//! Notices when this machine's network changes (an address added or gone, another network):
//! on Linux from the kernel's routing-socket events (netlink: links, addresses, routes), elsewhere
//! by looking at the interface addresses every few seconds. A change is reported once the
//! addresses have settled and only when they differ from before (the daemon's own TUN device
//! coming up is one such change, once).

use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the addresses must be quiet before a change is reported (a new network brings a
/// burst of events).
const SETTLE: Duration = Duration::from_millis(500);
/// Where events cannot be had, how often the addresses are looked at.
const POLL_EVERY: Duration = Duration::from_secs(10);

/// Starts watching; each `()` on the receiver is one settled change of the interface addresses.
pub fn watch() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut last = addresses();
        let mut events = Events::open();
        loop {
            events.next().await;
            // Let a burst of events pass, then compare.
            while tokio::time::timeout(SETTLE, events.next()).await.is_ok() {}
            let now = addresses();
            if now != last {
                tracing::info!(before = ?last, after = ?now, "network changed");
                last = now;
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The machine's interface addresses, sorted.
fn addresses() -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = match if_addrs::get_if_addrs() {
        Ok(list) => list.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::debug!("listing interface addresses: {e}");
            Vec::new()
        }
    };
    v.sort();
    v.dedup();
    v
}

/// The source of "something may have changed" moments.
enum Events {
    #[cfg(target_os = "linux")]
    Netlink(netlink_sys::TokioSocket),
    Poll(tokio::time::Interval),
}

impl Events {
    fn open() -> Events {
        #[cfg(target_os = "linux")]
        match netlink() {
            Ok(s) => return Events::Netlink(s),
            Err(e) => tracing::warn!(
                "no routing-socket events ({e}); looking at the addresses every {} s",
                POLL_EVERY.as_secs()
            ),
        }
        Events::Poll(tokio::time::interval(POLL_EVERY))
    }

    async fn next(&mut self) {
        match self {
            #[cfg(target_os = "linux")]
            Events::Netlink(s) => {
                use netlink_sys::AsyncSocketExt;
                let mut buf = bytes::BytesMut::with_capacity(8192);
                if let Err(e) = s.recv(&mut buf).await {
                    tracing::warn!("routing-socket events: {e}; looking at the addresses instead");
                    *self = Events::Poll(tokio::time::interval(POLL_EVERY));
                }
            }
            Events::Poll(i) => {
                i.tick().await;
            }
        }
    }
}

/// A routing socket subscribed to link, address and route changes (IPv4 and IPv6).
#[cfg(target_os = "linux")]
fn netlink() -> std::io::Result<netlink_sys::TokioSocket> {
    use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, SocketAddr, TokioSocket};
    let groups = libc::RTMGRP_LINK
        | libc::RTMGRP_IPV4_IFADDR
        | libc::RTMGRP_IPV6_IFADDR
        | libc::RTMGRP_IPV4_ROUTE
        | libc::RTMGRP_IPV6_ROUTE;
    let mut s = TokioSocket::new(NETLINK_ROUTE)?;
    s.socket_mut().bind(&SocketAddr::new(0, groups as u32))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_sorted_and_include_loopback() {
        let a = addresses();
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
        assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}");
    }
}
