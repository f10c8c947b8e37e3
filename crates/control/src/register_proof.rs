//! Registration's proof of key possession: the server's X25519 key and stateless challenges,
//! both derived from one secret kept in the database, so that every instance of a scaled-out
//! server hands out the same key and can check a challenge another instance made. A challenge is
//! its expiry, random bytes, and a MAC over both; a node answers it with
//! [`pinhole_proto::key_proof`] for purpose Register.

use hmac::{Hmac, Mac};
use pinhole_proto::control::{RegisterChallenge, RegisterRequest};
use pinhole_proto::key::{Key, PrivateKey};
use pinhole_proto::key_proof::{self, Purpose};
use sha2::Sha256;
use std::time::Duration;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(120);

/// The name of the database setting that holds the secret.
pub const SECRET_SETTING: &str = "register_proof_secret";

/// Why a registration's proof was refused, in words for the API's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("the registration has no readable challenge and proof: update the node")]
    Malformed,
    #[error("the registration challenge was not made by this server")]
    ForeignChallenge,
    #[error("the registration challenge has expired: try again")]
    Expired,
    #[error("the node could not prove that it holds the private key of the node key it presented")]
    WrongProof,
}

/// The server's registration key and challenge key.
pub struct RegisterKeys {
    private: PrivateKey,
    public: Key,
    mac_key: [u8; 32],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

impl RegisterKeys {
    /// Keys derived from the deployment's secret.
    pub fn from_secret(secret: &[u8]) -> Self {
        let private = PrivateKey::from_bytes(hmac(secret, &[b"register x25519 key"]));
        let public = private.public_key();
        RegisterKeys {
            private,
            public,
            mac_key: hmac(secret, &[b"register challenge mac"]),
        }
    }

    fn tag(&self, head: &[u8]) -> [u8; 16] {
        let full = hmac(&self.mac_key, &[head]);
        let mut t = [0; 16];
        t.copy_from_slice(&full[..16]);
        t
    }

    /// A fresh challenge, valid until `now_ms` + [`CHALLENGE_TTL`].
    pub fn challenge(&self, now_ms: i64) -> RegisterChallenge {
        use base64::Engine as _;
        let expires = now_ms.saturating_add(CHALLENGE_TTL.as_millis() as i64);
        let mut c = [0u8; 32];
        c[..8].copy_from_slice(&expires.to_be_bytes());
        c[8..16].copy_from_slice(&rand::random::<[u8; 8]>());
        let tag = self.tag(&c[..16]);
        c[16..].copy_from_slice(&tag);
        RegisterChallenge {
            server_key: self.public,
            challenge: base64::engine::general_purpose::STANDARD.encode(c),
            expires_in: CHALLENGE_TTL.as_secs(),
        }
    }

    /// Checks that `req` answers a live challenge of ours with a proof for its node key.
    pub fn verify(&self, req: &RegisterRequest, now_ms: i64) -> Result<(), ProofError> {
        let (challenge, proof) = req.proof_bytes().map_err(|_| ProofError::Malformed)?;
        let tag = self.tag(&challenge[..16]);
        let same = tag
            .iter()
            .zip(&challenge[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same {
            return Err(ProofError::ForeignChallenge);
        }
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&challenge[..8]);
        if i64::from_be_bytes(exp) < now_ms {
            return Err(ProofError::Expired);
        }
        if !key_proof::verify(
            Purpose::Register,
            &self.private,
            &challenge,
            &req.node_key,
            &proof,
        ) {
            return Err(ProofError::WrongProof);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_proto::control::NodeInfo;

    fn info() -> NodeInfo {
        NodeInfo {
            disco_key: Key([5; 32]),
            hostname: "a".into(),
            os: "linux".into(),
            tags: Vec::new(),
            advertised_routes: Vec::new(),
        }
    }

    #[test]
    fn only_a_fresh_answer_from_the_key_holder_passes() {
        let keys = RegisterKeys::from_secret(b"deployment secret");
        let node = PrivateKey::from_bytes([1; 32]);
        let now = 1_000_000;
        let ch = keys.challenge(now);
        let req = RegisterRequest::new(&node, &ch, &info());
        assert_eq!(keys.verify(&req, now + 1000), Ok(()));
        // Another instance with the same secret accepts it too.
        let other_instance = RegisterKeys::from_secret(b"deployment secret");
        assert_eq!(other_instance.verify(&req, now), Ok(()));
        // Too late.
        let late = now + CHALLENGE_TTL.as_millis() as i64 + 1;
        assert_eq!(keys.verify(&req, late), Err(ProofError::Expired));
        // Somebody else's key presented with this proof: refused.
        let mut stolen = req.clone();
        stolen.node_key = PrivateKey::from_bytes([2; 32]).public_key();
        assert_eq!(keys.verify(&stolen, now), Err(ProofError::WrongProof));
        // A challenge from another deployment, or one altered to live longer: refused.
        let foreign = RegisterKeys::from_secret(b"another secret").challenge(now);
        let req2 = RegisterRequest::new(&node, &foreign, &info());
        assert_eq!(keys.verify(&req2, now), Err(ProofError::ForeignChallenge));
        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &ch.challenge)
                .unwrap();
        bytes[0] ^= 0x40;
        let mut longer = req.clone();
        longer.challenge =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes);
        assert_eq!(keys.verify(&longer, now), Err(ProofError::ForeignChallenge));
        // Garbage.
        let mut junk = req;
        junk.proof = "not base64!".into();
        assert_eq!(keys.verify(&junk, now), Err(ProofError::Malformed));
    }
}
