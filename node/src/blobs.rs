//! The node's content-addressed data store: one file per dataset version, named by the BLAKE3
//! hash of its bytes.
//!
//! Naming blobs by hash makes the manifest's `content_hash` the only pointer a node needs: an
//! unprojected fetch serves the file as is, a re-publish of identical bytes costs nothing, and a
//! blob can never be swapped under a signed manifest without the name changing. Import and
//! projection stream through fixed-size buffers (and cap a single record at [`MAX_RECORD`]), so
//! memory stays flat whatever the dataset size. Everything here is blocking I/O; async callers
//! run it under `spawn_blocking`.
//!
//! Layout: `root/<hex hash>` for blobs, `root/tmp/` for imports in progress and projections. A
//! blob only appears under its final name after it has been fully written and fsynced (write to
//! `tmp/`, then rename), so a crash leaves at most stray files in `tmp/`, never a truncated blob.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use deltafed_protocol::Hash;
use deltafed_protocol::manifest::{Field, FieldType, Format};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// I/O buffer size for copying, hashing and parsing.
const CHUNK: usize = 256 * 1024;

/// The largest single CSV record or JSON line accepted (64 MiB). Parsers must hold a whole record
/// in memory, so without a cap one unterminated quote or newline-free file would be read whole.
pub const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// The names used in errors for the input and output of [`project_to`], which have no path.
const STREAM_INPUT: &str = "the input";
const STREAM_OUTPUT: &str = "the output";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot create the blob directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {file}: {source}")]
    Read { file: String, source: io::Error },
    #[error("cannot write {file}: {source}")]
    Write { file: String, source: io::Error },
    #[error("no blob {hash} in {dir}")]
    Missing { hash: Hash, dir: PathBuf },
    #[error("{file} is empty: a csv dataset needs a header row naming its columns")]
    NoHeader { file: String },
    #[error("{file}, line {line}: column {column} of the header row has an empty name")]
    EmptyColumnName { file: String, line: u64, column: usize },
    #[error("{file}, line {line}: column name {name:?} appears more than once in the header row")]
    DuplicateColumn { file: String, line: u64, name: String },
    #[error("{file}, line {line}: record {record} has {got} fields but the header has {expected}")]
    Ragged { file: String, line: u64, record: u64, expected: usize, got: usize },
    #[error("{file}, line {line}: field {field:?} is not valid utf-8")]
    Utf8 { file: String, line: u64, field: String },
    #[error(
        "{file}: the record starting on or after line {line} is longer than {} MiB (an unclosed quote, or not line-based data?)",
        MAX_RECORD / (1024 * 1024)
    )]
    RecordTooLarge { file: String, line: u64 },
    #[error("{file}, line {line}: not valid json: {message} (column {column})")]
    Json { file: String, line: u64, column: usize, message: String },
    #[error("{file}, line {line}: expected a json object, found {found}")]
    NotObject { file: String, line: u64, found: &'static str },
    #[error("{file}, line {line}: key {key:?} appears more than once in the object")]
    DuplicateKey { file: String, line: u64, key: String },
    #[error("{file}: {message}")]
    Csv { file: String, message: String },
    #[error(
        "--key-field {field:?} needs a csv or jsonl dataset (raw data has no fields); drop --key-field or pass --format csv or --format jsonl"
    )]
    KeyFieldOnRaw { field: String },
    #[error("--key-field {field:?} is not a field of {file}; its fields are: {available}")]
    UnknownKeyField { field: String, file: String, available: String },
    #[error("raw data cannot be projected to fields; serve it whole (a grant on it must not name fields)")]
    ProjectRaw,
    #[error("a projection needs at least one field")]
    NoFields,
    #[error("unknown field(s) {unknown} in {file}; its fields are: {available}")]
    UnknownFields { file: String, unknown: String, available: String },
}

/// What an import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub hash: Hash,
    pub size: u64,
    /// Data rows (csv, header excluded) or objects (jsonl); 0 for raw data.
    pub records: u64,
    /// Field names and types in column (csv) or first-seen (jsonl) order; empty for raw data.
    pub schema: Vec<Field>,
}

/// A projection written to `root/tmp`; dropping `file` deletes it.
#[derive(Debug)]
pub struct Projected {
    pub file: tempfile::NamedTempFile,
    pub hash: Hash,
    pub size: u64,
}

