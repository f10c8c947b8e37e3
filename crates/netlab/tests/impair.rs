//! The public network's impairments do what they say: a delay shows in ping's round trip
//! (twice the one-way delay, within a few milliseconds), and loss in ping's count (within a
//! few percent of what two passes lose), and TCP to the public namespace's own services (the
//! coordination server) works through both.

use pinhole_netlab::impair::Impairment;
use pinhole_netlab::nat::Profile;
use pinhole_netlab::natlab::{Plan, SERVER_IP};
use pinhole_netlab::{skip_without_root, Lab};
use std::time::Duration;

/// (average RTT in ms, loss in percent) of `count` pings from `host` to `dst`.
fn ping(lab: &Lab, host: &str, dst: &str, count: u32, interval: &str) -> (f64, f64) {
    let out = lab
        .run(
            host,
            &[
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "2",
                dst,
            ],
            Duration::from_secs(120),
        )
        .expect("running ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let loss = text
        .split(',')
        .find(|p| p.contains("packet loss"))
        .and_then(|p| p.trim().split('%').next())
        .and_then(|p| p.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no loss figure in {text}"));
    let avg = text
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (avg, loss)
}

fn two_public_hosts(imp: Impairment) -> Lab {
    let public: Profile = "public".parse().unwrap();
    Plan::new()
        .site(public.clone(), &["a"])
        .site(public, &["b"])
        .impair(imp)
        .build()
        .expect("building the lab")
}

#[test]
fn delay_and_jitter_show_in_ping() {
    if skip_without_root("delay_and_jitter_show_in_ping") {
        return;
    }
    let lab = two_public_hosts(Impairment {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(5),
        loss_percent: 0.0,
    });
    // b is at 198.18.11.2: a round trip crosses the public network twice.
    for dst in ["198.18.11.2", SERVER_IP] {
        let (avg, loss) = ping(&lab, "a", dst, 20, "0.05");
        println!("a → {dst}: avg {avg:.1} ms, loss {loss}%");
        assert_eq!(loss, 0.0, "no loss was asked for");
        assert!(
            (97.0..=106.0).contains(&avg),
            "RTT {avg} ms, asked 2 × 50 ms"
        );
    }
}

#[test]
fn loss_shows_in_ping() {
    if skip_without_root("loss_shows_in_ping") {
        return;
    }
    let lab = two_public_hosts(Impairment {
        loss_percent: 10.0,
        ..Impairment::default()
    });
    let (avg, loss) = ping(&lab, "a", "198.18.11.2", 1000, "0.002");
    println!("a → b: avg {avg:.2} ms, loss {loss}%");
    // Each of the two passes drops 10%: 1 − 0.9² = 19% of round trips.
    assert!(
        (14.0..=24.0).contains(&loss),
        "loss {loss}%, expected about 19%"
    );
    assert!(avg < 5.0, "no delay was asked for, RTT {avg} ms");
}

#[test]
fn tcp_to_the_public_namespace_gets_through_delay_and_loss() {
    if skip_without_root("tcp_to_the_public_namespace_gets_through_delay_and_loss") {
        return;
    }
    let mut lab = two_public_hosts(Impairment {
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(5),
        loss_percent: 10.0,
    });
    let tool = pinhole_netlab::pinhole::tool();
    let tool = tool.to_str().unwrap();
    let server = lab
        .spawn(
            "public",
            &[tool, "serve", &format!("{SERVER_IP}:9000"), "60"],
        )
        .expect("starting the TCP sink");
    std::thread::sleep(Duration::from_millis(300));
    let sent = lab
        .run_ok(
            "a",
            &[tool, "send", &format!("{SERVER_IP}:9000"), "200000", "7"],
            Duration::from_secs(60),
        )
        .expect("sending 200 kB over TCP");
    let got = Lab::wait_for(Duration::from_secs(30), || {
        server.log_text().contains("bytes=200000")
    });
    assert!(got, "sent {sent}, the server got {}", server.log_text());
    assert!(
        server.log_text().contains(sent.trim()),
        "{sent} vs {}",
        server.log_text()
    );
}
