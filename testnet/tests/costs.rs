//! What one member can cost a provider, tested through a raw peer (the `rogue` member, see
//! `common::rogue`): disk, request handlers, its rate, sockets, shutdown, a catalog broken for
//! everyone, deliveries lost. None of it may grow without bound or lock another member out.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::rogue::*;
use common::{CONNECT, SOON, file};
use deltafed_protocol::manifest::Manifest;
use deltafed_protocol::wire::{self, Delivery, Gossip};
use deltafed_protocol::{Hash, OBJECT_VERSION, Signed, Timestamp};
use deltafed_testnet::peer::{Seen, TestPeer, Transport, member_addr_over};
use deltafed_testnet::{Federation, path_str};

/// A signed time past what RFC 3339 can show once made `catalog` panic on every node; such an
/// object is now refused when it is decoded.
#[test]
fn a_far_future_time_is_refused_and_breaks_nothing() -> Result<()> {
    let mut fed = federation()?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let manifest = |dataset: &str, created: Timestamp| -> Result<Vec<u8>> {
        let m = Manifest {
            v: OBJECT_VERSION,
            publisher: "rogue".parse()?,
            dataset: dataset.parse()?,
            version: 1,
            title: "t".into(),
            description: String::new(),
            format: deltafed_protocol::manifest::Format::Raw,
            schema: vec![],
            key_field: None,
            classification: deltafed_protocol::manifest::Classification::General,
            sharing: deltafed_protocol::manifest::Sharing::Conditional,
            size: 1,
            records: 0,
            content_hash: Hash([1; 32]),
            created,
            live: false,
        };
        Ok(Gossip::Manifest(Signed::sign(m, &rogue.key)?.into_bytes()).encode()?)
    };
    rogue.rt.block_on(rogue.peer.publish(manifest("future", Timestamp(Timestamp::MAX.0 + 1))?))?;
    // Gossip from one peer arrives in order: once the valid one is in, the other was handled.
    rogue.rt.block_on(rogue.peer.publish(manifest("present", now())?))?;
    fed.wait_for("rogue/present@1 at zhejiang", SOON, |f| {
        Ok(f.catalog("zhejiang")?.contains(&"rogue/present@1".into()))
    })?;
    let catalog = fed.catalog("zhejiang")?;
    assert!(!catalog.contains(&"rogue/future@1".to_string()), "{catalog:?}");
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "x", "--title", "X"])?;
    let out = fed.cli("zhejiang", &["grant", "x", "--to", "anhui", "--purpose", "p", "--expires", "3000000d"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("9999-12-31"), "{err}");
    assert!(fed.cli("zhejiang", &["grants"])?.status.success(), "grants still lists");
    Ok(())
}

/// A refused request is logged by its hash and size: the log is kept for years and must not
/// store what a member sends it.
#[test]
fn refused_requests_are_logged_by_hash_not_by_their_bytes() -> Result<()> {
    let fed = federation()?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let junk = vec![0x5a; 60 * 1024];
    let r = rogue.ask(&wire::Request::Fetch(junk.clone()))?;
    assert!(!refusal(&r).is_empty(), "{r:?}");
    let out = fed.root().join("export.jsonl");
    fed.json("zhejiang", &["provenance", "export", "--out", path_str(&out)?])?;
    let text = std::fs::read_to_string(&out)?;
    let refused: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "exchange-refused")
        .collect();
    assert_eq!(refused.len(), 1, "{text}");
    assert_eq!(refused[0]["objects"].as_array().map(Vec::len), Some(0), "no bytes kept: {}", refused[0]);
    let note = refused[0]["note"].as_str().unwrap_or_default();
    assert!(note.contains(&Hash::of(&junk).to_string()) && note.contains("61440 bytes"), "{note}");
    assert!(text.len() < 16 * 1024, "the export holds no 60 KiB request ({} bytes)", text.len());
    Ok(())
}

/// A member cannot grow our database without bound: undecided access requests from one member
/// are capped (config `member_pending_requests`).
#[test]
fn access_requests_from_one_member_are_capped() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue"])?;
    fed.configure("zhejiang", "member_pending_requests = 2")?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "lic", "--title", "L"])?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let ask = |i: u8| -> Result<wire::Response> { rogue.ask(&rogue.access_request(i)?) };
    assert!(matches!(ask(1)?, wire::Response::Ack));
    assert!(matches!(ask(2)?, wire::Response::Ack));
    let r = ask(3)?;
    assert!(refusal(&r).contains("undecided access requests"), "{r:?}");
    let requests = fed.json("zhejiang", &["requests"])?;
    assert_eq!(requests.as_array().map(Vec::len), Some(2), "{requests}");
    Ok(())
}

