//! Sealed archives: old entries moved out of the database into segment files an auditor can
//! keep for years, with the live log continuing the newest segment.
//!
//! Archiving ([`Provenance::archive`]) goes up to one of our own checkpoints only, and only to
//! one that a peer has acknowledged holding (or that a later acknowledged one covers): entries
//! nobody but this member vouches for never leave the database. Each segment ends exactly at a
//! checkpoint and carries it, so every segment is signed by the member on its own, and names the
//! hash of the segment file before it, so segments form a chain. A segment is written to a
//! temporary file, fsynced, renamed and the directory fsynced; only then, in one atomic write,
//! are its entries deleted (one range tombstone), the own checkpoints it makes redundant deleted,
//! and the meta row [`ArchivedThrough`] (last archived seq and hash, segment name and file hash)
//! updated. A crash in between leaves a complete segment the log does not record yet; the next
//! archive run sets it aside (renamed `.uncommitted`, never deleted) and writes it again.
//!
//! Index rows of archived entries are not deleted one by one (the calls index alone has one per
//! call): they are dead from the moment the meta row moves (queries find no entry behind them),
//! and compactions drop them ([`crate::store::Store::set_index_floor`]).
//!
//! Storage (`Cf::Meta`): `provenance/archived` → [`ArchivedThrough`] (CBOR);
//! `provenance/witnessed/` + member → the highest seq of our checkpoints that member
//! acknowledged holding (u64 big-endian).

mod chain;
mod search;
pub mod segment;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use deltafed_protocol::provenance::{Checkpoint, Entry};
use deltafed_protocol::{Hash, MemberId, PublicKey, Signed, Timestamp};
use serde::{Deserialize, Serialize};

pub(super) use chain::{ChainEnd, NewestProblem, check_newest, walk_segments};
pub use chain::{segment_member, verify_segments};
pub use search::{SearchError, search};
pub use segment::Header;

use super::{Error, Provenance, link, seq_of_key};
use crate::store::{self, Batch, Cf, Store};

const META_ARCHIVED: &[u8] = b"provenance/archived";
const META_WITNESSED: &[u8] = b"provenance/witnessed/";

/// Segments are cut at the first own checkpoint past this many bytes of entries (the default
/// of [`ArchiveRequest::segment_bytes`]): big enough that a year is a few thousand files, small
/// enough to copy, hash and check one at a time.
pub const SEGMENT_BYTES: u64 = 1 << 30;

/// What the log has archived so far: the meta row the live log starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedThrough {
    /// The last archived seq; the live log starts at `seq + 1`.
    pub seq: u64,
    /// Its entry hash: the first live entry's `prev`.
    pub hash: Hash,
    /// The newest segment's file name, and the BLAKE3 of the file.
    pub segment: String,
    pub segment_hash: Hash,
    /// The directory it was written to (absolute).
    pub dir: String,
    /// Segments written in all, and the latest entry time among every archived entry.
    pub segments: u64,
    pub max_time: Timestamp,
}

/// Why an archive was not written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not allowed now (nothing witnessed, a broken log); the text says why and what to do.
    #[error("{0}")]
    Refused(String),
    #[error("an archive of this log is already being written; try again when it is done")]
    Busy,
    #[error("archiving stopped because the node is shutting down; what was sealed stays archived")]
    Cancelled,
    #[error("cannot write the archive in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Log(#[from] Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// What to archive and where.
pub struct ArchiveRequest<'a> {
    /// Entries covered by an own checkpoint signed before this time.
    pub before: Timestamp,
    pub dir: &'a Path,
    /// See [`SEGMENT_BYTES`].
    pub segment_bytes: u64,
    /// Polled between rows; `true` stops after the segment being written is discarded.
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

/// One sealed segment, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub name: String,
    pub first: u64,
    pub last: u64,
    /// RFC 3339.
    pub min_time: String,
    pub max_time: String,
    pub bytes: u64,
    /// BLAKE3 of the file (hex), when known (just written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The outcome of [`Provenance::archive`].
