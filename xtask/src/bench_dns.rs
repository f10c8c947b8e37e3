//! `cargo xtask bench dns [--queries N]`: how fast a node answers names. Two nodes join a
//! local pinhole-control; in n1's namespace a client asks N times, one query at a time, and
//! reports p50/p99/max round trips for: pinholed's DNS server inside the tunnel answering a
//! peer's name (through the TUN device), the same server forwarding an outside name to the
//! lab's upstream, and as baselines measured in the same run dnsmasq answering a name from
//! its own configuration on n1's loopback (a C server, no tunnel) and the upstream asked
//! directly.

use crate::bench_report::{self, Versions};
use crate::{build_release_binaries, packages, require_root};
use anyhow::{bail, Context, Result};
use pinhole_netlab::mesh::{self, start_node, wait_line, Control, PUBLIC};
use pinhole_netlab::Lab;
use std::fmt::Write as _;
use std::time::Duration;

/// What one row measured.
struct Row {
    what: &'static str,
    server: String,
    name: String,
    answered: u64,
    lost: u64,
    bad: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

pub fn dns(args: &[&str]) -> Result<()> {
    let mut queries = 10_000u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--queries" => queries = it.next().context("--queries takes N")?.parse()?,
            _ => bail!("usage: cargo xtask bench dns [--queries 10000]"),
        }
    }
    if queries == 0 {
        bail!("--queries must be at least 1");
    }
    require_root("cargo xtask bench dns")?;
    packages::ensure(packages::LAB)?;
    packages::ensure(&[("dnsmasq", "dnsmasq-base")])?;
    build_release_binaries()?;

    let mut lab = mesh::star(&["n1", "n2"]);
    mesh::start_dnsmasq(
        &mut lab,
        PUBLIC,
        "198.18.1.1",
        53,
        &["/outside.example/192.0.2.80"],
    );
    mesh::start_dnsmasq(
        &mut lab,
        "n1",
        "127.0.0.1",
        5353,
        &["/n2.lab.example/100.64.0.2"],
    );
    lab.set_resolv_conf("n1", "nameserver 198.18.1.1\n")?;
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    if wait_line(&n1, &["peer added", "peer=n2"], Duration::from_secs(15)).is_none() {
        bail!("n1 never saw n2:\n{}", n1.log_text());
    }
    // The zone is built once the map is in; the first answer says it is.
    let ready = Lab::wait_for(Duration::from_secs(10), || {
        measure(&lab, "100.100.100.100:53", "n2.pinhole.internal", 1)
            .is_ok_and(|r| r.bad == 0 && r.answered == 1)
    });
    if !ready {
        bail!(
            "pinholed's DNS server never answered for n2:\n{}",
            n1.log_text()
        );
    }
    let cases: [(&'static str, &str, &str); 4] = [
        (
            "dnsmasq on loopback, its own name (baseline)",
            "127.0.0.1:5353",
            "n2.lab.example",
        ),
        (
            "pinholed, a peer's name (through the TUN)",
            "100.100.100.100:53",
            "n2.pinhole.internal",
        ),
        (
            "the upstream asked directly (baseline)",
            "198.18.1.1:53",
            "outside.example",
        ),
        (
            "pinholed forwarding to the upstream",
            "100.100.100.100:53",
            "outside.example",
        ),
    ];
    let mut rows = Vec::new();
    for (what, server, name) in cases {
        eprintln!("== {what}: {queries} queries for {name} at {server}");
        let mut r = measure(&lab, server, name, queries)?;
        r.what = what;
        rows.push(r);
    }
    let report = render(&rows, queries);
    let mut versions = Versions::new();
    versions.add_from("dnsmasq", &["--version"]);
    let figures = serde_json::json!({
        "queries": queries,
        "rows": rows.iter().map(|r| serde_json::json!({
            "what": r.what, "server": r.server, "name": r.name, "answered": r.answered,
            "lost": r.lost, "bad": r.bad, "p50_us": r.p50_us, "p99_us": r.p99_us,
            "max_us": r.max_us,
        })).collect::<Vec<_>>(),
    });
    bench_report::write("dns", &report, figures, &versions)?;
    Ok(())
}

/// Runs the lab's client in n1 against `server` for `name`.
fn measure(lab: &Lab, server: &str, name: &str, queries: u32) -> Result<Row> {
    let tool = pinhole_netlab::pinhole::tool();
    let count = queries.to_string();
    let out = lab.run_ok(
        "n1",
        &[&tool.to_string_lossy(), "dns-latency", server, name, &count],
        Duration::from_secs(u64::from(queries) / 50 + 60),
    )?;
    let field = |k: &str| -> Result<u64> {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .with_context(|| format!("no {k} in {out:?}"))?
            .parse()
            .with_context(|| format!("bad {k} in {out:?}"))
    };
    Ok(Row {
        what: "",
        server: server.to_string(),
        name: name.to_string(),
        answered: field("answered")?,
        lost: field("lost")?,
        bad: field("bad")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        max_us: field("max_us")?,
    })
}

fn render(rows: &[Row], queries: u32) -> String {
    let mut md = format!(
        "{queries} A queries per row, one at a time, from n1's namespace; round trips in µs.\n\n\
         | what | server | answered | lost | wrong | p50 | p99 | max | p50 vs baseline |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (i, r) in rows.iter().enumerate() {
        // Rows come in pairs: a baseline, then pinholed doing the same kind of work.
        let base = &rows[i - i % 2];
        let ratio = if i % 2 == 1 && base.p50_us > 0 {
            format!("{:.2}×", r.p50_us as f64 / base.p50_us as f64)
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            md,
            "| {} | {} {} | {} | {} | {} | {} | {} | {} | {ratio} |",
            r.what, r.server, r.name, r.answered, r.lost, r.bad, r.p50_us, r.p99_us, r.max_us
        );
    }
    let peer = &rows[1];
    let _ = writeln!(
        md,
        "\nA peer's name is answered in {} µs at the median and {} µs at p99 (target: p99 under 1 ms).",
        peer.p50_us, peer.p99_us
    );
    md
}
