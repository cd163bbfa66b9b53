//! Checking the whole log: chain links, and that the log still holds every head that was ever
//! signed (our own checkpoints, and the copies peers hold as witnesses).
//!
//! One pass in key order over the raw rows, so a million entries take under a second on two
//! cores: each entry is hashed as stored and only its `v`, `seq` and `prev` are read
//! ([`super::link`]). The
//! checkpoints to compare against are sorted by seq first and matched with a cursor as the pass
//! goes by, so they cost nothing per entry. Problems are collected, not returned as errors: an
//! auditor wants to see every place the log breaks, each named by seq.

use std::path::Path;
use std::sync::mpsc;

use deltafed_protocol::provenance::{Checkpoint, Entry};
use deltafed_protocol::{Hash, OBJECT_VERSION, Object, PublicKey, Signed, Timestamp};

use super::archive::{self, ArchivedThrough};
use super::{Error, Provenance, link, seq_of_key};
use crate::store::Cf;

/// The outcome of [`Provenance::verify`]; `intact` only when `problems` is empty.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct VerifyReport {
    pub intact: bool,
    /// Entries found (rows keyed by a seq).
    pub entries: u64,
    pub head_seq: Option<u64>,
    pub head_hash: Option<String>,
    /// Own checkpoints (in `Cf::Checkpoints`) compared against the log.
    pub checkpoints_checked: u64,
    /// Witnessed copies (passed to `verify`) compared against the log.
    pub witnesses_checked: u64,
    /// Where the log breaks, one sentence each, in log order as far as possible.
    pub problems: Vec<String>,
    /// The last archived seq: the live log starts after it, continuing the newest segment.
    #[serde(default)]
    pub archived_through: Option<u64>,
    /// The newest archived segment (file name), which the live log continues.
    #[serde(default)]
    pub archive_segment: Option<String>,
    /// Segment files whose entries were checked (`verify --archive DIR`).
    #[serde(default)]
    pub segments_checked: u64,
    /// Entries checked in those segments.
    #[serde(default)]
    pub archived_entries: u64,
    /// Checkpoints (own or witnessed) that cover only archived entries and were not compared
    /// with them: without `--archive DIR` only the live log is read.
    #[serde(default)]
    pub archived_claims_unchecked: u64,
}

/// Past this many, problems are counted rather than listed: a log rewritten from some point on
/// would otherwise produce one line per entry.
const MAX_PROBLEMS: usize = 100;

#[derive(Default)]
pub(super) struct Problems {
    list: Vec<String>,
    more: u64,
}

impl Problems {
    pub(super) fn push(&mut self, p: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn into_list(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("… and {} more problems not listed", self.more));
        }
        self.list
    }
}

/// A head some checkpoint says the log had.
struct Claim {
    seq: u64,
    head: Hash,
    time: Timestamp,
    /// "checkpoint" or "witnessed checkpoint".
    what: &'static str,
}

impl Claim {
    fn label(&self) -> String {
        format!("{} at seq {} (signed {})", self.what, self.seq, self.time)
    }
}

impl Provenance {
    /// Whole chain: every entry decodes, seq is contiguous from 0 (or from the last archived
    /// entry, whose hash the first live entry's prev must be), prev links hold, and the log
    /// still contains (same hash at same seq) every own checkpoint and every checkpoint in
    /// `witnessed` (copies of our checkpoints that peers hold, fetched by the caller). A
    /// checkpoint must name this member and carry its key: ours if we hold it, the one given to
    /// [`Provenance::with_signer`], or else the key of the first checkpoint seen (offline and
    /// without a roster, only consistency can be checked).
    ///
    /// When part of the log is archived, the newest segment (in the directory it was written
    /// to, else [`Provenance::with_archive_dir`]'s) must be the one the log records: same last
    /// entry and hash, same file hash, its checkpoint signed by the member and naming that
    /// entry. The older segments are read only by [`Provenance::verify_with_archive`].
    pub fn verify(&self, witnessed: &[Signed<Checkpoint>]) -> Result<VerifyReport, Error> {
        self.verify_inner(witnessed, None)
    }

    /// [`Provenance::verify`], and before the live log every segment in `dir`, in order: each
    /// one's entries chain, its header agrees with them, its checkpoint is the member's and
    /// covers its last entry, it names the hash of the segment file before it, and no seq is
    /// missing between them; checkpoints that cover archived entries are compared with them.
    pub fn verify_with_archive(&self, witnessed: &[Signed<Checkpoint>], dir: &Path) -> Result<VerifyReport, Error> {
        self.verify_inner(witnessed, Some(dir))
    }

