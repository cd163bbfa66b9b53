//! Provenance log tests on a real RocksDB in a temp dir.

use deltafed_protocol::provenance::{Checkpoint, Entry, EntryKind, Evidence};
use deltafed_protocol::roster::{Member, Roster};
use deltafed_protocol::{ExchangeId, Hash, MemberId, OBJECT_VERSION, SecretKey, Signed, Timestamp};

use super::*;
use crate::store::{Batch, Cf, Store};

const T0: u64 = 1_790_000_000_000;

fn id(s: &str) -> MemberId {
    s.parse().expect("member id")
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn dataset(s: &str) -> DatasetRef {
    s.parse().expect("dataset ref")
}

/// Entry `i` of the standard test log: datasets and peers rotate so filters have work to do.
fn rec(i: u64) -> Record {
    let datasets = ["zhejiang/licences@1", "zhejiang/permits@2", "anhui/roads@1"];
    let peers = ["jiangsu", "anhui"];
    Record {
        time: Timestamp(T0 + i * 1000),
        kind: EntryKind::ExchangeServed,
        dataset: Some(dataset(datasets[(i % 3) as usize])),
        peer: Some(id(peers[(i % 2) as usize])),
        exchange: Some(ExchangeId([(i % 251) as u8; 16])),
        note: format!("step {i:06}"),
        objects: vec![Evidence { kind: "ticket".to_string(), bytes: vec![1, 2, 3, (i % 256) as u8] }],
        calls: Vec::new(),
        also: Vec::new(),
    }
}

fn open(store: &Store) -> Provenance {
    Provenance::open(store.clone(), id("zhejiang"), Some(key(1))).expect("opens")
}

fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store opens");
    (dir, store)
}

/// Appends entries `from..to` in batches (group commit keeps big logs quick to build).
fn fill(log: &Provenance, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let end = (i + 1000).min(to);
        log.append_all((i..end).map(rec).collect()).expect("appends");
        i = end;
    }
}

fn entry(store: &Store, seq: u64) -> Entry {
    let bytes = store.get(Cf::Provenance, &seq.to_be_bytes()).expect("reads").expect("entry present");
    deltafed_protocol::signed::decode(&bytes).expect("decodes")
}

fn delete_entries(store: &Store, seqs: impl IntoIterator<Item = u64>) {
    let mut b = Batch::default();
    for seq in seqs {
        b.delete(Cf::Provenance, seq.to_be_bytes());
    }
    store.write(b).expect("deletes");
}

fn assert_problem(report: &VerifyReport, needle: &str) {
    assert!(!report.intact, "{report:?}");
    assert!(
        report.problems.iter().any(|p| p.contains(needle)),
        "no problem mentions {needle:?}: {:#?}",
        report.problems
    );
}

#[test]
fn is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Provenance>();
}

#[test]
fn chain_of_appended_entries_verifies_intact() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    assert_eq!(log.head(), None);
    assert_eq!(log.len(), 0);
    let empty = log.verify(&[]).expect("verifies");
    assert!(empty.intact && empty.entries == 0 && empty.head_seq.is_none());

    let first = log.append(rec(0)).expect("appends");
    assert_eq!(first.seq, 0);
    let rest = log.append_all((1..50).map(rec).collect()).expect("appends");
    assert_eq!(rest.iter().map(|a| a.seq).collect::<Vec<_>>(), (1..50).collect::<Vec<_>>());
    assert_eq!(log.head(), rest.last().copied());
    assert_eq!(log.len(), 50);
    assert!(log.append_all(Vec::new()).expect("no-op").is_empty());

    assert_eq!(entry(&store, 0).prev, Hash([0; 32]));
    for seq in 1..50 {
        let prev_hash = Entry::hash_of_encoding(
            &store.get(Cf::Provenance, &(seq - 1u64).to_be_bytes()).expect("reads").expect("present"),
        );
        assert_eq!(entry(&store, seq).prev, prev_hash, "entry {seq}");
    }

    let report = log.verify(&[]).expect("verifies");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.entries, 50);
    assert_eq!(report.head_seq, Some(49));
    assert_eq!(report.head_hash, log.head().map(|h| h.hash.to_string()));
}

