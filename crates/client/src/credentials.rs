//! The user's sign-in kept in the OS credential store with `keyring`: the Keychain on macOS, the
//! Credential Manager on Windows; on Linux the Secret Service of a desktop session when one
//! answers, else the kernel keyring (the user's keyring linked into their persistent keyring),
//! which needs no D-Bus and no login session: a server, a container, a network namespace.
//! `PINHOLE_KEYRING=kernel` or `=secret-service` picks the Linux store by hand;
//! `PINHOLE_CREDENTIAL_NAME` names the entry (default `session`; tests use their own). The
//! store's backends may block: call these off an async runtime's threads (`spawn_blocking`).

use keyring::Entry;
use pinhole_proto::ipc::Credential;

/// Why the credential store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the credential store is not available: {0}")]
    Unavailable(String),
    #[error("PINHOLE_KEYRING={0:?}: use kernel or secret-service")]
    BadChoice(String),
    #[error("cannot read the credential store: {0}")]
    Read(#[source] keyring::Error),
    #[error("cannot write to the credential store: {0}")]
    Write(#[source] keyring::Error),
    #[error("cannot remove the sign-in from the credential store: {0}")]
    Remove(#[source] keyring::Error),
}

type Result<T> = std::result::Result<T, CredentialError>;

const SERVICE: &str = "pinhole";

/// The entry's name within the service: `PINHOLE_CREDENTIAL_NAME`, else `session`.
pub fn default_name() -> String {
    std::env::var("PINHOLE_CREDENTIAL_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "session".to_string())
}

fn entry(name: &str) -> Result<Entry> {
    entry_in(&std::env::var("PINHOLE_KEYRING").unwrap_or_default(), name)
}

/// The entry `name` in the store `keyring` names (what `PINHOLE_KEYRING` takes; empty: the
/// default). Only Linux has a choice.
fn entry_in(keyring: &str, name: &str) -> Result<Entry> {
    #[cfg(target_os = "linux")]
    {
        linux::entry(keyring, name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = keyring;
        Entry::new(SERVICE, name).map_err(|e| CredentialError::Unavailable(e.to_string()))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{CredentialError, Result, SERVICE};
    use keyring::keyutils::KeyutilsCredential;
    use keyring::secret_service::SsCredential;
    use keyring::Entry;
    use linux_keyutils::{KeyRing, KeyRingIdentifier};

    pub fn entry(choice: &str, name: &str) -> Result<Entry> {
        match choice {
            "kernel" => kernel(name),
            "secret-service" => secret_service(name),
            "" => {
                if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
                    match secret_service(name) {
                        Ok(e) => return Ok(e),
                        Err(e) => debug_note(&e.to_string()),
                    }
                }
                kernel(name)
            }
            other => Err(CredentialError::BadChoice(other.to_string())),
        }
    }

    /// A desktop's Secret Service, if it answers.
    fn secret_service(name: &str) -> Result<Entry> {
        let unavailable = |e: keyring::Error| {
            CredentialError::Unavailable(format!("the Secret Service does not answer: {e}"))
        };
        let cred = SsCredential::new_with_target(None, SERVICE, name).map_err(unavailable)?;
        let entry = Entry::new_with_credential(Box::new(cred));
        match entry.get_password() {
            Ok(_) | Err(keyring::Error::NoEntry) => Ok(entry),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The kernel keyring: the user keyring (kept while the user has processes), linked into
    /// the persistent keyring (kept across logins for days) when the kernel has one.
    fn kernel(name: &str) -> Result<Entry> {
        let ring = KeyRing::from_special_id(KeyRingIdentifier::User, true).map_err(|e| {
            CredentialError::Unavailable(format!("the kernel keyring does not answer: {e:?}"))
        })?;
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
    load_named(&default_name())
}

/// Stores the sign-in, replacing any earlier one.
pub fn save(c: &Credential) -> Result<()> {
    save_named(&default_name(), c)
}

/// Removes the stored sign-in (nothing stored is fine).
pub fn forget() -> Result<()> {
    forget_named(&default_name())
}

/// The sign-in stored under `name` (a program with its own entry, a test), if any.
pub fn load_named(name: &str) -> Result<Option<Credential>> {
    load_from(entry(name)?)
}

/// The sign-in stored under `name` in the store `keyring` names (as `PINHOLE_KEYRING` does:
/// `kernel`, `secret-service`, or empty for the default), whatever this process's environment
/// says: a test reads the very store the program under test was told to use.
pub fn load_named_in(keyring: &str, name: &str) -> Result<Option<Credential>> {
    load_from(entry_in(keyring, name)?)
}

fn load_from(entry: Entry) -> Result<Option<Credential>> {
    match entry.get_password() {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(c) => Ok(Some(c)),
            // Not ours or damaged: as if there were none; the next login replaces it.
            Err(_) => Ok(None),
        },
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(CredentialError::Read(e)),
    }
}

/// Stores the sign-in under `name`, replacing any earlier one.
pub fn save_named(name: &str, c: &Credential) -> Result<()> {
    // A credential is two strings: it always serialises.
    let text = serde_json::to_string(c).unwrap_or_default();
    entry(name)?
        .set_password(&text)
        .map_err(CredentialError::Write)
}

/// Removes the sign-in stored under `name` (nothing stored is fine).
pub fn forget_named(name: &str) -> Result<()> {
    match entry(name)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(CredentialError::Remove(e)),
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
