//! Reading the log for people: audit queries (newest first, through the indexes) and the JSON
//! Lines export, both as [`EntryView`]s, the shape `deltafed provenance --json` prints.

use std::io::Write;

use deltafed_protocol::provenance::Entry;
use deltafed_protocol::{DatasetRef, Hash, MemberId, Timestamp, signed};

use super::{Error, Provenance, dataset_prefix, peer_prefix, prefix_end, seq_of_key, seq_of_suffix};
use crate::store::Cf;

/// One entry as people and tools read it (hashes and ids in hex, time in RFC 3339).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct EntryView {
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    pub kind: String,
    /// `MEMBER/DATASET`, without the version.
    pub dataset: Option<String>,
    /// The dataset version the entry names, when it names one.
    #[serde(default)]
    pub version: Option<u64>,
    pub peer: Option<String>,
    pub exchange_id: Option<String>,
    /// The entry hash (what the next entry's `prev` and checkpoints refer to).
    pub hash: String,
    pub prev: String,
    pub note: String,
    pub objects: Vec<ObjectView>,
    /// The calls of a batch entry, each with its inclusion proofs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<super::calls::CallView>,
    /// Export only: the entry's exact canonical encoding, hex, from which `hash` is recomputed
    /// (docs/audit.md says how).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// A signed object an entry carries.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub struct ObjectView {
    pub kind: String,
    /// BLAKE3 of `bytes`.
    pub hash: String,
    /// The object's exact encoding, hex.
    pub bytes: String,
}

/// Which entries a query returns; every field set must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches publisher and dataset; the version is ignored.
    pub dataset: Option<DatasetRef>,
    pub peer: Option<MemberId>,
    /// Entries whose time is at or after this.
    pub since: Option<Timestamp>,
    pub limit: Option<usize>,
    /// Batch entries with a call whose key has this keyed hash ([`super::audit_hash`]).
    pub key: Option<Hash>,
}

impl Filter {
    pub(super) fn matches(&self, e: &Entry) -> bool {
        let dataset_ok = self.dataset.as_ref().is_none_or(|want| {
            e.dataset.as_ref().is_some_and(|d| d.publisher == want.publisher && d.dataset == want.dataset)
        });
        let peer_ok = self.peer.as_ref().is_none_or(|want| e.peer.as_ref() == Some(want));
        let since_ok = self.since.is_none_or(|since| e.time >= since);
        let key_ok = self.key.is_none_or(|k| e.calls.iter().any(|c| c.key == k));
        dataset_ok && peer_ok && since_ok && key_ok
    }
}

