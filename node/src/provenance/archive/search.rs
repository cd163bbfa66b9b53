//! Audit queries over sealed segments: the same filter as the live log's query, newest first,
//! reading only the segments whose time range can hold a match.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::segment::{self, ReadError, Reader};
use crate::provenance::query::{decode_entry, view};
use crate::provenance::{EntryView, Filter};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("cannot list the archive directory {path}: {source}")]
    List { path: PathBuf, source: std::io::Error },
    #[error("segment {path}: {source}")]
    Read { path: PathBuf, source: ReadError },
    #[error("segment {path}: entry {seq} cannot be read ({detail}); run `deltafed provenance verify --archive DIR`")]
    Entry { path: PathBuf, seq: u64, detail: String },
}

/// Entries in the segments of `dir` matching `filter` (its `limit` included), newest first.
/// Memory is bounded by the limit: each segment is read oldest first, keeping its newest
/// matches only.
pub fn search(dir: &Path, filter: &Filter) -> Result<Vec<EntryView>, SearchError> {
    let limit = filter.limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let files = segment::list(dir).map_err(|source| SearchError::List { path: dir.to_path_buf(), source })?;
    let mut buf = Vec::new();
    for path in files.iter().rev() {
        let read = |source| SearchError::Read { path: path.clone(), source };
        let mut r = Reader::open(path).map_err(read)?;
        if filter.since.is_some_and(|since| r.header.max_time < since) {
            continue;
        }
        let room = limit - out.len();
        let mut newest: VecDeque<EntryView> = VecDeque::new();
        let mut seq = r.header.first;
        while r.next_entry(&mut buf).map_err(read)? {
            let e = decode_entry(seq, &buf).map_err(|e| SearchError::Entry {
                path: path.clone(),
                seq,
                detail: e.to_string(),
            })?;
            if filter.matches(&e) {
                if newest.len() == room {
                    newest.pop_front();
                }
                newest.push_back(view(e, &buf));
            }
            seq = seq.saturating_add(1);
        }
        out.extend(newest.into_iter().rev());
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
