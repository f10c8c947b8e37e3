//! The node's identity on disk: its private key (`node.key`) and what registration with the
//! coordination server returned (`control.json`: server URL, node id, addresses, node token).
//! Both files are the daemon's alone: mode 0600 inside the 0700 state directory.

use anyhow::{bail, Context, Result};
use pinhole_proto::key::{Key, PrivateKey};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const NODE_KEY_FILE: &str = "node.key";
const CONTROL_FILE: &str = "control.json";

/// What registration gave this node.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub control_url: String,
    pub node_key: Key,
    pub node_id: String,
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub node_token: String,
    /// Milliseconds since the Unix epoch after which the node must sign in again; none =
    /// never (registrations saved before this field read as none).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("control_url", &self.control_url)
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

/// Writes `bytes` to `path` with mode 0600, atomically (temporary file, then rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Makes sure an existing secret file is private (an operator may have copied it around).
fn restrict(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            tracing::warn!(file = %path.display(), "mode was {mode:o}: set to 600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join(NODE_KEY_FILE)
}

/// The node's private key, made on first start.
pub fn node_key(dir: &Path) -> Result<PrivateKey> {
    let path = key_path(dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            restrict(&path)?;
            PrivateKey::from_base64(&text).map_err(|e| {
                anyhow::anyhow!(
                    "the node key file {} is damaged ({e}): move it away to start as a new node",
                    path.display()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_private_key()?;
            write_private(&path, key.to_base64().as_bytes())?;
            tracing::info!(file = %path.display(), "new node key created");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the node key with a new one (after a logout, the next sign-in is a new node).
pub fn new_node_key(dir: &Path) -> Result<PrivateKey> {
    let key = random_private_key()?;
    write_private(&key_path(dir), key.to_base64().as_bytes())?;
    tracing::info!("node key replaced");
    Ok(key)
}

/// A fresh X25519 private key from the OS's random source.
pub fn random_private_key() -> Result<PrivateKey> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("the OS random source failed")?;
    Ok(pinhole_engine::private_key_from_bytes(bytes))
}

/// The saved registration, if any.
pub fn registration(dir: &Path) -> Result<Option<Registration>> {
    let path = dir.join(CONTROL_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            restrict(&path)?;
            match serde_json::from_slice(&bytes) {
                Ok(r) => Ok(Some(r)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "unreadable registration ({e}): signing in again");
                    Ok(None)
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn save_registration(dir: &Path, r: &Registration) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(r)?;
    write_private(&dir.join(CONTROL_FILE), &bytes)
}

/// Forgets the registration (the server removed the node).
pub fn forget_registration(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(CONTROL_FILE));
}

/// Reads an auth key from a file (its first line).
pub fn read_auth_key(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the auth key file {}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim().to_string();
    if key.is_empty() {
        bail!("the auth key file {} is empty", path.display());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pinholed-id-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn node_key_is_made_once_and_private() {
        let d = temp("key");
        let k1 = node_key(&d).unwrap();
        let k2 = node_key(&d).unwrap();
        assert_eq!(k1, k2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(NODE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(
                d.join(NODE_KEY_FILE),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            node_key(&d).unwrap();
            let mode = std::fs::metadata(d.join(NODE_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "loosened permissions are tightened");
        }
        std::fs::write(d.join(NODE_KEY_FILE), "garbage").unwrap();
        let e = node_key(&d).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn registration_round_trips_and_hides_the_token() {
        let d = temp("reg");
        assert!(registration(&d).unwrap().is_none());
        let r = Registration {
            control_url: "http://192.0.2.1:8080".into(),
            node_key: Key([1; 32]),
            node_id: "n".into(),
            name: "a".into(),
            addresses: vec!["100.64.0.1".parse().unwrap()],
            node_token: "phn_secret".into(),
            expires_at: Some(1_795_000_000_000),
        };
        save_registration(&d, &r).unwrap();
        assert_eq!(registration(&d).unwrap(), Some(r.clone()));
        assert!(!format!("{r:?}").contains("phn_secret"));
        std::fs::write(d.join(CONTROL_FILE), "{").unwrap();
        assert!(registration(&d).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }
}
