//! How two Pinhole nodes end up behind two routers: the path RFC 4787 reasoning expects, one
//! real run in a NAT lab (control with its relay and STUN, two nodes, pings over the tunnel,
//! `pinhole status --json` on both), and the grid of expected against observed.
//!
//! The expectation (plain hole punching: each side sends to the endpoint STUN saw for the
//! other, and answers wherever a packet came from):
//! - both sides map endpoint-independently: each sends from the very endpoint the other
//!   targets, so every filter lets the other in: direct;
//! - one side (A) maps endpoint-independently and filters by address at most (EIF, ADF): B's
//!   packets come from a new port of the address A sent to, A lets them in and answers there
//!   from its one mapping, which B sent to: direct;
//! - one side filters endpoint-independently: it lets the other's pings to its STUN mapping
//!   in, and its answers leave through that same mapping (the router tracks the exchange), from
//!   the very address the other sent to, whatever the other's NAT: direct;
//! - anything else (both address-dependent mappings with port or address filters, a symmetric
//!   NAT against a port-restricted one, UDP blocked): relayed.
//!
//! Two nodes behind one router meet directly only through hairpinning, with an
//! endpoint-independent mapping; a double NAT behaves as the stricter of its two routers.

use crate::mesh::{self, Control};
use crate::nat::{Filtering, Kind, Mapping, Ports, Profile};
use crate::natlab::Plan;
use crate::{impair::Impairment, Lab};
use std::fmt;
use std::time::{Duration, Instant};

/// Where the nodes sit.
#[derive(Debug, Clone)]
pub enum Case {
    /// Node a behind `0`, node b behind `1`.
    Pair(Profile, Profile),
    /// Both nodes behind one router.
    SameRouter(Profile),
    /// Node a behind a home router `1` behind a carrier-grade NAT `0`; node b behind `2`.
    DoubleNat(Profile, Profile, Profile),
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Case::Pair(a, b) => write!(f, "{a} × {b}"),
            Case::SameRouter(p) => write!(f, "both behind one {p}"),
            Case::DoubleNat(c, h, b) => write!(f, "{h} behind CGNAT {c} × {b}"),
        }
    }
}

/// A path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct,
    Relayed,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct",
            Path::Relayed => "relayed",
        })
    }
}

/// A side's effective behaviour for the reasoning: None when UDP cannot pass. A router that
/// grants port mappings forwards the node's port from anyone: a full cone for it.
fn behaviour(p: &Profile) -> Option<(Mapping, Filtering)> {
    match p.kind {
        Kind::Public => Some((Mapping::Eim, Filtering::Eif)),
        Kind::Nat { .. } if p.port_mapping.is_some() => Some((Mapping::Eim, Filtering::Eif)),
        Kind::UdpBlocked => None,
        Kind::Nat {
            mapping, filtering, ..
        } => Some((mapping, filtering)),
    }
}

/// Whether port prediction crosses `hard` from `other`: `hard` allocates ports in sequence, so
/// `other` pings the ports after the ones the STUN servers saw and opens its filter for the
/// one `hard`'s pings come from. That suffices when `other` maps endpoint-independently (its
/// pings come from the address `hard` pinged), or when `hard` filters by address only (any
/// port of `other`'s address gets in); measured in netsim over 50 seeded runs per cell.
fn predictable(hard: &Profile, other: &Profile) -> bool {
    let Kind::Nat {
        ports: Ports::Sequential,
        filtering,
        ..
    } = hard.kind
    else {
        return false;
    };
    match behaviour(other) {
        None => false,
        Some((m, _)) => m == Mapping::Eim || filtering != Filtering::Adpf,
    }
}

/// Whether birthday probing crosses `hard` from `other`: `hard` maps every destination port
/// to a port nobody can predict (its two STUN ports differ), `other` maps
/// endpoint-independently; `hard` opens many mappings toward `other`, which probes random
/// ports until one is hit (netsim: 50 of 50 seeded runs per cell).
fn birthday(hard: &Profile, other: &Profile) -> bool {
    let Kind::Nat {
        mapping: Mapping::Adpm,
        ports: Ports::Hash | Ports::Random,
        ..
    } = hard.kind
    else {
        return false;
    };
    hard.port_mapping.is_none() && matches!(behaviour(other), Some((Mapping::Eim, _)))
}

