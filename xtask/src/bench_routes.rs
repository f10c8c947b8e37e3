//! The throughput bench's routed rows: signed-in nodes (control in the lab's public namespace)
//! with a direct path, a → b's overlay address (the direct peer row these compare with), a →
//! a host on b's LAN through b as a subnet router (`--accept-routes`), and a → a host on the
//! public network through b as its exit node (`--exit-node b`). b forwards and masquerades in
//! the kernel; a's traffic takes the route table pinholed keeps.

use anyhow::{bail, Context, Result};
use pinhole_netlab::mesh::{self, start_node, Control, PUBLIC};
use pinhole_netlab::{Lab, Proc};
use std::time::Duration;

/// Which routed path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// a → b's overlay address (both signed in; the row the two below compare with).
    Peer,
    /// a → 192.168.7.10 on b's LAN, b a subnet router.
    SubnetRouter,
    /// a → 198.19.0.80 on the public network, b a's exit node.
    ExitNode,
}

const LAN_HOST: &str = "192.168.7.10";
const WEB: &str = "198.19.0.80";

/// The lab with control, a and b signed in and the path ready; the address to measure to and
/// the host whose iperf3 server answers there. The processes live as long as the lab.
pub fn start(which: Routed) -> Result<(Lab, String, &'static str, Vec<Proc>)> {
    let t = mesh::star_topology(&["a", "b"], "default");
    let t = t.host("lan").link(
        "b",
        &["192.168.7.1/24"],
        "lan",
        &[&format!("{LAN_HOST}/24")],
    );
    let mut lab = Lab::build(&t).context("building the routes lab")?;
    lab.run_ok(
        PUBLIC,
        &["ip", "addr", "add", &format!("{WEB}/32"), "dev", "lo"],
        Duration::from_secs(5),
    )?;
    let control = Control::new(&lab);
    let server = control.start(&mut lab);
    let key = control.authkey_file(&lab);
    let a = start_node(&mut lab, "a", &key);
    let b = start_node(&mut lab, "b", &key);
    let procs = vec![server, a, b];
    let up = |host: &str, args: &[&str]| -> Result<()> {
        let mut argv = vec!["up"];
        argv.extend_from_slice(args);
        let (ok, out, err) = mesh::pinhole(&lab, host, &argv);
        if !ok {
            bail!("pinhole {argv:?} on {host}: {out}{err}");
        }
        Ok(())
    };
    let (dst, server_host) = match which {
        Routed::Peer => (control.address_of(&lab, "b"), "b"),
        Routed::SubnetRouter => {
            up("b", &["--advertise-routes", "192.168.7.0/24"])?;
            control.cli(&lab, &["route", "approve", "b", "192.168.7.0/24"]);
            up("a", &["--accept-routes"])?;
            (LAN_HOST.to_string(), "lan")
        }
        Routed::ExitNode => {
            up("b", &["--advertise-exit-node"])?;
            control.cli(&lab, &["route", "approve", "b", "exit"]);
            // The approval reaches a's map within a moment; the choice is refused until then.
            let chosen = Lab::wait_for(Duration::from_secs(10), || {
                mesh::pinhole(&lab, "a", &["up", "--exit-node", "b"]).0
            });
            if !chosen {
                bail!("a could not choose b as its exit node");
            }
            (WEB.to_string(), PUBLIC)
        }
    };
    // The route reaches a's table within a second or so.
    let routed = Lab::wait_for(Duration::from_secs(10), || {
        lab.run(
            "a",
            &["ping", "-c", "1", "-W", "1", &dst],
            Duration::from_secs(3),
        )
        .is_ok_and(|o| o.status.success())
    });
    if !routed {
        bail!("a cannot reach {dst}");
    }
    Ok((lab, dst, server_host, procs))
}
