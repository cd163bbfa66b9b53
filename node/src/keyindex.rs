//! The record-query index: finds the records of a published dataset by the value of its key
//! field without reading the dataset.
//!
//! A record query ("the licence record for this company id") has to be answered in a few
//! milliseconds from a dataset of any size, so at publish time [`KeyIndex::build`] streams the blob
//! once and writes down where every record's bytes are. A query is then one RocksDB prefix scan
//! and one positioned read per matching record, parsing only those records. Blobs are immutable and
//! named by content hash, so the index is keyed by that hash and never goes stale; re-publishing
//! the same bytes reuses it.
//!
//! Layout in [`Cf::KeyIndex`]:
//! - `hash (32 bytes) ++ escape(key) ++ 0x00 ++ offset (u64 BE)` → record length (u64 BE), one row
//!   per record. `escape` writes 0x01 as 0x01 0x02 and 0x00 as 0x01 0x01, so the 0x00 after a key
//!   is its first 0x00 and the prefix `hash ++ escape(key) ++ 0x00` matches that key exactly: keys
//!   containing NUL work, and a key never matches a longer key it is a prefix of.
//! - `hash` alone → the marker: record count (u64 BE) ++ `<format> keyed by "<key field>"`.
//!   It is written last, so its presence means the index is complete; a crash mid-build leaves
//!   rows without a marker, which the next build overwrites with the same rows.
//!
//! What a key is: for csv, the field's text after unquoting, compared byte for byte; for jsonl, a
//! string's contents, or a number or boolean exactly as written in the line (`1.50` is found by
//! "1.50", not by "1.5"). A record whose key is empty, missing, null, an array or an object has
//! no key: it is not indexed and not counted.
//!
//! A csv record's span runs from the end of the record before it to the end of its own, so it may
//! start with the line break and blank lines before it (the csv parser skips them at lookup);
//! tracking exact starts would mean re-scanning bytes the csv parser has already consumed.
//!
//! Everything here is blocking I/O; async callers run it under `spawn_blocking`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use deltafed_protocol::Hash;
use deltafed_protocol::manifest::{Field, Format};
use serde_json::Value;

use crate::blobs::{self, Blobs, MAX_RECORD};
use crate::format;
use crate::store::{self, Batch, Cf, Store};

/// Read buffer for streaming a blob at build time.
const CHUNK: usize = 256 * 1024;

/// Index rows per RocksDB write. A row is the key plus ~50 bytes, so a batch stays around a
/// megabyte whatever the dataset size, and a build's memory stays flat.
const BATCH_ROWS: usize = 8192;

/// Blob files kept open for queries. Bounded so that a node serving many datasets does not hold a
/// descriptor for each; a query for an evicted one pays a single `open`.
const MAX_OPEN_FILES: usize = 64;

/// The longest span a row may name. Imported records are capped at [`MAX_RECORD`], and the blank
/// lines a csv span may start with count towards the importer's cap too; anything longer means a
/// damaged row, and must not turn into a huge allocation.
const MAX_SPAN: u64 = 2 * MAX_RECORD;

pub use crate::format::Record;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob {hash} is raw data, which has no fields to index or query by key")]
    Raw { hash: Hash },
    #[error("blob {hash}: key field {field:?} is not in the schema; its fields are: {available}")]
    UnknownKeyField { hash: Hash, field: String, available: String },
    #[error("blob {hash} is already indexed as {indexed}, so it cannot also be indexed as {requested}")]
    IndexedDifferently { hash: Hash, indexed: String, requested: String },
    #[error(
        "blob {hash} has no key index (its dataset was published without --key-field, or the index is not built yet)"
    )]
    NotIndexed { hash: Hash },
    #[error("cannot open blob {hash} for its key index: {source}")]
    Blob { hash: Hash, source: blobs::Error },
    #[error("cannot read blob {hash}: {source}")]
    Read { hash: Hash, source: io::Error },
    #[error("blob {hash}, byte {offset}: {message}")]
    Parse { hash: Hash, offset: u64, message: String },
    #[error("key index of blob {hash}: {source}")]
    Store { hash: Hash, source: store::Error },
    #[error("the key index of blob {hash} is damaged at key {key:?}: {message}")]
    Damaged { hash: Hash, key: String, message: String },
    #[error("blob {hash}: the record for key {key:?} at byte {offset} does not parse: {message}")]
    Record { hash: Hash, key: String, offset: u64, message: String },
    #[error("blob {hash}: unknown field(s) {unknown}; its fields are: {available}")]
    UnknownFields { hash: Hash, unknown: String, available: String },
    #[error("a record query needs at least one field (ask for none to get all fields)")]
    NoFields,
}

