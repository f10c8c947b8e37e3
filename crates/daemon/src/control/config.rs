//! Reads the WireGuard-format configuration file into engine settings.

use anyhow::{Context, Result};
use pinhole_engine::PeerSettings;
use pinhole_proto::wgconf::WgConfig;
use std::path::Path;

/// Reads and parses `path`; errors name the file and the line.
pub fn load(path: &Path) -> Result<WgConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    WgConfig::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The engine's view of the file's peers.
pub fn peers(config: &WgConfig) -> Vec<PeerSettings> {
    config
        .peers
        .iter()
        .map(|p| PeerSettings {
            public_key: p.public_key,
            preshared_key: p.preshared_key,
            allowed_ips: p.allowed_ips.clone(),
            endpoint: p.endpoint,
            candidates: Vec::new(),
            disco_key: None,
            persistent_keepalive: p.persistent_keepalive,
            relay: None,
        })
        .collect()
}
