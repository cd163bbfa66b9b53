//! Multi-node tests on loopback: real `deltafed run` processes (libp2p with TLS and QUIC,
//! RocksDB), driven through the CLI, plus a real libp2p test peer playing a non-member and a
//! misbehaving member.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::Result;
use deltafed_protocol::manifest::{Classification, Format, Manifest, Sharing, Withdrawal};
use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::wire::{self, Gossip};
use deltafed_protocol::{Hash, OBJECT_VERSION, SecretKey, Signed, Timestamp};
use deltafed_testnet::peer::{Answerer, Seen, TestPeer, member_addr};
use deltafed_testnet::{Federation, free_base_port, path_str};
use libp2p::PeerId;

const FOUR: [&str; 4] = ["shanghai", "jiangsu", "zhejiang", "anhui"];
const CONNECT: Duration = Duration::from_secs(20);
const SPREAD: Duration = Duration::from_secs(10);

fn write_csv(fed: &Federation, name: &str, rows: usize) -> Result<String> {
    let path = fed.root().join(name);
    let mut s = String::from("company_id,name,employees\n");
    for i in 0..rows {
        s += &format!("C{i:05},\"Company {i}, Ltd\",{}\n", i * 3);
    }
    std::fs::write(&path, s)?;
    Ok(path_str(&path)?.to_string())
}

fn publish(fed: &Federation, member: &str, file: &str, dataset: &str) -> Result<serde_json::Value> {
    fed.json(
        member,
        &[
            "publish",
            file,
            "--dataset",
            dataset,
            "--title",
            &format!("{dataset} of {member}"),
            "--key-field",
            "company_id",
        ],
    )
}