#[test]
fn reopening_continues_the_chain() {
    let (_dir, store) = temp_store();
    let head = {
        let log = open(&store);
        fill(&log, 0, 10);
        log.head().expect("head")
    };
    let log = open(&store);
    assert_eq!(log.head(), Some(head));
    let next = log.append(rec(10)).expect("appends");
    assert_eq!(next.seq, 10);
    assert_eq!(entry(&store, 10).prev, head.hash);
    assert!(log.verify(&[]).expect("verifies").intact);
}

#[test]
fn an_altered_entry_is_reported() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 50);
    let mut bytes = store.get(Cf::Provenance, &20u64.to_be_bytes()).expect("reads").expect("present");
    let at = bytes.windows(11).position(|w| w == b"step 000020").expect("note in the encoding");
    bytes[at] = b'S';
    store.put(Cf::Provenance, &20u64.to_be_bytes(), &bytes).expect("tampers");

    let report = log.verify(&[]).expect("verifies");
    assert_problem(&report, "entry 21: prev hash does not match entry 20");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);

    // Bytes that are no longer an entry at all are named as such.
    store.put(Cf::Provenance, &30u64.to_be_bytes(), b"\xa1garbage").expect("tampers");
    assert_problem(&log.verify(&[]).expect("verifies"), "entry 30: cannot be read");
}

#[test]
fn a_deleted_entry_is_reported() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 60);
    delete_entries(&store, [30]);
    let report = log.verify(&[]).expect("verifies");
    assert_problem(&report, "entry 30 is missing (the log jumps from entry 29 to 31)");
    assert_eq!(report.entries, 59);

    delete_entries(&store, [0, 1, 40, 41, 42]);
    let report = log.verify(&[]).expect("verifies");
    assert_problem(&report, "entries 0 to 1 are missing");
    assert_problem(&report, "entries 40 to 42 are missing");
}

#[test]
fn a_regrown_log_is_caught_by_own_and_witnessed_checkpoints() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    assert!(log.checkpoint(Timestamp(T0)).expect("nothing to sign").is_none());
    fill(&log, 0, 100);
    let cp = log.checkpoint(Timestamp(T0 + 500_000)).expect("signs").expect("head moved");
    assert_eq!((cp.body().seq, cp.body().head), (99, log.head().expect("head").hash));
    assert!(log.checkpoint(Timestamp(T0 + 600_000)).expect("signs").is_none(), "head did not move");
    assert_eq!(log.own_checkpoints().expect("reads"), vec![cp.clone()]);
    let report = log.verify(std::slice::from_ref(&cp)).expect("verifies");
    assert!(report.intact, "{report:?}");
    assert_eq!((report.checkpoints_checked, report.witnesses_checked), (1, 1));

    // Cut the log back to 79: the checkpoint now points past its end.
    delete_entries(&store, 80..100);
    let cut = open(&store);
    assert_eq!(cut.head().map(|h| h.seq), Some(79));
    assert_problem(&cut.verify(&[]).expect("verifies"), "the log ends at seq 79 but the checkpoint signed");

    // Regrow it with other entries: a consistent chain, but not the one that was signed.
    cut.append_all((1000..1040).map(rec).collect()).expect("regrows");
    assert_eq!(cut.head().map(|h| h.seq), Some(119));
    let report = cut.verify(&[]).expect("verifies");
    assert_problem(&report, "checkpoint at seq 99 (signed ");
    assert_problem(&report, "the log's entry 99 has hash");
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);

    // Remove our own checkpoints too: only the copy a peer holds still catches it.
    let mut b = Batch::default();
    b.delete(Cf::Checkpoints, 99u64.to_be_bytes());
    store.write(b).expect("deletes");
    assert!(cut.verify(&[]).expect("verifies").intact, "nothing left to compare with");
    let report = cut.verify(std::slice::from_ref(&cp)).expect("verifies");
    assert_problem(&report, "witnessed checkpoint at seq 99");
    assert_eq!(report.witnesses_checked, 1);

    // A "witnessed" copy signed by some other key proves nothing and is reported as such.
    let forged = Signed::sign(cp.body().clone(), &key(9)).expect("signs");
    assert_problem(&cut.verify(&[forged]).expect("verifies"), "not zhejiang's key");
}

