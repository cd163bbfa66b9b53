//! The member key file: the 32-byte ed25519 seed as hex, readable by its owner only.
//!
//! The same seed is the node's libp2p identity and its signing key (see [`crate::identity`]).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use deltafed_protocol::SecretKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path} already exists; refusing to overwrite a member key (move it away first if you really mean to replace it)"
    )]
    Exists { path: PathBuf },
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write key file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("key file {path} has unsafe permissions {mode:o} (readable by others); run `chmod 600 {path}`")]
    Unsafe { path: PathBuf, mode: u32 },
    #[error("key file {path} is corrupt: expected 64 hex characters (a 32-byte ed25519 seed)")]
    Corrupt { path: PathBuf },
    #[error("no randomness available to generate a key: {0}")]
    Random(String),
}

/// A fresh random key.
pub fn generate() -> Result<SecretKey, Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    Ok(SecretKey::from_seed(seed))
}

/// Writes `key` to `path` with mode 0600, refusing to replace an existing file.
pub fn write_new(path: &Path, key: &SecretKey) -> Result<(), Error> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists { path: path.to_path_buf() }
        } else {
            Error::Write { path: path.to_path_buf(), source }
        }
    })?;
    let text = format!("{}\n", hex::encode(key.seed()));
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|source| Error::Write { path: path.to_path_buf(), source })
}

/// Reads the key, refusing one that group or others can read.
pub fn read(path: &Path) -> Result<SecretKey, Error> {
    let meta = fs::metadata(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Unsafe { path: path.to_path_buf(), mode });
    }
    parse(path)
}

/// Reads a key to import into a data dir (`deltafed init --key`) from where a secret store
/// mounts it. Such a file may be readable by its group (Kubernetes hands a Secret's files to the
/// pod's fsGroup, mode 0440 whatever `defaultMode` says), never by others; the copy in the data
/// dir is 0600, which [`read`] insists on.
pub fn read_import(path: &Path) -> Result<SecretKey, Error> {
    let meta = fs::metadata(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(Error::Unsafe { path: path.to_path_buf(), mode });
    }
    parse(path)
}

fn parse(path: &Path) -> Result<SecretKey, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
    let bytes = hex::decode(text.trim()).map_err(|_| Error::Corrupt { path: path.to_path_buf() })?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| Error::Corrupt { path: path.to_path_buf() })?;
    Ok(SecretKey::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_with_0600_refuses_overwrite_and_unsafe_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        let key = generate().expect("random");
        write_new(&path, &key).expect("writes");
        assert_eq!(fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&path).expect("reads").public(), key.public());
        assert!(matches!(write_new(&path, &key), Err(Error::Exists { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read(&path).expect_err("unsafe");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).expect("chmod");
        assert!(read(&path).is_err(), "group-readable: refused in a data dir");
        assert_eq!(read_import(&path).expect("importable").public(), key.public());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).expect("chmod");
        assert!(matches!(read_import(&path), Err(Error::Unsafe { .. })), "readable by others: refused everywhere");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(&path, "nonsense").expect("write");
        assert!(matches!(read(&path), Err(Error::Corrupt { .. })));
    }
}
