//! Netcheck as the loop runs it: [`Probes`], the handle that holds the STUN probes in flight
//! (preparations handed over from their task, probes out of the node's own socket, answers in,
//! the report when done), and the loop's side: starting a netcheck, publishing the public
//! addresses found, telling the machine and the waiting clients, following a network change.

use super::*;

/// A netcheck prepared off the loop (DNS, the control check, local endpoints) and the client
/// waiting for its report (none for the daemon's own periodic check).
type Prepared = (netcheck::Prepared, Option<oneshot::Sender<Answer>>);

/// The STUN probes of the netchecks under way: one set in flight at a time; a netcheck
/// prepared meanwhile waits for its report.
pub(super) struct Probes {
    tx: mpsc::Sender<Prepared>,
    rx: mpsc::Receiver<Prepared>,
    in_flight: Option<InFlight>,
}

struct InFlight {
    netcheck: Netcheck,
    waiters: Vec<Prepared>,
}

/// What a wake-up brought.
pub(super) enum Progress {
    /// Nothing new (or nothing under way).
    Waiting,
    /// Every server answered; the probes go on (the hairpin check) but the public addresses
    /// are known.
    Answered(Vec<SocketAddr>),
    /// Done: the report, and the netchecks that wait for it.
    Done(pinhole_engine::NetcheckReport, Vec<Prepared>),
}

impl Probes {
    pub(super) fn new() -> Self {
        let (tx, rx) = mpsc::channel(4);
        Probes {
            tx,
            rx,
            in_flight: None,
        }
    }

    /// Where a preparing task hands its netcheck over.
    pub(super) fn sender(&self) -> mpsc::Sender<Prepared> {
        self.tx.clone()
    }

    /// The next netcheck whose preparation is done.
    pub(super) async fn recv(&mut self) -> Option<Prepared> {
        self.rx.recv().await
    }

    /// A prepared netcheck: its probes start, or it waits for those in flight.
    pub(super) fn handle_prepared(&mut self, now: Instant, prepared: Prepared) {
        match &mut self.in_flight {
            Some(p) => p.waiters.push(prepared),
            None => {
                let netcheck = Netcheck::new(now, prepared.0.servers.clone(), rand::random());
                self.in_flight = Some(InFlight {
                    netcheck,
                    waiters: vec![prepared],
                });
            }
        }
    }

    /// A STUN datagram from the network (dropped when no probe is in flight).
    pub(super) fn handle_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Some(p) = &mut self.in_flight {
            p.netcheck.handle_stun(now, from, data);
        }
    }

    /// A probe to send from the node's socket.
    pub(super) fn poll_transmit(&mut self) -> Option<pinhole_engine::Transmit> {
        self.in_flight.as_mut()?.netcheck.poll_transmit()
    }

    /// When the probes next want a wake-up.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref()?.netcheck.poll_timeout()
    }

    /// Retries what is due; says what is known now.
    pub(super) fn handle_timeout(&mut self, now: Instant) -> Progress {
        let Some(p) = &mut self.in_flight else {
            return Progress::Waiting;
        };
        p.netcheck.handle_timeout(now);
        if !p.netcheck.is_done(now) {
            // The public addresses are published as soon as every server answered (the
            // hairpin probe's wait must not hold them back).
            if p.netcheck.all_answered() {
                return Progress::Answered(p.netcheck.report().public);
            }
            return Progress::Waiting;
        }
        match self.in_flight.take() {
            Some(p) => Progress::Done(p.netcheck.report(), p.waiters),
            None => Progress::Waiting,
        }
    }
}

