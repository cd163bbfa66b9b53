//! The benchmark suite: each target figure (docs/BENCHMARKS.md lists them) measured on real nodes
//! (release build, loopback), next to a baseline measured in the same run, printed as one table
//! and written as JSON.
//!
//! This machine is shared and noisy, so no figure is compared with a number from another run:
//! every row carries its own baseline (a bare mutual-TLS stream, the local API's own round trip,
//! raw hashing of the same log, an empty node's start-up) and the ratio between them.

mod bulk;
mod calls;
mod ceiling;
mod cpu;
mod durability;
mod footprint;
mod live;
mod load;
mod provenance;
mod queries;
mod soak;
mod spread;
mod tls;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the value is compared with, measured in the same run.
    pub baseline: Option<(String, f64)>,
    pub target: String,
    pub met: bool,
    pub note: String,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|(_, b)| if *b == 0.0 { 0.0 } else { self.value / b })
    }
}

/// Sizes for a run: the full figures, or a quick pass that keeps the code paths exercised (CI).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub bulk_bytes: u64,
    pub query_records: usize,
    pub queries: usize,
    pub in_flight: usize,
    pub big_federation: usize,
    pub log_entries: u64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            bulk_bytes: 1 << 30,
            query_records: 20_000,
            queries: 100_000,
            in_flight: 64,
            big_federation: 41,
            log_entries: 1_000_000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            bulk_bytes: 64 << 20,
            query_records: 2_000,
            queries: 4_000,
            in_flight: 64,
            big_federation: 8,
            log_entries: 100_000,
        }
    }
}

pub fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("bench-results/bench.json"));
    let only: Option<&String> = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1));
    let sizes = if quick { Sizes::quick() } else { Sizes::full() };
    eprintln!("deltafed bench ({} mode), binary {}", if quick { "quick" } else { "full" }, crate::binary().display());
    let started = Instant::now();
    let mut rows = Vec::new();
    let want = |name: &str| only.is_none_or(|o| o.split(',').any(|x| x == name));
    if want("bulk") {
        rows.extend(bulk::run(&sizes).context("bulk")?);
    }
    if want("queries") {
        rows.extend(queries::run(&sizes).context("queries")?);
    }
    if want("calls") {
        rows.extend(calls::run(&sizes).context("sharing calls")?);
    }
    if want("live") {
        rows.extend(live::run(&sizes).context("live calls")?);
    }
    if want("spread") {
        rows.extend(spread::run(&sizes).context("spread")?);
    }
    if want("provenance") {
        rows.extend(provenance::run(&sizes).context("provenance")?);
    }
    if want("durability") {
        rows.extend(durability::run(&sizes).context("durability")?);
    }
    if want("soak") {
        rows.extend(soak::run(&sizes).context("soak")?);
    }
    if want("footprint") {
        rows.extend(footprint::run(&sizes).context("footprint")?);
    }
    print_table(&rows);
    let doc = json!({
        "mode": if quick { "quick" } else { "full" },
        "machine": machine(),
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows.iter().map(|r| json!({
            "figure": r.figure, "value": r.value, "unit": r.unit,
            "baseline": r.baseline.as_ref().map(|(n, v)| json!({"what": n, "value": v})),
            "ratio": r.ratio(), "target": r.target, "met": r.met, "note": r.note,
        })).collect::<Vec<_>>(),
    });
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&doc)? + "\n")?;
    eprintln!("wrote {} ({:.0} s)", out.display(), started.elapsed().as_secs_f64());
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cores} cores, {cpu}")
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<44} {:>14} {:<8} {:>30} {:>8} {:>14} {:>4}",
        "figure", "value", "unit", "baseline", "ratio", "target", "met"
    );
    for r in rows {
        let base = r.baseline.as_ref().map(|(n, v)| format!("{v:.1} ({n})")).unwrap_or_else(|| "-".into());
        let ratio = r.ratio().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<44} {:>14.2} {:<8} {:>30} {:>8} {:>14} {:>4}",
            r.figure,
            r.value,
            r.unit,
            truncate(&base, 30),
            ratio,
            r.target,
            if r.met { "yes" } else { "NO" }
        );
        if !r.note.is_empty() {
            println!("    {}", r.note);
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { s.chars().take(n - 1).collect::<String>() + "…" }
}

/// Deterministic pseudo-random bytes (xorshift), so no entropy pool is drained for test data.
pub(crate) fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// A provider and a requester, connected; the provider publishes `s.query_records` records of
/// 1 KiB (a key, a holder and a padding field) keyed by `id`, and grants the requester `fields`.
pub(crate) fn keyed_records(s: &Sizes, fields: &str) -> Result<crate::Federation> {
    let mut fed = crate::Federation::init(&["provider", "requester"])?;
    fed.start_all()?;
    fed.wait_mesh(&["provider", "requester"], std::time::Duration::from_secs(30))?;
    let mut csv = String::from("id,holder,payload\n");
    for i in 0..s.query_records {
        csv += &format!("K{i:08},holder {i},{}\n", "x".repeat(1000));
    }
    let src = fed.root().join("records.csv");
    std::fs::write(&src, csv)?;
    fed.json(
        "provider",
        &["publish", crate::path_str(&src)?, "--dataset", "records", "--title", "Records", "--key-field", "id"],
    )?;
    fed.wait_for("the manifest at the requester", std::time::Duration::from_secs(10), |f| {
        Ok(f.catalog("requester")?.iter().any(|e| e.starts_with("provider/records@")))
    })?;
    fed.json("provider", &["grant", "records", "--to", "requester", "--purpose", "benchmark", "--fields", fields])?;
    Ok(fed)
}

/// The `p`-th percentile of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
