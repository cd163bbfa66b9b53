//! Bulk fetch: one large raw dataset fetched between two real nodes, verified, written to disk,
//! provenance recorded; against a bare AES-GCM mutual-TLS stream of the same size and against
//! what the disk makes durable, each measured in the same run, interleaved with the fetches, the
//! median of the rounds reported. Then the same over an emulated inter-province link (20 ms round
//! trip, 1 Gbit/s), and the requester's resident memory on a fetch ten times larger.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Row, Sizes, cpu, fill, tls};
use crate::link::{End, Link};
use crate::{Federation, path_str};

/// Rounds of each measurement (the median is reported).
fn rounds(s: &Sizes) -> usize {
    if s.bulk_bytes >= 1 << 30 { 3 } else { 1 }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A provider and a requester with a raw dataset of `bytes` published and granted.
fn federation(fed: &mut Federation, bytes: u64) -> Result<()> {
    fed.start_all()?;
    fed.wait_mesh(&["provider", "requester"], Duration::from_secs(30))?;
    let src = fed.root().join("bulk.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], &mut seed);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    fed.json("provider", &["publish", path_str(&src)?, "--dataset", "bulk", "--title", "Bulk"])?;
    std::fs::remove_file(&src)?;
    fed.wait_for("the manifest at the requester", Duration::from_secs(10), |f| {
        Ok(f.catalog("requester")?.iter().any(|e| e.starts_with("provider/bulk@")))
    })?;
    fed.json("provider", &["grant", "bulk", "--to", "requester", "--purpose", "benchmark"])?;
    Ok(())
}

/// One fetch into `out`: MB/s, the CPU seconds of the provider and of the requester, and the
/// requester's peak resident memory during it (bytes).
struct Fetch {
    mbs: f64,
    cpu: [f64; 2],
    peak_rss: u64,
}

fn fetch(fed: &Federation, bytes: u64, out: &std::path::Path) -> Result<Fetch> {
    let pids = [fed.pid("provider"), fed.pid("requester")];
    let pid = |i: usize| pids[i].context("node not running");
    reset_peak_rss(pid(1)?)?;
    let cpu0 = [cpu::seconds(Some(pid(0)?))?, cpu::seconds(Some(pid(1)?))?];
    let start = Instant::now();
    let res = fed.json("requester", &["fetch", "provider/bulk", "--out", path_str(out)?])?;
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = [cpu::seconds(Some(pid(0)?))?, cpu::seconds(Some(pid(1)?))?];
    let got = std::fs::metadata(out)?.len();
    anyhow::ensure!(got == bytes, "fetched {got} of {bytes} bytes");
    anyhow::ensure!(res["transport"] == "direct", "the fetch did not take the data path: {res}");
    std::fs::remove_file(out)?;
    Ok(Fetch {
        mbs: bytes as f64 / secs / 1e6,
        cpu: [cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]],
        peak_rss: peak_rss(pid(1)?)?,
    })
}

/// Resets a process's peak resident set (`VmHWM`) to its current one (Linux 4.0+).
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("cannot reset the peak resident memory")
}

/// A process's peak resident memory since the last reset, in bytes.
fn peak_rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .context("no VmHWM in /proc status")?;
    Ok(kb * 1024)
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let (mut rows, peak) = loopback(s)?;
    rows.push(match emulated_link(s) {
        Ok(r) => r,
        // Only where namespaces cannot be made (not root, no ethtool): the row says why.
        Err(e) => Row {
            figure: "bulk fetch over an emulated 20 ms, 1 Gbit/s link".into(),
            value: 0.0,
            unit: "MB/s",
            baseline: None,
            target: ">= 0.8 x base".into(),
            met: false,
            note: format!("not measured: {e:#}"),
        },
    });
    rows.push(flat_memory(s, peak)?);
    Ok(rows)
}

