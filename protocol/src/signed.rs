//! Signed objects: `{body, signer, sig}` where `sig` is the signer's ed25519 signature over the
//! body's canonical bytes under the body kind's domain tag.
//!
//! Decoding checks, in order: size limit, canonical form, object version, shape (unknown fields
//! are refused, not dropped, since dropping them would change what was signed), then the
//! signature. A [`Signed`] value therefore always carries a signature that verifies under its
//! `signer` key; whether that key belongs to the member the body names is the roster's question
//! ([`Signed::check_signer`]).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cbor;
use crate::crypto::{self, Kind, PublicKey, SecretKey, Signature};
use crate::id::MemberId;
use crate::roster::Roster;

/// The version of every object kind this implementation writes and accepts.
pub const OBJECT_VERSION: u32 = 1;

/// A kind of object that travels in canonical CBOR.
pub trait Object: Serialize + DeserializeOwned + Clone {
    const KIND: Kind;
    /// Largest accepted encoding, in bytes, of the object (for signed ones, with its envelope).
    const MAX_SIZE: usize;
    fn version(&self) -> u32;
}

/// A signed object whose author is a member.
pub trait Authored: Object {
    /// The member that must have signed it.
    fn author(&self) -> &MemberId;
}

/// Implements [`Object`] and [`Authored`] for a signed object kind: its domain tag, its size
/// limit, and the field naming the member that must have signed it.
macro_rules! signed_object {
    ($t:ty, $kind:expr, $max:expr, $author:ident) => {
        impl $crate::signed::Object for $t {
            const KIND: $crate::crypto::Kind = $kind;
            const MAX_SIZE: usize = $max;
            fn version(&self) -> u32 {
                self.v
            }
        }

        impl $crate::signed::Authored for $t {
            fn author(&self) -> &$crate::id::MemberId {
                &self.$author
            }
        }
    };
}
pub(crate) use signed_object;

/// Why a signed object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cbor(#[from] cbor::Error),
    #[error(transparent)]
    Crypto(#[from] crypto::Error),
    #[error("the {kind} names {member} as its author, who is not a member of the roster in force")]
    UnknownAuthor { kind: &'static str, member: MemberId },
    #[error("the {kind} claims to be by {member} but is signed by another key")]
    WrongSigner { kind: &'static str, member: MemberId },
}

#[derive(Deserialize)]
struct VersionOnly {
    v: u32,
}

/// Reads just the `v` field of an object, so a newer version is reported as such and not as an
/// odd shape.
pub(crate) fn check_version(kind: &'static str, v: u32) -> Result<(), cbor::Error> {
    if v != OBJECT_VERSION {
        return Err(cbor::Error::UnknownVersion { kind, found: v, supported: OBJECT_VERSION });
    }
    Ok(())
}

/// Encodes an unsigned object canonically.
pub fn encode<T: Object>(value: &T) -> Result<Vec<u8>, cbor::Error> {
    cbor::encode(T::KIND.name(), value)
}

/// Decodes an unsigned object, enforcing its limits.
pub fn decode<T: Object>(bytes: &[u8]) -> Result<T, cbor::Error> {
    let kind = T::KIND.name();
    if bytes.len() > T::MAX_SIZE {
        return Err(cbor::Error::Oversized { kind, size: bytes.len(), max: T::MAX_SIZE });
    }
    // The common case in one parse and one encoding: a value of this version whose own
    // canonical encoding is exactly these bytes (which implies every canonical-form rule; an
    // entry leaving out an optional field is refused too, so its hash always names its value).
    if let Ok(value) = cbor4ii::serde::from_slice::<T>(bytes)
        && value.version() == OBJECT_VERSION
        && cbor::encode(kind, &value)? == bytes
    {
        return Ok(value);
    }
    // Refused: the checks in order, to say why.
    cbor::check_canonical(kind, T::MAX_SIZE, bytes)?;
    let probe: VersionOnly =
        cbor4ii::serde::from_slice(bytes).map_err(|e| cbor::Error::Shape { kind, detail: e.to_string() })?;
    check_version(kind, probe.v)?;
    let value: T = cbor4ii::serde::from_slice(bytes).map_err(|e| cbor::Error::Shape { kind, detail: e.to_string() })?;
    check_version(kind, value.version())?;
    Err(cbor::Error::NonCanonical { kind })
}

/// A verified signed object. Holds its exact encoding, which is what gets stored and forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed<T> {
    body: T,
    signer: PublicKey,
    sig: Signature,
    bytes: Vec<u8>,
}

#[derive(Serialize)]
pub(crate) struct WireRef<'a, T> {
    pub(crate) sig: &'a Signature,
    pub(crate) body: &'a T,
    pub(crate) signer: &'a PublicKey,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<T> {
    sig: Signature,
    body: T,
    signer: PublicKey,
}