fn wait_in_catalogs(fed: &mut Federation, members: &[&str], entry: &str, present: bool) -> Result<Duration> {
    let start = Instant::now();
    let list: Vec<String> = members.iter().map(ToString::to_string).collect();
    let entry = entry.to_string();
    fed.wait_for(
        &format!("{entry} {} the catalogs of {members:?}", if present { "in" } else { "gone from" }),
        SPREAD,
        |f| {
            for m in &list {
                if f.catalog(m)?.contains(&entry) != present {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    Ok(start.elapsed())
}

#[test]
fn four_nodes_connect_and_a_manifest_reaches_every_catalog() -> Result<()> {
    let mut fed = Federation::init(&FOUR)?;
    fed.start_all()?;
    fed.wait_mesh(&FOUR, CONNECT)?;
    let status = fed.json("zhejiang", &["status"])?;
    assert_eq!(status["member"], "zhejiang");
    assert_eq!(status["federation"], "yrd-testnet");
    assert_eq!(status["roster_version"], 1);
    let port = fed.base_port() + 2;
    let listen: Vec<String> = serde_json::from_value(status["listen"].clone())?;
    assert!(listen.contains(&format!("/ip4/127.0.0.1/tcp/{port}")), "{listen:?}");
    assert!(listen.contains(&format!("/ip4/127.0.0.1/udp/{port}/quic-v1")), "{listen:?}");
    assert!(status["peer_id"].as_str().is_some_and(|p| p.starts_with("12D3KooW")));

    let file = write_csv(&fed, "licences.csv", 100)?;
    let p = publish(&fed, "zhejiang", &file, "licences")?;
    assert_eq!(p["publisher"], "zhejiang");
    assert_eq!(p["version"], 1);
    assert_eq!(p["content_hash"].as_str().map(str::len), Some(64));
    let took = wait_in_catalogs(&mut fed, &FOUR, "zhejiang/licences@1", true)?;
    eprintln!("manifest in all 4 catalogs after {took:?} (includes CLI polling)");

    let item = &fed.json("anhui", &["catalog"])?[0];
    for field in ["publisher", "dataset", "version", "title", "classification", "sharing", "size", "content_hash"] {
        assert!(!item[field].is_null(), "catalog --json lacks {field}: {item}");
    }
    assert_eq!(item["sharing"], "conditional");
    assert_eq!(item["classification"], "general");
    let show = fed.json("anhui", &["catalog", "show", "zhejiang/licences@1"])?;
    assert_eq!(show["signature_valid"], true);
    assert_eq!(show["key_field"], "company_id");
    assert_eq!(show["schema"][2]["type"], "integer");
    let peers = fed.json("shanghai", &["peers"])?;
    assert_eq!(peers.as_array().map(Vec::len), Some(3));

    // Filters.
    assert_eq!(fed.json("jiangsu", &["catalog", "--publisher", "anhui"])?, serde_json::json!([]));
    assert_eq!(fed.json("jiangsu", &["catalog", "--query", "LICENCES"])?.as_array().map(Vec::len), Some(1));
    for m in FOUR {
        assert!(fed.stop(m)?.success(), "{m} stops cleanly on SIGTERM");
    }
    Ok(())
}

#[test]
fn late_joiner_and_restarted_nodes_catch_up_and_catalogs_survive_restarts() -> Result<()> {
    let mut fed = Federation::init(&FOUR)?;
    for m in ["shanghai", "jiangsu", "zhejiang"] {
        fed.start(m)?;
    }
    fed.wait_mesh(&["shanghai", "jiangsu", "zhejiang"], CONNECT)?;
    let file = write_csv(&fed, "a.csv", 10)?;
    publish(&fed, "zhejiang", &file, "licences")?;
    wait_in_catalogs(&mut fed, &["shanghai", "jiangsu"], "zhejiang/licences@1", true)?;

    // A late joiner learns what was published before it existed on the network.
    fed.start("anhui")?;
    wait_in_catalogs(&mut fed, &["anhui"], "zhejiang/licences@1", true)?;

    // A node that was down misses a new version, a new dataset and the withdrawal of a dataset
    // it held, then catches up.
    publish(&fed, "anhui", &file, "old")?;
    wait_in_catalogs(&mut fed, &FOUR, "anhui/old@1", true)?;
    assert!(fed.stop("jiangsu")?.success(), "jiangsu stops cleanly on SIGTERM");
    let file2 = write_csv(&fed, "b.csv", 20)?;
    publish(&fed, "zhejiang", &file2, "licences")?;
    publish(&fed, "shanghai", &file2, "permits")?;
    fed.json("anhui", &["withdraw", "old", "--reason", "superseded"])?;
    wait_in_catalogs(&mut fed, &["shanghai", "zhejiang", "anhui"], "anhui/old@1", false)?;
    fed.start("jiangsu")?;
    wait_in_catalogs(&mut fed, &["jiangsu"], "zhejiang/licences@2", true)?;
    wait_in_catalogs(&mut fed, &["jiangsu"], "shanghai/permits@1", true)?;
    wait_in_catalogs(&mut fed, &["jiangsu"], "anhui/old@1", false)?;
    // Gone because jiangsu holds the withdrawal, not because it lost the manifest.
    for m in ["jiangsu", "anhui"] {
        let show = fed.cli(m, &["catalog", "show", "anhui/old"])?;
        let err = String::from_utf8_lossy(&show.stderr);
        assert!(!show.status.success(), "{m}: {}", String::from_utf8_lossy(&show.stdout));
        assert_eq!(err.trim_end(), "error: anhui/old was withdrawn at version 1 (superseded)", "{m}");
    }

    // Everything survives a full restart. Each node is first started alone, so what it lists
    // can only have been read from its own disk, not learned from a peer.
    let before: Vec<Vec<String>> = FOUR.iter().map(|m| fed.catalog(m)).collect::<Result<_>>()?;
    assert_eq!(before[1].len(), 2, "{:?}", before[1]);
    for m in FOUR {
        assert!(fed.stop(m)?.success(), "{m} stops cleanly on SIGTERM");
    }
    for (m, b) in FOUR.iter().zip(&before) {
        fed.start(m)?;
        assert_eq!(fed.connected(m)?, Vec::<String>::new(), "{m} runs alone");
        assert_eq!(&fed.catalog(m)?, b, "{m}'s catalog after restart, read from its own disk");
        assert!(fed.stop(m)?.success(), "{m} stops cleanly on SIGTERM");
    }
    fed.start_all()?;
    fed.wait_mesh(&FOUR, CONNECT)?;
    for (m, b) in FOUR.iter().zip(&before) {
        assert_eq!(&fed.catalog(m)?, b, "{m}'s catalog once connected again");
    }
    Ok(())
}

#[test]
fn non_member_is_refused_and_learns_nothing() -> Result<()> {
    let mut fed = Federation::init(&FOUR)?;
    fed.start_all()?;
    fed.wait_mesh(&FOUR, CONNECT)?;
    let file = write_csv(&fed, "a.csv", 5)?;
    publish(&fed, "zhejiang", &file, "licences")?;
    wait_in_catalogs(&mut fed, &FOUR, "zhejiang/licences@1", true)?;

    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    // A stranger that knows zhejiang's address and key.
    let stranger = TestPeer::spawn(&SecretKey::from_seed([77; 32]), "yrd-testnet")?;
    let (zj, addr) = member_addr(&fed.data_dir("zhejiang"), fed.base_port() + 2)?;
    rt.block_on(stranger.dial(addr))?;
    rt.block_on(stranger.wait_for("the connection to end", Duration::from_secs(10), |s| {
        matches!(s, Seen::Closed(p) if *p == zj) || matches!(s, Seen::DialFailed(_))
    }))?;
    rt.block_on(
        stranger.request(zj, wire::Request::Sync(wire::SyncRequest { roster_version: 0, after: None }).encode()?),
    )?;
    rt.block_on(
        stranger.wait_for("the sync request to fail", Duration::from_secs(10), |s| matches!(s, Seen::RequestFailed(_))),
    )?;
    // Meanwhile the federation keeps talking.
    publish(&fed, "zhejiang", &file, "second")?;
    wait_in_catalogs(&mut fed, &FOUR, "zhejiang/second@1", true)?;
    let seen = stranger.seen();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Subscribed(_) | Seen::Message(_) | Seen::Response(_))),
        "a non-member learned something: {seen:?}"
    );
    for m in FOUR {
        let c = fed.connected(m)?;
        assert!(c.iter().all(|id| FOUR.contains(&id.as_str())), "{m} lists a non-member: {c:?}");
        assert_eq!(fed.json(m, &["peers"])?.as_array().map(Vec::len), Some(3));
    }
    assert!(fed.log("zhejiang").contains("incoming connection refused"), "zhejiang logged the refusal");
    Ok(())
}

fn manifest(publisher: &str, dataset: &str, title: &str) -> Result<Manifest> {
    Ok(Manifest {
        v: OBJECT_VERSION,
        publisher: publisher.parse()?,
        dataset: dataset.parse()?,
        version: 1,
        title: title.into(),
        description: String::new(),
        format: Format::Raw,
        schema: vec![],
        key_field: None,
        classification: Classification::General,
        sharing: Sharing::Conditional,
        size: 4,
        records: 0,
        content_hash: Hash::of(b"data"),
        created: Timestamp(1_795_000_000_000),
        live: false,
    })
}

/// A raw peer playing `member` (a member of the roster whose node is not running), connected to
/// `node` at `port` and subscribed to by it; `answer` answers what the node asks it. Returns the
/// runtime the peer runs on, the peer, its key and the node's PeerId.
fn raw_member(
    fed: &Federation,
    member: &str,
    node: &str,
    port: u16,
    answer: Answerer,
) -> Result<(tokio::runtime::Runtime, TestPeer, SecretKey, PeerId)> {
    let key = deltafed_node::keyfile::read(&fed.data_dir(member).join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let peer = {
        let _guard = rt.enter();
        TestPeer::spawn_answering(&key, "yrd-testnet", answer)?
    };
    let (pid, addr) = member_addr(&fed.data_dir(node), port)?;
    rt.block_on(peer.dial(addr))?;
    rt.block_on(peer.wait_for(
        &format!("{node} to subscribe"),
        CONNECT,
        |s| matches!(s, Seen::Subscribed(p) if *p == pid),
    ))?;
    Ok((rt, peer, key, pid))
}

/// A successor of the federation's roster (version 2) without `dropped`, signed by `key` alone:
/// below any threshold of two or more.
fn below_threshold(fed: &Federation, dropped: &str, key: &SecretKey) -> Result<SignedRoster> {
    let current = SignedRoster::decode(&std::fs::read(fed.roster_file())?)?;
    let mut next = current.roster.clone();
    next.version = 2;
    next.members.retain(|m| m.id.as_str() != dropped);
    let mut next = SignedRoster::unsigned(next);
    next.add_signature(key)?;
    Ok(next)
}

fn no_answer() -> Answerer {
    std::sync::Arc::new(|_| None)
}

/// A value of zhejiang's `/metrics` (0 when the series is absent).
fn metric(fed: &Federation, rt: &tokio::runtime::Runtime, series: &str) -> Result<f64> {
    let url = format!("{}/metrics", fed.metrics_url("zhejiang")?);
    let text = rt.block_on(async { reqwest::get(&url).await?.text().await })?;
    Ok(text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0))
}

/// Bad gossip from a member, each kind reaching zhejiang's checks: forged, tampered and
/// malformed messages are rejected and count against the sender.
#[test]
fn forged_tampered_and_malformed_gossip_is_rejected_everywhere_and_penalised() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "jiangsu", "zhejiang", "anhui", "rogue"])?;
    // zhejiang, which rogue talks to, also logs what its gossip layer drops.
    let log = "info,deltafed_node=debug,libp2p_gossipsub=warn,libp2p_gossipsub::handler=debug,libp2p_swarm=warn";
    fed.start_with_env("zhejiang", &[("DELTAFED_LOG", log)])?;
    for m in ["shanghai", "jiangsu", "anhui"] {
        fed.start(m)?;
    }
    fed.wait_mesh(&FOUR, CONNECT)?;
    let (rt, rogue, rogue_key, zj) = raw_member(&fed, "rogue", "zhejiang", fed.base_port() + 2, no_answer())?;

    // Control: a valid manifest by rogue itself travels the path the bad ones will take.
    let honest = Signed::sign(manifest("rogue", "control", "control")?, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(honest.into_bytes()).encode()?))?;
    wait_in_catalogs(&mut fed, &FOUR, "rogue/control@1", true)?;
    let rejections = |f: &Federation| f.log("zhejiang").matches("rejected gossip message").count();

    // 1. Forged: signed by rogue, claiming to be zhejiang's.
    let forged = Signed::sign(manifest("zhejiang", "forged", "forged")?, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(forged.into_bytes()).encode()?))?;
    // 2. Tampered after signing.
    let mut tampered = Signed::sign(manifest("rogue", "tampered", "honest title")?, &rogue_key)?.into_bytes();
    let at = tampered.windows(6).position(|w| w == b"honest").expect("title in bytes");
    tampered[at] = b'H';
    rt.block_on(rogue.publish(Gossip::Manifest(tampered).encode()?))?;
    // 3. Not CBOR at all.
    rt.block_on(rogue.publish(b"\xff\x00garbage".to_vec()))?;
    // 4. A malformed RPC request gets a refusal, not a crash.
    rt.block_on(rogue.request(zj, b"\x00\x01not a request".to_vec()))?;
    let resp =
        rt.block_on(rogue.wait_for("an RPC answer", Duration::from_secs(10), |s| matches!(s, Seen::Response(_))))?;
    let Seen::Response(bytes) = resp else { unreachable!() };
    assert!(matches!(wire::Response::decode(&bytes)?, wire::Response::Refused(_)));
    // Rejections, not mere drops: they count against the sender.
    fed.wait_for("zhejiang to score rogue below zero", Duration::from_secs(10), |f| {
        let peers = f.json("zhejiang", &["peers"])?;
        let score =
            peers.as_array().and_then(|a| a.iter().find(|p| p["member"] == "rogue")).and_then(|p| p["score"].as_f64());
        Ok(score.is_some_and(|s| s < 0.0))
    })?;
    // Each of the three bad messages reached zhejiang's own checks and was rejected there.
    fed.wait_for("zhejiang to reject the three bad messages", Duration::from_secs(10), |f| Ok(rejections(f) >= 3))?;
    // 5. Far over the size limit: zhejiang's gossip layer drops it at the frame, before anything
    // decodes it (its log says so at debug level, which zhejiang was started with).
    rt.block_on(rogue.publish(vec![0xa1; 600 * 1024]))?;
    let dropped = format!("exceeds maximum of {}b", wire::MAX_GOSSIP_SIZE);
    fed.wait_for("zhejiang to drop the oversized frame", SPREAD, |f| Ok(f.log("zhejiang").contains(&dropped)))?;
    // A barrier: a later honest manifest reaches everyone, so the bad ones had their chance.
    let file = write_csv(&fed, "after.csv", 3)?;
    publish(&fed, "zhejiang", &file, "after")?;
    wait_in_catalogs(&mut fed, &FOUR, "zhejiang/after@1", true)?;
    assert_eq!(rejections(&fed), 3, "only the three bad messages reached zhejiang's checks");
    for m in FOUR {
        let mut cat = fed.catalog(m)?;
        cat.sort();
        assert_eq!(cat, ["rogue/control@1", "zhejiang/after@1"], "{m} accepted a bad manifest");
    }
    assert!(fed.exited("zhejiang")?.is_none(), "zhejiang is still running");
    Ok(())
}

