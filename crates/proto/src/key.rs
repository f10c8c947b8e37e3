//! 32-byte Curve25519 keys as WireGuard writes them (standard base64, 44 characters).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;

/// A 32-byte key. `Debug` never prints the bytes, so a private key in a struct cannot leak into logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// Why a key string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not valid base64")]
    Base64,
    #[error("decodes to {0} bytes, a key has 32")]
    Length(usize),
}

impl Key {
    /// Parses WireGuard's base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Key(arr))
    }

    /// WireGuard's base64 form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short, non-secret tag for logs: the first 8 base64 characters (use on public keys only).
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)")
    }
}

/// Keys travel in JSON as their base64 text, as WireGuard writes them.
#[cfg(feature = "serde")]
impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Key::from_base64(&s).map_err(|e| serde::de::Error::custom(format!("key {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_base64() {
        let k = Key([7u8; 32]);
        assert_eq!(Key::from_base64(&k.to_base64()), Ok(k));
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(Key::from_base64("!!!"), Err(KeyError::Base64));
        assert_eq!(Key::from_base64("AAAA"), Err(KeyError::Length(3)));
    }

    #[test]
    fn debug_hides_bytes() {
        assert_eq!(format!("{:?}", Key([1u8; 32])), "Key(…)");
    }
}
