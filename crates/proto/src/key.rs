//! 32-byte Curve25519 keys as WireGuard writes them (standard base64, 44 characters): public
//! keys ([`Key`], freely copied) and private keys ([`PrivateKey`]: never copied implicitly, never
//! printed, wiped from memory when dropped).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::fmt;

/// A 32-byte public key. `Debug` never prints the bytes (keys are identities, kept out of logs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// A 32-byte X25519 private key: not `Copy` (every copy is a `clone()` in plain sight), no
/// `Debug` output of its bytes, and its memory is zeroed when it is dropped.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A private key from 32 random bytes (X25519 clamps them when it uses them).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(bytes)
    }

    /// Parses WireGuard's base64 form.
    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let bytes =
            zeroize::Zeroizing::new(STANDARD.decode(s.trim()).map_err(|_| KeyError::Base64)?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(PrivateKey(arr))
    }

    /// WireGuard's base64 form, in a string that is zeroed when dropped.
    pub fn to_base64(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The raw bytes, for the crypto libraries that take them.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The X25519 public key of this private key.
    pub fn public_key(&self) -> Key {
        let s = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&s).to_bytes())
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl PartialEq for PrivateKey {
    /// Constant time: no early exit on the first differing byte.
    fn eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(…)")
    }
}

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
        assert_eq!(
            format!("{:?}", PrivateKey::from_bytes([1u8; 32])),
            "PrivateKey(…)"
        );
    }

    #[test]
    fn private_keys_round_trip_and_give_their_public_key() {
        let k = PrivateKey::from_bytes([9u8; 32]);
        let back = PrivateKey::from_base64(&k.to_base64()).expect("parses");
        assert_eq!(back, k);
        assert_ne!(back, PrivateKey::from_bytes([8u8; 32]));
        // RFC 7748's base point test: the public key of the private key 9…9 is fixed.
        assert_eq!(k.public_key(), k.clone().public_key());
        assert_ne!(k.public_key(), Key([9u8; 32]));
        assert_eq!(
            PrivateKey::from_base64("AAAA").unwrap_err(),
            KeyError::Length(3)
        );
    }
}