fn roster() -> Roster {
    let member =
        |name: &str, n: u8| Member { id: id(name), name: name.to_string(), key: key(n).public(), addrs: Vec::new() };
    Roster {
        v: OBJECT_VERSION,
        federation: "yrd".parse().expect("federation"),
        version: 1,
        threshold: 1,
        members: vec![member("zhejiang", 1), member("jiangsu", 2)],
    }
}

fn jiangsu_checkpoint(seq: u64, head: [u8; 32], signer: u8) -> Signed<Checkpoint> {
    let body =
        Checkpoint { v: OBJECT_VERSION, member: id("jiangsu"), seq, head: Hash(head), time: Timestamp(T0 + seq) };
    Signed::sign(body, &key(signer)).expect("signs")
}

#[test]
fn witnesses_keep_peers_checkpoints_and_refuse_bad_ones() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    let roster = roster();
    assert!(log.latest_witness(&id("jiangsu")).expect("reads").is_none());

    // A real checkpoint from jiangsu's own log.
    let (_peer_dir, peer_store) = temp_store();
    let peer = Provenance::open(peer_store, id("jiangsu"), Some(key(2))).expect("opens");
    fill(&peer, 0, 5);
    let cp = peer.checkpoint(Timestamp(T0)).expect("signs").expect("signed");
    let stored = log.store_witness(cp.as_bytes(), &roster).expect("stores");
    assert_eq!(stored, cp);
    assert_eq!(log.latest_witness(&id("jiangsu")).expect("reads"), Some(cp.clone()));

    let forged = jiangsu_checkpoint(10, [7; 32], 3);
    let err = log.store_witness(forged.as_bytes(), &roster).expect_err("forged");
    assert!(err.to_string().contains("signed by another key"), "{err}");

    let other_head = jiangsu_checkpoint(4, [8; 32], 2);
    let err = log.store_witness(other_head.as_bytes(), &roster).expect_err("equivocation");
    assert!(matches!(err, Error::Equivocation { seq: 4, .. }), "{err}");
    assert!(err.to_string().contains("jiangsu equivocates"), "{err}");

    let err = log.store_witness(cp.as_bytes(), &roster).expect_err("not newer");
    assert!(matches!(err, Error::Stale { seq: 4, held: 4, .. }), "{err}");
    let older = jiangsu_checkpoint(2, [9; 32], 2);
    assert!(matches!(log.store_witness(older.as_bytes(), &roster), Err(Error::Stale { .. })));

    let newer = jiangsu_checkpoint(300, [5; 32], 2);
    log.store_witness(newer.as_bytes(), &roster).expect("stores newer");
    assert_eq!(log.latest_witness(&id("jiangsu")).expect("reads"), Some(newer));

    let own = log_checkpoint(&log);
    assert!(matches!(log.store_witness(own.as_bytes(), &roster), Err(Error::OwnCheckpoint(_))));
    assert!(matches!(log.store_witness(b"\x00not a checkpoint", &roster), Err(Error::Witness(_))));
}

fn log_checkpoint(log: &Provenance) -> Signed<Checkpoint> {
    log.append(rec(0)).expect("appends");
    log.checkpoint(Timestamp(T0)).expect("signs").expect("signed")
}

fn seqs(views: &[EntryView]) -> Vec<u64> {
    views.iter().map(|v| v.seq).collect()
}

