//! The status the local API serves: the headline and the full status, rebuilt when someone
//! watches.

use super::*;

impl Daemon<'_> {
    pub(super) fn headline(&self) -> Headline {
        crate::local_api::headline::headline(&crate::local_api::headline::Facts {
            static_config: matches!(self.mode, Mode::Static { .. }),
            signing_in: self.machine.signing_in(),
            signed_in: self.machine.signed_in(),
            signed_out: self.machine.signed_out(),
            login_error: self.machine.login_error(),
            tunnel_up: self.dataplane.is_some(),
            tun_error: self.machine.tun_error(),
            has_map: self.mapped.has_map,
            unreachable: self.mapped.unreachable.as_deref(),
        })
    }

    /// Relay connections follow what changed; the status is rebuilt while a local API client
    /// is connected (with 10,000 peers a rebuild is several milliseconds of work, every second).
    pub(super) fn publish(&mut self) {
        self.sync_relays();
        if self.reporter.watched() {
            self.rebuild_status();
        }
    }

    pub(super) fn rebuild_status(&mut self) {
        let head = self.headline();
        let relay_errors = self.relays.errors();
        let dns = self.mapped.has_map.then(|| {
            let mut s = self.names.status();
            s.os = match &self.os_dns_error {
                _ if !self.prefs.accept_dns => {
                    "left alone (pinhole up --accept-dns=false): names answer at 100.100.100.100 only"
                        .to_string()
                }
                Some(e) => format!("not configured: {e}"),
                None => self.os_dns.describe(),
            };
            s
        });
        self.reporter.set_routes(self.route_view());
        self.reporter
            .publish(head, &self.engine, &self.mapped, &relay_errors, dns);
    }
}
