//! The node's provenance log: a tamper-evident, append-only record of every step the member
//! takes in the federation (publications, requests, grants, exchanges, queries), kept so an
//! auditor can later see who got what, when and under which signed objects.
//!
//! Tamper evidence comes from two things (see `deltafed_protocol::provenance`): each entry
//! carries the hash of the one before it, so changing or removing an entry breaks the chain
//! after it; and the node signs its head from time to time as a checkpoint that peers keep as
//! witnesses, so a log that was cut short and regrown no longer contains the head a peer holds.
//! [`Provenance::verify`] checks both in one pass over the log.
//!
//! Storage (one RocksDB, see [`crate::store`]):
//! - `Cf::Provenance`: `seq` (u64 big-endian) → the entry's canonical bytes, so key order is log
//!   order and the head is found by seeking to the last key.
//! - `Cf::ProvenanceIndex`: `d` + `publisher/dataset` + 0x00 + seq, `p` + peer + 0x00 + seq and
//!   `t` + time + seq (all big-endian) → empty, written in the same batch as the entry, so an
//!   audit query walks one short key range newest first instead of the whole log.
//! - `Cf::Checkpoints`: seq → our own signed checkpoint.
//! - `Cf::Witness`: member + 0x00 + seq → a peer's signed checkpoint we keep for them.
//! - `Cf::Meta`: what is archived into sealed segment files, and the highest seq of our
//!   checkpoints each peer acknowledged holding ([`archive`]). An archived log's rows start
//!   after the last archived entry, whose hash the first one chains to.
//!
//! Durability: writes go to the WAL without an fsync of their own; the node makes them durable
//! with one shared sync per batch of concurrent work (`crate::durable`) before it reports an
//! operation done, and before a checkpoint is signed the WAL is synced, so whatever a
//! checkpoint vouches for is on disk. A crash can only lose a suffix no command reported and no
//! checkpoint covers, never break the chain (each batch is atomic).

pub mod archive;
mod calls;
mod link;
mod query;
pub mod record;
#[cfg(test)]
mod tests;
mod verify;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use deltafed_protocol::provenance::{CallLog, Checkpoint, Entry, EntryKind, Evidence};
use deltafed_protocol::roster::Roster;
use deltafed_protocol::{
    DatasetRef, ExchangeId, Hash, MemberId, OBJECT_VERSION, Object, PublicKey, SecretKey, Signed, Timestamp, cbor,
    signed,
};

use crate::store::{self, Batch, Cf, Store};

pub use archive::{ArchiveError, ArchiveRequest, ArchiveStatus, Archived, ArchivedThrough, SegmentInfo};
pub use calls::CallView;
pub use query::{EntryView, Filter, ObjectView};

/// Most witness checkpoints kept per member (see [`Provenance::store_witness`]).
pub const WITNESSES_KEPT: usize = 1024;
pub use verify::VerifyReport;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("cannot {action}: the provenance log was opened read-only, without the node's key")]
    ReadOnly { action: &'static str },
    #[error("cannot encode provenance entry {seq}: {source}")]
    Encode { seq: u64, source: cbor::Error },
    #[error("provenance entry {seq} would be {size} bytes, over the limit of {max}; record large evidence by hash")]
    TooLarge { seq: u64, size: usize, max: usize },
    #[error("the provenance log is full: its head is at seq {0}")]
    Exhausted(u64),
    #[error("provenance entry {seq} cannot be decoded ({source}); run `deltafed provenance verify`")]
    Decode { seq: u64, source: cbor::Error },
    #[error("provenance entry stored under seq {key} says it is entry {found}; run `deltafed provenance verify`")]
    Misplaced { key: u64, found: u64 },
    #[error("the {cf} column family holds a row with malformed key {key}")]
    BadKey { cf: &'static str, key: String },
    #[error("cannot sign the checkpoint at seq {seq}: {source}")]
    Sign { seq: u64, source: cbor::Error },
    #[error("the stored checkpoint {what} is not valid: {source}")]
    BadStoredCheckpoint { what: String, source: signed::Error },
    #[error("checkpoint refused: {0}")]
    Witness(signed::Error),
    #[error("checkpoint refused: it is {0}'s own; this node keeps checkpoints of its peers only")]
    OwnCheckpoint(MemberId),
    #[error("checkpoint refused: {member}'s checkpoint at seq {seq} is not newer than the one held (seq {held})")]
    Stale { member: MemberId, seq: u64, held: u64 },
    #[error(
        "checkpoint refused: {member} equivocates, having signed two heads for seq {seq} ({held} held, {got} received)"
    )]
    Equivocation { member: MemberId, seq: u64, held: Hash, got: Hash },
    #[error("cannot write the provenance export: {0}")]
    Export(#[from] std::io::Error),
    #[error("cannot write the provenance export: {0}")]
    ExportJson(#[from] serde_json::Error),
}

/// What a caller records; seq, prev and the hash are the log's business.
#[derive(Debug, Clone)]
pub struct Record {
    pub time: Timestamp,
    pub kind: EntryKind,
    pub dataset: Option<DatasetRef>,
    pub peer: Option<MemberId>,
    pub exchange: Option<ExchangeId>,
    pub note: String,
    pub objects: Vec<Evidence>,
    /// The calls of a batch entry.
    pub calls: Vec<CallLog>,
    /// Datasets the calls name besides `dataset`, so the dataset index finds the entry by each.
    pub also: Vec<DatasetRef>,
}

/// Where an entry landed: its sequence number and the hash the next entry chains to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: Hash,
}