#[test]
fn queries_filter_newest_first_through_the_index() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 30);
    let q = |f: Filter| log.query(&f).expect("queries");

    let all = q(Filter::default());
    assert_eq!(seqs(&all), (0..30).rev().collect::<Vec<_>>());

    // Dataset: the version in the filter is ignored, the view shows MEMBER/DATASET.
    let licences = q(Filter { dataset: Some(dataset("zhejiang/licences@7")), ..Filter::default() });
    assert_eq!(seqs(&licences), (0..30).rev().filter(|i| i % 3 == 0).collect::<Vec<_>>());
    assert_eq!(licences[0].dataset.as_deref(), Some("zhejiang/licences"));

    let anhui = q(Filter { peer: Some(id("anhui")), limit: Some(4), ..Filter::default() });
    assert_eq!(seqs(&anhui), vec![29, 27, 25, 23]);
    assert_eq!(anhui[0].peer.as_deref(), Some("anhui"));

    let both =
        q(Filter { dataset: Some(dataset("zhejiang/licences")), peer: Some(id("jiangsu")), ..Filter::default() });
    assert_eq!(seqs(&both), vec![24, 18, 12, 6, 0]);

    let since = Timestamp(T0 + 20_000);
    assert_eq!(seqs(&q(Filter { since: Some(since), ..Filter::default() })), (20..30).rev().collect::<Vec<_>>());
    assert_eq!(seqs(&q(Filter { since: Some(since), limit: Some(3), ..Filter::default() })), vec![29, 28, 27]);
    assert_eq!(
        seqs(&q(Filter { dataset: Some(dataset("zhejiang/permits")), since: Some(since), ..Filter::default() })),
        vec![28, 25, 22]
    );
    assert!(q(Filter { since: Some(Timestamp(T0 + 99_000)), ..Filter::default() }).is_empty());
    assert!(q(Filter { dataset: Some(dataset("shanghai/none")), ..Filter::default() }).is_empty());
    assert!(q(Filter { limit: Some(0), ..Filter::default() }).is_empty());

    // A clock that stepped back: `since` matches by time, whatever the seq.
    log.append(Record { time: Timestamp(T0), ..rec(30) }).expect("appends");
    let late = q(Filter { peer: Some(id("jiangsu")), since: Some(Timestamp(T0 + 26_000)), ..Filter::default() });
    assert_eq!(seqs(&late), vec![28, 26]);
    let late = q(Filter { since: Some(Timestamp(T0 + 26_000)), ..Filter::default() });
    assert_eq!(seqs(&late), vec![29, 28, 27, 26]);

    let view = &all[0];
    assert_eq!(view.kind, "exchange-served");
    assert_eq!(view.time, "2026-09-21T14:13:49.000Z");
    assert_eq!(view.exchange_id.as_deref(), Some(ExchangeId([29; 16]).to_string().as_str()));
    assert_eq!(view.note, "step 000029");
    assert_eq!(view.prev, all[1].hash);
}

#[test]
fn export_writes_one_json_line_per_entry_oldest_first() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 12);
    let mut out = Vec::new();
    assert_eq!(log.export(&mut out).expect("exports"), 12);
    let text = String::from_utf8(out).expect("utf-8");
    let views: Vec<EntryView> = text.lines().map(|l| serde_json::from_str(l).expect("one entry per line")).collect();
    assert_eq!(seqs(&views), (0..12).collect::<Vec<_>>());
    let object = &views[3].objects[0];
    assert_eq!(object.kind, "ticket");
    assert_eq!(object.bytes, "01020303");
    assert_eq!(object.hash, Hash::of(&[1, 2, 3, 3]).to_string());
    assert_eq!(views[11].hash, log.head().expect("head").hash.to_string());
    // Each line carries the entry's exact bytes, from which its hash is recomputed.
    for v in &views {
        let raw = hex::decode(v.raw.as_deref().expect("raw bytes in the export")).expect("hex");
        assert_eq!(Entry::hash_of_encoding(&raw).to_string(), v.hash, "entry {}", v.seq);
    }
}

