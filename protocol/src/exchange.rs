//! The exchange: fetch request, ticket, receipt.
//!
//! 1. The requester signs a [`FetchRequest`]: which grant (none for an unconditional dataset),
//!    which dataset and version, a fresh nonce, its clock, and the offset to resume from.
//! 2. The provider checks the authenticated peer against the request's signer, the grant, the
//!    nonce (never seen before) and the time (within the allowed skew), then signs a [`Ticket`]
//!    naming the exchange id, the hash of the request it answers, and the BLAKE3 hash and size of
//!    exactly the bytes it will send (the projected bytes, when the grant names fields).
//! 3. The data follows in chunks; the requester verifies them against the ticket's hash as they
//!    arrive and writes nothing unverified to its output.
//! 4. The requester signs a [`Receipt`] with the hash and byte count it received.
//!
//! Both sides log every step under the exchange id.

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, Kind};
use crate::id::{DatasetId, ExchangeId, GrantId, MemberId, Nonce};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub v: u32,
    pub requester: MemberId,
    pub provider: MemberId,
    pub dataset: DatasetId,
    /// A specific version, or the newest when absent.
    pub version: Option<u64>,
    /// The grant held; absent for datasets shared unconditionally.
    pub grant: Option<GrantId>,
    pub nonce: Nonce,
    pub time: Timestamp,
    /// Bytes already received and verified (resume).
    pub offset: u64,
}

crate::signed::signed_object!(FetchRequest, Kind::FetchRequest, 4 * 1024, requester);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    pub v: u32,
    pub exchange: ExchangeId,
    /// Hash of the signed fetch request this ticket answers.
    pub request: Hash,
    pub provider: MemberId,
    pub requester: MemberId,
    pub dataset: DatasetId,
    pub version: u64,
    /// The fields sent, when projected.
    pub fields: Option<Vec<String>>,
    /// BLAKE3 of the complete bytes of this delivery (projected if `fields` is set).
    pub content_hash: Hash,
    pub size: u64,
    pub offset: u64,
    /// The delivery is sent in chunks of this many bytes (the last may be shorter)...
    pub chunk_size: u32,
    /// ...and this is the BLAKE3 hash of the concatenated 32-byte BLAKE3 hashes of all chunks
    /// (the chunk table, sent with the ticket), so each chunk is verified as it arrives.
    pub chunks: Hash,
    pub time: Timestamp,
}

impl Ticket {
    /// The number of chunks of a delivery of `size` bytes.
    pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
        if chunk_size == 0 { 0 } else { size.div_ceil(u64::from(chunk_size)) }
    }

    /// The hash that names a chunk table.
    pub fn table_hash(chunk_hashes: &[Hash]) -> Hash {
        let mut h = blake3::Hasher::new();
        for c in chunk_hashes {
            h.update(&c.0);
        }
        h.finalize().into()
    }
}

crate::signed::signed_object!(Ticket, Kind::Ticket, 16 * 1024, provider);

/// Asks for the records of a keyed dataset whose key field equals `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub v: u32,
    pub requester: MemberId,
    pub provider: MemberId,
    pub dataset: DatasetId,
    /// The grant held; absent for datasets shared unconditionally.
    pub grant: Option<GrantId>,
    pub key: String,
    pub nonce: Nonce,
    pub time: Timestamp,
}

crate::signed::signed_object!(QueryRequest, Kind::QueryRequest, 8 * 1024, requester);

/// The provider's signed answer: the hash of exactly the record bytes sent with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryAnswer {
    pub v: u32,
    pub exchange: ExchangeId,
    /// Hash of the signed query request this answers.
    pub request: Hash,
    pub provider: MemberId,
    pub requester: MemberId,
    pub dataset: DatasetId,
    pub version: u64,
    /// The fields returned, when projected.
    pub fields: Option<Vec<String>>,
    /// BLAKE3 of the records as sent (a JSON array of objects).
    pub records: Hash,
    pub count: u64,
    pub time: Timestamp,
}

crate::signed::signed_object!(QueryAnswer, Kind::QueryAnswer, 16 * 1024, provider);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub v: u32,
    pub exchange: ExchangeId,
    pub requester: MemberId,
    pub provider: MemberId,
    pub content_hash: Hash,
    pub bytes: u64,
    pub time: Timestamp,
}

crate::signed::signed_object!(Receipt, Kind::Receipt, 4 * 1024, requester);
