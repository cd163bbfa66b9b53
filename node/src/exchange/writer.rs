//! The requester's disk side of a fetch: verified chunks, in buffers aligned for direct I/O,
//! written by their own thread while a second one syncs, so neither the network nor the disk
//! waits for the other.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::{Partial, PartialState};

/// Most verified chunks queued for the disk: the network keeps receiving while the disk syncs,
/// and a slow disk holds back the network instead of growing memory. With whole chunks
/// written direct a write takes about a millisecond and a sync finds little to flush, so 8 MiB
/// covers the stalls (32 measured no faster, and let the peak memory move by 15 MiB between
/// fetches).
const WRITE_QUEUE: usize = 8;

/// The alignment direct I/O asks of a buffer's address, a write's offset and its length (the
/// largest logical block size in use; 512-byte devices accept it too).
pub const DIRECT_ALIGN: usize = 4096;

/// A chunk's bytes, in a buffer aligned for direct I/O: the data path reads each chunk into one,
/// it is hashed there, and the writer hands the same buffer to the disk.
pub type ChunkBuf = aligned_vec::AVec<u8, aligned_vec::ConstAlign<DIRECT_ALIGN>>;

/// An empty chunk buffer.
pub fn chunk_buf() -> ChunkBuf {
    ChunkBuf::new(DIRECT_ALIGN)
}

/// The writer's handle on the partial file, writing around the page cache where it can.
///
/// A buffered write copies every byte into the page cache, which the sync then writes out: the
/// largest single cost of a fetch on the requester (a third of its CPU in `perf`). With
/// `O_DIRECT` the disk reads the chunk from its own buffer. Chunks are 1 MiB at 1 MiB offsets,
/// so all but a shorter last one qualify; that one, and any write on a filesystem without
/// direct I/O (tmpfs before Linux 6.6, some network filesystems), goes through the page cache.
/// Durability does not change: the syncer's `fdatasync` still comes before the state file
/// vouches for the bytes (it also flushes the device's cache and the file's size).
struct DirectFile {
    file: File,
    direct: bool,
}

impl DirectFile {
    /// `O_DIRECT` on the file's own description (its clones share it; the syncer only syncs).
    fn new(file: File) -> DirectFile {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let direct = fcntl_getfl(&file).and_then(|f| fcntl_setfl(&file, f | OFlags::DIRECT)).is_ok();
        DirectFile { file, direct }
    }

    /// Back to the page cache for the rest of the file.
    fn buffered(&mut self) -> std::io::Result<()> {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        if self.direct {
            let f = fcntl_getfl(&self.file)?;
            fcntl_setfl(&self.file, f - OFlags::DIRECT)?;
            self.direct = false;
        }
        Ok(())
    }

    fn write_all_at(&mut self, buf: &[u8], at: u64) -> std::io::Result<()> {
        let aligned = |n: usize| n.is_multiple_of(DIRECT_ALIGN);
        if self.direct
            && !(aligned(buf.as_ptr() as usize) && aligned(buf.len()) && at.is_multiple_of(DIRECT_ALIGN as u64))
        {
            self.buffered()?;
        }
        match self.file.write_all_at(buf, at) {
            // A filesystem may take the flag and still refuse the write (EINVAL): the page cache
            // then, for this chunk (rewritten whole) and the rest.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.buffered()?;
                self.file.write_all_at(buf, at)
            }
            r => r,
        }
    }
}

/// How a [`Writer`] ended: the bytes now durable in the partial file (and vouched for by its
/// state file), and whether every write and sync succeeded.
pub struct Written {
    pub verified: u64,
    pub result: std::io::Result<()>,
}

/// The requester's disk side of a fetch, on its own thread: appends verified chunks to the
/// partial file and, every `save_every` bytes, hands the length written so far to a syncer
/// thread, which syncs the data through a cloned handle and then saves the state that vouches
/// for exactly that length. The writer keeps appending while the disk syncs, and the network
/// keeps receiving while the writer writes; the order (data synced before the state names it)
/// keeps a crash from ever vouching for bytes not on disk. Nothing is hashed here: every chunk
/// was checked against the table before it was queued.
pub struct Writer {
    tx: Option<tokio::sync::mpsc::Sender<ChunkBuf>>,
    thread: Option<std::thread::JoinHandle<Written>>,
    /// Buffers the writer has written out, for the next chunks to be read into.
    recycled: std::sync::Mutex<std::sync::mpsc::Receiver<ChunkBuf>>,
}