#[test]
fn an_auditor_reads_a_data_dir_read_only_while_the_node_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("opens");
    let log = open(&store);
    fill(&log, 0, 25);
    let cp = log.checkpoint(Timestamp(T0)).expect("signs").expect("signed");

    // The node still holds the database (nothing flushed): a read-only open needs no lock.
    let ro = Store::open_read_only(dir.path()).expect("opens read-only");
    let audit = Provenance::open(ro, id("zhejiang"), None).expect("opens").with_signer(key(1).public());
    assert_eq!(audit.head(), log.head());
    let report = audit.verify(&[cp]).expect("verifies");
    assert!(report.intact, "{report:?}");
    assert_eq!(report.checkpoints_checked, 1);
    assert_eq!(audit.query(&Filter::default()).expect("queries").len(), 25);
    assert!(matches!(audit.append(rec(25)), Err(Error::ReadOnly { .. })));
    assert!(matches!(audit.checkpoint(Timestamp(T0)), Err(Error::ReadOnly { .. })));

    // An auditor who was told another key sees the checkpoints are not the member's.
    let wrong = Provenance::open(Store::open_read_only(dir.path()).expect("opens"), id("zhejiang"), None)
        .expect("opens")
        .with_signer(key(5).public());
    assert_problem(&wrong.verify(&[]).expect("verifies"), "not zhejiang's key");
}

#[test]
fn the_link_reader_agrees_with_the_full_decode() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 3);
    log.append(Record {
        dataset: None,
        peer: None,
        exchange: None,
        objects: Vec::new(),
        note: String::new(),
        ..rec(3)
    })
    .expect("appends");
    for seq in 0..4u64 {
        let bytes = store.get(Cf::Provenance, &seq.to_be_bytes()).expect("reads").expect("present");
        let full = entry(&store, seq);
        let l = link::read(&bytes).expect("reads the link");
        assert_eq!((l.v, l.seq, l.prev), (u64::from(full.v), full.seq, full.prev.0));
        // (Trailing bytes are not the link reader's business: they change the entry's hash, which
        // the next entry's `prev` or a checkpoint then contradicts.)
        assert!(link::read(&bytes[..bytes.len() - 1]).is_err(), "truncated");
    }
}

#[test]
fn a_big_log_verifies_queries_and_reopens() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    fill(&log, 0, 20_000);
    log.checkpoint(Timestamp(T0)).expect("signs");
    let report = log.verify(&[]).expect("verifies");
    assert!(report.intact, "{report:?}");
    assert_eq!((report.entries, report.head_seq), (20_000, Some(19_999)));

    let recent = log
        .query(&Filter { dataset: Some(dataset("anhui/roads")), limit: Some(10), ..Filter::default() })
        .expect("queries");
    assert_eq!(seqs(&recent), (0..20_000).rev().filter(|i| i % 3 == 2).take(10).collect::<Vec<_>>());

    let head = log.head();
    drop(log);
    assert_eq!(open(&store).head(), head);
}

/// A member that checkpoints for years (or floods us) costs a bounded number of rows: past the
/// bound, history is thinned, the oldest and the newest half kept.
#[test]
fn witnesses_are_bounded_and_thinned() {
    let (_dir, store) = temp_store();
    let log = open(&store);
    let roster = roster();
    let n = (WITNESSES_KEPT * 3) as u64;
    for seq in 1..=n {
        log.store_witness(jiangsu_checkpoint(seq, [seq as u8; 32], 2).as_bytes(), &roster).expect("stores");
    }
    let held = log.witnesses(&id("jiangsu"), usize::MAX).expect("reads");
    assert!(held.len() <= WITNESSES_KEPT, "{} kept", held.len());
    assert!(held.len() > WITNESSES_KEPT / 2, "{} kept", held.len());
    let seqs: Vec<u64> = held.iter().map(|c| c.body().seq).collect();
    assert_eq!(seqs.first(), Some(&1), "the oldest stays");
    assert_eq!(seqs.last(), Some(&n), "the newest stays");
    let newest: Vec<u64> = ((n - WITNESSES_KEPT as u64 / 2 + 1)..=n).collect();
    assert!(seqs.ends_with(&newest), "the newest half is complete");
}
