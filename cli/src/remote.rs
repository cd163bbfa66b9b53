//! Commands that ask the running node through its admin socket: status, peers, publish,
//! withdraw, catalog.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use deltafed_node::admin::api::{
    self, CatalogItem, ManifestView, Peer, PublishRequest, Published, Request, Status, Withdrawn,
};
use deltafed_node::admin::client::Client;
use deltafed_node::sources::Selection;
use deltafed_protocol::manifest::{Classification, Format, Sharing};
use deltafed_protocol::{DatasetId, DatasetRef, MemberId};

use crate::cli::Global;
use crate::output::emit;

pub fn client(g: &Global) -> Result<Client> {
    let dir = g.data_dir()?;
    Ok(Client::connect(dir.root(), &dir.admin_socket())?)
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The data file (CSV, JSON Lines, or anything else as raw bytes); or --source.
    #[arg(required_unless_present = "source")]
    pub file: Option<PathBuf>,
    /// Publish a snapshot of a database source instead of a file (see `deltafed source add`):
    /// with --table or --sql. Columns keep their database types (docs/sources.md).
    #[arg(long, value_name = "NAME", conflicts_with = "file")]
    pub source: Option<String>,
    /// The table (or SCHEMA.TABLE) to publish, every column.
    #[arg(long, value_name = "TABLE", requires = "source", conflicts_with = "sql")]
    pub table: Option<String>,
    /// One SELECT statement to publish the rows of (run in a read-only transaction).
    #[arg(long, value_name = "QUERY", requires = "source", required_unless_present_any = ["file", "table"])]
    pub sql: Option<String>,
    /// Answer record calls from the table itself, as it is when called (needs --table and
    /// --key-field, and an index on the key column). Fetch still delivers the snapshot.
    #[arg(long, requires = "table")]
    pub live: bool,
    /// Republish on this period (15m, 1h, 1d); a new version is made only when the data changed.
    #[arg(long, value_name = "DURATION", requires = "source")]
    pub every: Option<String>,
    /// Dataset id, e.g. business-licences.
    #[arg(long)]
    pub dataset: DatasetId,
    /// A title for the catalog.
    #[arg(long)]
    pub title: String,
    /// A longer description for the catalog.
    #[arg(long, default_value = "")]
    pub description: String,
    /// general, important or core (GB/T 43697).
    #[arg(long, default_value = "general")]
    pub classification: Classification,
    /// unconditional (any member), conditional (under a grant) or none (listed, never served).
    #[arg(long, default_value = "conditional")]
    pub sharing: Sharing,
    /// A field that record queries look up.
    #[arg(long)]
    pub key_field: Option<String>,
    /// csv, jsonl or raw. Default: from the file's extension.
    #[arg(long)]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CatalogArgs {
    #[command(subcommand)]
    pub show: Option<CatalogCommand>,
    /// Only datasets of this publisher.
    #[arg(long)]
    pub publisher: Option<MemberId>,
    /// Only datasets whose id, title or description contains this text.
    #[arg(long)]
    pub query: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// One manifest: its schema and signature status.
    Show {
        /// MEMBER/DATASET or MEMBER/DATASET@VERSION.
        dataset: DatasetRef,
    },
}

pub fn status(g: &Global) -> Result<ExitCode> {
    let s: Status = client(g)?.call(&Request::Status)?;
    emit(g.json, &s, || {
        format!(
            "{} ({})\nfederation {} (roster version {})\nlistening on {}\ngateway {}\ndashboard {}\nmetrics {}/metrics\nconnected: {}\ncatalog: {} datasets",
            s.member,
            s.peer_id,
            s.federation,
            s.roster_version,
            s.listen.join(" "),
            s.gateway_url,
            s.dashboard_url,
            s.metrics_url,
            if s.connected.is_empty() { "none".to_string() } else { s.connected.join(", ") },
            s.catalog_size
        )
    })
}

