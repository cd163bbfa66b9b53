//! Transfers between real nodes: resume after the provider is killed (without reading the
//! verified prefix again), a provider lying about its chunks, a full disk, revocation in flight,
//! a corrupted chunk; the data path taken by default, its fallback, and whom it answers.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use deltafed_protocol::exchange::{FetchRequest, Ticket, chunk_entry, table_root};
use deltafed_protocol::wire;
use deltafed_protocol::{ExchangeId, Hash, OBJECT_VERSION, Signed, Timestamp};
use deltafed_testnet::peer::{Seen, TestPeer, member_addr};
use deltafed_testnet::{Federation, path_str};
use serde_json::Value;

mod common;
use common::*;

fn slow_provider(fed: &mut Federation, members: &[&str], mib: usize) -> Result<(String, Vec<u8>)> {
    fed.configure("zhejiang", "serve_rate_limit = 4194304")?;
    fed.start_all()?;
    fed.wait_mesh(members, CONNECT)?;
    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let path = file(fed, "big.bin", &data)?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "big", "--title", "Big"])?;
    wait_catalog(fed, "shanghai", "zhejiang/big@1")?;
    let g = fed.json("zhejiang", &["grant", "big", "--to", "shanghai", "--purpose", "bulk transfer"])?;
    Ok((g["grant_id"].as_str().context("grant_id")?.to_string(), data))
}

fn partial_len(fed: &Federation, name: &str) -> u64 {
    std::fs::metadata(fed.root().join(format!(".{name}.deltafed-partial"))).map(|m| m.len()).unwrap_or(0)
}

fn wait_child(child: std::process::Child, limit: Duration) -> Result<std::process::Output> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    Ok(rx.recv_timeout(limit).context("the fetch did not finish in time")??)
}

#[test]
fn fetch_resumes_after_the_provider_is_killed_mid_transfer() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    let (_, data) = slow_provider(&mut fed, &["shanghai", "zhejiang"], 24)?;
    let target = out(&fed, "big.out")?;
    let child = fed.spawn_cli("shanghai", &["fetch", "zhejiang/big", "--out", &target, "--json"])?;
    fed.wait_for("part of the data to arrive", Duration::from_secs(30), |f| Ok(partial_len(f, "big.out") >= 2 << 20))?;
    fed.kill("zhejiang")?;
    assert!(!Path::new(&target).exists(), "nothing is written before the whole is verified");
    fed.start("zhejiang")?;
    let o = wait_child(child, Duration::from_secs(120))?;
    assert!(o.status.success(), "the fetch resumed and finished: {}", String::from_utf8_lossy(&o.stderr));
    let res: Value = serde_json::from_slice(&o.stdout)?;
    assert!(res["resumed_from"].as_u64().is_some_and(|r| r >= 2 << 20), "{res}");
    assert!(std::fs::read(&target)? == data, "the resumed file is byte-identical");
    assert_eq!(partial_len(&fed, "big.out"), 0, "no partial file left");
    Ok(())
}

/// The length the requester's saved state vouches for (its only unfinished fetch).
fn vouched(fed: &Federation, member: &str) -> Result<u64> {
    let dir = fed.data_dir(member).join("partial");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
    let mut verified = 0;
    for e in entries {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let st: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
            verified = verified.max(st["verified"].as_u64().unwrap_or(0));
        }
    }
    Ok(verified)
}

