//! systemd-resolved for one lab host, without touching the machine: Debian's package is
//! downloaded and unpacked under target/ (never installed), and its daemon runs in the host's
//! network namespace inside a mount namespace of its own (a tmpfs on /run, a passwd and
//! group that know its user, its upstream in a drop-in there) on the lab's private D-Bus system
//! bus, which every process the lab starts uses.

use crate::{Lab, LabError, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The unpacked package: the daemon and resolvectl.
pub struct Binaries {
    pub daemon: PathBuf,
    pub resolvectl: PathBuf,
}

/// Downloads Debian's systemd-resolved for this machine's release into `dir` (once) and
/// unpacks it there.
pub fn binaries(dir: &Path) -> Result<Binaries, String> {
    let root = dir.join("root");
    let found = Binaries {
        daemon: root.join("lib/systemd/systemd-resolved"),
        resolvectl: root.join("usr/bin/resolvectl"),
    };
    if found.daemon.exists() && found.resolvectl.exists() {
        return Ok(found);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    // Downloaded as root into a folder apt's sandbox user cannot write: say so to apt.
    run(Command::new("apt-get")
        .args([
            "-o",
            "APT::Sandbox::User=root",
            "download",
            "systemd-resolved",
        ])
        .current_dir(dir))?;
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    if !found.daemon.exists() {
        return Err(format!("no {} in the package", found.daemon.display()));
    }
    Ok(found)
}

/// The bus and resolved running for a host; they stop with the lab (everything in its
/// namespaces is killed).
pub struct Running {
    pub resolvectl: PathBuf,
    pub daemon: Proc,
}

/// Starts the lab's D-Bus system bus and systemd-resolved in `host`, forwarding names that
/// are no link's to `upstream` (an address in the lab). Waits until resolvectl answers.
pub fn start(
    lab: &mut Lab,
    host: &str,
    upstream: &str,
    bins: &Binaries,
) -> Result<Running, LabError> {
    let dir = lab.dir().join(format!("resolved-{host}"));
    std::fs::create_dir_all(&dir)?;
    let bus_conf = dir.join("bus.conf");
    std::fs::write(
        &bus_conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            lab.system_bus_path().display()
        ),
    )?;
    // Its user, in files only its mount namespace sees.
    let mut passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd.push_str("systemd-resolve:x:991:991:resolver:/run/systemd/resolve:/usr/sbin/nologin\n");
    let mut group = std::fs::read_to_string("/etc/group")?;
    group.push_str("systemd-resolve:x:991:\n");
    std::fs::write(dir.join("passwd"), passwd)?;
    std::fs::write(dir.join("group"), group)?;
    let script = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs tmpfs /run; mkdir -p /run/systemd; \
         mount --bind {d}/passwd /etc/passwd; mount --bind {d}/group /etc/group; \
         dbus-daemon --fork --config-file={d}/bus.conf; \
         mkdir -p /run/systemd/resolved.conf.d; \
         printf '[Resolve]\\nDNS={upstream}\\nLLMNR=no\\nMulticastDNS=no\\nDNSSEC=no\\n' > /run/systemd/resolved.conf.d/lab.conf; \
         exec {daemon}",
        d = dir.display(),
        daemon = bins.daemon.display(),
    );
    // The bus runs in the same mount namespace: it must know the daemon's user too.
    let daemon = lab.spawn(host, &["unshare", "-m", "bash", "-c", &script])?;
    let resolvectl = bins.resolvectl.clone();
    let mut last = String::new();
    let up = Lab::wait_for(Duration::from_secs(10), || {
        match lab.run(
            host,
            &[&resolvectl.to_string_lossy(), "status"],
            Duration::from_secs(5),
        ) {
            Ok(o) if o.status.success() => true,
            Ok(o) => {
                last = String::from_utf8_lossy(&o.stderr).into_owned();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        }
    });
    if !up {
        return Err(LabError::Plan(format!(
            "systemd-resolved did not answer resolvectl ({}):\n{}",
            last.trim(),
            daemon.log_text()
        )));
    }
    Ok(Running { resolvectl, daemon })
}
