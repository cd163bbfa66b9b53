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
use crate::signed::{Authored, Object};
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

impl Object for FetchRequest {
    const KIND: Kind = Kind::FetchRequest;
    const MAX_SIZE: usize = 4 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

impl Authored for FetchRequest {
    fn author(&self) -> &MemberId {
        &self.requester
    }
}

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
    pub time: Timestamp,
}

impl Object for Ticket {
    const KIND: Kind = Kind::Ticket;
    const MAX_SIZE: usize = 16 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

impl Authored for Ticket {
    fn author(&self) -> &MemberId {
        &self.provider
    }
}

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

impl Object for Receipt {
    const KIND: Kind = Kind::Receipt;
    const MAX_SIZE: usize = 4 * 1024;
    fn version(&self) -> u32 {
        self.v
    }
}

impl Authored for Receipt {
    fn author(&self) -> &MemberId {
        &self.requester
    }
}
