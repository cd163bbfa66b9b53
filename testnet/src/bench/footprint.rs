//! Footprint: resident memory of idle nodes in a connected federation.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::{Row, Sizes};
use crate::Federation;

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

pub fn run(_: &Sizes) -> Result<Vec<Row>> {
    let members = ["shanghai", "jiangsu", "zhejiang", "anhui"];
    let mut fed = Federation::init(&members)?;
    fed.start_all()?;
    fed.wait_mesh(&members, Duration::from_secs(30))?;
    // Idle: connected, nothing to do. Let start-up allocations settle (a measurement window,
    // not a stand-in for a condition), then read the largest resident set.
    let settle = Instant::now() + Duration::from_secs(5);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut max_kib = 0;
    for m in members {
        max_kib = max_kib.max(rss_kib(fed.pid(m).context("pid")?)?);
    }
    let self_kib = rss_kib(std::process::id())?;
    let mb = max_kib as f64 / 1024.0;
    Ok(vec![Row {
        figure: "idle node resident memory (4-node federation)".into(),
        value: mb,
        unit: "MiB",
        baseline: Some(("this bench process".into(), self_kib as f64 / 1024.0)),
        target: "< 40".into(),
        met: mb < 40.0,
        note: "largest VmRSS of the four nodes".into(),
    }])
}
