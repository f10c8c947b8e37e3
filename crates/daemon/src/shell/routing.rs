//! Routes in use: the plan of which peer carries which route (see
//! [`crate::control::route_plan`]) applied to the engine's allowed IPs and the OS's routing
//! table of pinholed's own, followed again after every map message and every second (a router
//! gone offline fails over within a couple of seconds); forwarding for peers while this node's
//! offered routes are approved and the tunnel is up; and what `pinhole up --accept-routes /
//! --exit-node / --exit-node-allow-lan` changes.

use super::*;
use crate::control::route_plan::{self, RoutePlan, Router, Wanted};
use crate::platform::forwarding::Forwarding;

/// At start: a crashed pinholed's routing rules, forwarding and masquerading removed (with
/// control; a static configuration has none), relay connections marked to stay outside the
/// tunnel, and the janitor that does the same cleanup when this pinholed ends, however it ends.
#[cfg(target_os = "linux")]
pub(super) fn prepare(
    control: bool,
    state_dir: &std::path::Path,
) -> Option<crate::platform::janitor::Janitor> {
    pinhole_relay_dial::tcp_race::mark_connections(pinhole_dataplane::bypass::MARK);
    if !control {
        return None;
    }
    crate::platform::route_table::clean_leftovers();
    crate::platform::forwarding::clean_leftovers(state_dir);
    crate::platform::janitor::start(state_dir)
}

