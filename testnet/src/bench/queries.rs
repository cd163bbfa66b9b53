//! Record queries: 1 KiB records looked up by key through one provider, with many in flight,
//! each a signed request, a grant check, a signed answer and provenance on both sides. Driven
//! through the requester's local API (the admin socket), as a local application would.

use std::time::Instant;

use anyhow::Result;
use deltafed_node::admin::api::{QueryResult, Request, Status};
use deltafed_node::admin::client::Client;

use super::{Row, Sizes, percentile};
use crate::{Federation, path_str};

/// Runs `total` calls of `req(i)` from `threads` clients in parallel; returns (calls/s, sorted latencies in ms).
fn hammer(
    fed: &Federation,
    member: &str,
    threads: usize,
    total: usize,
    req: impl Fn(usize) -> Request + Sync,
) -> Result<(f64, Vec<f64>)> {
    let dir = fed.data_dir(member);
    let sock = dir.join("admin.sock");
    let per = total.div_ceil(threads);
    let start = Instant::now();
    let mut lat: Vec<f64> = std::thread::scope(|sc| -> Result<Vec<f64>> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (dir, sock, req) = (&dir, &sock, &req);
                sc.spawn(move || -> Result<Vec<f64>> {
                    let mut c = Client::connect(dir, sock)?;
                    let mut l = Vec::with_capacity(per);
                    for i in 0..per {
                        let q = req(t * per + i);
                        let t0 = Instant::now();
                        c.call_value(&q)?;
                        l.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(l)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??);
        }
        Ok(all)
    })?;
    let secs = start.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok((lat.len() as f64 / secs, lat))
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let mut fed = Federation::init(&["provider", "requester"])?;
    fed.start_all()?;
    fed.wait_mesh(&["provider", "requester"], std::time::Duration::from_secs(30))?;
    // 1 KiB records: a key and a padding field.
    let mut csv = String::from("id,holder,payload\n");
    for i in 0..s.query_records {
        csv += &format!("K{i:08},holder {i},{}\n", "x".repeat(1000));
    }
    let src = fed.root().join("records.csv");
    std::fs::write(&src, csv)?;
    fed.json(
        "provider",
        &["publish", path_str(&src)?, "--dataset", "records", "--title", "Records", "--key-field", "id"],
    )?;
    fed.wait_for("the manifest at the requester", std::time::Duration::from_secs(10), |f| {
        Ok(f.catalog("requester")?.iter().any(|e| e.starts_with("provider/records@")))
    })?;
    fed.json(
        "provider",
        &["grant", "records", "--to", "requester", "--purpose", "benchmark", "--fields", "id,payload"],
    )?;
    // Check one answer for shape before timing thousands.
    let mut c = Client::connect(&fed.data_dir("requester"), &fed.data_dir("requester").join("admin.sock"))?;
    let one: QueryResult = c.call(&Request::Query { dataset: "provider/records".parse()?, key: "K00000001".into() })?;
    anyhow::ensure!(one.records.len() == 1, "expected one record, got {}", one.records.len());
    let dataset: deltafed_protocol::DatasetRef = "provider/records".parse()?;
    let n = s.query_records;
    let (qps, lat) = hammer(&fed, "requester", s.in_flight, s.queries, |i| Request::Query {
        dataset: dataset.clone(),
        key: format!("K{:08}", (i * 7919) % n),
    })?;
    let (base_qps, _) = hammer(&fed, "requester", s.in_flight, s.queries, |_| Request::Status)?;
    let _: Option<Status> = None;
    // The bound: libp2p request-response alone, 1 KiB answers, the same number in flight.
    let (tcp_rps, _) = super::ceiling::measure("tcp", s.queries, s.in_flight, 1024)?;
    let (quic_rps, _) = super::ceiling::measure("quic", s.queries, s.in_flight, 1024)?;
    let p50 = percentile(&lat, 0.5);
    let p99 = percentile(&lat, 0.99);
    Ok(vec![
        Row {
            figure: format!("record queries, {} in flight", s.in_flight),
            value: qps,
            unit: "q/s",
            baseline: Some(("local API round trip".into(), base_qps)),
            target: ">= 10000".into(),
            met: qps >= 10_000.0,
            note: format!("{} queries of 1 KiB records ({} keys), projection to 2 fields", s.queries, n),
        },
        Row {
            figure: "record queries vs libp2p's own ceiling".into(),
            value: qps,
            unit: "q/s",
            baseline: Some(("libp2p req/resp 1 KiB".into(), tcp_rps.max(quic_rps))),
            target: "-".into(),
            met: true,
            note: format!("libp2p alone: {tcp_rps:.0}/s over TCP+TLS+yamux, {quic_rps:.0}/s over QUIC"),
        },
        Row {
            figure: "record query latency p50".into(),
            value: p50,
            unit: "ms",
            baseline: None,
            target: "-".into(),
            met: true,
            note: String::new(),
        },
        Row {
            figure: "record query latency p99".into(),
            value: p99,
            unit: "ms",
            baseline: None,
            target: "< 5".into(),
            met: p99 < 5.0,
            note: String::new(),
        },
    ])
}
