//! Secrets: random tokens stored only as their SHA-256, passwords stored as argon2id hashes,
//! RFC 8628 user codes, and random ids.

use argon2::password_hash::{rand_core::OsRng as PhOsRng, PasswordHash, SaltString};
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// What a token is for; its prefix lets the server route a presented token without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    AuthKey,
    Session,
    Node,
    DeviceCode,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::AuthKey => "phk_",
            TokenKind::Session => "phs_",
            TokenKind::Node => "phn_",
            TokenKind::DeviceCode => "phd_",
        }
    }

    /// The kind a presented token claims to be, from its prefix.
    pub fn of(token: &str) -> Option<TokenKind> {
        [
            TokenKind::AuthKey,
            TokenKind::Session,
            TokenKind::Node,
            TokenKind::DeviceCode,
        ]
        .into_iter()
        .find(|k| token.starts_with(k.prefix()))
    }
}

/// A new token (256 random bits) and the hash to store.
pub fn new_token(kind: TokenKind) -> (String, String) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = format!("{}{}", kind.prefix(), URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// The stored form of a token. Tokens carry 256 random bits, so a fast hash is enough: there is
/// nothing to brute-force, and a stolen database yields no usable token.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random id for rows (128 bits, URL-safe).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A deployment-wide secret for the settings table: 256 random bits, base64.
pub fn new_setting_secret() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut PhOsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the stored hash; a malformed hash never matches.
pub fn verify_password(stored: &str, password: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// Letters for user codes: consonants only (RFC 8628 §6.1: no vowels, so no words; no look-alikes).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// An eight-letter user code shown as `XXXX-XXXX` (20^8 ≈ 2^34.6 codes).
pub fn new_user_code() -> String {
    let mut rng = OsRng;
    let mut s = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            s.push('-');
        }
        s.push(USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char);
    }
    s
}

/// The canonical form of what a person typed as a user code: upper case, dash restored,
/// spaces and other separators dropped; none if it cannot be a code.
pub fn normalise_user_code(typed: &str) -> Option<String> {
    let letters: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_prefixed_and_hashed() {
        let (a, ha) = new_token(TokenKind::AuthKey);
        let (b, hb) = new_token(TokenKind::AuthKey);
        assert_ne!(a, b);
        assert_ne!(ha, hb);
        assert!(a.starts_with("phk_"));
        assert_eq!(TokenKind::of(&a), Some(TokenKind::AuthKey));
        assert_eq!(TokenKind::of("nope"), None);
        assert_eq!(hash_token(&a), ha);
        assert_eq!(ha.len(), 64);
        assert!(!ha.contains(&a[4..]));
    }

    #[test]
    fn passwords_verify_only_when_right() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password("garbage", "correct horse"));
    }

    #[test]
    fn user_codes_normalise() {
        let c = new_user_code();
        assert_eq!(c.len(), 9);
        assert_eq!(
            normalise_user_code(&c.to_lowercase().replace('-', " ")),
            Some(c)
        );
        assert_eq!(
            normalise_user_code("ABCD-EFGH"),
            None,
            "vowels are not in the alphabet"
        );
        assert_eq!(normalise_user_code("BCD"), None);
    }
}