impl Writer {
    /// Starts writing after `state.verified` bytes of `partial` (which are not read again).
    pub fn start(partial: &Partial, state: &PartialState, save_every: u64) -> std::io::Result<Writer> {
        let file = partial.open_at(state.verified)?;
        let mut syncer = Syncer {
            file: file.try_clone()?,
            partial: Partial { data: partial.data.clone(), state: partial.state.clone(), owner: partial.owner },
            state: state.clone(),
            error: None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkBuf>(WRITE_QUEUE);
        // At most one sync waits behind the one running: the writer never waits for the syncer.
        let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<u64>(1);
        let syncer = std::thread::Builder::new().name("fetch-syncer".into()).spawn(move || {
            while let Ok(len) = sync_rx.recv() {
                if let Err(e) = syncer.sync(len) {
                    syncer.error = Some(e);
                    break;
                }
            }
            syncer
        })?;
        let mut at = state.verified;
        // Bounded: buffers past what the reader takes back are freed.
        let (recycle, recycled) = std::sync::mpsc::sync_channel::<ChunkBuf>(WRITE_QUEUE);
        let mut file = DirectFile::new(file);
        let thread = std::thread::Builder::new().name("fetch-writer".into()).spawn(move || {
            let mut run = || -> std::io::Result<()> {
                let mut since_sync = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    file.write_all_at(&chunk, at)?;
                    at += chunk.len() as u64;
                    since_sync += chunk.len() as u64;
                    let _ = recycle.try_send(chunk);
                    if since_sync >= save_every {
                        match sync_tx.try_send(at) {
                            Ok(()) => since_sync = 0,
                            // A sync is already waiting: ask again after the next chunk.
                            Err(std::sync::mpsc::TrySendError::Full(_)) => {}
                            // The syncer stopped on an error, reported below.
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
                Ok(())
            };
            let result = run();
            drop(sync_tx);
            let mut syncer = match syncer.join() {
                Ok(s) => s,
                Err(_) => {
                    let e = std::io::Error::other("the fetch syncer thread failed");
                    return Written { verified: 0, result: Err(e) };
                }
            };
            // After a failed sync the kernel may have dropped the dirty pages: vouch for nothing
            // more than the last sync that finished. Otherwise vouch for what is on disk now,
            // so a resume starts there.
            let last = match syncer.error.take() {
                Some(e) => Err(e),
                None => syncer.sync(at),
            };
            Written { verified: syncer.state.verified, result: result.and(last) }
        })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread), recycled: std::sync::Mutex::new(recycled) })
    }

    /// A buffer already written out (its allocation is reused), or a new one.
    pub fn recycled(&self) -> ChunkBuf {
        self.recycled.lock().unwrap_or_else(|p| p.into_inner()).try_recv().unwrap_or_else(|_| chunk_buf())
    }

    /// Queues a verified chunk. `false` means the writer stopped (a disk error): call `finish`.
    pub async fn write(&self, chunk: ChunkBuf) -> bool {
        match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        }
    }

    /// Waits for every queued chunk to be written and synced. (Dropping a writer instead also
    /// ends its thread, after its last write.)
    pub async fn finish(mut self) -> Written {
        self.tx = None;
        let thread = self.thread.take();
        let joined = tokio::task::spawn_blocking(move || thread.map(|t| t.join())).await;
        match joined {
            Ok(Some(Ok(w))) => w,
            _ => Written { verified: 0, result: Err(std::io::Error::other("the fetch writer thread failed")) },
        }
    }
}

/// The syncing half of a [`Writer`]: its own handle on the partial file, and the state file.
struct Syncer {
    file: File,
    partial: Partial,
    /// The state as last saved; `verified` is the length the last finished sync covered.
    state: PartialState,
    error: Option<std::io::Error>,
}

