//! The STUN service answers a client not written here: coturn's `turnutils_stunclient` (RFC 5389
//! Binding, and its RFC 5780 mode) over IPv4 and IPv6 on loopback.

use pinhole_relay::{StunConfig, StunServer};
use std::process::Command;
use std::time::Duration;

fn have_client() -> bool {
    Command::new("sh")
        .args(["-c", "command -v turnutils_stunclient"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the third-party client against `addr`:`port`; its output.
async fn stunclient(secs: u32, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .arg(secs.to_string())
            .arg("turnutils_stunclient")
            .args(&args)
            .output()
            .expect("running turnutils_stunclient")
    })
    .await
    .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_third_party_client_learns_its_address_over_ipv4_and_ipv6() {
    if !have_client()
        && pinhole_testkit::skip(
            "a_third_party_client_learns_its_address_over_ipv4_and_ipv6",
            "turnutils_stunclient (Debian package coturn) is not installed; `cargo xtask test` installs it",
        )
    {
        return;
    }
    for (listen, client_ip) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
        let server = StunServer::bind(StunConfig {
            primary: listen.parse().unwrap(),
            alternate_ip: None,
            alternate_port: None,
        })
        .await
        .expect("binding STUN");
        let port = server.local_addr().unwrap().port().to_string();
        let stats = server.stats.clone();
        let task = tokio::spawn(server.run());
        let text = stunclient(10, &["-p", &port, client_ip]).await;
        task.abort();
        assert!(
            text.contains("UDP reflexive addr:") && text.contains(client_ip),
            "{client_ip}: {text}"
        );
        assert!(stats.requests.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    }
}

#[tokio::test]
async fn rfc_5780_mode_sees_the_other_port() {
    if !have_client()
        && pinhole_testkit::skip(
            "rfc_5780_mode_sees_the_other_port",
            "turnutils_stunclient (Debian package coturn) is not installed; `cargo xtask test` installs it",
        )
    {
        return;
    }
    // A free pair of ports: bind to 0 for the primary, then the next one as alternate. Another
    // program may take the next port meanwhile: a new pair is tried, and after 20 the test fails.
    let mut bound = None;
    for _ in 0..20 {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let primary = probe.local_addr().unwrap();
        drop(probe);
        let alternate = primary.port().wrapping_add(1);
        if let Ok(server) = StunServer::bind(StunConfig {
            primary,
            alternate_ip: None,
            alternate_port: Some(alternate),
        })
        .await
        {
            bound = Some((server, primary, alternate));
            break;
        }
    }
    let (server, primary, alternate) =
        bound.expect("no free pair of neighbouring UDP ports on loopback in 20 tries");
    let task = tokio::spawn(server.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The client's follow-up asks for a change of address too, which a one-address server
    // refuses (420); it waits for more, so it is cut off after its first answer had time to come.
    let text = stunclient(3, &["-f", "-p", &primary.port().to_string(), "127.0.0.1"]).await;
    task.abort();
    assert!(text.contains("UDP reflexive addr: 127.0.0.1"), "{text}");
    assert!(
        text.contains(&format!("Other addr: : 127.0.0.1:{alternate}")),
        "the client reads OTHER-ADDRESS: {text}"
    );
    assert!(
        text.contains(&format!("Response origin: : {primary}")),
        "and RESPONSE-ORIGIN: {text}"
    );
}
