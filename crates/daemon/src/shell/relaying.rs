//! The relay links as the loop drives them: what arrives from a relay, and which relays to
//! keep connected (the home region and every region a peer is reached through).

use super::*;

impl Daemon<'_> {
    /// Something from a relay connection: a packet for the engine, or a change to show.
    pub(super) fn relay_event(&mut self, inc: relay_link::Incoming) {
        match inc.event {
            RelayEvent::Packet { from, packet } => {
                self.engine
                    .handle_relay(Instant::now(), &inc.region, from, &packet)
            }
            RelayEvent::PeerGone { key } => {
                tracing::debug!(region = %inc.region, peer = %key.short(), "peer not at the relay")
            }
            RelayEvent::Connected | RelayEvent::Disconnected { .. } => self.publish(),
        }
    }

    /// Relay connections follow the map, the home region and the tunnel: the home relay is
    /// connected while the tunnel is up (peers reach this node there), none while it is down.
    pub(super) fn sync_relays(&mut self) {
        let base = self.link.as_ref().map(|l| l.client.base_url().to_string());
        self.relays
            .set_map(self.mapped.relay_map(), base.as_deref());
        if self.dataplane.is_none() {
            self.relays.close_all();
            return;
        }
        let home = self.machine.home_relay().map(str::to_string);
        if let Some(home) = &home {
            self.relays.ensure(home);
        }
        for region in
            self.relays
                .close_idle(home.as_deref(), Instant::now(), relay_link::RELAY_IDLE)
        {
            tracing::debug!(%region, "relay connection closed: idle");
        }
    }
}
