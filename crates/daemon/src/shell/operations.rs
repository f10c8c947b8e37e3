//! The local API's operations carried out by the loop (up, down, login, logout, ping,
//! netcheck, status), and `pinhole ping`'s answers.

use super::*;

impl Daemon<'_> {
    pub(super) async fn command(&mut self, c: Command) {
        let Command { op, reply } = c;
        match op {
            Op::Up {
                credential,
                accept_dns,
                advertise_tags,
                advertise_routes,
                advertise_exit_node,
                accept_routes,
                exit_node,
                exit_node_allow_lan,
            } => {
                if let Some(tags) = advertise_tags {
                    if let Err(e) = self.set_tags(tags).await {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                if advertise_routes.is_some() || advertise_exit_node.is_some() {
                    let r = self.set_routes(advertise_routes, advertise_exit_node).await;
                    if let Err(e) = r {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                if accept_routes.is_some() || exit_node.is_some() || exit_node_allow_lan.is_some() {
                    let r = self
                        .set_route_use(accept_routes, exit_node, exit_node_allow_lan)
                        .await;
                    if let Err(e) = r {
                        let _ = reply.send(Err(e));
                        return;
                    }
                }
                if let Some(on) = accept_dns {
                    self.prefs.set_accept_dns(on);
                }
                self.feed(Input::Up { credential, reply }).await;
                self.sync_os_dns();
            }
            Op::Down => {
                self.feed(Input::Down { reply }).await;
                tracing::info!("the tunnel is down; `pinhole up` brings it back");
            }
            Op::Login {
                server,
                auth_key,
                credential,
                hostname,
            } => {
                let input = Input::Login {
                    server,
                    auth_key,
                    credential,
                    hostname,
                    reply,
                };
                self.feed(input).await
            }
            Op::Logout { credential } => self.feed(Input::Logout { credential, reply }).await,
            Op::Ping { peer, timeout_ms } => self.ping(&peer, timeout_ms, reply),
            Op::Netcheck => self.start_netcheck(Some(reply)),
            // The local API answers these itself; it asks first for a status up to date.
            Op::Status | Op::Subscribe => {
                self.rebuild_status();
                let _ = reply.send(Ok(serde_json::Value::Null));
            }
            Op::Logs { .. } => {
                let _ = reply.send(Err(failure(
                    "bad-request",
                    "logs are answered by the local API itself",
                )));
            }
        }
    }

    pub(super) fn ping(
        &mut self,
        what: &str,
        timeout_ms: Option<u64>,
        reply: oneshot::Sender<Answer>,
    ) {
        if self.dataplane.is_none() {
            let _ = reply.send(Err(failure(
                "not-up",
                "the tunnel is down: run `pinhole up` first",
            )));
            return;
        }
        let (key, name, addresses) = match self.mapped.find(what) {
            Some(n) => (n.node_key, n.name.clone(), n.addresses.clone()),
            None => match self.static_peer(what) {
                Some(found) => found,
                None => {
                    let _ = reply.send(Err(failure(
                        "no-such-peer",
                        format!("no peer called {what:?}: `pinhole status` lists them"),
                    )));
                    return;
                }
            },
        };
        let src = self.addresses().iter().find_map(|n| match n.addr() {
            IpAddr::V4(a) => Some(a),
            _ => None,
        });
        let dst = addresses.iter().find_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            _ => None,
        });
        let (Some(src), Some(dst)) = (src, dst) else {
            let _ = reply.send(Err(failure(
                "no-ipv4",
                format!("{name} or this node has no IPv4 overlay address to ping"),
            )));
            return;
        };
        let timeout = timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(PING_TIMEOUT)
            .clamp(Duration::from_millis(10), Duration::from_secs(30));
        let now = Instant::now();
        let target = Target {
            peer: key,
            name,
            src,
            dst,
        };
        let packet = self.pinger.request(now, target, timeout, reply);
        self.engine.handle_tun(now, &packet);
    }

    /// A static-mode peer by node key or address.
    pub(super) fn static_peer(&self, what: &str) -> Option<(Key, String, Vec<IpAddr>)> {
        let Mode::Static { peers, .. } = &self.mode else {
            return None;
        };
        peers
            .iter()
            .find(|p| {
                p.public_key.to_base64().starts_with(what)
                    || p.allowed_ips.iter().any(|n| n.addr().to_string() == what)
            })
            .map(|p| {
                (
                    p.public_key,
                    p.public_key.short(),
                    p.allowed_ips.iter().map(|n| n.addr()).collect(),
                )
            })
    }
}

/// The best latency per relay region that answered a netcheck.
/// Why a ping to a peer got no reply, from its path and whether a handshake was made.
pub(super) fn no_reply_why(path: &pinhole_engine::Path, handshake: bool) -> String {
    use pinhole_engine::Path;
    match (path, handshake) {
        (Path::None, _) => "no endpoint or relay known for the peer yet".to_string(),
        (Path::Direct(ep), false) => format!("no handshake with {ep} yet"),
        (Path::Relayed(r), false) => format!("no handshake through relay {r} yet"),
        (Path::Direct(ep), true) => format!("path direct {ep}"),
        (Path::Relayed(r), true) => format!("path relayed via {r}"),
    }
}
