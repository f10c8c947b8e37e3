//! `cargo xtask bench policy`: how long a policy change takes to reach every node. One
//! pinhole-control process on loopback, 100 nodes (half a developer's, half tagged servers)
//! holding their map streams; `pinhole-control policy set` alternates a tight and a loose
//! policy, and each stream's time to its `policy` line is recorded, from the start of the
//! command (its own process start and database write included).

use crate::bench_control::{control_cli as control, start_server};
use crate::bench_report::{self, Versions};
use crate::cmd;
use anyhow::{bail, Context, Result};
use pinhole_control_client::ControlClient;
use pinhole_proto::control::NodeInfo;
use pinhole_proto::key::{Key, PrivateKey};
use serde_json::json;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const TIGHT: &str = r#"{ "groups": { "group:dev": ["alice"] }, "tagOwners": { "tag:server": ["group:dev"] },
  "acls": [ { "action": "accept", "src": ["group:dev"], "dst": ["tag:server:22,443"] } ] }"#;

pub fn policy(args: &[&str]) -> Result<()> {
    let mut nodes = 100usize;
    let mut changes = 10usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--nodes" => nodes = it.next().context("--nodes takes N")?.parse()?,
            "--changes" => changes = it.next().context("--changes takes N")?.parse()?,
            _ => bail!("usage: cargo xtask bench policy [--nodes 100] [--changes 10]"),
        }
    }
    cmd("cargo", &["build", "--release", "-p", "pinhole-control"])?;
    let dir = std::env::temp_dir().join(format!("pinhole-bench-policy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = format!("sqlite://{}", dir.join("control.db").display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(run(&dir, &db, nodes, changes));
    let _ = std::fs::remove_dir_all(&dir);
    let delays = r?;
    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "A policy change reaching every node: {nodes} nodes' map streams on one pinhole-control \
         (loopback), {changes} changes by `pinhole-control policy set` (tight and loose in turn), \
         time from the command's start to each node's `policy` line.\n\n\
         | deliveries | p50 | p95 | max |\n|---|---|---|---|\n| {} | {:.0} ms | {:.0} ms | {:.0} ms |",
        sorted.len(),
        pct(0.5),
        pct(0.95),
        sorted[sorted.len() - 1]
    );
    let figures = json!({ "nodes": nodes, "changes": changes, "p50_ms": pct(0.5), "p95_ms": pct(0.95),
        "max_ms": sorted[sorted.len() - 1] });
    bench_report::write("policy", &md, figures, &Versions::new())?;
    Ok(())
}

async fn run(dir: &std::path::Path, db: &str, n: usize, changes: usize) -> Result<Vec<f64>> {
    let (_server, addr) = start_server(dir, db)?;
    control(db, &["user", "add", "alice"], Some("a long password\n"))?;
    let tight = dir.join("tight.hujson");
    let loose = dir.join("loose.hujson");
    std::fs::write(&tight, TIGHT)?;
    std::fs::write(&loose, TIGHT.replace("22,443", "22,443,5432"))?;
    control(db, &["policy", "set", tight.to_str().unwrap_or("")], None)?;
    let dev_key = control(
        db,
        &["authkey", "create", "--reusable", "--user", "alice"],
        None,
    )?;
    let srv_key = control(
        db,
        &["authkey", "create", "--reusable", "--tags", "tag:server"],
        None,
    )?;
    let client = ControlClient::new(&format!("http://{addr}"), None)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let mut readers = Vec::new();
    for i in 0..n {
        let key = if i % 2 == 0 { &dev_key } else { &srv_key };
        let info = NodeInfo {
            disco_key: Key(rand::random()),
            hostname: format!("n{i}"),
            os: "linux".into(),
            tags: Vec::new(),
            advertised_routes: Vec::new(),
        };
        let r = client
            .register(key, &PrivateKey::from_bytes(rand::random()), &info)
            .await?;
        let mut stream = client.map(&r.node_token).await?;
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(line)) = stream.next_raw().await {
                if line.starts_with(br#"{"type":"policy""#) && tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rx.try_recv().is_ok() {}
    let mut delays = Vec::new();
    for c in 0..changes {
        let file = if c % 2 == 0 { &loose } else { &tight };
        let t0 = Instant::now();
        control(db, &["policy", "set", file.to_str().unwrap_or("")], None)?;
        let mut got = 0;
        while got < n {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(at)) => {
                    delays.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                    got += 1;
                }
                _ => bail!("change {c}: only {got} of {n} nodes heard of it within 10 s"),
            }
        }
    }
    for r in readers {
        r.abort();
    }
    Ok(delays)
}
