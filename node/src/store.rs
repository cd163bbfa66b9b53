//! The node's database: one RocksDB with a column family per kind of record.
//!
//! Modules own their key layouts (`catalog`, later grants, provenance...); this module opens the
//! database, names the column families and turns RocksDB errors into errors that say what failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    BlockBasedOptions, BoundColumnFamily, Cache, ColumnFamilyDescriptor, DBCompressionType, DBWithThreadMode,
    IteratorMode, MultiThreaded, Options, WriteBatch, WriteBufferManager,
};

use crate::config::StorageConfig;

type Db = DBWithThreadMode<MultiThreaded>;

/// A key and its value.
pub type Row = (Vec<u8>, Vec<u8>);

/// Column families. Adding one is backwards compatible (missing ones are created on open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    /// Small node-wide values (schema version, roster version in force).
    Meta,
    /// Newest state per dataset: `publisher/dataset` → catalog record.
    Catalog,
    /// Every verified manifest: `publisher/dataset/version(be)` → signed bytes.
    Manifests,
    /// Members as last seen (addresses, last connection).
    Members,
    Grants,
    Requests,
    Exchanges,
    Provenance,
    Peers,
    /// This node's own signed checkpoints: `seq(be)` → signed bytes.
    Checkpoints,
    /// Checkpoints peers sent us (we are their witness): `member/seq(be)` → signed bytes.
    Witness,
    /// Secondary indexes of the provenance log (by dataset, peer, time).
    ProvenanceIndex,
    /// Record-query indexes: `content hash ++ key` → record locations.
    KeyIndex,
    /// Seen fetch/query nonces (replay protection), with their time.
    Nonces,
    /// Local applications of the gateway (token hashes, datasets, rates) and their call counts.
    Apps,
}

impl Cf {
    pub const ALL: [Cf; 15] = [
        Cf::Meta,
        Cf::Catalog,
        Cf::Manifests,
        Cf::Members,
        Cf::Grants,
        Cf::Requests,
        Cf::Exchanges,
        Cf::Provenance,
        Cf::Peers,
        Cf::Checkpoints,
        Cf::Witness,
        Cf::ProvenanceIndex,
        Cf::KeyIndex,
        Cf::Nonces,
        Cf::Apps,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Catalog => "catalog",
            Cf::Manifests => "manifests",
            Cf::Members => "members",
            Cf::Grants => "grants",
            Cf::Requests => "requests",
            Cf::Exchanges => "exchanges",
            Cf::Provenance => "provenance",
            Cf::Peers => "peers",
            Cf::Checkpoints => "checkpoints",
            Cf::Witness => "witness",
            Cf::ProvenanceIndex => "provenance_index",
            Cf::KeyIndex => "key_index",
            Cf::Nonces => "nonces",
            Cf::Apps => "apps",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the database at {path}: {source}")]
    Open { path: PathBuf, source: rocksdb::Error },
    #[error("database {op} failed in {cf}: {source}")]
    Op { op: &'static str, cf: &'static str, source: rocksdb::Error },
    #[error("column family {0} is missing from the database")]
    MissingCf(&'static str),
    #[error("the database task failed: {0}")]
    Task(String),
}

/// A handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    /// Rows of `Cf::ProvenanceIndex` whose key ends in a seq below this are dropped by
    /// compactions: they index entries moved into sealed archives ([`Store::set_index_floor`]).
    index_floor: Arc<AtomicU64>,
    /// The memory RocksDB was given (none for a read-only open).
    memory: Option<Memory>,
}

#[derive(Clone)]
struct Memory {
    cache: Cache,
    cache_limit: u64,
    buffers: WriteBufferManager,
}

/// What RocksDB holds in memory now, against the configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryUsage {
    pub block_cache: u64,
    pub block_cache_limit: u64,
    pub write_buffers: u64,
    pub write_buffers_limit: u64,
}

/// Block size of the provenance log and its index: entries are read in runs (verify, export,
/// archive) and a bigger block compresses the repeated structure of neighbouring entries better.
const LOG_BLOCK_SIZE: usize = 16 * 1024;
/// zstd level for the log: 3 is zstd's default, several times faster than the high levels for a
/// few percent of size.
const ZSTD_LEVEL: i32 = 3;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

impl Store {
    /// Opens (creating if needed) with the default memory bounds of [`StorageConfig`].
    pub fn open(path: &Path) -> Result<Store, Error> {
        Store::open_with(path, &StorageConfig::default())
    }

