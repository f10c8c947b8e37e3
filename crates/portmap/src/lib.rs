//! Port mapping: asks the gateway to forward a public UDP port to a local one, by PCP, then
//! NAT-PMP (crab_nat), then UPnP IGD (igd-next); renews it at half its lifetime, maps again when
//! the network changes, and deletes it when told to stop. pinholed publishes the public address
//! it gets as a `portmap` endpoint: peers behind NATs that change the port per destination can
//! still reach the node there.

use crab_nat::{InternetProtocol, PortMappingOptions, TimeoutConfig};
use igd_next::aio::tokio::Tokio;
use igd_next::PortMappingProtocol;
use pinhole_dataplane::udp::source_toward;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The lifetime asked for (the gateway may grant less).
const LIFETIME: Duration = Duration::from_secs(7200);
/// How long to wait before trying again when no gateway offered a mapping.
const RETRY: Duration = Duration::from_secs(300);
/// Each gateway request: a short first wait, two retries (a LAN answers in milliseconds).
const TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};
/// How long UPnP discovery (SSDP) waits for the gateway.
const SSDP_WAIT: Duration = Duration::from_secs(2);
/// The name a UPnP mapping is listed under on the gateway.
const DESCRIPTION: &str = "pinhole";

/// The protocol a mapping was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Pcp,
    NatPmp,
    Upnp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "nat-pmp",
            Protocol::Upnp => "upnp",
        })
    }
}

/// A mapping the gateway granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub protocol: Protocol,
    /// The public address and port peers can send to.
    pub external: SocketAddr,
    pub gateway: IpAddr,
    pub lifetime: Duration,
}

/// What the port mapper has: a mapping, or why there is none (none yet: still trying).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub mapped: Option<Mapped>,
    pub error: Option<String>,
}

/// What the daemon tells the port mapper.
#[derive(Debug)]
pub enum Command {
    /// The network changed: map again.
    Refresh,
    /// Delete the mapping and end.
    Stop,
}

/// The live mapping and what renews or deletes it.
enum Held {
    Pmp(crab_nat::PortMapping),
    Upnp {
        gateway: igd_next::aio::Gateway<Tokio>,
        port: u16,
    },
}

/// Runs until `Stop` (or the daemon drops the sender): maps `port`, keeps the mapping alive,
/// and says what it has on `state`. `gateway` finds the default gateway (a function so tests
/// and other OSes can give their own).
pub async fn run(
    port: u16,
    gateway: fn() -> Option<IpAddr>,
    state: watch::Sender<State>,
    commands: mpsc::Receiver<Command>,
) {
    run_with(port, gateway, state, commands, MIN_WAIT).await
}

/// The shortest time between two renewals (a gateway may grant very short lifetimes).
const MIN_WAIT: Duration = Duration::from_secs(30);

/// [`run`] with the shortest time between renewals (`floor`) given.
async fn run_with(
    port: u16,
    gateway: fn() -> Option<IpAddr>,
    state: watch::Sender<State>,
    mut commands: mpsc::Receiver<Command>,
    floor: Duration,
) {
    let Some(port) = NonZeroU16::new(port) else {
        state.send_replace(State {
            mapped: None,
            error: Some("no UDP port to map".into()),
        });
        return;
    };
    let mut held: Option<(Held, Mapped)> = None;
    loop {
        let wait = match &mut held {
            None => match map(port, gateway()).await {
                Ok((h, m)) => {
                    tracing::info!(protocol = %m.protocol, external = %m.external, gateway = %m.gateway, "port mapped");
                    let wait = m.lifetime / 2;
                    state.send_replace(State {
                        mapped: Some(m.clone()),
                        error: None,
                    });
                    held = Some((h, m));
                    wait
                }
                Err(why) => {
                    tracing::debug!("no port mapping: {why}");
                    state.send_replace(State {
                        mapped: None,
                        error: Some(why),
                    });
                    RETRY
                }
            },
            Some((h, m)) => match renew(h, port).await {
                Ok(lifetime) => {
                    m.lifetime = lifetime;
                    lifetime / 2
                }
                Err(why) => {
                    tracing::info!("renewing the port mapping failed ({why}); mapping again");
                    held = None;
                    continue;
                }
            },
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(floor)) => {}
            c = commands.recv() => match c {
                Some(Command::Refresh) => {
                    if let Some((h, _)) = held.take() {
                        delete(h).await;
                    }
                }
                Some(Command::Stop) | None => {
                    if let Some((h, m)) = held.take() {
                        delete(h).await;
                        tracing::info!(protocol = %m.protocol, external = %m.external, "port mapping deleted");
                    }
                    state.send_replace(State::default());
                    return;
                }
            }
        }
    }
}

