//! The sealed segment file: the format docs/audit.md documents, written atomically and read
//! back one record at a time.
//!
//! ```text
//! file    = MAGIC record(header) record(checkpoint) record(entry)*
//! record  = length (u32, big-endian) || bytes
//! ```
//!
//! The header is a canonical CBOR map ([`Header`]); the checkpoint is the member's signed
//! checkpoint at the segment's last seq, exactly as signed; each entry is its canonical bytes,
//! as the log stored it, in seq order. Segments chain by file: `previous` in a header is the
//! BLAKE3 of the whole previous segment file (what `b3sum` prints), all zeros in the first.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use deltafed_protocol::provenance::{Checkpoint, Entry};
use deltafed_protocol::{Hash, MemberId, Object, Timestamp, cbor};
use serde::{Deserialize, Serialize};

/// First bytes of every segment file.
pub const MAGIC: &[u8] = b"deltafed/v1/provenance-segment\n";
/// File name extension of segments; other files in an archive directory are ignored.
pub const EXTENSION: &str = "dfseg";
/// The header format version this node writes and reads.
pub const VERSION: u32 = 1;
/// Largest header accepted (a member id and a few numbers and hashes).
const HEADER_MAX: usize = 1024;
/// The kind named in CBOR errors about a header.
const HEADER_KIND: &str = "segment header";

/// What a segment holds, in its first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub v: u32,
    /// Whose log.
    pub member: MemberId,
    /// Seq of the first and of the last entry; the segment holds every seq in between.
    pub first: u64,
    pub last: u64,
    /// `prev` of the first entry: the hash of the entry before it (zeros when `first` is 0).
    pub prev: Hash,
    /// Hash of the last entry (the checkpoint's `head`).
    pub head: Hash,
    /// BLAKE3 of the previous segment file, zeros for the first segment of a log.
    pub previous: Hash,
    /// The earliest and latest `time` among the entries (times are the callers' clocks and need
    /// not grow with seq), so a search by time can skip a segment without reading it.
    pub min_time: Timestamp,
    pub max_time: Timestamp,
}

impl Header {
    /// The file name of the segment with this header: member, first and last seq (20 digits, so
    /// names sort in log order).
    pub fn file_name(&self) -> String {
        file_name(&self.member, self.first, self.last)
    }
}

pub fn file_name(member: &MemberId, first: u64, last: u64) -> String {
    format!("{member}-{first:020}-{last:020}.{EXTENSION}")
}

/// The (first, last) seqs a segment's file name states, if it is one.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(&format!(".{EXTENSION}"))?;
    let (rest, last) = stem.rsplit_once('-')?;
    let (_member, first) = rest.rsplit_once('-')?;
    if first.len() != 20 || last.len() != 20 {
        return None;
    }
    Some((first.parse().ok()?, last.parse().ok()?))
}

