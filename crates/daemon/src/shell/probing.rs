//! Netcheck as the loop runs it: preparations handed over, STUN probes out of the node's own
//! socket, the public addresses they find published, and a network change followed.

use super::*;

impl Daemon<'_> {
    /// A netcheck whose preparation is done: its STUN probes start, or join those in flight.
    pub(super) fn netcheck_prepared(
        &mut self,
        prepared: netcheck::Prepared,
        reply: Option<oneshot::Sender<Answer>>,
    ) {
        let now = Instant::now();
        match &mut self.probing {
            Some(p) => p.waiters.push((prepared, reply)),
            None => {
                let netcheck = Netcheck::new(now, prepared.servers.clone(), rand::random());
                self.probing = Some(Probing {
                    netcheck,
                    waiters: vec![(prepared, reply)],
                });
            }
        }
    }

    /// Sends due STUN retries; answers everyone waiting once the probes are done.
    pub(super) async fn netcheck_timeout(&mut self, now: Instant) {
        let Some(p) = &mut self.probing else {
            return;
        };
        p.netcheck.handle_timeout(now);
        if !p.netcheck.is_done(now) {
            // The public addresses are published as soon as every server answered (the
            // hairpin probe's wait must not hold them back).
            if p.netcheck.all_answered() {
                let public = p.netcheck.report().public;
                self.publish_reflexive(&public);
            }
            return;
        }
        let Some(p) = self.probing.take() else {
            return;
        };
        let found = p.netcheck.report();
        self.reporter.set_nat(Nat {
            mapping_varies_by_dest: found.mapping_varies_by_dest,
            udp: found.udp,
        });
        self.publish_reflexive(&found.public);
        if let Some(map) = self.mapped.relay_map() {
            let regions = map.regions.iter().map(|r| r.code.clone()).collect();
            let latencies = best_latencies(&found);
            self.feed(Input::NetcheckDone { latencies, regions }).await;
        }
        self.publish();
        for (prepared, reply) in p.waiters {
            if let Some(reply) = reply {
                let report = netcheck::report(&prepared, &found);
                let _ = reply.send(Ok(serde_json::to_value(&report).unwrap_or_default()));
            }
        }
    }

    /// This node's addresses as STUN servers saw them, for the map-stream task to publish:
    /// only when they changed (a netcheck without answers keeps the last ones).
    pub(super) fn publish_reflexive(&self, public: &[SocketAddr]) {
        if public.is_empty() {
            return;
        }
        self.reflexive.send_if_modified(|seen| {
            let changed = seen.as_slice() != public;
            if changed {
                *seen = public.to_vec();
            }
            changed
        });
    }

    /// Gathers what a netcheck needs off the loop, then probes from the loop; `reply` is the
    /// client waiting for the report (none for the daemon's own periodic check).
    pub(super) fn start_netcheck(&mut self, reply: Option<oneshot::Sender<Answer>>) {
        let input = netcheck::Input {
            port: self.local.port(),
            skip: self
                .machine
                .registration()
                .map(|r| r.addresses.clone())
                .unwrap_or_default(),
            client: self
                .link
                .as_ref()
                .map(|l| l.client.clone())
                .or_else(|| self.machine.last_server().and_then(|u| self.client(u).ok())),
            relay_map: self.mapped.relay_map().cloned(),
            port_mapping: self.port_mapping_check(),
        };
        let back = self.netcheck_tx.clone();
        tokio::spawn(async move {
            let prepared = netcheck::prepare(input).await;
            let _ = back.send((prepared, reply)).await;
        });
    }

    /// Another network: measure the NAT again, publish the endpoints again, and let every
    /// active peer's path be checked now.
    pub(super) async fn network_moved(&mut self) {
        self.feed(Input::NetworkChanged).await;
        if let Some(pm) = &self.portmapper {
            let _ = pm.commands.try_send(portmap::Command::Refresh);
        }
        self.network_changed.notify_one();
        self.engine.network_changed(Instant::now());
    }
}

pub(super) fn best_latencies(found: &pinhole_engine::NetcheckReport) -> Vec<(String, Duration)> {
    let mut latencies: Vec<(String, Duration)> = Vec::new();
    for p in &found.probes {
        let Some(l) = p.latency else { continue };
        match latencies.iter_mut().find(|(r, _)| *r == p.server.region) {
            Some((_, best)) => *best = (*best).min(l),
            None => latencies.push((p.server.region.clone(), l)),
        }
    }
    latencies
}
