//! The description of a lab: hosts, links with addresses, and routes.

/// One veth link between two hosts, with the interface name and addresses on each side.
#[derive(Debug, Clone)]
pub(crate) struct LinkSpec {
    pub a: String,
    pub a_if: String,
    pub a_addrs: Vec<String>,
    pub b: String,
    pub b_if: String,
    pub b_addrs: Vec<String>,
}

/// A route on a host: destination (`default` or a prefix) via a gateway address.
#[derive(Debug, Clone)]
pub(crate) struct RouteSpec {
    pub host: String,
    pub dst: String,
    pub via: String,
}

/// What a lab is made of, built up with chained calls.
///
/// ```
/// let t = pinhole_netlab::Topology::new()
///     .host("a")
///     .host("b")
///     .link("a", &["10.0.0.1/24"], "b", &["10.0.0.2/24"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub(crate) hosts: Vec<String>,
    pub(crate) links: Vec<LinkSpec>,
    pub(crate) routes: Vec<RouteSpec>,
    pub(crate) forwarding: Vec<String>,
}

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    /// A host: a network namespace with loopback up.
    pub fn host(mut self, name: &str) -> Self {
        self.hosts.push(name.to_string());
        self
    }

    /// A host that forwards packets between its links (IPv4 and IPv6).
    pub fn router(mut self, name: &str) -> Self {
        self.hosts.push(name.to_string());
        self.forwarding.push(name.to_string());
        self
    }

    /// A veth link between `a` and `b`, named `eth<N>` on each side (N counts that host's links).
    pub fn link(mut self, a: &str, a_addrs: &[&str], b: &str, b_addrs: &[&str]) -> Self {
        let a_if = format!("eth{}", self.link_count(a));
        let b_if = format!("eth{}", self.link_count(b));
        self.links.push(LinkSpec {
            a: a.into(),
            a_if,
            a_addrs: a_addrs.iter().map(|s| s.to_string()).collect(),
            b: b.into(),
            b_if,
            b_addrs: b_addrs.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// A veth link between `a` and `b` with the interface names given (for rules that name
    /// them, such as a NAT router's `wan` and `lan0`).
    pub fn link_named(
        mut self,
        a: &str,
        a_if: &str,
        a_addrs: &[&str],
        b: &str,
        b_if: &str,
        b_addrs: &[&str],
    ) -> Self {
        self.links.push(LinkSpec {
            a: a.into(),
            a_if: a_if.into(),
            a_addrs: a_addrs.iter().map(|s| s.to_string()).collect(),
            b: b.into(),
            b_if: b_if.into(),
            b_addrs: b_addrs.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// A route on `host` to `dst` (`default` or a prefix) via the gateway `via`.
    pub fn route(mut self, host: &str, dst: &str, via: &str) -> Self {
        self.routes.push(RouteSpec {
            host: host.into(),
            dst: dst.into(),
            via: via.into(),
        });
        self
    }

    fn link_count(&self, host: &str) -> usize {
        self.links
            .iter()
            .filter(|l| l.a == host || l.b == host)
            .count()
    }
}