/// Tries PCP, then NAT-PMP, then UPnP; the error says what each answered.
async fn map(port: NonZeroU16, gateway: Option<IpAddr>) -> Result<(Held, Mapped), String> {
    let mut tried = Vec::new();
    if let Some(gw) = gateway {
        match map_pcp_or_pmp(gw, port).await {
            Ok(found) => return Ok(found),
            Err(why) => tried.push(why),
        }
    } else {
        tried.push("no default gateway for PCP or NAT-PMP".to_string());
    }
    match map_upnp(port).await {
        Ok(found) => Ok(found),
        Err(why) => {
            tried.push(why);
            Err(tried.join("; "))
        }
    }
}

async fn map_pcp_or_pmp(gw: IpAddr, port: NonZeroU16) -> Result<(Held, Mapped), String> {
    let client = source_toward(gw).ok_or_else(|| format!("no route to the gateway {gw}"))?;
    let options = PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(LIFETIME.as_secs() as u32),
        timeout_config: Some(TIMEOUTS),
    };
    let pcp_error = match crab_nat::pcp::port_mapping(
        crab_nat::pcp::BaseMapRequest::new(gw.into(), client, InternetProtocol::Udp, port),
        None,
        None,
        options,
    )
    .await
    {
        Ok(m) => {
            let external_ip = match m.mapping_type() {
                crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
                crab_nat::PortMappingType::NatPmp => gw,
            };
            let mapped = checked(Protocol::Pcp, external_ip, m.external_port().get(), gw, &m)?;
            return Ok((Held::Pmp(m), mapped));
        }
        Err(e) => pcp_in_words(gw, &e),
    };
    match crab_nat::natpmp::port_mapping(gw.into(), InternetProtocol::Udp, port, options).await {
        Ok(m) => {
            let ip = match crab_nat::natpmp::external_address(gw.into(), Some(TIMEOUTS)).await {
                Ok(ip) => IpAddr::V4(ip),
                Err(e) => {
                    let _ = m.try_drop().await;
                    return Err(format!(
                        "NAT-PMP: the gateway {gw} mapped the port but gave no external address ({})",
                        natpmp_in_words(gw, &e)
                    ));
                }
            };
            let mapped = checked(Protocol::NatPmp, ip, m.external_port().get(), gw, &m)?;
            Ok((Held::Pmp(m), mapped))
        }
        Err(e) => Err(format!("{pcp_error}; {}", natpmp_in_words(gw, &e))),
    }
}

/// How long one gateway request waits for an answer, all retries included.
fn answer_wait() -> Duration {
    let mut wait = TIMEOUTS.initial_timeout;
    let mut total = wait;
    for _ in 0..TIMEOUTS.max_retries {
        wait = (wait * 2).min(TIMEOUTS.max_retry_timeout.unwrap_or(wait * 2));
        total += wait;
    }
    total
}

/// A socket error on the way to the gateway, or silence from it, in words.
fn gateway_silence(protocol: &str, gw: IpAddr, socket: Option<&std::io::Error>) -> String {
    use std::io::ErrorKind;
    let Some(e) = socket else {
        return format!(
            "the gateway {gw} did not answer {protocol} within {:.1} s",
            answer_wait().as_secs_f64()
        );
    };
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            format!("the gateway {gw} refused {protocol} (nothing listens for it there)")
        }
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable => {
            format!("{protocol}: the gateway {gw} cannot be reached from here")
        }
        ErrorKind::PermissionDenied => {
            format!("{protocol}: a local firewall stopped the request to the gateway {gw}")
        }
        _ => format!("{protocol}: the request to the gateway {gw} failed ({e})"),
    }
}

