//! The node's database: one RocksDB with a column family per kind of record.
//!
//! Modules own their key layouts (`catalog`, later grants, provenance...); this module opens the
//! database, names the column families and turns RocksDB errors into errors that say what failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, IteratorMode, MultiThreaded, Options, WriteBatch,
};

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
}

impl Cf {
    pub const ALL: [Cf; 14] = [
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.db.path()).finish()
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // A small node should stay small: cap background threads and the write buffer.
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = Cf::ALL.iter().map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = Db::open_cf_descriptors(&opts, path, cfs)
            .map_err(|source| Error::Open { path: path.to_path_buf(), source })?;
        Ok(Store { db: Arc::new(db) })
    }

    fn cf(&self, cf: Cf) -> Result<Arc<BoundColumnFamily<'_>>, Error> {
        self.db.cf_handle(cf.name()).ok_or(Error::MissingCf(cf.name()))
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
        Ok(Store { db: Arc::new(db) })
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

/// Writes to apply together.
#[derive(Debug, Default)]
pub struct Batch {
    puts: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.puts.push((cf, key.into(), Some(value.into())));
        self
    }

    /// Adds every write of `other`, after this batch's own.
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.puts.extend(other.puts);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.puts.is_empty()
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) -> &mut Self {
        self.puts.push((cf, key.into(), None));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
