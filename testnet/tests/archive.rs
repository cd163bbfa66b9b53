//! Sealed archives on real nodes: a node archives a large log while another member keeps making
//! record queries against it (every one answered), then the live log and the chain of segments
//! verify through the CLI: through the node, offline on the data dir, and with only the
//! segments and the roster; a segment dropped from a copy of the archive fails the last.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deltafed_node::provenance::{Provenance, Record};
use deltafed_node::store::Store;
use deltafed_protocol::provenance::{EntryKind, Evidence};
use deltafed_protocol::{ExchangeId, Timestamp};
use deltafed_testnet::{Federation, binary, path_str};
use serde_json::Value;

const CONNECT: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(10);
/// A checkpoint goes out every 10 s once the log moved; its acknowledgement follows.
const WITNESSED: Duration = Duration::from_secs(40);
/// Entries written into the provider's log before it starts: enough that archiving them takes
/// long enough for queries to run meanwhile.
const PREFILLED: u64 = 300_000;

const LICENCES: &str = "company_id,name,status\n91330100A1,Hangzhou Shulan,active\n91330100B2,Ningbo Port,revoked\n";

/// `PREFILLED` entries appended to `member`'s log with its own key, as a busy node would have.
fn prefill(fed: &Federation, member: &str) -> Result<()> {
    let dir = fed.data_dir(member);
    let key = deltafed_node::keyfile::read(&dir.join("node.key"))?;
    let log = Provenance::open(Store::open(&dir.join("db"))?, member.parse()?, Some(key))?;
    let t0 = Timestamp::from_system(std::time::SystemTime::now()).0 - 3_600_000;
    let mut i = 0;
    while i < PREFILLED {
        let batch = (i..(i + 5000).min(PREFILLED))
            .map(|n| Record {
                time: Timestamp(t0 + n / 100),
                kind: EntryKind::QueryServed,
                dataset: Some(format!("{member}/licences@1").parse().expect("dataset")),
                peer: Some("shanghai".parse().expect("member")),
                exchange: Some(ExchangeId([(n % 251) as u8; 16])),
                note: format!("key \"9133{n:08}\"; 1 record(s)"),
                objects: vec![Evidence { kind: "query-answer".into(), bytes: n.to_be_bytes().repeat(24) }],
                calls: Vec::new(),
                also: Vec::new(),
            })
            .collect();
        log.append_all(batch)?;
        i += 5000;
    }
    Ok(())
}

