//! A built lab: its namespaces, the processes started in them, and the teardown on drop.

use crate::topology::Topology;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// What went wrong building or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} did not finish within {secs} s")]
    Timeout { cmd: String, secs: u64 },
    #[error("cannot build that lab: {0}")]
    Plan(String),
    #[error("unknown host {0:?}")]
    UnknownHost(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A process started in a lab host; its output goes to [`Proc::log`].
#[derive(Debug, Clone)]
pub struct Proc {
    id: usize,
    log: PathBuf,
}

impl Proc {
    /// The file holding the process's stdout and stderr.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The log's text so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Network namespaces built from a [`Topology`]; removed, with their processes, on drop.
pub struct Lab {
    prefix: String,
    namespaces: HashMap<String, String>,
    procs: Vec<Option<Child>>,
    dir: PathBuf,
}

fn command_error(cmd: &str, out: &Output) -> LabError {
    LabError::Command {
        cmd: cmd.to_string(),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    }
}

/// Where `ip netns exec` finds files to mount over /etc for namespace `ns`.
fn netns_etc(ns: &str) -> std::path::PathBuf {
    Path::new("/etc/netns").join(ns)
}

/// Runs a command to completion, failing on a non-zero exit.
fn sh(argv: &[&str]) -> Result<Output, LabError> {
    let cmd = argv.join(" ");
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(command_error(&cmd, &out));
    }
    Ok(out)
}

impl Lab {
    /// Creates the namespaces, links, addresses and routes of `topology`.
    pub fn build(topology: &Topology) -> Result<Lab, LabError> {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("ph{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("netlab-{prefix}"));
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            prefix,
            namespaces: HashMap::new(),
            procs: Vec::new(),
            dir,
        };
        for host in &topology.hosts {
            let ns = format!("{}-{host}", lab.prefix);
            sh(&["ip", "netns", "add", &ns])?;
            lab.namespaces.insert(host.clone(), ns.clone());
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // Every host has a resolv.conf of its own (empty until a test sets one): a pinholed
            // that manages its DNS writes there, never to the machine's.
            lab.set_resolv_conf(host, &format!("# netlab: {host}'s own resolv.conf\n"))?;
        }
        for host in &topology.forwarding {
            let ns = lab.ns(host)?.to_string();
            for knob in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
                sh(&["ip", "netns", "exec", &ns, "sysctl", "-qw", knob])?;
            }
        }
        for l in &topology.links {
            let (na, nb) = (lab.ns(&l.a)?.to_string(), lab.ns(&l.b)?.to_string());
            sh(&[
                "ip", "-n", &na, "link", "add", &l.a_if, "type", "veth", "peer", "name", &l.b_if,
                "netns", &nb,
            ])?;
            for (ns, ifname, addrs) in [(&na, &l.a_if, &l.a_addrs), (&nb, &l.b_if, &l.b_addrs)] {
                for a in addrs {
                    // nodad: the address is usable at once, no duplicate-address wait.
                    let mut argv = vec!["ip", "-n", ns, "addr", "add", a, "dev", ifname];
                    if a.contains(':') {
                        argv.push("nodad");
                    }
                    sh(&argv)?;
                }
                sh(&["ip", "-n", ns, "link", "set", ifname, "up"])?;
            }
        }
        for r in &topology.routes {
            let ns = lab.ns(&r.host)?.to_string();
            let family = if r.via.contains(':') { "-6" } else { "-4" };
            sh(&[
                "ip", family, "-n", &ns, "route", "add", &r.dst, "via", &r.via,
            ])?;
        }
        Ok(lab)
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> Result<&str, LabError> {
        self.namespaces
            .get(host)
            .map(String::as_str)
            .ok_or_else(|| LabError::UnknownHost(host.to_string()))
    }

    /// What `host`'s resolv.conf says now (pinholed may have rewritten it).
    pub fn resolv_conf(&self, host: &str) -> Result<String, LabError> {
        Ok(std::fs::read_to_string(
            netns_etc(self.ns(host)?).join("resolv.conf"),
        )?)
    }

    /// A directory for this lab's files (configs, logs); removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets `host`'s own resolv.conf: `ip netns exec` mounts /etc/netns/NAMESPACE/resolv.conf
    /// over /etc/resolv.conf for what it starts there (set it before starting them). Every
    /// host has one from the start; the directory goes when the lab does, and the machine's
    /// own /etc/resolv.conf is never touched.
    pub fn set_resolv_conf(&self, host: &str, text: &str) -> Result<(), LabError> {
        let dir = netns_etc(self.ns(host)?);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("resolv.conf"), text)?;
        Ok(())
    }

    fn in_ns(&self, host: &str, argv: &[&str]) -> Result<Command, LabError> {
        let ns = self.ns(host)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(argv);
        // The lab's own D-Bus system bus (nothing listens there unless a test starts one): a
        // pinholed in the lab never reaches the machine's bus, its systemd-resolved included.
        c.env("DBUS_SYSTEM_BUS_ADDRESS", self.system_bus_address());
        Ok(c)
    }

    /// Where the lab's processes look for the D-Bus system bus: a socket in the lab's
    /// directory.
    pub fn system_bus_address(&self) -> String {
        format!("unix:path={}", self.system_bus_path().display())
    }

    /// The socket of the lab's D-Bus system bus.
    pub fn system_bus_path(&self) -> std::path::PathBuf {
        self.dir.join("system_bus_socket")
    }

    /// Runs `argv` in `host` to completion (killed after `timeout`), whatever its exit status.
    pub fn run(&self, host: &str, argv: &[&str], timeout: Duration) -> Result<Output, LabError> {
        let cmd = argv.join(" ");
        let child = self
            .in_ns(host, argv)?
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        // Output is collected on another thread, so a chatty command cannot fill its pipe and
        // stall while this one waits for it to exit.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(timeout) {
            Ok(out) => Ok(out?),
            Err(_) => {
                if let Ok(pid) = i32::try_from(pid) {
                    // SAFETY: signalling our own child, not yet reaped (its waiter is blocked).
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
                let _ = rx.recv_timeout(Duration::from_secs(5));
                Err(LabError::Timeout {
                    cmd,
                    secs: timeout.as_secs(),
                })
            }
        }
    }

    /// Like [`Lab::run`], but a non-zero exit is an error; returns stdout.
    pub fn run_ok(&self, host: &str, argv: &[&str], timeout: Duration) -> Result<String, LabError> {
        let out = self.run(host, argv, timeout)?;
        if !out.status.success() {
            return Err(command_error(&argv.join(" "), &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `argv` in `host` in the background, output to a log file in the lab's directory.
    pub fn spawn(&mut self, host: &str, argv: &[&str]) -> Result<Proc, LabError> {
        self.spawn_env(host, argv, &[])
    }

    /// Like [`Lab::spawn`], with extra environment variables.
    pub fn spawn_env(
        &mut self,
        host: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proc, LabError> {
        let id = self.procs.len();
        let name = Path::new(argv[0])
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let log = self.dir.join(format!("{host}-{id}-{name}.log"));
        let file = File::create(&log)?;
        let child = self
            .in_ns(host, argv)?
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: argv.join(" "),
                source,
            })?;
        self.procs.push(Some(child));
        Ok(Proc { id, log })
    }

    /// True while the process runs.
    pub fn is_running(&mut self, p: &Proc) -> bool {
        match self.procs.get_mut(p.id).and_then(Option::as_mut) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit (then SIGKILL).
    /// Returns its exit status, or `None` if it had to be killed.
    pub fn stop(&mut self, p: &Proc, timeout: Duration) -> Option<ExitStatus> {
        let child = self.procs.get_mut(p.id)?.take()?;
        stop_child(child, timeout)
    }

    /// Kills the process at once (SIGKILL: no chance to close anything cleanly) and reaps it.
    pub fn kill(&mut self, p: &Proc) {
        if let Some(mut child) = self.procs.get_mut(p.id).and_then(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait(&mut self, p: &Proc, timeout: Duration) -> Option<ExitStatus> {
        let slot = self.procs.get_mut(p.id)?;
        let deadline = Instant::now() + timeout;
        loop {
            let child = slot.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                *slot = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `check` returns true, polling every 50 ms, for at most `timeout`.
    pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stop_child(mut child: Child, timeout: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling a child we own and have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Lab {
    /// The name of `host`'s entry in the credential store (the CLI's `PINHOLE_CREDENTIAL_NAME`):
    /// the lab's own, never the machine's real `session` entry; removed when the lab is dropped.
    pub fn credential_name(&self, host: &str) -> String {
        format!("netlab-{}-{host}", self.prefix)
    }

    /// Removes the kernel-keyring entries the lab's CLIs may have written.
    fn forget_credentials(&self) {
        #[cfg(target_os = "linux")]
        {
            use linux_keyutils::{KeyRing, KeyRingIdentifier};
            let Ok(ring) = KeyRing::from_special_id(KeyRingIdentifier::User, false) else {
                return;
            };
            for host in self.namespaces.keys() {
                let description = format!("pinhole:{}", self.credential_name(host));
                if let Ok(key) = ring.search(&description) {
                    let _ = key.invalidate();
                }
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.procs.drain(..).flatten() {
            stop_child(child, Duration::from_secs(3));
        }
        self.forget_credentials();
        for ns in self.namespaces.values() {
            // Anything still inside (a daemon that forked) goes too.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: sending a signal has no memory-safety preconditions.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(netns_etc(ns));
        }
        // /etc/netns itself, if no other lab (or anything else) still has a file there.
        let _ = std::fs::remove_dir(Path::new("/etc/netns"));
        if std::env::var_os("NETLAB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
