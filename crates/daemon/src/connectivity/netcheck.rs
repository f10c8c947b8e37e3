//! `pinhole netcheck`, the daemon's side: finds the STUN servers of the relay map (DNS), checks
//! the coordination server, lists local endpoints; the STUN probes themselves go out of the
//! node's own UDP socket from the daemon's loop (the engine's sans-IO `Netcheck`), so the public
//! address they find is the one peers would use.

use crate::connectivity::endpoints;
use pinhole_control_client::ControlClient;
use pinhole_engine::{NetcheckReport as Found, StunServer};
use pinhole_proto::control::RelayMap;
use pinhole_proto::ipc::{ControlCheck, NetcheckReport, PortMapCheck, RegionLatency};
use std::net::IpAddr;

/// What the loop knows when a netcheck is asked for.
pub struct Input {
    pub port: u16,
    /// Overlay addresses (not endpoints).
    pub skip: Vec<IpAddr>,
    pub client: Option<ControlClient>,
    pub relay_map: Option<RelayMap>,
    /// What the port mapper holds (or why nothing).
    pub port_mapping: PortMapCheck,
}

/// Everything but the STUN probes, gathered off the loop.
pub struct Prepared {
    pub servers: Vec<StunServer>,
    /// Regions and why a region has no server to probe.
    regions: Vec<(String, String, Option<String>)>,
    control: ControlCheck,
    local: Vec<String>,
    port: u16,
    port_mapping: PortMapCheck,
}

impl Prepared {
    /// A netcheck prepared with only these STUN servers (nothing else known), for tests.
    #[cfg(test)]
    pub fn with_servers(servers: Vec<StunServer>) -> Prepared {
        Prepared {
            servers,
            regions: Vec::new(),
            control: ControlCheck {
                url: None,
                reachable: false,
                latency_ms: None,
                error: None,
            },
            local: Vec::new(),
            port: 0,
            port_mapping: PortMapCheck::default(),
        }
    }
}

/// A relay map's `host:port`, or `:port` meaning the coordination server's host.
fn stun_target(stun: &str, control_host: Option<&str>) -> Option<String> {
    match stun.strip_prefix(':') {
        Some(port) => {
            let host = control_host?;
            Some(if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            })
        }
        None => Some(stun.to_string()),
    }
}

pub async fn prepare(input: Input) -> Prepared {
    let control_host = input.client.as_ref().and_then(|c| {
        reqwest::Url::parse(c.base_url())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
    });
    let mut servers = Vec::new();
    let mut regions = Vec::new();
    for region in input.relay_map.iter().flat_map(|m| m.regions.iter()) {
        let mut problem = Some("no STUN server in this region".to_string());
        for stun in region.relays.iter().filter_map(|r| r.stun.as_deref()) {
            let Some(target) = stun_target(stun, control_host.as_deref()) else {
                problem = Some(format!(
                    "{stun} is relative to an unknown coordination server"
                ));
                continue;
            };
            let resolved = tokio::net::lookup_host(target.as_str()).await;
            match resolved {
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
                Err(e) => problem = Some(format!("cannot resolve {target}: {e}")),
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
    let toward = control_host.as_deref().and_then(|h| {
        h.trim_matches(|ch| ch == '[' || ch == ']')
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
        port_mapping: input.port_mapping,
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
        ipv4: found.ipv4,
        ipv6: found.ipv6,
        hairpinning: found.hairpinning,
        port_mapping: p.port_mapping.clone(),
        regions,
        preferred_relay: found.preferred_region.clone(),
        control: p.control.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_stun_servers_take_the_coordination_servers_host() {
        assert_eq!(
            stun_target(":3478", Some("198.18.1.1")).as_deref(),
            Some("198.18.1.1:3478")
        );
        assert_eq!(
            stun_target(":3478", Some("[2001:db8::1]")).as_deref(),
            Some("[2001:db8::1]:3478")
        );
        assert_eq!(
            stun_target(":3478", Some("2001:db8::1")).as_deref(),
            Some("[2001:db8::1]:3478")
        );
        assert_eq!(
            stun_target("stun.example.com:3478", None).as_deref(),
            Some("stun.example.com:3478")
        );
        assert_eq!(stun_target(":3478", None), None);
    }
}
