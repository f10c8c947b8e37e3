//! The app's settings, kept as JSON in the user's config directory: the server signed in to
//! (remembered for the next sign-in), start at login, start minimised, connect on start and
//! which notifications to show. A missing or damaged file reads as the defaults.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ts_rs::TS)]
#[serde(default)]
pub struct Settings {
    /// The coordination server last signed in to (or typed in), offered at the next sign-in.
    pub server: Option<String>,
    pub start_at_login: bool,
    /// Start with the window hidden (in the tray).
    pub start_minimised: bool,
    /// Bring the tunnel up when the app starts and it is down.
    pub connect_on_start: bool,
    /// Notify when the session has expired (the tunnel needs a new sign-in).
    pub notify_session: bool,
    /// Notify when a peer's path falls back from direct to a relay.
    pub notify_relayed: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            start_at_login: false,
            start_minimised: false,
            connect_on_start: false,
            notify_session: true,
            notify_relayed: false,
        }
    }
}

/// Why the settings could not be saved.
#[derive(Debug, thiserror::Error)]
#[error("cannot save the settings to {}: {source}", path.display())]
pub struct SaveError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The settings file of this user: `PINHOLE_APP_CONFIG_DIR`, else the OS's config directory.
pub fn default_path() -> PathBuf {
    let dir = std::env::var_os("PINHOLE_APP_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            directories::ProjectDirs::from("dev", "pinhole", "Pinhole")
                .map(|d| d.config_dir().to_path_buf())
        })
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("settings.json")
}

/// The settings in `path`; the defaults when there are none or they cannot be read.
pub fn load(path: &Path) -> Settings {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!("ignoring damaged settings in {}: {e}", path.display());
            Settings::default()
        }),
        Err(_) => Settings::default(),
    }
}

/// Writes the settings to `path` (through a temporary file, so a crash never leaves half).
pub fn save(path: &Path, s: &Settings) -> Result<(), SaveError> {
    let err = |source| SaveError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    // Plain strings and booleans: always serialises.
    let text = serde_json::to_vec_pretty(s).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_a_round_trip_and_damage_reads_as_defaults() {
        let dir = std::env::temp_dir().join(format!("pinhole-app-settings-{}", std::process::id()));
        let path = dir.join("settings.json");
        assert_eq!(load(&path), Settings::default(), "nothing saved yet");
        let s = Settings {
            server: Some("https://control.example".into()),
            connect_on_start: true,
            ..Settings::default()
        };
        save(&path, &s).unwrap();
        assert_eq!(load(&path), s);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path), Settings::default());
        std::fs::write(&path, br#"{"server":"https://a.example"}"#).unwrap();
        assert_eq!(
            load(&path).server.as_deref(),
            Some("https://a.example"),
            "missing fields default"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
