//! Requests and results of the admin API (their JSON is a public contract: the CLI's `--json`).

use std::path::PathBuf;

use deltafed_protocol::manifest::{Classification, Format, Manifest, Sharing};
use deltafed_protocol::{DatasetId, DatasetRef, GrantId, MemberId, RequestId, Signed};
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
    /// Ask a provider for access (`deltafed request`).
    AccessRequest {
        dataset: DatasetRef,
        purpose: String,
        fields: Option<Vec<String>>,
    },
    Requests,
    Approve {
        request_id: RequestId,
        expires: Option<String>,
        max_fetches: Option<u64>,
        #[serde(default)]
        max_queries: Option<u64>,
    },
    Deny {
        request_id: RequestId,
        reason: String,
    },
    Grant(GrantRequest),
    Grants,
    Revoke {
        grant_id: GrantId,
        reason: String,
    },
    /// Fetch a dataset into `out` (an absolute path the node can write); the node sends
    /// progress lines before the result.
    Fetch {
        dataset: DatasetRef,
        out: PathBuf,
    },
    /// Sharing calls for one key (`key`, the original form) or several (`keys`).
    Query {
        dataset: DatasetRef,
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        keys: Vec<String>,
    },
    Provenance {
        dataset: Option<DatasetRef>,
        peer: Option<MemberId>,
        since: Option<String>,
        limit: Option<usize>,
        /// The calls made for this key (found by the key's keyed hash).
        #[serde(default)]
        key: Option<String>,
        /// Also search the sealed segments in this directory, after the live log.
        #[serde(default)]
        archive: Option<PathBuf>,
    },
    ProvenanceVerify,
    ProvenanceExport {
        out: PathBuf,
    },
    /// Move entries older than `before` into sealed segments (`deltafed provenance archive`).
    ProvenanceArchive {
        before: String,
        /// Default: `[provenance] archive_dir`.
        #[serde(default)]
        out: Option<PathBuf>,
    },
    /// Verify the live log and, before it, every segment in `archive`.
    ProvenanceVerifyArchive {
        archive: PathBuf,
    },
    /// What is archived, and the segments in the archive directory.
    ProvenanceArchiveStatus,
    /// Register a local application of the gateway (`deltafed app add`).
    AppAdd {
        app: String,
        #[serde(default)]
        datasets: Vec<DatasetRef>,
        rate: Option<u32>,
    },
    AppList,
    AppRotate {
        app: String,
    },
    AppRemove {
        app: String,
    },
    /// Register a database connection (`deltafed source add`).
    SourceAdd {
        name: String,
        url: String,
        #[serde(default)]
        password_file: Option<PathBuf>,
        #[serde(default)]
        password_env: Option<String>,
    },
    SourceList,
    SourceRemove {
        name: String,
    },
    /// `deltafed publish --source ...`.
    PublishSource(SourcePublishRequest),
    /// A person who uses the dashboard (`deltafed user add`).
    UserAdd {
        user: String,
        role: crate::roles::Role,
    },
    UserList,
    UserRemove {
        user: String,
    },
}

/// A new dashboard user: the login secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserAdded {
    pub user: String,
    pub role: crate::roles::Role,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub user: String,
    pub role: crate::roles::Role,
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRemoved {
    pub user: String,
    pub removed: bool,
}

/// A snapshot of a table or query as a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcePublishRequest {
    pub source: String,
    pub selection: crate::sources::Selection,
    pub dataset: DatasetId,
    pub title: String,
    pub description: String,
    pub classification: Classification,
    pub sharing: Sharing,
    pub key_field: Option<String>,
    /// csv or jsonl (the default).
    pub format: Option<Format>,
    /// Record calls are answered from the table itself.
    #[serde(default)]
    pub live: bool,
    /// Republish on this period (`15m`, `1h`), making a version only when the data changed.
    #[serde(default)]
    pub every: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    pub dataset: DatasetId,
    pub to: MemberId,
    pub purpose: String,
    pub fields: Option<Vec<String>>,
    /// RFC 3339 time or a duration (`30d`); default from the config.
    pub expires: Option<String>,
    pub max_fetches: Option<u64>,
    #[serde(default)]
    pub max_queries: Option<u64>,
    /// RFC 3339 time or a duration from now (`7d`) before which the grant is not valid;
    /// default now.
    #[serde(default)]
    pub not_before: Option<String>,
}

/// Sent before the final reply of long operations.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
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
    /// Present on progress lines, which precede the final reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On errors: `refused`, `not_found`, `invalid`, `unavailable` or `internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
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
    /// Where the application gateway listens, as bound (`http://127.0.0.1:8480`).
    pub gateway_url: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, as bound (`http://127.0.0.1:9480`).
    #[serde(default)]
    pub metrics_url: String,
    /// Where the dashboard is served, as bound (`http://127.0.0.1:8481`).
    #[serde(default)]
    pub dashboard_url: String,
    /// RocksDB's block cache and write buffers now, against their `[storage]` bounds (bytes).
    #[serde(default)]
    pub storage: Option<crate::store::MemoryUsage>,
    /// Sharing calls since start: batches and calls sent (requester) and served (provider).
    #[serde(default)]
    pub calls: crate::node::CallCounts,
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

impl From<&Manifest> for Published {
    fn from(b: &Manifest) -> Published {
        Published {
            publisher: b.publisher.to_string(),
            dataset: b.dataset.to_string(),
            version: b.version,
            content_hash: b.content_hash.to_string(),
            size: b.size,
            records: b.records,
        }
    }
}