/// The loopback rows, and the requester's peak memory on that fetch (bytes).
fn loopback(s: &Sizes) -> Result<(Vec<Row>, f64)> {
    let bytes = s.bulk_bytes;
    let mut fed = Federation::init(&["provider", "requester"])?;
    federation(&mut fed, bytes)?;
    let disk_out = fed.root().join("bulk.out");
    let mem_out = memory_dir().map(|d| d.join(format!("deltafed-bench-{}.out", std::process::id())));
    let (mut disk, mut mem, mut bare, mut durable, mut direct) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_nodes, mut cpu_bare) = (Vec::new(), Vec::new());
    let mut peaks = Vec::new();
    // Interleaved, so a noisy neighbour weighs on the figure and its baselines alike.
    for _ in 0..rounds(s) {
        let f = fetch(&fed, bytes, &disk_out)?;
        disk.push(f.mbs);
        cpu_nodes.push((f.cpu[0], f.cpu[1]));
        peaks.push(f.peak_rss as f64);
        let (mbs, cpu) = tls::throughput(bytes).context("TLS baseline")?;
        bare.push(mbs);
        cpu_bare.push(cpu);
        let probe = fed.root().join("disk.probe");
        durable.push(durable_write(&probe, bytes).context("disk baseline")?);
        if let Some(d) = durable_write_direct(&probe, bytes).context("direct disk baseline")? {
            direct.push(d);
        }
        if let Some(p) = &mem_out {
            mem.push(fetch(&fed, bytes, p)?.mbs);
        }
    }
    let (disk, bare, buffered) = (median(disk), median(bare), median(durable));
    // The disk's durable rate is the faster of its two ways to make bytes durable: the fetch
    // writes whole chunks with O_DIRECT, so a buffered write alone would flatter it.
    let direct = (!direct.is_empty()).then(|| median(direct));
    let durable = buffered.max(direct.unwrap_or(0.0));
    let direct_note = match direct {
        Some(d) => format!("{d:.0} MB/s with O_DIRECT, {buffered:.0} through the page cache"),
        None => format!("{buffered:.0} MB/s through the page cache; no O_DIRECT there"),
    };
    let bound = bare.min(durable);
    let mb = bytes as f64 / 1e6;
    let per_mb = |secs: f64| secs * 1e3 / mb;
    let provider_ms = per_mb(median(cpu_nodes.iter().map(|c| c.0).collect()));
    let requester_ms = per_mb(median(cpu_nodes.iter().map(|c| c.1).collect()));
    let bare_ms = per_mb(median(cpu_bare));
    let n = rounds(s);
    let mut rows = vec![
        Row {
            figure: format!("bulk fetch {} MiB, verified, on disk", bytes >> 20),
            value: disk,
            unit: "MB/s",
            baseline: Some(("min(bare AES-GCM TLS, durable disk)".into(), bound)),
            target: ">= 0.8 x base".into(),
            met: disk >= 0.8 * bound,
            note: format!(
                "median of {n}, interleaved: bare mutual-TLS stream {bare:.0} MB/s ({:.2}), the disk under --out makes {durable:.0} MB/s durable ({:.2}: {direct_note}); goal 0.95",
                disk / bare,
                disk / durable
            ),
        },
        Row {
            figure: "bulk fetch, CPU per MB (both nodes)".into(),
            value: provider_ms + requester_ms,
            unit: "ms/MB",
            baseline: Some(("bare TLS stream, both ends".into(), bare_ms)),
            target: "-".into(),
            met: true,
            note: format!(
                "provider {provider_ms:.2} ms/MB (read, AES-GCM, grant check per chunk), requester {requester_ms:.2} ms/MB (AES-GCM, BLAKE3 per chunk, write, fsync)"
            ),
        },
    ];
    if !mem.is_empty() {
        let mem = median(mem);
        rows.push(Row {
            figure: "bulk fetch into memory (tmpfs)".into(),
            value: mem,
            unit: "MB/s",
            baseline: Some(("bare AES-GCM mutual-TLS stream".into(), bare)),
            target: ">= 0.6 x base".into(),
            met: mem >= 0.6 * bare,
            note: format!("median of {n}: the same fetch with --out on /dev/shm, where fsync costs nothing"),
        });
    }
    Ok((rows, median(peaks)))
}