/// Why PCP failed, in words.
fn pcp_in_words(gw: IpAddr, e: &crab_nat::pcp::Failure) -> String {
    use crab_nat::pcp::Failure;
    match e {
        Failure::Socket(io) => gateway_silence("PCP", gw, Some(io)),
        Failure::Timeout => gateway_silence("PCP", gw, None),
        Failure::NotAuthorized(_) => format!("the gateway {gw} does not allow PCP mappings"),
        other => format!("PCP: the gateway {gw} said no ({other})"),
    }
}

/// Why NAT-PMP failed, in words.
fn natpmp_in_words(gw: IpAddr, e: &crab_nat::natpmp::Failure) -> String {
    use crab_nat::natpmp::Failure;
    match e {
        Failure::Socket(io) => gateway_silence("NAT-PMP", gw, Some(io)),
        Failure::Timeout => gateway_silence("NAT-PMP", gw, None),
        Failure::NotAuthorized => format!("the gateway {gw} does not allow NAT-PMP mappings"),
        other => format!("NAT-PMP: the gateway {gw} said no ({other})"),
    }
}

/// Why no UPnP gateway was found, in words.
fn upnp_search_in_words(e: &igd_next::SearchError) -> String {
    match e {
        igd_next::SearchError::NoResponseWithinTimeout => {
            format!("no gateway answered UPnP within {} s", SSDP_WAIT.as_secs())
        }
        igd_next::SearchError::IoError(io) => match io.kind() {
            std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable => {
                "UPnP: no network to search for a gateway on".to_string()
            }
            _ => format!("UPnP: searching for a gateway failed ({io})"),
        },
        other => format!("UPnP: a gateway answered but its description was unusable ({other})"),
    }
}

fn checked(
    protocol: Protocol,
    ip: IpAddr,
    port: u16,
    gateway: IpAddr,
    m: &crab_nat::PortMapping,
) -> Result<Mapped, String> {
    if behind_another_nat(ip) {
        return Err(format!(
            "{protocol}: the gateway's public address {ip} is private: another NAT is in front of it"
        ));
    }
    Ok(Mapped {
        protocol,
        external: SocketAddr::new(ip, port),
        gateway,
        lifetime: Duration::from_secs(u64::from(m.lifetime())),
    })
}

async fn map_upnp(port: NonZeroU16) -> Result<(Held, Mapped), String> {
    let mut options = igd_next::SearchOptions::default();
    options.timeout = Some(SSDP_WAIT);
    options.single_search_timeout = Some(SSDP_WAIT);
    options.gateway_ip_version = igd_next::GatewayIpVersion::V4;
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| upnp_search_in_words(&e))?;
    let gw = gateway.addr.ip();
    let client = source_toward(gw).ok_or_else(|| format!("UPnP: no route to {gw}"))?;
    let ip = gateway
        .get_external_ip()
        .await
        .map_err(|e| format!("UPnP: the gateway {gw} gave no external address ({e})"))?;
    if behind_another_nat(ip) {
        return Err(format!(
            "UPnP: the gateway's public address {ip} is private: another NAT is in front of it"
        ));
    }
    let local = SocketAddr::new(client, port.get());
    let mut lease = LIFETIME.as_secs() as u32;
    let external_port = match add_upnp(&gateway, port.get(), local, &mut lease).await {
        Ok(()) => port.get(),
        Err(igd_next::AddPortError::PortInUse) => gateway
            .add_any_port(PortMappingProtocol::UDP, local, lease, DESCRIPTION)
            .await
            .map_err(|e| format!("UPnP: {e}"))?,
        Err(e) => return Err(format!("UPnP: {e}")),
    };
    let mapped = Mapped {
        protocol: Protocol::Upnp,
        external: SocketAddr::new(ip, external_port),
        gateway: gw,
        // A permanent lease is still renewed now and then: the gateway may have rebooted.
        lifetime: Duration::from_secs(if lease == 0 { 3600 } else { u64::from(lease) }),
    };
    Ok((
        Held::Upnp {
            gateway,
            port: external_port,
        },
        mapped,
    ))
}

/// Adds the UPnP mapping; with a gateway that only grants permanent leases, asks for one
/// (and says so in `lease`).
async fn add_upnp(
    gateway: &igd_next::aio::Gateway<Tokio>,
    external: u16,
    local: SocketAddr,
    lease: &mut u32,
) -> Result<(), igd_next::AddPortError> {
    match gateway
        .add_port(
            PortMappingProtocol::UDP,
            external,
            local,
            *lease,
            DESCRIPTION,
        )
        .await
    {
        Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => {
            *lease = 0;
            gateway
                .add_port(PortMappingProtocol::UDP, external, local, 0, DESCRIPTION)
                .await
        }
        r => r,
    }
}