    fn verify_inner(
        &self,
        witnessed: &[Signed<Checkpoint>],
        archive_dir: Option<&Path>,
    ) -> Result<VerifyReport, Error> {
        // An archive committing meanwhile would move entries out from under the walk.
        let _consistent = self.archive_lock.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut problems = Problems::default();
        // Checkpoints are read before the log: the log iterator's snapshot is taken later, so it
        // contains every head these name (appends during verify cannot create false alarms).
        let mut own = Vec::new();
        self.store.visit_range(Cf::Checkpoints, &[], None, |k, v| {
            match Signed::<Checkpoint>::decode(v) {
                Ok(cp) if seq_of_key(k) == Some(cp.body().seq) => own.push(cp),
                Ok(cp) => {
                    problems.push(format!("checkpoint at seq {} is stored under key {}", cp.body().seq, hex::encode(k)))
                }
                Err(e) => problems.push(format!("checkpoint stored under key {} cannot be read: {e}", hex::encode(k))),
            }
            true
        })?;
        let signer = self
            .signer
            .or_else(|| own.iter().chain(witnessed).find(|cp| cp.body().member == self.member).map(|cp| *cp.signer()));
        let mut claims = Vec::with_capacity(own.len() + witnessed.len());
        for (what, cps) in [("checkpoint", &own[..]), ("witnessed checkpoint", witnessed)] {
            for cp in cps {
                let claim = Claim { seq: cp.body().seq, head: cp.body().head, time: cp.body().time, what };
                if self.check_author(cp, signer.as_ref(), &claim, &mut problems) {
                    claims.push(claim);
                }
            }
        }
        claims.sort_by_key(|c| c.seq);
        let archived = self.archived()?;
        if archive_dir.is_none()
            && let Some(a) = &archived
        {
            self.check_newest_segment(a, signer.as_ref(), &mut problems);
        }
        let mut walker = Walker::new(&claims, &mut problems);
        let mut segments = archive::ChainEnd::default();
        if let Some(dir) = archive_dir {
            segments = archive::walk_segments(dir, &self.member, signer.as_ref(), &mut walker);
            match (&archived, &segments.last) {
                (Some(a), Some(end)) if end.seq == a.seq && end.hash == a.hash && end.name == a.segment => {}
                (Some(a), Some(end)) => walker.problem(format!(
                    "the live log continues segment {} (entries up to {}, hash {}), but the newest segment in {} is {} (up to {}, hash {}){}",
                    a.segment,
                    a.seq,
                    a.hash,
                    dir.display(),
                    end.name,
                    end.seq,
                    end.hash,
                    if end.seq < a.seq { ": newer segments are missing" } else { "" }
                )),
                (Some(a), None) => walker.problem(format!(
                    "the live log continues segment {} (entries up to {}), but {} holds no segments",
                    a.segment,
                    a.seq,
                    dir.display()
                )),
                (None, Some(end)) => walker.problem(format!(
                    "{} holds segments up to entry {} ({}), but this log records no archive",
                    dir.display(),
                    end.seq,
                    end.name
                )),
                (None, None) => {}
            }
        }
        if let Some(a) = &archived {
            walker.continue_after(a.seq, a.hash);
        }
        self.walk(&mut walker)?;
        let unchecked = walker.unchecked;
        let (entries, head) = walker.finish();
        Ok(VerifyReport {
            intact: problems.is_empty(),
            entries,
            head_seq: head.map(|(seq, _)| seq),
            head_hash: head.map(|(_, hash)| hash.to_string()),
            checkpoints_checked: own.len() as u64,
            witnesses_checked: witnessed.len() as u64,
            problems: problems.into_list(),
            archived_through: archived.as_ref().map(|a| a.seq),
            archive_segment: archived.map(|a| a.segment),
            segments_checked: segments.segments,
            archived_entries: segments.entries,
            archived_claims_unchecked: unchecked,
        })
    }

    /// The plain verify's check of the archive: the newest segment is the file the log says.
    fn check_newest_segment(&self, a: &ArchivedThrough, signer: Option<&PublicKey>, problems: &mut Problems) {
        let dir = self.segment_dir(a);
        let path = dir.join(&a.segment);
        match archive::check_newest(&path, a, &self.member, signer) {
            Ok(()) => {}
            Err(archive::NewestProblem::Missing) => problems.push(format!(
                "the live log continues archived segment {}, which is not in {} (moved? verify with --archive DIR where the segments are)",
                a.segment,
                dir.display()
            )),
            Err(archive::NewestProblem::Bad(why)) => problems.push(format!("segment {}: {why}", path.display())),
        }
    }

    /// Whether `cp` is ours: names this member and carries its key.
    fn check_author(
        &self,
        cp: &Signed<Checkpoint>,
        signer: Option<&PublicKey>,
        claim: &Claim,
        problems: &mut Problems,
    ) -> bool {
        if cp.body().member != self.member {
            problems.push(format!(
                "{}: names member {}, not this log's member {}",
                claim.label(),
                cp.body().member,
                self.member
            ));
            return false;
        }
        if let Some(key) = signer
            && cp.signer() != key
        {
            problems.push(format!("{}: signed by key {}, not {}'s key {key}", claim.label(), cp.signer(), self.member));
            return false;
        }
        true
    }