/// What a member cannot do to the roster or the catalog by gossip: a successor roster signed
/// below its threshold and a different manifest at a version already held are rejected (and
/// count against the sender); a stale version, and a manifest arriving after its own
/// withdrawal, are ignored. None of them changes a catalog or the roster anywhere. (A sender's
/// score after three invalid messages graylists it, so these have a test of their own.)
#[test]
fn a_member_cannot_rewrite_the_roster_or_the_catalog_by_gossip() -> Result<()> {
    const TWO: [&str; 2] = ["shanghai", "zhejiang"];
    let mut fed = Federation::init(&["shanghai", "zhejiang", "rogue"])?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&TWO, CONNECT)?;
    let (rt, rogue, rogue_key, _) = raw_member(&fed, "rogue", "zhejiang", fed.base_port() + 1, no_answer())?;
    let honest = Signed::sign(manifest("rogue", "control", "control")?, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(honest.into_bytes()).encode()?))?;
    wait_in_catalogs(&mut fed, &TWO, "rogue/control@1", true)?;
    let rejections = |f: &Federation| f.log("zhejiang").matches("rejected gossip message").count();

    // A successor roster (anhui removed) signed by rogue alone, below the threshold.
    let next = below_threshold(&fed, "anhui", &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Roster(next.encode()?).encode()?))?;
    // A different manifest at the version held: an equivocation.
    let other = Signed::sign(manifest("rogue", "control", "another title")?, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(other.into_bytes()).encode()?))?;
    fed.wait_for("zhejiang to reject both", SPREAD, |f| Ok(rejections(f) >= 2))?;
    // A stale version: version 1 after version 2.
    let v2 = Signed::sign(Manifest { version: 2, ..manifest("rogue", "seq", "two")? }, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(v2.into_bytes()).encode()?))?;
    wait_in_catalogs(&mut fed, &TWO, "rogue/seq@2", true)?;
    let v1 = Signed::sign(manifest("rogue", "seq", "one")?, &rogue_key)?;
    // A withdrawal that arrives before its manifest: the manifest, when it comes, is stale.
    let withdrawal = Withdrawal {
        v: OBJECT_VERSION,
        publisher: "rogue".parse()?,
        dataset: "early".parse()?,
        version: 1,
        reason: "never to be listed".into(),
        time: Timestamp(1_795_000_000_000),
    };
    let withdrawal = Signed::sign(withdrawal, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Withdrawal(withdrawal.into_bytes()).encode()?))?;
    fed.wait_for("the withdrawal of rogue/early everywhere", SPREAD, |f| {
        Ok(TWO.iter().all(|m| {
            f.cli(m, &["catalog", "show", "rogue/early"])
                .is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("was withdrawn at version 1"))
        }))
    })?;
    let stale = r#"deltafed_gossip_messages_total{result="stale"}"#;
    let stale_before = metric(&fed, &rt, stale)?;
    rt.block_on(rogue.publish(Gossip::Manifest(v1.into_bytes()).encode()?))?;
    let early = Signed::sign(manifest("rogue", "early", "early")?, &rogue_key)?;
    rt.block_on(rogue.publish(Gossip::Manifest(early.into_bytes()).encode()?))?;
    fed.wait_for("zhejiang to ignore both stale manifests", SPREAD, |f| {
        Ok(metric(f, &rt, stale)? >= stale_before + 2.0)
    })?;
    // A barrier: a later honest manifest reaches everyone, so the bad ones had their chance.
    let file = write_csv(&fed, "after.csv", 3)?;
    publish(&fed, "zhejiang", &file, "after")?;
    wait_in_catalogs(&mut fed, &TWO, "zhejiang/after@1", true)?;
    assert_eq!(rejections(&fed), 2, "only the roster and the equivocation were rejected");
    for m in TWO {
        let mut cat = fed.catalog(m)?;
        cat.sort();
        assert_eq!(cat, ["rogue/control@1", "rogue/seq@2", "zhejiang/after@1"], "{m} accepted a bad manifest");
        assert_eq!(fed.json(m, &["catalog", "show", "rogue/control"])?["title"], "control", "{m}");
        assert_eq!(fed.json(m, &["status"])?["roster_version"], 1, "{m} took a roster below its threshold");
    }
    Ok(())
}