/// The log of one member. `Send + Sync`; the node shares it through an `Arc`.
#[derive(Debug)]
pub struct Provenance {
    store: Store,
    member: MemberId,
    key: Option<SecretKey>,
    /// The key our checkpoints must carry: ours, or, for an auditor without it, the member's key
    /// from the roster ([`Provenance::with_signer`]).
    signer: Option<PublicKey>,
    /// Appends and checkpoints take this, so seq and prev are assigned in one order only.
    state: Mutex<State>,
    /// Makes the check-then-store of a witness atomic per node.
    witness: Mutex<()>,
    /// One archive run at a time.
    archiving: Mutex<()>,
    /// Verify reads the archive record and the live rows under `read`; an archive commits (moves
    /// the record and deletes rows) under `write`, so a verify never sees half of it.
    archive_lock: RwLock<()>,
    /// `[provenance] archive_dir`: where segments go, and where verify looks for them.
    archive_dir: Option<PathBuf>,
}

#[derive(Debug)]
struct State {
    head: Option<Appended>,
    /// Seq of the newest own checkpoint, to sign again only when the head moved.
    last_checkpoint: Option<u64>,
}

impl Provenance {
    /// Opens the log in `store`. `key: None` is read-only use (an auditor verifying, exporting or
    /// querying a copied data dir): appends and checkpoints are then refused.
    pub fn open(store: Store, member: MemberId, key: Option<SecretKey>) -> Result<Provenance, Error> {
        // Seek to the last key rather than scan: start-up must stay fast with millions of
        // entries. Rows whose key is not a seq are skipped here and reported by `verify`.
        let mut head = None;
        store.visit_range_rev(Cf::Provenance, &[], None, |k, v| match seq_of_key(k) {
            Some(seq) => {
                head = Some(Appended { seq, hash: Entry::hash_of_encoding(v) });
                false
            }
            None => true,
        })?;
        // A log archived up to its head has no rows left: it continues the last archived entry.
        let archived = archive::read_archived(&store)?;
        if let Some(a) = &archived {
            store.set_index_floor(a.seq.saturating_add(1));
            if head.is_none_or(|h| h.seq < a.seq) {
                head = Some(Appended { seq: a.seq, hash: a.hash });
            }
        }
        let last_checkpoint = store.last(Cf::Checkpoints)?.and_then(|(k, _)| seq_of_key(&k));
        Ok(Provenance {
            store,
            member,
            signer: key.as_ref().map(SecretKey::public),
            key,
            state: Mutex::new(State { head, last_checkpoint }),
            witness: Mutex::new(()),
            archiving: Mutex::new(()),
            archive_lock: RwLock::new(()),
            archive_dir: None,
        })
    }