/// A resume checks new chunks against the signed table and does not read back what it already
/// verified: a byte changed on the requester's own disk inside the vouched-for prefix, while the
/// provider is down, is still there in the output. (Hashing the prefix again, as a resume once
/// did, would have refused the whole file.)
#[test]
fn a_resume_does_not_read_the_verified_prefix_again() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    let (_, data) = slow_provider(&mut fed, &["shanghai", "zhejiang"], 16)?;
    let target = out(&fed, "big.out")?;
    let child = fed.spawn_cli("shanghai", &["fetch", "zhejiang/big", "--out", &target, "--json"])?;
    fed.wait_for("part of the data to arrive", Duration::from_secs(30), |f| Ok(partial_len(f, "big.out") >= 2 << 20))?;
    fed.kill("zhejiang")?;
    // When it notices the break (over QUIC, when the connection times out), the requester syncs
    // and vouches for what it wrote, then waits for the provider.
    fed.wait_for("the requester to vouch for a verified prefix", Duration::from_secs(90), |f| {
        Ok(vouched(f, "shanghai")? >= 1 << 20)
    })?;
    let at = 1000;
    let partial = fed.root().join(".big.out.deltafed-partial");
    let mut f = std::fs::OpenOptions::new().write(true).open(&partial)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(at as u64))?;
    f.write_all(&[data[at] ^ 0xff])?;
    drop(f);
    fed.start("zhejiang")?;
    let o = wait_child(child, Duration::from_secs(120))?;
    assert!(o.status.success(), "the fetch resumed and finished: {}", String::from_utf8_lossy(&o.stderr));
    let res: Value = serde_json::from_slice(&o.stdout)?;
    assert!(res["resumed_from"].as_u64().is_some_and(|r| r >= 1 << 20), "{res}");
    let got = std::fs::read(&target)?;
    assert_eq!(got.len(), data.len());
    assert_eq!(got[at], data[at] ^ 0xff, "the prefix was not read again");
    assert!(got[..at] == data[..at] && got[at + 1..] == data[at + 1..], "everything else is the provider's data");
    Ok(())
}

