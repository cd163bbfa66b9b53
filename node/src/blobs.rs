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

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use deltafed_protocol::Hash;
use deltafed_protocol::manifest::{Field, Format};

use crate::format::{self, CHUNK, list};
pub use crate::format::{Error, MAX_RECORD};

/// The names used in errors for the input and output of [`project_to`], which have no path.
const STREAM_INPUT: &str = "the input";
const STREAM_OUTPUT: &str = "the output";

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
///   Keys are written compactly (`{"a":…}`) and each kept value is copied exactly as the line
///   has it (numbers keep their digits).
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
    match format {
        Format::Raw => Err(Error::ProjectRaw),
        Format::Csv => format::csv::project(input, fields, out, file, out_name),
        Format::Jsonl => format::jsonl::project(input, fields, out, file, out_name),
    }
}

/// Parses `input` as `format` to the end, returning the record count and inferred schema.
fn infer(format: Format, input: impl Read, file: &str) -> Result<(u64, Vec<Field>), Error> {
    match format {
        Format::Raw => {
            drain(input, file)?;
            Ok((0, Vec::new()))
        }
        Format::Csv => format::csv::infer(input, file),
        Format::Jsonl => format::jsonl::infer(input, file),
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

#[cfg(test)]
mod tests;
