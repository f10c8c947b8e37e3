//! One case run in a NAT lab: control with its relay and STUN, two nodes, pings over the
//! tunnel, what `pinhole status --json` shows on both, settling and meeting times, and a
//! router's reboot followed.

use super::*;
use crate::mesh::{self, Control};
use crate::{impair::Impairment, Lab};
use std::time::{Duration, Instant};

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
            // A discovery round (6 s), the wait before the next (5 s) and most of that one: a
            // first round lost to timing on a loaded machine (a symmetric NAT's first ping sent
            // before the other side's NAT had opened its filter) still ends direct here, and the
            // time it took shows in the table.
            settle_timeout: Duration::from_secs(16),
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
