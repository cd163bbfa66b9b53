//! Sharing calls through the HTTP gateway, as an application makes them: `GET
//! /v1/records/provider/records/{key}` with a bearer token, 1 KiB records projected to two
//! fields; each call authorized, batched, signed both ways, logged durably on both sides.
//!
//! Figures: capacity with 64 in flight (closed loop); latency at a fixed offered 10,000 calls/s
//! (open loop, from each call's scheduled send time); a lone call's latency; CPU per call per
//! process; mean batch size and signature operations per call. Baselines in the same run: the
//! same HTTP stack answering a no-op, and libp2p request-response alone.

use anyhow::{Context, Result};

use super::load::{self, NoopServer, Target};
use super::{Row, Sizes, cpu, percentile};
use crate::Federation;

/// Offered load of the latency figure.
const OFFERED: f64 = 10_000.0;

fn counts(fed: &Federation, member: &str) -> Result<(u64, u64, u64, u64)> {
    let s = fed.json(member, &["status"])?;
    let c = &s["calls"];
    let n = |k: &str| c[k].as_u64().with_context(|| format!("{member}: status has no calls.{k}: {s}"));
    Ok((n("batches_sent")?, n("calls_sent")?, n("batches_served")?, n("calls_served")?))
}

/// A node's batches of one side ("sent", "served") so far, from its /metrics: total seconds,
/// batches, calls.
fn batch_figures(metrics_url: &str, side: &str) -> Result<(f64, f64, f64)> {
    let addr = metrics_url.trim_start_matches("http://").trim_end_matches('/');
    let text = load::get_text(addr.parse().with_context(|| format!("metrics url {metrics_url}"))?, "/metrics")?;
    let value = |series: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .with_context(|| format!("{metrics_url}/metrics has no {series}"))
    };
    Ok((
        value(&format!("deltafed_call_batch_duration_seconds_sum{{side=\"{side}\"}}"))?,
        value(&format!("deltafed_call_batch_duration_seconds_count{{side=\"{side}\"}}"))?,
        value(&format!("deltafed_call_batch_size_sum{{side=\"{side}\"}}"))?,
    ))
}

