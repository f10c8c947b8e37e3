//! Telling the operating system about the DNS server inside the tunnel, behind one small
//! trait: a managed /etc/resolv.conf (backed up in the state directory, restored on down and
//! exit, and at the next start after a crash); on macOS a /etc/resolver/SUFFIX file and on
//! Windows an NRPT rule, which send only the account's names to pinholed. What the system had
//! is put back exactly.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
#[cfg(any(unix, test))]
use std::path::PathBuf;

/// The first line of a resolv.conf pinholed wrote: how it knows the file is its own.
#[cfg(any(unix, test))]
const MARK: &str =
    "# Written by pinholed while its tunnel is up; the system's own is restored when it goes down.";

/// What the system is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// pinholed's DNS server (100.100.100.100).
    pub server: IpAddr,
    /// The tunnel's device, once up (systemd-resolved configures DNS per link).
    pub interface: Option<String>,
    /// The account's suffix: a search domain, and on macOS the only names sent to us.
    pub suffix: String,
}

/// Why the system could not be told (or put back); the daemon goes on without names.
#[derive(Debug, thiserror::Error)]
pub enum OsDnsError {
    #[cfg(any(all(unix, not(target_os = "macos")), test))]
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(String, std::io::Error),
    /// The system's resolver is someone else's to manage.
    #[cfg(any(all(unix, not(target_os = "macos")), test))]
    #[error("{0}")]
    Unsupported(String),
}

/// One way of configuring the system's resolver.
pub trait OsDns: Send {
    /// Points the system at `cfg` (again, if it changed); the first call saves what it had.
    fn apply(&mut self, cfg: &DnsConfig) -> Result<(), OsDnsError>;
    /// Puts back what the system had; nothing to do if nothing was applied.
    fn revert(&mut self) -> Result<(), OsDnsError>;
    /// How the system is configured, in words (`pinhole status`, the app's network view).
    fn describe(&self) -> String;
    /// The resolvers the system used before pinholed (where other names are forwarded).
    fn upstreams(&self) -> Vec<SocketAddr>;
}

/// The way this system is configured; a crash's leftovers are put back first.
pub async fn for_this_system(state_dir: &Path) -> Box<dyn OsDns> {
    #[cfg(target_os = "macos")]
    {
        let _ = state_dir;
        Box::new(MacResolver::new(Path::new("/etc/resolver")))
    }
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        let mut rc = ResolvConf::new(Path::new("/etc/resolv.conf"), state_dir);
        if let Err(e) = rc.recover() {
            tracing::warn!("putting back the resolv.conf a crashed pinholed left: {e}");
        }
        #[cfg(target_os = "linux")]
        if resolved::Resolved::present().await {
            tracing::info!(
                "systemd-resolved runs here: the tunnel's link gets the account's names"
            );
            return Box::new(resolved::Resolved::start());
        }
        Box::new(rc)
    }
    #[cfg(windows)]
    {
        let _ = state_dir;
        let mut nrpt = nrpt::Nrpt::system();
        if let Err(e) = nrpt.recover() {
            tracing::warn!("removing the NRPT rule a crashed pinholed left: {e}");
        }
        Box::new(nrpt)
    }
}

#[cfg(any(all(unix, not(target_os = "macos")), test))]
/// /etc/resolv.conf managed by pinholed: every name goes to its server (which answers the
/// account's and forwards the rest to the nameservers the file had), the original search
/// domains and options kept, the original saved in the state directory.
pub struct ResolvConf {
    path: PathBuf,
    backup: PathBuf,
    /// What the file said before pinholed (read at start, or from the backup after a crash).
    original: Option<String>,
    applied: Option<DnsConfig>,
}