/// The blob store under one directory (the data dir's `blobs/`).
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens the store, creating `root` and `root/tmp` if missing.
    ///
    /// Stray files in `tmp/` (from a crash) are left alone: another process on the same data dir
    /// may be mid-import, and they never shadow a blob.
    pub fn open(root: &Path) -> Result<Blobs, Error> {
        let blobs = Blobs { root: root.to_path_buf() };
        let tmp = blobs.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|source| Error::CreateDir { path: tmp, source })?;
        Ok(blobs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Copies `src` into the store, checking that it parses as `format` and inferring its schema
    /// in the same pass, and returns its hash, size, record count and schema.
    ///
    /// Importing bytes that are already stored is a no-op that returns the same result.
    /// `key_field`, if given, must name a field of the inferred schema.
    pub fn import(&self, src: &Path, format: Format, key_field: Option<&str>) -> Result<Imported, Error> {
        // Fail before copying anything when the answer cannot depend on the data.
        if let (Format::Raw, Some(field)) = (format, key_field) {
            return Err(Error::KeyFieldOnRaw { field: field.to_string() });
        }
        let file = src.display().to_string();
        let input = File::open(src).map_err(|source| Error::Read { file: file.clone(), source })?;
        let tmp = self.new_temp("import-")?;
        let tmp_name = tmp.path().display().to_string();

        let mut sink = Sink { hasher: blake3::Hasher::new(), out: tmp.as_file(), size: 0, write_error: None };
        let mut tee = Tee { inner: input, sink: &mut sink };
        // One pass: the parser pulls through the tee, which copies and hashes what it reads; the
        // drain covers whatever the parser left (nothing, for a parser that ran to the end).
        let parsed = infer(format, &mut tee, &file).and_then(|parsed| {
            drain(&mut tee, &file)?;
            Ok(parsed)
        });
        let (records, schema) = match parsed {
            Ok(parsed) => parsed,
            // A failed write to the temp file surfaces in the parser as a read error; report
            // the real cause.
            Err(e) => {
                return Err(match sink.write_error.take() {
                    Some(source) => Error::Write { file: tmp_name, source },
                    None => e,
                });
            }
        };
        if let Some(field) = key_field
            && !schema.iter().any(|f| f.name == field)
        {
            return Err(Error::UnknownKeyField {
                field: field.to_string(),
                file,
                available: list(schema.iter().map(|f| f.name.as_str())),
            });
        }
        let hash = Hash::from(sink.hasher.finalize());
        let size = sink.size;

        let dest = self.path_of(&hash);
        if !dest.exists() {
            tmp.as_file().sync_all().map_err(|source| Error::Write { file: tmp_name.clone(), source })?;
            match tmp.persist_noclobber(&dest) {
                Ok(_) => self.sync_root()?,
                // Another import of the same bytes won the race; its blob is identical.
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Write { file: dest.display().to_string(), source: e.error });
                }
            }
        }
        Ok(Imported { hash, size, records, schema })
    }

    /// `root/<hex hash>`, whether or not it exists.
    pub fn path_of(&self, hash: &Hash) -> PathBuf {
        self.root.join(hash.to_string())
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.path_of(hash).is_file()
    }

    pub fn open_blob(&self, hash: &Hash) -> Result<File, Error> {
        let path = self.path_of(hash);
        File::open(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Error::Missing { hash: *hash, dir: self.root.clone() }
            } else {
                Error::Read { file: path.display().to_string(), source }
            }
        })
    }

    /// Writes the projection of blob `hash` (only `fields`, see [`project_to`]) to a new temp
    /// file in `root/tmp` and returns it with its BLAKE3 hash and size. The caller deletes it
    /// (drop) or persists it.
    pub fn project(&self, hash: &Hash, format: Format, fields: &[String]) -> Result<Projected, Error> {
        check_projectable(format, fields)?;
        let input = self.open_blob(hash)?;
        let file = self.path_of(hash).display().to_string();
        let tmp = self.new_temp("project-")?;
        let tmp_name = tmp.path().display().to_string();
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(CHUNK, tmp.as_file()),
            hasher: blake3::Hasher::new(),
            size: 0,
        };
        project_stream(format, input, fields, &mut out, &file, &tmp_name)?;
        let write_err = |source| Error::Write { file: tmp_name.clone(), source };
        out.inner.flush().map_err(write_err)?;
        let (hash, size) = (Hash::from(out.hasher.finalize()), out.size);
        drop(out);
        // The caller may persist it as a received copy; make it durable like a blob.
        tmp.as_file().sync_all().map_err(write_err)?;
        Ok(Projected { file: tmp, hash, size })
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn new_temp(&self, prefix: &str) -> Result<tempfile::NamedTempFile, Error> {
        let dir = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&dir)
            .map_err(|source| Error::Write { file: dir.display().to_string(), source })
    }

    /// Makes a rename into `root` durable (the new directory entry, not just the file data).
    fn sync_root(&self) -> Result<(), Error> {
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| Error::Write { file: self.root.display().to_string(), source })
    }
}

/// Writes the projection of `input` onto `fields` to `out`.
///
/// - csv: the header row is kept; the requested columns are written in the dataset's column
///   order (not the order of `fields`), quoted as needed.
/// - jsonl: each object keeps only the requested keys, in the order the line has them; an
///   object with none of them becomes `{}` so record counts still match; empty lines are dropped.
///   Lines are re-serialized compactly (`{"a":1}`), so a projection is not a byte slice of the
///   original line.
///
/// Every name in `fields` must be a column (csv) or a key of at least one object (jsonl).
/// Unknown jsonl keys can only be known at the end of the stream, so that error comes after
/// output has been written: stream into a temp file (as [`Blobs::project`] does), or check
/// `fields` against the manifest's schema first. Raw data cannot be projected, and `fields` must
/// not be empty.
pub fn project_to(format: Format, input: impl Read, fields: &[String], out: impl Write) -> Result<(), Error> {
    check_projectable(format, fields)?;
    let mut out = out;
    project_stream(format, input, fields, &mut out, STREAM_INPUT, STREAM_OUTPUT)
}

fn check_projectable(format: Format, fields: &[String]) -> Result<(), Error> {
    if format == Format::Raw {
        return Err(Error::ProjectRaw);
    }
    if fields.is_empty() {
        return Err(Error::NoFields);
    }
    Ok(())
}