/// The record-query index over the node's blobs.
pub struct KeyIndex {
    store: Store,
    blobs: Arc<Blobs>,
    /// Open blob files by hash, only for hashes whose index is complete: a query reads about a
    /// kilobyte, and an `open` per query would cost more than the read. Markers are never removed,
    /// so a cached handle also stands for "this index is built".
    files: Mutex<HashMap<Hash, Arc<File>>>,
}

impl fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIndex")
            .field("store", &self.store)
            .field("blobs", &self.blobs.root())
            .finish_non_exhaustive()
    }
}

impl KeyIndex {
    pub fn new(store: Store, blobs: Arc<Blobs>) -> KeyIndex {
        KeyIndex { store, blobs, files: Mutex::new(HashMap::new()) }
    }

    /// Streams blob `hash` once and records, for every record with a key, its key value and the
    /// byte offset and length of the record in the blob. Returns the number of records indexed.
    ///
    /// Idempotent: an index already complete for `hash` is left alone and its count returned. The
    /// same bytes cannot be indexed by two key fields (the layout has no room for the field); that
    /// is refused with [`Error::IndexedDifferently`].
    pub fn build(&self, hash: &Hash, format: Format, schema: &[Field], key_field: &str) -> Result<u64, Error> {
        if format == Format::Raw {
            return Err(Error::Raw { hash: *hash });
        }
        let Some(column) = schema.iter().position(|f| f.name == key_field) else {
            return Err(Error::UnknownKeyField {
                hash: *hash,
                field: key_field.to_string(),
                available: list(schema.iter().map(|f| f.name.as_str())),
            });
        };
        let requested = describe(format, key_field);
        if let Some((count, indexed)) = self.marker(hash)? {
            if indexed != requested {
                return Err(Error::IndexedDifferently { hash: *hash, indexed, requested });
            }
            return Ok(count);
        }
        let file = self.blobs.open_blob(hash).map_err(|source| Error::Blob { hash: *hash, source })?;
        let mut rows = Rows { store: &self.store, hash, batch: Batch::default(), pending: 0, count: 0 };
        match format {
            Format::Csv => index_csv(hash, file, schema, column, &mut rows)?,
            Format::Jsonl => index_jsonl(hash, file, key_field, &mut rows)?,
            Format::Raw => return Err(Error::Raw { hash: *hash }),
        }
        rows.flush()?;
        let marker = [&rows.count.to_be_bytes()[..], requested.as_bytes()].concat();
        self.store
            .put(Cf::KeyIndex, hash.as_bytes(), &marker)
            .map_err(|source| Error::Store { hash: *hash, source })?;
        Ok(rows.count)
    }

    /// Whether the index of `hash` is complete.
    pub fn is_built(&self, hash: &Hash) -> Result<bool, Error> {
        Ok(self.marker(hash)?.is_some())
    }

