//! Keys, signatures and hashes, with their stable text forms (lower-case hex).
//!
//! Every member has one ed25519 key; its 32-byte seed is also the seed of the node's libp2p
//! identity, so the PeerId a connection authenticates and the key that signs manifests are the
//! same key. Signatures here are always over `domain tag || 0x00 || canonical bytes`, and the tag
//! names the object kind, so a signature made for one kind never verifies as another (libp2p's
//! own uses of the key carry other prefixes).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Why a key, signature or hash could not be parsed or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{what} must be {len} hex characters, got {got:?}")]
    BadText { what: &'static str, len: usize, got: String },
    #[error("{0:?} is not a valid ed25519 public key")]
    BadPublicKey(String),
    #[error("the {kind} signature does not verify")]
    BadSignature { kind: &'static str },
}

macro_rules! fixed_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            pub const LEN: usize = $len;
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = $crate::crypto::Error;
            fn from_str(s: &str) -> Result<Self, $crate::crypto::Error> {
                let bad = || $crate::crypto::Error::BadText { what: $what, len: $len * 2, got: s.to_string() };
                let bytes = hex::decode(s).map_err(|_| bad())?;
                let arr: [u8; $len] = bytes.try_into().map_err(|_| bad())?;
                Ok(Self(arr))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    let b = serde_bytes::ByteBuf::deserialize(d)?;
                    let arr: [u8; $len] = b.into_vec().try_into().map_err(|v: Vec<u8>| {
                        serde::de::Error::invalid_length(v.len(), &concat!($what, " bytes"))
                    })?;
                    Ok(Self(arr))
                }
            }
        }
    };
}
pub(crate) use fixed_bytes;

fixed_bytes!(
    /// An ed25519 public key (32 bytes). Parsing does not check that it is a curve point;
    /// [`PublicKey::verify`] does, and fails closed.
    PublicKey, 32, "a public key"
);
fixed_bytes!(
    /// An ed25519 signature (64 bytes).
    Signature, 64, "a signature"
);
fixed_bytes!(
    /// A BLAKE3 hash (32 bytes).
    Hash, 32, "a hash"
);

impl Hash {
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

/// The object kinds that are signed, each with its own domain-separation tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Roster,
    Manifest,
    Withdrawal,
    AccessRequest,
    Decision,
    Grant,
    Revocation,
    FetchRequest,
    Ticket,
    Receipt,
    Checkpoint,
    ProvenanceEntry,
    QueryRequest,
    QueryAnswer,
    Call,
    CallBatch,
    CallResult,
    CallAnswer,
}

impl Kind {
    /// The domain-separation tag mixed into every signature and entry hash of this kind.
    pub const fn tag(self) -> &'static str {
        match self {
            Kind::Roster => "deltafed/v1/roster",
            Kind::Manifest => "deltafed/v1/manifest",
            Kind::Withdrawal => "deltafed/v1/withdrawal",
            Kind::AccessRequest => "deltafed/v1/access-request",
            Kind::Decision => "deltafed/v1/decision",
            Kind::Grant => "deltafed/v1/grant",
            Kind::Revocation => "deltafed/v1/revocation",
            Kind::FetchRequest => "deltafed/v1/fetch-request",
            Kind::Ticket => "deltafed/v1/ticket",
            Kind::Receipt => "deltafed/v1/receipt",
            Kind::Checkpoint => "deltafed/v1/checkpoint",
            Kind::ProvenanceEntry => "deltafed/v1/provenance-entry",
            Kind::QueryRequest => "deltafed/v1/query-request",
            Kind::QueryAnswer => "deltafed/v1/query-answer",
            Kind::Call => "deltafed/v1/call",
            Kind::CallBatch => "deltafed/v1/call-batch",
            Kind::CallResult => "deltafed/v1/call-result",
            Kind::CallAnswer => "deltafed/v1/call-answer",
        }
    }

    /// A short human name, used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Roster => "roster",
            Kind::Manifest => "manifest",
            Kind::Withdrawal => "withdrawal",
            Kind::AccessRequest => "access request",
            Kind::Decision => "decision",
            Kind::Grant => "grant",
            Kind::Revocation => "revocation",
            Kind::FetchRequest => "fetch request",
            Kind::Ticket => "ticket",
            Kind::Receipt => "receipt",
            Kind::Checkpoint => "checkpoint",
            Kind::ProvenanceEntry => "provenance entry",
            Kind::QueryRequest => "query request",
            Kind::QueryAnswer => "query answer",
            Kind::Call => "call",
            Kind::CallBatch => "call batch",
            Kind::CallResult => "call result",
            Kind::CallAnswer => "call answer",
        }
    }
}

