//! What the user asked for that outlives a restart: whether the tunnel should be up, whether
//! the system's resolver is pointed at the DNS server inside it, and the tags the node asks for.

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
    #[serde(skip)]
    path: PathBuf,
}

impl Prefs {
    /// The saved preferences, or the defaults (up, DNS on) if there are none or they are
    /// unreadable.
    pub fn load(state_dir: &Path) -> Prefs {
        let path = state_dir.join(FILE);
        let saved = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Prefs>(&b).ok());
        Prefs {
            want_up: saved.as_ref().is_none_or(|p| p.want_up),
            accept_dns: saved.as_ref().is_none_or(|p| p.accept_dns),
            advertise_tags: saved.map(|p| p.advertise_tags).unwrap_or_default(),
            path,
        }
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
        let _ = std::fs::remove_dir_all(&d);
    }
}
