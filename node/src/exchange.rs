//! The data path of an exchange: chunk tables, chunk reads, the provider's table of exchanges in
//! progress, and the requester's resumable partial files.
//!
//! A delivery is cut into fixed-size chunks. Each chunk is a subtree of the BLAKE3 tree of the
//! whole delivery, and the chunk table holds their chaining values, which combine into the
//! delivery's BLAKE3 hash (the manifest's signed `content_hash`, or a projection's under the
//! ticket). So the requester checks the table against the signed hash once, then each chunk
//! against its entry as it arrives, and never hashes the whole file again, not even on a resume.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltafed_protocol::exchange::{chunk_entry, table_root};
use deltafed_protocol::{DatasetRef, ExchangeId, GrantId, Hash, MemberId};
use serde::{Deserialize, Serialize};

mod writer;
pub use writer::{ChunkBuf, DIRECT_ALIGN, Writer, Written, chunk_buf};

/// Chunk size of deliveries: large enough that per-chunk overhead (a request, a hash lookup) is
/// small against the copy, small enough to keep memory per exchange low and resume cheap.
pub const CHUNK_SIZE: u32 = 1 << 20;
/// Exchanges idle longer than this are forgotten by the provider (a resume then starts a new
/// exchange, which is cheap).
const IDLE: Duration = Duration::from_secs(15 * 60);
/// Most exchanges one provider keeps open at once.
const MAX_SERVING: usize = 512;

/// The chunk table of the first `size` bytes of `file` in `chunk`-sized chunks
/// ([`deltafed_protocol::exchange::chunk_entry`]), and the BLAKE3 of the whole, merged from it.
pub fn chunk_table(file: &File, size: u64, chunk: u32) -> std::io::Result<(Vec<Hash>, Hash)> {
    let count = size.div_ceil(u64::from(chunk.max(1)));
    let mut table = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut buf = vec![0u8; chunk as usize];
    let mut off = 0u64;
    while off < size {
        let n = usize::try_from((size - off).min(u64::from(chunk))).unwrap_or(0);
        file.read_exact_at(&mut buf[..n], off)?;
        let entry = chunk_entry(&buf[..n], table.len() as u64, count, chunk).ok_or_else(|| {
            std::io::Error::other(format!("{chunk} is not a chunk size (a power of two of 1 KiB or more)"))
        })?;
        table.push(entry);
        off += n as u64;
    }
    let whole = table_root(&table);
    Ok((table, whole))
}

pub fn table_bytes(table: &[Hash]) -> Vec<u8> {
    table.iter().flat_map(|h| h.0).collect()
}

pub fn parse_table(bytes: &[u8]) -> Option<Vec<Hash>> {
    if !bytes.len().is_multiple_of(32) {
        return None;
    }
    Some(bytes.chunks_exact(32).map(|c| Hash(c.try_into().unwrap_or([0; 32]))).collect())
}

/// Reads chunk `index` of a delivery of `size` bytes.
pub fn read_chunk(file: &File, index: u64, chunk: u32, size: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    read_chunk_into(file, index, chunk, size, &mut buf)?;
    Ok(buf)
}

/// Reads chunk `index` into `buf` (resized to the chunk; its allocation is reused).
pub fn read_chunk_into(file: &File, index: u64, chunk: u32, size: u64, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let off = index.saturating_mul(u64::from(chunk));
    if off >= size {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("chunk {index} is past the end")));
    }
    let n = usize::try_from((size - off).min(u64::from(chunk))).unwrap_or(0);
    buf.resize(n, 0);
    file.read_exact_at(buf, off)
}

