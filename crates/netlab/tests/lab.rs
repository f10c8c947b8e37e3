//! The lab itself: links carry traffic, commands time out, output of any size comes back, and
//! dropping the lab removes its namespaces and processes.

use pinhole_netlab::{skip_without_root, Lab, LabError, Topology};
use std::process::Command;
use std::time::{Duration, Instant};

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_runs_commands_and_cleans_up_after_itself() {
    if skip_without_root("lab_runs_commands_and_cleans_up_after_itself") {
        return;
    }
    let t = Topology::new()
        .host("a")
        .router("r")
        .host("b")
        .link("a", &["198.18.1.2/24"], "r", &["198.18.1.1/24"])
        .link("r", &["198.18.2.1/24"], "b", &["198.18.2.2/24"])
        .route("a", "default", "198.18.1.1")
        .route("b", "default", "198.18.2.1");
    let mut lab = Lab::build(&t).unwrap();
    let (ns_a, ns_b) = (
        lab.ns("a").unwrap().to_string(),
        lab.ns("b").unwrap().to_string(),
    );
    assert!(namespaces().contains(&ns_a));

    // Routed through r, which forwards.
    let ping = lab
        .run(
            "a",
            &["ping", "-c", "1", "-W", "2", "198.18.2.2"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(ping.status.success(), "a reaches b through the router");

    // Large output does not stall the command.
    let out = lab
        .run_ok("a", &["seq", "1", "300000"], Duration::from_secs(20))
        .unwrap();
    assert_eq!(out.lines().count(), 300_000);

    // A command that outlives its timeout is killed and reported.
    let started = Instant::now();
    let err = lab
        .run("a", &["sleep", "30"], Duration::from_millis(300))
        .unwrap_err();
    assert!(matches!(err, LabError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // A background process is stopped when the lab goes.
    let p = lab.spawn("b", &["sleep", "600"]).unwrap();
    assert!(lab.is_running(&p));
    drop(lab);
    let left = namespaces();
    assert!(
        !left.contains(&ns_a) && !left.contains(&ns_b),
        "namespaces removed: {left}"
    );
}
