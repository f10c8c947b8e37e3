//! The janitor (Linux): a child process pinholed starts that waits for pinholed's end — the
//! pipe on its standard input closes however pinholed ends, `kill -9` included — and then
//! removes what pinholed may have left in the system: the routing rules and table of
//! [`super::route_table`], the forwarding switches and nftables table of
//! [`super::forwarding`]. After a clean stop pinholed has removed them itself and the janitor
//! finds nothing to do. (A pinholed started again later also cleans up at start.)

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The running janitor; dropping it (pinholed's end) lets it clean up.
pub struct Janitor {
    child: Child,
}

/// Starts the janitor for `state_dir`; none when it cannot be started (logged: a crash would
/// then leave the rules until the next start).
pub fn start(state_dir: &Path) -> Option<Janitor> {
    let exe = std::env::current_exe().ok()?;
    let child = Command::new(exe)
        .arg("--janitor")
        .arg("--state-dir")
        .arg(state_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    match child {
        Ok(child) => Some(Janitor { child }),
        Err(e) => {
            tracing::warn!("cannot start the janitor (a crash would leave routing rules until the next start): {e}");
            None
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // Closing the pipe is the signal; it cleans up and exits on its own.
        drop(self.child.stdin.take());
        let _ = self.child.try_wait();
    }
}

/// The janitor's own run: waits until standard input closes, then cleans up.
pub fn run(state_dir: &Path) {
    // A terminal's Ctrl-C reaches the whole process group: pinholed cleans up itself then,
    // and the janitor waits for the pipe like any other end.
    // SAFETY: setting a signal's disposition to "ignore" at start, before any other thread.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    super::route_table::clean_leftovers();
    super::forwarding::clean_leftovers(state_dir);
}
