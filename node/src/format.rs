//! The tabular formats datasets come in, one module each ([`csv`], [`jsonl`]): how a file is
//! checked and its schema inferred at import, how it is projected to the granted fields, and how
//! one record is parsed and typed for a record query. Import, projection and the key index all
//! use these modules, so the dialect and the typing rules exist once.
//!
//! Readers stream through fixed-size buffers and cap a single record at [`MAX_RECORD`], so memory
//! stays flat whatever the dataset size.

pub mod csv;
pub mod jsonl;

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use deltafed_protocol::Hash;

/// I/O buffer size for copying, hashing and parsing.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The largest single CSV record or JSON line accepted (64 MiB). Parsers must hold a whole record
/// in memory, so without a cap one unterminated quote or newline-free file would be read whole.
pub const MAX_RECORD: u64 = 64 * 1024 * 1024;

/// One record as key/value pairs, in the dataset's field order.
pub type Record = Vec<(String, serde_json::Value)>;

/// What can be wrong with a dataset file, or with storing it.

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

/// `items` without repeats, first occurrence kept.
pub(crate) fn dedup<'a>(items: impl Iterator<Item = &'a str>) -> impl Iterator<Item = &'a str> {
    let mut seen = HashSet::new();
    items.filter(move |item| seen.insert(*item))
}

pub(crate) fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let joined = names.collect::<Vec<_>>().join(", ");
    if joined.is_empty() { "(none)".to_string() } else { joined }
}

pub(crate) fn list_quoted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}
