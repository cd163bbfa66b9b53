//! Sealed archives on a real RocksDB and real files: archive then verify (live and archive),
//! every kind of tampering with segments, the witness rule, and queries across the boundary.

use std::path::{Path, PathBuf};

use deltafed_protocol::provenance::{EntryKind, Evidence};
use deltafed_protocol::{DatasetRef, ExchangeId, MemberId, SecretKey, Timestamp};

use super::segment;
use super::*;
use crate::provenance::{Filter, Record, VerifyReport};
use crate::store::{Cf, Store};

const T0: u64 = 1_790_000_000_000;

fn id(s: &str) -> MemberId {
    s.parse().expect("member id")
}

fn key() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

fn rec(i: u64) -> Record {
    let datasets = ["zhejiang/licences@1", "zhejiang/permits@2", "anhui/roads@1"];
    let peers = ["jiangsu", "anhui"];
    Record {
        time: Timestamp(T0 + i * 1000),
        kind: EntryKind::QueryServed,
        dataset: Some(datasets[(i % 3) as usize].parse::<DatasetRef>().expect("dataset")),
        peer: Some(id(peers[(i % 2) as usize])),
        exchange: Some(ExchangeId([(i % 251) as u8; 16])),
        note: format!("query {i:06} answered with 1 record"),
        objects: vec![Evidence { kind: "query-answer".to_string(), bytes: vec![7; 64 + (i % 7) as usize] }],
        calls: Vec::new(),
        also: Vec::new(),
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    store: Store,
    log: Provenance,
    archive: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&tmp.path().join("db")).expect("store");
        let archive = tmp.path().join("archive");
        let log = Provenance::open(store.clone(), id("zhejiang"), Some(key()))
            .expect("opens")
            .with_archive_dir(archive.clone());
        Fixture { _tmp: tmp, store, log, archive }
    }

    /// Entries `from..to`, one checkpoint after every `every` of them, signed at the time of
    /// the last entry it covers.
    fn fill(&self, from: u64, to: u64, every: u64) {
        let mut i = from;
        while i < to {
            let end = (i + every).min(to);
            self.log.append_all((i..end).map(rec).collect()).expect("appends");
            self.log.checkpoint(Timestamp(T0 + (end - 1) * 1000)).expect("checkpoints");
            i = end;
        }
    }

    fn archive(&self, before_entry: u64, segment_bytes: u64) -> Result<Archived, ArchiveError> {
        self.log.archive(&ArchiveRequest {
            before: Timestamp(T0 + before_entry * 1000),
            dir: &self.archive,
            segment_bytes,
            cancelled: &|| false,
        })
    }

    fn verify_all(&self) -> VerifyReport {
        self.log.verify_with_archive(&[], &self.archive).expect("verifies")
    }

    fn segments(&self) -> Vec<PathBuf> {
        segment::list(&self.archive).expect("lists")
    }

    fn live_rows(&self) -> usize {
        self.store.scan_prefix(Cf::Provenance, &[]).expect("scans").len()
    }
}

fn assert_intact(r: &VerifyReport) {
    assert!(r.intact, "{:#?}", r.problems);
}

fn assert_problem(r: &VerifyReport, needles: &[&str]) {
    assert!(!r.intact, "{r:?}");
    assert!(
        r.problems.iter().any(|p| needles.iter().all(|n| p.contains(n))),
        "no problem mentions all of {needles:?}: {:#?}",
        r.problems
    );
}

fn name(p: &Path) -> String {
    p.file_name().expect("file name").to_string_lossy().to_string()
}

/// 500 entries (a checkpoint every 50), a witness at 449, archived before entry 380's time (so up
/// to the checkpoint at 349) in segments of about 8 KiB: several segments.
fn archived_fixture() -> (Fixture, Archived) {
    let f = Fixture::new();
    f.fill(0, 500, 50);
    f.log.record_witnessed(&id("jiangsu"), 449).expect("records");
    let a = f.archive(380, 8 * 1024).expect("archives");
    (f, a)
}