/// A member over its rate waits its turn (config `member_delivery_rate`): a burst of its
/// deliveries is answered no faster than the rate allows, none refused or lost, and counted as
/// paced; another member's delivery is answered while that queue still drains.
#[test]
fn a_member_over_its_rate_waits_its_turn_and_others_do_not() -> Result<()> {
    use std::sync::atomic::AtomicUsize;
    const BURST: usize = 10;
    const RATE: u32 = 2;
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue"])?;
    fed.configure("zhejiang", &format!("member_delivery_rate = {RATE}"))?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "lic", "--title", "L"])?;
    fed.wait_for("zhejiang/lic in anhui's catalog", SOON, |f| {
        Ok(f.catalog("anhui")?.contains(&"zhejiang/lic@1".to_string()))
    })?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let requests = (0..BURST).map(|i| Ok(rogue.access_request(i as u8 + 1)?.encode()?)).collect::<Result<Vec<_>>>()?;
    let answered = AtomicUsize::new(0);
    let (took, answers, anhui_saw) = std::thread::scope(|s| -> Result<_> {
        let flood = s.spawn(|| {
            let started = std::time::Instant::now();
            let answers = rogue.rt.block_on(futures::future::join_all(requests.into_iter().map(|r| async {
                let a = rogue.peer.call(rogue.provider, r, Duration::from_secs(60)).await;
                answered.fetch_add(1, Ordering::SeqCst);
                a
            })));
            (started.elapsed(), answers)
        });
        // Anhui asks once the flood is queued: its one delivery has a rate of its own.
        fed.wait_for("the flood to be under way", SOON, |_| Ok(answered.load(Ordering::SeqCst) >= 1))?;
        fed.json("anhui", &["request", "zhejiang/lic", "--purpose", "checks"])?;
        let anhui_saw = answered.load(Ordering::SeqCst);
        let (took, answers) = flood.join().map_err(|_| anyhow::anyhow!("the flood thread panicked"))?;
        Ok((took, answers, anhui_saw))
    })?;
    for a in answers {
        let a = wire::Response::decode(&a?)?;
        assert!(matches!(a, wire::Response::Ack), "every delivery is taken, late, never refused: {a:?}");
    }
    // One second's worth at once, then one per 1/RATE s: the limiter's floor, not a timing guess.
    let floor = Duration::from_secs_f64((BURST - RATE as usize) as f64 / f64::from(RATE));
    assert!(took >= floor.mul_f64(0.9), "{BURST} deliveries at {RATE}/s were all answered in {took:?}");
    assert!(anhui_saw < BURST, "anhui was answered only after the flood had drained ({anhui_saw} answered)");
    let listed = fed.json("zhejiang", &["requests"])?;
    assert_eq!(listed.as_array().map(Vec::len), Some(BURST + 1), "{listed}");
    let url = format!("{}/metrics", fed.metrics_url("zhejiang")?);
    let text = rogue.rt.block_on(async { reqwest::get(&url).await?.text().await })?;
    let paced = text
        .lines()
        .find(|l| l.starts_with("deltafed_paced_requests_total{") && l.contains("member=\"rogue\""))
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok());
    assert!(paced.is_some_and(|n| n >= (BURST - RATE as usize) as f64), "{paced:?} in {text}");
    Ok(())
}