    /// For read-only use: the member's public key (from the roster), against which `verify`
    /// checks checkpoint signers. Without it (and without the secret key) `verify` can only check
    /// that all checkpoints carry one and the same key.
    pub fn with_signer(mut self, key: PublicKey) -> Provenance {
        self.signer = Some(key);
        self
    }

    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// Appends one entry, atomically with its index rows.
    pub fn append(&self, rec: Record) -> Result<Appended, Error> {
        self.append_with(rec, Batch::default())
    }

    /// Appends one entry in the same atomic write as `state`: the change it records and the
    /// record of it land together or not at all.
    pub fn append_with(&self, rec: Record, state: Batch) -> Result<Appended, Error> {
        self.writable("append to the provenance log")?;
        let mut guard = self.lock_state();
        let mut batch = state;
        let appended = self.prepare(guard.head, rec, &mut batch)?;
        self.store.write(batch)?;
        guard.head = Some(appended);
        Ok(appended)
    }

    /// Appends several entries in one write (group commit for busy paths and bulk imports).
    pub fn append_all(&self, recs: Vec<Record>) -> Result<Vec<Appended>, Error> {
        self.writable("append to the provenance log")?;
        if recs.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.lock_state();
        let mut batch = Batch::default();
        let mut head = state.head;
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let appended = self.prepare(head, rec, &mut batch)?;
            head = Some(appended);
            out.push(appended);
        }
        self.store.write(batch)?;
        state.head = head;
        Ok(out)
    }

    pub fn head(&self) -> Option<Appended> {
        self.lock_state().head
    }

    /// Number of sequence numbers used (head seq + 1); entries removed behind the node's back
    /// are not subtracted, `verify` reports them.
    pub fn len(&self) -> u64 {
        self.head().map_or(0, |h| h.seq.saturating_add(1))
    }

    pub fn is_empty(&self) -> bool {
        self.head().is_none()
    }

    /// Signs the head as a checkpoint if it moved since the last one, stores it
    /// (`Cf::Checkpoints`) and returns it; `None` when there is nothing new to sign.
    pub fn checkpoint(&self, now: Timestamp) -> Result<Option<Signed<Checkpoint>>, Error> {
        let key = self.writable("sign a checkpoint")?;
        let mut state = self.lock_state();
        let Some(head) = state.head else {
            return Ok(None);
        };
        if state.last_checkpoint == Some(head.seq) {
            return Ok(None);
        }
        // A checkpoint vouches for everything up to its head, so that must be on disk first
        // (appends hold the same lock, so none can slip in between the sync and the signature).
        self.store.sync_wal()?;
        let body =
            Checkpoint { v: OBJECT_VERSION, member: self.member.clone(), seq: head.seq, head: head.hash, time: now };
        let cp = Signed::sign(body, key).map_err(|source| Error::Sign { seq: head.seq, source })?;
        self.store.put(Cf::Checkpoints, &head.seq.to_be_bytes(), cp.as_bytes())?;
        state.last_checkpoint = Some(head.seq);
        Ok(Some(cp))
    }

    /// Our own checkpoints, oldest first.
    pub fn own_checkpoints(&self) -> Result<Vec<Signed<Checkpoint>>, Error> {
        self.store
            .scan_prefix(Cf::Checkpoints, &[])?
            .into_iter()
            .map(|(k, v)| {
                Signed::<Checkpoint>::decode(&v).map_err(|source| Error::BadStoredCheckpoint {
                    what: format!("under key {}", hex::encode(&k)),
                    source,
                })
            })
            .collect()
    }

    /// Keeps a peer's checkpoint as its witness. Refuses one whose signature or author does not
    /// check against the roster, one of our own, one that contradicts a held one (same seq,
    /// other head: [`Error::Equivocation`]) and one whose seq is not above the newest held for
    /// that member ([`Error::Stale`]); stores the rest under member/seq.
    pub fn store_witness(&self, cp_bytes: &[u8], roster: &Roster) -> Result<Signed<Checkpoint>, Error> {
        let cp = Signed::<Checkpoint>::decode_from_member(cp_bytes, roster).map_err(Error::Witness)?;
        let body = cp.body();
        if body.member == self.member {
            return Err(Error::OwnCheckpoint(body.member.clone()));
        }
        let _guard = self.witness.lock().unwrap_or_else(PoisonError::into_inner);
        let key = witness_key(&body.member, body.seq);
        // Same seq first: a different head there is equivocation, which says more than "stale".
        if let Some(held) = self.store.get(Cf::Witness, &key)? {
            let held = decode_stored(&held, || format!("of {} at seq {}", body.member, body.seq))?;
            if held.body().head != body.head {
                return Err(Error::Equivocation {
                    member: body.member.clone(),
                    seq: body.seq,
                    held: held.body().head,
                    got: body.head,
                });
            }
        }
        if let Some(held) = self.latest_witness(&body.member)?
            && body.seq <= held.body().seq
        {
            return Err(Error::Stale { member: body.member.clone(), seq: body.seq, held: held.body().seq });
        }
        self.store.put(Cf::Witness, &key, cp.as_bytes())?;
        self.thin_witnesses(&body.member)?;
        Ok(cp)
    }

    /// Keeps at most [`WITNESSES_KEPT`] checkpoints per member: past it, the newest half stay and
    /// every second one of the older ones goes, so history stays sampled (densest near now)
    /// while a member that checkpoints for years, or floods us, costs a bounded amount of disk.
    fn thin_witnesses(&self, member: &MemberId) -> Result<(), Error> {
        let prefix = member_prefix(member);
        let upper = prefix_end(&prefix);
        let mut keys = Vec::new();
        self.store.visit_range(Cf::Witness, &prefix, upper.as_deref(), |k, _| {
            keys.push(k.to_vec());
            true
        })?;
        if keys.len() <= WITNESSES_KEPT {
            return Ok(());
        }
        let older = &keys[..keys.len() - WITNESSES_KEPT / 2];
        let mut batch = Batch::default();
        // The oldest one held always stays: it anchors the longest stretch of history.
        for k in older.iter().skip(1).step_by(2) {
            batch.delete(Cf::Witness, k.clone());
        }
        self.store.write(batch)?;
        Ok(())
    }

    /// The newest checkpoint of `member` that we hold as its witness.
    pub fn latest_witness(&self, member: &MemberId) -> Result<Option<Signed<Checkpoint>>, Error> {
        let prefix = member_prefix(member);
        let upper = prefix_end(&prefix);
        let mut found = None;
        self.store.visit_range_rev(Cf::Witness, &prefix, upper.as_deref(), |_, v| {
            found = Some(v.to_vec());
            false
        })?;
        found.map(|bytes| decode_stored(&bytes, || format!("of {member} (newest)"))).transpose()
    }

    /// The checkpoints of `member` held as a witness, at most `max`: the newest half and the rest
    /// spread evenly over older history, so that a member that rewrites its log and then sends
    /// many new checkpoints cannot push every old one out of what a verifier is shown.
    pub fn witnesses(&self, member: &MemberId, max: usize) -> Result<Vec<Signed<Checkpoint>>, Error> {
        let prefix = member_prefix(member);
        let upper = prefix_end(&prefix);
        let mut all = Vec::new();
        self.store.visit_range(Cf::Witness, &prefix, upper.as_deref(), |_, v| {
            all.push(v.to_vec());
            true
        })?;
        let picked: Vec<&Vec<u8>> = if all.len() <= max {
            all.iter().collect()
        } else {
            let newest = max / 2;
            let older = &all[..all.len() - newest];
            let step = older.len().div_ceil(max - newest).max(1);
            older.iter().step_by(step).chain(all[all.len() - newest..].iter()).collect()
        };
        picked.into_iter().map(|b| decode_stored(b, || format!("of {member}"))).collect()
    }

    fn writable(&self, action: &'static str) -> Result<&SecretKey, Error> {
        self.key.as_ref().ok_or(Error::ReadOnly { action })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        // State is only changed after a successful write, so a panic elsewhere while the lock
        // was held cannot have left it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the entry that follows `after`, adding it and its index rows to `batch`.
    fn prepare(&self, after: Option<Appended>, rec: Record, batch: &mut Batch) -> Result<Appended, Error> {
        let (seq, prev) = match after {
            None => (0, Hash([0; 32])),
            Some(h) => (h.seq.checked_add(1).ok_or(Error::Exhausted(h.seq))?, h.hash),
        };
        let entry = Entry {
            v: OBJECT_VERSION,
            seq,
            time: rec.time,
            kind: rec.kind,
            dataset: rec.dataset,
            peer: rec.peer,
            exchange: rec.exchange,
            note: rec.note,
            objects: rec.objects,
            prev,
            calls: rec.calls,
        };
        let bytes = signed::encode(&entry).map_err(|source| Error::Encode { seq, source })?;
        // Refused here, not at read time: an entry over the limit would never decode again.
        if bytes.len() > Entry::MAX_SIZE {
            return Err(Error::TooLarge { seq, size: bytes.len(), max: Entry::MAX_SIZE });
        }
        let hash = Entry::hash_of_encoding(&bytes);
        if let Some(d) = &entry.dataset {
            batch.put(Cf::ProvenanceIndex, index_key(&dataset_prefix(d), seq), Vec::new());
        }
        for d in &rec.also {
            batch.put(Cf::ProvenanceIndex, index_key(&dataset_prefix(d), seq), Vec::new());
        }
        if let Some(p) = &entry.peer {
            batch.put(Cf::ProvenanceIndex, index_key(&peer_prefix(p), seq), Vec::new());
        }
        for c in &entry.calls {
            batch.put(Cf::ProvenanceIndex, index_key(&key_prefix(&c.key), seq), Vec::new());
        }
        batch.put(Cf::ProvenanceIndex, time_key(entry.time, seq), Vec::new());
        batch.put(Cf::Provenance, seq.to_be_bytes(), bytes);
        Ok(Appended { seq, hash })
    }
}

