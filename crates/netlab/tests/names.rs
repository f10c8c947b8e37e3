//! Names inside the tunnel, with real processes: two nodes through pinhole-control, and
//! `dig` in one node's namespace asking its pinholed at 100.100.100.100 for the other's name
//! (A, AAAA, PTR, NXDOMAIN), an outside name answered by the lab's own upstream resolver
//! (dnsmasq in the public namespace, named by the node's private resolv.conf), a rename by the
//! operator reaching the answers, `pinhole ping NAME`, and the names in `pinhole status`; then
//! the system told: a managed resolv.conf, and a real systemd-resolved on the lab's own D-Bus.

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
    let upstream = mesh::start_dnsmasq(
        &mut lab,
        PUBLIC,
        "198.18.1.1",
        53,
        &["/outside.example/192.0.2.80", "/nowhere.example/"],
    );
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

/// Waits until `host`'s resolv.conf satisfies `want`; the last text read.
fn wait_resolv_conf(lab: &Lab, host: &str, want: impl Fn(&str) -> bool) -> (bool, String) {
    let mut last = String::new();
    let ok = Lab::wait_for(Duration::from_secs(10), || {
        last = lab.resolv_conf(host).unwrap_or_default();
        want(&last)
    });
    (ok, last)
}

/// `getent ahostsv4 NAME` in `host`: the IPv4 addresses any program resolving through the
/// system gets.
fn getent(lab: &Lab, host: &str, name: &str) -> String {
    lab.run(host, &["getent", "ahostsv4", name], Duration::from_secs(10))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[test]
fn a_managed_resolv_conf_is_put_back_after_down_logout_and_a_crash() {
    if skip_without_root("a_managed_resolv_conf_is_put_back_after_down_logout_and_a_crash") {
        return;
    }
    let mut lab = mesh::star(&["n1", "n2"]);
    let _upstream = mesh::start_dnsmasq(
        &mut lab,
        PUBLIC,
        "198.18.1.1",
        53,
        &["/outside.example/192.0.2.80"],
    );
    let original =
        "# the system's own\nsearch corp.example\nnameserver 198.18.1.1\noptions edns0\n";
    lab.set_resolv_conf("n1", original)
        .expect("n1's resolv.conf");
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    let n2_addr = control.address_of(&lab, "n2");
    let managed = |t: &str| t.contains("nameserver 100.100.100.100");
    let (ok, text) = wait_resolv_conf(&lab, "n1", managed);
    assert!(
        ok,
        "resolv.conf never pointed at pinholed:\n{text}\n{}",
        n1.log_text()
    );
    assert!(
        text.contains("search pinhole.internal corp.example"),
        "{text}"
    );
    assert!(text.contains("options edns0"), "{text}");

    // Every program on the machine: full names, bare names through the search domain, and
    // outside names through the resolver the system had.
    assert!(
        Lab::wait_for(Duration::from_secs(10), || getent(
            &lab,
            "n1",
            "n2.pinhole.internal"
        )
        .starts_with(&n2_addr)),
        "getent n2.pinhole.internal: {}",
        getent(&lab, "n1", "n2.pinhole.internal")
    );
    assert!(getent(&lab, "n1", "n2").starts_with(&n2_addr), "bare name");
    assert!(getent(&lab, "n1", "outside.example").starts_with("192.0.2.80"));
    let ping = lab
        .run(
            "n1",
            &["ping", "-c", "1", "-W", "2", "n2"],
            Duration::from_secs(10),
        )
        .expect("ping n2");
    assert!(ping.status.success(), "ping n2 by name: {ping:?}");
    let st = status_json(&lab, "n1");
    assert_eq!(
        st["dns"]["os"], "/etc/resolv.conf (managed by pinholed)",
        "{st}"
    );

    // down puts the system's file back byte for byte; up points it at pinholed again.
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["down"]);
    assert!(ok, "{err}");
    assert_eq!(lab.resolv_conf("n1").unwrap(), original);
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["up"]);
    assert!(ok, "{err}");
    assert!(wait_resolv_conf(&lab, "n1", managed).0);

    // --accept-dns=false leaves the system's DNS alone (remembered); names still answer at
    // 100.100.100.100 for those who ask there.
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["up", "--accept-dns=false"]);
    assert!(ok, "{err}");
    assert_eq!(lab.resolv_conf("n1").unwrap(), original);
    let st = status_json(&lab, "n1");
    assert!(
        st["dns"]["os"]
            .as_str()
            .unwrap_or("")
            .starts_with("left alone"),
        "{st}"
    );
    assert_eq!(dig(&lab, "n1", &["n2.pinhole.internal"], false), n2_addr);
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["up", "--accept-dns=true"]);
    assert!(ok, "{err}");
    assert!(wait_resolv_conf(&lab, "n1", managed).0);

    // kill -9 leaves it pointed at pinholed; the next start puts it back first, then manages
    // it again once up (the original is still what down restores).
    lab.kill(&n1);
    assert!(managed(&lab.resolv_conf("n1").unwrap()));
    let n1 = start_node(&mut lab, "n1", &key);
    assert!(
        wait_line(
            &n1,
            &["put back the resolv.conf a previous pinholed left"],
            Duration::from_secs(10)
        )
        .is_some(),
        "{}",
        n1.log_text()
    );
    assert!(wait_resolv_conf(&lab, "n1", managed).0, "{}", n1.log_text());
    assert!(Lab::wait_for(Duration::from_secs(10), || getent(
        &lab, "n1", "n2"
    )
    .starts_with(&n2_addr)));

    // logout: the system's file again.
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["logout"]);
    assert!(ok, "{err}");
    let (ok, text) = wait_resolv_conf(&lab, "n1", |t| t == original);
    assert!(ok, "after logout:\n{text}");
}

