//! The relay's counters, rendered in Prometheus' text format for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counters shared by every connection; all but `clients` only grow.
#[derive(Debug, Default)]
pub struct Metrics {
    pub clients: AtomicI64,
    pub accepted: AtomicU64,
    pub refused_unknown_key: AtomicU64,
    pub refused_bad_proof: AtomicU64,
    pub refused_control_unreachable: AtomicU64,
    pub refused_rate_limited: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub drops_queue_full: AtomicU64,
    pub drops_no_peer: AtomicU64,
    pub keepalives_in: AtomicU64,
}

/// Adds to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        metric(
            "pinhole_relay_clients",
            "gauge",
            "Clients connected and authenticated.",
            &[("", self.clients.load(Ordering::Relaxed).max(0) as u64)],
        );
        metric(
            "pinhole_relay_accepted_total",
            "counter",
            "Clients accepted after proving their key.",
            &[("", g(&self.accepted))],
        );
        metric(
            "pinhole_relay_refused_total",
            "counter",
            "Clients refused, by reason.",
            &[
                (r#"{reason="unknown_key"}"#, g(&self.refused_unknown_key)),
                (r#"{reason="bad_proof"}"#, g(&self.refused_bad_proof)),
                (
                    r#"{reason="control_unreachable"}"#,
                    g(&self.refused_control_unreachable),
                ),
                (r#"{reason="rate_limited"}"#, g(&self.refused_rate_limited)),
            ],
        );
        metric(
            "pinhole_relay_protocol_errors_total",
            "counter",
            "Connections closed for a malformed or oversized frame or silence.",
            &[("", g(&self.protocol_errors))],
        );
        metric(
            "pinhole_relay_received_packets_total",
            "counter",
            "Packets received from clients.",
            &[("", g(&self.packets_in))],
        );
        metric(
            "pinhole_relay_received_bytes_total",
            "counter",
            "Packet bytes received from clients.",
            &[("", g(&self.bytes_in))],
        );
        metric(
            "pinhole_relay_forwarded_packets_total",
            "counter",
            "Packets queued to their destination.",
            &[("", g(&self.packets_forwarded))],
        );
        metric(
            "pinhole_relay_forwarded_bytes_total",
            "counter",
            "Packet bytes queued to their destination.",
            &[("", g(&self.bytes_forwarded))],
        );
        metric(
            "pinhole_relay_dropped_packets_total",
            "counter",
            "Packets dropped, by reason.",
            &[
                (r#"{reason="queue_full"}"#, g(&self.drops_queue_full)),
                (r#"{reason="no_peer"}"#, g(&self.drops_no_peer)),
            ],
        );
        metric(
            "pinhole_relay_keepalives_received_total",
            "counter",
            "Keepalive frames received from clients.",
            &[("", g(&self.keepalives_in))],
        );
        s
    }
}