    /// The pass over the live log, continuing `walker`.
    ///
    /// Two threads: this one iterates RocksDB and copies rows into chunks, a worker hashes and
    /// checks them in order. Iterating and hashing cost about the same, so on two cores this
    /// nearly halves the time; chunks are bounded, so memory stays a few MiB whatever the log.
    fn walk(&self, walker: &mut Walker<'_>) -> Result<(), Error> {
        walker.place = String::new();
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Chunk>(4);
            let worker = scope.spawn(move || {
                for chunk in rx {
                    for (k, v) in chunk.rows() {
                        walker.row(k, v);
                    }
                }
            });
            let mut chunk = Chunk::new();
            let mut worker_gone = false;
            let scanned = self.store.visit_range(Cf::Provenance, &[], None, |k, v| {
                chunk.push(k, v);
                if chunk.data.len() >= CHUNK_BYTES {
                    // The worker only stops early by panicking; the join below reports that.
                    worker_gone = tx.send(std::mem::replace(&mut chunk, Chunk::new())).is_err();
                }
                !worker_gone
            });
            if !chunk.ends.is_empty() && !worker_gone {
                // An error here means the worker panicked, which the join below re-raises.
                let _ = tx.send(chunk);
            }
            drop(tx);
            worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            scanned?;
            Ok(())
        })
    }
}

/// Rows copied out of the iterator into one buffer (no allocation per row).
struct Chunk {
    data: Vec<u8>,
    /// End offsets of each row's key and value in `data`.
    ends: Vec<(usize, usize)>,
}

/// About 2,000 typical entries: big enough that handing a chunk over costs nothing per row.
const CHUNK_BYTES: usize = 1 << 20;

impl Chunk {
    fn new() -> Chunk {
        // Room for a full chunk plus one maximal entry, so the buffer never grows.
        Chunk { data: Vec::with_capacity(CHUNK_BYTES + Entry::MAX_SIZE), ends: Vec::with_capacity(4096) }
    }

    fn push(&mut self, k: &[u8], v: &[u8]) {
        self.data.extend_from_slice(k);
        let key_end = self.data.len();
        self.data.extend_from_slice(v);
        self.ends.push((key_end, self.data.len()));
    }

    fn rows(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let row = (&self.data[start..key_end], &self.data[key_end..end]);
            start = end;
            row
        })
    }
}

/// The chain check, one row at a time in log order: archived segments (if read), then the
/// live log.
pub(super) struct Walker<'a> {
    claims: &'a [Claim],
    next_claim: usize,
    problems: &'a mut Problems,
    expected: u64,
    /// Hash of entry `expected - 1`, when that entry is present.
    prev: Option<Hash>,
    last: Option<(u64, Hash)>,
    /// Live entries seen ([`Walker::row`]); archived ones are counted by their reader.
    entries: u64,
    /// Where the entries come from, prefixed to problems ("segment F: "); empty for the live log.
    pub place: String,
    /// Claims skipped over because the entries they cover are archived and were not read.
    pub unchecked: u64,
}

impl VerifyReport {
    /// A report of segments alone (`verify_segments`): no live log, no checkpoints beyond the
    /// segments' own.
    pub(super) fn from_parts(
        problems: Problems,
        entries: u64,
        last: Option<(u64, Hash)>,
        segments: archive::ChainEnd,
    ) -> VerifyReport {
        VerifyReport {
            intact: problems.is_empty(),
            entries,
            head_seq: last.map(|(seq, _)| seq),
            head_hash: last.map(|(_, hash)| hash.to_string()),
            checkpoints_checked: 0,
            witnesses_checked: 0,
            problems: problems.into_list(),
            archived_through: segments.last.as_ref().map(|l| l.seq),
            archive_segment: segments.last.map(|l| l.name),
            segments_checked: segments.segments,
            archived_entries: segments.entries,
            archived_claims_unchecked: 0,
        }
    }
}

impl<'a> Walker<'a> {
    /// A walker with no checkpoints to compare against (segments checked on their own).
    pub(super) fn without_claims(problems: &'a mut Problems) -> Walker<'a> {
        Walker::new(&[], problems)
    }

    fn new(claims: &'a [Claim], problems: &'a mut Problems) -> Walker<'a> {
        Walker {
            claims,
            next_claim: 0,
            problems,
            expected: 0,
            prev: None,
            last: None,
            entries: 0,
            place: String::new(),
            unchecked: 0,
        }
    }

