//! Reads the chain fields of an entry (`v`, `seq`, `prev`, and `time` for archives) straight
//! from its stored CBOR.
//!
//! Verifying a log of a million entries in well under two seconds leaves no room for the full
//! canonical decode (which builds, sorts and re-encodes a value tree per entry). The chain check
//! needs only three fields, and the entry hash is taken over the raw bytes anyway, so serde reads
//! just those three and skips the rest without building anything. Canonical form and the other
//! fields' shapes are what `query` and `export` check when they decode an entry in full.

use deltafed_protocol::{Hash, Timestamp};
use serde::Deserialize;

/// The fields the chain check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Link {
    pub v: u64,
    pub seq: u64,
    pub time: Timestamp,
    pub prev: [u8; 32],
}

#[derive(Deserialize)]
struct Wire {
    v: u64,
    seq: u64,
    time: Timestamp,
    prev: Hash,
}

/// The chain fields of one stored entry, or why they cannot be read.
pub(super) fn read(bytes: &[u8]) -> Result<Link, String> {
    let w: Wire = cbor4ii::serde::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(Link { v: w.v, seq: w.seq, time: w.time, prev: w.prev.0 })
}
