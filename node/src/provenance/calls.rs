//! How a batch entry's calls read in audit output and exports: each call with its leaf hash and
//! its inclusion proof under the signed batch (and its result's, under the signed answer), so
//! one call can be checked with nothing but the export (docs/audit.md says how).

use deltafed_protocol::calls::{Call, CallResult, Outcome, Salt};
use deltafed_protocol::provenance::CallLog;
use deltafed_protocol::{Hash, OBJECT_VERSION, merkle, signed};

/// One call of a batch entry.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallView {
    /// Position in the batch (the leaf index).
    pub index: u64,
    /// `MEMBER/DATASET` is the entry's peer or this member; the dataset id alone here.
    pub dataset: String,
    pub app: Option<String>,
    pub on_behalf_of: Option<String>,
    /// The keyed hash of the key asked (`deltafed provenance --key K` finds it).
    pub key_hash: String,
    /// `answered`, `refused` or `deferred`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Records answered and the BLAKE3 of their JSON as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The call's canonical bytes, hex: its leaf is `BLAKE3(0x00 || "deltafed/v1/call" || 0x00 || call)`.
    pub call: String,
    pub leaf: String,
    /// Sibling hashes from the leaf up to the signed batch's root (RFC 9162 §2.1.3.2).
    pub proof: Vec<String>,
    /// The result's canonical bytes, hex (a `CallResult` naming `leaf`), its leaf and its proof
    /// up to the signed answer's root.
    pub result: String,
    pub result_leaf: String,
    pub result_proof: Vec<String>,
}

fn hexes(v: &[Hash]) -> Vec<String> {
    v.iter().map(Hash::to_string).collect()
}

/// The views of a batch's calls; a call that does not decode shows what can be shown.
pub fn views(calls: &[CallLog]) -> Vec<CallView> {
    let leaves: Vec<Hash> = calls.iter().map(|c| deltafed_protocol::calls::leaf_of::<Call>(&c.call)).collect();
    let decoded: Vec<Option<Call>> = calls.iter().map(|c| signed::decode(&c.call).ok()).collect();
    let results: Vec<Vec<u8>> = calls
        .iter()
        .zip(&leaves)
        .zip(&decoded)
        .map(|((c, leaf), d)| {
            // As the provider built it: the call's salt, or zeros for a call that did not decode.
            let salt = d.as_ref().map_or(Salt([0; 16]), |c| c.salt);
            signed::encode(&CallResult { v: OBJECT_VERSION, call: *leaf, salt, outcome: c.outcome.clone() })
                .unwrap_or_default()
        })
        .collect();
    let result_leaves: Vec<Hash> = results.iter().map(|r| deltafed_protocol::calls::leaf_of::<CallResult>(r)).collect();
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let call = decoded[i].as_ref();
            let (outcome, version, fields, records, records_hash, reason) = match &c.outcome {
                Outcome::Answered { version, fields, records, count, .. } => {
                    ("answered", Some(*version), fields.clone(), Some(*count), Some(records.to_string()), None)
                }
                Outcome::Refused { reason } => ("refused", None, None, None, None, Some(reason.clone())),
                Outcome::Unavailable { reason } => ("unavailable", None, None, None, None, Some(reason.clone())),
                Outcome::Deferred => ("deferred", None, None, None, None, None),
            };
            CallView {
                index: i as u64,
                dataset: call.map(|c| c.dataset.to_string()).unwrap_or_default(),
                app: call.and_then(|c| c.app.clone()),
                on_behalf_of: call.and_then(|c| c.on_behalf_of.clone()),
                key_hash: c.key.to_string(),
                outcome: outcome.into(),
                version,
                fields,
                records,
                records_hash,
                reason,
                call: hex::encode(&c.call),
                leaf: leaves[i].to_string(),
                proof: hexes(&merkle::proof(&leaves, i).unwrap_or_default()),
                result: hex::encode(&results[i]),
                result_leaf: result_leaves[i].to_string(),
                result_proof: hexes(&merkle::proof(&result_leaves, i).unwrap_or_default()),
            }
        })
        .collect()
}