#[test]
fn archive_then_verify_live_and_archive() {
    let (f, a) = archived_fixture();
    // Checkpoints signed before entry 380's time: the one at 349 is the newest.
    assert_eq!(a.through.as_ref().map(|t| t.seq), Some(349));
    assert_eq!(a.entries, 350);
    assert!(a.segments.len() >= 3, "{:?}", a.segments);
    assert_eq!(a.segments.first().map(|s| s.first), Some(0));
    for pair in a.segments.windows(2) {
        assert_eq!(pair[1].first, pair[0].last + 1);
        // Every segment ends at a checkpoint (every 50 entries).
        assert_eq!((pair[0].last + 1) % 50, 0, "{:?}", pair[0]);
    }
    assert_eq!(f.live_rows(), 150, "archived entries are gone from the database");
    assert_eq!(f.segments().len(), a.segments.len());

    let plain = f.log.verify(&[]).expect("verifies");
    assert_intact(&plain);
    assert_eq!(plain.entries, 150);
    assert_eq!(plain.archived_through, Some(349));
    assert_eq!(plain.head_seq, Some(499));
    assert_eq!(plain.archive_segment.as_deref(), a.segments.last().map(|s| s.name.as_str()));

    let all = f.verify_all();
    assert_intact(&all);
    assert_eq!(all.archived_entries, 350);
    assert_eq!(all.segments_checked, a.segments.len() as u64);
    assert_eq!(all.entries, 150);

    let alone = verify_segments(&f.archive, Some(&id("zhejiang")), Some(&key().public()));
    assert_intact(&alone);
    assert_eq!(alone.head_seq, Some(349));
    let wrong_key = verify_segments(&f.archive, None, Some(&SecretKey::from_seed([9; 32]).public()));
    assert_problem(&wrong_key, &["its checkpoint is signed by key", "not zhejiang's key"]);

    // The log goes on after a reopen, chained to what it had (archived or not), and a second
    // archive run continues the chain of segments.
    let reopened = Provenance::open(f.store.clone(), id("zhejiang"), Some(key())).expect("reopens");
    assert_eq!(reopened.head().map(|h| h.seq), Some(499));
    drop(reopened);
    f.fill(500, 600, 50);
    f.log.record_witnessed(&id("anhui"), 599).expect("records");
    let b = f.archive(600, 1 << 30).expect("archives again");
    assert_eq!((b.segments.len(), b.through.as_ref().map(|t| t.seq)), (1, Some(599)));
    assert_eq!(f.live_rows(), 0, "everything is archived");
    let reopened = Provenance::open(f.store.clone(), id("zhejiang"), Some(key())).expect("reopens");
    assert_eq!(reopened.head().map(|h| h.seq), Some(599), "an emptied log continues the archive");
    let next = reopened.append(rec(600)).expect("appends");
    assert_eq!(next.seq, 600);
    assert_intact(&reopened.verify_with_archive(&[], &f.archive).expect("verifies"));
    assert_intact(&reopened.with_archive_dir(f.archive.clone()).verify(&[]).expect("verifies"));
}

#[test]
fn archiving_never_removes_entries_no_peer_witnessed() {
    let f = Fixture::new();
    f.fill(0, 300, 50);
    let err = f.archive(300, 1 << 30).expect_err("nothing witnessed");
    assert!(matches!(&err, ArchiveError::Refused(why) if why.contains("no peer has acknowledged")), "{err}");
    assert_eq!(f.live_rows(), 300);

    // A witness below every checkpoint older than the cut: still refused, and said why.
    f.log.record_witnessed(&id("jiangsu"), 20).expect("records");
    let err = f.archive(300, 1 << 30).expect_err("not covered");
    assert!(
        matches!(&err, ArchiveError::Refused(why) if why.contains("not yet covered by a checkpoint a peer witnessed") && why.contains("seq 20")),
        "{err}"
    );
    assert_eq!(f.live_rows(), 300);
    assert!(f.segments().is_empty());

    // A witness at 149 (marks only rise: 120 later changes nothing) lets entries up to the
    // checkpoint at 149 go, and not one more.
    f.log.record_witnessed(&id("jiangsu"), 149).expect("records");
    f.log.record_witnessed(&id("jiangsu"), 120).expect("records");
    assert_eq!(f.log.witnessed_through().expect("reads"), Some((149, id("jiangsu"))));
    let a = f.archive(300, 1 << 30).expect("archives");
    assert_eq!(a.through.map(|t| t.seq), Some(149));
    assert_eq!(f.live_rows(), 150);

    // Nothing older than the cut left to archive: not an error.
    let none = f.archive(100, 1 << 30).expect("nothing to do");
    assert_eq!(none.entries, 0);
    assert!(none.nothing.is_some_and(|why| why.contains("nothing to archive")));
    assert_intact(&f.verify_all());
}

