//! Sharing calls: an application's "the records of this key", batched between two members.
//!
//! Concurrent calls from one requester to one provider travel as one [`CallBatch`]: the
//! requester encodes each [`Call`] canonically, builds the Merkle tree of their leaf hashes
//! ([`crate::merkle`]) and signs the root once, with one nonce for the whole batch. The provider
//! verifies that one signature, decides each call on its own, and answers with one [`CallResult`]
//! per call under one signed [`CallAnswer`] over the root of the results (so a refusal is signed
//! like an answer). Each call stays provable alone: its leaf, its inclusion proof and the signed
//! batch show that the requester asked it, without revealing any other call of the batch (each
//! leaf carries a random salt, so a neighbour's leaf hash gives nothing away).
//!
//! The key asked is often a personal identifier, so a [`Call`] carries only a commitment to it
//! ([`key_commitment`]) under a second random salt that travels beside the call and is never
//! logged: the logs can hold the call's leaf without holding the identifier, and no one can
//! test guesses of it against the leaf.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, Kind, fixed_bytes};
use crate::id::{DatasetId, ExchangeId, GrantId, MemberId, Nonce};
use crate::signed::Object;
use crate::time::Timestamp;

/// Most calls in one batch: bounds a request (a call is a few hundred bytes with its key).
pub const MAX_BATCH: usize = 256;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest application name or on-behalf-of value, in bytes.
pub const MAX_LABEL_BYTES: usize = 256;

fixed_bytes!(
    /// 16 random bytes that make a leaf or a key commitment unguessable.
    Salt, 16, "a salt"
);

/// One call, as the requester signs it (through the batch root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    pub v: u32,
    /// The local application that made the call, when one did.
    pub app: Option<String>,
    /// [`key_commitment`] of the key asked.
    pub key: Hash,
    /// Random per call: the leaf hash reveals nothing about the call to one who lacks it.
    pub salt: Salt,
    /// The grant held; absent for datasets shared unconditionally.
    pub grant: Option<GrantId>,
    pub dataset: DatasetId,
    /// The end user or case the application acts for, as it said.
    pub on_behalf_of: Option<String>,
}

impl Object for Call {
    const KIND: Kind = Kind::Call;
    const MAX_SIZE: usize = 2 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

/// Binds a call to its key without showing it: BLAKE3 in key-derivation mode over the salt and
/// the key. Without the salt (which no log keeps) a guess of the key cannot be checked.
pub fn key_commitment(salt: &Salt, key: &str) -> Hash {
    let mut h = blake3::Hasher::new_derive_key("deltafed/v1/call-key");
    h.update(&salt.0);
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The requester's signature over a batch of calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallBatch {
    pub v: u32,
    /// Merkle root of the calls' leaf hashes, in order.
    pub root: Hash,
    pub time: Timestamp,
    /// Number of calls (leaves).
    pub count: u32,
    pub nonce: Nonce,
    pub provider: MemberId,
    pub requester: MemberId,
}

crate::signed::signed_object!(CallBatch, Kind::CallBatch, 2 * 1024, requester);

/// What the provider did with one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Answered with `count` records whose JSON array (as sent) hashes to `records`.
    /// `read` is when a live dataset's rows were read from its database (absent for a
    /// published snapshot).
    Answered {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        read: Option<Timestamp>,
        count: u64,
        fields: Option<Vec<String>>,
        records: Hash,
        version: u64,
    },
    /// Refused, with the reason.
    Refused { reason: String },
    /// Authorized, but the data could not be read now (a live dataset's database is down or
    /// slow); the requester may call again.
    Unavailable { reason: String },
    /// Not answered in this batch (its answer would have made the response too large); the
    /// requester calls again.
    Deferred,
}

