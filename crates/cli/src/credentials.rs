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

fn entry(name: &str) -> Result<Entry> {
    #[cfg(target_os = "linux")]
    {
        linux::entry(name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Entry::new(SERVICE, name).context("the credential store is not available")
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::SERVICE;
    use anyhow::{bail, Context, Result};
    use keyring::keyutils::KeyutilsCredential;
    use keyring::secret_service::SsCredential;
    use keyring::Entry;
    use linux_keyutils::{KeyRing, KeyRingIdentifier};

    pub fn entry(name: &str) -> Result<Entry> {
        let choice = std::env::var("PINHOLE_KEYRING").unwrap_or_default();
        match choice.as_str() {
            "kernel" => kernel(name),
            "secret-service" => secret_service(name),
            "" => {
                if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
                    match secret_service(name) {
                        Ok(e) => return Ok(e),
                        Err(e) => debug_note(&format!("{e:#}")),
                    }
                }
                kernel(name)
            }
            other => bail!("PINHOLE_KEYRING={other:?}: use kernel or secret-service"),
        }
    }

    /// A desktop's Secret Service, if it answers.
    fn secret_service(name: &str) -> Result<Entry> {
        let cred = SsCredential::new_with_target(None, SERVICE, name)
            .context("the Secret Service is not available")?;
        let entry = Entry::new_with_credential(Box::new(cred));
        match entry.get_password() {
            Ok(_) | Err(keyring::Error::NoEntry) => Ok(entry),
            Err(e) => Err(e).context("the Secret Service is not available"),
        }
    }

    /// The kernel keyring: the user keyring (kept while the user has processes), linked into
    /// the persistent keyring (kept across logins for days) when the kernel has one.
    fn kernel(name: &str) -> Result<Entry> {
        let ring = KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|e| anyhow::anyhow!("the kernel keyring is not available: {e:?}"))?;
        let persistent = KeyRing::get_persistent(KeyRingIdentifier::User).ok();
        let cred = KeyutilsCredential {
            session: ring,
            persistent,
            description: format!("{SERVICE}:{name}"),
        };
        Ok(Entry::new_with_credential(Box::new(cred)))
    }

    fn debug_note(why: &str) {
        if std::env::var_os("PINHOLE_DEBUG").is_some() {
            eprintln!("pinhole: using the kernel keyring ({why})");
        }
    }
}

/// The stored sign-in, if any.
pub fn load() -> Result<Option<Credential>> {
    load_named(&user())
}

/// Stores the sign-in, replacing any earlier one.
pub fn save(c: &Credential) -> Result<()> {
    save_named(&user(), c)
}

/// Removes the stored sign-in (nothing stored is fine).
pub fn forget() -> Result<()> {
    forget_named(&user())
}

fn load_named(name: &str) -> Result<Option<Credential>> {
    match entry(name)?.get_password() {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(c) => Ok(Some(c)),
            // Not ours or damaged: as if there were none; the next login replaces it.
            Err(_) => Ok(None),
        },
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(e).context("cannot read the credential store"),
    }
}

fn save_named(name: &str, c: &Credential) -> Result<()> {
    let text = serde_json::to_string(c)?;
    entry(name)?
        .set_password(&text)
        .context("cannot write to the credential store")
}

fn forget_named(name: &str) -> Result<()> {
    match entry(name)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(e).context("cannot remove the sign-in from the credential store"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_is_stored_read_back_replaced_and_forgotten() {
        let name = format!("unit-test-{}", std::process::id());
        let first = Credential {
            server: "https://control.example".into(),
            session_token: "phs_first".into(),
        };
        let second = Credential {
            server: "https://control.example".into(),
            session_token: "phs_second".into(),
        };
        assert_eq!(load_named(&name).unwrap(), None);
        save_named(&name, &first).unwrap();
        assert_eq!(load_named(&name).unwrap(), Some(first));
        save_named(&name, &second).unwrap();
        assert_eq!(load_named(&name).unwrap(), Some(second));
        forget_named(&name).unwrap();
        assert_eq!(load_named(&name).unwrap(), None);
        forget_named(&name).expect("forgetting twice is fine");
    }
}