/// Segment files in `dir`, in name (= log) order. A missing directory has none.
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(&format!(".{EXTENSION}")) && !n.starts_with('.')) {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Writes one segment into a temporary file beside its final name, hashing as it goes;
/// [`Writer::finish`] syncs it, renames it into place and syncs the directory.
pub struct Writer {
    out: BufWriter<tempfile::NamedTempFile>,
    hasher: blake3::Hasher,
    dir: PathBuf,
}

impl Writer {
    pub fn create(dir: &Path, header: &Header, checkpoint: &[u8]) -> std::io::Result<Writer> {
        // tempfile creates the file with mode 0600: a segment is as private as the database.
        let tmp = tempfile::Builder::new().prefix(".segment-").suffix(".tmp").tempfile_in(dir)?;
        let mut w =
            Writer { out: BufWriter::with_capacity(1 << 20, tmp), hasher: blake3::Hasher::new(), dir: dir.into() };
        w.raw(MAGIC)?;
        let bytes = cbor::encode(HEADER_KIND, header).map_err(std::io::Error::other)?;
        w.record(&bytes)?;
        w.record(checkpoint)?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    pub fn record(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        self.raw(&len.to_be_bytes())?;
        self.raw(bytes)
    }

    /// Makes the file durable under `name`; returns its hash and size. Never replaces an
    /// existing file: a name already taken is an error.
    pub fn finish(self, name: &str) -> std::io::Result<(Hash, u64)> {
        let tmp = self.out.into_inner().map_err(|e| e.into_error())?;
        tmp.as_file().sync_all()?;
        let size = tmp.as_file().metadata()?.len();
        let path = self.dir.join(name);
        tmp.persist_noclobber(&path).map_err(|e| e.error)?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)?.sync_all()?;
        Ok((Hash(*self.hasher.finalize().as_bytes()), size))
    }
}

/// Why a segment file cannot be read (each says where it went wrong).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it does not start with the segment magic (not a deltafed segment file)")]
    Magic,
    #[error("it ends in the middle of record {index} (truncated?)")]
    Truncated { index: u64 },
    #[error("record {index} is {len} bytes, over the limit of {max}")]
    Oversized { index: u64, len: u64, max: usize },
    #[error("its header is not valid: {0}")]
    Header(cbor::Error),
    #[error("its header has version {0}, this node reads version {VERSION}")]
    Version(u32),
}

/// Reads a segment file record by record, hashing every byte, with bounded memory.
pub struct Reader {
    input: BufReader<File>,
    hasher: blake3::Hasher,
    /// Records read so far (header = 0, checkpoint = 1, entries from 2).
    index: u64,
    pub header: Header,
    /// The checkpoint's bytes, as stored.
    pub checkpoint: Vec<u8>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, ReadError> {
        let file = File::open(path)?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = vec![0; MAGIC.len()];
        if read_full(&mut input, &mut magic)? < MAGIC.len() || magic != MAGIC {
            return Err(ReadError::Magic);
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&magic);
        let mut buf = Vec::new();
        if !record(&mut input, &mut hasher, 0, &mut buf, HEADER_MAX)? {
            return Err(ReadError::Truncated { index: 0 });
        }
        let header: Header = cbor::decode(HEADER_KIND, HEADER_MAX, &buf).map_err(ReadError::Header)?;
        if header.v != VERSION {
            return Err(ReadError::Version(header.v));
        }
        let mut checkpoint = Vec::new();
        if !record(&mut input, &mut hasher, 1, &mut checkpoint, Checkpoint::MAX_SIZE)? {
            return Err(ReadError::Truncated { index: 1 });
        }
        Ok(Reader { input, hasher, index: 2, header, checkpoint })
    }

    /// The next entry's bytes into `buf`; `false` at the end of the file.
    pub fn next_entry(&mut self, buf: &mut Vec<u8>) -> Result<bool, ReadError> {
        let more = record(&mut self.input, &mut self.hasher, self.index, buf, Entry::MAX_SIZE)?;
        if more {
            self.index += 1;
        }
        Ok(more)
    }

    /// The hash of everything read so far: the whole file once `next_entry` returned `false`.
    pub fn file_hash(&self) -> Hash {
        Hash(*self.hasher.finalize().as_bytes())
    }
}

/// One length-prefixed record into `buf`; `false` at a clean end of the input.
fn record(
    input: &mut impl Read,
    hasher: &mut blake3::Hasher,
    index: u64,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<bool, ReadError> {
    let mut len = [0u8; 4];
    match read_full(input, &mut len)? {
        0 => return Ok(false),
        4 => {}
        _ => return Err(ReadError::Truncated { index }),
    }
    let n = u32::from_be_bytes(len);
    if n as usize > max {
        return Err(ReadError::Oversized { index, len: u64::from(n), max });
    }
    buf.clear();
    buf.resize(n as usize, 0);
    if read_full(input, buf)? < buf.len() {
        return Err(ReadError::Truncated { index });
    }
    hasher.update(&len);
    hasher.update(buf);
    Ok(true)
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