#[derive(Debug, Clone)]
pub struct Archived {
    pub dir: PathBuf,
    /// The segments written by this run, oldest first (none when there was nothing to archive).
    pub segments: Vec<SegmentInfo>,
    pub entries: u64,
    /// Where the live log starts now.
    pub through: Option<ArchivedThrough>,
    /// Why nothing was archived, when nothing was.
    pub nothing: Option<String>,
}

/// The archive as it stands: what the log records, and the segments in its directory.
#[derive(Debug, Clone)]
pub struct ArchiveStatus {
    pub dir: Option<PathBuf>,
    pub through: Option<ArchivedThrough>,
    pub segments: Vec<SegmentInfo>,
    /// Files with the segment extension that could not be read, each with why.
    pub unreadable: Vec<String>,
}

/// A segment to write: entries `first..=last`, ending at the checkpoint at `last`.
struct Plan {
    first: u64,
    last: u64,
    prev: Hash,
    head: Hash,
    min_time: Timestamp,
    max_time: Timestamp,
}

impl Provenance {
    /// Where segments go unless a caller says otherwise (`[provenance] archive_dir`).
    pub fn with_archive_dir(mut self, dir: PathBuf) -> Provenance {
        self.archive_dir = Some(dir);
        self
    }

    pub fn archive_dir(&self) -> Option<&Path> {
        self.archive_dir.as_deref()
    }

    /// What has been archived, from the meta row.
    pub fn archived(&self) -> Result<Option<ArchivedThrough>, Error> {
        read_archived(&self.store)
    }

    /// The directory holding the newest segment: where it was written, unless that is gone and
    /// the configured one holds it (the operator moved the archive).
    pub(super) fn segment_dir(&self, a: &ArchivedThrough) -> PathBuf {
        let written = PathBuf::from(&a.dir);
        match &self.archive_dir {
            Some(configured) if !written.join(&a.segment).exists() && configured.join(&a.segment).exists() => {
                configured.clone()
            }
            _ => written,
        }
    }

