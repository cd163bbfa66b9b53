//! Provenance at scale: a log of a million entries (realistic size: each carries a signed
//! object), verified by the CLI offline, queried through a running node, and the node's start-up
//! time with it. Baselines: the bare scan-and-hash of the same entries, the local API's round
//! trip, and an empty node's start-up.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltafed_node::admin::api::Request;
use deltafed_node::admin::client::Client;
use deltafed_node::provenance::{Provenance, Record};
use deltafed_node::store::{Cf, Store};
use deltafed_protocol::provenance::{EntryKind, Evidence};
use deltafed_protocol::{ExchangeId, Timestamp};

use super::{Row, Sizes};
use crate::Federation;

/// Fills `fed`'s only member's log with `n` entries (node stopped).
fn build_log(fed: &Federation, member: &str, n: u64) -> Result<()> {
    let dir = fed.data_dir(member);
    let key = deltafed_node::keyfile::read(&dir.join("node.key"))?;
    let store = Store::open(&dir.join("db"))?;
    let prov = Provenance::open(store.clone(), member.parse()?, Some(key))?;
    let evidence = vec![0x5au8; 360];
    let peers: Vec<deltafed_protocol::MemberId> =
        (0..10).map(|i| format!("peer{i}").parse()).collect::<Result<_, _>>()?;
    let t0 = Timestamp::from_system(std::time::SystemTime::now()).0 - n;
    let mut seq = 0u64;
    while seq < n {
        let batch: Vec<Record> = (seq..(seq + 10_000).min(n))
            .map(|i| Record {
                time: Timestamp(t0 + i),
                kind: EntryKind::ExchangeServed,
                dataset: Some(format!("{member}/dataset-{}", i % 100).parse().expect("valid ref")),
                peer: Some(peers[(i % 10) as usize].clone()),
                exchange: Some(ExchangeId([(i % 251) as u8; 16])),
                note: format!("grant 0123456789abcdef0123456789abcdef; purpose: benchmark; {i} bytes"),
                objects: vec![Evidence { kind: "ticket".into(), bytes: evidence.clone() }],
                calls: Vec::new(),
                also: Vec::new(),
            })
            .collect();
        seq += batch.len() as u64;
        prov.append_all(batch)?;
        if seq.is_multiple_of(200_000) || seq == n {
            let cp = prov.checkpoint(Timestamp::from_system(std::time::SystemTime::now()))?;
            // As a peer's acknowledgement would: archiving takes only witnessed entries.
            if let Some(cp) = cp {
                prov.record_witnessed(&peers[0], cp.body().seq)?;
            }
        }
    }
    // As a node's clean shutdown does: the next start then replays no write-ahead log.
    drop(prov);
    store.flush()?;
    Ok(())
}

/// The minimum any verification does: read every entry once and hash it.
fn scan_and_hash(fed: &Federation, member: &str) -> Result<f64> {
    let store = Store::open_read_only(&fed.data_dir(member).join("db"))?;
    let start = Instant::now();
    let mut n = 0u64;
    let mut acc = [0u8; 32];
    store.visit_range(Cf::Provenance, b"", None, |_, v| {
        let h = blake3::hash(v);
        acc[0] ^= h.as_bytes()[0];
        n += 1;
        true
    })?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(n > 0, "no entries scanned");
    Ok(ms)
}