    /// Opens (creating if needed) with RocksDB's memory bounded by `storage`: one LRU block cache
    /// shared by every column family, which also holds their index and filter blocks (otherwise
    /// those grow with the database, outside any bound), and one write buffer manager over all
    /// memtables, which stalls writers rather than grow past its limit.
    pub fn open_with(path: &Path, storage: &StorageConfig) -> Result<Store, Error> {
        let memory = Memory {
            cache: Cache::new_lru_cache(usize::try_from(storage.block_cache.0).unwrap_or(usize::MAX)),
            cache_limit: storage.block_cache.0,
            buffers: WriteBufferManager::new_write_buffer_manager(
                usize::try_from(storage.write_buffers.0).unwrap_or(usize::MAX),
                true,
            ),
        };
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A small node should stay small: cap background threads.
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.set_write_buffer_manager(&memory.buffers);
        // A column family written rarely keeps old WAL files alive until it flushes; bounding the
        // WAL makes RocksDB flush it, so neither the WAL nor recovery time grows without end.
        opts.set_max_total_wal_size(storage.write_buffers.0.saturating_mul(4));
        let index_floor = Arc::new(AtomicU64::new(0));
        let cfs = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options(cf, storage, &memory, &index_floor)));
        let db = Db::open_cf_descriptors(&opts, path, cfs)
            .map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        Ok(Store { db: Arc::new(db), index_floor, memory: Some(memory) })
    }

    /// Index rows for entries below `floor` (archived, no longer in `Cf::Provenance`) are dead:
    /// readers skip them, and compactions of `Cf::ProvenanceIndex` drop them. Only ever raised.
    pub fn set_index_floor(&self, floor: u64) {
        self.index_floor.fetch_max(floor, Ordering::Relaxed);
    }

    /// The block cache's and the memtables' current size, against their bounds.
    pub fn memory_usage(&self) -> Option<MemoryUsage> {
        self.memory.as_ref().map(|m| MemoryUsage {
            block_cache: m.cache.get_usage() as u64,
            block_cache_limit: m.cache_limit,
            write_buffers: m.buffers.get_usage() as u64,
            write_buffers_limit: m.buffers.get_buffer_size() as u64,
        })
    }

    /// Bytes of SST files of a column family (what it takes on disk, WAL aside).
    pub fn disk_size(&self, cf: Cf) -> Result<u64, Error> {
        let h = self.cf(cf)?;
        self.db
            .property_int_value_cf(&h, "rocksdb.total-sst-files-size")
            .map(|v| v.unwrap_or(0))
            .map_err(|source| Error::Op { op: "read a property of", cf: cf.name(), source })
    }

    /// Compacts the keys of `cf` below `end` (all of them with `None`), so deleted rows give their
    /// disk space back now rather than at some later compaction.
    pub fn compact(&self, cf: Cf, end: Option<&[u8]>) -> Result<(), Error> {
        let h = self.cf(cf)?;
        self.db.compact_range_cf(&h, None::<&[u8]>, end);
        Ok(())
    }

    fn cf(&self, cf: Cf) -> Result<Arc<BoundColumnFamily<'_>>, Error> {
        self.db.cf_handle(cf.name()).ok_or(Error::MissingCf(cf.name()))
    }

    /// The sequence number of the newest write visible to readers: it moves with every write,
    /// so a value read after it was taken is current for as long as it stays the same.
    pub fn sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let h = self.cf(cf)?;
        self.db.get_cf(&h, key).map_err(|source| Error::Op { op: "read", cf: cf.name(), source })
    }

    pub fn put(&self, cf: Cf, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let h = self.cf(cf)?;
        self.db.put_cf(&h, key, value).map_err(|source| Error::Op { op: "write", cf: cf.name(), source })
    }

    /// Applies several writes atomically.
    pub fn write(&self, batch: Batch) -> Result<(), Error> {
        let mut wb = WriteBatch::default();
        for (cf, from, to) in batch.ranges {
            wb.delete_range_cf(&self.cf(cf)?, from, to);
        }
        for (cf, key, value) in batch.puts {
            let h = self.cf(cf)?;
            match value {
                Some(v) => wb.put_cf(&h, key, v),
                None => wb.delete_cf(&h, key),
            }
        }
        self.db.write(wb).map_err(|source| Error::Op { op: "write", cf: "batch", source })
    }

    /// All entries of a column family whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<Row>, Error> {
        self.scan_prefix_limit(cf, prefix, usize::MAX)
    }

    /// Like [`Store::scan_prefix`], at most `limit` rows.
    pub fn scan_prefix_limit(&self, cf: Cf, prefix: &[u8], limit: usize) -> Result<Vec<Row>, Error> {
        let h = self.cf(cf)?;
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(&h, mode) {
            let (k, v) = item.map_err(|source| Error::Op { op: "scan", cf: cf.name(), source })?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Makes every write so far durable: one sync of the write-ahead log covers all of them
    /// (writes themselves do not sync; see `crate::durable` for group commit).
    pub fn sync_wal(&self) -> Result<(), Error> {
        self.db.flush_wal(true).map_err(|source| Error::Op { op: "sync the log of", cf: "all", source })
    }

    /// Flushes memtables to disk (used at shutdown so the next start replays little).
    pub fn flush(&self) -> Result<(), Error> {
        for cf in Cf::ALL {
            let h = self.cf(cf)?;
            self.db.flush_cf(&h).map_err(|source| Error::Op { op: "flush", cf: cf.name(), source })?;
        }
        Ok(())
    }

    /// Opens an existing database for reading only, e.g. a data dir an auditor copied, or the
    /// live one while its node runs: a read-only open takes no lock, and sees what was written
    /// up to the moment of opening. Column families the database lacks stay absent (reads of them
    /// fail with [`Error::MissingCf`]) rather than making the whole open fail.
    pub fn open_read_only(path: &Path) -> Result<Store, Error> {
        let opts = Options::default();
        let open_err = |source| Error::Open { path: path.to_path_buf(), source };
        let present = Db::list_cf(&opts, path).map_err(open_err)?;
        let names = Cf::ALL.iter().map(|cf| cf.name()).filter(|name| present.iter().any(|p| p == name));
        let db = Db::open_cf_for_read_only(&opts, path, names, false).map_err(open_err)?;
        Ok(Store { db: Arc::new(db), index_floor: Arc::new(AtomicU64::new(0)), memory: None })
    }

    /// The row with the highest key, found by seeking to the end rather than scanning (the head
    /// of a log keyed by big-endian sequence numbers).
    pub fn last(&self, cf: Cf) -> Result<Option<Row>, Error> {
        let mut found = None;
        self.visit_range_rev(cf, &[], None, |k, v| {
            found = Some((k.to_vec(), v.to_vec()));
            false
        })?;
        Ok(found)
    }

    /// Calls `visit` with each row whose key is in `lower..upper` (`upper: None` = to the end),
    /// in key order, until it returns `false`. Rows are lent, not copied, so a pass over a whole
    /// column family (verifying a log) costs no allocation per row.
    pub fn visit_range(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        let h = self.cf(cf)?;
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        let mut it = self.db.raw_iterator_cf_opt(&h, opts);
        it.seek(lower);
        while let Some((k, v)) = it.item() {
            if !visit(k, v) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|source| Error::Op { op: "scan", cf: cf.name(), source })
    }

    /// Like [`Store::visit_range`], highest key first (newest first in a log or an index whose
    /// keys end in a big-endian sequence number).
    pub fn visit_range_rev(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), Error> {
        let h = self.cf(cf)?;
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        if let Some(upper) = upper {
            opts.set_iterate_upper_bound(upper);
        }
        let mut it = self.db.raw_iterator_cf_opt(&h, opts);
        it.seek_to_last();
        while let Some((k, v)) = it.item() {
            if !visit(k, v) {
                return Ok(());
            }
            it.prev();
        }
        it.status().map_err(|source| Error::Op { op: "scan", cf: cf.name(), source })
    }
}

/// The options of one column family. The provenance log and its index are most of the
/// database and grow for as long as the node runs: zstd (bottommost level too), 16 KiB blocks,
/// and a dictionary trained per file at the bottommost level, where nearly all of the log
/// ends up. The rest is small and read on hot paths (record queries, nonces): LZ4, which
/// decompresses several times faster, with zstd at the bottommost level only.
fn cf_options(cf: Cf, storage: &StorageConfig, memory: &Memory, index_floor: &Arc<AtomicU64>) -> Options {
    let mut o = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&memory.cache);
    table.set_cache_index_and_filter_blocks(true);
    // Level-0 files are read by every lookup; evicting their index would make each one a disk read.
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    // Each memtable may take a quarter of the budget before it flushes on its own; the write
    // buffer manager bounds them all together.
    o.set_write_buffer_size(usize::try_from(storage.write_buffers.0 / 4).unwrap_or(usize::MAX));
    o.set_max_write_buffer_number(2);
    match cf {
        Cf::Provenance | Cf::ProvenanceIndex => {
            table.set_block_size(LOG_BLOCK_SIZE);
            o.set_compression_type(DBCompressionType::Zstd);
            o.set_compression_options(-14, ZSTD_LEVEL, 0, 0);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
            o.set_bottommost_compression_options(-14, ZSTD_LEVEL, 0, ZSTD_DICT_BYTES, true);
            o.set_bottommost_zstd_max_train_bytes(ZSTD_TRAIN_BYTES, true);
            // A dictionary is trained on the blocks of the whole output file, buffered in memory
            // until it is cut: smaller files bound that buffer.
            o.set_target_file_size_base(LOG_TARGET_FILE_SIZE);
        }
        _ => {
            o.set_compression_type(DBCompressionType::Lz4);
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
        }
    }
    if cf == Cf::ProvenanceIndex {
        let floor = index_floor.clone();
        o.set_compaction_filter("deltafed-archived-index-rows", move |_level: u32, key: &[u8], _value: &[u8]| {
            let below = seq_suffix(key).is_some_and(|seq| seq < floor.load(Ordering::Relaxed));
            if below {
                rocksdb::compaction_filter::Decision::Remove
            } else {
                rocksdb::compaction_filter::Decision::Keep
            }
        });
        // Rows sit in the bottommost level for a long time; make RocksDB revisit (and filter)
        // every file at least this often.
        o.set_periodic_compaction_seconds(7 * 86_400);
    }
    o.set_block_based_table_factory(&table);
    o
}