/// One member cannot take every request handler (config `member_concurrency`): its requests,
/// held in the handlers by pacing, fill its own share and the rest wait behind each other, not
/// in the shared pool, so another member is answered while they still wait.
#[test]
fn a_member_cannot_take_every_request_handler() -> Result<()> {
    use std::sync::atomic::AtomicUsize;
    const CAP: u64 = 4;
    // More than the node's 64 shared handlers: a member without a share of its own takes them all.
    const FLOOD: usize = 80;
    const CHUNK: usize = 4096;
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue"])?;
    fed.configure("zhejiang", &format!("member_concurrency = {CAP}"))?;
    // Four chunks a second to one exchange: the flood drains over 20 s, one handler at a time.
    fed.configure("zhejiang", &format!("serve_rate_limit = {}", 4 * CHUNK))?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    let small = file(&fed, "s.bin", &data(CHUNK))?;
    fed.json("zhejiang", &["publish", &small, "--dataset", "small", "--title", "S", "--sharing", "unconditional"])?;
    fed.wait_for("zhejiang/small in anhui's catalog", SOON, |f| {
        Ok(f.catalog("anhui")?.contains(&"zhejiang/small@1".to_string()))
    })?;
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let exchange = ticket(&rogue.fetch("small", None, None, 0)?)?;
    let url = format!("{}/metrics", fed.metrics_url("zhejiang")?);
    let rogue_in = |state: &str| -> Result<u64> {
        let text = rogue.rt.block_on(async { reqwest::get(&url).await?.text().await })?;
        let series = format!("member=\"rogue\",state=\"{state}\"");
        Ok(text
            .lines()
            .find(|l| l.starts_with("deltafed_inbound_in_progress{") && l.contains(&series))
            .and_then(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .unwrap_or(0))
    };
    // The rogue's connection is handled (its catch-up and checkpoint) before the flood is counted.
    fed.wait_for("the rogue's connection to be handled", SOON, |_| {
        Ok(rogue_in("handling")? + rogue_in("waiting")? == 0)
    })?;
    let chunk = wire::Request::Chunk { exchange, index: 0 }.encode()?;
    let answered = AtomicUsize::new(0);
    let (answers, waiting_after) = std::thread::scope(|s| -> Result<_> {
        let flood = s.spawn(|| {
            rogue.rt.block_on(futures::future::join_all((0..FLOOD).map(|_| async {
                let a = rogue.peer.call(rogue.provider, chunk.clone(), Duration::from_secs(120)).await;
                answered.fetch_add(1, Ordering::SeqCst);
                a
            })))
        });
        fed.wait_for("the flood to fill the rogue's share of the handlers", SOON, |_| {
            let (handling, waiting) = (rogue_in("handling")?, rogue_in("waiting")?);
            let done = answered.load(Ordering::SeqCst) as u64;
            Ok(handling == CAP && handling + waiting + done == FLOOD as u64)
        })?;
        let out = fed.root().join("small.out");
        fed.json("anhui", &["fetch", "zhejiang/small", "--out", path_str(&out)?])?;
        let waiting_after = rogue_in("waiting")?;
        let answers = flood.join().map_err(|_| anyhow::anyhow!("the flood thread panicked"))?;
        Ok((answers, waiting_after))
    })?;
    assert!(waiting_after > 0, "anhui was answered only once the rogue's flood had got handlers");
    for a in answers {
        let a = wire::Response::decode(&a?)?;
        assert!(matches!(a, wire::Response::Chunk(_)), "every chunk is served in turn, none refused: {a:?}");
    }
    Ok(())
}

/// The outbox drops a delivery only when the member refuses it: a grant the grantee leaves
/// unanswered, at the grant and again when the outbox is flushed on its next connection, stays
/// queued, and arrives on the connection after that.
#[test]
fn a_delivery_left_unanswered_stays_queued_until_it_arrives() -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::{Arc, Mutex};
    let mut fed = federation()?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "lic", "--title", "L"])?;
    let key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let (answering, attempts) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let (ans, att, rec) = (answering.clone(), attempts.clone(), received.clone());
    let answer: deltafed_testnet::peer::Answerer = Arc::new(move |bytes: &[u8]| -> Option<Vec<u8>> {
        match wire::Request::decode(bytes).ok()? {
            wire::Request::Deliver(Delivery::Grant(g)) => {
                att.fetch_add(1, Ordering::SeqCst);
                if !ans.load(Ordering::SeqCst) {
                    return None;
                }
                rec.lock().unwrap_or_else(|p| p.into_inner()).push(g);
                wire::Response::Ack.encode().ok()
            }
            wire::Request::Deliver(_) => wire::Response::Ack.encode().ok(),
            _ => None,
        }
    });
    let (zj, addr) = member_addr_over(&fed.data_dir("zhejiang"), fed.base_port(), Transport::Tcp)?;
    let connect = || -> Result<TestPeer> {
        let peer = TestPeer::spawn_answering(&key, "yrd-testnet", answer.clone())?;
        rt.block_on(peer.dial(addr.clone()))?;
        rt.block_on(peer.wait_for("zhejiang to subscribe", CONNECT, |s| matches!(s, Seen::Subscribed(p) if *p == zj)))?;
        Ok(peer)
    };
    let wait_attempts = |n: usize| -> Result<()> {
        let deadline = std::time::Instant::now() + SOON;
        while attempts.load(Ordering::SeqCst) < n {
            anyhow::ensure!(std::time::Instant::now() < deadline, "zhejiang made fewer than {n} delivery attempts");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    let disconnect = |fed: &mut Federation, peer: TestPeer| -> Result<()> {
        drop(peer);
        fed.wait_for("zhejiang to see rogue gone", CONNECT, |f| {
            Ok(!f.connected("zhejiang")?.contains(&"rogue".to_string()))
        })
    };

    let first = connect()?;
    let g = fed.json("zhejiang", &["grant", "lic", "--to", "rogue", "--purpose", "audit"])?;
    assert_eq!(g["delivered"], false, "the grantee did not answer: {g}");
    let gid = g["grant_id"].as_str().context("grant_id")?.to_string();
    disconnect(&mut fed, first)?;
    // The outbox is flushed on the next connection; unanswered again, the grant must stay.
    let second = connect()?;
    wait_attempts(2)?;
    disconnect(&mut fed, second)?;
    answering.store(true, Ordering::SeqCst);
    let _third = connect()?;
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let got = received.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ids: Vec<String> = got
            .iter()
            .filter_map(|b| Signed::<deltafed_protocol::access::Grant>::from_trusted_bytes(b).ok())
            .map(|g| g.body().id.to_string())
            .collect();
        if ids.contains(&gid) {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the queued grant never arrived (got {ids:?})");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sockets from a stranger that never finish a handshake lock no member out (the review found
/// eight enough): with 80 of them open, silent or stalled inside libp2p's upgrade, a member
/// connects and is answered, and the node closes every one of them after its handshake timeout.
#[test]
fn stalled_sockets_from_a_stranger_lock_no_member_out() -> Result<()> {
    use std::io::{Read as _, Write as _};
    let fed = federation()?;
    let addr = format!("127.0.0.1:{}", fed.base_port());
    let mut stalled = Vec::new();
    for i in 0..80 {
        let mut s = std::net::TcpStream::connect(&addr).with_context(|| format!("socket {i}"))?;
        if i % 2 == 1 {
            // Past the first byte, into libp2p's upgrade, then nothing more.
            s.write_all(b"\x13/multistream/1.0.0\n")?;
        }
        stalled.push(s);
    }
    let rogue = Rogue::connect(&fed, "zhejiang", fed.base_port())?;
    let sync = wire::Request::Sync(wire::SyncRequest { roster_version: 0, after: None });
    let answer = rogue.ask(&sync)?;
    assert!(matches!(answer, wire::Response::Sync(_)), "a member is served meanwhile: {answer:?}");
    for (i, mut s) in stalled.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(40)))?;
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                // multistream-select answers its header before waiting for the protocol.
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    bail!("socket {i} was still open 40 s after its handshake stalled")
                }
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// Shutdown is bounded whatever members do: a member that holds the final checkpoint without
/// answering does not hold up the node's stop (the last checkpoint's sends are bounded as a
/// whole, at 5 s; the review found 30 s per member, past `Federation::stop`'s 15 s).
#[test]
fn a_member_holding_the_final_checkpoint_does_not_hold_up_shutdown() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    let mut fed = federation()?;
    let key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let (holding, held) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (h, n) = (holding.clone(), held.clone());
    let is_checkpoint =
        |b: &[u8]| matches!(wire::Request::decode(b), Ok(wire::Request::Deliver(Delivery::Checkpoint(_))));
    let hold: deltafed_testnet::peer::Holder = Arc::new(move |b: &[u8]| {
        let hold = h.load(Ordering::SeqCst) && is_checkpoint(b);
        if hold {
            n.fetch_add(1, Ordering::SeqCst);
        }
        hold
    });
    let answer: deltafed_testnet::peer::Answerer = Arc::new(|b: &[u8]| match wire::Request::decode(b).ok()? {
        wire::Request::Deliver(_) => wire::Response::Ack.encode().ok(),
        _ => None,
    });
    let peer = TestPeer::spawn_holding(&key, "yrd-testnet", answer, hold)?;
    let (zj, addr) = member_addr_over(&fed.data_dir("zhejiang"), fed.base_port(), Transport::Tcp)?;
    rt.block_on(peer.dial(addr))?;
    rt.block_on(peer.wait_for("zhejiang to subscribe", CONNECT, |s| matches!(s, Seen::Subscribed(p) if *p == zj)))?;
    // The log moves, so stopping signs a new checkpoint and sends it to the members.
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "lic", "--title", "L"])?;
    holding.store(true, Ordering::SeqCst);
    let status = fed.stop("zhejiang").context("zhejiang stops while rogue holds its checkpoint")?;
    assert!(status.success(), "{status}");
    assert!(held.load(Ordering::SeqCst) >= 1, "the final checkpoint was sent to rogue and held");
    Ok(())
}
