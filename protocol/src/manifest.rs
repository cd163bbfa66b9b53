//! Dataset manifests and withdrawals.
//!
//! A manifest describes one version of a dataset and binds it to its content by BLAKE3 hash; it is
//! signed by the publisher and gossiped to every member. Versions count from 1 and only grow: a
//! receiver keeps the newest version it has verified and ignores older ones. A withdrawal, also
//! signed by the publisher, removes the dataset from catalogs (up to the version it names; a later
//! publish brings the dataset back).

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, Kind};
use crate::id::{DatasetId, DatasetRef, MemberId};
use crate::time::Timestamp;

/// How the data is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Raw,
}

impl Format {
    /// The default for a file name: `.csv` csv, `.jsonl` jsonl, anything else raw.
    pub fn from_file_name(name: &str) -> Format {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Format::Csv
        } else if lower.ends_with(".jsonl") {
            Format::Jsonl
        } else {
            Format::Raw
        }
    }
}

/// Grades of GB/T 43697 (Data Security Law).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Classification {
    General,
    Important,
    Core,
}

/// Who may receive the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Any member, without a grant (still signed and logged).
    Unconditional,
    /// Only under a grant.
    #[default]
    Conditional,
    /// Listed so others know it exists; never served.
    None,
}

macro_rules! text_enum {
    ($t:ty, $($v:ident => $s:expr),+) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self { $(Self::$v => $s),+ })
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!("{s:?} is not one of: {}", [$($s),+].join(", "))),
                }
            }
        }
    };
}
text_enum!(Format, Csv => "csv", Jsonl => "jsonl", Raw => "raw");
text_enum!(Classification, General => "general", Important => "important", Core => "core");
text_enum!(Sharing, Unconditional => "unconditional", Conditional => "conditional", None => "none");
text_enum!(FieldType, String => "string", Integer => "integer", Number => "number", Boolean => "boolean");

/// The type of a field, as read from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: FieldType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub v: u32,
    pub publisher: MemberId,
    pub dataset: DatasetId,
    pub version: u64,
    pub title: String,
    pub description: String,
    pub format: Format,
    /// Field names and types, in column order (empty for raw data).
    pub schema: Vec<Field>,
    /// The field record queries look up, if any.
    pub key_field: Option<String>,
    pub classification: Classification,
    pub sharing: Sharing,
    pub size: u64,
    pub records: u64,
    pub content_hash: Hash,
    pub created: Timestamp,
    /// Record calls are answered from the publisher's database as it is now, not from the
    /// snapshot `content_hash` names (which fetch still delivers). Absent when false, so the
    /// encoding of every other manifest is unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

impl Manifest {
    pub fn dataset_ref(&self) -> DatasetRef {
        DatasetRef { publisher: self.publisher.clone(), dataset: self.dataset.clone(), version: Some(self.version) }
    }
}

// Gossip messages are capped at 64 KiB; a manifest leaves room for the envelope.
crate::signed::signed_object!(Manifest, Kind::Manifest, 48 * 1024, publisher);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    pub v: u32,
    pub publisher: MemberId,
    pub dataset: DatasetId,
    /// The newest version withdrawn; versions above it (published later) are not affected.
    pub version: u64,
    pub reason: String,
    pub time: Timestamp,
}

crate::signed::signed_object!(Withdrawal, Kind::Withdrawal, 8 * 1024, publisher);