/// A provider that lies: a raw peer holding zhejiang's key (its node stopped) signs tickets and
/// answers chunks as the test says. A chunk altered, or longer than the ticket gives it, is
/// refused at that chunk; a table that does not merge into the signed hash, a ticket with a
/// projection the grant does not impose, and a ticket for other (larger) content than the
/// manifest's are refused before any chunk is asked. Nothing reaches the output in any case.
#[test]
fn a_provider_sending_a_chunk_not_in_its_table_or_a_lying_ticket_is_refused() -> Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
    /// What the raw provider lies about.
    const BAD_CHUNK: u8 = 0;
    const BAD_TABLE: u8 = 1;
    const FIELDS: u8 = 2;
    const SIZE: u8 = 3;
    const LONG_CHUNK: u8 = 4;
    let mut fed = started(&["shanghai", "zhejiang"])?;
    let data: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 239) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D", "--sharing", "unconditional"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    fed.stop("zhejiang")?;
    let key = deltafed_node::keyfile::read(&fed.data_dir("zhejiang").join("node.key"))?;
    let chunk = 1usize << 20;
    let table_of = |data: &[u8]| -> Result<Vec<Hash>> {
        let count = data.len().div_ceil(chunk) as u64;
        data.chunks(chunk)
            .enumerate()
            .map(|(i, c)| chunk_entry(c, i as u64, count, chunk as u32).context("a chunk of the tree"))
            .collect()
    };
    let table = table_of(&data)?;
    assert_eq!(table_root(&table), Hash::of(&data), "the honest table merges into the data's hash");
    // Other content, one chunk longer, with a table that is honest about it.
    let larger: Vec<u8> = data.iter().copied().chain(std::iter::repeat_n(0u8, chunk)).collect();
    let larger_table = table_of(&larger)?;
    let lie = Arc::new(AtomicU8::new(BAD_CHUNK));
    let chunks_asked = Arc::new(AtomicUsize::new(0));
    let (lying, asked, k) = (lie.clone(), chunks_asked.clone(), key.clone());
    let answer = move |bytes: &[u8]| -> Option<Vec<u8>> {
        let lie = lying.load(Ordering::SeqCst);
        let response = match wire::Request::decode(bytes).ok()? {
            wire::Request::Fetch(req) => {
                let req = Signed::<FetchRequest>::decode(&req).ok()?;
                let (mut sent, content) =
                    if lie == SIZE { (larger_table.clone(), &larger) } else { (table.clone(), &data) };
                if lie == BAD_TABLE {
                    sent[2] = Hash::of(b"some other chunk");
                }
                let r = req.body();
                let ticket = Ticket {
                    v: OBJECT_VERSION,
                    exchange: ExchangeId([7; 16]),
                    request: req.hash(),
                    provider: "zhejiang".parse().ok()?,
                    requester: r.requester.clone(),
                    dataset: r.dataset.clone(),
                    version: 1,
                    fields: (lie == FIELDS).then(|| vec!["name".to_string()]),
                    content_hash: Hash::of(content),
                    size: content.len() as u64,
                    offset: r.offset,
                    chunk_size: chunk as u32,
                    chunks: Ticket::table_hash(&sent),
                    time: Timestamp::from_system(std::time::SystemTime::now()),
                };
                wire::Response::Ticket {
                    ticket: Signed::sign(ticket, &k).ok()?.into_bytes(),
                    chunk_hashes: sent.iter().flat_map(|h| h.0).collect(),
                }
            }
            wire::Request::Chunk { index, .. } => {
                asked.fetch_add(1, Ordering::SeqCst);
                let start = usize::try_from(index).ok()? * chunk;
                let mut bytes = data.get(start..(start + chunk).min(data.len()))?.to_vec();
                if index == 1 && lie == BAD_CHUNK {
                    bytes[7] ^= 0x01;
                }
                if index == 1 && lie == LONG_CHUNK {
                    bytes.push(0);
                }
                wire::Response::Chunk(bytes)
            }
            _ => wire::Response::Refused("not served by this test peer".into()),
        };
        response.encode().ok()
    };
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let liar = TestPeer::spawn_answering(&key, "yrd-testnet", Arc::new(answer))?;
    let (sh, addr) = member_addr(&fed.data_dir("shanghai"), fed.base_port())?;
    rt.block_on(liar.dial(addr))?;
    rt.block_on(liar.wait_for("shanghai to subscribe", CONNECT, |s| matches!(s, Seen::Subscribed(p) if *p == sh)))?;

    let target = out(&fed, "d.out")?;
    for (mode, what) in [(BAD_CHUNK, "an altered chunk"), (LONG_CHUNK, "a chunk longer than the ticket gives it")] {
        lie.store(mode, Ordering::SeqCst);
        chunks_asked.store(0, Ordering::SeqCst);
        let err = refused(&fed, "shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
        assert!(
            err.contains("chunk 1") && err.contains("does not match") && err.contains("nothing was written"),
            "{what}: {err}"
        );
        assert!(chunks_asked.load(Ordering::SeqCst) >= 2, "{what}: chunks were asked and chunk 1 refused");
        assert!(!Path::new(&target).exists(), "{what}");
        assert_eq!(partial_len(&fed, "d.out"), 0, "{what}: the partial data of a lying provider is discarded");
    }
    for (mode, what) in [
        (BAD_TABLE, "a table that is not the signed hash's"),
        (FIELDS, "a projection the grant does not impose"),
        (SIZE, "content larger than the manifest's"),
    ] {
        lie.store(mode, Ordering::SeqCst);
        chunks_asked.store(0, Ordering::SeqCst);
        let err = refused(&fed, "shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
        assert!(err.contains("does not match the request or the manifest"), "{what}: {err}");
        assert_eq!(chunks_asked.load(Ordering::SeqCst), 0, "{what} is refused before any chunk is asked");
        assert!(!Path::new(&target).exists(), "{what}");
    }
    Ok(())
}

/// A small tmpfs mounted for one test, unmounted when it ends however it ends.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Needs the right to mount (root): the only way to make a real filesystem run out of space.
    fn mount(dir: &Path, size: &str) -> Result<SmallDisk> {
        std::fs::create_dir_all(dir)?;
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs", path_str(dir)?])
            .output()?;
        anyhow::ensure!(
            o.status.success(),
            "this test mounts a small tmpfs and needs root for it: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(SmallDisk(dir.to_path_buf()))
    }

    fn grow(&self, size: &str) -> Result<()> {
        let o = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), path_str(&self.0)?])
            .output()?;
        anyhow::ensure!(o.status.success(), "remount: {}", String::from_utf8_lossy(&o.stderr));
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A fetch onto a disk that fills up stops with an error that says so, keeps the chunks it
/// verified and made durable, and resumes from them once there is space.
#[test]
fn a_fetch_that_fills_the_disk_keeps_its_prefix_and_resumes_when_space_is_free() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    let (_, data) = slow_provider(&mut fed, &["shanghai", "zhejiang"], 12)?;
    let disk = SmallDisk::mount(&fed.root().join("small"), "5m")?;
    let target = path_str(&disk.0.join("big.out"))?.to_string();
    let partial = disk.0.join(".big.out.deltafed-partial");
    let o = fed.cli("shanghai", &["fetch", "zhejiang/big", "--out", &target])?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no space left") && err.contains("resume"), "{err}");
    let kept = vouched(&fed, "shanghai")?;
    assert!(kept >= 1 << 20 && kept % (1 << 20) == 0 && kept < data.len() as u64, "kept {kept}");
    let on_disk = std::fs::read(&partial)?;
    assert!(on_disk.len() as u64 >= kept && on_disk[..kept as usize] == data[..kept as usize]);
    assert!(!Path::new(&target).exists());

    disk.grow("64m")?;
    let res = fed.json("shanghai", &["fetch", "zhejiang/big", "--out", &target])?;
    assert_eq!(res["resumed_from"].as_u64(), Some(kept), "{res}");
    assert!(std::fs::read(&target)? == data, "the resumed file is byte-identical");
    assert!(!partial.exists());
    Ok(())
}

