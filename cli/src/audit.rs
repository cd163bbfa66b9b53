//! `deltafed provenance`: the log, its verification and its export. Verification and export work
//! without a running node too (an auditor can check a copied data dir offline); with a node
//! running they go through it, which also checks the copies of our checkpoints that peers hold.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use deltafed_node::admin::api::{Exported, Request};
use deltafed_node::admin::client::Client;
use deltafed_node::provenance::{EntryView, Provenance, VerifyReport};
use deltafed_node::store::Store;
use deltafed_node::{Config, keyfile};
use deltafed_protocol::{DatasetRef, MemberId};

use crate::cli::Global;
use crate::output::emit;
use crate::remote::client;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProvenanceArgs {
    #[command(subcommand)]
    pub command: Option<ProvenanceCommand>,
    /// Only entries about this dataset (MEMBER/DATASET).
    #[arg(long)]
    pub dataset: Option<DatasetRef>,
    /// Only entries involving this member.
    #[arg(long)]
    pub peer: Option<MemberId>,
    /// Only entries at or after this time (RFC 3339, or a duration back from now such as 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many entries (newest first).
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum ProvenanceCommand {
    /// Check the whole chain and every checkpoint; exit 0 only when intact.
    Verify,
    /// Write the log as JSON Lines (one entry a line, oldest first) for auditors.
    Export {
        /// The file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
}

/// The log opened directly, when no node runs (read-only: the data dir is not modified).
fn offline(g: &Global) -> Result<Provenance> {
    let dir = g.data_dir()?;
    let cfg =
        Config::load(&dir.config()).with_context(|| format!("{} is not a deltafed data dir", dir.root().display()))?;
    let member = cfg.member.context("the config names no member")?;
    let store = Store::open_read_only(&dir.db()).context("cannot open the database read-only")?;
    let mut prov = Provenance::open(store, member, None)?;
    // The member's own key checks its checkpoints; the key file may be absent from a copy.
    if let Ok(key) = keyfile::read(&dir.key()) {
        prov = prov.with_signer(key.public());
    }
    Ok(prov)
}

fn running(g: &Global) -> Result<Option<Client>> {
    let dir = g.data_dir()?;
    Ok(Client::connect(dir.root(), &dir.admin_socket()).ok())
}

pub fn run(g: &Global, a: ProvenanceArgs) -> Result<ExitCode> {
    match a.command {
        None => {
            let entries: Vec<EntryView> = client(g)?.call(&Request::Provenance {
                dataset: a.dataset,
                peer: a.peer,
                since: a.since,
                limit: a.limit,
            })?;
            emit(g.json, &entries, || {
                let mut s = String::new();
                for e in &entries {
                    s += &format!(
                        "#{:<6} {}  {:<20} {:<28} {:<10} {}\n",
                        e.seq,
                        e.time,
                        e.kind,
                        e.dataset.clone().unwrap_or_default(),
                        e.peer.clone().unwrap_or_default(),
                        e.note
                    );
                }
                if s.is_empty() { "no entries".into() } else { s }
            })
        }
        Some(ProvenanceCommand::Verify) => {
            let report: VerifyReport = match running(g)? {
                Some(mut c) => c.call(&Request::ProvenanceVerify)?,
                None => offline(g)?.verify(&[])?,
            };
            let code = if report.intact { ExitCode::SUCCESS } else { ExitCode::FAILURE };
            emit(g.json, &report, || {
                if report.intact {
                    format!(
                        "intact: {} entries, head {}, {} checkpoint(s) and {} witnessed checkpoint(s) hold",
                        report.entries,
                        report.head_hash.clone().unwrap_or_else(|| "(empty)".into()),
                        report.checkpoints_checked,
                        report.witnesses_checked
                    )
                } else {
                    format!("BROKEN:\n  {}", report.problems.join("\n  "))
                }
            })?;
            if !report.intact && !g.json {
                eprintln!(
                    "error: the provenance log is not intact: {}",
                    report.problems.first().cloned().unwrap_or_default()
                );
            }
            Ok(code)
        }
        Some(ProvenanceCommand::Export { out }) => {
            let out = std::path::absolute(&out).with_context(|| format!("cannot resolve {}", out.display()))?;
            let ex: Exported = match running(g)? {
                Some(mut c) => c.call(&Request::ProvenanceExport { out })?,
                None => {
                    let prov = offline(g)?;
                    let n = deltafed_node::node::export_to(&prov, &out)?;
                    Exported { out: out.display().to_string(), entries: n }
                }
            };
            emit(g.json, &ex, || format!("exported {} entries to {}", ex.entries, ex.out))
        }
    }
}