fn rank_m(m: Mapping) -> u8 {
    match m {
        Mapping::Eim => 0,
        Mapping::Adm => 1,
        Mapping::Adpm => 2,
    }
}

fn rank_f(f: Filtering) -> u8 {
    match f {
        Filtering::Eif => 0,
        Filtering::Adf => 1,
        Filtering::Adpf => 2,
    }
}

/// Two NATs in a row behave as the stricter of each.
fn stack(outer: (Mapping, Filtering), inner: (Mapping, Filtering)) -> (Mapping, Filtering) {
    let m = if rank_m(outer.0) >= rank_m(inner.0) {
        outer.0
    } else {
        inner.0
    };
    let f = if rank_f(outer.1) >= rank_f(inner.1) {
        outer.1
    } else {
        inner.1
    };
    (m, f)
}

fn pair_expect(a: Option<(Mapping, Filtering)>, b: Option<(Mapping, Filtering)>) -> Path {
    let (Some((ma, fa)), Some((mb, fb))) = (a, b) else {
        return Path::Relayed;
    };
    let loose = |f: Filtering| f != Filtering::Adpf;
    let both_eim = ma == Mapping::Eim && mb == Mapping::Eim;
    let eim_and_loose = |m: Mapping, f: Filtering| m == Mapping::Eim && loose(f);
    let direct = both_eim
        || eim_and_loose(ma, fa)
        || eim_and_loose(mb, fb)
        || fa == Filtering::Eif
        || fb == Filtering::Eif;
    if direct {
        Path::Direct
    } else {
        Path::Relayed
    }
}

impl Case {
    /// The path RFC 4787 reasoning expects (see the module's header).
    pub fn expected(&self) -> Path {
        match self {
            Case::Pair(a, b) => match pair_expect(behaviour(a), behaviour(b)) {
                Path::Relayed
                    if predictable(a, b)
                        || predictable(b, a)
                        || birthday(a, b)
                        || birthday(b, a) =>
                {
                    Path::Direct
                }
                path => path,
            },
            Case::SameRouter(p) => match behaviour(p) {
                Some((Mapping::Eim, _)) if p.hairpin => Path::Direct,
                _ => Path::Relayed,
            },
            Case::DoubleNat(c, h, b) => {
                let a = behaviour(c).zip(behaviour(h)).map(|(c, h)| stack(c, h));
                // Either layer's unpredictable per-destination ports make the pair a
                // birthday case against an endpoint-independent mapping.
                let unpredictable = [c, h].iter().any(|p| {
                    matches!(
                        p.kind,
                        Kind::Nat {
                            mapping: Mapping::Adpm,
                            ports: Ports::Hash | Ports::Random,
                            ..
                        }
                    )
                });
                match pair_expect(a, behaviour(b)) {
                    Path::Relayed
                        if unpredictable && matches!(behaviour(b), Some((Mapping::Eim, _))) =>
                    {
                        Path::Direct
                    }
                    path => path,
                }
            }
        }
    }

    fn plan(&self) -> Plan {
        match self {
            Case::Pair(a, b) => Plan::new().site(a.clone(), &["a"]).site(b.clone(), &["b"]),
            Case::SameRouter(p) => Plan::new().site(p.clone(), &["a", "b"]),
            Case::DoubleNat(c, h, b) => Plan::new()
                .cgnat(c.clone())
                .site_behind(0, h.clone(), &["a"])
                .site(b.clone(), &["b"]),
        }
    }
}

/// How a cell came out against its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    DirectAsExpected,
    RelayedAsExpected,
    DirectBeyondExpectation,
    WorseThanExpected,
    NoConnectivity,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::DirectAsExpected => "direct as expected",
            Verdict::RelayedAsExpected => "relayed as expected",
            Verdict::DirectBeyondExpectation => "direct beyond expectation",
            Verdict::WorseThanExpected => "worse than expected",
            Verdict::NoConnectivity => "no connectivity",
        })
    }
}

/// One side as `pinhole status --json` showed its peer.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub connection: String,
    pub endpoint: Option<String>,
    pub relay: Option<String>,
    pub rtt_ms: Option<f64>,
    pub reason: Option<String>,
}

