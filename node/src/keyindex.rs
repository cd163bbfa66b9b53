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

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use deltafed_protocol::Hash;
use deltafed_protocol::manifest::{Field, FieldType, Format};
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::blobs::{self, Blobs, MAX_RECORD};
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

/// One record as key/value pairs, in the dataset's field order.
pub type Record = Vec<(String, Value)>;

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
                Format::Csv => csv_record(&buf, schema, &keep),
                _ => jsonl_record(&buf, schema, fields),
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

/// The dialect `blobs::import` checked csv data with: the header read as an ordinary record, and
/// widths checked here rather than by csv, for errors that say what is wrong.
fn csv_reader(capacity: usize) -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder.has_headers(false).flexible(true).buffer_capacity(capacity);
    builder
}

fn index_csv(hash: &Hash, file: File, schema: &[Field], column: usize, rows: &mut Rows<'_>) -> Result<(), Error> {
    let mut reader = csv_reader(CHUNK).from_reader(file);
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
        let key =
            json_key_text(body, key_field).map_err(|message| Error::Parse { hash: *hash, offset: start, message })?;
        if let Some(key) = key {
            rows.add(key.as_bytes(), start, body.len() as u64)?;
        }
        // A big line's buffer need not live on for the rest of the file.
        if line.capacity() > CHUNK {
            line = Vec::new();
        }
    }
}

/// The text of top-level key `key` of the JSON object `line`: a string's contents, or a number or
/// boolean as written. `None` when the key is missing, null, an array or an object.
///
/// serde_json cannot hand back a number's source text (that needs its `raw_value` or
/// `arbitrary_precision` feature, which would change how every crate in the workspace parses), so
/// this walks the object's top level itself and lets serde_json delimit each key and value.
fn json_key_text<'a>(line: &'a [u8], key: &str) -> Result<Option<Cow<'a, str>>, String> {
    let malformed = || "expected a json object".to_string();
    let mut at = after_space(line, 0);
    if line.get(at) != Some(&b'{') {
        return Err(malformed());
    }
    at = after_space(line, at + 1);
    let mut found = None;
    if line.get(at) == Some(&b'}') {
        at += 1;
    } else {
        loop {
            let (name, end) = next_json::<String>(line, at)?;
            at = after_space(line, end);
            if line.get(at) != Some(&b':') {
                return Err(malformed());
            }
            let start = after_space(line, at + 1);
            let (_, end) = next_json::<IgnoredAny>(line, start)?;
            if name == key && found.replace(line.get(start..end).unwrap_or_default()).is_some() {
                return Err(format!("key {key:?} appears more than once in the object"));
            }
            at = after_space(line, end);
            match line.get(at) {
                Some(b',') => at = after_space(line, at + 1),
                Some(b'}') => {
                    at += 1;
                    break;
                }
                _ => return Err(malformed()),
            }
        }
    }
    if after_space(line, at) != line.len() {
        return Err("unexpected characters after the object".to_string());
    }
    Ok(match found.and_then(|raw| raw.first().map(|&b| (b, raw))) {
        Some((b'"', raw)) => Some(Cow::Owned(serde_json::from_slice::<String>(raw).map_err(|e| e.to_string())?)),
        Some((b'n' | b'{' | b'[', _)) | None => None,
        // A number, true or false: ASCII, as written.
        Some((_, raw)) => Some(Cow::Borrowed(std::str::from_utf8(raw).map_err(|e| e.to_string())?)),
    })
}

/// The JSON value (or key) at `at` in `line`, and where it ends.
fn next_json<T: serde::de::DeserializeOwned>(line: &[u8], at: usize) -> Result<(T, usize), String> {
    let mut values = serde_json::Deserializer::from_slice(line.get(at..).unwrap_or_default()).into_iter::<T>();
    match values.next() {
        Some(Ok(value)) => Ok((value, at + values.byte_offset())),
        Some(Err(e)) => Err(format!("not valid json: {e}")),
        None => Err("a json object ends early".to_string()),
    }
}

