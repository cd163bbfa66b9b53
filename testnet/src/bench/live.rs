//! Live sharing calls: a dataset published `--live` from a real PostgreSQL table, called through
//! the gateway as an application calls it, each call read from the table by a prepared
//! statement on the key (projected to two fields), batched, signed both ways, logged durably.
//!
//! Baseline in the same run: the database's own rate for the same statement, measured by
//! PostgreSQL's `pgbench` (prepared, as many clients as the node's pool has connections) on the
//! same table.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::load::{self, Target};
use super::{Row, Sizes, percentile};
use crate::Federation;
use crate::postgres::{Postgres, bin_dir};

/// The node's default `[sources] pool_size`: the baseline uses as many database clients.
const POOL: usize = 8;

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let pg = Postgres::start()?;
    let n = s.query_records;
    pg.sql(&format!(
        "CREATE TABLE records (id text PRIMARY KEY, holder text, payload text);
         INSERT INTO records SELECT 'K' || lpad(g::text, 8, '0'), 'holder ' || g, repeat('x', 1000)
           FROM generate_series(0, {}) g;
         ANALYZE records;",
        n - 1
    ))?;
    let mut fed = Federation::init(&["provider", "requester"])?;
    fed.start_all()?;
    fed.wait_mesh(&["provider", "requester"], std::time::Duration::from_secs(30))?;
    fed.json("provider", &["source", "add", "db", "--url", &pg.url()])?;
    fed.json(
        "provider",
        &[
            "publish",
            "--source",
            "db",
            "--table",
            "records",
            "--dataset",
            "records",
            "--title",
            "Records",
            "--key-field",
            "id",
            "--live",
        ],
    )?;
    fed.json("provider", &["grant", "records", "--to", "requester", "--purpose", "bench", "--fields", "id,holder"])?;
    fed.wait_for("the live dataset in the requester's catalog", std::time::Duration::from_secs(30), |f| {
        Ok(f.catalog("requester")?.contains(&"provider/records@1".to_string()))
    })?;
    let t = Target::requester_app(&fed, "bench")?;
    let path = move |i: usize| format!("/v1/records/provider/records/K{:08}", (i * 7919) % n);
    load::closed(&t, 1, 1, path)?;
    load::failures();
    let total = s.queries / 2;
    let (rate, lat) = load::closed(&t, s.in_flight, total, path)?;
    let failed = load::failures();

    let db_rate = pgbench(&pg, n, if s.queries >= 100_000 { 10 } else { 3 })?;
    Ok(vec![Row {
        figure: format!("live sharing calls via gateway, {} in flight", s.in_flight),
        value: rate,
        unit: "calls/s",
        baseline: Some((format!("pgbench, same SELECT, {POOL} clients"), db_rate)),
        target: "-".into(),
        met: failed == 0,
        note: format!(
            "{} calls, each read from PostgreSQL ({n} rows of 1 KiB, projected to 2 fields) through the node's pool of {POOL}; p50 {:.2} ms, p99 {:.2} ms; {failed} answered with an error",
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        ),
    }])
}

/// Transactions per second of `SELECT id, holder FROM records WHERE id = $1` on random keys.
fn pgbench(pg: &Postgres, n: usize, seconds: u32) -> Result<f64> {
    let script = pg.dir().join("lookup.sql");
    std::fs::write(
        &script,
        format!(
            "\\set k random(0, {})\nSELECT id, holder FROM records WHERE id = 'K' || lpad(:k::text, 8, '0');\n",
            n - 1
        ),
    )?;
    let out = Command::new(bin_dir()?.join("pgbench"))
        .args(["-n", "-M", "prepared", "-c", &POOL.to_string(), "-j", "2", "-T", &seconds.to_string(), "-h"])
        .arg(pg.dir())
        .args(["-p", &pg.port().to_string(), "-U", "deltafed", "-f"])
        .arg(&script)
        .arg("deltafed")
        .output()
        .context("running pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    }
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("pgbench printed no tps: {text}"))?;
    Ok(tps)
}
