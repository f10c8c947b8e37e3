//! Proof that a party holds the private half of an X25519 key, without revealing it: the verifier
//! sends its own X25519 key and a fresh challenge; the prover answers with an HMAC-SHA256 over
//! the verifier's key, the challenge and its own key, keyed with the X25519 secret the two
//! share. The relay uses it when a node connects, control when a node registers; each purpose
//! has its own label, so a proof made for one is worthless to the other.

use crate::key::{Key, PrivateKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a proof is for; part of the MAC's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A node connecting to a relay.
    Relay,
    /// A node registering (or re-registering) with the coordination server.
    Register,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Relay => b"pinhole relay key proof v1",
            Purpose::Register => b"pinhole register key proof v1",
        }
    }
}

fn mac(
    purpose: Purpose,
    shared: &[u8; 32],
    verifier: &Key,
    challenge: &[u8; 32],
    prover: &Key,
) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(shared)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(purpose.label());
    mac.update(&verifier.0);
    mac.update(challenge);
    mac.update(&prover.0);
    mac
}

/// The prover's answer: proves that it holds `private` to the holder of `verifier`'s private key.
pub fn prove(
    purpose: Purpose,
    private: &PrivateKey,
    verifier: &Key,
    challenge: &[u8; 32],
) -> [u8; 32] {
    let s = x25519_dalek::StaticSecret::from(*private.as_bytes());
    let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(verifier.0));
    let prover = Key(x25519_dalek::PublicKey::from(&s).to_bytes());
    mac(purpose, shared.as_bytes(), verifier, challenge, &prover)
        .finalize()
        .into_bytes()
        .into()
}

/// The verifier's check (constant time); low-order keys, whose shared secret anyone can
/// compute, are refused.
pub fn verify(
    purpose: Purpose,
    verifier_private: &PrivateKey,
    challenge: &[u8; 32],
    prover: &Key,
    proof: &[u8; 32],
) -> bool {
    let s = x25519_dalek::StaticSecret::from(*verifier_private.as_bytes());
    let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(prover.0));
    if !shared.was_contributory() {
        return false;
    }
    let verifier = Key(x25519_dalek::PublicKey::from(&s).to_bytes());
    mac(purpose, shared.as_bytes(), &verifier, challenge, prover)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_holder_of_the_private_key_can_prove_it() {
        let server = PrivateKey::from_bytes([11; 32]);
        let server_pub = server.public_key();
        let client = PrivateKey::from_bytes([22; 32]);
        let client_pub = client.public_key();
        let challenge = [5; 32];
        let p = Purpose::Relay;
        let proof = prove(p, &client, &server_pub, &challenge);
        assert!(verify(p, &server, &challenge, &client_pub, &proof));
        // Another challenge, another claimed key, a forged proof, another private key: refused.
        assert!(!verify(p, &server, &[6; 32], &client_pub, &proof));
        let stranger = PrivateKey::from_bytes([33; 32]);
        assert!(!verify(
            p,
            &server,
            &challenge,
            &stranger.public_key(),
            &proof
        ));
        let mut forged = proof;
        forged[0] ^= 1;
        assert!(!verify(p, &server, &challenge, &client_pub, &forged));
        let other = prove(p, &stranger, &server_pub, &challenge);
        assert!(!verify(p, &server, &challenge, &client_pub, &other));
        // The all-zero (low-order) key cannot pass with an all-zero-secret proof.
        let zero_proof: [u8; 32] = mac(p, &[0; 32], &server_pub, &challenge, &Key([0; 32]))
            .finalize()
            .into_bytes()
            .into();
        assert!(!verify(p, &server, &challenge, &Key([0; 32]), &zero_proof));
    }

    #[test]
    fn a_proof_for_one_purpose_is_worthless_for_the_other() {
        let server = PrivateKey::from_bytes([1; 32]);
        let client = PrivateKey::from_bytes([2; 32]);
        let challenge = [7; 32];
        let relay = prove(Purpose::Relay, &client, &server.public_key(), &challenge);
        assert!(verify(
            Purpose::Relay,
            &server,
            &challenge,
            &client.public_key(),
            &relay
        ));
        assert!(!verify(
            Purpose::Register,
            &server,
            &challenge,
            &client.public_key(),
            &relay
        ));
    }
}
