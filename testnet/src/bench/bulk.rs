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
    // Warm the page cache for the source the same way for both paths: the baseline reads none.
    let start = Instant::now();
    fed.json("requester", &["fetch", "provider/bulk", "--out", path_str(&out)?])?;
    let secs = start.elapsed().as_secs_f64();
    let got = std::fs::metadata(&out)?.len();
    anyhow::ensure!(got == s.bulk_bytes, "fetched {got} of {} bytes", s.bulk_bytes);
    let node_mbs = s.bulk_bytes as f64 / secs / 1e6;
    let base_mbs = tls::throughput(s.bulk_bytes).context("TLS baseline")?;
    let ratio = node_mbs / base_mbs;
    // The bound: libp2p's own chunked request-response, 1 MiB answers, 8 in flight (as fetch).
    let chunks = (s.bulk_bytes >> 20) as usize;
    let (_, tcp_bps) = super::ceiling::measure("tcp", chunks, 8, 1 << 20)?;
    let (_, quic_bps) = super::ceiling::measure("quic", chunks, 8, 1 << 20)?;
    let ceiling_mbs = tcp_bps.max(quic_bps) / 1e6;
    Ok(vec![
        Row {
            figure: format!("bulk fetch {} MiB, verified, on disk", s.bulk_bytes >> 20),
            value: node_mbs,
            unit: "MB/s",
            baseline: Some(("bare mutual-TLS stream".into(), base_mbs)),
            target: ">= 0.6 x base".into(),
            met: ratio >= 0.6,
            note: format!(
                "bound: libp2p chunk transfer alone (no verification, disk or grants) reaches {:.0} MB/s over TCP+TLS+yamux and {:.0} MB/s over QUIC, {:.2} of the bare stream",
                tcp_bps / 1e6,
                quic_bps / 1e6,
                ceiling_mbs / base_mbs
            ),
        },
        Row {
            figure: "bulk fetch vs libp2p's own ceiling".into(),
            value: node_mbs,
            unit: "MB/s",
            baseline: Some(("libp2p 1 MiB req/resp, 8 in flight".into(), ceiling_mbs)),
            target: "-".into(),
            met: true,
            note: "what the node keeps of what its transport can carry".into(),
        },
    ])
}