#[test]
fn an_altered_segment_fails_with_its_name() {
    let (f, _) = archived_fixture();
    let files = f.segments();
    let victim = &files[1];
    let mut bytes = std::fs::read(victim).expect("reads");
    // A byte inside an entry near the end of the file (past the header and checkpoint).
    let at = bytes.len() - 40;
    bytes[at] ^= 0x01;
    std::fs::write(victim, &bytes).expect("writes");
    let r = f.verify_all();
    assert_problem(&r, &[&format!("segment {}", name(victim))]);
    // The next segment names the old file's hash.
    assert_problem(&r, &[&format!("segment {}", name(&files[2])), "altered, replaced or reordered"]);
}

#[test]
fn an_altered_newest_segment_fails_the_plain_verify() {
    let (f, _) = archived_fixture();
    let files = f.segments();
    let newest = files.last().expect("a segment");
    let mut bytes = std::fs::read(newest).expect("reads");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x80;
    std::fs::write(newest, &bytes).expect("writes");
    assert_problem(&f.log.verify(&[]).expect("verifies"), &[&name(newest), "altered or replaced"]);
    std::fs::remove_file(newest).expect("removes");
    assert_problem(&f.log.verify(&[]).expect("verifies"), &["which is not in", &name(newest)]);
}

#[test]
fn a_dropped_segment_fails_with_the_missing_entries() {
    let (f, a) = archived_fixture();
    let files = f.segments();
    std::fs::remove_file(&files[1]).expect("removes");
    let r = f.verify_all();
    let missing = format!(
        "entries {} to {} are missing between segments {}",
        a.segments[1].first,
        a.segments[1].last,
        name(&files[0])
    );
    assert_problem(&r, &[&missing, "a segment dropped?"]);

    // The first one dropped: the archive no longer starts at entry 0.
    std::fs::remove_file(&files[0]).expect("removes");
    assert_problem(&f.verify_all(), &["the segments before it (from entry 0) are missing"]);

    // The newest one dropped: the live log continues a segment that is not there.
    let (f, _) = archived_fixture();
    let files = f.segments();
    std::fs::remove_file(files.last().expect("a segment")).expect("removes");
    assert_problem(&f.verify_all(), &["newer segments are missing"]);
}

#[test]
fn reordered_segments_fail_as_swapped_and_out_of_order() {
    let (f, _) = archived_fixture();
    let files = f.segments();
    let tmp = f.archive.join("swap");
    std::fs::rename(&files[0], &tmp).expect("renames");
    std::fs::rename(&files[1], &files[0]).expect("renames");
    std::fs::rename(&tmp, &files[1]).expect("renames");
    let r = f.verify_all();
    assert_problem(&r, &[&format!("segment {}", name(&files[0])), "renamed, or files swapped?"]);
    assert_problem(&r, &["segments overlap or are out of order"]);
}

#[test]
fn a_segment_with_a_forged_checkpoint_fails() {
    let (f, _) = archived_fixture();
    let files = f.segments();
    let mut r = segment::Reader::open(&files[0]).expect("opens");
    let mut entries = Vec::new();
    let mut buf = Vec::new();
    while r.next_entry(&mut buf).expect("reads") {
        entries.push(buf.clone());
    }
    // Re-sealed by another key, every hash recomputed: the chain holds, the key does not.
    let forged = Signed::sign(
        Signed::<Checkpoint>::decode(&r.checkpoint).expect("decodes").body().clone(),
        &SecretKey::from_seed([9; 32]),
    )
    .expect("signs");
    std::fs::remove_file(&files[0]).expect("removes");
    let mut w = segment::Writer::create(&f.archive, &r.header, forged.as_bytes()).expect("creates");
    for e in &entries {
        w.record(e).expect("writes");
    }
    w.finish(&name(&files[0])).expect("finishes");
    let rep = f.verify_all();
    assert_problem(&rep, &[&format!("segment {}", name(&files[0])), "not zhejiang's key"]);
}