#[test]
fn revocation_stops_a_fetch_in_flight() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    let (gid, _) = slow_provider(&mut fed, &["shanghai", "zhejiang"], 32)?;
    let target = out(&fed, "big.out")?;
    let child = fed.spawn_cli("shanghai", &["fetch", "zhejiang/big", "--out", &target])?;
    fed.wait_for("part of the data to arrive", Duration::from_secs(30), |f| Ok(partial_len(f, "big.out") >= 1 << 20))?;
    fed.json("zhejiang", &["revoke", &gid, "--reason", "emergency stop"])?;
    let o = wait_child(child, Duration::from_secs(60))?;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("revoked") && err.contains("emergency stop"),
        "status {:?} stderr {err} stdout {}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!Path::new(&target).exists());
    assert_eq!(partial_len(&fed, "big.out"), 0, "the unauthorised partial data is discarded");
    Ok(())
}

#[test]
fn a_corrupted_chunk_is_detected_and_nothing_is_written() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    let p = fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    fed.json("zhejiang", &["grant", "d", "--to", "shanghai", "--purpose", "p"])?;
    // The provider's stored copy rots after publishing: one bit in the second chunk.
    let blob = fed.data_dir("zhejiang").join("blobs").join(p["content_hash"].as_str().context("hash")?);
    let mut perms = std::fs::metadata(&blob)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(&blob)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((1 << 20) + 12345))?;
    f.write_all(&[data[(1 << 20) + 12345] ^ 0x01])?;
    drop(f);
    let target = out(&fed, "d.out")?;
    let err = refused(&fed, "shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
    assert!(err.contains("chunk 1") && err.contains("does not match") && err.contains("nothing was written"), "{err}");
    assert!(!Path::new(&target).exists());
    assert_eq!(partial_len(&fed, "d.out"), 0);
    Ok(())
}