/// One cell's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub case: String,
    /// The two profiles' names, for a pair of routers.
    pub pair: Option<(String, String)>,
    pub expected: Path,
    /// None when the pings never came back.
    pub observed: Option<Path>,
    pub verdict: Verdict,
    /// Seconds from both nodes up to the first ping answered over the tunnel.
    pub seconds_to_ping: Option<f64>,
    /// Seconds from both nodes up to the final path.
    pub seconds_to_path: Option<f64>,
    /// How often the path changed while it was watched with traffic after settling.
    pub flaps: u32,
    /// How long it was watched.
    pub held_for: Duration,
    /// Pings sent while it was watched (both ways), and how many came back: a held path
    /// carries traffic.
    pub hold_pings: u32,
    pub hold_answered: u32,
    pub a: Seen,
    pub b: Seen,
}

impl Outcome {
    /// Whether the path carried traffic while it was held: every ping but at most one came
    /// back (one may fall into a rekey or a path change).
    pub fn held_traffic(&self) -> bool {
        self.hold_answered + 1 >= self.hold_pings
    }
}

/// Options of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub impair: Impairment,
    /// How long to wait for the first ping over the tunnel.
    pub connect_timeout: Duration,
    /// How long to keep traffic flowing for a direct path once connected (a relayed path is
    /// watched this long too: it must not turn direct where none is expected).
    pub settle_timeout: Duration,
    /// How long the settled path is then watched, with traffic, for changes (flapping).
    pub hold: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            impair: Impairment::default(),
            connect_timeout: Duration::from_secs(30),
            // Longer than a discovery round (6 s).
            settle_timeout: Duration::from_secs(10),
            hold: Duration::from_secs(30),
        }
    }
}

/// How `host` sees its (only) peer now.
pub fn seen(lab: &Lab, host: &str) -> Seen {
    let st = mesh::status_json(lab, host);
    let Some(p) = st["peers"].as_array().and_then(|p| p.first()) else {
        return Seen::default();
    };
    let text = |k: &str| p[k].as_str().map(str::to_string);
    Seen {
        connection: text("connection").unwrap_or_default(),
        endpoint: text("endpoint"),
        relay: text("relay"),
        rtt_ms: p["rtt_ms"].as_f64(),
        reason: text("path_reason"),
    }
}

fn path_of(s: &Seen) -> Option<Path> {
    match s.connection.as_str() {
        "direct" => Some(Path::Direct),
        "relayed" => Some(Path::Relayed),
        _ => None,
    }
}

/// One ping over the tunnel from `host` to `dst`, answered within a second.
fn ping_once(lab: &Lab, host: &str, dst: &str) -> bool {
    lab.run(
        host,
        &["ping", "-c", "1", "-W", "1", dst],
        Duration::from_secs(5),
    )
    .is_ok_and(|o| o.status.success())
}

/// Runs `cases`, `labs` at a time (each lab torn down when its run ends); the results in the
/// order of `cases`, a run that failed or panicked as its error.
pub fn run_all(cases: &[Case], opts: &RunOptions, labs: usize) -> Vec<Result<Outcome, String>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Outcome, String>>>> =
        cases.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..labs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let r = std::panic::catch_unwind(|| run(case, opts))
                    .unwrap_or_else(|_| Err(format!("{case}: the run panicked")));
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("no result".into()))
        })
        .collect()
}

/// The average round trip of five pings over the tunnel, in ms.
fn rtt(lab: &Lab, host: &str, dst: &str) -> Option<f64> {
    let out = lab
        .run(
            host,
            &["ping", "-n", "-q", "-c", "5", "-i", "0.2", "-W", "2", dst],
            Duration::from_secs(15),
        )
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
}

/// A case's lab with control and both nodes running (torn down on drop).
pub struct Running {
    pub lab: Lab,
    pub control: Control,
    pub procs: Vec<crate::Proc>,
    /// The overlay addresses of a and b.
    pub addr_a: String,
    pub addr_b: String,
    /// When both nodes were up (signed in, tunnel up).
    pub up_at: Instant,
}