/// One exchange a provider is serving.
pub struct Serving {
    pub requester: MemberId,
    /// The hash of the signed fetch request the ticket answered: what binds a data-path
    /// connection to this exchange.
    pub request: Hash,
    /// A data-path connection has taken this exchange: one stream per request, so a
    /// requester cannot have the same ticket's data pushed twice at once.
    streamed: bool,
    pub grant: Option<GrantId>,
    pub dataset: DatasetRef,
    pub file: Arc<File>,
    pub size: u64,
    pub chunk_size: u32,
    /// The first chunk the ticket covers (its resume offset, in chunks).
    pub first_chunk: u64,
    /// Keeps a projected delivery's temporary file alive while it is served.
    pub _projection: Option<Arc<tempfile::NamedTempFile>>,
    last_used: Instant,
    /// When the next chunk may go out, for a rate-limited exchange.
    next_slot: Instant,
    /// Bytes sent so far (chunks answered), for the dashboard's progress.
    sent: u64,
    started: Instant,
}

/// An exchange being served, as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct ServingView {
    pub id: ExchangeId,
    pub requester: MemberId,
    pub dataset: DatasetRef,
    pub size: u64,
    pub sent: u64,
    pub running_for: Duration,
}

impl Serving {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        requester: MemberId,
        request: Hash,
        grant: Option<GrantId>,
        dataset: DatasetRef,
        file: Arc<File>,
        size: u64,
        offset: u64,
        projection: Option<Arc<tempfile::NamedTempFile>>,
    ) -> Serving {
        Serving {
            requester,
            request,
            streamed: false,
            grant,
            dataset,
            file,
            size,
            chunk_size: CHUNK_SIZE,
            first_chunk: offset / u64::from(CHUNK_SIZE),
            _projection: projection,
            last_used: Instant::now(),
            next_slot: Instant::now(),
            sent: offset,
            started: Instant::now(),
        }
    }

    /// What serving a chunk of it needs.
    fn source(&self) -> ChunkSource {
        ChunkSource {
            requester: self.requester.clone(),
            grant: self.grant,
            file: self.file.clone(),
            size: self.size,
            chunk_size: self.chunk_size,
            first_chunk: self.first_chunk,
        }
    }
}

/// The provider's exchanges in progress, and this node's own fetches being received.
#[derive(Default)]
pub struct Exchanges {
    serving: Mutex<HashMap<ExchangeId, Serving>>,
    receiving: Mutex<HashMap<ExchangeId, Receiving>>,
}

/// A fetch this node is receiving, as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct Receiving {
    pub provider: MemberId,
    pub dataset: DatasetRef,
    pub size: u64,
    /// Bytes verified so far.
    pub done: u64,
    pub started: Instant,
}

/// Removes a fetch from the receiving table when it ends, however it ends.
pub struct ReceivingGuard<'a> {
    table: &'a Exchanges,
    id: ExchangeId,
}