fn project_stream(
    format: Format,
    input: impl Read,
    fields: &[String],
    out: &mut impl Write,
    file: &str,
    out_name: &str,
) -> Result<(), Error> {
    let write_err = |source| Error::Write { file: out_name.to_string(), source };
    match format {
        Format::Raw => Err(Error::ProjectRaw),
        Format::Csv => {
            let mut rows = CsvRows::new(input, file)?;
            let wanted: HashSet<&str> = fields.iter().map(String::as_str).collect();
            let unknown: Vec<&str> =
                dedup(fields.iter().map(String::as_str)).filter(|f| !rows.header.iter().any(|h| h == f)).collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownFields {
                    file: file.to_string(),
                    unknown: list_quoted(unknown),
                    available: list(rows.header.iter().map(String::as_str)),
                });
            }
            let keep: Vec<usize> =
                (0..rows.header.len()).filter(|&i| wanted.contains(rows.header[i].as_str())).collect();
            let mut csv_out = csv::WriterBuilder::new().buffer_capacity(CHUNK).from_writer(&mut *out);
            let csv_err = |e: csv::Error| write_err(io::Error::from(e));
            csv_out.write_record(keep.iter().map(|&i| rows.header[i].as_bytes())).map_err(csv_err)?;
            while let Some(record) = rows.next_record()? {
                csv_out.write_record(keep.iter().map(|&i| &record[i])).map_err(csv_err)?;
            }
            csv_out.flush().map_err(write_err)
        }
        Format::Jsonl => {
            let wanted: HashSet<&str> = fields.iter().map(String::as_str).collect();
            let mut seen: HashSet<String> = HashSet::new();
            let mut all_keys: Vec<String> = Vec::new();
            let mut lines = JsonLines::new(input, file);
            while let Some(mut object) = lines.next_object()? {
                for (key, _) in &object {
                    if !seen.contains(key) {
                        seen.insert(key.clone());
                        all_keys.push(key.clone());
                    }
                }
                object.retain(|(key, _)| wanted.contains(key.as_str()));
                serde_json::to_writer(&mut *out, &ObjectRef(&object)).map_err(|e| write_err(io::Error::from(e)))?;
                out.write_all(b"\n").map_err(write_err)?;
            }
            let unknown: Vec<&str> = dedup(fields.iter().map(String::as_str)).filter(|f| !seen.contains(*f)).collect();
            if !unknown.is_empty() {
                return Err(Error::UnknownFields {
                    file: file.to_string(),
                    unknown: list_quoted(unknown),
                    available: list(all_keys.iter().map(String::as_str)),
                });
            }
            out.flush().map_err(write_err)
        }
    }
}

/// Parses `input` as `format` to the end, returning the record count and inferred schema.
fn infer(format: Format, input: impl Read, file: &str) -> Result<(u64, Vec<Field>), Error> {
    match format {
        Format::Raw => {
            drain(input, file)?;
            Ok((0, Vec::new()))
        }
        Format::Csv => {
            let mut rows = CsvRows::new(input, file)?;
            let mut columns = vec![ColumnStats::new(); rows.header.len()];
            let mut records = 0u64;
            while let Some(record) = rows.next_record()? {
                records += 1;
                for (stats, value) in columns.iter_mut().zip(record.iter()) {
                    // CsvRows has checked that every field is utf-8.
                    stats.observe(std::str::from_utf8(value).unwrap_or_default());
                }
            }
            let schema = rows
                .header
                .iter()
                .zip(&columns)
                .map(|(name, stats)| Field { name: name.clone(), ty: stats.ty() })
                .collect();
            Ok((records, schema))
        }
        Format::Jsonl => {
            let mut order: Vec<(String, Option<FieldType>)> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut records = 0u64;
            let mut lines = JsonLines::new(input, file);
            while let Some(object) = lines.next_object()? {
                records += 1;
                for (key, value) in object {
                    let ty = json_type(&value);
                    match index.get(&key) {
                        Some(&i) => {
                            let slot = &mut order[i].1;
                            *slot = merge(*slot, ty);
                        }
                        None => {
                            index.insert(key.clone(), order.len());
                            order.push((key, ty));
                        }
                    }
                }
            }
            let schema = order
                .into_iter()
                .map(|(name, ty)| Field {
                    name,
                    // A key that only ever held null carries no type information.
                    ty: ty.unwrap_or(FieldType::String),
                })
                .collect();
            Ok((records, schema))
        }
    }
}

/// Reads `input` to the end in [`CHUNK`]s, discarding it (the tee behind it keeps the bytes).
fn drain(mut input: impl Read, file: &str) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Read { file: file.to_string(), source });
            }
        }
    }
}

/// Where an import's bytes go as the parser reads them.
struct Sink<'a> {
    hasher: blake3::Hasher,
    out: &'a File,
    size: u64,
    /// The first failed write; reads fail from then on.
    write_error: Option<io::Error>,
}

/// A reader that copies and hashes everything read through it.
struct Tee<'a, 'b, R> {
    inner: R,
    sink: &'a mut Sink<'b>,
}

impl<R: Read> Read for Tee<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sink.write_error.is_some() {
            return Err(io::Error::other("copying into the blob store failed"));
        }
        let n = self.inner.read(buf)?;
        let bytes = &buf[..n];
        if let Err(e) = self.sink.out.write_all(bytes) {
            self.sink.write_error = Some(e);
            return Err(io::Error::other("copying into the blob store failed"));
        }
        self.sink.hasher.update(bytes);
        self.sink.size += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reader under the CSV parser. It fails once the parser has read [`MAX_RECORD`] bytes past
/// the start of the record it is on, so one huge record cannot grow the parser's record buffer
/// without bound; and it keeps the last chunk it read, so [`CsvRows`] can look at the byte that
/// ended a record (see [`CsvRows::read`]).
struct Capped<R> {
    inner: R,
    consumed: u64,
    /// Byte offset where the current record starts (set by [`CsvRows`] after each record).
    record_start: u64,
    tripped: bool,
    /// The bytes of the last non-empty read, which started at offset `last_start`.
    last: Vec<u8>,
    last_start: u64,
    /// The byte just before `last_start`.
    before_last: Option<u8>,
}

impl<R> Capped<R> {
    fn new(inner: R) -> Self {
        Capped {
            inner,
            consumed: 0,
            record_start: 0,
            tripped: false,
            last: Vec::new(),
            last_start: 0,
            before_last: None,
        }
    }

