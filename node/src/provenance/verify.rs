//! Checking the whole log: chain links, and that the log still holds every head that was ever
//! signed (our own checkpoints, and the copies peers hold as witnesses).
//!
//! One pass in key order over the raw rows, so a million entries take under a second on two
//! cores: each entry is hashed as stored and only its `v`, `seq` and `prev` are read
//! ([`super::link`]). The
//! checkpoints to compare against are sorted by seq first and matched with a cursor as the pass
//! goes by, so they cost nothing per entry. Problems are collected, not returned as errors: an
//! auditor wants to see every place the log breaks, each named by seq.

use std::sync::mpsc;

use deltafed_protocol::provenance::{Checkpoint, Entry};
use deltafed_protocol::{Hash, OBJECT_VERSION, Object, PublicKey, Signed, Timestamp};

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
}

/// Past this many, problems are counted rather than listed: a log rewritten from some point on
/// would otherwise produce one line per entry.
const MAX_PROBLEMS: usize = 100;

#[derive(Default)]
struct Problems {
    list: Vec<String>,
    more: u64,
}

impl Problems {
    fn push(&mut self, p: String) {
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
    /// Whole chain: every entry decodes, seq is contiguous from 0, prev links hold, and the log
    /// still contains (same hash at same seq) every own checkpoint and every checkpoint in
    /// `witnessed` (copies of our checkpoints that peers hold, fetched by the caller). A
    /// checkpoint must name this member and carry its key: ours if we hold it, the one given to
    /// [`Provenance::with_signer`], or else the key of the first checkpoint seen (offline and
    /// without a roster, only consistency can be checked).
    pub fn verify(&self, witnessed: &[Signed<Checkpoint>]) -> Result<VerifyReport, Error> {
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
        let (entries, head) = self.walk(&claims, &mut problems)?;
        Ok(VerifyReport {
            intact: problems.is_empty(),
            entries,
            head_seq: head.map(|(seq, _)| seq),
            head_hash: head.map(|(_, hash)| hash.to_string()),
            checkpoints_checked: own.len() as u64,
            witnesses_checked: witnessed.len() as u64,
            problems: problems.into_list(),
        })
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

    /// The pass over the log; returns the number of entries and the last one's seq and hash.
    ///
    /// Two threads: this one iterates RocksDB and copies rows into chunks, a worker hashes and
    /// checks them in order. Iterating and hashing cost about the same, so on two cores this
    /// nearly halves the time; chunks are bounded, so memory stays a few MiB whatever the log.
    fn walk(&self, claims: &[Claim], problems: &mut Problems) -> Result<(u64, Option<(u64, Hash)>), Error> {
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Chunk>(4);
            let worker = scope.spawn(move || {
                let mut walker = Walker::new(claims, problems);
                for chunk in rx {
                    for (k, v) in chunk.rows() {
                        walker.row(k, v);
                    }
                }
                walker.finish()
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
            let walked = worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            scanned?;
            Ok(walked)
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

/// The chain check, one row at a time in key order.
struct Walker<'a> {
    claims: &'a [Claim],
    next_claim: usize,
    problems: &'a mut Problems,
    expected: u64,
    /// Hash of entry `expected - 1`, when that entry is present.
    prev: Option<Hash>,
    last: Option<(u64, Hash)>,
    entries: u64,
}

impl<'a> Walker<'a> {
    fn new(claims: &'a [Claim], problems: &'a mut Problems) -> Walker<'a> {
        Walker { claims, next_claim: 0, problems, expected: 0, prev: None, last: None, entries: 0 }
    }

    fn row(&mut self, k: &[u8], v: &[u8]) {
        let Some(seq) = seq_of_key(k) else {
            self.problems
                .push(format!("a row with key {} is not an entry (keys are 8-byte sequence numbers)", hex::encode(k)));
            return;
        };
        while let Some(c) = self.claims.get(self.next_claim).filter(|c| c.seq < seq) {
            self.problems.push(format!("{}: the log has no entry {}", c.label(), c.seq));
            self.next_claim += 1;
        }
        if seq != self.expected {
            self.problems.push(gap(self.expected, seq));
            self.prev = None;
        }
        let hash = Entry::hash_of_encoding(v);
        match link::read(v) {
            Err(why) => self.problems.push(format!("entry {seq}: cannot be read ({why})")),
            Ok(l) => self.check_link(seq, &l),
        }
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
        self.entries += 1;
    }

    fn check_link(&mut self, seq: u64, l: &link::Link) {
        if l.v != u64::from(OBJECT_VERSION) {
            self.problems.push(format!("entry {seq}: has version {}, expected {OBJECT_VERSION}", l.v));
        }
        if l.seq != seq {
            self.problems.push(format!("entry {seq}: is stored as entry {seq} but says it is entry {}", l.seq));
        }
        if seq == 0 && l.prev != [0; 32] {
            self.problems.push("entry 0: prev hash is not all zeros".to_string());
        } else if let Some(p) = self.prev
            && seq != 0
            && l.prev != p.0
        {
            self.problems.push(format!("entry {seq}: prev hash does not match entry {}", seq - 1));
        }
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