#[cfg(any(all(unix, not(target_os = "macos")), test))]
impl ResolvConf {
    pub fn new(path: &Path, state_dir: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            backup: state_dir.join("resolv.conf.before"),
            original: None,
            applied: None,
        }
    }

    /// After a crash the file is still ours and the backup holds the system's: put it back.
    pub fn recover(&mut self) -> Result<(), OsDnsError> {
        let Ok(saved) = std::fs::read_to_string(&self.backup) else {
            return Ok(());
        };
        let current = self.read()?;
        if current.starts_with(MARK) {
            self.write(&saved)?;
            tracing::info!(file = %self.path.display(), "put back the resolv.conf a previous pinholed left");
        }
        let _ = std::fs::remove_file(&self.backup);
        Ok(())
    }

    fn read(&self) -> Result<String, OsDnsError> {
        std::fs::read_to_string(&self.path)
            .map_err(|e| OsDnsError::Read(self.path.display().to_string(), e))
    }

    /// Writes in place (truncate, write, sync): the file may be a bind mount, which cannot be
    /// replaced by a rename.
    fn write(&self, text: &str) -> Result<(), OsDnsError> {
        let err = |e| OsDnsError::Write(self.path.display().to_string(), e);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
            .map_err(err)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)
    }

    /// The original, read once (the backup's if the file is already ours).
    fn original(&mut self) -> Result<String, OsDnsError> {
        if let Some(o) = &self.original {
            return Ok(o.clone());
        }
        let current = self.read()?;
        let original = if current.starts_with(MARK) {
            std::fs::read_to_string(&self.backup).unwrap_or_default()
        } else {
            current
        };
        self.original = Some(original.clone());
        Ok(original)
    }
}

#[cfg(any(all(unix, not(target_os = "macos")), test))]
impl OsDns for ResolvConf {
    fn apply(&mut self, cfg: &DnsConfig) -> Result<(), OsDnsError> {
        if self.applied.as_ref() == Some(cfg) {
            return Ok(());
        }
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(OsDnsError::Unsupported(format!(
                "{} is a link (systemd-resolved or another manager owns it): pinholed leaves it alone",
                self.path.display()
            )));
        }
        let original = self.original()?;
        if self.applied.is_none() {
            std::fs::write(&self.backup, &original)
                .map_err(|e| OsDnsError::Write(self.backup.display().to_string(), e))?;
        }
        self.write(&managed(&original, cfg))?;
        tracing::info!(file = %self.path.display(), server = %cfg.server, suffix = %cfg.suffix, "resolv.conf points at pinholed's DNS server");
        self.applied = Some(cfg.clone());
        Ok(())
    }

    fn revert(&mut self) -> Result<(), OsDnsError> {
        if self.applied.take().is_none() {
            return Ok(());
        }
        let original = self.original()?;
        self.write(&original)?;
        let _ = std::fs::remove_file(&self.backup);
        tracing::info!(file = %self.path.display(), "resolv.conf put back");
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.applied {
            Some(_) => format!("{} (managed by pinholed)", self.path.display()),
            None => format!("{} (not changed)", self.path.display()),
        }
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        let text = match &self.original {
            Some(o) => o.clone(),
            None => match std::fs::read_to_string(&self.path) {
                Ok(t) if t.starts_with(MARK) => {
                    std::fs::read_to_string(&self.backup).unwrap_or_default()
                }
                Ok(t) => t,
                Err(_) => String::new(),
            },
        };
        crate::platform::resolvers::nameservers(&text)
    }
}

#[cfg(any(all(unix, not(target_os = "macos")), test))]
/// The file pinholed writes: its server, the suffix first among the original search domains,
/// the original options.
pub fn managed(original: &str, cfg: &DnsConfig) -> String {
    let mut search = vec![cfg.suffix.clone()];
    let mut options = Vec::new();
    for line in original.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search") | Some("domain") => {
                for d in words {
                    if !search.iter().any(|s| s == d) {
                        search.push(d.to_string());
                    }
                }
            }
            Some("options") => options.push(line.trim().to_string()),
            _ => {}
        }
    }
    let mut out = format!(
        "{MARK}\nnameserver {}\nsearch {}\n",
        cfg.server,
        search.join(" ")
    );
    for o in options {
        out.push_str(&o);
        out.push('\n');
    }
    out
}

/// macOS: /etc/resolver/SUFFIX sends the account's names (only) to pinholed's server.
#[cfg(any(target_os = "macos", test))]
pub struct MacResolver {
    dir: PathBuf,
    written: Option<PathBuf>,
}

#[cfg(any(target_os = "macos", test))]
impl MacResolver {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            written: None,
        }
    }
}

#[cfg(any(target_os = "macos", test))]
impl OsDns for MacResolver {
    fn apply(&mut self, cfg: &DnsConfig) -> Result<(), OsDnsError> {
        let file = self.dir.join(&cfg.suffix);
        if self.written.as_ref().is_some_and(|w| *w != file) {
            self.revert()?;
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| OsDnsError::Write(self.dir.display().to_string(), e))?;
        let text = format!("{MARK}\nnameserver {}\nsearch_order 1\n", cfg.server);
        std::fs::write(&file, text)
            .map_err(|e| OsDnsError::Write(file.display().to_string(), e))?;
        self.written = Some(file);
        Ok(())
    }

