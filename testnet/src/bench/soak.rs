//! The soak: sharing calls through the gateway at a fixed offered rate for ten minutes (a quick
//! run: 20 s), with each node's resident memory, database size and the calls' p99 sampled per
//! window. What it shows is the shape over time: memory that levels off under the configured
//! `[storage]` bounds instead of growing with the calls served, a database that grows by the
//! log's bytes per call and nothing else, and a latency that does not drift.
//!
//! Baselines in the same run: each node's resident memory connected and idle just before the
//! load, and the first window's p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::load::{self, Target};
use super::{Row, Sizes, percentile};

/// Offered load: about half the capacity measured in the calls row, so the figure is the
/// node's behaviour over time, not a queue at saturation.
const RATE: f64 = 5_000.0;
/// The `[storage]` defaults the nodes run with (docs/config.md): block cache + write buffers.
const ROCKSDB_BOUND_MIB: f64 = 128.0;
/// What the node may hold beyond RocksDB and its idle self under load: queues bounded by
/// configuration, batches in flight, the allocator's retained pages.
const SLACK_MIB: f64 = 64.0;

fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kib: f64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib / 1024.0)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One sample of both nodes, at the end of a window: RSS MiB and database bytes per node.
#[derive(Clone, Copy)]
struct Sample {
    rss: [f64; 2],
    db: [u64; 2],
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let quick = s.queries < 100_000;
    let (secs, window) = if quick { (20.0, 2.0) } else { (600.0, 30.0) };
    let mut fed = super::keyed_records(s, "id,holder")?;
    let t = Target::requester_app(&fed, "soak")?;
    let n = s.query_records;
    let path = move |i: usize| format!("/v1/records/provider/records/K{:08}", (i * 7919) % n);
    load::closed(&t, 1, 1, path)?;

    let members = ["requester", "provider"];
    let pids = [fed.pid(members[0]).context("requester pid")?, fed.pid(members[1]).context("provider pid")?];
    let dbs = members.map(|m| fed.data_dir(m).join("db"));
    let idle = [rss_mib(pids[0])?, rss_mib(pids[1])?];
    let db0 = [dir_bytes(&dbs[0]), dir_bytes(&dbs[1])];
    let calls0 = fed.json("provider", &["status"])?["calls"]["calls_served"].as_u64().unwrap_or(0);

    // Sampled beside the load, at the end of each window.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, dbs) = (stop.clone(), dbs.clone());
        std::thread::spawn(move || -> Result<Vec<Sample>> {
            let start = Instant::now();
            let mut out = Vec::new();
            let mut next = window;
            while !stop.load(Ordering::Relaxed) {
                let now = start.elapsed().as_secs_f64();
                if now >= next {
                    out.push(Sample {
                        rss: [rss_mib(pids[0])?, rss_mib(pids[1])?],
                        db: [dir_bytes(&dbs[0]), dir_bytes(&dbs[1])],
                    });
                    next += window;
                }
                // A sampling clock, not a wait for a condition.
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(out)
        })
    };
    load::failures();
    let run = load::open(&t, RATE, secs, 500, path);
    let failed = load::failures();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| anyhow::anyhow!("the sampler panicked"))??;
    let run = run?;
    let calls = fed.json("provider", &["status"])?["calls"]["calls_served"].as_u64().unwrap_or(0) - calls0;
    fed.stop("requester")?;
    fed.stop("provider")?;
    anyhow::ensure!(samples.len() >= 2, "only {} samples in {secs} s", samples.len());

    // p99 of each window, from each call's scheduled send time.
    let windows = (secs / window).ceil() as usize;
    let mut by_window: Vec<Vec<f64>> = vec![Vec::new(); windows];
    for &(at, lat) in &run.samples {
        by_window[((at / window) as usize).min(windows - 1)].push(lat);
    }
    let p99s: Vec<f64> = by_window
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            percentile(&v, 0.99)
        })
        .collect();
    let series =
        |f: &dyn Fn(&Sample) -> f64| samples.iter().map(|x| format!("{:.0}", f(x))).collect::<Vec<_>>().join(" ");
    let half = samples.len() / 2;
    // RocksDB's memtables and block cache fill for the first minute or so: whether memory is
    // flat is judged only on a run long enough to see past that (the full ten minutes).
    let judged = secs >= 300.0;
    let mut rows = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let bound = idle[i] + ROCKSDB_BOUND_MIB + SLACK_MIB;
        let max = |xs: &[Sample]| xs.iter().map(|x| x.rss[i]).fold(0.0, f64::max);
        let (first, second) = (max(&samples[..half]), max(&samples[half..]));
        let last = samples.last().map_or(0.0, |x| x.rss[i]);
        rows.push(Row {
            figure: format!("soak: {m} resident memory after {secs:.0} s at {RATE:.0} calls/s"),
            value: last,
            unit: "MiB",
            baseline: Some(("idle, connected, before the load".into(), idle[i])),
            target: format!("<= {bound:.0}{}", if judged { " and flat" } else { "" }),
            met: second.max(first) <= bound && (!judged || second <= first * 1.1 + 4.0),
            note: format!(
                "VmRSS every {window:.0} s: {} MiB; max {first:.0} MiB in the first half, {second:.0} MiB in the second; bound = idle + [storage] {ROCKSDB_BOUND_MIB:.0} MiB + {SLACK_MIB:.0} MiB",
                series(&|x| x.rss[i])
            ),
        });
        let grown = samples.last().map_or(0, |x| x.db[i]).saturating_sub(db0[i]);
        rows.push(Row {
            figure: format!("soak: {m} database growth per call"),
            value: grown as f64 / calls.max(1) as f64,
            unit: "B",
            baseline: None,
            target: "-".into(),
            met: true,
            note: format!(
                "db/ on disk every {window:.0} s: {} MB over {calls} calls (before compaction: write-ahead log and unflushed memtables included)",
                series(&|x| x.db[i] as f64 / 1e6)
            ),
        });
    }
    // Drift: the worst window of the second half against the p99 of the whole first half.
    let split = run.samples.iter().map(|&(at, _)| at).fold(0.0, f64::max) / 2.0;
    let mut early: Vec<f64> = run.samples.iter().filter(|&&(at, _)| at < split).map(|&(_, l)| l).collect();
    early.sort_by(f64::total_cmp);
    let baseline = percentile(&early, 0.99);
    let later = p99s[p99s.len() / 2..].iter().copied().fold(0.0, f64::max);
    let all = &run.latencies;
    rows.push(Row {
        figure: format!("soak: worst second-half window p99 at {RATE:.0} calls/s"),
        value: later,
        unit: "ms",
        baseline: Some(("p99 of the first half".into(), baseline)),
        target: "<= 2 x base".into(),
        met: failed == 0 && run.achieved >= 0.95 * RATE && later <= 2.0 * baseline,
        note: format!(
            "{secs:.0} s open loop from scheduled send; p99 per {window:.0} s window: {} ms; whole run p50 {:.2} ms, p99 {:.2} ms; achieved {:.0}/s, {failed} answered with an error",
            p99s.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>().join(" "),
            percentile(all, 0.5),
            percentile(all, 0.99),
            run.achieved
        ),
    });
    Ok(rows)
}