/// `resolvectl query NAME` in n1 (on the lab's bus): its output, empty if it failed.
fn rq(lab: &Lab, resolvectl: &str, name: &str) -> String {
    lab.run(
        "n1",
        &[resolvectl, "query", "--legend=no", name],
        Duration::from_secs(10),
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

#[test]
fn systemd_resolved_sends_the_accounts_names_to_pinholed() {
    if skip_without_root("systemd_resolved_sends_the_accounts_names_to_pinholed") {
        return;
    }
    let bins = pinhole_netlab::resolved::binaries(
        &pinhole_netlab::pinhole::workspace_target().join("systemd-resolved"),
    )
    .unwrap_or_else(|e| panic!("Debian's systemd-resolved: {e}"));
    let mut lab = mesh::star(&["n1", "n2"]);
    let _upstream = mesh::start_dnsmasq(
        &mut lab,
        PUBLIC,
        "198.18.1.1",
        53,
        &["/outside.example/192.0.2.80"],
    );
    // n1's programs ask resolved's stub; resolved's own upstream is the lab's dnsmasq.
    let original = "nameserver 127.0.0.53\nsearch corp.example\n";
    lab.set_resolv_conf("n1", original)
        .expect("n1's resolv.conf");
    let resolved = pinhole_netlab::resolved::start(&mut lab, "n1", "198.18.1.1", &bins)
        .unwrap_or_else(|e| panic!("systemd-resolved in n1: {e}"));
    let resolvectl = resolved.resolvectl.to_string_lossy().into_owned();
    let control = Control::new(&lab);
    let _server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let n1 = start_node(&mut lab, "n1", &key);
    let _n2 = start_node(&mut lab, "n2", &key);
    let n2_addr = control.address_of(&lab, "n2");
    let answered = Lab::wait_for(Duration::from_secs(15), || {
        rq(&lab, &resolvectl, "n2.pinhole.internal").contains(&n2_addr)
    });
    assert!(
        answered,
        "resolvectl query: {}\npinholed:\n{}\nresolved:\n{}",
        rq(&lab, &resolvectl, "n2.pinhole.internal"),
        n1.log_text(),
        resolved.daemon.log_text()
    );
    // The tunnel's link: our server, the suffix as its search domain, not the default route.
    let link = lab
        .run_ok(
            "n1",
            &[&resolvectl, "status", "ph0"],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("resolvectl status ph0: {e}"));
    assert!(link.contains("100.100.100.100"), "{link}");
    assert!(link.contains("pinhole.internal"), "{link}");
    assert!(link.contains("-DefaultRoute"), "{link}");
    // The bare name through the link's search domain; every program through the stub: the
    // full name and an outside name. The system's resolv.conf is not touched.
    assert!(
        rq(&lab, &resolvectl, "n2").contains(&n2_addr),
        "bare name: {}",
        rq(&lab, &resolvectl, "n2")
    );
    assert!(getent(&lab, "n1", "n2.pinhole.internal").starts_with(&n2_addr));
    assert!(getent(&lab, "n1", "outside.example").starts_with("192.0.2.80"));
    let ping = lab
        .run(
            "n1",
            &["ping", "-c", "1", "-W", "2", "n2.pinhole.internal"],
            Duration::from_secs(10),
        )
        .expect("ping n2");
    assert!(ping.status.success(), "ping n2 by name: {ping:?}");
    assert_eq!(lab.resolv_conf("n1").unwrap(), original);
    let st = status_json(&lab, "n1");
    assert!(
        st["dns"]["os"]
            .as_str()
            .unwrap_or("")
            .starts_with("systemd-resolved: 100.100.100.100 for .pinhole.internal on ph0"),
        "{st}"
    );

    // down: the link is reverted (and gone); names are no longer ours; up brings them back.
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["down"]);
    assert!(ok, "{err}");
    assert!(
        Lab::wait_for(Duration::from_secs(10), || !rq(
            &lab,
            &resolvectl,
            "n2.pinhole.internal"
        )
        .contains(&n2_addr)),
        "still answered after down"
    );
    let (ok, _, err) = mesh::pinhole(&lab, "n1", &["up"]);
    assert!(ok, "{err}");
    assert!(Lab::wait_for(Duration::from_secs(15), || {
        rq(&lab, &resolvectl, "n2.pinhole.internal").contains(&n2_addr)
    }));
    // kill -9: resolved forgets the link with the device; a restart configures it again.
    lab.kill(&n1);
    assert!(Lab::wait_for(Duration::from_secs(10), || !rq(
        &lab,
        &resolvectl,
        "n2.pinhole.internal"
    )
    .contains(&n2_addr)));
    let n1 = start_node(&mut lab, "n1", &key);
    assert!(
        Lab::wait_for(Duration::from_secs(15), || rq(
            &lab,
            &resolvectl,
            "n2.pinhole.internal"
        )
        .contains(&n2_addr)),
        "{}",
        n1.log_text()
    );
}