#[derive(Deserialize)]
struct WireVersion {
    body: VersionOnly,
}

impl<T: Object> Signed<T> {
    /// Signs `body` with `key`.
    pub fn sign(body: T, key: &SecretKey) -> Result<Signed<T>, cbor::Error> {
        let body_bytes = cbor::encode(T::KIND.name(), &body)?;
        let sig = key.sign(T::KIND, &body_bytes);
        let signer = key.public();
        let bytes = cbor::encode(T::KIND.name(), &WireRef { body: &body, signer: &signer, sig: &sig })?;
        if bytes.len() > T::MAX_SIZE {
            return Err(cbor::Error::Oversized { kind: T::KIND.name(), size: bytes.len(), max: T::MAX_SIZE });
        }
        Ok(Signed { body, signer, sig, bytes })
    }

    /// Decodes and verifies the signature (not yet the author: see [`Signed::check_signer`]).
    pub fn decode(bytes: &[u8]) -> Result<Signed<T>, Error> {
        Self::decode_verified_by(bytes, |key, body, sig| key.verify(T::KIND, body, sig))
    }

    fn decode_verified_by(
        bytes: &[u8],
        verify: impl FnOnce(&PublicKey, &[u8], &Signature) -> Result<(), crypto::Error>,
    ) -> Result<Signed<T>, Error> {
        let kind = T::KIND.name();
        if bytes.len() > T::MAX_SIZE {
            return Err(cbor::Error::Oversized { kind, size: bytes.len(), max: T::MAX_SIZE }.into());
        }
        // Canonical form alone does not make the encoding unique: a body that leaves out an
        // optional field decodes to the same value as one that writes it as null. The one
        // encoding is the value's own, so anything else is refused (and the object's hash, its
        // name in tickets and logs, is a function of its value). That comparison implies every
        // canonical-form rule too, so the common case costs one parse and one encoding; the
        // checks in order run only to say why something was refused.
        let accepted = match cbor4ii::serde::from_slice::<Wire<T>>(bytes) {
            Ok(wire) if wire.body.version() == OBJECT_VERSION => {
                let again = cbor::encode(kind, &WireRef { body: &wire.body, signer: &wire.signer, sig: &wire.sig })?;
                (again == bytes).then_some(wire)
            }
            _ => None,
        };
        let Some(wire) = accepted else { return Err(Self::why_refused(bytes).into()) };
        let body_bytes = cbor::encode(kind, &wire.body)?;
        verify(&wire.signer, &body_bytes, &wire.sig)?;
        Ok(Signed { body: wire.body, signer: wire.signer, sig: wire.sig, bytes: bytes.to_vec() })
    }

    /// Why bytes that are not a signed object's one encoding were refused: the checks in the
    /// order the module describes.
    fn why_refused(bytes: &[u8]) -> cbor::Error {
        let kind = T::KIND.name();
        if let Err(e) = cbor::check_canonical(kind, T::MAX_SIZE, bytes) {
            return e;
        }
        let shape = |e: cbor4ii::serde::DecodeError<std::convert::Infallible>| cbor::Error::Shape {
            kind,
            detail: e.to_string(),
        };
        let probe: WireVersion = match cbor4ii::serde::from_slice(bytes) {
            Ok(p) => p,
            Err(e) => return shape(e),
        };
        if let Err(e) = check_version(kind, probe.body.v) {
            return e;
        }
        match cbor4ii::serde::from_slice::<Wire<T>>(bytes) {
            Err(e) => shape(e),
            Ok(wire) => match check_version(kind, wire.body.version()) {
                Err(e) => e,
                Ok(()) => cbor::Error::NonCanonical { kind },
            },
        }
    }