    /// The byte at `offset`, if it is still known. The parser's buffer only refills once it has
    /// consumed everything, so every offset from one before the last read onwards is.
    fn byte_at(&self, offset: u64) -> Option<u8> {
        if offset < self.last_start {
            return (offset + 1 == self.last_start).then_some(self.before_last).flatten();
        }
        let index = usize::try_from(offset - self.last_start).ok()?;
        self.last.get(index).copied()
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The parser buffers up to CHUNK bytes ahead, so allow for that.
        if self.consumed.saturating_sub(self.record_start) > MAX_RECORD + CHUNK as u64 {
            self.tripped = true;
            return Err(io::Error::other("record too large"));
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.before_last = self.last.last().copied().or(self.before_last);
            self.last.clear();
            self.last.extend_from_slice(&buf[..n]);
            self.last_start = self.consumed;
        }
        self.consumed += n as u64;
        Ok(n)
    }
}

/// A CSV stream checked as it is read: a non-empty header of unique, non-empty names, and data
/// records that are utf-8 and as wide as the header.
struct CsvRows<'f, R> {
    reader: csv::Reader<Capped<R>>,
    file: &'f str,
    header: Vec<String>,
    record: csv::ByteRecord,
    /// The line the last record read starts on.
    line: u64,
}

impl<'f, R: Read> CsvRows<'f, R> {
    fn new(input: R, file: &'f str) -> Result<Self, Error> {
        let reader = csv::ReaderBuilder::new()
            // The header is read as an ordinary record so that it gets the same checks.
            .has_headers(false)
            // Width is checked here, for an error that names the file and the header's width.
            .flexible(true)
            .buffer_capacity(CHUNK)
            .from_reader(Capped::new(input));
        let mut rows = CsvRows { reader, file, header: Vec::new(), record: csv::ByteRecord::new(), line: 1 };
        if !rows.read()? {
            return Err(Error::NoHeader { file: file.to_string() });
        }
        let line = rows.line;
        let mut names = Vec::with_capacity(rows.record.len());
        let mut seen = HashSet::new();
        for (column, raw) in rows.record.iter().enumerate() {
            let name = std::str::from_utf8(raw).map_err(|_| Error::Utf8 {
                file: file.to_string(),
                line,
                field: format!("header column {}", column + 1),
            })?;
            if name.is_empty() {
                return Err(Error::EmptyColumnName { file: file.to_string(), line, column: column + 1 });
            }
            if !seen.insert(name) {
                return Err(Error::DuplicateColumn { file: file.to_string(), line, name: name.to_string() });
            }
            names.push(name.to_string());
        }
        rows.header = names;
        Ok(rows)
    }

    /// The next data record, checked; `None` at the end.
    fn next_record(&mut self) -> Result<Option<&csv::ByteRecord>, Error> {
        if !self.read()? {
            return Ok(None);
        }
        let line = self.line;
        if self.record.len() != self.header.len() {
            return Err(Error::Ragged {
                file: self.file.to_string(),
                line,
                record: self.record.position().map_or(0, |p| p.record()),
                expected: self.header.len(),
                got: self.record.len(),
            });
        }
        for (name, value) in self.header.iter().zip(self.record.iter()) {
            if std::str::from_utf8(value).is_err() {
                return Err(Error::Utf8 { file: self.file.to_string(), line, field: name.clone() });
            }
        }
        Ok(Some(&self.record))
    }

    fn read(&mut self) -> Result<bool, Error> {
        // Where the parser stood before this record: its line is a lower bound for the record's.
        let before = self.reader.position().line();
        match self.reader.read_byte_record(&mut self.record) {
            Ok(more) => {
                let end = self.reader.position();
                let (end_byte, end_line) = (end.byte(), end.line());
                let capped = self.reader.get_mut();
                capped.record_start = end_byte;
                // csv counts every '\n' it has consumed, but stamps a record with its position
                // *before* skipping blank lines and the '\n' of a previous CRLF, so its start
                // lines drift. Work back from the end instead: the record's last line is the
                // count at its end, less its own terminator if that was a '\n' (a CRLF record
                // ends at the '\r'); its first line is that less the newlines inside its fields,
                // which quoted fields keep verbatim.
                let terminator = end_byte.checked_sub(1).and_then(|offset| capped.byte_at(offset));
                let last_line = end_line - u64::from(terminator == Some(b'\n'));
                let inside = self.record.as_slice().iter().filter(|&&b| b == b'\n').count();
                self.line = last_line.saturating_sub(inside as u64).max(before);
                Ok(more)
            }
            Err(e) if self.reader.get_ref().tripped => {
                drop(e);
                Err(Error::RecordTooLarge { file: self.file.to_string(), line: before })
            }
            Err(e) => {
                // Reading bytes without width checks, io is the only failure csv reports; keep
                // its own words for anything else.
                let message = e.to_string();
                Err(match e.into_kind() {
                    csv::ErrorKind::Io(source) => Error::Read { file: self.file.to_string(), source },
                    _ => Error::Csv { file: self.file.to_string(), message },
                })
            }
        }
    }
}

/// A JSON Lines stream: each non-empty line one JSON object, returned with its keys in order.
struct JsonLines<'f, R> {
    reader: BufReader<R>,
    file: &'f str,
    line: u64,
    buf: Vec<u8>,
}

impl<'f, R: Read> JsonLines<'f, R> {
    fn new(input: R, file: &'f str) -> Self {
        JsonLines { reader: BufReader::with_capacity(CHUNK, input), file, line: 0, buf: Vec::new() }
    }

    fn next_object(&mut self) -> Result<Option<Vec<(String, Value)>>, Error> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_RECORD + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| Error::Read { file: self.file.to_string(), source })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if n as u64 > MAX_RECORD && self.buf.last() != Some(&b'\n') {
                return Err(Error::RecordTooLarge { file: self.file.to_string(), line: self.line });
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let value: Value = serde_json::from_slice(&self.buf).map_err(|e| Error::Json {
                file: self.file.to_string(),
                line: self.line,
                column: e.column(),
                message: json_message(&e),
            })?;
            let Value::Object(object) = value else {
                return Err(Error::NotObject { file: self.file.to_string(), line: self.line, found: value.kind() });
            };
            // serde_json would keep the last of two equal keys; a projection or a key lookup
            // must not depend on which one a reader happens to pick.
            let mut keys = HashSet::with_capacity(object.len());
            for (key, _) in &object {
                if !keys.insert(key.as_str()) {
                    return Err(Error::DuplicateKey { file: self.file.to_string(), line: self.line, key: key.clone() });
                }
            }
            // A big line's buffer need not live on for the rest of the file.
            if self.buf.capacity() > CHUNK {
                self.buf = Vec::new();
            }
            return Ok(Some(object));
        }
    }
}