impl Daemon<'_> {
    /// Recomputes the plan and applies what changed: the routers' allowed IPs in the engine
    /// (also when a map message just reset them), the OS's routes, forwarding.
    pub(super) async fn sync_routes(&mut self) {
        let plan = {
            let peers = self.mapped.map_peers();
            let routers: Vec<Router> = peers
                .iter()
                .map(|n| Router {
                    node: n,
                    // Measured only for routers (the others' RTT plays no part).
                    rtt: if n.routes.is_empty() {
                        None
                    } else {
                        self.engine.peer(&n.node_key).and_then(|p| p.rtt)
                    },
                })
                .collect();
            let wanted = Wanted {
                accept_routes: self.prefs.accept_routes,
                exit_node: self.prefs.exit_node.as_deref(),
                own_routes: &self.prefs.advertise_routes,
            };
            route_plan::plan(&routers, &wanted, &self.route_plan)
        };
        let mut touched: Vec<Key> = self.route_plan.assigned.keys().copied().collect();
        touched.extend(plan.assigned.keys().copied());
        touched.sort();
        touched.dedup();
        let peers = self.mapped.map_peers();
        for key in touched {
            let Some(node) = peers.iter().find(|n| n.node_key == key) else {
                continue;
            };
            let mut want: Vec<IpNet> = node.addresses.iter().map(|a| IpNet::from(*a)).collect();
            want.extend(plan.routes_of(&key).iter().copied());
            let have = self.engine.peer(&key).map(|p| p.allowed_ips);
            if have.as_ref() != Some(&want) && self.engine.set_allowed_ips(&key, &want) {
                tracing::debug!(peer = %node.name, routes = ?plan.routes_of(&key), "routes carried");
            }
        }
        if plan != self.route_plan {
            log_changes(&self.route_plan, &plan, &self.mapped);
            self.route_plan = plan;
        }
        self.sync_exit_dns();
        self.sync_os_routes().await;
        self.sync_forwarding();
    }

    /// DNS through the exit node in use (its overlay address, where it answers its peers),
    /// and this node answering its peers while it is an approved exit node.
    fn sync_exit_dns(&mut self) {
        let exit_dns = self
            .route_plan
            .exit
            .as_ref()
            .filter(|e| e.problem.is_none())
            .and_then(|e| e.key)
            .and_then(|k| {
                let peers = self.mapped.map_peers();
                let node = peers.into_iter().find(|n| n.node_key == k)?;
                let first_v4 = node.addresses.iter().find(|a| a.is_ipv4());
                first_v4.or(node.addresses.first()).copied()
            });
        self.names.use_exit_node(exit_dns);
        let serve = self
            .mapped
            .self_node()
            .filter(|me| me.is_exit_node())
            .map(|me| me.addresses.clone())
            .unwrap_or_default();
        self.names.serve_peers(serve);
    }

    /// The OS's routes for the plan while the tunnel is up.
    async fn sync_os_routes(&mut self) {
        let want = self.route_plan.os_routes();
        let exit = want.iter().any(|n| n.prefix_len() == 0);
        let bypass = if exit {
            self.control_addresses().await
        } else {
            Vec::new()
        };
        let allow_lan = self.prefs.exit_node_allow_lan;
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        self.routes_error = dp
            .table
            .sync(&want, allow_lan, &bypass)
            .err()
            .map(|e| format!("{e:#}"));
        if let Some(e) = &self.routes_error {
            tracing::warn!("routes: {e}");
        }
    }

    /// Forwarding on while the tunnel is up and control approved routes this node offers.
    fn sync_forwarding(&mut self) {
        let approved: Vec<IpNet> = self
            .mapped
            .self_node()
            .map(|n| n.routes.clone())
            .unwrap_or_default();
        let mesh = self.addresses();
        let Some(dp) = &mut self.dataplane else {
            return;
        };
        match (&dp.forwarding, approved.is_empty()) {
            // Failed for these routes already: tried again when they change or the tunnel
            // comes up again.
            (None, false) if self.forwarding_tried == approved => {}
            (None, false) => {
                self.forwarding_tried = approved.clone();
                let v6 = approved.iter().any(|n| n.addr().is_ipv6());
                match Forwarding::enable(&self.args.state_dir, &dp.name, &mesh, v6) {
                    Ok(f) => {
                        dp.forwarding = Some(f);
                        self.forwarding_error = None;
                        self.forwarding_tried.clear();
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        if self.forwarding_error.as_ref() != Some(&e) {
                            tracing::warn!("cannot forward for peers: {e}");
                        }
                        self.forwarding_error = Some(e);
                    }
                }
            }
            (Some(_), true) => {
                if let Some(f) = dp.forwarding.take() {
                    f.disable();
                }
            }
            (None, true) => {
                self.forwarding_tried.clear();
                self.forwarding_error = None;
            }
            _ => {}
        }
    }

    /// The coordination server's addresses (always reached outside the tunnel), kept per URL.
    async fn control_addresses(&mut self) -> Vec<IpAddr> {
        let Some(base) = self.machine.registration().map(|r| r.control_url.clone()) else {
            return Vec::new();
        };
        if let Some((cached, ips)) = &self.control_ips {
            if *cached == base {
                return ips.clone();
            }
        }
        let ips = lookup_control(&base).await;
        if !ips.is_empty() {
            self.control_ips = Some((base, ips.clone()));
        }
        ips
    }

    /// `pinhole up --accept-routes / --exit-node / --exit-node-allow-lan`: an exit node must be
    /// a peer of the map that offers one, approved (refused in words otherwise, nothing
    /// changed); then remembered and applied at once.
    pub(super) async fn set_route_use(
        &mut self,
        accept_routes: Option<bool>,
        exit_node: Option<String>,
        allow_lan: Option<bool>,
    ) -> Result<(), pinhole_proto::ipc::IpcError> {
        let exit_node = exit_node.map(|e| {
            let e = e.trim().to_string();
            (!e.is_empty() && !e.eq_ignore_ascii_case("none")).then_some(e)
        });
        if let Some(Some(asked)) = &exit_node {
            self.check_exit_node(asked)?;
        }
        self.prefs
            .set_route_use(accept_routes, exit_node.clone(), allow_lan);
        if let Some(e) = exit_node {
            match e {
                Some(e) => {
                    tracing::info!(exit_node = %e, "all internet traffic goes through the exit node")
                }
                None => tracing::info!("no exit node: internet traffic leaves directly"),
            }
        }
        self.sync_routes().await;
        Ok(())
    }

    fn check_exit_node(&self, asked: &str) -> Result<(), pinhole_proto::ipc::IpcError> {
        if !self.mapped.has_map {
            return Err(failure(
                "no-map",
                "not signed in (or no map from the coordination server yet): cannot check the exit node",
            ));
        }
        if self
            .mapped
            .self_node()
            .is_some_and(|me| route_plan::names(me, asked))
        {
            return Err(failure(
                "bad-exit-node",
                "this node cannot be its own exit node",
            ));
        }
        let peers = self.mapped.map_peers();
        let Some(node) = peers.iter().find(|n| route_plan::names(n, asked)) else {
            return Err(failure(
                "bad-exit-node",
                format!("no peer is named {asked} (see `pinhole status`)"),
            ));
        };
        if !node.is_exit_node() {
            return Err(failure(
                "bad-exit-node",
                format!(
                    "{} is not an exit node: it must offer one (`pinhole up --advertise-exit-node` there) and the server approve it (`pinhole-control route approve {} exit`)",
                    node.name, node.name
                ),
            ));
        }
        Ok(())
    }
}