    /// Decodes bytes that this node verified before it stored them (its own database), without
    /// checking the signature or canonical form again. Never use it on bytes from a peer, a file
    /// or a user: those go through [`Signed::decode`].
    pub fn from_trusted_bytes(bytes: &[u8]) -> Result<Signed<T>, Error> {
        let kind = T::KIND.name();
        let wire: Wire<T> =
            cbor4ii::serde::from_slice(bytes).map_err(|e| cbor::Error::Shape { kind, detail: e.to_string() })?;
        Ok(Signed { body: wire.body, signer: wire.signer, sig: wire.sig, bytes: bytes.to_vec() })
    }

    pub fn body(&self) -> &T {
        &self.body
    }

    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }

    pub fn signature(&self) -> &Signature {
        &self.sig
    }

    /// The exact canonical encoding (what was received, or what was produced when signing).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The BLAKE3 hash of the encoding: a stable name for this exact signed object.
    pub fn hash(&self) -> crypto::Hash {
        crypto::Hash::of(&self.bytes)
    }
}

impl<T: Authored> Signed<T> {
    /// Checks that the signing key is the roster's key for the member the body names as author.
    pub fn check_signer(&self, roster: &Roster) -> Result<(), Error> {
        let kind = T::KIND.name();
        let member = self.body.author();
        match roster.key_of(member) {
            None => Err(Error::UnknownAuthor { kind, member: member.clone() }),
            Some(key) if *key != self.signer => Err(Error::WrongSigner { kind, member: member.clone() }),
            Some(_) => Ok(()),
        }
    }

    /// Decodes, verifies the signature and checks the author against the roster.
    pub fn decode_from_member(bytes: &[u8], roster: &Roster) -> Result<Signed<T>, Error> {
        let signed = Self::decode(bytes)?;
        signed.check_signer(roster)?;
        Ok(signed)
    }

    /// As [`Signed::decode_from_member`], verifying through `keys` (see [`crypto::KeyCache`]).
    pub fn decode_from_member_cached(
        bytes: &[u8],
        roster: &Roster,
        keys: &crypto::KeyCache,
    ) -> Result<Signed<T>, Error> {
        let signed = Self::decode_verified_by(bytes, |key, body, sig| keys.verify(key, T::KIND, body, sig))?;
        signed.check_signer(roster)?;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::exchange::QueryRequest;
    use crate::{DatasetId, MemberId, Nonce, Timestamp};

    /// A query request without its `grant` key decodes to the same value as one with
    /// `grant: null`; only the latter is the object's encoding.
    #[test]
    fn an_object_has_exactly_one_accepted_encoding() {
        let key = SecretKey::from_seed([4; 32]);
        let m = |s: &str| s.parse::<MemberId>().expect("member");
        let q = QueryRequest {
            v: OBJECT_VERSION,
            requester: m("shanghai"),
            provider: m("zhejiang"),
            dataset: "licences".parse::<DatasetId>().expect("dataset"),
            grant: None,
            key: "k".into(),
            nonce: Nonce([1; 16]),
            time: Timestamp(1_700_000_000_000),
        };
        let signed = Signed::sign(q.clone(), &key).expect("sign");
        assert!(Signed::<QueryRequest>::decode(signed.as_bytes()).is_ok());
        #[derive(Serialize)]
        struct Short<'a> {
            v: u32,
            requester: &'a MemberId,
            provider: &'a MemberId,
            dataset: &'a DatasetId,
            key: &'a str,
            nonce: &'a Nonce,
            time: Timestamp,
        }
        let short = Short {
            v: q.v,
            requester: &q.requester,
            provider: &q.provider,
            dataset: &q.dataset,
            key: &q.key,
            nonce: &q.nonce,
            time: q.time,
        };
        let forged =
            cbor::encode("query request", &WireRef { body: &short, signer: signed.signer(), sig: signed.signature() })
                .expect("encode");
        assert_ne!(forged, signed.as_bytes());
        let err = Signed::<QueryRequest>::decode(&forged).expect_err("a second encoding is refused");
        assert!(err.to_string().contains("canonical"), "{err}");
    }
}
