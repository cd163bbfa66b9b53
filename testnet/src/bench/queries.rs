//! Record queries: 1 KiB records looked up by key through one provider, with many in flight,
//! each a signed request, a grant check, a signed answer and provenance on both sides. Driven
//! through the requester's local API (the admin socket), as a local application would.

use std::time::Instant;

use anyhow::Result;
use deltafed_node::admin::api::{QueryResult, Request};
use deltafed_node::admin::client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Row, Sizes, cpu, percentile};
use crate::Federation;

/// Runs `total` calls of `req(i)` with `in_flight` of them outstanding at any time, each on its
/// own connection to the member's local API; returns (calls/s, sorted latencies in ms).
///
/// The clients are tasks on one thread rather than a thread each: on a two-core machine shared
/// with both nodes, 64 client threads would take the cores the figure is about.
fn hammer(
    fed: &Federation,
    member: &str,
    in_flight: usize,
    total: usize,
    req: impl Fn(usize) -> Request,
) -> Result<(f64, Vec<f64>)> {
    let sock = fed.data_dir(member).join("admin.sock");
    let per = total.div_ceil(in_flight);
    let lines: Vec<Vec<String>> = (0..in_flight)
        .map(|t| {
            (0..per).map(|i| serde_json::to_string(&req(t * per + i)).map(|l| l + "\n")).collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for calls in lines {
            let sock = sock.clone();
            tasks.spawn(async move {
                let stream = tokio::net::UnixStream::connect(&sock).await?;
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                let mut answer = String::new();
                let mut lat = Vec::with_capacity(calls.len());
                for line in calls {
                    let t0 = Instant::now();
                    write.write_all(line.as_bytes()).await?;
                    answer.clear();
                    anyhow::ensure!(read.read_line(&mut answer).await? > 0, "the node closed the connection");
                    let reply: Reply = serde_json::from_str(&answer)?;
                    anyhow::ensure!(reply.ok, "the node refused a call: {}", reply.error.unwrap_or_default());
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            });
        }
        let mut all = Vec::with_capacity(total);
        while let Some(res) = tasks.join_next().await {
            all.extend(res??);
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        Ok((all.len() as f64 / secs, all))
    })
}

/// The part of a local API reply the clients check (the records are skipped, not built).
#[derive(serde::Deserialize)]
struct Reply {
    ok: bool,
    error: Option<String>,
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let fed = super::keyed_records(s, "id,payload")?;
    // Check one answer for shape before timing thousands.
    let mut c = Client::connect(&fed.data_dir("requester"), &fed.data_dir("requester").join("admin.sock"))?;
    let one: QueryResult = c.call(&Request::Query {
        dataset: "provider/records".parse()?,
        key: Some("K00000001".into()),
        keys: Vec::new(),
    })?;
    anyhow::ensure!(one.records.len() == 1, "expected one record, got {}", one.records.len());
    let dataset: deltafed_protocol::DatasetRef = "provider/records".parse()?;
    let n = s.query_records;
    let pids = [fed.pid("requester"), fed.pid("provider")];
    let cpu_before = [cpu::seconds(pids[0])?, cpu::seconds(pids[1])?, cpu::seconds(None)?];
    let (qps, lat) = hammer(&fed, "requester", s.in_flight, s.queries, |i| Request::Query {
        dataset: dataset.clone(),
        key: Some(format!("K{:08}", (i * 7919) % n)),
        keys: Vec::new(),
    })?;
    let cpu_after = [cpu::seconds(pids[0])?, cpu::seconds(pids[1])?, cpu::seconds(None)?];
    let per_query = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / lat.len().max(1) as f64;
    let (req_us, prov_us, client_us) = (per_query(0), per_query(1), per_query(2));
    let total_us = req_us + prov_us + client_us;
    let api_before = cpu::seconds(pids[0])? + cpu::seconds(None)?;
    let (base_qps, base_lat) = hammer(&fed, "requester", s.in_flight, s.queries, |_| Request::Status)?;
    let api_us = (cpu::seconds(pids[0])? + cpu::seconds(None)? - api_before) * 1e6 / base_lat.len().max(1) as f64;
    // The bound: libp2p request-response alone, 1 KiB answers, the same number in flight.
    let (tcp_rps, _) = super::ceiling::measure("tcp", s.queries, s.in_flight, 1024)?;
    let quic_before = cpu::seconds(None)?;
    let (quic_rps, _) = super::ceiling::measure("quic", s.queries, s.in_flight, 1024)?;
    let libp2p_us = (cpu::seconds(None)? - quic_before) * 1e6 / s.queries as f64;
    let sig_us = cpu::query_signatures_us(2_000);
    let floor_us = api_us + libp2p_us + sig_us;
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1) as f64;
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
            figure: "record query CPU, all processes".into(),
            value: total_us,
            unit: "us/q",
            baseline: Some(("API + libp2p + 4 signatures".into(), floor_us)),
            target: "-".into(),
            met: true,
            note: format!(
                "requester {req_us:.0} us, provider {prov_us:.0} us, clients {client_us:.0} us per query; the unavoidable parts alone (local API {api_us:.0} us, libp2p QUIC req/resp {libp2p_us:.0} us, 2 signs + 2 strict verifies {sig_us:.0} us) cap {cores:.0} cores at {:.0} q/s; the whole at {:.0} q/s",
                cores * 1e6 / floor_us,
                cores * 1e6 / total_us
            ),
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