impl Syncer {
    /// Makes the first `len` bytes durable, then has the state file vouch for them.
    fn sync(&mut self, len: u64) -> std::io::Result<()> {
        self.file.sync_data()?;
        let mut state = self.state.clone();
        state.verified = len;
        self.partial.save(&state)?;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::CHUNK_SIZE;
    use super::*;

    fn state(verified: u64) -> PartialState {
        PartialState {
            provider: "anhui".into(),
            dataset: "d".into(),
            version: 1,
            fields: None,
            content_hash: String::new(),
            chunk_size: 4,
            chunks: String::new(),
            verified,
        }
    }

    fn buf(bytes: &[u8]) -> ChunkBuf {
        ChunkBuf::from_slice(DIRECT_ALIGN, bytes)
    }

    fn for_test(dir: &tempfile::TempDir) -> Partial {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(dir.path()).expect("meta").uid();
        Partial::for_output(&dir.path().join("out.bin"), &dir.path().join("state"), owner)
    }

    #[tokio::test]
    async fn writer_syncs_and_vouches_for_what_it_wrote_and_resumes_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = for_test(&dir);
        let w = Writer::start(&partial, &state(0), 8).expect("start");
        for chunk in [&b"abcd"[..], b"efgh", b"ij"] {
            assert!(w.write(buf(chunk)).await);
        }
        let done = w.finish().await;
        assert_eq!(done.verified, 10);
        assert!(done.result.is_ok());
        assert_eq!(std::fs::read(&partial.data).expect("read"), b"abcdefghij");
        assert_eq!(partial.load().expect("state saved").verified, 10);

        // A resume after 8 verified bytes: what lies past them is dropped and new chunks go
        // after them; the prefix itself is not read (a byte changed in it stays changed).
        std::fs::write(&partial.data, b"Xbcdefghij").expect("write");
        let w = Writer::start(&partial, &state(8), 1 << 20).expect("restart");
        assert!(w.write(buf(b"IJ")).await);
        let done = w.finish().await;
        assert!(done.result.is_ok());
        assert_eq!(std::fs::read(&partial.data).expect("read"), b"XbcdefghIJ");
        assert_eq!(partial.load().expect("state saved").verified, 10);
    }

    /// The syncer vouches only for lengths whose sync finished, while the writer goes on: every
    /// state saved during a long write names a chunk boundary already on disk.
    #[tokio::test]
    async fn the_state_names_only_synced_lengths_while_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = for_test(&dir);
        let w = Writer::start(&partial, &state(0), 4).expect("start");
        let mut seen = Vec::new();
        for i in 0..200u8 {
            assert!(w.write(buf(&[i; 4])).await);
            if let Some(st) = partial.load() {
                seen.push(st.verified);
            }
        }
        let done = w.finish().await;
        assert!(done.result.is_ok());
        assert_eq!(done.verified, 800);
        assert!(seen.iter().all(|v| v % 4 == 0 && *v <= 800), "{seen:?}");
        assert!(seen.windows(2).all(|p| p[0] <= p[1]), "the vouched length never goes back: {seen:?}");
        let data = std::fs::read(&partial.data).expect("read");
        assert!(data.chunks(4).enumerate().all(|(i, c)| c == [i as u8; 4]));
    }

    /// Whole chunks go around the page cache where the filesystem allows it, a shorter last
    /// chunk through it; the file holds exactly the bytes either way.
    #[tokio::test]
    async fn whole_chunks_are_written_direct_and_a_short_last_one_buffered() {
        use rustix::fs::{OFlags, fcntl_getfl};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("direct.bin");
        let mut f = DirectFile::new(File::create(&path).expect("create"));
        let mib = CHUNK_SIZE as usize;
        let whole: Vec<ChunkBuf> = (0..3u8).map(|i| buf(&vec![i; mib])).collect();
        for (i, c) in whole.iter().enumerate() {
            f.write_all_at(c, (i * mib) as u64).expect("whole chunk");
        }
        let direct = f.direct;
        if direct {
            assert!(fcntl_getfl(&f.file).expect("flags").contains(OFlags::DIRECT), "whole chunks stay direct");
        }
        f.write_all_at(&buf(b"tail"), (3 * mib) as u64).expect("last chunk");
        assert!(!fcntl_getfl(&f.file).expect("flags").contains(OFlags::DIRECT), "the short chunk went buffered");
        f.file.sync_data().expect("sync");
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data.len(), 3 * mib + 4);
        assert!(data[..3 * mib].chunks(mib).enumerate().all(|(i, c)| c.iter().all(|b| *b == i as u8)));
        assert_eq!(&data[3 * mib..], b"tail");
        // A buffer at an unaligned address never goes direct, even at an aligned offset.
        let mut g = DirectFile::new(File::create(dir.path().join("b.bin")).expect("create"));
        let big = buf(&vec![7u8; mib + 1]);
        g.write_all_at(&big[1..], 0).expect("unaligned address");
        assert!(!g.direct);
    }
}