/// One leaf of the answer tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallResult {
    pub v: u32,
    /// The leaf hash of the call answered.
    pub call: Hash,
    /// The call's own salt, repeated: whoever holds one call's proofs sees its neighbours'
    /// result leaves, and without the salt cannot test guesses of their outcomes against them.
    pub salt: Salt,
    pub outcome: Outcome,
}

impl Object for CallResult {
    const KIND: Kind = Kind::CallResult;
    const MAX_SIZE: usize = 4 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

/// The provider's signature over the results of one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallAnswer {
    pub v: u32,
    /// Merkle root of the results' leaf hashes, in the order of the calls.
    pub root: Hash,
    pub time: Timestamp,
    /// Hash of the signed batch answered.
    pub batch: Hash,
    pub count: u32,
    pub exchange: ExchangeId,
    pub provider: MemberId,
    pub requester: MemberId,
}

crate::signed::signed_object!(CallAnswer, Kind::CallAnswer, 2 * 1024, provider);

/// The leaf hash of an encoded call or result.
pub fn leaf_of<T: Object>(encoded: &[u8]) -> Hash {
    crate::merkle::leaf(T::KIND, encoded)
}

/// The root over encoded leaves of kind `T`, in order.
pub fn root_of<T: Object>(encoded: &[impl AsRef<[u8]>]) -> Hash {
    let leaves: Vec<Hash> = encoded.iter().map(|e| leaf_of::<T>(e.as_ref())).collect();
    crate::merkle::root(&leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed::{self, Signed};
    use crate::{OBJECT_VERSION, SecretKey};

    fn call(i: u8) -> Call {
        Call {
            v: OBJECT_VERSION,
            salt: Salt([i; 16]),
            dataset: "licences".parse().expect("id"),
            grant: None,
            key: key_commitment(&Salt([i ^ 0x55; 16]), "91310000MA1K"),
            app: Some("credit-check".into()),
            on_behalf_of: Some("case 2026-17".into()),
        }
    }

    #[test]
    fn a_batch_signs_its_calls_and_each_call_is_provable_alone() {
        let key = SecretKey::from_seed([3; 32]);
        let calls: Vec<Vec<u8>> = (0..5).map(|i| signed::encode(&call(i)).expect("encode")).collect();
        let leaves: Vec<Hash> = calls.iter().map(|c| leaf_of::<Call>(c)).collect();
        let batch = CallBatch {
            v: OBJECT_VERSION,
            requester: "shanghai".parse().expect("id"),
            provider: "zhejiang".parse().expect("id"),
            nonce: Nonce([1; 16]),
            time: Timestamp(1),
            count: 5,
            root: root_of::<Call>(&calls),
        };
        let signed = Signed::sign(batch, &key).expect("sign");
        let again = Signed::<CallBatch>::decode(signed.as_bytes()).expect("verifies");
        for (i, c) in calls.iter().enumerate() {
            let p = crate::merkle::proof(&leaves, i).expect("proof");
            assert!(crate::merkle::verify(&leaf_of::<Call>(c), i as u64, 5, &p, &again.body().root));
        }
        // A call altered by one byte is not in the batch.
        let mut bad = calls[2].clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let p = crate::merkle::proof(&leaves, 2).expect("proof");
        assert!(!crate::merkle::verify(&leaf_of::<Call>(&bad), 2, 5, &p, &again.body().root));
        // A call's leaf never equals a result's leaf over the same bytes.
        assert_ne!(leaf_of::<Call>(&calls[0]), leaf_of::<CallResult>(&calls[0]));
    }

    /// The objects of the call path, their signed envelopes and the log entry that keeps them
    /// are declared in canonical key order, so encoding them is one pass (`cbor`'s module doc).
    #[test]
    fn the_call_path_objects_encode_in_one_pass() {
        use crate::cbor::encodes_in_one_pass as one_pass;
        use crate::provenance::{CallLog, Entry, EntryKind, Evidence};
        let key = SecretKey::from_seed([3; 32]);
        let m = |s: &str| s.parse::<crate::MemberId>().expect("id");
        let bare = Call { grant: Some(crate::GrantId([2; 16])), app: None, on_behalf_of: None, ..call(1) };
        assert!(one_pass(&call(1)) && one_pass(&bare), "Call");
        let batch = CallBatch {
            v: OBJECT_VERSION,
            requester: m("shanghai"),
            provider: m("zhejiang"),
            nonce: Nonce([1; 16]),
            time: Timestamp(1),
            count: 1,
            root: Hash([1; 32]),
        };
        assert!(one_pass(&batch), "CallBatch");
        let answer = CallAnswer {
            v: OBJECT_VERSION,
            batch: Hash([1; 32]),
            exchange: crate::ExchangeId([3; 16]),
            provider: m("zhejiang"),
            requester: m("shanghai"),
            count: 1,
            root: Hash([2; 32]),
            time: Timestamp(2),
        };
        assert!(one_pass(&answer), "CallAnswer");
        let outcomes = [
            Outcome::Answered {
                version: 2,
                fields: Some(vec!["name".into()]),
                records: Hash([4; 32]),
                count: 1,
                read: Some(Timestamp(3)),
            },
            Outcome::Refused { reason: "no grant".into() },
            Outcome::Unavailable { reason: "database down".into() },
            Outcome::Deferred,
        ];
        for outcome in &outcomes {
            let r =
                CallResult { v: OBJECT_VERSION, call: Hash([5; 32]), salt: Salt([6; 16]), outcome: outcome.clone() };
            assert!(one_pass(&r), "CallResult {outcome:?}");
        }
        let signed = Signed::sign(batch, &key).expect("sign");
        let entry = Entry {
            v: OBJECT_VERSION,
            seq: 7,
            time: Timestamp(4),
            kind: EntryKind::CallsAnswered,
            dataset: Some("zhejiang/licences".parse().expect("ref")),
            peer: Some(m("zhejiang")),
            exchange: Some(crate::ExchangeId([3; 16])),
            note: String::new(),
            objects: vec![Evidence { kind: "call-batch".into(), bytes: signed.as_bytes().to_vec() }],
            prev: Hash([9; 32]),
            calls: vec![CallLog { call: vec![1, 2], outcome: outcomes[0].clone(), key: Hash([8; 32]) }],
        };
        assert!(one_pass(&entry), "Entry");
        let b = signed.body();
        assert!(one_pass(&crate::signed::WireRef { body: b, signer: signed.signer(), sig: signed.signature() }));
    }

    #[test]
    fn the_key_commitment_needs_the_salt() {
        let s = Salt([7; 16]);
        assert_eq!(key_commitment(&s, "a"), key_commitment(&s, "a"));
        assert_ne!(key_commitment(&s, "a"), key_commitment(&s, "b"));
        assert_ne!(key_commitment(&s, "a"), key_commitment(&Salt([8; 16]), "a"));
    }

    #[test]
    fn results_round_trip_in_one_encoding() {
        for outcome in [
            Outcome::Answered {
                version: 2,
                fields: Some(vec!["name".into()]),
                records: Hash([4; 32]),
                count: 1,
                read: None,
            },
            Outcome::Answered {
                version: 2,
                fields: None,
                records: Hash([4; 32]),
                count: 0,
                read: Some(Timestamp(1_700_000_000_000)),
            },
            Outcome::Unavailable { reason: "database down".into() },
            Outcome::Refused { reason: "no grant".into() },
            Outcome::Deferred,
        ] {
            let r = CallResult { v: OBJECT_VERSION, call: Hash([5; 32]), salt: Salt([6; 16]), outcome };
            let b = signed::encode(&r).expect("encode");
            assert_eq!(signed::decode::<CallResult>(&b).expect("decode"), r);
        }
        let c = signed::encode(&call(1)).expect("encode");
        assert_eq!(signed::decode::<Call>(&c).expect("decode"), call(1));
    }
}