/// The bytes a signature of `kind` covers.
pub fn signing_input(kind: Kind, body: &[u8]) -> Vec<u8> {
    let tag = kind.tag().as_bytes();
    let mut msg = Vec::with_capacity(tag.len() + 1 + body.len());
    msg.extend_from_slice(tag);
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

/// A member's secret key (the 32-byte ed25519 seed). `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// From the 32-byte seed. Randomness is the caller's: this crate has no source of it.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `body` (canonical bytes) as an object of `kind`.
    pub fn sign(&self, kind: Kind, body: &[u8]) -> Signature {
        Signature(self.0.sign(&signing_input(kind, body)).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {}, secret redacted)", self.public())
    }
}

impl PublicKey {
    /// Verifies `sig` over `body` as an object of `kind`, with strict (non-malleable) checks.
    pub fn verify(&self, kind: Kind, body: &[u8], sig: &Signature) -> Result<(), Error> {
        let key = self.decompress()?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(&signing_input(kind, body), &sig).map_err(|_| Error::BadSignature { kind: kind.name() })
    }

    fn decompress(&self) -> Result<VerifyingKey, Error> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| Error::BadPublicKey(self.to_string()))
    }

    /// Whether the bytes are a valid curve point (a usable key).
    pub fn is_valid(&self) -> bool {
        VerifyingKey::from_bytes(&self.0).is_ok()
    }
}

/// Member keys decompressed once: decompressing a point costs a good part of a verification, and
/// the hot paths (sharing calls) verify under the same few keys all day. Bounded: past
/// [`KeyCache::MAX`] keys it starts over.
#[derive(Debug, Default)]
pub struct KeyCache(std::sync::RwLock<std::collections::HashMap<PublicKey, VerifyingKey>>);

impl KeyCache {
    pub const MAX: usize = 4096;

    /// As [`PublicKey::verify`], with the key's decompressed form kept for next time.
    pub fn verify(&self, key: &PublicKey, kind: Kind, body: &[u8], sig: &Signature) -> Result<(), Error> {
        let known = self.0.read().unwrap_or_else(|p| p.into_inner()).get(key).copied();
        let vk = match known {
            Some(vk) => vk,
            None => {
                let vk = key.decompress()?;
                let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
                if map.len() >= Self::MAX {
                    map.clear();
                }
                map.insert(*key, vk);
                vk
            }
        };
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        vk.verify_strict(&signing_input(kind, body), &sig).map_err(|_| Error::BadSignature { kind: kind.name() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_verifies_exactly_as_the_key_does() {
        let key = SecretKey::from_seed([7; 32]);
        let cache = KeyCache::default();
        let sig = key.sign(Kind::CallBatch, b"body");
        for _ in 0..2 {
            cache.verify(&key.public(), Kind::CallBatch, b"body", &sig).expect("verifies");
            assert!(cache.verify(&key.public(), Kind::CallAnswer, b"body", &sig).is_err());
            assert!(cache.verify(&key.public(), Kind::CallBatch, b"bodY", &sig).is_err());
        }
        let bad = PublicKey([0xff; 32]);
        assert!(cache.verify(&bad, Kind::CallBatch, b"body", &sig).is_err());
    }

    #[test]
    fn signature_for_one_kind_never_verifies_as_another() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign(Kind::Grant, b"body");
        key.public().verify(Kind::Grant, b"body", &sig).expect("verifies");
        assert_eq!(
            key.public().verify(Kind::Revocation, b"body", &sig),
            Err(Error::BadSignature { kind: "revocation" })
        );
        assert!(key.public().verify(Kind::Grant, b"bodY", &sig).is_err());
        let other = SecretKey::from_seed([8; 32]);
        assert!(other.public().verify(Kind::Grant, b"body", &sig).is_err());
    }

    #[test]
    fn text_forms_round_trip_and_reject_garbage() {
        let pk = SecretKey::from_seed([1; 32]).public();
        assert_eq!(pk.to_string().parse::<PublicKey>(), Ok(pk));
        assert!("abc".parse::<PublicKey>().is_err());
        assert!("zz".repeat(32).parse::<PublicKey>().is_err());
        let dbg = format!("{:?}", SecretKey::from_seed([1; 32]));
        assert!(dbg.contains("redacted") && !dbg.contains(&hex::encode([1u8; 32])));
    }
}
