//! Delay, jitter and loss on the lab's public network, without netem (this kernel has none):
//! policy routing in the public namespace sends every packet it forwards, receives or sends
//! through a TUN device, and `netlab-tool impair` reads them there, drops some, holds the rest
//! for the delay (plus jitter) and writes them back, after which the main routing table takes
//! them on. Each pass through the public network is delayed once: a round trip between two
//! sites, or between a site and control, takes twice the delay.

use crate::mesh::PUBLIC;
use crate::{Lab, LabError, Proc};
use rand::{Rng, SeedableRng};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The TUN device in the public namespace.
pub const DEVICE: &str = "impair0";
/// The routing table that leads into it.
const TABLE: &str = "77";

/// What to do to packets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// One-way delay per pass.
    pub delay: Duration,
    /// Up to this much more or less, uniformly.
    pub jitter: Duration,
    /// Percent of packets dropped per pass.
    pub loss_percent: f64,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.delay.is_zero() && self.loss_percent <= 0.0
    }
}

/// Opens a TUN device called `name` (no packet information header).
fn open_tun(name: &str) -> std::io::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other("device name too long"));
    }
    // SAFETY: a plain open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which IfReq lays out.
    let r = unsafe { libc::ioctl(fd, TUNSETIFF as _, &mut req) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// A packet waiting for its time, earliest first.
struct Held {
    due: Instant,
    seq: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Runs the forwarder on `device` until killed (`netlab-tool impair`); prints `ready` once
/// the device exists.
pub fn run(device: &str, imp: Impairment, seed: u64) -> std::io::Result<()> {
    let mut reader = open_tun(device)?;
    let mut writer = reader.try_clone()?;
    println!("ready");
    let (tx, rx) = mpsc::channel::<Held>();
    let delay_writer = std::thread::spawn(move || {
        let mut heap = BinaryHeap::new();
        loop {
            let wait = heap
                .peek()
                .map(|h: &Held| h.due.saturating_duration_since(Instant::now()));
            let got = match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(h) => heap.push(h),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            while heap.peek().is_some_and(|h| h.due <= now) {
                if let Some(h) = heap.pop() {
                    let _ = writer.write_all(&h.packet);
                }
            }
        }
    });
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let jitter = imp.jitter.as_secs_f64();
    let mut buf = vec![0u8; 65536];
    let mut seq = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if imp.loss_percent > 0.0 && rng.gen::<f64>() * 100.0 < imp.loss_percent {
            continue;
        }
        let spread = if jitter > 0.0 {
            rng.gen_range(-jitter..=jitter)
        } else {
            0.0
        };
        let delay = (imp.delay.as_secs_f64() + spread).max(0.0);
        seq += 1;
        let held = Held {
            due: Instant::now() + Duration::from_secs_f64(delay),
            seq,
            packet: buf[..n].to_vec(),
        };
        if tx.send(held).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = delay_writer.join();
    Ok(())
}

/// Starts the forwarder in the lab's public namespace and routes everything through it.
pub fn start(lab: &mut Lab, imp: Impairment) -> Result<Proc, LabError> {
    let tool = crate::pinhole::tool();
    let delay = imp.delay.as_secs_f64().to_string();
    let jitter = imp.jitter.as_secs_f64().to_string();
    let loss = imp.loss_percent.to_string();
    let p = lab.spawn(
        PUBLIC,
        &[
            tool.to_str().unwrap_or("netlab-tool"),
            "impair",
            DEVICE,
            &delay,
            &jitter,
            &loss,
        ],
    )?;
    if !Lab::wait_for(Duration::from_secs(10), || p.log_text().contains("ready")) {
        return Err(LabError::Plan(format!(
            "netlab-tool impair did not start: {}",
            p.log_text()
        )));
    }
    let t = Duration::from_secs(10);
    let run = |argv: &[&str]| lab.run_ok(PUBLIC, argv, t).map(|_| ());
    run(&["ip", "link", "set", DEVICE, "up"])?;
    // Packets written back come in on the device with sources of any kind (the namespace's
    // own too): accept them.
    // No early demultiplexing either: it hands a packet for a local socket straight to the
    // socket's cached route and past the device (a TCP handshake's SYN came through, its ACK
    // never did).
    for knob in [
        format!("net.ipv4.conf.{DEVICE}.rp_filter=0"),
        "net.ipv4.conf.all.rp_filter=0".to_string(),
        format!("net.ipv4.conf.{DEVICE}.accept_local=1"),
        "net.ipv4.tcp_early_demux=0".to_string(),
        "net.ipv4.udp_early_demux=0".to_string(),
    ] {
        run(&["sysctl", "-qw", &knob])?;
    }
    run(&[
        "ip", "route", "add", "default", "dev", DEVICE, "table", TABLE,
    ])?;
    // Everything but what the device hands back goes in: forwarded, received and sent; so
    // the local table comes after it. Loopback traffic and the links' own addresses (ARP for
    // the sites' gateways) stay out.
    let mut rules = vec!["add to 127.0.0.0/8 lookup local pref 50".to_string()];
    let addrs = lab.run_ok(PUBLIC, &["ip", "-o", "-4", "addr", "show"], t)?;
    for line in addrs.lines() {
        let mut words = line.split_whitespace();
        let dev = words.nth(1).unwrap_or_default();
        let addr = words.nth(1).and_then(|a| a.split('/').next());
        if let (false, Some(a)) = (dev == "lo", addr) {
            rules.push(format!("add to {a} lookup local pref 60"));
        }
    }
    rules.push(format!("add not iif {DEVICE} lookup {TABLE} pref 100"));
    rules.push("add lookup local pref 200".into());
    rules.push("del pref 0".into());
    for rule in &rules {
        let mut argv = vec!["ip", "rule"];
        argv.extend(rule.split(' '));
        run(&argv)?;
    }
    Ok(p)
}