pub fn run(s: &Sizes) -> Result<Vec<Row>> {
    let mut fed = super::keyed_records(s, "id,holder")?;
    let t = Target::requester_app(&fed, "bench")?;
    let n = s.query_records;
    let path = move |i: usize| format!("/v1/records/provider/records/K{:08}", (i * 7919) % n);
    // One call checked for shape before timing thousands.
    load::closed(&t, 1, 1, path)?;

    let pids = [fed.pid("requester"), fed.pid("provider")];
    let before = counts(&fed, "requester")?;
    let cpu0 = [cpu::seconds(pids[0])?, cpu::seconds(pids[1])?, cpu::seconds(None)?];
    load::failures();
    let (cap, cap_lat) = load::closed(&t, s.in_flight, s.queries, path)?;
    let cap_failed = load::failures();
    let cpu1 = [cpu::seconds(pids[0])?, cpu::seconds(pids[1])?, cpu::seconds(None)?];
    let after = counts(&fed, "requester")?;
    let calls = cap_lat.len().max(1) as f64;
    let us = |i: usize| (cpu1[i] - cpu0[i]) * 1e6 / calls;
    let (req_us, prov_us, gen_us) = (us(0), us(1), us(2));
    let batches = (after.0 - before.0).max(1) as f64;
    let batch_calls = (after.1 - before.1) as f64;
    let mean_batch = batch_calls / batches;
    // Each batch: one signature and one verification on each side.
    let sigs_per_call = 4.0 * batches / batch_calls.max(1.0);

    let secs = if s.queries >= 100_000 { 10.0 } else { 3.0 };
    let (metrics, served) = (fed.metrics_url("requester")?, fed.metrics_url("provider")?);
    let ((sum0, n0, calls0), (psum0, pn0, _)) = (batch_figures(&metrics, "sent")?, batch_figures(&served, "served")?);
    let open = load::open(&t, OFFERED, secs, 500, path)?;
    let ((sum1, n1, calls1), (psum1, pn1, _)) = (batch_figures(&metrics, "sent")?, batch_figures(&served, "served")?);
    // What the latency is made of at this load: a call waits for the batch in flight, then
    // rides its own, so the batch's round trip (signed, answered, verified, logged durably)
    // bounds it from below.
    let open_batches = (n1 - n0).max(1.0);
    let (open_trip_ms, open_batch) = ((sum1 - sum0) * 1e3 / open_batches, (calls1 - calls0) / open_batches);
    // Of which the provider's part: from the batch's arrival to its answer, logged durably.
    let open_served_ms = (psum1 - psum0) * 1e3 / (pn1 - pn0).max(1.0);
    let open_failed = load::failures();
    let (o50, o99, o999) =
        (percentile(&open.latencies, 0.5), percentile(&open.latencies, 0.99), percentile(&open.latencies, 0.999));
    let worst_second = open.p99_by_second.iter().copied().fold(0.0, f64::max);
    // The p99 of each second, so a stall shows where it fell rather than only that it did.
    let by_second = open.p99_by_second.iter().map(|p| format!("{p:.1}")).collect::<Vec<_>>().join(" ");

    let (_, lone) = load::closed(&t, 1, 2_000.min(s.queries), path)?;
    let (l50, l99) = (percentile(&lone, 0.5), percentile(&lone, 0.99));

    // Baselines: the HTTP stack alone, and libp2p request-response alone.
    let noop = NoopServer::start()?;
    let nt = Target { addr: noop.addr, token: None };
    let (http_rps, _) = load::closed(&nt, s.in_flight, s.queries, |_| "/noop".to_string())?;
    let (_, http_lone) = load::closed(&nt, 1, 2_000.min(s.queries), |_| "/noop".to_string())?;
    drop(noop);
    let (tcp_rps, _) = super::ceiling::measure("tcp", s.queries, s.in_flight, 1024)?;
    // The log's bytes per call on each side, on disk after a full compaction.
    let total = counts(&fed, "requester")?;
    let served = counts(&fed, "provider")?.3;
    let mut per_call = Vec::new();
    for (m, n) in [("requester", total.1), ("provider", served)] {
        fed.stop(m)?;
        let store = deltafed_node::store::Store::open(&fed.data_dir(m).join("db"))?;
        let mut bytes = 0;
        for cf in [deltafed_node::store::Cf::Provenance, deltafed_node::store::Cf::ProvenanceIndex] {
            store.compact(cf, None)?;
            bytes += store.disk_size(cf)?;
        }
        per_call.push(bytes as f64 / n.max(1) as f64);
    }
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1) as f64;
    let node_us = req_us + prov_us;
    let bound = format!(
        "CPU per call: requester {req_us:.0} us (gateway + batching + its log), provider {prov_us:.0} us, load generator {gen_us:.0} us; {cores:.0} cores at {:.0} us per call (all three) cap {:.0} calls/s; the HTTP stack alone answers {http_rps:.0}/s, libp2p req/resp alone {tcp_rps:.0}/s",
        node_us + gen_us,
        cores * 1e6 / (node_us + gen_us)
    );
    Ok(vec![
        Row {
            figure: format!("sharing calls via gateway, {} in flight", s.in_flight),
            value: cap,
            unit: "calls/s",
            baseline: Some(("HTTP no-op, same stack".into(), http_rps)),
            target: ">= 10000 (goal 25000)".into(),
            met: cap >= 10_000.0 && cap_failed == 0,
            note: format!(
                "{} calls of 1 KiB records ({n} keys) projected to 2 fields, {cap_failed} answered with an error; p99 {:.2} ms closed loop; {bound}",
                cap_lat.len(),
                percentile(&cap_lat, 0.99)
            ),
        },
        Row {
            figure: "sharing calls p99 at 10000/s offered".into(),
            value: o99,
            unit: "ms",
            baseline: None,
            target: "< 5".into(),
            met: o99 < 5.0 && open.achieved >= 0.95 * OFFERED && open_failed == 0,
            note: format!(
                "open loop {secs:.0} s, from scheduled send time: p50 {o50:.2} ms, p99.9 {o999:.2} ms, worst second's p99 {worst_second:.2} ms (each second's: {by_second}); (bound) a batch's round trip at this load {open_trip_ms:.2} ms on average ({open_served_ms:.2} ms of it at the provider), {open_batch:.1} calls a batch; achieved {:.0}/s over {} connections, {open_failed} answered with an error",
                open.achieved, open.connections
            ),
        },
        Row {
            figure: "sharing call alone, p50".into(),
            value: l50,
            unit: "ms",
            baseline: Some(("HTTP no-op alone p50".into(), percentile(&http_lone, 0.5))),
            target: "-".into(),
            met: true,
            note: format!("one call in flight: p99 {l99:.2} ms (a lone call goes out at once, no batching timer)"),
        },
        Row {
            figure: "provenance bytes per call, requester".into(),
            value: per_call[0],
            unit: "B",
            baseline: None,
            target: "<= 256".into(),
            met: per_call[0] <= 256.0,
            note: format!(
                "log + its indexes on disk after compaction, over {} calls; provider {:.0} B per call over {served} calls",
                total.1, per_call[1]
            ),
        },
        Row {
            figure: "provenance bytes per call, provider".into(),
            value: per_call[1],
            unit: "B",
            baseline: None,
            target: "<= 256".into(),
            met: per_call[1] <= 256.0,
            note: String::new(),
        },
        Row {
            figure: "sharing calls per batch (mean)".into(),
            value: mean_batch,
            unit: "calls",
            baseline: None,
            target: "-".into(),
            met: true,
            note: format!(
                "{batches:.0} batches for {batch_calls:.0} calls at {} in flight: {sigs_per_call:.3} signature operations per call (4 per batch: sign + verify each way)",
                s.in_flight
            ),
        },
    ])
}