fn after_space(line: &[u8], mut at: usize) -> usize {
    while line.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
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

thread_local! {
    /// A csv parser per thread: building one builds its DFA, which was a twentieth of a record
    /// query's CPU when done for every record looked up. Same dialect as `csv_reader`.
    static CSV_PARSER: RefCell<csv_core::Reader> = RefCell::new(csv_core::Reader::new());
}

/// Splits one csv record (headerless) into its unquoted bytes and the end of each field, with
/// room for `max_fields` (one more is counted, so a mismatch can say how many there were).
fn split_csv_record(bytes: &[u8], max_fields: usize) -> Result<(Vec<u8>, Vec<usize>), String> {
    CSV_PARSER.with(|parser| {
        let mut parser = parser.borrow_mut();
        parser.reset();
        // Unquoting only shrinks a record, so its own length is room enough.
        let mut out = vec![0u8; bytes.len()];
        let mut ends = vec![0usize; max_fields + 1];
        let (mut input, mut nout, mut nends) = (bytes, 0, 0);
        // Each call consumes input or ends the record (an empty input means the end of data);
        // the bound only guards against a parser that would do neither.
        for _ in 0..bytes.len() + 4 {
            let (res, i, o, e) = parser.read_record(input, &mut out[nout..], &mut ends[nends..]);
            input = &input[i..];
            nout += o;
            nends += e;
            match res {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record => {
                    out.truncate(nout);
                    ends.truncate(nends);
                    return Ok((out, ends));
                }
                csv_core::ReadRecordResult::End => return Err("no record there".to_string()),
                csv_core::ReadRecordResult::OutputFull => return Err("the record does not parse".to_string()),
                csv_core::ReadRecordResult::OutputEndsFull => {
                    return Err(format!("it has more than {} fields, the schema's number", max_fields + 1));
                }
            }
        }
        Err("the record does not parse".to_string())
    })
}

/// Parses one csv record (headerless) and names its kept values by the schema.
fn csv_record(bytes: &[u8], schema: &[Field], keep: &[bool]) -> Result<Record, String> {
    let (data, ends) = split_csv_record(bytes, schema.len())?;
    if ends.len() != schema.len() {
        return Err(format!("it has {} fields but the schema has {}", ends.len(), schema.len()));
    }
    let mut out = Vec::with_capacity(keep.iter().filter(|&&k| k).count());
    let mut start = 0;
    for ((field, &end), &kept) in schema.iter().zip(&ends).zip(keep) {
        let raw = data.get(start..end).ok_or_else(|| "the record does not parse".to_string())?;
        start = end;
        if !kept {
            continue;
        }
        let text = std::str::from_utf8(raw).map_err(|_| format!("field {:?} is not valid utf-8", field.name))?;
        out.push((field.name.clone(), typed(text, field.ty)));
    }
    Ok(out)
}

/// A csv value as JSON, typed by its column.
fn typed(text: &str, ty: FieldType) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    let as_string = || Value::String(text.to_string());
    match ty {
        FieldType::String => as_string(),
        FieldType::Integer => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .unwrap_or_else(|_| as_string()),
        // An integer-looking value stays an integer (`2`, not `2.0`); non-finite values have no
        // JSON number and stay text, as the importer's inference treats them.
        FieldType::Number => match text.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => {
                text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(as_string, Value::Number)
            }
        },
        FieldType::Boolean if text.eq_ignore_ascii_case("true") => Value::Bool(true),
        FieldType::Boolean if text.eq_ignore_ascii_case("false") => Value::Bool(false),
        FieldType::Boolean => as_string(),
    }
}

/// Parses one JSON line, keeping only `fields` (all when `None`), in schema order.
fn jsonl_record(bytes: &[u8], schema: &[Field], fields: Option<&[String]>) -> Result<Record, String> {
    let mut object: serde_json::Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    // Each line has its own key order; answer in the dataset's (first-seen) order, with any key
    // the schema lacks (none, for a schema the importer inferred) after the rest.
    let mut out = Vec::with_capacity(object.len());
    for field in schema {
        if fields.is_none_or(|fields| fields.contains(&field.name))
            && let Some(value) = object.remove(&field.name)
        {
            out.push((field.name.clone(), value));
        }
    }
    if fields.is_none() {
        out.extend(object);
    }
    Ok(out)
}