    /// The records whose key field equals `key` exactly (see the module docs for what a key is),
    /// at most `limit` of them, in the order they appear in the blob; each holds only `fields`
    /// (all fields when `None`).
    ///
    /// csv values are typed by the schema: integer, number and boolean columns become JSON
    /// integers, numbers and booleans (a value that does not parse as its type stays a string, so
    /// nothing is lost), string columns strings, and an empty value null. jsonl values are passed
    /// through as parsed, and a key a line lacks is left out rather than made null.
    ///
    /// `serde_json::Map` sorts its keys (the workspace builds serde_json without
    /// `preserve_order`), so these maps do not keep the dataset's field order;
    /// [`KeyIndex::lookup_in_order`] does.
    pub fn lookup(
        &self,
        hash: &Hash,
        format: Format,
        schema: &[Field],
        key: &str,
        fields: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<serde_json::Map<String, Value>>, Error> {
        let records = self.lookup_in_order(hash, format, schema, key, fields, limit)?;
        Ok(records.into_iter().map(|record| record.into_iter().collect()).collect())
    }

    /// [`KeyIndex::lookup`], with each record's fields in the dataset's order.
    pub fn lookup_in_order(
        &self,
        hash: &Hash,
        format: Format,
        schema: &[Field],
        key: &str,
        fields: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Record>, Error> {
        if format == Format::Raw {
            return Err(Error::Raw { hash: *hash });
        }
        let keep = projection(hash, schema, fields)?;
        let file = self.indexed_file(hash)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = key_prefix(hash, key.as_bytes());
        let rows = self
            .store
            .scan_prefix_limit(Cf::KeyIndex, &prefix, limit)
            .map_err(|source| Error::Store { hash: *hash, source })?;
        let damaged =
            |message: &str| Error::Damaged { hash: *hash, key: key.to_string(), message: message.to_string() };
        let mut buf = Vec::new();
        let mut records = Vec::with_capacity(rows.len());
        for (row_key, row_value) in rows {
            let offset = row_key
                .get(prefix.len()..)
                .and_then(|tail| <[u8; 8]>::try_from(tail).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| damaged("a row key does not end in an offset"))?;
            let len = <[u8; 8]>::try_from(row_value.as_slice())
                .ok()
                .map(u64::from_be_bytes)
                .filter(|&len| len <= MAX_SPAN)
                .and_then(|len| usize::try_from(len).ok())
                .ok_or_else(|| damaged("a row holds no valid record length"))?;
            buf.resize(len, 0);
            file.read_exact_at(&mut buf, offset).map_err(|source| {
                if source.kind() == io::ErrorKind::UnexpectedEof {
                    damaged("a row points past the end of the blob")
                } else {
                    Error::Read { hash: *hash, source }
                }
            })?;
            let record = match format {
                Format::Csv => format::csv::record(&buf, schema, &keep),
                _ => format::jsonl::record(&buf, schema, fields),
            };
            records.push(record.map_err(|message| Error::Record {
                hash: *hash,
                key: key.to_string(),
                offset,
                message,
            })?);
        }
        Ok(records)
    }

    /// The marker's record count and what the index is of ([`describe`]), once it is complete.
    fn marker(&self, hash: &Hash) -> Result<Option<(u64, String)>, Error> {
        let bytes =
            self.store.get(Cf::KeyIndex, hash.as_bytes()).map_err(|source| Error::Store { hash: *hash, source })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let count = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes);
        let what = bytes.get(8..).map(String::from_utf8_lossy);
        match count.zip(what) {
            Some((count, what)) => Ok(Some((count, what.into_owned()))),
            None => Err(Error::Damaged {
                hash: *hash,
                key: String::new(),
                message: "its completion marker is too short".to_string(),
            }),
        }
    }

    /// The open blob file for `hash`, whose index must be complete.
    fn indexed_file(&self, hash: &Hash) -> Result<Arc<File>, Error> {
        if let Some(file) = self.lock_files().get(hash) {
            return Ok(Arc::clone(file));
        }
        if !self.is_built(hash)? {
            return Err(Error::NotIndexed { hash: *hash });
        }
        // Opened outside the lock so that a slow disk does not stall queries on other blobs.
        let file = self.blobs.open_blob(hash).map_err(|source| Error::Blob { hash: *hash, source })?;
        let mut files = self.lock_files();
        if files.len() >= MAX_OPEN_FILES
            && !files.contains_key(hash)
            && let Some(evict) = files.keys().next().copied()
        {
            // Any entry will do: the cost of a wrong choice is one `open` on its next query.
            files.remove(&evict);
        }
        Ok(Arc::clone(files.entry(*hash).or_insert(Arc::new(file))))
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, HashMap<Hash, Arc<File>>> {
        // The map holds no invariant a panicking holder could break; keep serving.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an index is of, as its marker records it: the same bytes read as another format or by
/// another field would need other rows under the same hash.
fn describe(format: Format, key_field: &str) -> String {
    format!("{format} keyed by {key_field:?}")
}

/// Index rows on their way to the store, written in bounded batches.
struct Rows<'a> {
    store: &'a Store,
    hash: &'a Hash,
    batch: Batch,
    pending: usize,
    count: u64,
}

impl Rows<'_> {
    fn add(&mut self, key: &[u8], offset: u64, len: u64) -> Result<(), Error> {
        if key.is_empty() {
            return Ok(());
        }
        let mut row = key_prefix(self.hash, key);
        row.extend_from_slice(&offset.to_be_bytes());
        self.batch.put(Cf::KeyIndex, row, len.to_be_bytes());
        self.pending += 1;
        self.count += 1;
        if self.pending >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if self.pending == 0 {
            return Ok(());
        }
        self.pending = 0;
        let batch = std::mem::take(&mut self.batch);
        self.store.write(batch).map_err(|source| Error::Store { hash: *self.hash, source })
    }
}

/// `hash ++ escape(key) ++ 0x00`: every row of `key`, and no other key's, starts with it.
fn key_prefix(hash: &Hash, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(Hash::LEN + key.len() + 1 + 8);
    out.extend_from_slice(hash.as_bytes());
    for &b in key {
        match b {
            0x00 => out.extend_from_slice(&[0x01, 0x01]),
            0x01 => out.extend_from_slice(&[0x01, 0x02]),
            _ => out.push(b),
        }
    }
    out.push(0x00);
    out
}

fn index_csv(hash: &Hash, file: File, schema: &[Field], column: usize, rows: &mut Rows<'_>) -> Result<(), Error> {
    let mut reader = format::csv::reader_builder(CHUNK).from_reader(file);
    let mut record = csv::ByteRecord::new();
    let parse = |offset: u64, message: String| Error::Parse { hash: *hash, offset, message };
    let csv_error = |offset: u64, e: csv::Error| {
        let message = e.to_string();
        match e.into_kind() {
            csv::ErrorKind::Io(source) => Error::Read { hash: *hash, source },
            _ => parse(offset, message),
        }
    };
    if !reader.read_byte_record(&mut record).map_err(|e| csv_error(0, e))? {
        return Err(parse(0, "empty: a csv dataset needs a header row".into()));
    }
    // The header row is never a record. It must name the schema's columns, or `column` would
    // pick the wrong field.
    if record.len() != schema.len() || !record.iter().zip(schema).all(|(name, field)| name == field.name.as_bytes()) {
        return Err(parse(
            0,
            format!(
                "the header row ({}) does not match the schema ({})",
                list(record.iter().map(|name| String::from_utf8_lossy(name))),
                list(schema.iter().map(|f| f.name.as_str())),
            ),
        ));
    }
    let mut start = reader.position().byte();
    while reader.read_byte_record(&mut record).map_err(|e| csv_error(start, e))? {
        let end = reader.position().byte();
        if record.len() != schema.len() {
            return Err(parse(
                start,
                format!("a record has {} fields but the header has {}", record.len(), schema.len()),
            ));
        }
        rows.add(record.get(column).unwrap_or_default(), start, end - start)?;
        start = end;
    }
    Ok(())
}

fn index_jsonl(hash: &Hash, file: File, key_field: &str, rows: &mut Rows<'_>) -> Result<(), Error> {
    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_RECORD + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| Error::Read { hash: *hash, source })?;
        if n == 0 {
            return Ok(());
        }
        let start = offset;
        offset += n as u64;
        if n as u64 > MAX_RECORD && line.last() != Some(&b'\n') {
            return Err(Error::Parse {
                hash: *hash,
                offset: start,
                message: format!("a line is longer than {} MiB", MAX_RECORD >> 20),
            });
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let key = format::jsonl::key_text(body, key_field).map_err(|message| Error::Parse {
            hash: *hash,
            offset: start,
            message,
        })?;
        if let Some(key) = key {
            rows.add(key.as_bytes(), start, body.len() as u64)?;
        }
        // A big line's buffer need not live on for the rest of the file.
        if line.capacity() > CHUNK {
            line = Vec::new();
        }
    }
}

/// Which schema columns a query returns, checking that every requested field exists.
fn projection(hash: &Hash, schema: &[Field], fields: Option<&[String]>) -> Result<Vec<bool>, Error> {
    let Some(fields) = fields else {
        return Ok(vec![true; schema.len()]);
    };
    if fields.is_empty() {
        return Err(Error::NoFields);
    }
    let mut unknown: Vec<&str> = Vec::new();
    for field in fields {
        if !schema.iter().any(|f| f.name == *field) && !unknown.contains(&field.as_str()) {
            unknown.push(field);
        }
    }
    if !unknown.is_empty() {
        return Err(Error::UnknownFields {
            hash: *hash,
            unknown: unknown.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", "),
            available: list(schema.iter().map(|f| f.name.as_str())),
        });
    }
    Ok(schema.iter().map(|f| fields.contains(&f.name)).collect())
}

fn list<T: AsRef<str>>(names: impl Iterator<Item = T>) -> String {
    let joined = names.map(|name| name.as_ref().to_string()).collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_string() } else { joined }
}

#[cfg(test)]
mod tests;
