//! Requests and results of the admin API (their JSON is a public contract: the CLI's `--json`).

use std::path::PathBuf;

use deltafed_protocol::manifest::{Classification, Format, Manifest, Sharing};
use deltafed_protocol::{DatasetId, DatasetRef, MemberId, Signed};
use serde::{Deserialize, Serialize};

/// Largest request line accepted.
pub const MAX_REQUEST_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Status,
    Peers,
    Publish(PublishRequest),
    Withdraw {
        dataset: DatasetId,
        reason: String,
    },
    Catalog {
        publisher: Option<MemberId>,
        query: Option<String>,
    },
    CatalogShow {
        dataset: DatasetRef,
    },
    /// A roster file's bytes, hex-encoded.
    RosterInstall {
        roster: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Absolute path of the file to import, readable by the node.
    pub path: PathBuf,
    pub dataset: DatasetId,
    pub title: String,
    pub description: String,
    pub classification: Classification,
    pub sharing: Sharing,
    pub key_field: Option<String>,
    /// Default: from the file's extension.
    pub format: Option<Format>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub member: String,
    pub peer_id: String,
    pub federation: String,
    pub roster_version: u64,
    /// Multiaddrs actually bound.
    pub listen: Vec<String>,
    /// Member ids of connected members.
    pub connected: Vec<String>,
    pub catalog_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peer {
    pub member: String,
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// Gossip score; negative after invalid messages.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub publisher: String,
    pub dataset: String,
    pub version: u64,
    pub content_hash: String,
    pub size: u64,
    pub records: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Withdrawn {
    pub publisher: String,
    pub dataset: String,
    pub version: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogItem {
    pub publisher: String,
    pub dataset: String,
    pub version: u64,
    pub title: String,
    pub classification: Classification,
    pub sharing: Sharing,
    pub format: Format,
    pub size: u64,
    pub records: u64,
    pub content_hash: String,
    pub created: String,
}

impl From<&Manifest> for CatalogItem {
    fn from(m: &Manifest) -> Self {
        CatalogItem {
            publisher: m.publisher.to_string(),
            dataset: m.dataset.to_string(),
            version: m.version,
            title: m.title.clone(),
            classification: m.classification,
            sharing: m.sharing,
            format: m.format,
            size: m.size,
            records: m.records,
            content_hash: m.content_hash.to_string(),
            created: m.created.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldView {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestView {
    #[serde(flatten)]
    pub item: CatalogItem,
    pub description: String,
    pub schema: Vec<FieldView>,
    pub key_field: Option<String>,
    /// The key that signed it, and whether it verified as the publisher's key in the roster.
    pub signer: String,
    pub signature: String,
    pub signature_valid: bool,
}

impl ManifestView {
    pub fn new(m: &Signed<Manifest>, signature_valid: bool) -> ManifestView {
        let b = m.body();
        ManifestView {
            item: CatalogItem::from(b),
            description: b.description.clone(),
            schema: b
                .schema
                .iter()
                .map(|f| FieldView {
                    name: f.name.clone(),
                    ty: f.ty.to_string(),
                })
                .collect(),
            key_field: b.key_field.clone(),
            signer: m.signer().to_string(),
            signature: m.signature().to_string(),
            signature_valid,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RosterInstalled {
    pub federation: String,
    pub version: u64,
    pub members: Vec<String>,
}
