//! Two pinholed in two namespaces: ping over IPv4 and IPv6, a 100 MiB transfer (and 20 MiB over
//! IPv6: TCP segments are coalesced into super-packets for the receiving kernel), clean shutdown.

mod common;

use common::*;
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

fn two_nodes() -> (Lab, Node, Node, pinhole_netlab::Proc, pinhole_netlab::Proc) {
    let mut lab = two_hosts();
    let (a, b) = (node_a(), node_b());
    // a knows where b is; b learns a's endpoint from a's handshake.
    let pa = start_pinholed(&mut lab, "a", &config(&a, &b, true));
    let pb = start_pinholed(&mut lab, "b", &config(&b, &a, false));
    (lab, a, b, pa, pb)
}

#[test]
fn ping_both_ways_over_ipv4_and_ipv6() {
    if skip_without_root("ping_both_ways_over_ipv4_and_ipv6") {
        return;
    }
    let (lab, a, b, pa, pb) = two_nodes();
    assert!(ping(&lab, "a", b.v4), "a → b over IPv4\n{}", pa.log_text());
    assert!(ping(&lab, "b", a.v4), "b → a over IPv4\n{}", pb.log_text());
    assert!(ping(&lab, "a", b.v6), "a → b over IPv6");
    assert!(ping(&lab, "b", a.v6), "b → a over IPv6");
    assert!(pa.log_text().contains("handshake completed"));
    assert!(pb.log_text().contains("peer endpoint changed"));
}

#[test]
fn transfer_of_100_mib_arrives_intact() {
    if skip_without_root("transfer_of_100_mib_arrives_intact") {
        return;
    }
    let (mut lab, _a, b, _pa, _pb) = two_nodes();
    transfer(&mut lab, &format!("{}:5201", b.v4), 100 << 20);
}

#[test]
fn transfer_over_ipv6_arrives_intact() {
    if skip_without_root("transfer_over_ipv6_arrives_intact") {
        return;
    }
    let (mut lab, _a, b, _pa, _pb) = two_nodes();
    transfer(&mut lab, &format!("[{}]:5201", b.v6), 20 << 20);
}

/// Sends `bytes` from a to `listen` on b through the tunnel; both ends' SHA-256 must match.
fn transfer(lab: &mut Lab, listen: &str, bytes: u64) {
    let server = lab
        .spawn("b", &[tool(), "serve", listen, "60"])
        .expect("starting the receiver");
    let sent = lab
        .run_ok(
            "a",
            &[tool(), "send", listen, &bytes.to_string(), "7"],
            Duration::from_secs(120),
        )
        .expect("sending 100 MiB through the tunnel");
    lab.wait(&server, Duration::from_secs(10))
        .expect("receiver finished");
    let received = server.log_text();
    assert!(sent.starts_with(&format!("bytes={bytes} ")), "{sent}");
    assert_eq!(received.trim(), sent.trim(), "SHA-256 of what arrived");
}

#[test]
fn shutdown_removes_device_and_routes() {
    if skip_without_root("shutdown_removes_device_and_routes") {
        return;
    }
    let (mut lab, _a, b, pa, _pb) = two_nodes();
    let routes = lab
        .run_ok(
            "a",
            &["ip", "-4", "route", "show", "dev", TUN],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(routes.contains(b.v4), "route to the peer exists: {routes}");
    let status = lab
        .stop(&pa, Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(status.success(), "clean exit: {status}\n{}", pa.log_text());
    let link = lab
        .run("a", &["ip", "link", "show", TUN], Duration::from_secs(5))
        .unwrap();
    assert!(!link.status.success(), "the TUN device is gone");
    let routes = lab
        .run_ok("a", &["ip", "-4", "route", "show"], Duration::from_secs(5))
        .unwrap();
    assert!(!routes.contains(b.v4), "no route left: {routes}");
    assert!(pa.log_text().contains("SIGTERM: shutting down"));
}