/// Renews the mapping; its new lifetime.
async fn renew(held: &mut Held, port: NonZeroU16) -> Result<Duration, String> {
    match held {
        Held::Pmp(m) => {
            m.renew().await.map_err(|e| format!("{e:?}"))?;
            Ok(Duration::from_secs(u64::from(m.lifetime())))
        }
        Held::Upnp {
            gateway,
            port: external,
        } => {
            let gw = gateway.addr.ip();
            let client = source_toward(gw).ok_or_else(|| format!("no route to {gw}"))?;
            let mut lease = LIFETIME.as_secs() as u32;
            add_upnp(
                gateway,
                *external,
                SocketAddr::new(client, port.get()),
                &mut lease,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(Duration::from_secs(if lease == 0 {
                3600
            } else {
                u64::from(lease)
            }))
        }
    }
}

/// Deletes the mapping, as far as the gateway answers (it may be gone with the network).
async fn delete(held: Held) {
    let result = match held {
        Held::Pmp(m) => m.try_drop().await.map_err(|(e, _)| format!("{e:?}")),
        Held::Upnp { gateway, port } => gateway
            .remove_port(PortMappingProtocol::UDP, port)
            .await
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        tracing::debug!("deleting the port mapping: {e}");
    }
}

/// Whether a gateway's "public" address is one behind another NAT (private or shared
/// address space): a mapping there cannot be reached from the internet.
fn behind_another_nat(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(_) => false,
    }
}

/// The default IPv4 gateway from the kernel's routing table (`/proc/net/route`).
#[cfg(target_os = "linux")]
pub fn default_gateway() -> Option<IpAddr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_proc_route(&table).map(IpAddr::V4)
}

/// Elsewhere the gateway is found by UPnP's discovery only.
#[cfg(not(target_os = "linux"))]
pub fn default_gateway() -> Option<IpAddr> {
    None
}