#[test]
fn queries_stay_coherent_across_the_archive() {
    let (f, _) = archived_fixture();
    let licences: DatasetRef = "zhejiang/licences".parse().expect("dataset");
    let by_dataset = |limit| Filter { dataset: Some(licences.clone()), limit, ..Filter::default() };
    // The live log answers from seq 350 on, through the index, without the archived rows.
    let live = f.log.query(&by_dataset(None)).expect("queries");
    assert!(
        live.iter().all(|e| e.seq >= 350 && e.seq % 3 == 0),
        "{:?}",
        live.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert_eq!(live.len(), (350..500).filter(|s| s % 3 == 0).count());
    let all = f.log.query(&Filter::default()).expect("queries");
    assert_eq!(all.first().map(|e| e.seq), Some(499));
    assert_eq!(all.last().map(|e| e.seq), Some(350));

    // The segments answer the rest, newest first, the limit respected.
    let old = search(&f.archive, &by_dataset(None)).expect("searches");
    assert_eq!(old.len(), (0..350).filter(|s| s % 3 == 0).count());
    assert_eq!(old.first().map(|e| e.seq), Some(348));
    assert!(old.windows(2).all(|w| w[0].seq > w[1].seq));
    let five = search(&f.archive, &by_dataset(Some(5))).expect("searches");
    assert_eq!(five.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![348, 345, 342, 339, 336]);
    let since = Filter { since: Some(Timestamp(T0 + 340 * 1000)), ..Filter::default() };
    assert_eq!(search(&f.archive, &since).expect("searches").len(), 10);

    // The status names what is archived and where.
    let s = f.log.archive_status().expect("status");
    assert_eq!(s.through.map(|t| t.seq), Some(349));
    assert_eq!(s.segments.last().map(|x| x.last), Some(349));
    assert!(s.unreadable.is_empty());

    // Compactions drop the index rows of archived entries.
    f.store.compact(Cf::ProvenanceIndex, None).expect("compacts");
    let stale = f
        .store
        .scan_prefix(Cf::ProvenanceIndex, &[])
        .expect("scans")
        .into_iter()
        .filter(|(k, _)| crate::provenance::seq_of_suffix(k).is_some_and(|s| s < 350))
        .count();
    assert_eq!(stale, 0, "index rows of archived entries are compacted away");
    assert_eq!(f.log.query(&by_dataset(None)).expect("queries").len(), live.len());
}

#[test]
fn a_segment_left_by_an_interrupted_run_is_set_aside_not_deleted() {
    let f = Fixture::new();
    f.fill(0, 200, 50);
    f.log.record_witnessed(&id("jiangsu"), 199).expect("records");
    std::fs::create_dir_all(&f.archive).expect("mkdir");
    let orphan = f.archive.join(segment::file_name(&id("zhejiang"), 0, 99));
    std::fs::write(&orphan, b"written before a crash").expect("writes");
    let a = f.archive(200, 1 << 30).expect("archives");
    assert_eq!(a.through.map(|t| t.seq), Some(199));
    assert!(f.archive.join(format!("{}.uncommitted", name(&orphan))).exists());
    assert_intact(&f.verify_all());
}

#[test]
fn a_cancelled_run_leaves_the_log_as_it_was() {
    let f = Fixture::new();
    f.fill(0, 200, 50);
    f.log.record_witnessed(&id("jiangsu"), 199).expect("records");
    let err = f
        .log
        .archive(&ArchiveRequest {
            before: Timestamp(T0 + 200_000),
            dir: &f.archive,
            segment_bytes: 1,
            cancelled: &|| true,
        })
        .expect_err("cancelled");
    assert!(matches!(err, ArchiveError::Cancelled), "{err}");
    assert_eq!(f.live_rows(), 200);
    assert_eq!(f.log.archived().expect("reads"), None);
    assert!(f.segments().is_empty());
}
