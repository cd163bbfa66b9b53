//! The exchange: fetch request, ticket, receipt.
//!
//! 1. The requester signs a [`FetchRequest`]: which grant (none for an unconditional dataset),
//!    which dataset and version, a fresh nonce, its clock, and the offset to resume from.
//! 2. The provider checks the authenticated peer against the request's signer, the grant, the
//!    nonce (never seen before) and the time (within the allowed skew), then signs a [`Ticket`]
//!    naming the exchange id, the hash of the request it answers, and the BLAKE3 hash and size of
//!    exactly the bytes it will send (the projected bytes, when the grant names fields).
//! 3. The data follows in chunks; the requester verifies them against the ticket's hash as they
//!    arrive and writes nothing unverified to its output.
//! 4. The requester signs a [`Receipt`] with the hash and byte count it received.
//!
//! Both sides log every step under the exchange id.

use serde::{Deserialize, Serialize};

use crate::crypto::{Hash, Kind};
use crate::id::{DatasetId, ExchangeId, GrantId, MemberId, Nonce};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub v: u32,
    pub requester: MemberId,
    pub provider: MemberId,
    pub dataset: DatasetId,
    /// A specific version, or the newest when absent.
    pub version: Option<u64>,
    /// The grant held; absent for datasets shared unconditionally.
    pub grant: Option<GrantId>,
    pub nonce: Nonce,
    pub time: Timestamp,
    /// Bytes already received and verified (resume).
    pub offset: u64,
}

crate::signed::signed_object!(FetchRequest, Kind::FetchRequest, 4 * 1024, requester);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    pub v: u32,
    pub exchange: ExchangeId,
    /// Hash of the signed fetch request this ticket answers.
    pub request: Hash,
    pub provider: MemberId,
    pub requester: MemberId,
    pub dataset: DatasetId,
    pub version: u64,
    /// The fields sent, when projected.
    pub fields: Option<Vec<String>>,
    /// BLAKE3 of the complete bytes of this delivery (projected if `fields` is set).
    pub content_hash: Hash,
    pub size: u64,
    pub offset: u64,
    /// The delivery is sent in chunks of this many bytes (the last may be shorter)...
    pub chunk_size: u32,
    /// ...and this is the BLAKE3 hash of the chunk table sent with the ticket: each chunk's
    /// BLAKE3 subtree chaining value ([`chunk_entry`]), which together combine into
    /// `content_hash` ([`table_root`]), so each chunk is verified as it arrives.
    pub chunks: Hash,
    pub time: Timestamp,
}

impl Ticket {
    /// The number of chunks of a delivery of `size` bytes.
    pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
        if chunk_size == 0 { 0 } else { size.div_ceil(u64::from(chunk_size)) }
    }

    /// The hash that names a chunk table (the concatenated entries).
    pub fn table_hash(chunk_hashes: &[Hash]) -> Hash {
        let mut h = blake3::Hasher::new();
        for c in chunk_hashes {
            h.update(&c.0);
        }
        h.finalize().into()
    }
}

crate::signed::signed_object!(Ticket, Kind::Ticket, 16 * 1024, provider);

/// The chunk table's entry for chunk `index` (its `bytes`) of a delivery of `count` chunks of
/// `chunk_size` bytes: the BLAKE3 chaining value of the subtree those bytes form in the tree of
/// the whole delivery, or, for a delivery of one chunk, its BLAKE3 hash (a lone chunk is the
/// root). `chunk_size` must be a power of two of at least 1024 bytes (BLAKE3's chunk), so every
/// chunk but the last is a complete subtree.
///
/// `None` when `bytes` cannot be that chunk: longer than `chunk_size`, `index` not below
/// `count`, or a `chunk_size` that is not such a power of two. (BLAKE3's subtree hashing panics
/// on such input, and the bytes may be a peer's.)
pub fn chunk_entry(bytes: &[u8], index: u64, count: u64, chunk_size: u32) -> Option<Hash> {
    use blake3::hazmat::HasherExt;
    if count <= 1 {
        return (index == 0).then(|| Hash::of(bytes));
    }
    let fits = u64::try_from(bytes.len()).is_ok_and(|n| n <= u64::from(chunk_size));
    if !fits || index >= count || !chunk_size.is_power_of_two() || chunk_size < 1024 {
        return None;
    }
    let mut h = blake3::Hasher::new();
    h.set_input_offset(index.checked_mul(u64::from(chunk_size))?);
    h.update(bytes);
    Some(Hash(h.finalize_non_root()))
}

