//! Names inside the tunnel, with real processes: two nodes through pinhole-control, and
//! `dig` in one node's namespace asking its pinholed at 100.100.100.100 for the other's name
//! (A, AAAA, PTR, NXDOMAIN), an outside name answered by the lab's own upstream resolver
//! (dnsmasq in the public namespace, named by the node's private resolv.conf), a rename by the
//! operator reaching the answers, `pinhole ping NAME`, and the names in `pinhole status`.

use pinhole_netlab::mesh::{self, start_node, status_json, wait_line, Control, PUBLIC};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::{Duration, Instant};

/// `dig` in `host` against the node's DNS server: the answer section, one record a line
/// (`+short`), or the whole reply with `full`.
fn dig(lab: &Lab, host: &str, args: &[&str], full: bool) -> String {
    let mut argv = vec!["dig", "@100.100.100.100", "+time=2", "+tries=1"];
    if !full {
        argv.push("+short");
    }
    argv.extend_from_slice(args);
    match lab.run(host, &argv, Duration::from_secs(10)) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Err(e) => panic!("dig in {host}: {e}"),
    }
}

#[test]
fn peers_answer_by_name_and_other_names_go_to_the_systems_resolver() {
    if skip_without_root("peers_answer_by_name_and_other_names_go_to_the_systems_resolver") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2"]);
    // The lab's upstream resolver: one outside name, one that does not exist.
    let upstream = lab
        .spawn(
            PUBLIC,
            &[
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=198.18.1.1",
                "--bind-interfaces",
                "--address=/outside.example/192.0.2.80",
                "--address=/nowhere.example/",
                "--log-queries",
                "--log-facility=-",
                "--user=root",
                "--pid-file=",
            ],
        )
        .expect("starting dnsmasq (`cargo xtask test` installs dnsmasq-base)");
    lab.set_resolv_conf("n1", "nameserver 198.18.1.1\n")
        .expect("n1's resolv.conf");
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    assert!(
        wait_line(&n1, &["peer added", "peer=n2"], Duration::from_secs(10)).is_some(),
        "{}",
        n1.log_text()
    );
    let n2_addr = control.address_of(&lab, "n2");

    // A and AAAA for the peer's name, in any case; PTR for its address.
    assert_eq!(dig(&lab, "n1", &["n2.pinhole.internal"], false), n2_addr);
    assert_eq!(dig(&lab, "n1", &["N2.Pinhole.Internal"], false), n2_addr);
    let v6 = dig(&lab, "n1", &["n2.pinhole.internal", "AAAA"], false);
    assert!(v6.starts_with("fd") && v6.ends_with(":6440:2"), "{v6}");
    assert_eq!(
        dig(&lab, "n1", &["-x", &n2_addr], false),
        "n2.pinhole.internal."
    );
    // This node's own name too; an unknown one is NXDOMAIN.
    assert_eq!(
        dig(&lab, "n1", &["n1.pinhole.internal"], false),
        control.address_of(&lab, "n1")
    );
    let nx = dig(&lab, "n1", &["tv.pinhole.internal"], true);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("flags: qr aa"), "authoritative: {nx}");

    // Other names go to the resolver the system had (n1's resolv.conf: the lab's dnsmasq).
    assert_eq!(dig(&lab, "n1", &["outside.example"], false), "192.0.2.80");
    assert!(
        upstream.log_text().contains("query[A] outside.example"),
        "dnsmasq was not asked:\n{}",
        upstream.log_text()
    );
    // The upstream's own answer, as it gave it (not ours: no authoritative flag).
    let theirs = dig(&lab, "n1", &["nowhere.example"], true);
    assert!(theirs.contains("status: NXDOMAIN"), "{theirs}");
    assert!(theirs.contains("flags: qr rd ra;"), "{theirs}");

    // Junk to the DNS server changes nothing.
    for junk in ["x", "0123456789abcdefghijklmnop"] {
        let _ = lab.run(
            "n1",
            &[
                "bash",
                "-c",
                &format!("printf '{junk}' > /dev/udp/100.100.100.100/53"),
            ],
            Duration::from_secs(5),
        );
    }
    assert_eq!(dig(&lab, "n1", &["n2.pinhole.internal"], false), n2_addr);

    // The operator renames n2: the new name answers within moments, the old one is gone.
    let started = Instant::now();
    control.cli(&lab, &["node", "rename", "n2", "nas"]);
    let renamed = Lab::wait_for(Duration::from_secs(5), || {
        dig(&lab, "n1", &["nas.pinhole.internal"], false) == n2_addr
    });
    let took = started.elapsed();
    assert!(renamed, "the rename never reached n1's DNS server");
    eprintln!("the rename answered on n1 after {took:?}");
    assert!(took < Duration::from_secs(2), "the rename took {took:?}");
    let old = dig(&lab, "n1", &["n2.pinhole.internal"], true);
    assert!(old.contains("status: NXDOMAIN"), "{old}");

    // pinhole ping and status know the names.
    let (ok, out, err) = mesh::pinhole(&lab, "n1", &["ping", "nas.pinhole.internal"]);
    assert!(ok, "ping by DNS name: {out}{err}");
    let st = status_json(&lab, "n1");
    assert_eq!(st["self"]["dns_name"], "n1.pinhole.internal", "{st}");
    let peer = &st["peers"][0];
    assert_eq!(peer["dns_name"], "nas.pinhole.internal", "{st}");
    assert_eq!(st["dns"]["suffix"], "pinhole.internal", "{st}");
    assert_eq!(st["dns"]["upstreams"][0], "198.18.1.1:53", "{st}");
    assert!(st["dns"]["answered"].as_u64().unwrap_or(0) >= 6, "{st}");
    let (_, table, _) = mesh::pinhole(&lab, "n1", &["status"]);
    assert!(
        table.contains("names: NAME.pinhole.internal (or NAME), answered by 100.100.100.100"),
        "{table}"
    );
}