    pub fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    /// Goes on after entry `seq` with hash `hash` (the last archived one), whatever came before:
    /// checkpoints at `seq` are compared with `hash`; older ones, whose entries were not read,
    /// are counted as unchecked.
    pub fn continue_after(&mut self, seq: u64, hash: Hash) {
        while let Some(c) = self.claims.get(self.next_claim).filter(|c| c.seq <= seq) {
            if c.seq == seq && c.head != hash {
                self.problems.push(format!(
                    "{}: the last archived entry {seq} has hash {hash}, the checkpoint says {}",
                    c.label(),
                    c.head
                ));
            } else if c.seq < seq {
                self.unchecked += 1;
            }
            self.next_claim += 1;
        }
        if self.expected <= seq {
            self.expected = seq.saturating_add(1);
            self.prev = Some(hash);
            self.last = Some((seq, hash));
        }
    }

    /// The next entries start at `seq` (a segment after a gap already reported): no gap again.
    pub fn jump_to(&mut self, seq: u64) {
        self.expected = seq;
        self.prev = None;
    }

    fn row(&mut self, k: &[u8], v: &[u8]) {
        let Some(seq) = seq_of_key(k) else {
            self.problems
                .push(format!("a row with key {} is not an entry (keys are 8-byte sequence numbers)", hex::encode(k)));
            return;
        };
        self.entry(seq, v);
        self.entries += 1;
    }

    /// Checks entry `seq` (stored as `v`) against the one before and the claims; returns its
    /// chain fields when they could be read.
    pub fn entry(&mut self, seq: u64, v: &[u8]) -> Option<link::Link> {
        while let Some(c) = self.claims.get(self.next_claim).filter(|c| c.seq < seq) {
            self.problems.push(format!("{}: the log has no entry {}", c.label(), c.seq));
            self.next_claim += 1;
        }
        if seq != self.expected {
            self.problems.push(format!("{}{}", self.place, gap(self.expected, seq)));
            self.prev = None;
        }
        let hash = Entry::hash_of_encoding(v);
        let link = match link::read(v) {
            Err(why) => {
                self.problems.push(format!("{}entry {seq}: cannot be read ({why})", self.place));
                None
            }
            Ok(l) => {
                self.check_link(seq, &l);
                Some(l)
            }
        };
        while let Some(c) = self.claims.get(self.next_claim).filter(|c| c.seq == seq) {
            if c.head != hash {
                self.problems.push(format!(
                    "{}: the log's entry {seq} has hash {hash}, the checkpoint says {}",
                    c.label(),
                    c.head
                ));
            }
            self.next_claim += 1;
        }
        self.prev = Some(hash);
        self.last = Some((seq, hash));
        self.expected = seq.saturating_add(1);
        link
    }

    fn check_link(&mut self, seq: u64, l: &link::Link) {
        let place = &self.place;
        if l.v != u64::from(OBJECT_VERSION) {
            self.problems.push(format!("{place}entry {seq}: has version {}, expected {OBJECT_VERSION}", l.v));
        }
        if l.seq != seq {
            self.problems.push(format!("{place}entry {seq}: is stored as entry {seq} but says it is entry {}", l.seq));
        }
        if seq == 0 && l.prev != [0; 32] {
            self.problems.push(format!("{place}entry 0: prev hash is not all zeros"));
        } else if let Some(p) = self.prev
            && seq != 0
            && l.prev != p.0
        {
            self.problems.push(format!("{place}entry {seq}: prev hash does not match entry {}", seq - 1));
        }
    }

    /// The last entry seen (archived or live), with its hash.
    pub fn last(&self) -> Option<(u64, Hash)> {
        self.last
    }

    /// Reports the checkpoints past the end and returns the count and the last entry.
    fn finish(self) -> (u64, Option<(u64, Hash)>) {
        for c in self.claims.get(self.next_claim..).unwrap_or_default() {
            self.problems.push(match self.last {
                Some((end, _)) => format!(
                    "the log ends at seq {end} but the {} signed {} covers seq {} (truncated?)",
                    c.what, c.time, c.seq
                ),
                None => {
                    format!("the log is empty but the {} signed {} covers seq {} (truncated?)", c.what, c.time, c.seq)
                }
            });
        }
        (self.entries, self.last)
    }
}

/// The problem for entries `expected..found` being absent.
fn gap(expected: u64, found: u64) -> String {
    match (expected, found.saturating_sub(expected)) {
        (0, 1) => "entry 0 is missing (the log starts at entry 1)".to_string(),
        (0, _) => format!("entries 0 to {} are missing (the log starts at entry {found})", found - 1),
        (_, 1) => format!("entry {expected} is missing (the log jumps from entry {} to {found})", expected - 1),
        _ => format!(
            "entries {expected} to {} are missing (the log jumps from entry {} to {found})",
            found - 1,
            expected - 1
        ),
    }
}