/// The BLAKE3 hash of the whole delivery a chunk table describes: its entries merged as BLAKE3
/// merges subtrees (left-heavy: the left subtree holds the largest power of two of chunks less
/// than the total). An empty table is the empty delivery.
pub fn table_root(table: &[Hash]) -> Hash {
    use blake3::hazmat::{Mode, merge_subtrees_non_root, merge_subtrees_root};
    fn merge(t: &[Hash]) -> [u8; 32] {
        match t {
            [one] => one.0,
            _ => {
                let (l, r) = t.split_at(left_len(t.len()));
                merge_subtrees_non_root(&merge(l), &merge(r), Mode::Hash)
            }
        }
    }
    match table {
        [] => Hash::of(&[]),
        [one] => *one,
        _ => {
            let (l, r) = table.split_at(left_len(table.len()));
            Hash(*merge_subtrees_root(&merge(l), &merge(r), Mode::Hash).as_bytes())
        }
    }
}

/// The largest power of two less than `n` (n >= 2): the chunks in a left subtree.
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Asks for the records of a keyed dataset whose key field equals `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub v: u32,
    pub requester: MemberId,
    pub provider: MemberId,
    pub dataset: DatasetId,
    /// The grant held; absent for datasets shared unconditionally.
    pub grant: Option<GrantId>,
    pub key: String,
    pub nonce: Nonce,
    pub time: Timestamp,
}

crate::signed::signed_object!(QueryRequest, Kind::QueryRequest, 8 * 1024, requester);

/// The provider's signed answer: the hash of exactly the record bytes sent with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryAnswer {
    pub v: u32,
    pub exchange: ExchangeId,
    /// Hash of the signed query request this answers.
    pub request: Hash,
    pub provider: MemberId,
    pub requester: MemberId,
    pub dataset: DatasetId,
    pub version: u64,
    /// The fields returned, when projected.
    pub fields: Option<Vec<String>>,
    /// BLAKE3 of the records as sent (a JSON array of objects).
    pub records: Hash,
    pub count: u64,
    pub time: Timestamp,
}

crate::signed::signed_object!(QueryAnswer, Kind::QueryAnswer, 16 * 1024, provider);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub v: u32,
    pub exchange: ExchangeId,
    pub requester: MemberId,
    pub provider: MemberId,
    pub content_hash: Hash,
    pub bytes: u64,
    pub time: Timestamp,
}

crate::signed::signed_object!(Receipt, Kind::Receipt, 4 * 1024, requester);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tree shape from 0 to 70 chunks (BLAKE3's own 1 KiB chunks here, so the test is quick)
    /// merges into the ordinary hash, with a short last chunk and a full one.
    #[test]
    fn tables_of_every_shape_merge_into_the_hash() {
        for count in 0..=70usize {
            for tail in [1usize, 1024] {
                let size = if count == 0 { 0 } else { (count - 1) * 1024 + tail };
                let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
                let table: Vec<Hash> = data
                    .chunks(1024)
                    .enumerate()
                    .map(|(i, c)| chunk_entry(c, i as u64, count as u64, 1024).expect("a chunk of the tree"))
                    .collect();
                assert_eq!(table_root(&table), Hash::of(&data), "{count} chunks, last {tail} bytes");
            }
        }
    }

    /// Bytes that cannot be the chunk named have no entry, and never panic the hasher: a chunk
    /// longer than the chunk size (at an offset whose subtree is only that long), an index past
    /// the last chunk, a chunk size that is not a power of two of at least 1 KiB.
    #[test]
    fn what_cannot_be_the_chunk_has_no_entry() {
        let long = vec![7u8; 1025];
        assert_eq!(chunk_entry(&long, 1, 3, 1024), None);
        assert_eq!(chunk_entry(&long[..1024], 3, 3, 1024), None);
        assert_eq!(chunk_entry(&long[..1000], 1, 3, 1000), None);
        assert_eq!(chunk_entry(&long[..512], 1, 3, 512), None);
        assert_eq!(chunk_entry(&long[..10], 1, 1, 1024), None);
        assert!(chunk_entry(&long[..1024], 1, 3, 1024).is_some());
        assert!(chunk_entry(&long[..10], 2, 3, 1024).is_some(), "a short last chunk");
    }

    #[test]
    fn left_subtrees_hold_the_largest_power_of_two_below_the_count() {
        let cases = [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (1000, 512), (1025, 1024)];
        for (n, left) in cases {
            assert_eq!(left_len(n), left, "{n}");
        }
    }
}