impl Provenance {
    /// Entries matching `f`, newest (highest seq) first.
    ///
    /// Walks newest first and stops at the limit, so the cost follows the limit, not the log:
    /// through the dataset (or else the peer) index when one is given, else the log itself.
    /// Times are the callers' clocks and may step back, so meeting an entry older than `since`
    /// does not end the walk by itself; it makes the walk look up, once, the lowest seq whose
    /// time is at or after `since` (time index), and the walk ends below that seq.
    pub fn query(&self, f: &Filter) -> Result<Vec<EntryView>, Error> {
        let limit = f.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut floor: Option<u64> = None;
        let mut failed: Option<Error> = None;
        // Returns whether to go on.
        let mut take = |seq: u64, bytes: &[u8]| -> Result<bool, Error> {
            if floor.is_some_and(|floor| seq < floor) {
                return Ok(false);
            }
            let e = decode_entry(seq, bytes)?;
            if let Some(since) = f.since
                && e.time < since
                && floor.is_none()
            {
                let lowest = self.first_seq_since(since)?.unwrap_or(u64::MAX);
                floor = Some(lowest);
                if seq < lowest {
                    return Ok(false);
                }
            }
            if f.matches(&e) {
                out.push(view(e, bytes));
            }
            Ok(out.len() < limit)
        };
        let mut go_on = |r: Result<bool, Error>| match r {
            Ok(more) => more,
            Err(e) => {
                failed = Some(e);
                false
            }
        };
        let by_index = f
            .key
            .as_ref()
            .map(super::key_prefix)
            .or_else(|| f.dataset.as_ref().map(dataset_prefix))
            .or_else(|| f.peer.as_ref().map(peer_prefix));
        match by_index {
            Some(prefix) => {
                let upper = prefix_end(&prefix);
                self.store.visit_range_rev(Cf::ProvenanceIndex, &prefix, upper.as_deref(), |k, _| {
                    let Some(seq) = seq_of_suffix(k) else {
                        return true;
                    };
                    go_on(match self.store.get(Cf::Provenance, &seq.to_be_bytes()) {
                        Ok(Some(bytes)) => take(seq, &bytes),
                        // An index row without its entry: the entry was removed behind the
                        // node's back, which `verify` reports; the query shows what is left.
                        Ok(None) => Ok(true),
                        Err(e) => Err(e.into()),
                    })
                })?;
            }
            None => {
                self.store.visit_range_rev(Cf::Provenance, &[], None, |k, v| match seq_of_key(k) {
                    Some(seq) => go_on(take(seq, v)),
                    None => true,
                })?;
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// JSON Lines, one [`EntryView`] per line, oldest first; returns the count.
    pub fn export(&self, out: impl Write) -> Result<u64, Error> {
        let mut out = std::io::BufWriter::new(out);
        let mut count = 0;
        let mut failed = None;
        self.store.visit_range(Cf::Provenance, &[], None, |k, v| {
            let mut line = || -> Result<(), Error> {
                let seq =
                    seq_of_key(k).ok_or_else(|| Error::BadKey { cf: Cf::Provenance.name(), key: hex::encode(k) })?;
                let mut line = view(decode_entry(seq, v)?, v);
                line.raw = Some(hex::encode(v));
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
                Ok(())
            };
            match line() {
                Ok(()) => {
                    count += 1;
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        out.flush()?;
        Ok(count)
    }

    /// The lowest seq whose time is at or after `since`, from the time index.
    fn first_seq_since(&self, since: Timestamp) -> Result<Option<u64>, Error> {
        let lower = super::time_key(since, 0);
        let mut first: Option<u64> = None;
        self.store.visit_range(Cf::ProvenanceIndex, &lower, Some(b"u"), |k, _| {
            if let Some(seq) = seq_of_suffix(k) {
                first = Some(first.map_or(seq, |f| f.min(seq)));
            }
            true
        })?;
        Ok(first)
    }
}

/// Full canonical decode, checking that the entry sits under its own seq.
pub(super) fn decode_entry(seq: u64, bytes: &[u8]) -> Result<Entry, Error> {
    let e: Entry = signed::decode(bytes).map_err(|source| Error::Decode { seq, source })?;
    if e.seq != seq {
        return Err(Error::Misplaced { key: seq, found: e.seq });
    }
    Ok(e)
}

pub(super) fn view(e: Entry, bytes: &[u8]) -> EntryView {
    EntryView {
        seq: e.seq,
        time: e.time.to_string(),
        kind: e.kind.as_str().to_string(),
        version: e.dataset.as_ref().and_then(|d| d.version),
        dataset: e.dataset.map(|d| d.unversioned().to_string()),
        peer: e.peer.map(|p| p.to_string()),
        exchange_id: e.exchange.map(|x| x.to_string()),
        hash: Entry::hash_of_encoding(bytes).to_string(),
        prev: e.prev.to_string(),
        note: e.note,
        calls: super::calls::views(&e.calls),
        objects: e
            .objects
            .into_iter()
            .map(|o| ObjectView { kind: o.kind, hash: Hash::of(&o.bytes).to_string(), bytes: hex::encode(&o.bytes) })
            .collect(),
        raw: None,
    }
}