/// Builds the lab of `case` and signs both nodes in.
pub fn start(case: &Case, impair: Impairment) -> Result<Running, String> {
    let mut lab = case
        .plan()
        .impair(impair)
        .build()
        .map_err(|e| format!("building the lab for {case}: {e}"))?;
    let control = Control::new(&lab);
    // STUN on the server address itself: answers leave from the address asked, as the NATs'
    // conntrack expects (a wildcard socket answers from the address of the outgoing link).
    let stun = format!("{}:3478", crate::natlab::SERVER_IP);
    let server = control.start_with(&mut lab, &["--stun-listen", &stun]);
    let key = control.authkey_file(&lab);
    let a = mesh::start_node(&mut lab, "a", &key);
    let b = mesh::start_node(&mut lab, "b", &key);
    let up_at = Instant::now();
    let (addr_a, addr_b) = (control.address_of(&lab, "a"), control.address_of(&lab, "b"));
    Ok(Running {
        lab,
        control,
        procs: vec![server, a, b],
        addr_a,
        addr_b,
        up_at,
    })
}

/// Builds the lab of `case`, signs both nodes in and watches them meet.
pub fn run(case: &Case, opts: &RunOptions) -> Result<Outcome, String> {
    let running = start(case, opts.impair)?;
    let started = running.up_at;
    let (lab, addr_a, addr_b) = (&running.lab, &running.addr_a, &running.addr_b);
    let mut seconds_to_ping = None;
    while started.elapsed() < opts.connect_timeout {
        if ping_once(lab, "a", addr_b) && ping_once(lab, "b", addr_a) {
            seconds_to_ping = Some(started.elapsed().as_secs_f64());
            break;
        }
    }
    let expected = case.expected();
    let mut seconds_to_path = seconds_to_ping;
    let (mut a, mut b) = (seen(lab, "a"), seen(lab, "b"));
    let mut flaps = 0;
    let mut held_for = Duration::ZERO;
    let (mut hold_pings, mut hold_answered) = (0u32, 0u32);
    if seconds_to_ping.is_some() {
        // Keep traffic flowing while the path may still improve (a relayed path is given the
        // whole time: it must not turn direct where none is expected).
        seconds_to_path = Some(settle(lab, (addr_a, addr_b), opts.settle_timeout, started));
        (a, b) = (seen(lab, "a"), seen(lab, "b"));
        // Then watch it with traffic: it must stay as it is.
        let mut was = both(&a, &b);
        let hold = Instant::now();
        while hold.elapsed() < opts.hold {
            for (from, to) in [("a", addr_b), ("b", addr_a)] {
                hold_pings += 1;
                hold_answered += u32::from(ping_once(lab, from, to));
            }
            let now = both(&seen(lab, "a"), &seen(lab, "b"));
            if now != was {
                flaps += 1;
                eprintln!("{case}: the path changed while held: {was:?} → {now:?}");
                was = now;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        held_for = hold.elapsed();
        (a, b) = (seen(lab, "a"), seen(lab, "b"));
        a.rtt_ms = rtt(lab, "a", addr_b);
    }
    let observed = seconds_to_ping.and_then(|_| both(&a, &b));
    let verdict = match (expected, observed) {
        (_, None) => Verdict::NoConnectivity,
        (Path::Direct, Some(Path::Direct)) => Verdict::DirectAsExpected,
        (Path::Relayed, Some(Path::Relayed)) => Verdict::RelayedAsExpected,
        (Path::Relayed, Some(Path::Direct)) => Verdict::DirectBeyondExpectation,
        (Path::Direct, Some(Path::Relayed)) => Verdict::WorseThanExpected,
    };
    Ok(Outcome {
        case: case.to_string(),
        pair: match case {
            Case::Pair(a, b) => Some((a.to_string(), b.to_string())),
            _ => None,
        },
        expected,
        observed,
        verdict,
        seconds_to_ping,
        seconds_to_path,
        flaps,
        held_for,
        hold_pings,
        hold_answered,
        a,
        b,
    })
}

/// The path both sides agree on: direct only when both are direct.
fn both(a: &Seen, b: &Seen) -> Option<Path> {
    match (path_of(a), path_of(b)) {
        (Some(Path::Direct), Some(Path::Direct)) => Some(Path::Direct),
        (Some(_), Some(_)) => Some(Path::Relayed),
        _ => None,
    }
}

/// Pings both ways until both sides are direct or `timeout` passes; the seconds since
/// `started` when it ended.
pub fn settle(
    lab: &Lab,
    (addr_a, addr_b): (&str, &str),
    timeout: Duration,
    started: Instant,
) -> f64 {
    let t = Instant::now();
    while t.elapsed() < timeout {
        ping_once(lab, "a", addr_b);
        ping_once(lab, "b", addr_a);
        if both(&seen(lab, "a"), &seen(lab, "b")) == Some(Path::Direct) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed().as_secs_f64()
}

/// How one pair of nodes met: how long after both were up each had the other in its map,
/// and from then on, how long to the first packet and to a direct path.
#[derive(Debug, Clone)]
pub struct Meeting {
    /// Seconds from both up to both listing the other (the map has arrived on both sides).
    pub known: f64,
    /// Seconds to the first ping answered over the tunnel (whatever the path).
    pub first_packet: f64,
    /// Seconds from both listing the other until both sides had a direct path, if they got
    /// one within the deadline.
    pub direct: Option<f64>,
    /// The same from both up (the control plane included).
    pub direct_from_up: Option<f64>,
    /// Disco pings both sides had sent by then (candidates, predicted ports, birthday probes).
    pub pings: u64,
    /// A run that wanted a direct path and never got one: both nodes' status and logs (what
    /// the bench keeps to read why).
    pub miss_report: Option<String>,
}

/// Starts `case`'s lab and measures how its nodes meet: pings from a every few tens of
/// milliseconds from the moment both are up, the status of both watched, until both are
/// direct (or, with `want_direct` false, until the first answer) or `deadline` passes.
pub fn meet(
    case: &Case,
    impair: Impairment,
    deadline: Duration,
    want_direct: bool,
) -> Result<Meeting, String> {
    let mut running = start(case, impair)?;
    // The control plane first: both maps must list the other (over a lossy network the map
    // stream takes its time, which is not the data path's).
    let known = {
        let lab = &running.lab;
        let lists_peer = |host: &str| {
            let st = mesh::status_json(lab, host);
            st["state"] == "connected" && st["peers"][0]["name"].is_string()
        };
        if !Lab::wait_for(deadline, || lists_peer("a") && lists_peer("b")) {
            return Err(format!(
                "{case}: the nodes did not get each other's map entry within {deadline:?}"
            ));
        }
        running.up_at.elapsed().as_secs_f64()
    };
    // Traffic both ways from now on, never waiting for an answer: a pings b every 50 ms (each
    // answer stamped with the time it came, `-D`), b pings a every 200 ms (its side of the
    // punch starts with its own traffic or a's call).
    let (addr_a, addr_b) = (running.addr_a.clone(), running.addr_b.clone());
    let secs = deadline.as_secs().max(1).to_string();
    let t0 = epoch_secs();
    let up = Instant::now();
    let ping_a = running
        .lab
        .spawn(
            "a",
            &[
                "ping", "-D", "-n", "-i", "0.05", "-W", "2", "-w", &secs, &addr_b,
            ],
        )
        .map_err(|e| e.to_string())?;
    // (Both stop with the lab.)
    running
        .lab
        .spawn("b", &["ping", "-n", "-i", "0.2", "-w", &secs, &addr_a])
        .map_err(|e| e.to_string())?;
    let lab = &running.lab;
    // Every disco ping to the peer: candidates, predicted ports, birthday probes.
    let pings_sent = |st: &serde_json::Value| -> u64 {
        st["peers"][0]["disco_pings_sent"].as_u64().unwrap_or(0)
    };
    let first_answer = || first_reply_at(&ping_a.log_text()).map(|t| (t - t0).max(0.0));
    let mut first_packet = None;
    let mut direct = None;
    let mut direct_from_up = None;
    let (mut sa, mut sb) = (serde_json::Value::Null, serde_json::Value::Null);
    while up.elapsed() < deadline {
        first_packet = first_packet.or_else(first_answer);
        if first_packet.is_some() && !want_direct {
            break;
        }
        (sa, sb) = (mesh::status_json(lab, "a"), mesh::status_json(lab, "b"));
        let is_direct = |st: &serde_json::Value| st["peers"][0]["connection"] == "direct";
        if is_direct(&sa) && is_direct(&sb) {
            direct = Some(up.elapsed().as_secs_f64());
            direct_from_up = Some(running.up_at.elapsed().as_secs_f64());
            // The first answer may be in the log a moment after the path turned.
            first_packet = first_packet.or_else(first_answer);
            if first_packet.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let miss_report = (want_direct && direct.is_none()).then(|| {
        let mut r = String::new();
        for (host, st, proc) in [("a", &sa, &running.procs[1]), ("b", &sb, &running.procs[2])] {
            let st = serde_json::to_string_pretty(st).unwrap_or_default();
            r.push_str(&format!(
                "== {host}: status\n{st}\n== {host}: log\n{}\n",
                proc.log_text()
            ));
        }
        r
    });
    match first_packet {
        Some(first) => Ok(Meeting {
            known,
            first_packet: first,
            direct,
            direct_from_up,
            pings: pings_sent(&sa) + pings_sent(&sb),
            miss_report,
        }),
        None => Err(format!("{case}: no ping answered within {deadline:?}")),
    }
}

/// Seconds since the Unix epoch now (what `ping -D` stamps its lines with).
fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The time stamp of the first answer in `ping -D` output: `[1764470000.123456] 64 bytes from …`.
fn first_reply_at(log: &str) -> Option<f64> {
    log.lines()
        .find(|l| l.contains("bytes from"))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(']').next())
        .and_then(|t| t.parse().ok())
}

/// Runs `case` until direct, then reboots a's router ([`crate::natlab::reboot`]: its
/// mappings are forgotten and come back on new ports), and measures with pings flowing how
/// long until both sides are direct again over a's new port. Fails if the path never broke
/// (the reboot must be seen), if a's endpoint at b did not change, or if it did not recover
/// within `within`; the seconds from the reboot to direct again.
pub fn recovery_after_reboot(case: &Case, within: Duration) -> Result<f64, String> {
    let running = start(case, Impairment::default())?;
    let (lab, addr_a, addr_b) = (&running.lab, &running.addr_a, &running.addr_b);
    settle(
        lab,
        (addr_a, addr_b),
        Duration::from_secs(30),
        running.up_at,
    );
    let before = seen(lab, "b");
    if both(&seen(lab, "a"), &before) != Some(Path::Direct) {
        return Err(format!("{case}: never direct before the reboot"));
    }
    let router = crate::natlab::Plan::router(0);
    crate::natlab::reboot(lab, &router).map_err(|e| format!("rebooting {router}: {e}"))?;
    let rebooted = Instant::now();
    let mut broke_at = None;
    while rebooted.elapsed() < within {
        ping_once(lab, "a", addr_b);
        ping_once(lab, "b", addr_a);
        let (a, b) = (seen(lab, "a"), seen(lab, "b"));
        match both(&a, &b) {
            Some(Path::Direct) if broke_at.is_some() => {
                if b.endpoint == before.endpoint {
                    return Err(format!(
                        "{case}: direct again, but b still reaches a at its old endpoint {:?}",
                        b.endpoint
                    ));
                }
                let secs = rebooted.elapsed().as_secs_f64();
                eprintln!(
                    "{case}: the path broke {:.1} s after the reboot, direct again after {secs:.1} s ({:?} → {:?})",
                    broke_at.unwrap_or_default(),
                    before.endpoint,
                    b.endpoint
                );
                return Ok(secs);
            }
            Some(Path::Direct) => {}
            _ => {
                broke_at.get_or_insert(rebooted.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(match broke_at {
        None => format!(
            "{case}: still direct {} s after the reboot: the path never broke (a {:?}, b {:?})",
            within.as_secs(),
            seen(lab, "a"),
            seen(lab, "b")
        ),
        Some(_) => format!(
            "{case}: not direct again {} s after the reboot: a {:?}, b {:?}",
            within.as_secs(),
            seen(lab, "a"),
            seen(lab, "b")
        ),
    })
}

/// The results as a Markdown table, with the count of each verdict.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s = String::from(
        "| case | expected | observed | verdict | to ping (s) | to path (s) | hold: path changes, pings answered | a's endpoint or relay | RTT (ms) | a's reason |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let secs = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
        let via = match (o.a.connection.as_str(), &o.a.endpoint, &o.a.relay) {
            ("relayed", _, Some(r)) => format!("relay {r}"),
            (_, Some(e), _) => e.clone(),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} in {} s, {}/{} pings answered | {} | {} | {} |\n",
            o.case,
            o.expected,
            o.observed.map_or("none".into(), |p| p.to_string()),
            o.verdict,
            secs(o.seconds_to_ping),
            secs(o.seconds_to_path),
            o.flaps,
            o.held_for.as_secs(),
            o.hold_answered,
            o.hold_pings,
            via,
            o.a.rtt_ms.map_or("–".into(), |r| format!("{r:.1}")),
            o.a.reason.as_deref().unwrap_or("–").replace('|', "/"),
        ));
    }
    s.push('\n');
    s.push_str(&summary(outcomes));
    s
}

/// A grid of `profiles` × `profiles`: in each cell the path observed (D direct, R relayed,
/// – none) and how it compares (✓ as expected, ✗ worse than expected, + beyond expectation).
pub fn grid_markdown(profiles: &[Profile], outcomes: &[Outcome]) -> String {
    let names: Vec<String> = profiles.iter().map(|p| p.to_string()).collect();
    let mut s = format!("| | {} |\n|---|", names.join(" | "));
    s.push_str(&"---|".repeat(names.len()));
    s.push('\n');
    for a in &names {
        s.push_str(&format!("| **{a}** |"));
        for b in &names {
            let cell = outcomes
                .iter()
                .find(|o| {
                    o.pair
                        .as_ref()
                        .is_some_and(|(x, y)| (x == a && y == b) || (x == b && y == a))
                })
                .map_or("".to_string(), |o| {
                    let path = match o.observed {
                        Some(Path::Direct) => "D",
                        Some(Path::Relayed) => "R",
                        None => "–",
                    };
                    let mark = match o.verdict {
                        Verdict::DirectAsExpected | Verdict::RelayedAsExpected => "✓",
                        Verdict::DirectBeyondExpectation => "+",
                        Verdict::WorseThanExpected | Verdict::NoConnectivity => "✗",
                    };
                    format!("{path} {mark}")
                });
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

/// "N direct as expected, N relayed as expected, …".
pub fn summary(outcomes: &[Outcome]) -> String {
    let all = [
        Verdict::DirectAsExpected,
        Verdict::RelayedAsExpected,
        Verdict::DirectBeyondExpectation,
        Verdict::WorseThanExpected,
        Verdict::NoConnectivity,
    ];
    all.iter()
        .map(|v| {
            let n = outcomes.iter().filter(|o| o.verdict == *v).count();
            format!("{n} {v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cases `cargo xtask test` runs: the classic four pairwise, hairpin, double NAT, one
/// side public, UDP blocked.
pub fn test_cases() -> Vec<Case> {
    let mut v = grid(&Profile::classic());
    let p = |s: &str| s.parse::<Profile>().unwrap_or_else(|e| panic!("{e}"));
    v.push(Case::SameRouter(p("port-restricted-cone+hairpin")));
    v.push(Case::DoubleNat(
        p("eim-adf"),
        p("port-restricted-cone"),
        p("full-cone"),
    ));
    v.push(Case::Pair(p("public"), p("symmetric")));
    v.push(Case::Pair(p("udp-blocked"), p("port-restricted-cone")));
    v
}

/// Every ordered-independent pair of `profiles` (a × b and b × a are one cell).
pub fn grid(profiles: &[Profile]) -> Vec<Case> {
    let mut v = Vec::new();
    for (i, a) in profiles.iter().enumerate() {
        for b in &profiles[i..] {
            v.push(Case::Pair(a.clone(), b.clone()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(a: &str, b: &str) -> Case {
        Case::Pair(a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn expectations_follow_rfc_4787_reasoning() {
        use Path::*;
        let table = [
            ("full-cone", "symmetric", Direct),
            ("restricted-cone", "symmetric", Direct),
            ("port-restricted-cone", "port-restricted-cone", Direct),
            // Birthday probing: a symmetric NAT facing an endpoint-independent mapping.
            ("port-restricted-cone", "symmetric", Direct),
            ("port-restricted-cone", "adm-adpf", Relayed),
            ("symmetric", "symmetric", Relayed),
            ("adm-eif", "adpm-adf", Direct),
            ("adm-eif", "adpm-adpf", Direct),
            ("adm-adf", "adpm-adpf", Relayed),
            ("adm-adf", "adm-adf", Relayed),
            ("public", "symmetric", Direct),
            ("udp-blocked", "full-cone", Relayed),
            // A port forwarded by the router is reachable from anyone.
            ("symmetric+upnp", "symmetric", Direct),
            ("symmetric+upnp", "udp-blocked", Relayed),
            ("symmetric+igd", "symmetric", Direct),
            // Port prediction: the next ports of a sequential symmetric NAT.
            ("port-restricted-cone", "symmetric+seq", Direct),
            ("symmetric", "symmetric+seq", Relayed),
            ("symmetric", "adpm-adf+seq", Direct),
        ];
        for (a, b, want) in table {
            assert_eq!(case(a, b).expected(), want, "{a} × {b}");
            assert_eq!(case(b, a).expected(), want, "{b} × {a}");
        }
        let p = |s: &str| s.parse::<Profile>().unwrap();
        assert_eq!(Case::SameRouter(p("eim-adpf+hairpin")).expected(), Direct);
        assert_eq!(Case::SameRouter(p("eim-adpf")).expected(), Relayed);
        assert_eq!(Case::SameRouter(p("symmetric+hairpin")).expected(), Relayed);
        // A symmetric CGNAT makes a cone home router symmetric.
        assert_eq!(
            Case::DoubleNat(p("symmetric"), p("full-cone"), p("port-restricted-cone")).expected(),
            Direct,
            "birthday probing"
        );
        assert_eq!(
            Case::DoubleNat(p("symmetric"), p("full-cone"), p("symmetric")).expected(),
            Relayed
        );
        assert_eq!(
            Case::DoubleNat(p("eim-adf"), p("eim-adpf"), p("full-cone")).expected(),
            Direct
        );
        assert_eq!(test_cases().len(), 14);
    }

    #[test]
    fn the_first_answer_is_read_from_pings_time_stamps() {
        let log = "PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.\n\
                   [1764470000.250000] 64 bytes from 100.64.0.2: icmp_seq=3 ttl=64 time=0.5 ms\n\
                   [1764470000.300000] 64 bytes from 100.64.0.2: icmp_seq=4 ttl=64 time=0.4 ms\n";
        assert_eq!(first_reply_at(log), Some(1_764_470_000.25));
        assert_eq!(
            first_reply_at("PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.\n"),
            None
        );
    }

    #[test]
    fn the_square_grid_shows_each_pair_once_both_ways() {
        let ps: Vec<Profile> = ["eim-eif", "adpm-adpf"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let outcome = |a: &str, b: &str, observed, verdict| Outcome {
            case: format!("{a} × {b}"),
            pair: Some((a.into(), b.into())),
            expected: Path::Direct,
            observed,
            verdict,
            seconds_to_ping: Some(0.1),
            seconds_to_path: Some(0.2),
            flaps: 0,
            held_for: Duration::from_secs(30),
            hold_pings: 60,
            hold_answered: 60,
            a: Seen::default(),
            b: Seen::default(),
        };
        let outcomes = [
            outcome(
                "eim-eif",
                "eim-eif",
                Some(Path::Direct),
                Verdict::DirectAsExpected,
            ),
            outcome(
                "eim-eif",
                "adpm-adpf",
                Some(Path::Relayed),
                Verdict::WorseThanExpected,
            ),
            outcome("adpm-adpf", "adpm-adpf", None, Verdict::NoConnectivity),
        ];
        let g = grid_markdown(&ps, &outcomes);
        let rows: Vec<&str> = g.lines().collect();
        assert_eq!(rows[0], "| | eim-eif | adpm-adpf |");
        assert_eq!(rows[2], "| **eim-eif** | D ✓ | R ✗ |");
        assert_eq!(rows[3], "| **adpm-adpf** | R ✗ | – ✗ |");
        assert_eq!(grid(&Profile::all_nine()).len(), 45);
    }
}
