//! Provenance entries and checkpoints.
//!
//! Each node keeps an append-only log. Entry n carries the hash of entry n-1 (`prev`; all zeros
//! for entry 0), so altering, removing or reordering any entry breaks every hash after it. The
//! node signs its head from time to time as a [`Checkpoint`] (sequence number and entry hash) and
//! sends checkpoints to its peers, who keep them: a node that truncates its log and regrows it
//! cannot produce a chain that extends a checkpoint its peers hold.

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, Kind};
use crate::id::{DatasetRef, ExchangeId, MemberId};
use crate::signed::Object;
use crate::time::Timestamp;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    RosterInstalled,
    Published,
    Withdrawn,
    RequestSent,
    RequestReceived,
    DecisionMade,
    DecisionReceived,
    GrantIssued,
    GrantReceived,
    RevocationIssued,
    RevocationReceived,
    ExchangeServed,
    ExchangeReceived,
    ExchangeRefused,
    ReceiptReceived,
    QueryServed,
    QueryAnswered,
    /// A batch of sharing calls answered by this member (the provider).
    CallsServed,
    /// A batch of sharing calls this member made and had answered (the requester).
    CallsAnswered,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::RosterInstalled => "roster-installed",
            EntryKind::Published => "published",
            EntryKind::Withdrawn => "withdrawn",
            EntryKind::RequestSent => "request-sent",
            EntryKind::RequestReceived => "request-received",
            EntryKind::DecisionMade => "decision-made",
            EntryKind::DecisionReceived => "decision-received",
            EntryKind::GrantIssued => "grant-issued",
            EntryKind::GrantReceived => "grant-received",
            EntryKind::RevocationIssued => "revocation-issued",
            EntryKind::RevocationReceived => "revocation-received",
            EntryKind::ExchangeServed => "exchange-served",
            EntryKind::ExchangeReceived => "exchange-received",
            EntryKind::ExchangeRefused => "exchange-refused",
            EntryKind::ReceiptReceived => "receipt-received",
            EntryKind::QueryServed => "query-served",
            EntryKind::QueryAnswered => "query-answered",
            EntryKind::CallsServed => "calls-served",
            EntryKind::CallsAnswered => "calls-answered",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One signed object an entry carries, in its exact encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The object's kind tag name, e.g. "grant".
    pub kind: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub seq: u64,
    pub kind: EntryKind,
    /// Free-text detail an auditor needs (a refusal's reason, the fields sent, a purpose).
    pub note: String,
    pub peer: Option<MemberId>,
    pub prev: Hash,
    pub time: Timestamp,
    /// The calls of a batch entry (`calls-served`, `calls-answered`), in batch order; the
    /// signed batch and answer are among `objects`. Absent from entries of other kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<CallLog>,
    pub dataset: Option<DatasetRef>,
    pub objects: Vec<Evidence>,
    pub exchange: Option<ExchangeId>,
}

/// One call of a batch, as a log keeps it: exactly what its inclusion proofs need, and the key
/// asked only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallLog {
    /// BLAKE3 keyed with the logging node's audit key over the key asked: the node can find the
    /// calls for a key, and the log does not hold the identifier.
    pub key: Hash,
    /// The call's canonical encoding (its leaf in the signed batch).
    #[serde(with = "serde_bytes")]
    pub call: Vec<u8>,
    /// What the provider answered; with the call's leaf hash and salt it rebuilds the result
    /// leaf (`CallResult { v: 1, call: leaf, salt, outcome }`) under the signed answer.
    pub outcome: crate::calls::Outcome,
}

impl Entry {
    /// The hash that the next entry's `prev` and checkpoints refer to.
    pub fn hash_of_encoding(encoded: &[u8]) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(Kind::ProvenanceEntry.tag().as_bytes());
        h.update(&[0]);
        h.update(encoded);
        h.finalize().into()
    }
}

impl Object for Entry {
    const KIND: Kind = Kind::ProvenanceEntry;
    const MAX_SIZE: usize = 256 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u32,
    pub member: MemberId,
    /// Sequence number of the head entry.
    pub seq: u64,
    /// Hash of the head entry.
    pub head: Hash,
    pub time: Timestamp,
}

crate::signed::signed_object!(Checkpoint, Kind::Checkpoint, 2 * 1024, member);