/// The same fetch between two network namespaces joined by a 20 ms, 1 Gbit/s link, against a
/// bare TLS stream over the same link.
fn emulated_link(s: &Sizes) -> Result<Row> {
    let link = Link::new(Duration::from_millis(20), 1000)?;
    let bytes = s.bulk_bytes;
    let mut fed = Federation::init_on(&["provider", "requester"], &[Link::addr(End::B), Link::addr(End::A)])?;
    fed.set_netns("provider", &link.netns(End::B));
    fed.set_netns("requester", &link.netns(End::A));
    federation(&mut fed, bytes)?;
    let rtt = link.in_netns(End::A, || tcp_rtt(Link::addr(End::B), 5))?;
    let out = fed.root().join("bulk.out");
    let (mut node, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..rounds(s) {
        node.push(fetch(&fed, bytes, &out)?.mbs);
        let listener = link.in_netns(End::B, || Ok(std::net::TcpListener::bind((Link::addr(End::B), 0))?))?;
        let addr = listener.local_addr()?;
        let connect = || link.in_netns(End::A, move || Ok(std::net::TcpStream::connect(addr)?));
        bare.push(tls::throughput_over(bytes, listener, connect).context("TLS baseline over the link")?.0);
    }
    let (node, bare) = (median(node), median(bare));
    Ok(Row {
        figure: "bulk fetch over an emulated 20 ms, 1 Gbit/s link".into(),
        value: node,
        unit: "MB/s",
        baseline: Some(("bare AES-GCM TLS, same link".into(), bare)),
        target: ">= 0.8 x base".into(),
        met: node >= 0.8 * bare,
        note: format!(
            "median of {}; {} MiB between two network namespaces, tbf at 1 Gbit/s and a relay holding each frame 10 ms each way (TCP connect measured {:.1} ms round trip); relay drops {}; goal 0.95",
            rounds(s),
            bytes >> 20,
            rtt * 1e3,
            link.dropped()
        ),
    })
}

/// The median time of `n` TCP connects to `host`'s port 9 (refused at once: one round trip).
fn tcp_rtt(host: &str, n: usize) -> Result<f64> {
    let addr: std::net::SocketAddr = format!("{host}:9").parse()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2));
        v.push(start.elapsed().as_secs_f64());
    }
    Ok(median(v))
}

/// A fetch ten times the bulk size: the requester's peak resident memory stays what it was on
/// the loopback fetch (`base`, bytes), whatever the size.
fn flat_memory(s: &Sizes, base: f64) -> Result<Row> {
    let bytes = s.bulk_bytes * 10;
    let mut fed = Federation::init(&["provider", "requester"])?;
    federation(&mut fed, bytes)?;
    let f = fetch(&fed, bytes, &fed.root().join("big.out"))?;
    let mib = |b: f64| b / f64::from(1u32 << 20);
    Ok(Row {
        figure: format!("requester peak memory, {:.0} GiB fetch", bytes as f64 / f64::from(1u32 << 30)),
        value: mib(f.peak_rss as f64),
        unit: "MiB",
        baseline: Some((format!("the same on the {} MiB fetch", s.bulk_bytes >> 20), mib(base))),
        target: "<= 1.25 x base".into(),
        met: (f.peak_rss as f64) <= 1.25 * base,
        note: format!(
            "VmHWM of the requester node, reset just before each fetch; the {} MiB fetch ran at {:.0} MB/s",
            bytes >> 20,
            f.mbs
        ),
    })
}

/// A memory-backed directory to fetch into, when the machine has one.
fn memory_dir() -> Option<std::path::PathBuf> {
    let d = std::path::Path::new("/dev/shm");
    d.is_dir().then(|| d.to_path_buf())
}

/// Writes `bytes` to `path` in 1 MiB blocks from one aligned buffer with `O_DIRECT`, then
/// fsyncs (for the size and the device's cache), as the fetch's writer does; returns MB/s, or
/// `None` where the filesystem has no direct I/O. The file is removed.
fn durable_write_direct(path: &std::path::Path, bytes: u64) -> Result<Option<f64>> {
    use deltafed_node::exchange::{ChunkBuf, DIRECT_ALIGN};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let buf = ChunkBuf::from_slice(DIRECT_ALIGN, &vec![0xa5u8; 1 << 20]);
    let start = Instant::now();
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut at = 0u64;
    while at < bytes {
        // The last block, when short, is written whole and the file cut back to size.
        f.write_all_at(&buf, at)?;
        at += buf.len() as u64;
    }
    f.set_len(bytes)?;
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(Some(bytes as f64 / secs / 1e6))
}

/// Writes `bytes` to `path` in 1 MiB blocks and fsyncs; returns MB/s. The file is removed.
pub(super) fn durable_write(path: &std::path::Path, bytes: u64) -> Result<f64> {
    let buf = vec![0xa5u8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / secs / 1e6)
}
