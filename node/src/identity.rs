//! One key, two uses: the member's ed25519 seed is both its libp2p identity (PeerId, TLS
//! certificate) and the key that signs its objects.

use deltafed_protocol::{PublicKey, SecretKey};
use libp2p::PeerId;
use libp2p::identity::{self, Keypair};

/// The libp2p keypair for a member key.
pub fn keypair(key: &SecretKey) -> Keypair {
    let mut seed = key.seed();
    // Only fails for a seed of the wrong length, which a SecretKey cannot have.
    match Keypair::ed25519_from_bytes(&mut seed) {
        Ok(kp) => kp,
        Err(_) => unreachable!("a 32-byte seed is always a valid ed25519 secret"),
    }
}

/// The PeerId of a member's public key.
pub fn peer_id(key: &PublicKey) -> Option<PeerId> {
    let pk = identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()).ok()?;
    Some(PeerId::from_public_key(&identity::PublicKey::from(pk)))
}

/// The member public key behind a PeerId (ed25519 PeerIds embed the key).
pub fn public_key_of(peer: &PeerId) -> Option<PublicKey> {
    let mh = peer.as_ref();
    let pk = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    let ed = pk.try_into_ed25519().ok()?;
    Some(PublicKey(ed.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltafed_protocol::Kind;

    #[test]
    fn one_seed_is_both_libp2p_identity_and_signing_key() {
        let key = SecretKey::from_seed([42; 32]);
        let kp = keypair(&key);
        let peer = PeerId::from_public_key(&kp.public());
        assert_eq!(peer_id(&key.public()), Some(peer));
        assert_eq!(public_key_of(&peer), Some(key.public()));
        // The libp2p keypair and the protocol key make byte-identical signatures.
        let msg = b"same key";
        let ours = ed25519_sign_raw(&key, msg);
        let theirs = kp.sign(msg).expect("ed25519 signs");
        assert_eq!(ours.to_vec(), theirs);
        // And our domain-separated signature verifies with the key libp2p reports.
        let sig = key.sign(Kind::Manifest, msg);
        let pk = public_key_of(&peer).expect("ed25519 peer id");
        assert!(pk.verify(Kind::Manifest, msg, &sig).is_ok());
    }

    fn ed25519_sign_raw(key: &SecretKey, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        ed25519_dalek::SigningKey::from_bytes(&key.seed()).sign(msg).to_bytes()
    }
}
