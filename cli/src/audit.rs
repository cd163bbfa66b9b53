//! `deltafed provenance`: the log, its verification, its export and its sealed archives.
//! Verification and export work without a running node too (an auditor can check a copied data
//! dir offline, or a directory of segments with only the roster); with a node running they go
//! through it, which also checks the copies of our checkpoints that peers hold.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use deltafed_node::admin::api::{ArchiveStatusView, ArchivedView, Exported, Request};
use deltafed_node::admin::client::Client;
use deltafed_node::provenance::archive;
use deltafed_node::provenance::{EntryView, Provenance, VerifyReport};
use deltafed_node::store::Store;
use deltafed_node::{Config, keyfile, rosterfile};
use deltafed_protocol::{DatasetRef, MemberId, PublicKey, Timestamp};

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
    /// Only the sharing calls made for this key (the log holds keys only as keyed hashes, which
    /// the running node computes, for the live log and the archive alike).
    #[arg(long)]
    pub key: Option<String>,
    /// Also search the sealed segments in this directory (older entries, listed after the live
    /// log's). Without it, a query whose range reaches into the archive says so on stderr.
    #[arg(long, value_name = "DIR")]
    pub archive: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ProvenanceCommand {
    /// Check the whole chain and every checkpoint; exit 0 only when intact.
    ///
    /// The live log must continue the newest archived segment. With --archive DIR, every
    /// segment in DIR is checked too, oldest first: its entries chain, its header agrees with
    /// them, its checkpoint is the member's and covers its last entry, and it names the hash of
    /// the segment file before it. With --archive and no data dir, only the segments are
    /// checked (an auditor holding the archive and the roster).
    Verify {
        /// Check the sealed segments in this directory as well.
        #[arg(long, value_name = "DIR")]
        archive: Option<PathBuf>,
        /// The federation's roster, for the member's key (default: the member's key file).
        #[arg(long, value_name = "FILE")]
        roster: Option<PathBuf>,
    },
    /// Write the live log as JSON Lines (one entry a line, oldest first) for auditors.
    ///
    /// Archived entries are not in it: they are in the sealed segments (`deltafed provenance
    /// verify --archive DIR` checks them), and the export's first entry continues the newest.
    Export {
        /// The file to write (replaced atomically).
        #[arg(long)]
        out: PathBuf,
    },
    /// Move old entries into sealed segment files and remove them from the database.
    ///
    /// Archives up to the newest own checkpoint signed before --before that a peer has
    /// acknowledged holding; refused while no such checkpoint covers the old entries. Needs the
    /// running node.
    Archive {
        /// Entries older than this (RFC 3339, or a duration back from now such as 180d).
        #[arg(long)]
        before: String,
        /// Where to write the segments (default: `[provenance] archive_dir`, `DIR/archive`).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// The log opened directly, when no node runs (read-only: the data dir is not modified).
fn offline(g: &Global) -> Result<Provenance> {
    let dir = g.data_dir()?;
    let cfg =
        Config::load(&dir.config()).with_context(|| format!("{} is not a deltafed data dir", dir.root().display()))?;
    let member = cfg.member.context("the config names no member")?;
    let store = Store::open_read_only(&dir.db()).context("cannot open the database read-only")?;
    let mut prov = Provenance::open(store, member, None)?.with_archive_dir(dir.resolve(&cfg.provenance.archive_dir));
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

/// The member's key in the roster file `roster`.
fn roster_key(roster: &Path, member: &MemberId) -> Result<PublicKey> {
    let r = rosterfile::read(roster).with_context(|| format!("cannot read the roster {}", roster.display()))?;
    r.roster.key_of(member).copied().with_context(|| format!("{member} is not in the roster {}", roster.display()))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("cannot resolve {}", p.display()))
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

pub fn run(g: &Global, a: ProvenanceArgs) -> Result<ExitCode> {
    match a.command {
        None => list(g, a),
        Some(ProvenanceCommand::Verify { archive, roster }) => verify(g, archive, roster),
        Some(ProvenanceCommand::Export { out }) => export(g, out),
        Some(ProvenanceCommand::Archive { before, out }) => {
            let out = out.as_deref().map(absolute).transpose()?;
            let Some(mut c) = running(g)? else {
                bail!("archiving needs the running node (it holds the log); start it with `deltafed run`");
            };
            let a: ArchivedView = c.call(&Request::ProvenanceArchive { before, out })?;
            emit(g.json, &a, || match &a.nothing {
                Some(why) => why.clone(),
                None => {
                    let mut s =
                        format!("archived {} entries into {} segment(s) in {}:", a.entries, a.segments.len(), a.dir);
                    for seg in &a.segments {
                        s += &format!("\n  {} (entries {} to {}, {} bytes)", seg.name, seg.first, seg.last, seg.bytes);
                    }
                    if let Some(t) = a.archived_through {
                        s += &format!("\nthe live log now starts at seq {}", t.saturating_add(1));
                    }
                    s
                }
            })
        }
    }
}

/// Live entries, then (with --archive) archived ones; without --archive, says on stderr when the
/// range asked reaches into the archive, and which segments hold it.
fn list(g: &Global, a: ProvenanceArgs) -> Result<ExitCode> {
    let mut c = client(g)?;
    let since = a.since.as_deref().map(|s| Timestamp::parse_at_or_before(s, now())).transpose().context("--since")?;
    let archive = a.archive.as_deref().map(absolute).transpose()?;
    let searched = archive.is_some();
    let entries: Vec<EntryView> = c.call(&Request::Provenance {
        dataset: a.dataset.clone(),
        peer: a.peer.clone(),
        since: a.since.clone(),
        limit: a.limit,
        key: a.key.clone(),
        archive,
    })?;
    let room = a.limit.map_or(usize::MAX, |l| l.saturating_sub(entries.len()));
    if !searched
        && room > 0
        && let Ok(status) = c.call::<ArchiveStatusView>(&Request::ProvenanceArchiveStatus)
        && let Some(note) = archive_note(&status, since)
    {
        eprintln!("{note}");
    }
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

/// What a query of the live log leaves out, when the range asked reaches before its start:
/// `None` when nothing is archived or everything archived is older than `since`.
fn archive_note(status: &ArchiveStatusView, since: Option<Timestamp>) -> Option<String> {
    let through = status.archived_through?;
    let time = |t: &str| Timestamp::parse_at_or_before(t, now()).ok();
    let until = status.archived_until.as_deref().and_then(time);
    if since.is_some_and(|s| until.is_some_and(|u| s > u)) {
        return None;
    }
    let holding: Vec<&str> = status
        .segments
        .iter()
        .filter(|s| since.is_none_or(|since| time(&s.max_time).is_none_or(|t| t >= since)))
        .map(|s| s.name.as_str())
        .collect();
    let dir = status.dir.clone().unwrap_or_default();
    let named = match holding.as_slice() {
        [] => String::new(),
        [one] => format!(" ({one})"),
        [first, .., last] => format!(" ({} segments, {first} to {last})", holding.len()),
    };
    let until = status.archived_until.as_deref().map(|u| format!(", logged until {u}")).unwrap_or_default();
    Some(format!(
        "note: entries up to seq {through}{until} are archived and not listed here; they are in {dir}{named}: \
         add --archive {dir} to search them"
    ))
}

fn verify(g: &Global, archive: Option<PathBuf>, roster: Option<PathBuf>) -> Result<ExitCode> {
    let archive = archive.as_deref().map(absolute).transpose()?;
    let report: VerifyReport = match (g.data_dir.is_some(), archive) {
        (false, Some(dir)) => segments_only(&dir, roster.as_deref())?,
        (_, archive) => match running(g)? {
            Some(mut c) => match archive {
                Some(dir) => c.call(&Request::ProvenanceVerifyArchive { archive: dir })?,
                None => c.call(&Request::ProvenanceVerify)?,
            },
            None => {
                let mut prov = offline(g)?;
                if let Some(r) = &roster {
                    let key = roster_key(r, prov.member())?;
                    prov = prov.with_signer(key);
                }
                match archive {
                    Some(dir) => prov.verify_with_archive(&[], &dir)?,
                    None => prov.verify(&[])?,
                }
            }
        },
    };
    let code = if report.intact { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    emit(g.json, &report, || {
        if !report.intact {
            return format!("BROKEN:\n  {}", report.problems.join("\n  "));
        }
        let mut s = format!(
            "intact: {} entries, head {}, {} checkpoint(s) and {} witnessed checkpoint(s) hold",
            report.entries,
            report.head_hash.clone().unwrap_or_else(|| "(empty)".into()),
            report.checkpoints_checked,
            report.witnesses_checked
        );
        if report.segments_checked > 0 {
            s += &format!(
                "\n  {} archived entries in {} segment(s) chain, each sealed by the member's checkpoint",
                report.archived_entries, report.segments_checked
            );
        }
        if let (Some(through), Some(seg)) = (report.archived_through, &report.archive_segment) {
            s += &format!("\n  entries up to seq {through} are archived; the newest segment is {seg}");
        }
        if report.archived_claims_unchecked > 0 {
            s += &format!(
                "\n  {} checkpoint(s) cover archived entries only: check them with --archive DIR",
                report.archived_claims_unchecked
            );
        }
        s
    })?;
    if !report.intact && !g.json {
        eprintln!("error: the provenance log is not intact: {}", report.problems.first().cloned().unwrap_or_default());
    }
    Ok(code)
}

/// `verify --archive DIR` without a data dir: the segments alone, against the roster's key.
fn segments_only(dir: &Path, roster: Option<&Path>) -> Result<VerifyReport> {
    let roster =
        roster.context("checking segments without a data dir needs the federation's roster: pass --roster FILE")?;
    let member =
        archive::segment_member(dir).with_context(|| format!("{} holds no readable segment files", dir.display()))?;
    let key = roster_key(roster, &member)?;
    Ok(archive::verify_segments(dir, Some(&member), Some(&key)))
}

fn export(g: &Global, out: PathBuf) -> Result<ExitCode> {
    let out = absolute(&out)?;
    let ex: Exported = match running(g)? {
        Some(mut c) => c.call(&Request::ProvenanceExport { out })?,
        None => {
            let prov = offline(g)?;
            let n = deltafed_node::node::export_to(&prov, &out)?;
            let archived = prov.archived()?;
            Exported {
                out: out.display().to_string(),
                entries: n,
                first_seq: archived.as_ref().map_or(0, |a| a.seq.saturating_add(1)),
                archive_dir: archived.map(|a| a.dir),
            }
        }
    };
    emit(g.json, &ex, || {
        let mut s = format!("exported {} entries to {}", ex.entries, ex.out);
        if let Some(dir) = &ex.archive_dir {
            s += &format!(
                "\nentries 0 to {} are archived in sealed segments in {dir} \
                 (`deltafed provenance verify --archive {dir}` checks them)",
                ex.first_seq.saturating_sub(1)
            );
        }
        s
    })
}