/// By default a fetch's chunks come over the data path: one mutual-TLS stream on the provider's
/// TCP port, the provider pushing them.
#[test]
fn a_fetch_takes_the_data_path_by_default() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    let data: Vec<u8> = (0..(5u32 << 20) + 77).map(|i| (i % 233) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D", "--sharing", "unconditional"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    let target = out(&fed, "d.out")?;
    let res = fed.json("shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
    assert_eq!(res["transport"], "direct", "{res}");
    assert!(std::fs::read(&target)? == data);
    Ok(())
}

/// A provider that does not take the data path (here `direct_data = false`, as an older
/// release) still serves: the requester finds no data path and asks the chunks over libp2p.
#[test]
fn a_fetch_falls_back_to_libp2p_when_the_provider_has_no_data_path() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    fed.configure("zhejiang", "direct_data = false")?;
    fed.start_all()?;
    fed.wait_mesh(&["shanghai", "zhejiang"], CONNECT)?;
    let data: Vec<u8> = (0..(3u32 << 20) + 9).map(|i| (i % 241) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    fed.json("zhejiang", &["grant", "d", "--to", "shanghai", "--purpose", "p"])?;
    let target = out(&fed, "d.out")?;
    let res = fed.json("shanghai", &["fetch", "zhejiang/d", "--out", &target])?;
    assert_eq!(res["transport"], "libp2p", "{res}");
    assert!(std::fs::read(&target)? == data);
    Ok(())
}

/// The data path answers only members, and only for a request that opened an exchange with
/// them: a TLS peer the roster does not list is closed on without a frame; a member's request
/// that opened nothing, or one signed by another member, is refused. Driven with the node's own
/// client against a running provider.
#[test]
fn the_data_path_serves_only_the_member_whose_request_opened_the_exchange() -> Result<()> {
    use deltafed_node::datapath;
    use deltafed_protocol::Nonce;
    let mut fed = started(&["shanghai", "zhejiang", "anhui"])?;
    let path = file(&fed, "d.bin", b"secret rows\n")?;
    fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D", "--sharing", "unconditional"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    let (zj, zj_addr) = member_addr(&fed.data_dir("zhejiang"), fed.base_port() + 1)?;
    let rt = tokio::runtime::Runtime::new()?;
    let key_of = |m: &str| deltafed_node::keyfile::read(&fed.data_dir(m).join("node.key"));
    let request = |signer: &str, requester: &str| -> Result<Vec<u8>> {
        let req = FetchRequest {
            v: OBJECT_VERSION,
            requester: requester.parse()?,
            provider: "zhejiang".parse()?,
            dataset: "d".parse()?,
            version: None,
            grant: None,
            nonce: Nonce([9; 16]),
            time: Timestamp::from_system(std::time::SystemTime::now()),
            offset: 0,
        };
        Ok(Signed::sign(req, &key_of(signer)?)?.into_bytes())
    };
    // What the provider sends back to `key`'s holder for `frame`: `None` when it closes on it
    // without a frame, else the tag and the text of the first frame.
    let answer = |key: &deltafed_protocol::SecretKey, frame: Vec<u8>| -> Result<Option<(u8, String)>> {
        rt.block_on(async {
            use tokio::io::AsyncReadExt;
            let configs = datapath::tls::Configs::new(&deltafed_node::identity::keypair(key))?;
            let mut s =
                datapath::connect(&configs, zj, std::slice::from_ref(&zj_addr)).await.map_err(anyhow::Error::msg)?;
            // A provider that closes at once may reset the connection under the write.
            if datapath::write_request(&mut s, &frame).await.is_err() {
                return Ok(None);
            }
            let read = tokio::time::timeout(Duration::from_secs(30), datapath::read_header(&mut s)).await?;
            let Ok((tag, len)) = read else { return Ok(None) };
            let mut body = vec![0u8; len.min(4096) as usize];
            s.read_exact(&mut body).await?;
            Ok(Some((tag, String::from_utf8_lossy(&body).into_owned())))
        })
    };
    let stranger = deltafed_protocol::SecretKey::from_seed([0x5a; 32]);
    let r = answer(&stranger, request("shanghai", "shanghai")?)?;
    assert_eq!(r, None, "a peer outside the roster gets nothing, not even a refusal");
    let r = answer(&key_of("shanghai")?, request("shanghai", "shanghai")?)?;
    let (tag, reason) = r.context("a member is told why")?;
    assert!(tag == datapath::TAG_REFUSED && reason.contains("no exchange"), "{tag} {reason}");
    let r = answer(&key_of("shanghai")?, request("anhui", "anhui")?)?;
    let (tag, reason) = r.context("a member is told why")?;
    assert!(tag == datapath::TAG_REFUSED && reason.contains("signed by anhui"), "{tag} {reason}");
    let r = answer(&key_of("shanghai")?, b"not a request".to_vec())?;
    let (tag, reason) = r.context("a member is told why")?;
    assert!(tag == datapath::TAG_REFUSED && reason.contains("bad request"), "{tag} {reason}");
    Ok(())
}