/// `provenance archive --before 0s` until a peer has witnessed a checkpoint covering something
/// new (refusals and "nothing to archive" until then); returns the result and when the
/// successful run started and ended.
fn archive_when_witnessed(fed: &Federation, member: &str) -> Result<(Value, Instant, Instant)> {
    let deadline = Instant::now() + WITNESSED;
    loop {
        let started = Instant::now();
        let o = fed.cli(member, &["provenance", "archive", "--before", "0s", "--json"])?;
        let ended = Instant::now();
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        if o.status.success() {
            let v: Value = serde_json::from_slice(&o.stdout).context("archive --json")?;
            if v["entries"].as_u64().unwrap_or(0) > 0 {
                return Ok((v, started, ended));
            }
        } else if !stderr.contains("acknowledged") && !stderr.contains("witnessed") {
            bail!("archive failed: {stderr}");
        }
        if Instant::now() > deadline {
            bail!("no checkpoint of {member}'s log was witnessed within {WITNESSED:?}: {stderr}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `scripts/verify-archive.py ARGS`, when python3 has the checkers' packages (cbor2, PyNaCl,
/// blake3; `scripts/python-deps.sh` installs them): `None` otherwise.
fn python_verify_archive(args: &[&str]) -> Result<Option<std::process::Output>> {
    let ready = Command::new("python3").args(["-c", "import cbor2, nacl.signing, blake3"]).output();
    if !ready.is_ok_and(|o| o.status.success()) {
        eprintln!("python3 with cbor2, PyNaCl and blake3 not found: the independent segment check is skipped");
        return Ok(None);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/verify-archive.py");
    Ok(Some(Command::new("python3").arg(script).args(args).output()?))
}

fn verify(fed: &Federation, member: &str, extra: &[&str]) -> Result<(bool, Value)> {
    let mut args = vec!["provenance", "verify", "--json"];
    args.extend_from_slice(extra);
    let o = fed.cli(member, &args)?;
    let v: Value = serde_json::from_slice(&o.stdout).with_context(|| String::from_utf8_lossy(&o.stderr).to_string())?;
    Ok((o.status.success() && v["intact"] == true, v))
}

#[test]
fn a_node_archives_while_serving_queries_and_the_archive_verifies() -> Result<()> {
    let members = ["zhejiang", "shanghai"];
    let mut fed = Federation::init(&members)?;
    prefill(&fed, "zhejiang")?;
    fed.start_all()?;
    fed.wait_mesh(&members, CONNECT)?;
    let lic = fed.root().join("licences.csv");
    std::fs::write(&lic, LICENCES)?;
    fed.json(
        "zhejiang",
        &["publish", path_str(&lic)?, "--dataset", "licences", "--title", "Licences", "--key-field", "company_id"],
    )?;
    fed.wait_for("the licences in shanghai's catalog", SOON, |f| {
        Ok(f.catalog("shanghai")?.contains(&"zhejiang/licences@1".to_string()))
    })?;
    fed.json("zhejiang", &["grant", "licences", "--to", "shanghai", "--purpose", "licence checks"])?;
    let q = fed.json("shanghai", &["query", "zhejiang/licences", "91330100A1"])?;
    assert_eq!(q["records"][0]["name"], "Hangzhou Shulan", "{q}");

    // Shanghai queries zhejiang in a loop while zhejiang archives.
    let stop = AtomicBool::new(false);
    let shanghai = fed.data_dir("shanghai");
    let (archived, (started, ended), answered) = std::thread::scope(|s| -> Result<_> {
        let querying = s.spawn(|| -> Result<Vec<(Instant, Instant)>> {
            let mut answered = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let o = Command::new(binary())
                    .args(["query", "zhejiang/licences", "91330100B2", "--json", "--data-dir", path_str(&shanghai)?])
                    .env_remove("DELTAFED_DATA_DIR")
                    .output()?;
                let v: Value = serde_json::from_slice(&o.stdout)
                    .with_context(|| format!("a query failed: {}", String::from_utf8_lossy(&o.stderr)))?;
                if v["records"][0]["status"] != "revoked" {
                    bail!("a query was answered wrongly: {v}");
                }
                answered.push((started, Instant::now()));
            }
            Ok(answered)
        });
        let run = archive_when_witnessed(&fed, "zhejiang");
        stop.store(true, Ordering::Relaxed);
        let answered = querying.join().map_err(|_| anyhow::anyhow!("the querying thread panicked"))??;
        let (v, started, ended) = run?;
        Ok((v, (started, ended), answered))
    })?;
    let entries = archived["entries"].as_u64().context("entries")?;
    assert!(entries > PREFILLED, "the prefilled log and what followed are archived: {archived}");
    let dir = archived["dir"].as_str().context("dir")?.to_string();
    assert!(dir.ends_with("zhejiang/archive"), "the default archive dir: {dir}");
    assert_eq!(archived["segments"].as_array().map(Vec::len), Some(1), "{archived}");
    // Queries kept being answered while the archive was written: some began and ended within
    // the archive run (a query takes a few tens of milliseconds, archiving the log seconds).
    let took = ended - started;
    let during = answered.iter().filter(|(s, e)| *s >= started && *e <= ended).count();
    assert!(during >= 1, "no query was answered within the {took:?} the archive took ({} in all)", answered.len());
    eprintln!("archived {entries} entries in {took:?}; {during} of {} queries ran within it", answered.len());

    // The live log continues the segment; both verify through the node.
    let (ok, plain) = verify(&fed, "zhejiang", &[])?;
    assert!(ok, "{plain}");
    assert_eq!(plain["archived_through"], archived["archived_through"], "{plain}");
    let checking = Instant::now();
    let (ok, all) = verify(&fed, "zhejiang", &["--archive", &dir])?;
    eprintln!("verified the live log and {entries} archived entries in {:?}", checking.elapsed());
    assert!(ok, "{all}");
    assert_eq!(all["segments_checked"], 1, "{all}");
    assert_eq!(all["archived_entries"].as_u64(), Some(entries), "{all}");
    assert!(all["witnesses_checked"].as_u64().unwrap_or(0) > 0, "shanghai's copies were compared: {all}");

    // More queries, a second segment chained to the first.
    for _ in 0..5 {
        fed.json("shanghai", &["query", "zhejiang/licences", "91330100A1"])?;
    }
    let (second, _, _) = archive_when_witnessed(&fed, "zhejiang")?;
    assert_eq!(
        second["segments"][0]["first"].as_u64(),
        archived["archived_through"].as_u64().map(|t| t + 1),
        "{second}"
    );
    let (ok, all) = verify(&fed, "zhejiang", &["--archive", &dir])?;
    assert!(ok, "{all}");
    assert_eq!(all["segments_checked"], 2, "{all}");

    // A query of the live log says where the rest is; with --archive the segments answer too.
    let o = fed.cli("zhejiang", &["provenance", "--dataset", "zhejiang/licences", "--json"])?;
    assert!(o.status.success());
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(note.contains("are archived") && note.contains(&dir), "{note}");
    let old =
        fed.json("zhejiang", &["provenance", "--dataset", "zhejiang/licences", "--limit", "3", "--archive", &dir])?;
    let seqs: Vec<u64> = old.as_array().context("a list")?.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs.len(), 3, "{old}");
    // By key over the archive: the node hashes the key, the archived calls carry the hash.
    let through = second["archived_through"].as_u64().context("archived_through")?;
    let by_key = fed.json("zhejiang", &["provenance", "--key", "91330100A1", "--archive", &dir])?;
    let archived_calls = by_key.as_array().context("a list")?.iter().filter(|e| e["seq"].as_u64() <= Some(through));
    assert!(archived_calls.count() >= 5, "the archived calls for the key: {by_key}");
    let nobody = fed.json("zhejiang", &["provenance", "--key", "no such key", "--archive", &dir])?;
    assert_eq!(nobody.as_array().map(Vec::len), Some(0), "{nobody}");
    let export = fed.json("zhejiang", &["provenance", "export", "--out", path_str(&fed.root().join("live.jsonl"))?])?;
    assert_eq!(export["first_seq"].as_u64(), second["archived_through"].as_u64().map(|t| t + 1), "{export}");

    // Offline, on the stopped node's data dir, and with only the segments and the roster.
    assert!(fed.stop("zhejiang")?.success());
    let (ok, offline) = verify(&fed, "zhejiang", &["--archive", &dir])?;
    assert!(ok, "{offline}");
    let roster = fed.roster_file();
    let alone = fed.run(&["provenance", "verify", "--archive", &dir, "--roster", path_str(&roster)?, "--json"])?;
    let v: Value = serde_json::from_slice(&alone.stdout)?;
    assert!(alone.status.success() && v["intact"] == true, "{v}");
    assert_eq!(v["segments_checked"], 2, "{v}");

    // A copy of the archive without its first segment does not verify, and says why.
    let copy = fed.root().join("archive-copy");
    std::fs::create_dir(&copy)?;
    let mut names: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for n in names.iter().skip(1) {
        std::fs::copy(std::path::Path::new(&dir).join(n), copy.join(n))?;
    }
    let o = fed.run(&["provenance", "verify", "--archive", path_str(&copy)?, "--roster", path_str(&roster)?])?;
    assert!(!o.status.success(), "a dropped segment fails");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("from entry 0) are missing"), "{err}");

    // The same two verdicts from the independent Python checker of the format (docs/audit.md).
    if let Some(o) = python_verify_archive(&[&dir, "--roster", path_str(&roster)?])? {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && out.contains("intact: 2 segment(s) of zhejiang"), "{out}");
    }
    if let Some(o) = python_verify_archive(&[path_str(&copy)?, "--roster", path_str(&roster)?])? {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success() && out.contains("the segments before it are missing"), "{out}");
    }
    Ok(())
}
