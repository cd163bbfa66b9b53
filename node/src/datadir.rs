//! The layout of a node's data directory.

use std::path::{Path, PathBuf};

/// Paths inside one node's data directory (`--data-dir` / `DELTAFED_DATA_DIR`).
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The member key (32-byte ed25519 seed, hex), mode 0600.
    pub fn key(&self) -> PathBuf {
        self.root.join("node.key")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("deltafed.toml")
    }

    /// The default roster location (the config may name another).
    pub fn roster(&self) -> PathBuf {
        self.root.join("roster.cbor")
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }

    /// The state of unfinished fetches (where each partial download stands).
    pub fn partial(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// Held (flock) by the running node, so two nodes never share a data dir.
    pub fn lock(&self) -> PathBuf {
        self.root.join("node.lock")
    }

    /// Resolves a path from the config relative to the data dir.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.root.join(p) }
    }
}