/// Bytes of the zstd dictionary per file at the bottommost level of the log.
const ZSTD_DICT_BYTES: i32 = 16 * 1024;
/// Sample the dictionary is trained on (zstd suggests about 100 times the dictionary).
const ZSTD_TRAIN_BYTES: i32 = 100 * ZSTD_DICT_BYTES;
/// Target size of the log's SST files (RocksDB's default is 64 MiB).
const LOG_TARGET_FILE_SIZE: u64 = 32 << 20;

/// The big-endian seq every provenance index key ends with.
fn seq_suffix(key: &[u8]) -> Option<u64> {
    let start = key.len().checked_sub(8)?;
    <[u8; 8]>::try_from(&key[start..]).ok().map(u64::from_be_bytes)
}

/// Writes to apply together.
#[derive(Debug, Default)]
pub struct Batch {
    puts: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
    /// Key ranges to delete (`from..to`), applied before the puts and deletes.
    ranges: Vec<(Cf, Vec<u8>, Vec<u8>)>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.puts.push((cf, key.into(), Some(value.into())));
        self
    }

    /// Adds every write of `other`, after this batch's own.
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.ranges.extend(other.ranges);
        self.puts.extend(other.puts);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.ranges.is_empty()
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) -> &mut Self {
        self.puts.push((cf, key.into(), None));
        self
    }

    /// Deletes every key in `from..to` (one range tombstone, whatever the number of rows).
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) -> &mut Self {
        self.ranges.push((cf, from.into(), to.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ByteSize;

    #[test]
    fn survives_reopen_and_scans_by_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("opens");
            let mut b = Batch::default();
            b.put(Cf::Catalog, "zhejiang/a", "1").put(Cf::Catalog, "zhejiang/b", "2").put(Cf::Catalog, "anhui/a", "3");
            s.write(b).expect("writes");
            s.flush().expect("flushes");
        }
        let s = Store::open(dir.path()).expect("reopens");
        let rows = s.scan_prefix(Cf::Catalog, b"zhejiang/").expect("scans");
        assert_eq!(rows.len(), 2);
        assert_eq!(s.get(Cf::Catalog, b"anhui/a").expect("reads"), Some(b"3".to_vec()));
        assert!(Store::open(dir.path()).is_err(), "a second open of the same db is refused by its lock");
    }

    /// What the requester's call targets rely on: every kind of write moves the sequence, and
    /// reads do not.
    #[test]
    fn every_write_moves_the_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let mut last = s.sequence();
        let mut moved = |s: &Store, what: &str| {
            let now = s.sequence();
            assert!(now > last, "{what} did not move the sequence");
            last = now;
        };
        s.put(Cf::Grants, b"g", b"1").expect("put");
        moved(&s, "a put");
        let mut b = Batch::default();
        b.put(Cf::Catalog, "zhejiang/a", "1").delete(Cf::Grants, "g");
        s.write(b).expect("batch");
        moved(&s, "a batch");
        let mut b = Batch::default();
        b.delete_range(Cf::Catalog, "a", "z");
        s.write(b).expect("range delete");
        moved(&s, "a range delete");
        let before = s.sequence();
        let _ = s.get(Cf::Catalog, b"zhejiang/a").expect("get");
        let _ = s.scan_prefix(Cf::Grants, b"").expect("scan");
        assert_eq!(s.sequence(), before, "reads moved the sequence");
    }

    #[test]
    fn memory_is_bounded_by_the_storage_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = StorageConfig { block_cache: ByteSize(8 << 20), write_buffers: ByteSize(8 << 20) };
        let s = Store::open_with(dir.path(), &storage).expect("opens");
        // 64 MiB through 8 MiB of write buffers: flushes keep the memtables under the bound.
        let value = vec![0x5a; 4096];
        for chunk in 0..16u64 {
            let mut b = Batch::default();
            for i in 0..1024u64 {
                b.put(Cf::Provenance, (chunk * 1024 + i).to_be_bytes(), value.clone());
            }
            s.write(b).expect("writes");
            let m = s.memory_usage().expect("a read-write store reports memory");
            assert!(m.write_buffers <= 2 * m.write_buffers_limit, "{m:?}");
        }
        s.visit_range(Cf::Provenance, &[], None, |_, _| true).expect("reads everything back");
        let m = s.memory_usage().expect("reports");
        assert_eq!((m.block_cache_limit, m.write_buffers_limit), (8 << 20, 8 << 20));
        assert!(m.block_cache <= m.block_cache_limit + (1 << 20), "{m:?}");
        assert!(Store::open_read_only(dir.path()).expect("opens").memory_usage().is_none());
    }

    #[test]
    fn a_range_delete_is_part_of_the_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("opens");
        let mut b = Batch::default();
        for i in 0..10u64 {
            b.put(Cf::Provenance, i.to_be_bytes(), "e");
        }
        s.write(b).expect("writes");
        let mut b = Batch::default();
        b.delete_range(Cf::Provenance, 2u64.to_be_bytes(), 7u64.to_be_bytes()).put(Cf::Meta, "m", "1");
        assert!(!b.is_empty());
        s.write(b).expect("writes");
        let left: Vec<u64> =
            s.scan_prefix(Cf::Provenance, &[]).expect("scans").iter().filter_map(|(k, _)| seq_suffix(k)).collect();
        assert_eq!(left, vec![0, 1, 7, 8, 9]);
        assert_eq!(s.get(Cf::Meta, b"m").expect("reads"), Some(b"1".to_vec()));
    }

    /// A measurement, not a check: the provenance log's bytes on disk per entry under each
    /// compression setting, for realistic entries (a signed query request and answer each, as
    /// `query-served` logs them). Run with `cargo test -p deltafed-node --lib --release --
    /// --ignored --nocapture compression_of_the_log`.
    #[test]
    #[ignore = "a measurement: prints sizes"]
    fn compression_of_the_log() {
        use deltafed_protocol::exchange::{QueryAnswer, QueryRequest};
        use deltafed_protocol::{ExchangeId, Hash, Nonce, OBJECT_VERSION, SecretKey, Signed, Timestamp};

        use crate::provenance::{Provenance, Record};

        const N: u64 = 50_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let src = Store::open(&dir.path().join("src")).expect("opens");
        let log = Provenance::open(src.clone(), "zhejiang".parse().expect("id"), Some(SecretKey::from_seed([1; 32])))
            .expect("opens");
        let (requester, provider) = (SecretKey::from_seed([2; 32]), SecretKey::from_seed([1; 32]));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random16 = || {
            let mut b = [0u8; 16];
            for c in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            b
        };
        let t0 = 1_790_000_000_000u64;
        for i in 0..N {
            let req = QueryRequest {
                v: OBJECT_VERSION,
                requester: "shanghai".parse().expect("id"),
                provider: "zhejiang".parse().expect("id"),
                dataset: "business-licences".parse().expect("id"),
                grant: Some(deltafed_protocol::GrantId(random16())),
                key: format!("9133010{:011}", i * 7919 % 100_000_000_000),
                nonce: Nonce(random16()),
                time: Timestamp(t0 + i * 3),
            };
            let req = Signed::sign(req, &requester).expect("signs");
            let mut h = [0u8; 32];
            h[..16].copy_from_slice(&random16());
            h[16..].copy_from_slice(&random16());
            let ans = QueryAnswer {
                v: OBJECT_VERSION,
                exchange: ExchangeId(random16()),
                request: req.hash(),
                provider: "zhejiang".parse().expect("id"),
                requester: "shanghai".parse().expect("id"),
                dataset: "business-licences".parse().expect("id"),
                version: 3,
                fields: Some(vec!["company_id".into(), "status".into()]),
                records: Hash(h),
                count: 1,
                time: Timestamp(t0 + i * 3 + 1),
            };
            let ans = Signed::sign(ans, &provider).expect("signs");
            log.append(Record::query_served(&req, &ans, req.body().grant, "licence verification")).expect("appends");
        }
        let mut rows = Vec::new();
        src.visit_range(Cf::Provenance, &[], None, |k, v| {
            rows.push((k.to_vec(), v.to_vec()));
            true
        })
        .expect("reads");
        let raw: usize = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
        println!("{N} entries, {:.0} bytes each uncompressed", raw as f64 / N as f64);
        type Setting = (&'static str, fn(&mut Options, &mut BlockBasedOptions));
        let settings: [Setting; 5] = [
            ("none (the old setting: no compression on any column family)", |o, _| {
                o.set_compression_type(DBCompressionType::None)
            }),
            ("lz4, 4 KiB blocks", |o, _| o.set_compression_type(DBCompressionType::Lz4)),
            ("zstd 3, 16 KiB blocks", |o, t| {
                o.set_compression_type(DBCompressionType::Zstd);
                o.set_bottommost_compression_type(DBCompressionType::Zstd);
                t.set_block_size(16 * 1024);
            }),
            ("zstd 3, 16 KiB blocks, 16 KiB dictionary (this node)", |o, t| {
                o.set_compression_type(DBCompressionType::Zstd);
                o.set_bottommost_compression_type(DBCompressionType::Zstd);
                o.set_bottommost_compression_options(-14, ZSTD_LEVEL, 0, ZSTD_DICT_BYTES, true);
                o.set_bottommost_zstd_max_train_bytes(ZSTD_TRAIN_BYTES, true);
                t.set_block_size(16 * 1024);
            }),
            ("zstd 3, 64 KiB blocks, 16 KiB dictionary", |o, t| {
                o.set_compression_type(DBCompressionType::Zstd);
                o.set_bottommost_compression_type(DBCompressionType::Zstd);
                o.set_bottommost_compression_options(-14, ZSTD_LEVEL, 0, ZSTD_DICT_BYTES, true);
                o.set_bottommost_zstd_max_train_bytes(ZSTD_TRAIN_BYTES, true);
                t.set_block_size(64 * 1024);
            }),
        ];
        for (i, (name, set)) in settings.iter().enumerate() {
            let path = dir.path().join(format!("v{i}"));
            let mut o = Options::default();
            o.create_if_missing(true);
            let mut t = BlockBasedOptions::default();
            set(&mut o, &mut t);
            o.set_block_based_table_factory(&t);
            let db = Db::open(&o, &path).expect("opens");
            let started = std::time::Instant::now();
            for chunk in rows.chunks(1000) {
                let mut wb = WriteBatch::default();
                for (k, v) in chunk {
                    wb.put(k, v);
                }
                db.write(wb).expect("writes");
            }
            db.flush().expect("flushes");
            // Rewrite into the bottommost level (a lone file would only be moved there,
            // keeping its level-0 compression): where a long-lived log ends up.
            let mut c = rocksdb::CompactOptions::default();
            c.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_opt(None::<&[u8]>, None::<&[u8]>, &c);
            let size = db.property_int_value("rocksdb.total-sst-files-size").expect("property").unwrap_or(0);
            let written = started.elapsed();
            let started = std::time::Instant::now();
            let mut n = 0u64;
            for item in db.iterator(IteratorMode::Start) {
                item.expect("reads");
                n += 1;
            }
            println!(
                "{name}: {size} bytes, {:.0} per entry ({:.1}x); write+compact {written:.2?}, full scan {:.2?} ({n} rows)",
                size as f64 / N as f64,
                raw as f64 / size as f64,
                started.elapsed()
            );
        }
    }
}
