//! Nodes that join through pinhole-control: the coordination server in a "public" namespace,
//! nodes in their own namespaces signing in with an auth key. They ping each other's overlay
//! addresses; a fourth node appears in the others' maps within a second; the server restarts
//! while they ping and the pings go on; the maps resume afterwards.

use pinhole_netlab::mesh::{self, first_line_time, start_node, wait_line, Control};
use pinhole_netlab::pinhole::ping;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

#[test]
fn mesh_through_control_survives_a_control_restart() {
    if skip_without_root("mesh_through_control_survives_a_control_restart") {
        return;
    }
    let names = ["n1", "n2", "n3", "n4"];
    let mut lab = mesh::star(&names);
    let control = Control::new(&lab);
    let server = control.start(&mut lab);
    let key = control.authkey_file(&lab);

    // Three nodes join and each learns the other two.
    let mut procs = Vec::new();
    for n in &names[..3] {
        procs.push(start_node(&mut lab, n, &key));
    }
    for (i, p) in procs.iter().enumerate() {
        for (j, other) in names[..3].iter().enumerate() {
            if i != j {
                let seen = wait_line(
                    p,
                    &["peer added", &format!("peer={other}")],
                    Duration::from_secs(10),
                );
                assert!(
                    seen.is_some(),
                    "{} never saw {other}:\n{}",
                    names[i],
                    p.log_text()
                );
            }
        }
    }
    let addr: Vec<String> = names[..3]
        .iter()
        .map(|n| control.address_of(&lab, n))
        .collect();
    assert_eq!(addr, ["100.64.0.1", "100.64.0.2", "100.64.0.3"]);
    for (i, from) in names[..3].iter().enumerate() {
        for (j, to) in addr.iter().enumerate() {
            if i != j {
                assert!(
                    ping(&lab, from, to),
                    "{from} → {to}\n{}",
                    procs[i].log_text()
                );
            }
        }
    }

    // The local API: n1's status lists both peers online, with their addresses, on a direct path.
    let st = mesh::status_json(&lab, "n1");
    assert_eq!(st["state"], "connected", "{st:#}");
    assert_eq!(st["self"]["name"], "n1");
    for (name, a) in [("n2", &addr[1]), ("n3", &addr[2])] {
        let p = st["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("{name} missing from {st:#}"));
        assert_eq!(p["online"], true, "{p:#}");
        assert_eq!(p["addresses"][0], a.as_str());
        assert_eq!(p["connection"], "direct", "{p:#}");
    }
    let (ok, table, _) = mesh::pinhole(&lab, "n2", &["status"]);
    assert!(ok && table.contains("direct 198.18.1.2:41641"), "{table}");
    // A user outside group pinhole is refused, and told why.
    let cli = mesh::pinhole_cli();
    let sock = lab.dir().join("n1.sock");
    let out = lab
        .run(
            "n1",
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                cli.to_str().unwrap(),
                "--socket",
                sock.to_str().unwrap(),
                "status",
            ],
            Duration::from_secs(10),
        )
        .expect("running pinhole as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not allowed") && err.contains("pinhole"),
        "{err}"
    );

    // `pinhole down` on n3: its device is gone and its status says stopped; `up` brings it back.
    let (ok, out, err) = mesh::pinhole(&lab, "n3", &["down"]);
    assert!(ok && out.contains("down"), "{out}{err}");
    assert!(
        lab.run("n3", &["ip", "link", "show", "ph0"], Duration::from_secs(5))
            .map(|o| !o.status.success())
            .unwrap_or(false),
        "the TUN device is gone"
    );
    assert_eq!(mesh::status_json(&lab, "n3")["state"], "stopped");
    let (ok, out, err) = mesh::pinhole(&lab, "n3", &["up"]);
    assert!(ok && out.contains("up"), "{out}{err}");
    assert_eq!(mesh::status_json(&lab, "n3")["state"], "connected");
    assert!(
        ping(&lab, "n1", &addr[2]),
        "n1 → n3 after down and up\n{}",
        procs[2].log_text()
    );

    // A fourth node: the others have it in their maps within a second of its registration.
    let p4 = start_node(&mut lab, "n4", &key);
    let registered = first_line_time(&p4, &["registered"]).expect("n4 logged its registration");
    for (i, p) in procs.iter().enumerate() {
        assert!(
            wait_line(p, &["peer added", "peer=n4"], Duration::from_secs(5)).is_some(),
            "{} never saw n4:\n{}",
            names[i],
            p.log_text()
        );
        let seen = first_line_time(p, &["peer added", "peer=n4"]).unwrap();
        // Seconds of the day: fold a midnight crossing back; the peer may log first (negative).
        let delay = match seen - registered {
            d if d < -43_200.0 => d + 86_400.0,
            d if d > 43_200.0 => d - 86_400.0,
            d => d,
        };
        eprintln!(
            "{} had n4 in its map {:.0} ms after n4 logged its registration (negative: before n4 heard back)",
            names[i],
            delay * 1000.0
        );
        assert!(delay < 1.0, "{} saw n4 after {delay:.3} s", names[i]);
    }
    let a4 = control.address_of(&lab, "n4");
    assert!(ping(&lab, "n4", &addr[0]), "n4 → n1");
    assert!(ping(&lab, "n1", &a4), "n1 → n4");

    // Control restarts (same database) while n1 pings n2: no ping is lost.
    let pinger = lab
        .spawn(
            "n1",
            &["ping", "-c", "40", "-i", "0.1", "-W", "1", &addr[1]],
        )
        .expect("starting ping");
    std::thread::sleep(Duration::from_millis(500));
    lab.stop(&server, Duration::from_secs(5));
    for (i, p) in procs.iter().enumerate() {
        assert!(
            wait_line(p, &["keeping the last map"], Duration::from_secs(5)).is_some(),
            "{} did not notice control going away:\n{}",
            names[i],
            p.log_text()
        );
    }
    std::thread::sleep(Duration::from_millis(1000));
    let server = control.start(&mut lab);
    lab.wait(&pinger, Duration::from_secs(15))
        .expect("ping finished");
    let out = pinger.log_text();
    assert!(
        out.contains("40 received"),
        "pings were lost across the restart:\n{out}"
    );

    // The maps resume: every node reconnects, and a removal made now reaches all of them.
    for (i, p) in procs.iter().enumerate() {
        let reconnected = Lab::wait_for(Duration::from_secs(45), || {
            mesh::count_lines(p, &["map stream connected"]) >= 2
        });
        assert!(
            reconnected,
            "{} did not reconnect:\n{}",
            names[i],
            p.log_text()
        );
    }
    control.cli(&lab, &["node", "remove", "n4"]);
    for (i, p) in procs.iter().enumerate() {
        assert!(
            wait_line(p, &["peer removed", "peer=n4"], Duration::from_secs(10)).is_some(),
            "{} still has n4:\n{}",
            names[i],
            p.log_text()
        );
    }
    assert!(
        wait_line(
            &p4,
            &["signed out by the coordination server"],
            Duration::from_secs(10)
        )
        .is_some(),
        "n4 was not told:\n{}",
        p4.log_text()
    );
    assert!(ping(&lab, "n1", &addr[2]), "the others still talk");
    drop(server);
}