pub fn peers(g: &Global) -> Result<ExitCode> {
    let peers: Vec<Peer> = client(g)?.call(&Request::Peers)?;
    emit(g.json, &peers, || {
        if peers.is_empty() {
            return "no members connected".into();
        }
        peers
            .iter()
            .map(|p| format!("{:<12} {}  {}", p.member, p.peer_id, p.addrs.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub fn publish(g: &Global, a: PublishArgs) -> Result<ExitCode> {
    if let Some(source) = a.source {
        let selection = match (a.table, a.sql) {
            (Some(t), _) => Selection::Table(t),
            (None, Some(q)) => Selection::Sql(q),
            (None, None) => anyhow::bail!("--source needs --table or --sql"),
        };
        let req = Request::PublishSource(api::SourcePublishRequest {
            source,
            selection,
            dataset: a.dataset,
            title: a.title,
            description: a.description,
            classification: a.classification,
            sharing: a.sharing,
            key_field: a.key_field,
            format: a.format,
            live: a.live,
            every: a.every,
        });
        let p: api::SourcePublished = client(g)?.call(&req)?;
        return emit(g.json, &p, || {
            let b = &p.published;
            let mut s = format!("{}/{}@{} {}", b.publisher, b.dataset, b.version, b.content_hash);
            if p.live {
                s += " (live)";
            }
            if let Some(e) = &p.every {
                s += &format!(", republished every {e} when changed");
            }
            s
        });
    }
    let Some(file) = a.file else { anyhow::bail!("give a FILE or --source") };
    let path = std::path::absolute(&file).with_context(|| format!("cannot resolve {}", file.display()))?;
    let req = Request::Publish(PublishRequest {
        path,
        dataset: a.dataset,
        title: a.title,
        description: a.description,
        classification: a.classification,
        sharing: a.sharing,
        key_field: a.key_field,
        format: a.format,
    });
    let p: Published = client(g)?.call(&req)?;
    emit(g.json, &p, || format!("{}/{}@{} {}", p.publisher, p.dataset, p.version, p.content_hash))
}

pub fn withdraw(g: &Global, dataset: DatasetId, reason: String) -> Result<ExitCode> {
    let w: Withdrawn = client(g)?.call(&Request::Withdraw { dataset, reason })?;
    emit(g.json, &w, || format!("withdrew {}/{} (up to version {})", w.publisher, w.dataset, w.version))
}

pub fn catalog(g: &Global, a: CatalogArgs) -> Result<ExitCode> {
    if let Some(CatalogCommand::Show { dataset }) = a.show {
        let m: ManifestView = client(g)?.call(&Request::CatalogShow { dataset })?;
        return emit(g.json, &m, || show_text(&m));
    }
    let items: Vec<CatalogItem> = client(g)?.call(&Request::Catalog { publisher: a.publisher, query: a.query })?;
    emit(g.json, &items, || {
        if items.is_empty() {
            return "the catalog is empty".into();
        }
        let mut s = format!("{:<40} {:<9} {:<13} {:>12}  {}\n", "DATASET", "CLASS", "SHARING", "SIZE", "TITLE");
        for i in &items {
            s += &format!(
                "{:<40} {:<9} {:<13} {:>12}  {}\n",
                format!("{}/{}@{}", i.publisher, i.dataset, i.version),
                i.classification.to_string(),
                i.sharing.to_string(),
                i.size,
                i.title
            );
        }
        s
    })
}

fn show_text(m: &ManifestView) -> String {
    let i = &m.item;
    let mut s = format!("{}/{}@{}  {}\n", i.publisher, i.dataset, i.version, i.title);
    if !m.description.is_empty() {
        s += &format!("  {}\n", m.description);
    }
    s += &format!(
        "  format {}, {} records, {} bytes, classification {}, sharing {}\n  content hash {}\n  created {}\n",
        i.format, i.records, i.size, i.classification, i.sharing, i.content_hash, i.created
    );
    if let Some(k) = &m.key_field {
        s += &format!("  key field {k}\n");
    }
    for f in &m.schema {
        s += &format!("    {:<24} {}\n", f.name, f.ty);
    }
    s += &format!(
        "  signature {} by {}\n",
        if m.signature_valid { "valid (publisher's key in the roster)" } else { "NOT VALID for this publisher" },
        m.signer
    );
    s
}

/// Hands a roster to the running node, if one answers; `None` when no node runs.
pub fn install_roster_live(g: &Global, bytes: &[u8]) -> Result<Option<api::RosterInstalled>> {
    let dir = g.data_dir()?;
    let Ok(mut c) = Client::connect(dir.root(), &dir.admin_socket()) else {
        return Ok(None);
    };
    Ok(Some(c.call(&Request::RosterInstall { roster: hex::encode(bytes) })?))
}
