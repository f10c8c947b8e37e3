//! The user's sign-in kept in the OS credential store with `keyring`: the Keychain on macOS, the
//! Credential Manager on Windows; on Linux the Secret Service of a desktop session when one
//! answers, else the kernel keyring (the user's keyring linked into their persistent keyring),
//! which needs no D-Bus and no login session: a server, a container, a network namespace.
//! `PINHOLE_KEYRING=kernel` or `=secret-service` picks the Linux store by hand;
//! `PINHOLE_CREDENTIAL_NAME` names the entry (default `session`; tests use their own).

use anyhow::{Context, Result};
use keyring::Entry;
use pinhole_proto::ipc::Credential;

const SERVICE: &str = "pinhole";

/// The entry's name within the service.
fn user() -> String {
    std::env::var("PINHOLE_CREDENTIAL_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "session".to_string())
}

fn entry() -> Result<Entry> {
    #[cfg(target_os = "linux")]
    {
        linux::entry()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Entry::new(SERVICE, &user()).context("the credential store is not available")
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{user, SERVICE};
    use anyhow::{bail, Context, Result};
    use keyring::keyutils::KeyutilsCredential;
    use keyring::secret_service::SsCredential;
    use keyring::Entry;
    use linux_keyutils::{KeyRing, KeyRingIdentifier};

    pub fn entry() -> Result<Entry> {
        let choice = std::env::var("PINHOLE_KEYRING").unwrap_or_default();
        match choice.as_str() {
            "kernel" => kernel(),
            "secret-service" => secret_service(),
            "" => {
                if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
                    match secret_service() {
                        Ok(e) => return Ok(e),
                        Err(e) => tracing_free_note(&format!("{e:#}")),
                    }
                }
                kernel()
            }
            other => bail!("PINHOLE_KEYRING={other:?}: use kernel or secret-service"),
        }
    }

    /// A desktop's Secret Service, if it answers.
    fn secret_service() -> Result<Entry> {
        let cred = SsCredential::new_with_target(None, SERVICE, &user())
            .context("the Secret Service is not available")?;
        let entry = Entry::new_with_credential(Box::new(cred));
        match entry.get_password() {
            Ok(_) | Err(keyring::Error::NoEntry) => Ok(entry),
            Err(e) => Err(e).context("the Secret Service is not available"),
        }
    }

    /// The kernel keyring: the user keyring (kept while the user has processes), linked into
    /// the persistent keyring (kept across logins for days) when the kernel has one.
    fn kernel() -> Result<Entry> {
        let ring = KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|e| anyhow::anyhow!("the kernel keyring is not available: {e:?}"))?;
        let persistent = KeyRing::get_persistent(KeyRingIdentifier::User).ok();
        let cred = KeyutilsCredential {
            session: ring,
            persistent,
            description: format!("{SERVICE}:{}", user()),
        };
        Ok(Entry::new_with_credential(Box::new(cred)))
    }

    fn tracing_free_note(why: &str) {
        if std::env::var_os("PINHOLE_DEBUG").is_some() {
            eprintln!("pinhole: using the kernel keyring ({why})");
        }
    }
}

/// The stored sign-in, if any.
pub fn load() -> Result<Option<Credential>> {
    let entry = entry()?;
    match entry.get_password() {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(c) => Ok(Some(c)),
            // Not ours or damaged: as if there were none; the next login replaces it.
            Err(_) => Ok(None),
        },
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e).context("cannot read the credential store"),
    }
}

/// Stores the sign-in, replacing any earlier one.
pub fn save(c: &Credential) -> Result<()> {
    let text = serde_json::to_string(c)?;
    entry()?
        .set_password(&text)
        .context("cannot write to the credential store")
}

/// Removes the stored sign-in (nothing stored is fine).
pub fn forget() -> Result<()> {
    match entry()?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(e).context("cannot remove the sign-in from the credential store"),
    }
}
