//! Bulk fetch: one large raw dataset fetched between two real nodes on loopback, verified,
//! written to disk, provenance recorded; against a bare mutual-TLS stream of the same size.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{Row, Sizes, fill, tls};
use crate::{Federation, path_str};

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let mut fed = Federation::init(&["provider", "requester"])?;
    fed.start_all()?;
    fed.wait_mesh(&["provider", "requester"], std::time::Duration::from_secs(30))?;
    let src = fed.root().join("bulk.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut buf = vec![0u8; 1 << 20];
        let mut seed = 0x2545_f491_4f6c_dd1d;
        let mut left = s.bulk_bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], &mut seed);
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
        f.flush()?;
    }
    fed.json("provider", &["publish", path_str(&src)?, "--dataset", "bulk", "--title", "Bulk"])?;
    fed.wait_for("the manifest at the requester", std::time::Duration::from_secs(10), |f| {
        Ok(f.catalog("requester")?.iter().any(|e| e.starts_with("provider/bulk@")))
    })?;
    fed.json("provider", &["grant", "bulk", "--to", "requester", "--purpose", "benchmark"])?;
    let out = fed.root().join("bulk.out");
    let start = Instant::now();
    fed.json("requester", &["fetch", "provider/bulk", "--out", path_str(&out)?])?;
    let secs = start.elapsed().as_secs_f64();
    let got = std::fs::metadata(&out)?.len();
    anyhow::ensure!(got == s.bulk_bytes, "fetched {got} of {} bytes", s.bulk_bytes);
    std::fs::remove_file(&out)?;
    let node_mbs = s.bulk_bytes as f64 / secs / 1e6;
    // The same fetch into memory (tmpfs, where fsync costs nothing): the node's network and
    // verification path without the disk.
    let mem = memory_dir().map(|d| d.join(format!("deltafed-bench-{}.out", std::process::id())));
    let mem_mbs = match &mem {
        Some(p) => {
            let start = Instant::now();
            fed.json("requester", &["fetch", "provider/bulk", "--out", path_str(p)?])?;
            let secs = start.elapsed().as_secs_f64();
            std::fs::remove_file(p)?;
            Some(s.bulk_bytes as f64 / secs / 1e6)
        }
        None => None,
    };
    let base_mbs = tls::throughput(s.bulk_bytes).context("TLS baseline")?;
    // What the disk under the output can make durable: the same bytes written and fsynced.
    let disk_mbs = durable_write(&fed.root().join("disk.probe"), s.bulk_bytes).context("disk baseline")?;
    let ratio = node_mbs / base_mbs;
    // The bound: libp2p's own chunked request-response, 1 MiB answers, 8 in flight (as fetch).
    let chunks = (s.bulk_bytes >> 20) as usize;
    let (_, tcp_bps) = super::ceiling::measure("tcp", chunks, 8, 1 << 20)?;
    let (_, quic_bps) = super::ceiling::measure("quic", chunks, 8, 1 << 20)?;
    let ceiling_mbs = tcp_bps.max(quic_bps) / 1e6;
    let mut rows = vec![
        Row {
            figure: format!("bulk fetch {} MiB, verified, on disk", s.bulk_bytes >> 20),
            value: node_mbs,
            unit: "MB/s",
            baseline: Some(("bare mutual-TLS stream".into(), base_mbs)),
            target: ">= 0.6 x base".into(),
            met: ratio >= 0.6,
            note: format!(
                "bound: the disk makes {disk_mbs:.0} MB/s durable ({:.2} of the bare stream); libp2p chunk transfer alone reaches {:.0} MB/s over TCP+TLS+yamux and {:.0} MB/s over QUIC ({:.2})",
                disk_mbs / base_mbs,
                tcp_bps / 1e6,
                quic_bps / 1e6,
                ceiling_mbs / base_mbs
            ),
        },
        Row {
            figure: "bulk fetch vs the disk's durable writes".into(),
            value: node_mbs,
            unit: "MB/s",
            baseline: Some(("write + fsync of the same bytes".into(), disk_mbs)),
            target: "-".into(),
            met: true,
            note: "what the node keeps of what the disk under --out can make durable".into(),
        },
    ];
    if let Some(mem_mbs) = mem_mbs {
        rows.push(Row {
            figure: "bulk fetch into memory (tmpfs)".into(),
            value: mem_mbs,
            unit: "MB/s",
            baseline: Some(("libp2p 1 MiB req/resp, 8 in flight".into(), ceiling_mbs)),
            target: "-".into(),
            met: true,
            note: format!(
                "the same fetch with --out on tmpfs: the network and verification path alone, {:.2} of the bare stream",
                mem_mbs / base_mbs
            ),
        });
    }
    Ok(rows)
}

/// A memory-backed directory to fetch into, when the machine has one.
fn memory_dir() -> Option<std::path::PathBuf> {
    let d = std::path::Path::new("/dev/shm");
    d.is_dir().then(|| d.to_path_buf())
}

/// Writes `bytes` to `path` in 1 MiB blocks and fsyncs; returns MB/s. The file is removed.
fn durable_write(path: &std::path::Path, bytes: u64) -> Result<f64> {
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
