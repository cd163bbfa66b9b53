//! Reading, validating and installing roster files.
//!
//! Installing checks the new roster against the one in force (if any): a first roster must meet
//! its own threshold; a later one must also be signed by a threshold of the current members.
//! The file is replaced atomically (write to a temporary file, sync, rename), so a crash never
//! leaves a half-written roster.

use std::io::Write;
use std::path::{Path, PathBuf};

use deltafed_protocol::roster::{Invalid, SignedRoster};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read roster {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a readable roster: {detail}")]
    Decode { path: PathBuf, detail: String },
    #[error("roster {path} is not valid: {reason}")]
    Invalid { path: PathBuf, reason: Invalid },
    #[error("cannot write roster {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn read(path: &Path) -> Result<SignedRoster, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    SignedRoster::decode(&bytes).map_err(|e| Error::Decode { path: path.to_path_buf(), detail: e.to_string() })
}

/// Reads the roster in force and checks that it is (still) valid on its own.
pub fn read_valid(path: &Path) -> Result<SignedRoster, Error> {
    let r = read(path)?;
    r.validate().map_err(|reason| Error::Invalid { path: path.to_path_buf(), reason })?;
    Ok(r)
}

/// Writes `roster` to `path` atomically without validating it (`roster new` / `roster sign`).
pub fn write(path: &Path, roster: &SignedRoster) -> Result<(), Error> {
    let bytes = roster.encode().map_err(|e| Error::Decode { path: path.to_path_buf(), detail: e.to_string() })?;
    write_atomic(path, &bytes).map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Validates `new` against whatever roster is at `dest` and installs it there.
pub fn install(dest: &Path, new: &SignedRoster, source_path: &Path) -> Result<(), Error> {
    let invalid = |reason| Error::Invalid { path: source_path.to_path_buf(), reason };
    match std::fs::metadata(dest) {
        Ok(_) => {
            let current = read_valid(dest)?;
            if current == *new {
                return Ok(());
            }
            new.validate_successor(&current.roster).map_err(invalid)?;
        }
        Err(_) => new.validate().map_err(invalid)?,
    }
    write(dest, new)
}

/// Replaces `path` with `bytes` so readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