/// The gateway of the default route in `/proc/net/route`'s format (hex in host byte order,
/// little-endian on the machines Linux runs on here).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_proc_route(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 1;
    const RTF_GATEWAY: u32 = 2;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, flags, mask) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(7)?);
        let flags = u32::from_str_radix(flags, 16).ok()?;
        let default = *dest == "00000000" && *mask == "00000000";
        if !default || flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY {
            return None;
        }
        let raw = u32::from_str_radix(gw, 16).ok()?;
        Some(Ipv4Addr::from(raw.to_le_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routes_gateway_is_read_from_the_kernels_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000090A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0100090A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_proc_route(table), Some(Ipv4Addr::new(10, 9, 0, 1)));
        let no_default = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                          eth0\t0000090A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_proc_route(no_default), None);
        assert_eq!(parse_proc_route("garbage\nmore garbage here\n"), None);
        // A default route without a gateway (a point-to-point link) is no gateway.
        let onlink = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                      ppp0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n";
        assert_eq!(parse_proc_route(onlink), None);
    }

    #[test]
    fn gateway_failures_are_said_in_words() {
        use std::io::{Error, ErrorKind};
        let gw: IpAddr = "192.168.1.1".parse().unwrap();
        let refused = crab_nat::pcp::Failure::Socket(Error::from(ErrorKind::ConnectionRefused));
        assert_eq!(
            pcp_in_words(gw, &refused),
            "the gateway 192.168.1.1 refused PCP (nothing listens for it there)"
        );
        assert_eq!(
            natpmp_in_words(gw, &crab_nat::natpmp::Failure::Timeout),
            "the gateway 192.168.1.1 did not answer NAT-PMP within 1.8 s"
        );
        let unreachable =
            crab_nat::natpmp::Failure::Socket(Error::from(ErrorKind::NetworkUnreachable));
        assert_eq!(
            natpmp_in_words(gw, &unreachable),
            "NAT-PMP: the gateway 192.168.1.1 cannot be reached from here"
        );
        assert_eq!(
            upnp_search_in_words(&igd_next::SearchError::NoResponseWithinTimeout),
            "no gateway answered UPnP within 2 s"
        );
        for text in [
            pcp_in_words(gw, &refused),
            natpmp_in_words(gw, &unreachable),
        ] {
            assert!(!text.contains("Os {") && !text.contains("kind:"), "{text}");
        }
    }

    #[test]
    fn a_private_or_shared_public_address_means_another_nat_in_front() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "100.127.255.254",
        ] {
            assert!(behind_another_nat(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.18.0.2", "203.0.113.9", "100.128.0.1", "2001:db8::1"] {
            assert!(!behind_another_nat(ip.parse().unwrap()), "{ip}");
        }
    }

    /// A NAT-PMP gateway on loopback (RFC 6886) that refuses PCP as NAT-PMP-only gateways do,
    /// grants `lifetime` seconds, and records every mapping request (internal port, lifetime).
    async fn fake_nat_pmp(
        gw: &str,
        lifetime: u32,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<(u16, u32)>>> {
        let sock = tokio::net::UdpSocket::bind((gw, crab_nat::GATEWAY_PORT))
            .await
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1100];
            let epoch = 1000u32.to_be_bytes();
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let req = &buf[..n];
                let answer: Vec<u8> = match req {
                    [2, ..] => [&[0, 0x81, 0, 1][..], &epoch].concat(),
                    [0, 0] => [&[0, 128, 0, 0][..], &epoch, &[198, 51, 100, 7]].concat(),
                    [0, 1, _, _, i0, i1, e0, e1, l @ ..] if l.len() == 4 => {
                        let asked = u32::from_be_bytes([l[0], l[1], l[2], l[3]]);
                        log.lock()
                            .unwrap()
                            .push((u16::from_be_bytes([*i0, *i1]), asked));
                        let granted = asked.min(lifetime).to_be_bytes();
                        [&[0, 129, 0, 0][..], &epoch, &[*i0, *i1, *e0, *e1], &granted].concat()
                    }
                    _ => continue,
                };
                let _ = sock.send_to(&answer, from).await;
            }
        });
        seen
    }

    /// One test, on 127.0.0.1 (port 5351 is fixed by the protocols, and Wine maps other
    /// loopback addresses onto 127.0.0.1): first nothing listens, then a NAT-PMP gateway does.
    #[tokio::test]
    async fn gateways_without_and_with_nat_pmp() {
        // Nothing on 5351: PCP and NAT-PMP are named in the error, with the gateway.
        let port = NonZeroU16::new(41641).unwrap();
        let err = match map_pcp_or_pmp("127.0.0.1".parse().unwrap(), port).await {
            Ok(_) => panic!("nothing can map a port here"),
            Err(e) => e,
        };
        assert!(
            err.contains("PCP") && err.contains("NAT-PMP") && err.contains("127.0.0.1"),
            "{err}"
        );
        nat_pmp_after_pcp_is_refused_renewed_in_time_and_deleted_at_stop().await;
    }

    async fn nat_pmp_after_pcp_is_refused_renewed_in_time_and_deleted_at_stop() {
        let seen = fake_nat_pmp("127.0.0.1", 2).await;
        let (state_tx, mut state) = watch::channel(State::default());
        let (commands, rx) = mpsc::channel(4);
        let task = tokio::spawn(run_with(
            41641,
            || Some("127.0.0.1".parse().unwrap()),
            state_tx,
            rx,
            Duration::from_millis(100),
        ));
        let mapped = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(m) = state.borrow_and_update().mapped.clone() {
                    return m;
                }
                state.changed().await.unwrap();
            }
        })
        .await
        .expect("a mapping");
        assert_eq!(mapped.protocol, Protocol::NatPmp);
        assert_eq!(mapped.external, "198.51.100.7:41641".parse().unwrap());
        assert_eq!(mapped.lifetime, Duration::from_secs(2));
        // Renewed at half the granted lifetime: two more requests within 2.5 s.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let renewals = seen.lock().unwrap().iter().filter(|(_, l)| *l > 0).count();
        assert!(
            (3..=5).contains(&renewals),
            "{renewals} requests: {:?}",
            seen.lock().unwrap()
        );
        commands.send(Command::Stop).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&(41641, 0)),
            "deleted: lifetime 0"
        );
        assert_eq!(*state.borrow(), State::default());
    }
}