impl Daemon<'_> {
    /// Sends due STUN retries; answers everyone waiting once the probes are done.
    pub(super) async fn netcheck_timeout(&mut self, now: Instant) {
        let (found, waiters) = match self.probes.handle_timeout(now) {
            Progress::Waiting => return,
            Progress::Answered(public) => {
                self.publish_reflexive(&public);
                return;
            }
            Progress::Done(found, waiters) => (found, waiters),
        };
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
        for (prepared, reply) in waiters {
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
            port_mapping: self.port_mapping.check(),
        };
        let back = self.probes.sender();
        tokio::spawn(async move {
            let prepared = netcheck::prepare(input).await;
            let _ = back.send((prepared, reply)).await;
        });
    }

    /// Another network: measure the NAT again, publish the endpoints again, and let every
    /// active peer's path be checked now.
    pub(super) async fn network_moved(&mut self) {
        self.feed(Input::NetworkChanged).await;
        self.port_mapping.refresh();
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

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_engine::StunServer;
    use pinhole_proto::stun::{self, Message};

    const SERVER: &str = "192.0.2.10:3478";
    const PUBLIC: &str = "198.51.100.4:41641";

    fn prepared(reply: Option<oneshot::Sender<Answer>>) -> Prepared {
        let server = StunServer {
            region: "lab".into(),
            addr: SERVER.parse().unwrap(),
        };
        (netcheck::Prepared::with_servers(vec![server]), reply)
    }

    /// Answers every binding request the probes send to the server, as it would; the hairpin
    /// check (to the node's own public address) is lost, as behind a NAT without hairpinning.
    fn answer_all(probes: &mut Probes, now: Instant) -> usize {
        let mut answered = 0;
        while let Some(t) = probes.poll_transmit() {
            if t.dst == PUBLIC.parse().unwrap() {
                continue;
            }
            assert_eq!(
                t.dst,
                SERVER.parse().unwrap(),
                "probes go to the server only"
            );
            let Ok(Message::BindingRequest { tx, .. }) = stun::parse(&t.payload) else {
                continue;
            };
            let answer = stun::binding_success(tx, PUBLIC.parse().unwrap(), None, None, true);
            probes.handle_stun(now, t.dst, &answer);
            answered += 1;
        }
        answered
    }

    #[test]
    fn nothing_under_way_sends_nothing_and_wants_no_wake_up() {
        let mut probes = Probes::new();
        assert!(probes.poll_transmit().is_none());
        assert!(probes.poll_timeout().is_none());
        assert!(matches!(
            probes.handle_timeout(Instant::now()),
            Progress::Waiting
        ));
        // A stray STUN answer changes nothing.
        let stray = stun::binding_success([1; 12], PUBLIC.parse().unwrap(), None, None, true);
        probes.handle_stun(Instant::now(), SERVER.parse().unwrap(), &stray);
        assert!(probes.poll_timeout().is_none());
    }

    #[test]
    fn answers_publish_the_public_address_and_one_report_serves_every_waiter() {
        let t0 = Instant::now();
        let mut probes = Probes::new();
        let (first, _first_rx) = oneshot::channel();
        probes.handle_prepared(t0, prepared(Some(first)));
        assert!(
            probes.poll_timeout().is_some(),
            "probes in flight want wake-ups"
        );
        // A netcheck asked meanwhile joins the probes in flight (no second set).
        probes.handle_prepared(t0, prepared(None));
        assert!(answer_all(&mut probes, t0) > 0, "the probes went out");
        assert!(probes.poll_transmit().is_none());
        let mut public = None;
        let mut done = None;
        let mut now = t0;
        for _ in 0..200 {
            now += Duration::from_millis(50);
            match probes.handle_timeout(now) {
                Progress::Waiting => {}
                Progress::Answered(p) => public = Some(p),
                Progress::Done(report, waiters) => {
                    done = Some((report, waiters));
                    break;
                }
            }
            answer_all(&mut probes, now);
        }
        let (report, waiters) = done.expect("the netcheck ends");
        let want: SocketAddr = PUBLIC.parse().unwrap();
        assert_eq!(report.public, vec![want]);
        // The hairpin check's wait does not hold the public address back.
        assert_eq!(public, Some(vec![want]), "published before the end");
        assert_eq!(waiters.len(), 2, "both netchecks get the report");
        assert!(waiters[0].1.is_some() && waiters[1].1.is_none());
        assert!(probes.poll_timeout().is_none(), "nothing left in flight");
    }
}
