//! The firewall mark on pinholed's own sockets (Linux). While internet traffic goes through an
//! exit node, a routing rule sends packets carrying this mark by the main table, outside the
//! tunnel: the tunnel's own UDP (WireGuard, disco, STUN) never loops back into it.

/// The mark, and the bits of it that rules match (the rest stay free for others' marks).
pub const MARK: u32 = 0x0506_0000;
pub const MASK: u32 = 0xffff_0000;

/// Marks `socket`; a failure (no CAP_NET_ADMIN, another OS) is logged and harmless while no
/// exit node is used.
pub fn mark(socket: &socket2::Socket) {
    #[cfg(target_os = "linux")]
    if let Err(e) = socket.set_mark(MARK) {
        tracing::debug!("cannot mark a socket for the routing rules: {e}");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_marked_socket_carries_the_mark_when_allowed() {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        mark(&s);
        // Only root (CAP_NET_ADMIN) may set a mark; otherwise the socket is left unmarked.
        let want = if is_root() { MARK } else { 0 };
        assert_eq!(s.mark().unwrap(), want);
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
    }
}
