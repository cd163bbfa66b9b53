//! Access requests, decisions, grants and revocations.
//!
//! A requester asks a provider for a dataset, for a stated purpose, optionally for some fields
//! only. The provider's admin answers with a signed decision: approved (naming the grant it
//! issued) or denied (always with a reason). A grant is the provider's signed permission: it names
//! the grantee, the dataset, the purpose, the fields (a projection: only those columns are ever
//! sent), a validity window and optionally a maximum number of fetches. A revocation, signed by
//! the same provider, ends a grant at once.

use serde::{Deserialize, Serialize};

use crate::crypto::Kind;
use crate::id::{DatasetId, GrantId, MemberId, RequestId};
use crate::time::Timestamp;

/// Most fields a projection may name.
pub const MAX_FIELDS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    pub v: u32,
    pub id: RequestId,
    pub requester: MemberId,
    pub provider: MemberId,
    pub dataset: DatasetId,
    pub purpose: String,
    pub fields: Option<Vec<String>>,
    pub time: Timestamp,
}

crate::signed::signed_object!(AccessRequest, Kind::AccessRequest, 16 * 1024, requester);

/// The provider's answer to an access request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Approved { grant: GrantId },
    Denied { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub v: u32,
    pub request: RequestId,
    pub provider: MemberId,
    pub requester: MemberId,
    pub outcome: Outcome,
    pub time: Timestamp,
}

crate::signed::signed_object!(Decision, Kind::Decision, 8 * 1024, provider);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub v: u32,
    pub id: GrantId,
    pub provider: MemberId,
    pub grantee: MemberId,
    pub dataset: DatasetId,
    pub purpose: String,
    /// Projection: when set, only these fields are ever delivered.
    pub fields: Option<Vec<String>>,
    pub not_before: Timestamp,
    pub expires: Timestamp,
    pub max_fetches: Option<u64>,
    /// The access request this grant answers, if any.
    pub request: Option<RequestId>,
    /// Most record queries under this grant. Absent (not null) when unlimited, so grants
    /// without a query budget keep the encoding they always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queries: Option<u64>,
}

impl Grant {
    /// Whether the grant's window contains `now` (revocation and fetch counts are checked apart).
    pub fn in_window(&self, now: Timestamp) -> bool {
        self.not_before <= now && now < self.expires
    }
}

crate::signed::signed_object!(Grant, Kind::Grant, 16 * 1024, provider);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub v: u32,
    pub grant: GrantId,
    pub provider: MemberId,
    pub grantee: MemberId,
    pub time: Timestamp,
    pub reason: String,
}

crate::signed::signed_object!(Revocation, Kind::Revocation, 8 * 1024, provider);
