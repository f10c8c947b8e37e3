//! What the user asked for that outlives a restart: whether the tunnel should be up, whether
//! the system's resolver is pointed at the DNS server inside it, the tags the node asks for and
//! the routes it offers, and the peers' routes and exit node it uses.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE: &str = "prefs.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    pub want_up: bool,
    #[serde(default = "yes")]
    pub accept_dns: bool,
    /// Tags this node asks control for (`pinhole up --advertise-tags`).
    #[serde(default)]
    pub advertise_tags: Vec<String>,
    /// Networks this node offers to forward (`pinhole up --advertise-routes`).
    #[serde(default)]
    pub advertise_routes: Vec<ipnet::IpNet>,
    /// Whether it offers to be an exit node (`pinhole up --advertise-exit-node`).
    #[serde(default)]
    pub advertise_exit_node: bool,
    /// Whether peers' approved routes are used (`pinhole up --accept-routes`).
    #[serde(default)]
    pub accept_routes: bool,
    /// The exit node all internet traffic goes through, as the user named it (`--exit-node`).
    #[serde(default)]
    pub exit_node: Option<String>,
    /// Whether the local network stays reachable directly while an exit node is used.
    #[serde(default)]
    pub exit_node_allow_lan: bool,
    #[serde(skip)]
    path: PathBuf,
}

impl Prefs {
    /// The saved preferences, or the defaults (up, DNS on, no routes) if there are none or
    /// they are unreadable.
    pub fn load(state_dir: &Path) -> Prefs {
        let path = state_dir.join(FILE);
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Prefs>(&b).ok());
        match saved {
            Some(p) => Prefs { path, ..p },
            None => Prefs {
                want_up: true,
                accept_dns: true,
                advertise_tags: Vec::new(),
                advertise_routes: Vec::new(),
                advertise_exit_node: false,
                accept_routes: false,
                exit_node: None,
                exit_node_allow_lan: false,
                path,
            },
        }
    }

    /// `pinhole up --accept-routes/--exit-node/--exit-node-allow-lan`: what is given changes.
    pub fn set_route_use(
        &mut self,
        accept_routes: Option<bool>,
        exit_node: Option<Option<String>>,
        allow_lan: Option<bool>,
    ) {
        if let Some(on) = accept_routes {
            self.accept_routes = on;
        }
        if let Some(e) = exit_node {
            self.exit_node = e;
        }
        if let Some(on) = allow_lan {
            self.exit_node_allow_lan = on;
        }
        self.save();
    }

    pub fn set_want_up(&mut self, up: bool) {
        self.want_up = up;
        self.save();
    }

    pub fn set_accept_dns(&mut self, on: bool) {
        self.accept_dns = on;
        self.save();
    }

    pub fn set_advertise_tags(&mut self, tags: Vec<String>) {
        self.advertise_tags = tags;
        self.save();
    }

    pub fn set_advertised_routes(&mut self, routes: Vec<ipnet::IpNet>, exit_node: bool) {
        self.advertise_routes = routes;
        self.advertise_exit_node = exit_node;
        self.save();
    }

    /// Everything this node offers control: its routes, and both default routes as an exit node.
    pub fn offered_routes(&self) -> Vec<ipnet::IpNet> {
        Prefs::offered(&self.advertise_routes, self.advertise_exit_node)
    }

    /// What a node with these routes, and an exit node or not, offers control.
    pub fn offered(routes: &[ipnet::IpNet], exit_node: bool) -> Vec<ipnet::IpNet> {
        let mut out = routes.to_vec();
        if exit_node {
            out.extend(
                ["0.0.0.0/0", "::/0"]
                    .iter()
                    .filter_map(|s| s.parse::<ipnet::IpNet>().ok()),
            );
        }
        out
    }

    /// Saves them; a failure is logged (the daemon still does what was asked).
    fn save(&self) {
        let r = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&self.path, b));
        if let Err(e) = r {
            tracing::warn!(file = %self.path.display(), "cannot save preferences: {e}");
        }
    }
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_is_remembered_and_garbage_means_up() {
        let d = std::env::temp_dir().join(format!("pinholed-prefs-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(Prefs::load(&d).want_up);
        Prefs::load(&d).set_want_up(false);
        assert!(!Prefs::load(&d).want_up);
        std::fs::write(d.join(FILE), "garbage").unwrap();
        assert!(Prefs::load(&d).want_up);
        // DNS is on unless turned off; an older file without the field means on.
        std::fs::write(d.join(FILE), r#"{"want_up":false}"#).unwrap();
        assert!(Prefs::load(&d).accept_dns && !Prefs::load(&d).want_up);
        Prefs::load(&d).set_accept_dns(false);
        let p = Prefs::load(&d);
        assert!(!p.accept_dns && !p.want_up);
        // Routes and the exit node are remembered and offered together.
        Prefs::load(&d).set_advertised_routes(vec!["192.168.7.0/24".parse().unwrap()], true);
        let p = Prefs::load(&d);
        let offered: Vec<String> = p.offered_routes().iter().map(|r| r.to_string()).collect();
        assert_eq!(offered, ["192.168.7.0/24", "0.0.0.0/0", "::/0"]);
        assert!(!p.accept_dns, "other preferences kept");
        // Using routes and an exit node is remembered; only what is given changes.
        Prefs::load(&d).set_route_use(Some(true), Some(Some("exit1".into())), None);
        Prefs::load(&d).set_route_use(None, None, Some(true));
        let p = Prefs::load(&d);
        assert!(p.accept_routes && p.exit_node_allow_lan);
        assert_eq!(p.exit_node.as_deref(), Some("exit1"));
        Prefs::load(&d).set_route_use(None, Some(None), None);
        assert_eq!(Prefs::load(&d).exit_node, None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