fn decode_stored(bytes: &[u8], what: impl FnOnce() -> String) -> Result<Signed<Checkpoint>, Error> {
    Signed::<Checkpoint>::decode(bytes).map_err(|source| Error::BadStoredCheckpoint { what: what(), source })
}

/// The seq of a `Cf::Provenance` or `Cf::Checkpoints` key, if it is one.
fn seq_of_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// The seq an index or witness key ends with.
fn seq_of_suffix(key: &[u8]) -> Option<u64> {
    key.len().checked_sub(8).and_then(|start| seq_of_key(&key[start..]))
}

fn dataset_prefix(d: &DatasetRef) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + d.publisher.as_str().len() + d.dataset.as_str().len() + 1);
    k.push(b'd');
    k.extend_from_slice(d.publisher.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(d.dataset.as_str().as_bytes());
    k.push(0);
    k
}

/// `k` + the keyed hash of a call's key (see [`audit_hash`]).
fn key_prefix(h: &Hash) -> Vec<u8> {
    let mut k = Vec::with_capacity(33);
    k.push(b'k');
    k.extend_from_slice(&h.0);
    k
}

/// This node's audit key, derived from its secret key: it turns the keys of calls (often
/// personal identifiers) into the hashes the log keeps, which only this node can compute.
pub fn audit_key(key: &SecretKey) -> [u8; 32] {
    blake3::derive_key("deltafed/v1/audit-key", &key.seed())
}

/// The keyed hash under which the log records (and finds) a call's key.
pub fn audit_hash(audit_key: &[u8; 32], key: &str) -> Hash {
    blake3::keyed_hash(audit_key, key.as_bytes()).into()
}

fn peer_prefix(m: &MemberId) -> Vec<u8> {
    let mut k = vec![b'p'];
    k.extend_from_slice(&member_prefix(m));
    k
}

/// `member + 0x00`: ids never contain a NUL, so `a` and `ab` cannot share a prefix.
fn member_prefix(m: &MemberId) -> Vec<u8> {
    let mut k = Vec::with_capacity(m.as_str().len() + 1);
    k.extend_from_slice(m.as_str().as_bytes());
    k.push(0);
    k
}

fn index_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_key(time: Timestamp, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b't');
    k.extend_from_slice(&time.0.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn witness_key(m: &MemberId, seq: u64) -> Vec<u8> {
    index_key(&member_prefix(m), seq)
}

/// The smallest key above every key starting with `prefix` (an exclusive upper bound), or
/// `None` when there is none (a prefix of only 0xff bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
