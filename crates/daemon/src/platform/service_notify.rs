//! Readiness for service managers: with systemd's `Type=notify`, a datagram to `$NOTIFY_SOCKET`
//! says `READY=1` once the local API serves and `STOPPING=1` when pinholed shuts down; under
//! Windows' service control manager the same notes become the states Running and StopPending.
//! Without either (a terminal, launchd) nothing is sent.

use std::path::Path;

/// Tells the service manager `state` (`READY=1`, `STOPPING=1`), if one asked to be told.
pub fn notify(state: &str) {
    #[cfg(windows)]
    crate::platform::win_service::notify(state);
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = send(Path::new(&path), state) {
            tracing::warn!("cannot tell the service manager {state}: {e}");
        }
    }
}

#[cfg(unix)]
fn send(path: &Path, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    // "@name" is a socket in Linux's abstract namespace.
    #[cfg(target_os = "linux")]
    if let Some(name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
        return Ok(());
    }
    sock.send_to(state.as_bytes(), path)?;
    Ok(())
}

#[cfg(not(unix))]
fn send(_path: &Path, _state: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn the_service_manager_gets_the_state_on_its_socket() {
        let dir = std::env::temp_dir().join(format!("pinhole-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        send(&path, "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_abstract_socket_is_reached_by_its_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pinhole-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        send(Path::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn no_manager_listening_is_an_error_not_a_panic() {
        let path = std::env::temp_dir().join(format!("pinhole-notify-none-{}", std::process::id()));
        assert!(send(&path, "READY=1").is_err());
    }
}
