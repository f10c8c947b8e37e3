//! Windows: a Name Resolution Policy Table rule that sends the account's names (only) to
//! pinholed's DNS server, written where the DNS client reads local rules (the Dnscache
//! service's DnsPolicyConfig key; the service is then told to reread them), removed on down
//! and exit and at the next start after a crash.

use super::{DnsConfig, OsDns, OsDnsError};
use std::net::SocketAddr;
use winreg::enums::HKEY_LOCAL_MACHINE;
use winreg::RegKey;

/// Where the DNS client reads locally configured NRPT rules.
const POLICY_KEY: &str = r"SYSTEM\CurrentControlSet\Services\Dnscache\Parameters\DnsPolicyConfig";
/// Our rule's key under it.
const RULE: &str = "{pinhole-6e1f5a0c-names}";
/// GenericDNSServers is set (the rule names DNS servers).
const CONFIG_OPTIONS: u32 = 0x8;
const RULE_VERSION: u32 = 2;

/// The rule, under `root\policy`.
pub struct Nrpt {
    root: RegKey,
    policy: String,
    applied: Option<DnsConfig>,
}

impl Nrpt {
    /// The system's rule table.
    pub fn system() -> Self {
        Self::at(RegKey::predef(HKEY_LOCAL_MACHINE), POLICY_KEY)
    }

    /// A table under another key (tests use one of their own under HKEY_CURRENT_USER).
    pub fn at(root: RegKey, policy: &str) -> Self {
        Self {
            root,
            policy: policy.to_string(),
            applied: None,
        }
    }

    fn rule_path(&self) -> String {
        format!(r"{}\{RULE}", self.policy)
    }

    /// A rule left by a pinholed that did not stop cleanly goes.
    pub fn recover(&mut self) -> Result<(), OsDnsError> {
        match self.root.delete_subkey_all(self.rule_path()) {
            Ok(()) => {
                tracing::info!("removed the NRPT rule a previous pinholed left");
                refresh();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OsDnsError::Write(self.rule_path(), e)),
        }
    }
}

impl OsDns for Nrpt {
    fn apply(&mut self, cfg: &DnsConfig) -> Result<(), OsDnsError> {
        if self.applied.as_ref() == Some(cfg) {
            return Ok(());
        }
        let path = self.rule_path();
        let err = |e| OsDnsError::Write(path.clone(), e);
        let (key, _) = self.root.create_subkey(&path).map_err(err)?;
        // A leading dot: the suffix and every name under it.
        let names = vec![format!(".{}", cfg.suffix)];
        key.set_value("Version", &RULE_VERSION).map_err(err)?;
        key.set_value("Name", &names).map_err(err)?;
        key.set_value("GenericDNSServers", &cfg.server.to_string())
            .map_err(err)?;
        key.set_value("ConfigOptions", &CONFIG_OPTIONS)
            .map_err(err)?;
        key.set_value("IPSECCARestriction", &String::new())
            .map_err(err)?;
        refresh();
        tracing::info!(suffix = %cfg.suffix, server = %cfg.server, "NRPT rule sends the account's names to pinholed");
        self.applied = Some(cfg.clone());
        Ok(())
    }

    fn revert(&mut self) -> Result<(), OsDnsError> {
        if self.applied.take().is_none() {
            return Ok(());
        }
        match self.root.delete_subkey_all(self.rule_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OsDnsError::Write(self.rule_path(), e)),
        }
        refresh();
        Ok(())
    }

    fn describe(&self) -> String {
        match &self.applied {
            Some(cfg) => format!("NRPT rule for .{} (the account's names only)", cfg.suffix),
            None => "no NRPT rule".to_string(),
        }
    }

    fn upstreams(&self) -> Vec<SocketAddr> {
        // Only the account's names are sent to pinholed: nothing to forward.
        Vec::new()
    }
}

/// Tells the DNS client to read the rules again (a parameter-change control to the Dnscache
/// service, as Windows' own tools do for local rules); a failure (no such service, under Wine)
/// only delays the rule until the client reads its policy next.
fn refresh() {
    use windows_sys::Win32::System::Services::{
        CloseServiceHandle, ControlService, OpenSCManagerW, OpenServiceW, SC_MANAGER_CONNECT,
        SERVICE_CONTROL_PARAMCHANGE, SERVICE_PAUSE_CONTINUE, SERVICE_STATUS,
    };
    let name: Vec<u16> = "Dnscache".encode_utf16().chain([0]).collect();
    // SAFETY: handles are checked before use and closed once; the name is NUL-terminated and
    // outlives the call; the status is a plain out-parameter.
    unsafe {
        let manager = OpenSCManagerW(std::ptr::null(), std::ptr::null(), SC_MANAGER_CONNECT);
        if manager.is_null() {
            tracing::debug!("the service manager: {}", std::io::Error::last_os_error());
            return;
        }
        let service = OpenServiceW(manager, name.as_ptr(), SERVICE_PAUSE_CONTINUE);
        if service.is_null() {
            tracing::debug!("the Dnscache service: {}", std::io::Error::last_os_error());
        } else {
            let mut status: SERVICE_STATUS = std::mem::zeroed();
            if ControlService(service, SERVICE_CONTROL_PARAMCHANGE, &mut status) == 0 {
                tracing::debug!(
                    "telling Dnscache to reread its rules: {}",
                    std::io::Error::last_os_error()
                );
            }
            CloseServiceHandle(service);
        }
        CloseServiceHandle(manager);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use winreg::enums::{HKEY_CURRENT_USER, KEY_ALL_ACCESS};

    #[test]
    fn the_rule_follows_the_suffix_and_goes_on_revert() {
        let base = format!(r"Software\PinholeTest\nrpt-{}", std::process::id());
        let hkcu = RegKey::predef(HKEY_CURRENT_USER);
        let mut n = Nrpt::at(RegKey::predef(HKEY_CURRENT_USER), &base);
        let cfg = |s: &str| DnsConfig {
            server: "100.100.100.100".parse().unwrap(),
            interface: None,
            suffix: s.into(),
        };
        n.apply(&cfg("pinhole.internal")).unwrap();
        let key = hkcu
            .open_subkey_with_flags(format!(r"{base}\{RULE}"), KEY_ALL_ACCESS)
            .unwrap();
        let names: Vec<String> = key.get_value("Name").unwrap();
        assert_eq!(names, [".pinhole.internal"]);
        let server: String = key.get_value("GenericDNSServers").unwrap();
        assert_eq!(server, "100.100.100.100");
        let options: u32 = key.get_value("ConfigOptions").unwrap();
        assert_eq!(options, CONFIG_OPTIONS);
        n.apply(&cfg("corp.internal")).unwrap();
        let names: Vec<String> = key.get_value("Name").unwrap();
        assert_eq!(names, [".corp.internal"]);
        assert!(n.describe().contains(".corp.internal"));
        n.revert().unwrap();
        assert!(hkcu.open_subkey(format!(r"{base}\{RULE}")).is_err());
        // A crash's leftover goes at the next start; nothing there is fine too.
        n.apply(&cfg("pinhole.internal")).unwrap();
        let mut next = Nrpt::at(RegKey::predef(HKEY_CURRENT_USER), &base);
        next.recover().unwrap();
        assert!(hkcu.open_subkey(format!(r"{base}\{RULE}")).is_err());
        next.recover().unwrap();
        let _ =
            hkcu.delete_subkey_all(format!(r"Software\PinholeTest\nrpt-{}", std::process::id()));
    }
}