/// serde_json's message without its " at line 1 column N" suffix (we parse one line at a time,
/// so its line is always 1; the column is reported separately).
fn json_message(e: &serde_json::Error) -> String {
    let mut message = e.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    message
}

/// A JSON value that keeps object keys in document order (serde_json's own `Value` sorts them
/// unless its `preserve_order` feature is on, and turning that on would change every JSON
/// document the workspace prints).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a json value")
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                Ok(Value::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                Ok(Value::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
                serde_json::Number::from_f64(n).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                Ok(Value::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<Value, E> {
                Ok(Value::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Value::Object(entries))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(entries) => ObjectRef(entries).serialize(s),
        }
    }
}

/// Serializes key/value pairs as a JSON object, in the order given.
struct ObjectRef<'a>(&'a [(String, Value)]);

impl Serialize for ObjectRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The type one JSON value suggests for its key; `None` for null, which suggests nothing.
fn json_type(value: &Value) -> Option<FieldType> {
    match value {
        Value::Null => None,
        Value::Bool(_) => Some(FieldType::Boolean),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(FieldType::Integer),
        Value::Number(_) => Some(FieldType::Number),
        Value::String(_) | Value::Array(_) | Value::Object(_) => Some(FieldType::String),
    }
}

/// The narrowest type covering both: integers widen to numbers, any other mix is a string.
fn merge(a: Option<FieldType>, b: Option<FieldType>) -> Option<FieldType> {
    use FieldType::{Integer, Number, String};
    match (a, b) {
        (None, t) | (t, None) => t,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(Integer), Some(Number)) | (Some(Number), Some(Integer)) => Some(Number),
        _ => Some(String),
    }
}

/// What the values of one CSV column have been consistent with so far.
#[derive(Debug, Clone)]
struct ColumnStats {
    any: bool,
    integer: bool,
    number: bool,
    boolean: bool,
}

impl ColumnStats {
    fn new() -> Self {
        ColumnStats { any: false, integer: true, number: true, boolean: true }
    }

    /// Empty values say nothing about the type (they are missing values).
    fn observe(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        self.any = true;
        if self.integer && value.parse::<i64>().is_err() {
            self.integer = false;
        }
        // Rust also parses "NaN" and "inf", which in a data column are words, not numbers.
        if self.number && !value.parse::<f64>().is_ok_and(f64::is_finite) {
            self.number = false;
        }
        if self.boolean && !(value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")) {
            self.boolean = false;
        }
    }

    fn ty(&self) -> FieldType {
        if !self.any {
            FieldType::String
        } else if self.integer {
            FieldType::Integer
        } else if self.number {
            FieldType::Number
        } else if self.boolean {
            FieldType::Boolean
        } else {
            FieldType::String
        }
    }
}

/// `items` without repeats, first occurrence kept.
fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    let mut seen = HashSet::new();
    items.filter(move |item| seen.insert(*item))
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let joined = names.collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_string() } else { joined }
}