    /// Records that `member` acknowledged holding our checkpoint at `seq` (it keeps it as our
    /// witness). Only ever raises the member's mark.
    pub fn record_witnessed(&self, member: &MemberId, seq: u64) -> Result<(), Error> {
        let _guard = self.witness.lock().unwrap_or_else(PoisonError::into_inner);
        let key = witnessed_key(member);
        let held = self.store.get(Cf::Meta, &key)?.as_deref().and_then(seq_of_key);
        if held.is_none_or(|h| seq > h) {
            self.store.put(Cf::Meta, &key, &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// The highest seq of our checkpoints any peer acknowledged holding, and which peer.
    pub fn witnessed_through(&self) -> Result<Option<(u64, MemberId)>, Error> {
        let mut best: Option<(u64, MemberId)> = None;
        for (k, v) in self.store.scan_prefix(Cf::Meta, META_WITNESSED)? {
            let (Some(seq), Some(member)) = (
                seq_of_key(&v),
                std::str::from_utf8(&k[META_WITNESSED.len()..]).ok().and_then(|m| m.parse::<MemberId>().ok()),
            ) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| seq > *b) {
                best = Some((seq, member));
            }
        }
        Ok(best)
    }

    /// The archive's state: the meta row, and the segments in the directory of the newest one
    /// (or the configured directory before the first archive).
    pub fn archive_status(&self) -> Result<ArchiveStatus, Error> {
        let through = self.archived()?;
        let dir = match &through {
            Some(a) => Some(self.segment_dir(a)),
            None => self.archive_dir.clone(),
        };
        let (segments, unreadable) = match &dir {
            Some(d) => list_segments(d),
            None => (Vec::new(), Vec::new()),
        };
        Ok(ArchiveStatus { dir, through, segments, unreadable })
    }

    /// Moves the entries covered by the newest own checkpoint signed before `req.before` that a
    /// peer witnessed into segment files in `req.dir`, then deletes them from the database.
    /// Refused when such entries exist but no peer has witnessed a checkpoint covering them.
    pub fn archive(&self, req: &ArchiveRequest<'_>) -> Result<Archived, ArchiveError> {
        self.writable("archive the provenance log")?;
        let _one = self.archiving.try_lock().map_err(|_| ArchiveError::Busy)?;
        let archived = self.archived()?;
        let first = archived.as_ref().map_or(0, |a| a.seq.saturating_add(1));
        let nothing = |why: String| Archived {
            dir: req.dir.to_path_buf(),
            segments: Vec::new(),
            entries: 0,
            through: archived.clone(),
            nothing: Some(why),
        };
        // Own checkpoints from `first` on signed before the cut: the candidate segment ends.
        let mut ends = Vec::new();
        let mut failed = None;
        self.store.visit_range(Cf::Checkpoints, &first.to_be_bytes(), None, |k, v| {
            match (seq_of_key(k), Signed::<Checkpoint>::from_trusted_bytes(v)) {
                (Some(seq), Ok(cp)) if cp.body().time < req.before => ends.push(seq),
                (Some(_), Ok(_)) => return false,
                (_, Err(e)) => {
                    failed =
                        Some(Error::BadStoredCheckpoint { what: format!("under key {}", hex::encode(k)), source: e });
                    return false;
                }
                (None, Ok(_)) => {}
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        let Some(&newest) = ends.last() else {
            return Ok(nothing(format!(
                "nothing to archive: no checkpoint signed before {} covers entries from seq {first} on",
                req.before
            )));
        };
        let witnessed = self.witnessed_through()?;
        let Some((w, by)) = witnessed else {
            return Err(ArchiveError::Refused(format!(
                "entries up to seq {newest} are older than {} but no peer has acknowledged a checkpoint of this log yet; \
                 archiving waits until one does (checkpoints go to connected members every 10 s)",
                req.before
            )));
        };
        ends.retain(|&s| s <= w);
        let Some(&through) = ends.last() else {
            return Err(ArchiveError::Refused(format!(
                "entries from seq {first} to {newest} are older than {} but not yet covered by a checkpoint a peer witnessed \
                 (the newest one acknowledged, by {by}, is at seq {w}); archiving waits until a peer acknowledges a newer one",
                req.before
            )));
        };
        let start = match &archived {
            Some(a) => a.hash,
            None => Hash([0; 32]),
        };
        let plans = self.plan(first, start, &ends, req)?;
        prepare_dir(req.dir, &self.member, first)?;
        let mut out = Archived {
            dir: req.dir.to_path_buf(),
            segments: Vec::with_capacity(plans.len()),
            entries: 0,
            through: archived,
            nothing: None,
        };
        for plan in &plans {
            if (req.cancelled)() {
                return if out.segments.is_empty() { Err(ArchiveError::Cancelled) } else { Ok(out) };
            }
            let (info, through) = self.seal(plan, out.through.as_ref(), req)?;
            out.entries += plan.last - plan.first + 1;
            out.segments.push(info);
            out.through = Some(through);
        }
        tracing::info!(
            entries = out.entries, segments = out.segments.len(), through, dir = %req.dir.display(),
            "provenance entries archived"
        );
        // The deleted rows give their space back at the next compaction of that range; ask for
        // it now, so the database shrinks when the archive is written rather than some day.
        self.store.compact(Cf::Provenance, Some(&through.saturating_add(1).to_be_bytes()))?;
        Ok(out)
    }

    /// One pass over the entries to archive: checks the chain (a broken log is not sealed) and
    /// cuts it into segments at checkpoints, each past `segment_bytes` (the last at the end).
    fn plan(&self, first: u64, start: Hash, ends: &[u64], req: &ArchiveRequest<'_>) -> Result<Vec<Plan>, ArchiveError> {
        let last = ends.last().copied().unwrap_or(first);
        let mut plans = Vec::new();
        let mut cur: Option<Plan> = None;
        let (mut expected, mut prev, mut bytes, mut next_end) = (first, start, 0u64, 0usize);
        let mut failed: Option<ArchiveError> = None;
        let broken = |why: String| {
            ArchiveError::Refused(format!(
                "the provenance log is broken ({why}); nothing was archived: run `deltafed provenance verify`"
            ))
        };
        let upper = last.saturating_add(1).to_be_bytes();
        self.store.visit_range(Cf::Provenance, &first.to_be_bytes(), Some(&upper), |k, v| {
            if expected % 4096 == 0 && (req.cancelled)() {
                failed = Some(ArchiveError::Cancelled);
                return false;
            }
            let l = match (seq_of_key(k), link::read(v)) {
                (Some(seq), Ok(l)) if seq == expected && l.seq == seq && l.prev == prev.0 => l,
                (Some(seq), _) if seq != expected => {
                    failed = Some(broken(format!("entry {expected} is missing")));
                    return false;
                }
                (_, Err(why)) => {
                    failed = Some(broken(format!("entry {expected} cannot be read: {why}")));
                    return false;
                }
                _ => {
                    failed = Some(broken(format!("entry {expected} does not chain to the entry before it")));
                    return false;
                }
            };
            let hash = Entry::hash_of_encoding(v);
            let p = cur.get_or_insert(Plan {
                first: expected,
                last: expected,
                prev,
                head: hash,
                min_time: l.time,
                max_time: l.time,
            });
            p.last = expected;
            p.head = hash;
            p.min_time = p.min_time.min(l.time);
            p.max_time = p.max_time.max(l.time);
            bytes += v.len() as u64;
            while ends.get(next_end).is_some_and(|&e| e < expected) {
                next_end += 1;
            }
            if ends.get(next_end) == Some(&expected) && (bytes >= req.segment_bytes || expected == last) {
                plans.extend(cur.take());
                bytes = 0;
            }
            prev = hash;
            expected += 1;
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if expected <= last {
            return Err(broken(format!("entry {expected} is missing")));
        }
        Ok(plans)
    }

    /// Writes one segment, makes it durable, then deletes what it holds from the database.
    fn seal(
        &self,
        plan: &Plan,
        before: Option<&ArchivedThrough>,
        req: &ArchiveRequest<'_>,
    ) -> Result<(SegmentInfo, ArchivedThrough), ArchiveError> {
        let cp_bytes = self
            .store
            .get(Cf::Checkpoints, &plan.last.to_be_bytes())?
            .ok_or_else(|| ArchiveError::Refused(format!("the checkpoint at seq {} disappeared", plan.last)))?;
        let cp = Signed::<Checkpoint>::decode(&cp_bytes)
            .map_err(|source| Error::BadStoredCheckpoint { what: format!("at seq {}", plan.last), source })?;
        if cp.body().member != self.member
            || cp.body().head != plan.head
            || self.signer.as_ref().is_some_and(|k| k != cp.signer())
        {
            return Err(ArchiveError::Refused(format!(
                "the checkpoint at seq {} does not match the log (member, key or head); run `deltafed provenance verify`",
                plan.last
            )));
        }
        let header = Header {
            v: segment::VERSION,
            member: self.member.clone(),
            first: plan.first,
            last: plan.last,
            prev: plan.prev,
            head: plan.head,
            previous: before.map_or(Hash([0; 32]), |a| a.segment_hash),
            min_time: plan.min_time,
            max_time: plan.max_time,
        };
        let io = |source| ArchiveError::Io { path: req.dir.to_path_buf(), source };
        let mut w = segment::Writer::create(req.dir, &header, &cp_bytes).map_err(io)?;
        let (mut count, mut last_hash, mut failed) = (0u64, None, None);
        let upper = plan.last.saturating_add(1).to_be_bytes();
        self.store.visit_range(Cf::Provenance, &plan.first.to_be_bytes(), Some(&upper), |_, v| {
            if count % 4096 == 0 && (req.cancelled)() {
                failed = Some(ArchiveError::Cancelled);
                return false;
            }
            if let Err(e) = w.record(v) {
                failed = Some(io(e));
                return false;
            }
            count += 1;
            if count == plan.last - plan.first + 1 {
                last_hash = Some(Entry::hash_of_encoding(v));
            }
            true
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if last_hash != Some(plan.head) {
            return Err(ArchiveError::Refused(format!(
                "entries {} to {} changed while they were being archived; nothing was archived from them",
                plan.first, plan.last
            )));
        }
        let name = header.file_name();
        let (file_hash, size) = w.finish(&name).map_err(io)?;
        let through = ArchivedThrough {
            seq: plan.last,
            hash: plan.head,
            segment: name.clone(),
            segment_hash: file_hash,
            dir: std::path::absolute(req.dir).unwrap_or_else(|_| req.dir.to_path_buf()).display().to_string(),
            segments: before.map_or(0, |a| a.segments) + 1,
            max_time: before.map_or(plan.max_time, |a| a.max_time.max(plan.max_time)),
        };
        let meta = cbor4ii::serde::to_vec(Vec::new(), &through)
            .map_err(|e| ArchiveError::Refused(format!("cannot encode the archive record: {e}")))?;
        let mut batch = Batch::default();
        batch.delete_range(Cf::Provenance, plan.first.to_be_bytes(), upper);
        // Own checkpoints inside the segment add nothing to the one it carries (the chain ties
        // every entry to it); the one at its end stays, the live log's first anchor.
        batch.delete_range(Cf::Checkpoints, 0u64.to_be_bytes(), plan.last.to_be_bytes());
        batch.put(Cf::Meta, META_ARCHIVED, meta);
        {
            let _exclusive = self.archive_lock.write().unwrap_or_else(PoisonError::into_inner);
            self.store.write(batch)?;
            self.store.sync_wal()?;
        }
        self.store.set_index_floor(plan.last.saturating_add(1));
        let info = SegmentInfo {
            name,
            first: plan.first,
            last: plan.last,
            min_time: plan.min_time.to_string(),
            max_time: plan.max_time.to_string(),
            bytes: size,
            hash: Some(file_hash.to_string()),
        };
        Ok((info, through))
    }
}

pub(super) fn read_archived(store: &Store) -> Result<Option<ArchivedThrough>, Error> {
    match store.get(Cf::Meta, META_ARCHIVED) {
        Ok(Some(bytes)) => cbor4ii::serde::from_slice(&bytes).map(Some).map_err(|e| Error::BadKey {
            cf: Cf::Meta.name(),
            key: format!("provenance/archived (its value cannot be read: {e})"),
        }),
        Ok(None) => Ok(None),
        // A read-only copy of an older data dir may lack the column family: nothing archived.
        Err(store::Error::MissingCf(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn witnessed_key(member: &MemberId) -> Vec<u8> {
    let mut k = META_WITNESSED.to_vec();
    k.extend_from_slice(member.as_str().as_bytes());
    k
}

/// Creates the archive directory (private to the node's user) and sets aside segments of this
/// member at or after `first`: written by a run that crashed before the database recorded them.
fn prepare_dir(dir: &Path, member: &MemberId, first: u64) -> Result<(), ArchiveError> {
    let io = |source| ArchiveError::Io { path: dir.to_path_buf(), source };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let prefix = format!("{member}-");
    for path in segment::list(dir).map_err(io)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
        if name.starts_with(&prefix) && segment::parse_name(&name).is_some_and(|(f, _)| f >= first) {
            let aside = dir.join(format!("{name}.uncommitted"));
            tracing::warn!(segment = %name, "setting aside a segment the log never recorded (an interrupted archive)");
            std::fs::rename(&path, &aside).map_err(io)?;
        }
    }
    Ok(())
}

/// Headers of the segments in `dir`, in order, and the files that could not be read.
pub fn list_segments(dir: &Path) -> (Vec<SegmentInfo>, Vec<String>) {
    let files = match segment::list(dir) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), vec![format!("{}: {e}", dir.display())]),
    };
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        match segment::Reader::open(&path) {
            Ok(r) => ok.push(SegmentInfo {
                name,
                first: r.header.first,
                last: r.header.last,
                min_time: r.header.min_time.to_string(),
                max_time: r.header.max_time.to_string(),
                bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                hash: None,
            }),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    (ok, bad)
}

/// The key `signer` of `member`'s checkpoints, checked the way verify checks own checkpoints.
fn checkpoint_problem(cp: &Signed<Checkpoint>, member: &MemberId, signer: Option<&PublicKey>) -> Option<String> {
    if &cp.body().member != member {
        return Some(format!("its checkpoint names member {}, not {member}", cp.body().member));
    }
    if let Some(k) = signer
        && cp.signer() != k
    {
        return Some(format!("its checkpoint is signed by key {}, not {member}'s key {k}", cp.signer()));
    }
    None
}