    fn revert(&mut self) -> Result<(), OsDnsError> {
        if let Some(f) = self.written.take() {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OsDnsError::Write(f.display().to_string(), e)),
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.written {
            Some(f) => format!("{} (the account's names only)", f.display()),
            None => format!("{} (not changed)", self.dir.display()),
        }
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        // Only the account's names are sent to pinholed: nothing to forward.
        Vec::new()
    }
}

#[cfg(windows)]
mod nrpt;
#[cfg(target_os = "linux")]
mod resolved;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(suffix: &str) -> DnsConfig {
        DnsConfig {
            server: "100.100.100.100".parse().unwrap(),
            interface: Some("ph0".into()),
            suffix: suffix.into(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pinholed-osdns-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const ORIGINAL: &str = "# from DHCP\nsearch corp.example\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions edns0 trust-ad\n";

    #[test]
    fn the_managed_file_keeps_search_domains_and_options() {
        assert_eq!(
            managed(ORIGINAL, &cfg("pinhole.internal")),
            format!("{MARK}\nnameserver 100.100.100.100\nsearch pinhole.internal corp.example\noptions edns0 trust-ad\n")
        );
    }

    #[test]
    fn resolv_conf_is_managed_and_put_back_exactly() {
        let d = temp("rc");
        let (file, state) = (d.join("resolv.conf"), d.join("state"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(&file, ORIGINAL).unwrap();
        let mut rc = ResolvConf::new(&file, &state);
        rc.apply(&cfg("pinhole.internal")).unwrap();
        let ours = std::fs::read_to_string(&file).unwrap();
        assert!(ours.starts_with(MARK) && ours.contains("nameserver 100.100.100.100\n"));
        // Forwarding goes to what the system had, never to ourselves.
        let ups: Vec<String> = rc.upstreams().iter().map(|a| a.to_string()).collect();
        assert_eq!(ups, ["192.0.2.53:53", "[2001:db8::53]:53"]);
        // A new suffix rewrites the file; the backup stays the original.
        rc.apply(&cfg("corp.internal")).unwrap();
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .contains("search corp.internal corp.example"));
        assert_eq!(
            std::fs::read_to_string(state.join("resolv.conf.before")).unwrap(),
            ORIGINAL
        );
        rc.revert().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
        assert!(!state.join("resolv.conf.before").exists());
        rc.revert().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_crashed_daemons_file_is_put_back_at_the_next_start() {
        let d = temp("crash");
        let (file, state) = (d.join("resolv.conf"), d.join("state"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(&file, ORIGINAL).unwrap();
        let mut rc = ResolvConf::new(&file, &state);
        rc.apply(&cfg("pinhole.internal")).unwrap();
        drop(rc); // kill -9: nothing reverted
        assert!(std::fs::read_to_string(&file).unwrap().starts_with(MARK));
        let mut next = ResolvConf::new(&file, &state);
        // Before recovery the upstreams still come from the saved original.
        assert_eq!(next.upstreams().len(), 2);
        next.recover().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
        // A file someone else wrote since is left alone.
        std::fs::write(state.join("resolv.conf.before"), "stale").unwrap();
        next.recover().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ORIGINAL);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_left_alone_with_a_reason() {
        let d = temp("link");
        let target = d.join("stub-resolv.conf");
        std::fs::write(&target, "nameserver 127.0.0.53\n").unwrap();
        let file = d.join("resolv.conf");
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let mut rc = ResolvConf::new(&file, &d);
        let e = rc.apply(&cfg("pinhole.internal")).unwrap_err();
        assert!(e.to_string().contains("is a link"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn macos_resolver_files_follow_the_suffix() {
        let d = temp("mac");
        let dir = d.join("resolver");
        let mut m = MacResolver::new(&dir);
        m.apply(&cfg("pinhole.internal")).unwrap();
        let text = std::fs::read_to_string(dir.join("pinhole.internal")).unwrap();
        assert!(text.contains("nameserver 100.100.100.100\n"));
        m.apply(&cfg("corp.internal")).unwrap();
        assert!(!dir.join("pinhole.internal").exists());
        assert!(dir.join("corp.internal").exists());
        m.revert().unwrap();
        assert!(!dir.join("corp.internal").exists());
        let _ = std::fs::remove_dir_all(&d);
    }
}