fn list_quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file name, its bytes, and a check of the error importing it must give.
    type Case = (&'static str, &'static [u8], fn(&Error) -> bool);

    fn store() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(&dir.path().join("blobs")).expect("open");
        (dir, blobs)
    }

    /// Writes `bytes` to a file named `name` next to the store.
    fn source(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, bytes).expect("write source");
        path
    }

    fn field(name: &str, ty: FieldType) -> Field {
        Field { name: name.to_string(), ty }
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn project_bytes(format: Format, input: &[u8], fields: &[&str]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        project_to(format, input, &strings(fields), &mut out)?;
        Ok(out)
    }

    fn parse_csv(bytes: &[u8]) -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes)
            .records()
            .map(|r| r.expect("record").iter().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn open_creates_root_and_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("a/b/blobs");
        let blobs = Blobs::open(&root).expect("open");
        assert!(root.join("tmp").is_dir());
        assert_eq!(blobs.root(), root);
        Blobs::open(&root).expect("reopen");
    }

    #[test]
    fn csv_rfc4180_edge_cases() {
        let (dir, blobs) = store();
        let data = "id,name,note\r\n\
                    1,\"Hangzhou, 浙江省\",\"she said \"\"hi\"\"\"\r\n\
                    2,Nanjing,\"two\nlines\"\r\n\
                    3,,plain\r\n";
        let src = source(&dir, "towns.csv", data.as_bytes());
        let imported = blobs.import(&src, Format::Csv, Some("id")).expect("import");
        assert_eq!(imported.records, 3);
        assert_eq!(
            imported.schema,
            vec![field("id", FieldType::Integer), field("name", FieldType::String), field("note", FieldType::String),]
        );
        assert_eq!(imported.size, data.len() as u64);
        // The stored blob is the published bytes, exactly.
        assert_eq!(fs::read(blobs.path_of(&imported.hash)).expect("read blob"), data.as_bytes());
    }

    #[test]
    fn csv_type_inference_per_column() {
        let (dir, blobs) = store();
        let data = "int,num,mixed_num,bool,text,empty,int_gaps,nan\n\
                    1,1.5,1,true,a,,7,NaN\n\
                    -2,2,2.5,FALSE,b,,,inf\n\
                    30,3e2,3,True,1,,9,NaN\n";
        let src = source(&dir, "types.csv", data.as_bytes());
        let imported = blobs.import(&src, Format::Csv, None).expect("import");
        assert_eq!(
            imported.schema,
            vec![
                field("int", FieldType::Integer),
                field("num", FieldType::Number),
                field("mixed_num", FieldType::Number),
                field("bool", FieldType::Boolean),
                field("text", FieldType::String),
                field("empty", FieldType::String),
                field("int_gaps", FieldType::Integer),
                field("nan", FieldType::String),
            ]
        );
        assert_eq!(imported.records, 3);
    }

    #[test]
    fn csv_header_only_has_zero_records() {
        let (dir, blobs) = store();
        let src = source(&dir, "h.csv", b"a,b\n");
        let imported = blobs.import(&src, Format::Csv, None).expect("import");
        assert_eq!(imported.records, 0);
        assert_eq!(imported.schema, vec![field("a", FieldType::String), field("b", FieldType::String)]);
    }

    #[test]
    fn csv_ragged_row_names_the_line() {
        let (dir, blobs) = store();
        // The quoted newline makes the bad record start on line 4, not record 3's line.
        let src = source(&dir, "ragged.csv", b"a,b\n1,\"x\ny\"\n2,3,4\n");
        let err = blobs.import(&src, Format::Csv, None).expect_err("ragged");
        match &err {
            Error::Ragged { line, record, expected, got, .. } => {
                assert_eq!((*line, *record, *expected, *got), (4, 2, 2, 3))
            }
            other => panic!("wrong error: {other}"),
        }
        let message = err.to_string();
        assert!(message.contains("ragged.csv, line 4"), "{message}");
        // Nothing was stored.
        assert_eq!(fs::read_dir(blobs.tmp_dir()).expect("tmp").count(), 0);
        assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 1);
    }

    #[test]
    fn csv_line_numbers_survive_crlf_blank_lines_and_quoted_newlines() {
        // Each input's last record is ragged; the error must name the line it starts on.
        let cases: [(&[u8], u64); 6] = [
            (b"a,b\n1,2\n3\n", 3),
            (b"a,b\r\n1,2\r\n3\r\n", 3),
            (b"a,b\r\n1,2\r\n\r\n\r\n3", 5),
            (b"a,b\n\n\n1,2\n\n3,4,5\n", 6),
            (b"a,b\n1,\"x\r\ny\"\r\n\"p\nq\",2,3\n", 4),
            ("\u{feff}a,b\n1,\"浙江\n省\"\n\n2\r\n".as_bytes(), 5),
        ];
        for (input, want) in cases {
            match project_bytes(Format::Csv, input, &["a"]) {
                Err(Error::Ragged { line, .. }) => {
                    assert_eq!(line, want, "{:?}", String::from_utf8_lossy(input))
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[test]
    fn csv_line_numbers_hold_across_buffer_refills() {
        // Enough mixed line endings, blank lines and multi-line fields that record ends fall on
        // and around every kind of chunk boundary.
        let mut data = b"id,text\n".to_vec();
        let mut line = 2u64;
        let mut starts = Vec::new();
        let mut aligned = 0;
        for i in 0..60_000u64 {
            if i % 11 == 0 {
                data.extend_from_slice(b"\r\n");
                line += 1;
            }
            starts.push(line);
            // Near a chunk boundary, pad a row so that it ends exactly on it: with '\n', with
            // "\r\n", or with the '\r' just before it and the '\n' just after.
            let room = CHUNK - data.len() % CHUNK;
            let row = if (8..48).contains(&room) {
                let (terminator, overhang) = match (data.len() / CHUNK) % 3 {
                    0 => ("\n", 0),
                    1 => ("\r\n", 1),
                    _ => ("\r\n", 0),
                };
                let prefix = format!("{i},");
                let pad = room + overhang - prefix.len() - terminator.len();
                aligned += 1;
                format!("{prefix}{}{terminator}", "p".repeat(pad))
            } else {
                match i % 4 {
                    0 => format!("{i},plain\n"),
                    1 => format!("{i},crlf\r\n"),
                    2 => format!("{i},\"two\nlines\"\n"),
                    _ => format!("{i},\"three\r\nline\nfield\"\r\n"),
                }
            };
            line += row.bytes().filter(|&b| b == b'\n').count() as u64;
            data.extend_from_slice(row.as_bytes());
        }
        assert!(aligned >= 3, "{aligned} rows end on a chunk boundary");
        let mut rows = CsvRows::new(&data[..], "t").expect("header");
        let mut seen = 0;
        while rows.next_record().expect("record").is_some() {
            assert_eq!(rows.line, starts[seen], "record {seen}");
            seen += 1;
        }
        assert_eq!(seen, starts.len());
    }

    #[test]
    fn csv_bad_headers_and_encoding() {
        let (dir, blobs) = store();
        let cases: [Case; 4] = [
            ("empty.csv", b"", |e| matches!(e, Error::NoHeader { .. })),
            ("dup.csv", b"a,b,a\n1,2,3\n", |e| matches!(e, Error::DuplicateColumn { name, .. } if name == "a")),
            ("blank.csv", b"a,,c\n1,2,3\n", |e| matches!(e, Error::EmptyColumnName { column: 2, .. })),
            ("latin1.csv", b"a,b\n1,caf\xe9\n", |e| matches!(e, Error::Utf8 { line: 2, field, .. } if field == "b")),
        ];
        for (name, bytes, check) in cases {
            let src = source(&dir, name, bytes);
            let err = blobs.import(&src, Format::Csv, None).expect_err(name);
            assert!(check(&err), "{name}: {err}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn jsonl_inference() {
        let (dir, blobs) = store();
        let data = concat!(
            "{\"id\": 1, \"name\": \"浙江省\", \"score\": 1, \"ok\": true, \"tags\": [1]}\n",
            "\n",
            "{\"id\": 18446744073709551615, \"score\": 2.5, \"ok\": null, \"extra\": null}\r\n",
            "   \n",
            "{\"name\": 5, \"id\": -3, \"ok\": false, \"nested\": {\"z\": 1, \"a\": 2}}\n",
        );
        let src = source(&dir, "rows.jsonl", data.as_bytes());
        let imported = blobs.import(&src, Format::Jsonl, Some("id")).expect("import");
        assert_eq!(imported.records, 3);
        assert_eq!(
            imported.schema,
            vec![
                field("id", FieldType::Integer),
                field("name", FieldType::String),
                field("score", FieldType::Number),
                field("ok", FieldType::Boolean),
                field("tags", FieldType::String),
                field("extra", FieldType::String),
                field("nested", FieldType::String),
            ]
        );
    }

    #[test]
    fn jsonl_empty_file_is_zero_records() {
        let (dir, blobs) = store();
        let src = source(&dir, "empty.jsonl", b"");
        let imported = blobs.import(&src, Format::Jsonl, None).expect("import");
        assert_eq!((imported.records, imported.size), (0, 0));
        assert!(imported.schema.is_empty());
        assert!(blobs.contains(&imported.hash));
    }

    #[test]
    fn jsonl_bad_lines_name_the_line() {
        let (dir, blobs) = store();
        let cases: [Case; 4] = [
            ("syntax.jsonl", b"{\"a\":1}\n\n{\"a\":\n", |e| matches!(e, Error::Json { line: 3, .. })),
            ("array.jsonl", b"{\"a\":1}\n[1,2]\n", |e| {
                matches!(e, Error::NotObject { line: 2, found: "an array", .. })
            }),
            (
                "dup.jsonl",
                b"{\"a\":1,\"a\":2}\n",
                |e| matches!(e, Error::DuplicateKey { line: 1, key, .. } if key == "a"),
            ),
            ("bytes.jsonl", b"{\"a\":\"\xff\"}\n", |e| matches!(e, Error::Json { line: 1, .. })),
        ];
        for (name, bytes, check) in cases {
            let src = source(&dir, name, bytes);
            let err = blobs.import(&src, Format::Jsonl, None).expect_err(name);
            assert!(check(&err), "{name}: {err}");
            let message = err.to_string();
            assert!(message.contains(name), "{message}");
            assert!(!message.contains("at line 1"), "{message}");
        }
    }

    #[test]
    fn key_field_must_be_a_field() {
        let (dir, blobs) = store();
        let src = source(&dir, "k.csv", b"code,name\n1,a\n");
        let err = blobs.import(&src, Format::Csv, Some("nope")).expect_err("unknown key");
        let message = err.to_string();
        assert!(matches!(err, Error::UnknownKeyField { .. }), "{message}");
        assert!(message.contains("--key-field"), "{message}");
        assert!(message.contains("\"nope\""), "{message}");
        assert!(message.contains("code, name"), "{message}");
        // Nothing stored under the hash.
        assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 1);

        let err = blobs.import(&src, Format::Raw, Some("code")).expect_err("raw key");
        let message = err.to_string();
        assert!(matches!(err, Error::KeyFieldOnRaw { .. }), "{message}");
        assert!(message.contains("--key-field") && message.contains("csv or jsonl"), "{message}");

        let jsonl = source(&dir, "k.jsonl", b"{\"x\":1}\n");
        let err = blobs.import(&jsonl, Format::Jsonl, Some("y")).expect_err("jsonl key");
        assert!(err.to_string().contains("its fields are: x"), "{err}");
    }

    #[test]
    fn raw_import_and_idempotence() {
        let (dir, blobs) = store();
        // Bigger than one chunk, and not valid utf-8 or csv: raw data is taken as is.
        let bytes: Vec<u8> = (0..(CHUNK * 2 + 123)).map(|i| (i % 251) as u8).collect();
        let src = source(&dir, "blob.bin", &bytes);
        let first = blobs.import(&src, Format::Raw, None).expect("import");
        assert_eq!(first.hash, Hash::of(&bytes));
        assert_eq!(first.hash.to_string(), blake3::hash(&bytes).to_hex().as_str());
        assert_eq!(first.size, bytes.len() as u64);
        assert_eq!((first.records, first.schema.len()), (0, 0));
        assert_eq!(blobs.path_of(&first.hash), blobs.root().join(first.hash.to_string()));
        let mut stored = Vec::new();
        blobs.open_blob(&first.hash).expect("open blob").read_to_end(&mut stored).expect("read");
        assert_eq!(stored, bytes);

        let copy = source(&dir, "copy.bin", &bytes);
        let second = blobs.import(&copy, Format::Raw, None).expect("again");
        assert_eq!(first, second);
        // One blob, and no temp files left behind.
        assert_eq!(fs::read_dir(blobs.root()).expect("root").count(), 2);
        assert_eq!(fs::read_dir(blobs.tmp_dir()).expect("tmp").count(), 0);

        let empty = source(&dir, "empty.bin", b"");
        let imported = blobs.import(&empty, Format::Raw, None).expect("empty");
        assert_eq!(imported.hash, Hash::of(b""));
    }

    #[test]
    fn hash_is_blake3_of_the_file_for_every_format() {
        let (dir, blobs) = store();
        let cases: [(Format, &[u8]); 3] = [
            (Format::Csv, "a,b\n\"x,y\",浙江省\n".as_bytes()),
            (Format::Jsonl, b"{\"a\":1}\n{\"b\":2}"),
            (Format::Raw, b"\x00\x01\x02"),
        ];
        for (format, bytes) in cases {
            let src = source(&dir, "data", bytes);
            let imported = blobs.import(&src, format, None).expect("import");
            assert_eq!(imported.hash, Hash::from(blake3::hash(bytes)), "{format}");
            assert!(blobs.contains(&imported.hash));
        }
    }

    #[test]
    fn missing_blob() {
        let (_dir, blobs) = store();
        let hash = Hash::of(b"never stored");
        assert!(!blobs.contains(&hash));
        assert!(matches!(blobs.open_blob(&hash), Err(Error::Missing { .. })));
        assert!(matches!(blobs.project(&hash, Format::Csv, &strings(&["a"])), Err(Error::Missing { .. })));
    }

    #[test]
    fn import_reports_unreadable_source() {
        let (dir, blobs) = store();
        let err = blobs.import(&dir.path().join("absent.csv"), Format::Csv, None).expect_err("missing");
        assert!(matches!(err, Error::Read { .. }), "{err}");
        assert!(err.to_string().contains("absent.csv"), "{err}");
    }

    #[test]
    fn csv_projection_keeps_header_order_and_quoting() {
        let data = "id,name,note,score\n\
                    1,\"Hangzhou, 浙江省\",\"say \"\"hi\"\"\",1.5\n\
                    2,\"multi\nline\",x,2\n";
        // Asked out of order, with a repeat: the dataset's order wins.
        let out = project_bytes(Format::Csv, data.as_bytes(), &["score", "name", "score"]).expect("project");
        assert_eq!(
            parse_csv(&out),
            vec![strings(&["name", "score"]), strings(&["Hangzhou, 浙江省", "1.5"]), strings(&["multi\nline", "2"]),]
        );
        assert_eq!(String::from_utf8(out).expect("utf-8"), "name,score\n\"Hangzhou, 浙江省\",1.5\n\"multi\nline\",2\n");
        let out = project_bytes(Format::Csv, data.as_bytes(), &["note"]).expect("project");
        assert_eq!(parse_csv(&out), vec![strings(&["note"]), strings(&["say \"hi\""]), strings(&["x"])]);
    }

    #[test]
    fn jsonl_projection_keeps_only_the_keys_in_line_order() {
        let data = concat!(
            "{\"z\": 1, \"a\": \"浙江省\", \"m\": {\"y\": 1, \"b\": [true, null]}}\n",
            "\n",
            "{\"m\": 2.5, \"z\": null, \"q\": 0}\n",
            "{\"q\": 1}\n",
        );
        let out = project_bytes(Format::Jsonl, data.as_bytes(), &["m", "z"]).expect("project");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            concat!("{\"z\":1,\"m\":{\"y\":1,\"b\":[true,null]}}\n", "{\"m\":2.5,\"z\":null}\n", "{}\n",)
        );
    }

    #[test]
    fn projection_errors() {
        let csv_data = b"a,b\n1,2\n";
        let err = project_bytes(Format::Csv, csv_data, &["a", "x", "y"]).expect_err("unknown");
        let message = err.to_string();
        assert!(matches!(err, Error::UnknownFields { .. }), "{message}");
        assert!(message.contains("\"x\", \"y\"") && message.contains("a, b"), "{message}");
        let err = project_bytes(Format::Jsonl, b"{\"a\":1}\n", &["b"]).expect_err("unknown");
        assert!(matches!(&err, Error::UnknownFields { unknown, .. } if unknown == "\"b\""), "{err}");
        assert!(matches!(project_bytes(Format::Raw, b"x", &["a"]), Err(Error::ProjectRaw)));
        assert!(matches!(project_bytes(Format::Csv, csv_data, &[]), Err(Error::NoFields)));
        assert!(matches!(project_bytes(Format::Csv, b"a,b\n1\n", &["a"]), Err(Error::Ragged { line: 2, .. })));
        assert!(matches!(
            project_bytes(Format::Jsonl, b"{\"a\":1}\n7\n", &["a"]),
            Err(Error::NotObject { line: 2, .. })
        ));
    }

    #[test]
    fn project_stored_blob_to_temp_file() {
        let (dir, blobs) = store();
        let data = "id,secret,name\n1,s1,\"a, b\"\n2,s2,浙江省\n";
        let src = source(&dir, "p.csv", data.as_bytes());
        let imported = blobs.import(&src, Format::Csv, Some("id")).expect("import");
        let projected = blobs.project(&imported.hash, Format::Csv, &strings(&["name", "id"])).expect("project");
        let bytes = fs::read(projected.file.path()).expect("read projection");
        assert_eq!(bytes, "id,name\n1,\"a, b\"\n2,浙江省\n".as_bytes());
        assert_eq!(projected.hash, Hash::of(&bytes));
        assert_eq!(projected.size, bytes.len() as u64);
        assert!(projected.file.path().starts_with(blobs.tmp_dir()));
        let path = projected.file.path().to_path_buf();
        drop(projected);
        assert!(!path.exists());

        assert!(matches!(blobs.project(&imported.hash, Format::Raw, &strings(&["id"])), Err(Error::ProjectRaw)));
        let err = blobs.project(&imported.hash, Format::Csv, &strings(&["nope"])).expect_err("unknown");
        assert!(err.to_string().contains(&imported.hash.to_string()), "{err}");
    }

    #[test]
    fn oversized_records_are_refused() {
        // An unterminated quote would otherwise make the whole rest of the file one record.
        let mut csv_data = b"a\n\"".to_vec();
        csv_data.resize(MAX_RECORD as usize + 2 * CHUNK + 10, b'x');
        let err = project_bytes(Format::Csv, &csv_data, &["a"]).expect_err("too large");
        assert!(matches!(err, Error::RecordTooLarge { line: 2, .. }), "{err}");

        let mut jsonl = b"{}\n".to_vec();
        jsonl.resize(MAX_RECORD as usize + 10, b' ');
        let err = project_bytes(Format::Jsonl, &jsonl, &["a"]).expect_err("too large");
        assert!(matches!(err, Error::RecordTooLarge { line: 2, .. }), "{err}");
    }
}