impl Drop for ReceivingGuard<'_> {
    fn drop(&mut self) {
        self.table.receiving.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

/// What a chunk request needs, copied out of the table so no lock is held during I/O.
pub struct ChunkSource {
    pub requester: MemberId,
    pub grant: Option<GrantId>,
    pub file: Arc<File>,
    pub size: u64,
    pub chunk_size: u32,
    pub first_chunk: u64,
}

impl Exchanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ExchangeId, Serving>> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps an exchange being served. A requester with `per_requester` open already loses its
    /// own least recently used one; when the table is full, the least recently used exchange of
    /// the requester with the most goes, so no member can push out another's transfers.
    pub fn insert(&self, id: ExchangeId, s: Serving, per_requester: usize) {
        let mut map = self.lock();
        map.retain(|_, s| s.last_used.elapsed() < IDLE);
        let oldest_of = |map: &HashMap<ExchangeId, Serving>, who: &MemberId| {
            map.iter().filter(|(_, x)| &x.requester == who).min_by_key(|(_, x)| x.last_used).map(|(k, _)| *k)
        };
        if map.values().filter(|x| x.requester == s.requester).count() >= per_requester.max(1)
            && let Some(k) = oldest_of(&map, &s.requester)
        {
            map.remove(&k);
        }
        if map.len() >= MAX_SERVING {
            let mut counts: HashMap<&MemberId, usize> = HashMap::new();
            for x in map.values() {
                *counts.entry(&x.requester).or_default() += 1;
            }
            let busiest = counts.into_iter().max_by_key(|(_, n)| *n).map(|(m, _)| m.clone());
            if let Some(k) = busiest.and_then(|m| oldest_of(&map, &m)) {
                map.remove(&k);
            }
        }
        map.insert(id, s);
    }

    pub fn source(&self, id: &ExchangeId) -> Option<ChunkSource> {
        let mut map = self.lock();
        let s = map.get_mut(id)?;
        s.last_used = Instant::now();
        Some(s.source())
    }

    /// Takes, for one data-path stream, the exchange `requester` opened with the request of
    /// hash `request`. `Ok(None)`: no such exchange is listed; `Err`: a stream has it already.
    pub fn stream_by_request(
        &self,
        request: &Hash,
        requester: &MemberId,
    ) -> Result<Option<(ExchangeId, ChunkSource)>, ExchangeId> {
        let mut map = self.lock();
        let Some((id, s)) = map.iter_mut().find(|(_, s)| &s.request == request && &s.requester == requester) else {
            return Ok(None);
        };
        if s.streamed {
            return Err(*id);
        }
        s.streamed = true;
        s.last_used = Instant::now();
        Ok(Some((*id, s.source())))
    }

    /// Reserves the time at which `bytes` more may be sent on an exchange limited to `rate`
    /// bytes per second: chunks requested in parallel queue up behind each other, so the whole
    /// exchange (not each chunk) keeps to the rate.
    pub fn pace(&self, id: &ExchangeId, bytes: u64, rate: u64) -> Option<Instant> {
        let mut map = self.lock();
        let s = map.get_mut(id)?;
        let slot = s.next_slot.max(Instant::now());
        s.next_slot = slot + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        Some(slot)
    }

    /// The dataset (without version) an exchange in progress serves.
    pub fn dataset_of(&self, id: &ExchangeId) -> Option<DatasetRef> {
        self.lock().get(id).map(|s| s.dataset.unversioned())
    }

    /// The grant an exchange in progress runs under.
    pub fn grant_of(&self, id: &ExchangeId) -> Option<GrantId> {
        self.lock().get(id).and_then(|s| s.grant)
    }

    /// A fetch of ours starts receiving; it is listed until the guard is dropped.
    pub fn receiving(&self, id: ExchangeId, r: Receiving) -> ReceivingGuard<'_> {
        self.receiving.lock().unwrap_or_else(|p| p.into_inner()).insert(id, r);
        ReceivingGuard { table: self, id }
    }

    /// Bytes verified so far of a fetch of ours.
    pub fn received(&self, id: &ExchangeId, done: u64) {
        if let Some(r) = self.receiving.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            r.done = done;
        }
    }

    /// This node's fetches being received now.
    pub fn receiving_list(&self) -> Vec<(ExchangeId, Receiving)> {
        self.receiving.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// A chunk of `bytes` went out. `false`: the exchange is no longer listed (closed for a
    /// newer one, or by its receipt).
    pub fn sent(&self, id: &ExchangeId, bytes: u64) -> bool {
        match self.lock().get_mut(id) {
            Some(s) => {
                s.sent = s.sent.saturating_add(bytes).min(s.size);
                s.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// The exchanges being served, for the dashboard.
    pub fn list(&self) -> Vec<ServingView> {
        self.lock()
            .iter()
            .map(|(id, s)| ServingView {
                id: *id,
                requester: s.requester.clone(),
                dataset: s.dataset.clone(),
                size: s.size,
                sent: s.sent,
                running_for: s.started.elapsed(),
            })
            .collect()
    }

    pub fn remove(&self, id: &ExchangeId) {
        self.lock().remove(id);
    }

    /// Exchanges open now (the idle ones the next insert drops are not counted).
    pub fn open(&self) -> usize {
        self.lock().values().filter(|s| s.last_used.elapsed() < IDLE).count()
    }
}

/// What a requester knows about an unfinished fetch, kept in the node's data dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialState {
    pub provider: String,
    pub dataset: String,
    pub version: u64,
    pub fields: Option<Vec<String>>,
    pub content_hash: String,
    pub chunk_size: u32,
    pub chunks: String,
    /// Bytes at the start of the partial file that were verified chunk by chunk.
    pub verified: u64,
}

/// The requester's partial download of `out`. The data, `.NAME.deltafed-partial`, sits in the
/// same directory as `out` so the final rename is atomic; the state that vouches for it lives in
/// the data dir (`partial/`), where only the node writes, so nothing planted beside `out` can
/// tell a resume what it has. The data file is opened without following symlinks and must be a
/// plain file of the node's own user with one link; anything else there is never written to.
pub struct Partial {
    pub data: PathBuf,
    pub state: PathBuf,
    /// The uid that owns the node's data dir (and so every file the node writes).
    owner: u32,
}

impl Partial {
    /// `state_dir` is the data dir's `partial/` directory; `owner` the data dir's owner.
    pub fn for_output(out: &Path, state_dir: &Path, owner: u32) -> Partial {
        let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "fetch".into());
        let absolute = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
        let id = Hash::of(absolute.as_os_str().as_encoded_bytes());
        Partial {
            data: dir.join(format!(".{name}.deltafed-partial")),
            state: state_dir.join(format!("{id}.json")),
            owner,
        }
    }

    /// Whether the data file is one this node may have written: a regular file (not a symlink)
    /// of the node's user with a single link. `Ok(false)`: absent.
    fn data_is_ours(&self) -> std::io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::symlink_metadata(&self.data) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_file() || meta.nlink() != 1 || meta.uid() != self.owner {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a file this node wrote (a symlink, a hard link or another user's file); remove it or choose another --out",
                    self.data.display()
                ),
            ));
        }
        Ok(true)
    }

    /// The saved state, if any and readable, with the partial data truncated to what it vouches for.
    pub fn load(&self) -> Option<PartialState> {
        let text = std::fs::read_to_string(&self.state).ok()?;
        let st: PartialState = serde_json::from_str(&text).ok()?;
        if !self.data_is_ours().ok()? {
            return None;
        }
        let len = std::fs::symlink_metadata(&self.data).ok()?.len();
        if len < st.verified {
            return None;
        }
        Some(st)
    }

    pub fn save(&self, st: &PartialState) -> std::io::Result<()> {
        if let Some(dir) = self.state.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec(st).map_err(std::io::Error::other)?;
        crate::rosterfile::write_atomic(&self.state, &text)
    }

    /// Forgets the partial download. Removing a planted symlink removes the link, not its target.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.state);
    }

    /// Opens the partial data for appending after `verified` bytes (anything past it is dropped).
    pub fn open_at(&self, verified: u64) -> std::io::Result<File> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let existed = self.data_is_ours()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).read(true).truncate(false).custom_flags(libc::O_NOFOLLOW).mode(0o600);
        // A fresh download creates its file, and refuses one that appeared meanwhile.
        if existed {
            opts.create(false)
        } else {
            opts.create_new(true)
        };
        let f = opts.open(&self.data)?;
        let meta = f.metadata()?;
        if !meta.file_type().is_file() || meta.nlink() != 1 || meta.uid() != self.owner {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} changed while it was opened; remove it and fetch again", self.data.display()),
            ));
        }
        f.set_len(verified)?;
        Ok(f)
    }

    /// Moves the verified data to `out` (atomic within the directory) and forgets the state.
    /// The rename replaces whatever name `out` was (a symlink there is replaced, not followed).
    pub fn finish(&self, out: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&self.data)?.sync_all()?;
        std::fs::rename(&self.data, out)?;
        if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        let _ = std::fs::remove_file(&self.state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(dir: &tempfile::TempDir) -> u32 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.path()).expect("meta").uid()
    }

    fn for_test(dir: &tempfile::TempDir) -> Partial {
        Partial::for_output(&dir.path().join("out.bin"), &dir.path().join("state"), owner(dir))
    }

    /// One requester flooding the table loses its own oldest exchanges, never another's.
    #[test]
    fn a_requester_cannot_evict_another_members_exchanges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Arc::new(File::create(dir.path().join("blob")).expect("file"));
        let m = |s: &str| s.parse::<MemberId>().expect("member");
        let d: DatasetRef = "zhejiang/d".parse().expect("dataset");
        let serving = |who: &str| Serving::new(m(who), Hash([0; 32]), None, d.clone(), file.clone(), 1, 0, None);
        let table = Exchanges::default();
        let theirs = ExchangeId([0xbb; 16]);
        table.insert(theirs, serving("anhui"), 16);
        for i in 0..(MAX_SERVING as u32 + 50) {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            table.insert(ExchangeId(id), serving("rogue"), 16);
        }
        assert!(table.source(&theirs).is_some(), "anhui's exchange survives rogue's flood");
        let rogue = table.lock().values().filter(|s| s.requester == m("rogue")).count();
        assert_eq!(rogue, 16, "rogue keeps only its newest 16");
    }

    /// A symlink or a hard link planted where the partial file goes is never written through.
    #[test]
    fn planted_links_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").expect("write");
        let partial = for_test(&dir);
        std::os::unix::fs::symlink(&victim, &partial.data).expect("symlink");
        assert!(partial.open_at(0).is_err(), "a symlink is refused");
        assert!(partial.load().is_none());
        partial.discard();
        std::fs::hard_link(&victim, &partial.data).expect("hard link");
        assert!(partial.open_at(0).is_err(), "a hard link is refused");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious", "the target is untouched");
        std::fs::remove_file(&partial.data).expect("remove");
        assert!(partial.open_at(0).is_ok(), "a fresh file is created");
        let out = dir.path().join("out.bin");
        std::os::unix::fs::symlink(&victim, &out).expect("symlink at out");
        partial.finish(&out).expect("finish");
        assert_eq!(std::fs::read(&victim).expect("read"), b"precious", "the rename replaced the link, not its target");
    }

    /// The table of a file's 1 MiB chunks merges into the file's BLAKE3 hash, at sizes around
    /// the one-chunk edge and at counts that are and are not powers of two.
    #[test]
    fn the_chunk_table_merges_into_the_whole_files_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        const MIB: usize = 1 << 20;
        for size in [0, 1, MIB, MIB + 1, 3 * MIB, 5 * MIB + 7] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &data).expect("write");
            let file = File::open(&path).expect("open");
            let (table, whole) = chunk_table(&file, size as u64, CHUNK_SIZE).expect("table");
            assert_eq!(table.len(), size.div_ceil(MIB), "size {size}");
            assert_eq!(whole, Hash::from(blake3::hash(&data)), "size {size}");
            assert_eq!(table_root(&table), whole, "size {size}");
            // Each entry is its chunk's, alone: a chunk checks against it on arrival.
            for (i, c) in data.chunks(MIB).enumerate() {
                assert_eq!(
                    chunk_entry(c, i as u64, table.len() as u64, CHUNK_SIZE),
                    Some(table[i]),
                    "size {size} chunk {i}"
                );
            }
            if table.len() > 1 {
                let mut other = data.clone();
                other[size - 1] ^= 1;
                let last = table.len() - 1;
                assert_ne!(
                    chunk_entry(&other[last * MIB..], last as u64, table.len() as u64, CHUNK_SIZE),
                    Some(table[last])
                );
                // The same bytes at another place in the tree are another entry.
                assert_ne!(chunk_entry(&data[..MIB], 1, table.len() as u64, CHUNK_SIZE), Some(table[0]));
            }
        }
    }
}