fn list<T: AsRef<str>>(names: impl Iterator<Item = T>) -> String {
    let joined = names.map(|name| name.as_ref().to_string()).collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_string() } else { joined }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn setup() -> (tempfile::TempDir, KeyIndex) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let blobs = Blobs::open(&dir.path().join("blobs")).expect("blobs");
        (dir, KeyIndex::new(store, Arc::new(blobs)))
    }

    /// Imports `bytes` as a dataset keyed by `key_field` and builds its index.
    fn publish(dir: &Path, index: &KeyIndex, bytes: &[u8], format: Format, key_field: &str) -> (blobs::Imported, u64) {
        let src = dir.join(format!("source.{format}"));
        std::fs::write(&src, bytes).expect("write source");
        let imported = index.blobs.import(&src, format, Some(key_field)).expect("import");
        let count = index.build(&imported.hash, format, &imported.schema, key_field).expect("build");
        (imported, count)
    }

    fn find(index: &KeyIndex, imported: &blobs::Imported, format: Format, key: &str) -> Vec<Value> {
        index
            .lookup(&imported.hash, format, &imported.schema, key, None, 100)
            .expect("lookup")
            .into_iter()
            .map(Value::Object)
            .collect()
    }

    fn names(record: &Record) -> Vec<&str> {
        record.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const TOWNS: &str = concat!(
        "id,name,note,score,active,count\r\n",
        "1,\"Hangzhou, 浙江省\",\"she said \"\"hi\"\"\",1.5,true,3\r\n",
        "\r\n",
        "2,Nanjing,\"two\nlines, and a comma\",2,FALSE,\n",
        "3,,plain,-0.25,,-7\n",
        "\"4\",\"x\"\"y\",,,True,0",
    );

    #[test]
    fn csv_lookup_types_values_and_survives_quoting() {
        let (dir, index) = setup();
        let (towns, count) = publish(dir.path(), &index, TOWNS.as_bytes(), Format::Csv, "id");
        assert_eq!(count, 4);
        assert_eq!(
            find(&index, &towns, Format::Csv, "1"),
            vec![json!({"id": 1, "name": "Hangzhou, 浙江省", "note": "she said \"hi\"",
                        "score": 1.5, "active": true, "count": 3})]
        );
        assert_eq!(
            find(&index, &towns, Format::Csv, "2"),
            vec![json!({"id": 2, "name": "Nanjing", "note": "two\nlines, and a comma",
                        "score": 2, "active": false, "count": null})]
        );
        assert_eq!(
            find(&index, &towns, Format::Csv, "3"),
            vec![json!({"id": 3, "name": null, "note": "plain", "score": -0.25,
                        "active": null, "count": -7})]
        );
        // A quoted key is found by its text; the last record has no line break after it.
        assert_eq!(
            find(&index, &towns, Format::Csv, "4"),
            vec![json!({"id": 4, "name": "x\"y", "note": null, "score": null,
                        "active": true, "count": 0})]
        );

        // Keys with commas, quotes, line breaks and UTF-8, in a dataset keyed by them.
        let data = concat!(
            "name,n\n",
            "\"Hangzhou, 浙江省\",1\n",
            "\"say \"\"hi\"\"\",2\n",
            "\"two\r\nlines\",3\n",
            "浙江省,4\n",
        );
        let (names, count) = publish(dir.path(), &index, data.as_bytes(), Format::Csv, "name");
        assert_eq!(count, 4);
        for (key, n) in [("Hangzhou, 浙江省", 1), ("say \"hi\"", 2), ("two\r\nlines", 3), ("浙江省", 4)] {
            assert_eq!(find(&index, &names, Format::Csv, key), vec![json!({"name": key, "n": n})], "{key}");
        }
        assert!(find(&index, &names, Format::Csv, "\"Hangzhou, 浙江省\"").is_empty());
    }

    #[test]
    fn duplicates_limit_and_missing_keys() {
        let (dir, index) = setup();
        let data = "code,seq\nA,1\nB,2\nA,3\nAB,4\nA,5\n,6\ncode,7\n";
        let (set, count) = publish(dir.path(), &index, data.as_bytes(), Format::Csv, "code");
        assert_eq!(count, 6, "the record with an empty key is not indexed");
        let seqs = |key: &str, limit: usize| -> Vec<Value> {
            index
                .lookup(&set.hash, Format::Csv, &set.schema, key, None, limit)
                .expect("lookup")
                .into_iter()
                .map(|r| r["seq"].clone())
                .collect()
        };
        assert_eq!(seqs("A", 10), vec![json!(1), json!(3), json!(5)]);
        assert_eq!(seqs("A", 2), vec![json!(1), json!(3)]);
        assert!(seqs("A", 0).is_empty());
        // A key that is a prefix of another does not match it.
        assert_eq!(seqs("B", 10), vec![json!(2)]);
        assert_eq!(seqs("AB", 10), vec![json!(4)]);
        assert!(seqs("Z", 10).is_empty());
        assert!(seqs("", 10).is_empty());
        // The header row is not a record; a data row that repeats it is.
        assert_eq!(seqs("code", 10), vec![json!(7)]);
    }

    #[test]
    fn projection_keeps_dataset_order_and_checks_names() {
        let (dir, index) = setup();
        let (towns, _) = publish(dir.path(), &index, TOWNS.as_bytes(), Format::Csv, "id");
        let fields = strings(&["count", "name", "count"]);
        let records =
            index.lookup_in_order(&towns.hash, Format::Csv, &towns.schema, "1", Some(&fields), 10).expect("lookup");
        assert_eq!(records.len(), 1);
        assert_eq!(names(&records[0]), ["name", "count"]);
        let maps = index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&fields), 10).expect("lookup");
        assert_eq!(Value::Object(maps[0].clone()), json!({"name": "Hangzhou, 浙江省", "count": 3}));

        let bad = strings(&["id", "secret", "nope"]);
        let err =
            index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&bad), 10).expect_err("unknown fields");
        let message = err.to_string();
        assert!(matches!(err, Error::UnknownFields { .. }), "{message}");
        assert!(message.contains("\"secret\", \"nope\""), "{message}");
        assert!(message.contains(&towns.hash.to_string()), "{message}");
        assert!(matches!(
            index.lookup(&towns.hash, Format::Csv, &towns.schema, "1", Some(&[]), 10),
            Err(Error::NoFields)
        ));
    }

    #[test]
    fn jsonl_keys_as_written_and_values_as_parsed() {
        let (dir, index) = setup();
        let data = concat!(
            "{\"id\": \"a-1\", \"name\": \"浙江省\", \"n\": 1.50, \"tags\": [1, {\"z\": \"}\"}], \"ok\": true}\n",
            "\n",
            "{\"n\": 1e3, \"id\": 7, \"ok\": false}\r\n",
            "{\"id\": \"a-1\", \"extra\": null}\n",
            "{\"\\u0069d\": \"esc\", \"name\": \"escaped key name\"}\n",
            "{\"id\": null, \"name\": \"null key\"}\n",
            "{\"name\": \"no key\"}\n",
            "{\"id\": {\"k\": \"a-1\"}, \"name\": \"object key\"}\n",
            "{\"id\": \"nul\\u0000x\", \"name\": \"nul\"}\n",
            "{\"id\": \"nul\", \"name\": \"nul prefix\"}\n",
            "{\"id\": true, \"name\": \"bool\"}\n",
            "{\"name\": \"decimal\", \"id\" : 1.50 }",
        );
        let (set, count) = publish(dir.path(), &index, data.as_bytes(), Format::Jsonl, "id");
        assert_eq!(count, 8);
        assert_eq!(
            find(&index, &set, Format::Jsonl, "a-1"),
            vec![
                json!({"id": "a-1", "name": "浙江省", "n": 1.5, "tags": [1, {"z": "}"}], "ok": true}),
                json!({"id": "a-1", "extra": null}),
            ]
        );
        // Answered in the dataset's first-seen key order, not the line's.
        let records = index.lookup_in_order(&set.hash, Format::Jsonl, &set.schema, "7", None, 10).expect("lookup");
        assert_eq!(names(&records[0]), ["id", "n", "ok"]);
        assert_eq!(records[0][1].1, json!(1000.0));
        for (key, name) in [
            ("esc", "escaped key name"),
            ("nul\u{0}x", "nul"),
            ("nul", "nul prefix"),
            ("true", "bool"),
            ("1.50", "decimal"),
        ] {
            let found = find(&index, &set, Format::Jsonl, key);
            assert_eq!(found.len(), 1, "{key:?}");
            assert_eq!(found[0]["name"], json!(name), "{key:?}");
        }
        for key in ["1.5", "null", "{\"k\":\"a-1\"}", "1e3", ""] {
            assert!(find(&index, &set, Format::Jsonl, key).is_empty(), "{key:?}");
        }

        let fields = strings(&["name"]);
        let projected = index.lookup(&set.hash, Format::Jsonl, &set.schema, "a-1", Some(&fields), 10).expect("lookup");
        assert_eq!(
            projected.into_iter().map(Value::Object).collect::<Vec<_>>(),
            vec![json!({"name": "浙江省"}), json!({})]
        );
        let limited = index.lookup(&set.hash, Format::Jsonl, &set.schema, "a-1", None, 1).expect("lookup");
        assert_eq!(limited.len(), 1);
    }

    #[test]
    fn json_key_scanner() {
        let line = br#"{"a": "}\"", "b": [1, "]", {"id": 0}], "c" : {"id": 1}, "id" : -1.5e3 }"#;
        assert_eq!(json_key_text(line, "id").expect("scan").as_deref(), Some("-1.5e3"));
        assert_eq!(json_key_text(line, "a").expect("scan").as_deref(), Some("}\""));
        assert_eq!(json_key_text(line, "b").expect("scan"), None);
        assert_eq!(json_key_text(line, "zz").expect("scan"), None);
        assert_eq!(json_key_text(b"{}", "id").expect("scan"), None);
        assert!(json_key_text(br#"{"id": 1, "id": 2}"#, "id").is_err());
        assert!(json_key_text(b"[1]", "id").is_err());
        assert!(json_key_text(br#"{"id": 1"#, "id").is_err());
    }

    #[test]
    fn build_is_idempotent_and_resumes_after_a_crash() {
        let (dir, index) = setup();
        let data = "id,v\n1,a\n2,b\n1,c\n";
        let src = dir.path().join("d.csv");
        std::fs::write(&src, data).expect("write");
        let set = index.blobs.import(&src, Format::Csv, Some("id")).expect("import");
        let rows = || index.store.scan_prefix(Cf::KeyIndex, set.hash.as_bytes()).expect("scan").len();
        assert!(!index.is_built(&set.hash).expect("is_built"));
        let err = index.lookup(&set.hash, Format::Csv, &set.schema, "1", None, 10).expect_err("not built");
        assert!(matches!(err, Error::NotIndexed { .. }), "{err}");

        assert_eq!(index.build(&set.hash, Format::Csv, &set.schema, "id").expect("build"), 3);
        assert!(index.is_built(&set.hash).expect("is_built"));
        assert_eq!(rows(), 4, "three records and the marker");

        // A build that died before its marker: the next one writes the same rows again.
        let mut batch = Batch::default();
        batch.delete(Cf::KeyIndex, set.hash.as_bytes().to_vec());
        index.store.write(batch).expect("delete marker");
        assert!(!index.is_built(&set.hash).expect("is_built"));
        assert!(matches!(
            index.lookup(&set.hash, Format::Csv, &set.schema, "1", None, 10),
            Err(Error::NotIndexed { .. })
        ));
        for _ in 0..2 {
            assert_eq!(index.build(&set.hash, Format::Csv, &set.schema, "id").expect("build"), 3);
            assert_eq!(rows(), 4);
        }
        assert_eq!(find(&index, &set, Format::Csv, "1").len(), 2);

        let err = index.build(&set.hash, Format::Csv, &set.schema, "v").expect_err("other key field");
        assert!(matches!(err, Error::IndexedDifferently { .. }), "{err}");
        assert!(err.to_string().contains("keyed by \"id\""), "{err}");
        assert!(matches!(index.build(&set.hash, Format::Csv, &set.schema, "nope"), Err(Error::UnknownKeyField { .. })));
        assert!(matches!(index.build(&set.hash, Format::Raw, &set.schema, "id"), Err(Error::Raw { .. })));
        let missing = Hash::of(b"never stored");
        assert!(matches!(index.build(&missing, Format::Csv, &set.schema, "id"), Err(Error::Blob { .. })));
    }

    #[test]
    fn large_datasets_build_in_batches_and_look_up() {
        const RECORDS: u64 = 50_000;
        const KEYS: u64 = 20_000;
        let (dir, index) = setup();
        let mut csv_data = String::from("key,seq,text\n");
        let mut jsonl_data = String::new();
        for i in 0..RECORDS {
            let key = format!("K{}", i % KEYS);
            let text = match i % 3 {
                0 => format!("\"line one, {i}\nline \"\"two\"\"\""),
                1 => format!("plain text {i}"),
                _ => "浙江省".repeat(20),
            };
            csv_data.push_str(&format!("{key},{i},{text}\n"));
            jsonl_data.push_str(&format!(
                "{{\"key\": \"{key}\", \"seq\": {i}, \"pad\": \"{}\"}}\n",
                "x".repeat((i % 200) as usize)
            ));
        }
        for (format, data) in [(Format::Csv, csv_data), (Format::Jsonl, jsonl_data)] {
            let (set, count) = publish(dir.path(), &index, data.as_bytes(), format, "key");
            assert_eq!(count, RECORDS, "{format}");
            assert!(count as usize > 3 * BATCH_ROWS);
            for k in (0..KEYS).step_by(997).chain([KEYS - 1]) {
                let want: Vec<Value> = (k..RECORDS).step_by(KEYS as usize).map(|i| json!(i)).collect();
                let got: Vec<Value> = index
                    .lookup(&set.hash, format, &set.schema, &format!("K{k}"), None, 10)
                    .expect("lookup")
                    .into_iter()
                    .map(|r| r["seq"].clone())
                    .collect();
                assert_eq!(got, want, "{format} K{k}");
            }
            assert!(find(&index, &set, format, &format!("K{KEYS}")).is_empty());
        }
    }
}