impl Daemon<'_> {
    /// Tells control what this node forwards now: its offer while the tunnel is up, nothing
    /// while it is down (peers then fail over to another router at once). In the background,
    /// one at a time in order; a failure is logged (the next registration sends the offer).
    pub(super) fn publish_offer(&mut self, serving: bool) {
        let offered = self.prefs.offered_routes();
        if offered.is_empty() {
            return;
        }
        let (Some(l), Some(r)) = (&self.link, self.machine.registration()) else {
            return;
        };
        let (client, token) = (l.client.clone(), r.node_token.clone());
        let routes = if serving { offered } else { Vec::new() };
        let order = self.offer_order.clone();
        tokio::spawn(async move {
            let _turn = order.lock().await;
            let upd = pinhole_proto::control::NodeUpdate {
                advertised_routes: Some(routes),
                ..Default::default()
            };
            let sent = tokio::time::timeout(Duration::from_secs(10), client.update(&token, &upd));
            match sent.await {
                Ok(Ok(_)) => tracing::info!(serving, "routes offered to peers: {}", if serving { "yes" } else { "no (the tunnel is down)" }),
                Ok(Err(e)) => tracing::warn!("telling the coordination server which routes this node forwards: {e}"),
                Err(_) => tracing::warn!("telling the coordination server which routes this node forwards: no answer within 10 s"),
            }
        });
    }
}

/// Logs which routes moved to which router, and the exit node's state.
fn log_changes(old: &RoutePlan, new: &RoutePlan, mapped: &MappedPeers) {
    let name = |k: &Key| {
        mapped
            .map_peers()
            .into_iter()
            .find(|n| n.node_key == *k)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| k.short())
    };
    for (key, nets) in &new.assigned {
        for net in nets.iter().filter(|n| n.prefix_len() != 0) {
            match old.router_of(net) {
                Some(k) if k == *key => {}
                Some(k) => {
                    tracing::info!(route = %net, from = %name(&k), to = %name(key), "route moved to another router")
                }
                None => tracing::info!(route = %net, router = %name(key), "route in use"),
            }
        }
    }
    for (key, nets) in &old.assigned {
        for net in nets.iter().filter(|n| n.prefix_len() != 0) {
            if new.router_of(net).is_none() {
                tracing::info!(route = %net, router = %name(key), "route no longer in use");
            }
        }
    }
    if old.exit != new.exit {
        match &new.exit {
            Some(e) => match &e.problem {
                None => tracing::info!(
                    exit_node = e.name.as_deref().unwrap_or(&e.asked),
                    "internet traffic goes through the exit node"
                ),
                Some(p) => tracing::warn!("{p}"),
            },
            None if old.exit.is_some() => tracing::info!("no exit node any more"),
            None => {}
        }
    }
}

/// The addresses of the coordination server at `base` (looked up when its URL names a host,
/// bounded at 2 s; none if unknown).
async fn lookup_control(base: &str) -> Vec<IpAddr> {
    let Ok(url) = reqwest::Url::parse(base) else {
        return Vec::new();
    };
    let Some(host) = url.host_str() else {
        return Vec::new();
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::net::lookup_host((host, port));
    match tokio::time::timeout(Duration::from_secs(2), lookup).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.sort();
            ips.dedup();
            ips
        }
        _ => Vec::new(),
    }
}

impl Daemon<'_> {
    /// What the status shows of routes.
    pub(super) fn route_view(&self) -> crate::local_api::status::RouteView {
        let plan = &self.route_plan;
        let mut in_use: std::collections::HashMap<Key, Vec<String>> = plan
            .assigned
            .iter()
            .map(|(k, nets)| (*k, nets.iter().map(|n| n.to_string()).collect()))
            .collect();
        in_use.retain(|_, v| !v.is_empty());
        let error = match (&self.routes_error, &self.forwarding_error) {
            (Some(r), Some(f)) => Some(format!("{r}; {f}")),
            (Some(e), None) | (None, Some(e)) => Some(e.clone()),
            (None, None) => None,
        };
        crate::local_api::status::RouteView {
            advertised: self
                .prefs
                .offered_routes()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            accept_routes: self.prefs.accept_routes,
            exit_node: plan
                .exit
                .as_ref()
                .map(|e| pinhole_proto::ipc::ExitNodeStatus {
                    name: e.name.clone().unwrap_or_else(|| e.asked.clone()),
                    in_use: e.problem.is_none(),
                    allow_lan: self.prefs.exit_node_allow_lan,
                    problem: e.problem.clone(),
                }),
            error,
            in_use,
        }
    }
}