/// What `publish --source` did: what `publish` prints, and the source's own fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourcePublished {
    #[serde(flatten)]
    pub published: Published,
    pub live: bool,
    /// The schedule, when `--every` was given.
    pub every: Option<String>,
}

/// A source as shown: the URL with its password replaced by `***`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceView {
    pub name: String,
    pub url: String,
    /// `none`, `url`, `file:PATH` or `env:VAR`: where the password comes from.
    pub password: String,
    pub created: String,
    pub schedules: Vec<ScheduleView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    pub dataset: String,
    pub every: String,
    /// RFC 3339.
    pub next: String,
    /// When the last run was and what it did.
    pub last: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceRemoved {
    pub name: String,
    pub removed: bool,
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
    /// Record calls are answered from the publisher's database as it is when called.
    #[serde(default)]
    pub live: bool,
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
            live: m.live,
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
            schema: b.schema.iter().map(|f| FieldView { name: f.name.clone(), ty: f.ty.to_string() }).collect(),
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSent {
    pub request_id: String,
    pub provider: String,
    pub dataset: String,
    /// False when the provider was unreachable; it is delivered when the provider connects.
    pub delivered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestView {
    pub request_id: String,
    /// `incoming` (we are the provider) or `outgoing` (we asked).
    pub direction: String,
    pub requester: String,
    pub provider: String,
    pub dataset: String,
    pub purpose: String,
    pub fields: Option<Vec<String>>,
    pub time: String,
    /// When the provider's answer is due.
    pub deadline: String,
    /// `pending`, `approved` or `denied`.
    pub state: String,
    /// Pending past the deadline.
    pub overdue: bool,
    pub grant_id: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    pub request_id: String,
    pub state: String,
    pub grant_id: Option<String>,
    pub reason: Option<String>,
    pub delivered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantIssued {
    pub grant_id: String,
    pub grantee: String,
    pub dataset: String,
    pub expires_at: String,
    /// True when the grantee acknowledged it; otherwise it is delivered when the grantee connects.
    pub delivered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantView {
    pub grant_id: String,
    pub provider: String,
    pub grantee: String,
    pub dataset: String,
    pub purpose: String,
    pub fields: Option<Vec<String>>,
    pub not_before: String,
    pub expires_at: String,
    pub max_fetches: Option<u64>,
    pub fetches: u64,
    pub max_queries: Option<u64>,
    pub queries: u64,
    pub revoked: bool,
    pub revoked_reason: Option<String>,
    /// `issued` (we are the provider) or `received`.
    pub role: String,
    pub expired: bool,
    pub delivered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub grant_id: String,
    pub grantee: String,
    pub delivered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetched {
    pub publisher: String,
    pub dataset: String,
    pub version: u64,
    pub exchange_id: String,
    pub content_hash: String,
    pub bytes: u64,
    pub out: String,
    pub fields: Option<Vec<String>>,
    /// Bytes that an earlier, interrupted attempt had already verified.
    pub resumed_from: u64,
    /// How the data came: `direct` (the data path, one TLS stream) or `libp2p` (chunks asked
    /// over libp2p, when the provider does not take the data path).
    #[serde(default)]
    pub transport: String,
}

/// The answer for one key (what `deltafed query --json` prints for a single key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryResult {
    pub dataset: String,
    pub key: String,
    pub exchange_id: String,
    pub fields: Option<Vec<String>>,
    pub records: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The dataset version that answered.
    #[serde(default)]
    pub version: Option<u64>,
    /// For a live dataset: when the rows were read from the provider's database (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

/// The answers for several keys: one result per key, in order, each with records or an error.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryResults {
    /// `MEMBER/DATASET@VERSION`.
    pub dataset: String,
    pub results: Vec<KeyResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyResult {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exported {
    pub out: String,
    pub entries: u64,
    /// The first seq exported: 0, or the one after the last archived entry.
    #[serde(default)]
    pub first_seq: u64,
    /// Where the entries before `first_seq` are, as sealed segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_dir: Option<String>,
}

/// The outcome of `deltafed provenance archive`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedView {
    pub dir: String,
    /// Entries moved into segments by this run.
    pub entries: u64,
    /// The segments written by this run, oldest first.
    pub segments: Vec<crate::provenance::SegmentInfo>,
    /// The last archived seq (the live log starts after it), and its hash.
    pub archived_through: Option<u64>,
    pub archived_hash: Option<String>,
    /// Why nothing was archived, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nothing: Option<String>,
}

/// `deltafed provenance` asks this to say what a query of the live log cannot show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveStatusView {
    /// The directory of the newest segment (before any archive: the configured one).
    pub dir: Option<String>,
    pub archived_through: Option<u64>,
    pub archived_hash: Option<String>,
    /// The newest segment, which the live log continues.
    pub newest_segment: Option<String>,
    /// The latest entry time among the archived entries (RFC 3339).
    pub archived_until: Option<String>,
    pub segments: Vec<crate::provenance::SegmentInfo>,
    /// Segment files that could not be read, each with why.
    pub unreadable: Vec<String>,
}

/// A new application, or a new token for one: the token is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppIssued {
    pub app: String,
    /// The bearer token; only its hash is kept.
    pub token: String,
    pub datasets: Vec<String>,
    /// Calls per second.
    pub rate: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppView {
    pub app: String,
    pub datasets: Vec<String>,
    pub rate: u32,
    pub created: String,
    /// Calls admitted so far (a key of a records call, a content download, a catalog listing).
    pub calls: u64,
    pub last_call: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRemoved {
    pub app: String,
    pub removed: bool,
}
