//! `pinhole netcheck`, the daemon's side: finds the STUN servers of the relay map (DNS), checks
//! the coordination server, lists local endpoints; the STUN probes themselves go out of the
//! node's own UDP socket from the daemon's loop (the engine's sans-IO `Netcheck`), so the public
//! address they find is the one peers would use.

use crate::endpoints;
use pinhole_control_client::ControlClient;
use pinhole_engine::{NetcheckReport as Found, StunServer};
use pinhole_proto::control::RelayMap;
use pinhole_proto::ipc::{ControlCheck, NetcheckReport, RegionLatency};
use std::net::IpAddr;

/// What the loop knows when a netcheck is asked for.
pub struct Input {
    pub port: u16,
    /// Overlay addresses (not endpoints).
    pub skip: Vec<IpAddr>,
    pub client: Option<ControlClient>,
    pub relay_map: Option<RelayMap>,
}

/// Everything but the STUN probes, gathered off the loop.
pub struct Prepared {
    pub servers: Vec<StunServer>,
    /// Regions and why a region has no server to probe.
    regions: Vec<(String, String, Option<String>)>,
    control: ControlCheck,
    local: Vec<String>,
    port: u16,
}

pub async fn prepare(input: Input) -> Prepared {
    let mut servers = Vec::new();
    let mut regions = Vec::new();
    for region in input.relay_map.iter().flat_map(|m| m.regions.iter()) {
        let mut problem = Some("no STUN server in this region".to_string());
        for stun in region.relays.iter().filter_map(|r| r.stun.as_deref()) {
            match tokio::net::lookup_host(stun).await {
                Ok(addrs) => {
                    // One address per family is enough.
                    let mut seen_v4 = false;
                    let mut seen_v6 = false;
                    for a in addrs {
                        let seen = if a.is_ipv4() {
                            &mut seen_v4
                        } else {
                            &mut seen_v6
                        };
                        if !*seen {
                            *seen = true;
                            servers.push(StunServer {
                                region: region.code.clone(),
                                addr: a,
                            });
                            problem = None;
                        }
                    }
                }
                Err(e) => problem = Some(format!("cannot resolve {stun}: {e}")),
            }
        }
        regions.push((region.code.clone(), region.name.clone(), problem));
    }
    let control = match &input.client {
        None => ControlCheck {
            url: None,
            reachable: false,
            latency_ms: None,
            error: Some("no coordination server configured".into()),
        },
        Some(c) => match c.health().await {
            Ok(rtt) => ControlCheck {
                url: Some(c.base_url().to_string()),
                reachable: true,
                latency_ms: Some(ms(rtt)),
                error: None,
            },
            Err(e) => ControlCheck {
                url: Some(c.base_url().to_string()),
                reachable: false,
                latency_ms: None,
                error: Some(e.to_string()),
            },
        },
    };
    let toward = input.client.as_ref().and_then(|c| {
        reqwest::Url::parse(c.base_url())
            .ok()?
            .host_str()?
            .trim_matches(|ch| ch == '[' || ch == ']')
            .parse::<IpAddr>()
            .ok()
    });
    let (port, skip) = (input.port, input.skip);
    let local = tokio::task::spawn_blocking(move || endpoints::local(port, toward, &skip))
        .await
        .unwrap_or_default()
        .iter()
        .map(|e| e.to_string())
        .collect();
    Prepared {
        servers,
        regions,
        control,
        local,
        port: input.port,
    }
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

/// The report from what was gathered and what the probes found.
pub fn report(p: &Prepared, found: &Found) -> NetcheckReport {
    let regions = p
        .regions
        .iter()
        .map(|(code, name, problem)| {
            let probes: Vec<_> = found
                .probes
                .iter()
                .filter(|pr| pr.server.region == *code)
                .collect();
            let best = probes
                .iter()
                .filter(|pr| pr.latency.is_some())
                .min_by_key(|pr| pr.latency);
            let error = match (best, problem) {
                (Some(_), _) => None,
                (None, Some(why)) => Some(why.clone()),
                (None, None) => Some(format!(
                    "no STUN answer from {}",
                    probes
                        .iter()
                        .map(|pr| pr.server.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            RegionLatency {
                code: code.clone(),
                name: name.clone(),
                latency_ms: best.and_then(|b| b.latency).map(ms),
                public_endpoint: best.and_then(|b| b.mapped).map(|m| m.to_string()),
                error,
            }
        })
        .collect();
    NetcheckReport {
        udp: found.udp,
        port: p.port,
        local_endpoints: p.local.clone(),
        public_endpoints: found.public.iter().map(|a| a.to_string()).collect(),
        mapping_varies_by_dest: found.mapping_varies_by_dest,
        regions,
        preferred_relay: found.preferred_region.clone(),
        control: p.control.clone(),
    }
}