/// An invalid successor roster arriving by sync (a member's answer to the catch-up a node makes
/// on connecting) is rejected as it is by gossip: the roster in force stays, the operator is
/// told, and the page's valid items are still taken.
#[test]
fn an_invalid_roster_arriving_by_sync_is_rejected() -> Result<()> {
    const TWO: [&str; 2] = ["shanghai", "zhejiang"];
    let mut fed = Federation::init(&["shanghai", "zhejiang", "rogue"])?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&TWO, CONNECT)?;
    let rogue_key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    // Version 2 without shanghai, signed by rogue alone: below the threshold.
    let next = below_threshold(&fed, "shanghai", &rogue_key)?;
    let item = Gossip::Manifest(Signed::sign(manifest("rogue", "synced", "synced")?, &rogue_key)?.into_bytes());
    let page = wire::Response::Sync(wire::SyncResponse { roster: Some(next.encode()?), items: vec![item], next: None })
        .encode()?;
    let answer: Answerer = std::sync::Arc::new(move |b: &[u8]| match wire::Request::decode(b).ok()? {
        wire::Request::Sync(_) => Some(page.clone()),
        wire::Request::Deliver(_) => wire::Response::Ack.encode().ok(),
        _ => None,
    });
    let (_rt, _rogue, _, _) = raw_member(&fed, "rogue", "zhejiang", fed.base_port() + 1, answer)?;
    // The roster comes first in a page: once the item is in, the roster was decided.
    wait_in_catalogs(&mut fed, &["zhejiang"], "rogue/synced@1", true)?;
    assert_eq!(fed.json("zhejiang", &["status"])?["roster_version"], 1, "zhejiang took a roster below its threshold");
    let log = fed.log("zhejiang");
    assert!(
        log.lines().any(|l| l.contains("sync carried an invalid roster") && l.contains("threshold")),
        "zhejiang did not say why it refused the roster: {log}"
    );
    assert!(fed.connected("zhejiang")?.contains(&"shanghai".to_string()), "shanghai is still a member to zhejiang");
    Ok(())
}

