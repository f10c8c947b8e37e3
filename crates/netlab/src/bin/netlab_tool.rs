//! netlab-tool: the helper that lab tests run inside namespaces.
//!
//! `netlab-tool serve LISTEN [TIMEOUT_S]`: accept one TCP connection, print `bytes=N sha256=H`.
//! `netlab-tool send DST BYTES SEED`: send pseudo-random bytes, print the same summary.
//! `netlab-tool junk DST COUNT SEED`: send malformed UDP datagrams.
//! `netlab-tool sim-nodes URL AUTHKEY_FILE COUNT HOLD_S`: that many simulated nodes register
//! with a coordination server and hold their map streams open.
//! `netlab-tool nat-type STUN_SERVER LOCAL_PORT`: RFC 5780 behaviour discovery, as JSON.
//! `netlab-tool impair DEVICE DELAY_S JITTER_S LOSS_PCT`: the public network's delay forwarder.
//! `netlab-tool dns-latency SERVER NAME COUNT`: COUNT queries one at a time; prints
//! `answered=N lost=N bad=N p50_us=N p99_us=N max_us=N`.
//! `netlab-tool greet LISTEN[,LISTEN…] SECONDS`: accept TCP connections on each, greet, close.
//! `netlab-tool http LISTEN SECONDS`: a plain HTTP server answering `you are IP`; prints
//! `request from IP` for each request.
//! `netlab-tool get DST TIMEOUT_MS`: `GET /` from it; prints the body, or fails saying why.
//! `netlab-tool probe DST TIMEOUT_MS`: one TCP connection attempt; prints `connected`,
//! `refused` or `timeout`.

use anyhow::{bail, Context, Result};
use pinhole_netlab::tools;
use std::net::SocketAddr;
use std::time::Duration;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("missing argument {i}; see the source's header"))
    };
    let addr = |i: usize| -> Result<SocketAddr> {
        arg(i)?
            .parse()
            .with_context(|| format!("bad address {:?}", args[i]))
    };
    match arg(0)? {
        "serve" => {
            let secs: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
            println!("{}", tools::serve(addr(1)?, Duration::from_secs(secs))?);
        }
        "send" => {
            let bytes: u64 = arg(2)?.parse().context("bad byte count")?;
            let seed: u64 = arg(3)?.parse().context("bad seed")?;
            println!(
                "{}",
                tools::send(addr(1)?, bytes, seed, Duration::from_secs(10))?
            );
        }
        "junk" => {
            let count: u32 = arg(2)?.parse().context("bad count")?;
            let seed: u64 = arg(3)?.parse().context("bad seed")?;
            println!("sent={}", tools::junk(addr(1)?, count, seed)?);
        }
        "sim-nodes" => {
            let key = std::fs::read_to_string(arg(2)?).context("reading the auth key file")?;
            let count: usize = arg(3)?.parse().context("bad count")?;
            let hold: u64 = arg(4)?.parse().context("bad hold time")?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let r = rt.block_on(pinhole_netlab::sim_nodes::run(
                arg(1)?,
                key.trim(),
                count,
                Duration::from_secs(hold),
                if args.get(5).map(String::as_str) == Some("--endpoints-first") {
                    pinhole_netlab::sim_nodes::Order::EndpointsFirst
                } else {
                    pinhole_netlab::sim_nodes::Order::Crowd
                },
            ))?;
            println!("done registered={} streams={}", r.registered, r.streams);
        }
        "nat-type" => {
            let port: u16 = arg(2)?.parse().context("bad port")?;
            let b = pinhole_netlab::nat_probe::discover(addr(1)?, port)?;
            println!("{}", b.to_json());
        }
        "impair" => {
            let secs = |i: usize| -> Result<Duration> {
                let s: f64 = arg(i)?.parse().context("bad seconds")?;
                Duration::try_from_secs_f64(s).context("bad seconds")
            };
            let imp = pinhole_netlab::impair::Impairment {
                delay: secs(2)?,
                jitter: secs(3)?,
                loss_percent: arg(4)?.parse().context("bad loss percent")?,
            };
            pinhole_netlab::impair::run(arg(1)?, imp, rand::random())?;
        }
        "dns-latency" => {
            let count: u32 = arg(3)?.parse().context("bad count")?;
            let mut r = tools::dns_latency(addr(1)?, arg(2)?, count)?;
            r.rtts.sort();
            let pct = |p: usize| {
                r.rtts
                    .get((r.rtts.len() * p / 100).min(r.rtts.len().saturating_sub(1)))
                    .map_or(0, |d| d.as_micros())
            };
            println!(
                "answered={} lost={} bad={} p50_us={} p99_us={} max_us={}",
                r.rtts.len(),
                r.lost,
                r.bad,
                pct(50),
                pct(99),
                r.rtts.last().map_or(0, |d| d.as_micros())
            );
        }
        "greet" => {
            let listen = arg(1)?
                .split(',')
                .map(|a| a.parse().with_context(|| format!("bad address {a:?}")))
                .collect::<Result<Vec<SocketAddr>>>()?;
            let secs: u64 = arg(2)?.parse().context("bad seconds")?;
            tools::greet(&listen, Duration::from_secs(secs))?;
        }
        "http" => {
            let secs: u64 = arg(2)?.parse().context("bad seconds")?;
            tools::http(addr(1)?, Duration::from_secs(secs))?;
        }
        "get" => {
            let ms: u64 = arg(2)?.parse().context("bad timeout")?;
            println!("{}", tools::http_get(addr(1)?, Duration::from_millis(ms))?);
        }
        "probe" => {
            let ms: u64 = arg(2)?.parse().context("bad milliseconds")?;
            println!("{}", tools::probe(addr(1)?, Duration::from_millis(ms)));
        }
        other => {
            bail!("unknown command {other:?} (serve, send, junk, sim-nodes, nat-type, impair, dns-latency, greet, probe)")
        }
    }
    Ok(())
}