/// Spawns the member's node and times until its admin socket answers.
fn start_time(fed: &mut Federation, member: &str) -> Result<f64> {
    let start = Instant::now();
    fed.start(member)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let mut fed = Federation::init(&["solo"])?;
    let mut empty = Federation::init(&["empty"])?;
    let t = Instant::now();
    build_log(&fed, "solo", s.log_entries)?;
    eprintln!("built a {}-entry log in {:.1} s", s.log_entries, t.elapsed().as_secs_f64());

    let base_hash = scan_and_hash(&fed, "solo")?;
    let start = Instant::now();
    let v = fed.json("solo", &["provenance", "verify"])?;
    let verify_ms = start.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(v["intact"] == true, "the built log does not verify: {v}");
    anyhow::ensure!(v["entries"].as_u64() >= Some(s.log_entries), "verify saw {} entries", v["entries"]);

    let empty_start = start_time(&mut empty, "empty")?;
    let big_start = start_time(&mut fed, "solo")?;

    let dir = fed.data_dir("solo");
    let mut c = Client::connect(&dir, &dir.join("admin.sock"))?;
    let query = Request::Provenance {
        dataset: None,
        peer: Some("peer3".parse()?),
        since: None,
        limit: Some(100),
        key: None,
        archive: None,
    };
    let by_dataset = Request::Provenance {
        dataset: Some("solo/dataset-42".parse()?),
        peer: None,
        since: None,
        limit: Some(100),
        key: None,
        archive: None,
    };
    let mut q_ms = 0f64;
    let mut base_ms = 0f64;
    let rounds = 20;
    for _ in 0..rounds {
        let t0 = Instant::now();
        let r = c.call_value(&query)?;
        q_ms = q_ms.max(t0.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            r.as_array().map(Vec::len) == Some(100),
            "the audit query returned {} entries",
            r.as_array().map_or(0, Vec::len)
        );
        let t0 = Instant::now();
        c.call_value(&by_dataset)?;
        q_ms = q_ms.max(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        c.call_value(&Request::Status)?;
        base_ms = base_ms.max(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (archive_rows, archived) = archive_and_verify(&fed, s.log_entries)?;
    fed.stop("solo").context("stopping the node")?;
    let _ = Duration::ZERO;
    let mut rows = vec![
        Row {
            figure: format!("provenance verify, {} entries (CLI)", s.log_entries),
            value: verify_ms,
            unit: "ms",
            baseline: Some(("scan + BLAKE3 of entries".into(), base_hash)),
            target: "< 2000".into(),
            met: verify_ms < 2000.0,
            note: "chain, seq, prev links, own checkpoints; includes process start and DB open".into(),
        },
        Row {
            figure: "audit query (peer or dataset, 100 newest)".into(),
            value: q_ms,
            unit: "ms",
            baseline: Some(("local API round trip".into(), base_ms)),
            target: "< 50".into(),
            met: q_ms < 50.0,
            note: format!("worst of {rounds} rounds each, through the running node"),
        },
        Row {
            figure: format!("start-up with {} entries", s.log_entries),
            value: big_start,
            unit: "ms",
            baseline: Some(("start-up, empty log".into(), empty_start)),
            target: "< 1000".into(),
            met: big_start < 1000.0,
            note: "process start until the admin API answers".into(),
        },
    ];
    rows.extend(archive_rows);
    eprintln!("archived {archived} entries");
    Ok(rows)
}

/// Archives the whole (witnessed) log of the running node into sealed segments, then verifies
/// the segments alone as an auditor would (CLI, roster only). Baselines on the same filesystem:
/// writing and syncing the segments' bytes, and reading and hashing the segment files.
fn archive_and_verify(fed: &Federation, entries: u64) -> Result<(Vec<Row>, u64)> {
    let dir = fed.root().join("archive");
    let dir_s = crate::path_str(&dir)?;
    let start = Instant::now();
    let a = fed.json("solo", &["provenance", "archive", "--before", "0s", "--out", dir_s])?;
    let archive_ms = start.elapsed().as_secs_f64() * 1e3;
    let archived = a["entries"].as_u64().context("archive --json: entries")?;
    anyhow::ensure!(archived >= entries, "archived {archived} of {entries} entries: {a}");
    let segments = a["segments"].as_array().context("archive --json: segments")?;
    let bytes: u64 = segments.iter().filter_map(|s| s["bytes"].as_u64()).sum();

    let write_ms = bytes as f64 / super::bulk::durable_write(&fed.root().join("baseline.bin"), bytes)? / 1e3;
    let roster = crate::path_str(&fed.roster_file())?.to_string();
    let start = Instant::now();
    let v = fed.run(&["provenance", "verify", "--archive", dir_s, "--roster", &roster, "--json"])?;
    let verify_ms = start.elapsed().as_secs_f64() * 1e3;
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).context("verify --archive --json")?;
    anyhow::ensure!(v.status.success() && report["intact"] == true, "the archive does not verify: {report}");
    anyhow::ensure!(report["archived_entries"].as_u64() == Some(archived), "verify saw {report}");
    let read_ms = read_and_hash(&dir)?;
    let mb = bytes as f64 / 1e6;
    let rate = |ms: f64| format!("{:.0} entries/s, {:.0} MB/s", archived as f64 / (ms / 1e3), mb / (ms / 1e3));
    Ok((
        vec![
            Row {
                figure: format!("provenance archive, {archived} entries into sealed segments"),
                value: archive_ms,
                unit: "ms",
                baseline: Some(("write + fsync of the segments' bytes".into(), write_ms)),
                target: "-".into(),
                met: true,
                note: format!(
                    "{}; {} segment(s), {mb:.0} MB; through the running node, CLI start included",
                    rate(archive_ms),
                    segments.len()
                ),
            },
            Row {
                figure: format!("provenance verify --archive, {archived} entries (segments + roster)"),
                value: verify_ms,
                unit: "ms",
                baseline: Some(("read + BLAKE3 of the segment files".into(), read_ms)),
                target: "-".into(),
                met: true,
                note: format!(
                    "{}; every entry re-hashed and chained, each segment's checkpoint checked",
                    rate(verify_ms)
                ),
            },
        ],
        archived,
    ))
}

fn read_and_hash(dir: &std::path::Path) -> Result<f64> {
    let start = Instant::now();
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(&path)?)?;
        std::hint::black_box(h.finalize());
        n += 1;
    }
    anyhow::ensure!(n > 0, "no segment files in {}", dir.display());
    Ok(start.elapsed().as_secs_f64() * 1e3)
}