#[test]
fn roster_update_adds_and_removes_members_without_restart() -> Result<()> {
    let mut fed = Federation::init(&FOUR)?;
    fed.start_all()?;
    fed.wait_mesh(&FOUR, CONNECT)?;
    // A new member, nanjing, prepares its node.
    let port = free_base_port(1)?;
    let nj_dir = fed.root().join("nanjing");
    let nj = fed.run(&[
        "init",
        "--member",
        "nanjing",
        "--data-dir",
        path_str(&nj_dir)?,
        "--json",
        "--listen",
        &format!("/ip4/127.0.0.1/tcp/{port}"),
        "--listen",
        &format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
    ])?;
    assert!(nj.status.success());
    let nj: serde_json::Value = serde_json::from_slice(&nj.stdout)?;
    // Version 2: anhui leaves, nanjing joins; three members of version 1 sign.
    let v1 = fed.json("shanghai", &["roster", "show", path_str(&fed.roster_file())?])?;
    let mut specs = Vec::new();
    for m in v1["members"].as_array().into_iter().flatten() {
        if m["id"] != "anhui" {
            specs.push(format!(
                "{}={}@{}",
                m["id"].as_str().unwrap_or(""),
                m["public_key"].as_str().unwrap_or(""),
                m["addrs"][0].as_str().unwrap_or("")
            ));
        }
    }
    specs.push(format!("nanjing={}@/ip4/127.0.0.1/tcp/{port}", nj["public_key"].as_str().unwrap_or("")));
    let v2 = fed.root().join("roster-v2.cbor");
    let mut args = vec![
        "roster",
        "new",
        "--federation",
        "yrd-testnet",
        "--threshold",
        "3",
        "--version",
        "2",
        "--out",
        path_str(&v2)?,
    ];
    for s in &specs {
        args.extend(["--member", s.as_str()]);
    }
    assert!(fed.run(&args)?.status.success());
    for m in ["shanghai", "jiangsu"] {
        fed.json(m, &["roster", "sign", path_str(&v2)?])?;
    }
    // Two of three: the running node refuses it.
    let refused = fed.cli("shanghai", &["roster", "install", path_str(&v2)?])?;
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{}", String::from_utf8_lossy(&refused.stdout));
    assert_eq!(
        err.trim_end(),
        "error: roster not valid: roster version 2: it is signed by 2 distinct member(s) of the 3 its threshold \
         requires"
    );
    assert_eq!(fed.json("shanghai", &["status"])?["roster_version"], 1, "version 1 stays in force");
    fed.json("zhejiang", &["roster", "sign", path_str(&v2)?])?;
    fed.json("shanghai", &["roster", "install", path_str(&v2)?])?;
    fed.wait_for("roster version 2 everywhere", SPREAD, |f| {
        for m in ["shanghai", "jiangsu", "zhejiang"] {
            if f.json(m, &["status"])?["roster_version"] != 2 {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    fed.wait_for("anhui to be cut off", SPREAD, |f| {
        Ok(["shanghai", "jiangsu", "zhejiang"]
            .iter()
            .all(|m| f.connected(m).is_ok_and(|c| !c.contains(&"anhui".to_string()))))
    })?;
    // nanjing installs version 2 and joins without anyone restarting.
    let out = fed.run(&["roster", "install", path_str(&v2)?, "--data-dir", path_str(&nj_dir)?])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut child = std::process::Command::new(deltafed_testnet::binary())
        .args(["run", "--data-dir", path_str(&nj_dir)?])
        .stderr(std::fs::File::create(fed.root().join("nanjing.log"))?)
        .spawn()?;
    let joined = fed.wait_for("nanjing to be connected to the remaining members", CONNECT, |f| {
        Ok(["shanghai", "jiangsu", "zhejiang"]
            .iter()
            .all(|m| f.connected(m).is_ok_and(|c| c.contains(&"nanjing".to_string()))))
    });
    let _ = child.kill();
    let _ = child.wait();
    joined?;
    assert!(fed.connected("anhui")?.is_empty(), "anhui is disconnected from everyone");
    // And it stays out: with its node stopped, a peer holding its key dials shanghai again and
    // again; each connection is refused before anything is exchanged, so no fetch of its can
    // reach a provider.
    let status = fed.stop("anhui")?;
    assert!(status.success(), "anhui stops: {status}");
    let key = deltafed_node::keyfile::read(&fed.data_dir("anhui").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let peer = {
        let _guard = rt.enter();
        TestPeer::spawn(&key, "yrd-testnet")?
    };
    let (sh, addr) = member_addr(&fed.data_dir("shanghai"), fed.base_port())?;
    let ended = |seen: &[Seen]| seen.iter().filter(|s| matches!(s, Seen::Closed(_) | Seen::DialFailed(_))).count();
    for attempt in 1..=3u8 {
        let before = ended(&peer.seen());
        rt.block_on(peer.dial(addr.clone()))?;
        let deadline = Instant::now() + SPREAD;
        while ended(&peer.seen()) == before {
            anyhow::ensure!(Instant::now() < deadline, "redial {attempt} of anhui was not ended: {:?}", peer.seen());
            std::thread::sleep(Duration::from_millis(20));
        }
        let fetch = deltafed_protocol::exchange::FetchRequest {
            v: OBJECT_VERSION,
            requester: "anhui".parse()?,
            provider: "shanghai".parse()?,
            dataset: "licences".parse()?,
            version: None,
            grant: None,
            nonce: deltafed_protocol::Nonce([attempt; 16]),
            time: Timestamp::from_system(std::time::SystemTime::now()),
            offset: 0,
        };
        let req = wire::Request::Fetch(Signed::sign(fetch, &key)?.into_bytes()).encode()?;
        let answer = rt.block_on(peer.call(sh, req, SPREAD));
        assert!(answer.is_err(), "a removed member's fetch was answered: {answer:?}");
    }
    let seen = peer.seen();
    assert!(
        !seen.iter().any(|s| matches!(s, Seen::Subscribed(_) | Seen::Message(_) | Seen::Response(_))),
        "the removed member learned something: {seen:?}"
    );
    Ok(())
}

#[test]
fn start_up_refusals_say_what_to_do() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "jiangsu"])?;
    let dir = fed.data_dir("shanghai");
    let run = |f: &Federation| -> Result<String> {
        let out = f.cli("shanghai", &["run"])?;
        assert!(!out.status.success());
        Ok(String::from_utf8_lossy(&out.stderr).to_string())
    };
    // Status with no node running names the command to start one.
    let out = fed.cli("shanghai", &["status"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no node is running") && err.contains("deltafed run --data-dir"),
        "{err}"
    );
    // A key readable by others.
    let key = dir.join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    assert!(run(&fed)?.contains("chmod 600"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    // No roster.
    let roster = dir.join("roster.cbor");
    let saved = std::fs::read(&roster)?;
    std::fs::remove_file(&roster)?;
    assert!(run(&fed)?.contains("deltafed roster install"));
    // A corrupt roster.
    std::fs::write(&roster, b"not a roster")?;
    assert!(run(&fed)?.contains("not a readable roster"));
    // A roster that does not list this member (another federation's).
    let other = Federation::init(&["anhui", "jiangsu"])?;
    std::fs::copy(other.roster_file(), &roster)?;
    assert!(run(&fed)?.contains("not in the roster"));
    std::fs::write(&roster, &saved)?;
    // A data dir already in use.
    fed.start("shanghai")?;
    let err = run(&fed)?;
    assert!(err.contains("in use by another deltafed node"), "{err}");
    assert!(fed.stop("shanghai")?.success());
    Ok(())
}

/// Configuration precedence, built-in defaults < `deltafed.toml` < `DELTAFED_*` environment,
/// seen in what a running node does: where it listens (`status --json`) and how it logs. And the
/// admin socket of a running node is private to its user (mode 0600).
#[test]
fn config_is_defaults_then_file_then_environment_and_the_admin_socket_is_private() -> Result<()> {
    use std::os::unix::fs::FileTypeExt;

    let mut fed = Federation::init(&["shanghai", "jiangsu"])?;
    let addrs = |port: u16| vec![format!("/ip4/127.0.0.1/tcp/{port}"), format!("/ip4/127.0.0.1/udp/{port}/quic-v1")];
    let listening = |f: &Federation| -> Result<Vec<String>> {
        let mut l: Vec<String> = serde_json::from_value(f.json("shanghai", &["status"])?["listen"].clone())?;
        l.sort();
        Ok(l)
    };
    // Runs shanghai once with `env`; returns where it listened and the log lines it wrote.
    let run_once = |f: &mut Federation, env: &[(&str, &str)]| -> Result<(Vec<String>, Vec<String>)> {
        let from = f.log("shanghai").len();
        f.start_with_env("shanghai", env)?;
        let listen = listening(f)?;
        assert!(f.stop("shanghai")?.success(), "shanghai stops cleanly on SIGTERM");
        let lines: Vec<String> = f.log("shanghai")[from..].lines().map(String::from).collect();
        assert!(!lines.is_empty(), "shanghai logged nothing");
        Ok((listen, lines))
    };
    let json_lines =
        |lines: &[String]| lines.iter().filter(|l| serde_json::from_str::<serde_json::Map<_, _>>(l).is_ok()).count();
    let file_listen = addrs(fed.base_port());

    // The file gives listen addresses (init wrote them) and, once removed, no log_format: the
    // file's addresses, the default text logs.
    fed.unconfigure("shanghai", "log_format")?;
    let (listen, lines) = run_once(&mut fed, &[])?;
    assert_eq!(listen, file_listen);
    assert_eq!(json_lines(&lines), 0, "text logs by default: {lines:?}");

    // The file says json: the file wins over the default.
    fed.configure("shanghai", "log_format = \"json\"")?;
    let (listen, lines) = run_once(&mut fed, &[])?;
    assert_eq!(listen, file_listen);
    assert_eq!(json_lines(&lines), lines.len(), "JSON logs as the file says: {lines:?}");

    // The environment wins over the file, for both settings.
    let env_listen = addrs(free_base_port(1)?);
    let (listen, lines) =
        run_once(&mut fed, &[("DELTAFED_LISTEN", &env_listen.join(",")), ("DELTAFED_LOG_FORMAT", "text")])?;
    assert_eq!(listen, env_listen);
    assert_eq!(json_lines(&lines), 0, "text logs as the environment says: {lines:?}");

    // A value the environment gets wrong is refused, naming the variable.
    let out = std::process::Command::new(deltafed_testnet::binary())
        .args(["run", "--data-dir", path_str(&fed.data_dir("shanghai"))?])
        .env("DELTAFED_LOG_FORMAT", "yaml")
        .output()?;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "error: environment variable DELTAFED_LOG_FORMAT is invalid: \"yaml\" is not text or json"
    );

    // The gateway's address too: the file's (a free loopback port), or the environment's.
    let gw_port = free_base_port(1)?;
    fed.start_with_env("shanghai", &[("DELTAFED_GATEWAY_LISTEN", &format!("127.0.0.1:{gw_port}"))])?;
    assert_eq!(fed.gateway_url("shanghai")?, format!("http://127.0.0.1:{gw_port}"));
    assert!(fed.stop("shanghai")?.success(), "shanghai stops cleanly on SIGTERM");
    let out = std::process::Command::new(deltafed_testnet::binary())
        .args(["run", "--data-dir", path_str(&fed.data_dir("shanghai"))?])
        .env("DELTAFED_GATEWAY_LISTEN", "localhost")
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DELTAFED_GATEWAY_LISTEN") && err.contains("127.0.0.1:8480"), "{err}");

    // The admin socket of a running node: a socket, mode 0600.
    fed.start("shanghai")?;
    let sock = fed.data_dir("shanghai").join("admin.sock");
    let meta = std::fs::symlink_metadata(&sock)?;
    assert!(meta.file_type().is_socket(), "{} is not a socket", sock.display());
    assert_eq!(format!("{:o}", meta.permissions().mode() & 0o7777), "600", "mode of {}", sock.display());
    assert!(fed.stop("shanghai")?.success(), "shanghai stops cleanly on SIGTERM");
    Ok(())
}

/// Each transport on its own: a roster that lists only QUIC (or only TCP) addresses still
/// connects the members, so neither transport is dead weight.
#[test]
fn members_connect_over_quic_alone_and_over_tcp_alone() -> Result<()> {
    for transport in ["quic", "tcp"] {
        let fed = Federation::init(&["shanghai", "anhui"])?;
        let base = fed.base_port();
        let mut specs = Vec::new();
        for (i, m) in ["shanghai", "anhui"].iter().enumerate() {
            let pk = deltafed_node::keyfile::read(&fed.data_dir(m).join("node.key"))?.public();
            let port = base + u16::try_from(i)?;
            let addr = if transport == "quic" {
                format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
            } else {
                format!("/ip4/127.0.0.1/tcp/{port}")
            };
            specs.push(format!("{m}={pk}@{addr}"));
        }
        let roster = fed.root().join("only.cbor");
        let mut args = vec!["roster", "new", "--federation", "solo", "--threshold", "2", "--out", path_str(&roster)?];
        for s in &specs {
            args.extend(["--member", s.as_str()]);
        }
        assert!(fed.run(&args)?.status.success());
        for m in ["shanghai", "anhui"] {
            fed.json(m, &["roster", "sign", path_str(&roster)?])?;
        }
        let mut fed = fed;
        for m in ["shanghai", "anhui"] {
            // Replace the testnet roster (a different federation) with the single-transport one.
            std::fs::copy(&roster, fed.data_dir(m).join("roster.cbor"))?;
            fed.start(m)?;
        }
        fed.wait_mesh(&["shanghai", "anhui"], CONNECT)?;
        let peers = fed.json("anhui", &["peers"])?;
        assert!(peers[0]["addrs"][0].as_str().is_some_and(|a| a.contains(if transport == "quic" {
            "quic-v1"
        } else {
            "/tcp/"
        })));
    }
    Ok(())
}
