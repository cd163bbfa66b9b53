//! What the node counts, for Prometheus (`GET /metrics` on `[metrics] listen`; `serve.rs` holds
//! the listener, `/healthz` and `/readyz`).
//!
//! Two kinds of series. Counters and histograms of events are kept here in [`Metrics`] and
//! moved where the event happens (a gossip verdict, an RPC answered, a batch of calls, a fetch).
//! Gauges of state (members connected, catalog size, the outbox, requests, grants, provenance)
//! are read from the stores at scrape time into a [`Snapshot`], so they cannot drift from what
//! `deltafed status` and the other commands show.
//!
//! Every label has a bounded set of values: `peer` is a member of the roster (callers pass only
//! members the roster names, anything else becomes `other`), and `reason`, `outcome`, `side`
//! and the rest are fixed words. No key, dataset, grant or free text is ever a label.
//!
//! The registry encodes OpenMetrics; [`Format::Text`] rewrites that into the Prometheus text
//! format 0.0.4 (a counter's `HELP`/`TYPE` name its `_total` series, no `UNIT`, no `# EOF`), which
//! is what a client that does not ask for OpenMetrics, and `promtool check metrics`, read.

mod serve;

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use deltafed_protocol::calls::Outcome;
use deltafed_protocol::wire;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use serve::{Bound, Error, Health, bind, serve};

use crate::catalog::Ingested;
use crate::store::MemoryUsage;

/// The label value for a peer the roster does not name.
pub const OTHER_PEER: &str = "other";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Exchange {
    /// `served` (this node is the provider) or `received`/`sent` (the requester).
    side: &'static str,
    peer: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Flow {
    direction: &'static str,
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Side {
    side: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    request: &'static str,
    reason: &'static str,
}

/// A member's requests that waited for its rate.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Paced {
    member: String,
    rate: &'static str,
}

/// Inbound work from a member in the node now, by state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Inbound {
    member: String,
    state: &'static str,
}

/// One piece of inbound work, counted in its gauge for as long as it lives.
pub struct InProgress(Gauge);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

type Histograms = Family<Side, Histogram, fn() -> Histogram>;

fn batch_seconds() -> Histogram {
    // 100 µs to ~3 s: a batch is signed, verified and synced on both sides.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn batch_calls() -> Histogram {
    // 1 to 256 calls (`calls::MAX_BATCH`).
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// The node's event counters; one per node, in its `Inner`.
pub struct Metrics {
    registry: Registry,
    gossip: Family<ResultLabel, Counter>,
    fetches: Family<Exchange, Counter>,
    calls: Family<Exchange, Counter>,
    bytes: Family<Flow, Counter>,
    refusals: Family<Refused, Counter>,
    paced: Family<Paced, Counter>,
    inbound: Family<Inbound, Gauge>,
    fetch_seconds: Histogram,
    batch_seconds: Histograms,
    batch_calls: Histograms,
    started: SystemTime,
    /// The latest batch latencies (seconds) of each side, for the dashboard's percentiles
    /// (Prometheus computes its own from the histograms).
    recent: std::sync::Mutex<Recent>,
    by_call: std::sync::Mutex<std::collections::HashMap<CallKey, CallStat>>,
}

/// At most [`RECENT`] latest batch latencies per side.
#[derive(Default)]
struct Recent {
    sent: std::collections::VecDeque<f64>,
    served: std::collections::VecDeque<f64>,
}

const RECENT: usize = 4096;

/// Sharing calls since start by side, peer, dataset and application (the dashboard's statistics).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// `sent` or `served`.
    pub side: &'static str,
    pub peer: String,
    pub dataset: String,
    pub app: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CallStat {
    pub calls: u64,
    pub answered: u64,
    pub not_answered: u64,
    /// Bytes of the records answered (their JSON as sent).
    pub bytes: u64,
}

/// Most distinct keys kept; calls past it are counted under `(other)`.
const MAX_CALL_KEYS: usize = 10_000;

fn push_recent(q: &mut std::collections::VecDeque<f64>, v: f64) {
    if q.len() == RECENT {
        q.pop_front();
    }
    q.push_back(v);
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The RPC requests a member can make of this node, as the `request` label names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Sync,
    Deliver,
    Fetch,
    Chunk,
    Query,
    Calls,
    Witnesses,
    /// Not decoded (malformed).
    Unknown,
}

impl Rpc {
    pub fn of(r: &wire::Request) -> Rpc {
        match r {
            wire::Request::Sync(_) => Rpc::Sync,
            wire::Request::Deliver(_) => Rpc::Deliver,
            wire::Request::Fetch(_) => Rpc::Fetch,
            wire::Request::Chunk { .. } => Rpc::Chunk,
            wire::Request::Query(_) => Rpc::Query,
            wire::Request::Calls { .. } => Rpc::Calls,
            wire::Request::WitnessOf { .. } => Rpc::Witnesses,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Rpc::Sync => "sync",
            Rpc::Deliver => "deliver",
            Rpc::Fetch => "fetch",
            Rpc::Chunk => "chunk",
            Rpc::Query => "query",
            Rpc::Calls => "calls",
            Rpc::Witnesses => "witnesses",
            Rpc::Unknown => "unknown",
        }
    }
}

/// How a fetch this node made ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchOutcome {
    Ok,
    /// The provider (or the checks of what it sent) refused.
    Refused,
    /// Anything else: the provider away, a local fault.
    Failed,
}

/// The outcomes of one batch of calls, counted before the batch's log entry takes them.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    calls: u64,
    answered: u64,
    deferred: u64,
    refused: Vec<(Reason, u64)>,
}

impl Tally {
    pub fn of<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Tally {
        let mut t = Tally::default();
        for o in outcomes {
            t.calls += 1;
            match o {
                Outcome::Answered { .. } => t.answered += 1,
                Outcome::Deferred => t.deferred += 1,
                Outcome::Refused { reason } | Outcome::Unavailable { reason } => {
                    let r = Reason::of(reason);
                    match t.refused.iter_mut().find(|(k, _)| *k == r) {
                        Some((_, n)) => *n += 1,
                        None => t.refused.push((r, 1)),
                    }
                }
            }
        }
        t
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("deltafed");
        let gossip = Family::<ResultLabel, Counter>::default();
        registry.register(
            "gossip_messages",
            "Catalog gossip messages received, by the verdict given to gossipsub: accepted (new, forwarded), duplicate, stale (older than held) or rejected (invalid, the sender penalised)",
            gossip.clone(),
        );
        let fetches = Family::<Exchange, Counter>::default();
        registry.register(
            "fetches",
            "Dataset fetches by side (served: this node the provider, a ticket issued or refused; received: fetched by this node, to a file or streamed to an application), member and outcome",
            fetches.clone(),
        );
        let calls = Family::<Exchange, Counter>::default();
        registry.register(
            "calls",
            "Sharing calls (record lookups) by side (sent by this node, served by it), member and outcome (answered, refused, deferred to a later batch, failed)",
            calls.clone(),
        );
        let bytes = Family::<Flow, Counter>::default();
        registry.register_with_unit(
            "data",
            "Data bytes moved to and from members: fetched chunks and the records of calls, by direction (served, received) and member",
            Unit::Bytes,
            bytes.clone(),
        );
        let refusals = Family::<Refused, Counter>::default();
        registry.register(
            "refusals",
            "Requests from members refused by this node, by request (fetch, chunk, query, calls, call for one call of a batch, ...) and reason",
            refusals.clone(),
        );
        let paced = Family::<Paced, Counter>::default();
        registry.register(
            "paced_requests",
            "Requests from members that waited their turn because the member was over its rate, by member and by the rate (requests: member_rate, deliveries: member_delivery_rate)",
            paced.clone(),
        );
        let inbound = Family::<Inbound, Gauge>::default();
        registry.register(
            "inbound_in_progress",
            "Requests, gossip messages and connections from members in this node now, by member and state: handling (in one of the shared handlers) or waiting (behind the member's own member_concurrency, its rate, or a free handler)",
            inbound.clone(),
        );
        let fetch_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register_with_unit(
            "fetch_duration",
            "Time of the fetches this node made, from the request to the verified file (resumes included) or to the last verified chunk streamed to an application",
            Unit::Seconds,
            fetch_seconds.clone(),
        );
        let batch_seconds: Histograms = Family::new_with_constructor(batch_seconds);
        registry.register_with_unit(
            "call_batch_duration",
            "Time of one batch of sharing calls: sent (signed, answered, verified and logged durably) or served (verified, decided, answered and logged durably)",
            Unit::Seconds,
            batch_seconds.clone(),
        );
        let batch_calls: Histograms = Family::new_with_constructor(batch_calls);
        registry.register("call_batch_size", "Calls per batch of sharing calls, sent or served", batch_calls.clone());
        // The fixed label values exist from the start, so a rate over them is defined at once.
        for result in ["accepted", "duplicate", "stale", "rejected"] {
            let _ = gossip.get_or_create(&ResultLabel { result });
        }
        for side in ["sent", "served"] {
            let _ = batch_seconds.get_or_create(&Side { side });
            let _ = batch_calls.get_or_create(&Side { side });
        }
        Metrics {
            registry,
            gossip,
            fetches,
            calls,
            bytes,
            refusals,
            paced,
            inbound,
            fetch_seconds,
            batch_seconds,
            batch_calls,
            started: SystemTime::now(),
            recent: std::sync::Mutex::default(),
            by_call: std::sync::Mutex::default(),
        }
    }

    /// A request from `member` that waited for its `rate`.
    pub fn paced(&self, member: &str, rate: &'static str) {
        self.paced.get_or_create(&Paced { member: member.to_string(), rate }).inc();
    }

    /// Inbound work from `member` in `state` (`waiting`, `handling`) until the guard drops.
    pub fn in_progress(&self, member: &str, state: &'static str) -> InProgress {
        let gauge = self.inbound.get_or_create(&Inbound { member: member.to_string(), state }).clone();
        gauge.inc();
        InProgress(gauge)
    }

    /// A gossip message's verdict.
    pub fn gossip(&self, ingested: &Ingested) {
        let result = match ingested {
            Ingested::Accepted => "accepted",
            Ingested::Duplicate => "duplicate",
            Ingested::Stale => "stale",
            Ingested::Rejected(_) => "rejected",
        };
        self.gossip.get_or_create(&ResultLabel { result }).inc();
    }

    fn refused(&self, request: &'static str, reason: Reason, n: u64) {
        self.refusals.get_or_create(&Refused { request, reason: reason.label() }).inc_by(n);
    }

    fn count(family: &Family<Exchange, Counter>, side: &'static str, peer: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            family.get_or_create(&Exchange { side, peer: peer.to_string(), outcome }).inc_by(n);
        }
    }

    fn flow(&self, direction: &'static str, peer: &str, n: u64) {
        if n > 0 {
            self.bytes.get_or_create(&Flow { direction, peer: peer.to_string() }).inc_by(n);
        }
    }

    /// This node answered a member's RPC request (`calls`: the calls a `Calls` request carried).
    /// `peer` is a roster member, or [`OTHER_PEER`].
    pub fn answered(&self, peer: &str, request: Rpc, response: &wire::Response, calls: usize) {
        match response {
            wire::Response::Refused(reason) => {
                self.refused(request.label(), Reason::of(reason), 1);
                match request {
                    Rpc::Fetch => Self::count(&self.fetches, "served", peer, "refused", 1),
                    Rpc::Query => Self::count(&self.calls, "served", peer, "refused", 1),
                    Rpc::Calls => Self::count(&self.calls, "served", peer, "refused", calls as u64),
                    _ => {}
                }
            }
            wire::Response::Ticket { .. } => Self::count(&self.fetches, "served", peer, "ok", 1),
            wire::Response::Chunk(bytes) => self.flow("served", peer, bytes.len() as u64),
            wire::Response::Answer { records, .. } => {
                Self::count(&self.calls, "served", peer, "answered", 1);
                self.flow("served", peer, records.len() as u64);
            }
            wire::Response::Answers { records, .. } => {
                self.flow("served", peer, records.iter().map(|r| r.len() as u64).sum());
            }
            _ => {}
        }
    }

    /// A batch of calls this node served, once its answer was durable.
    /// One sharing call's outcome, for the statistics by peer, dataset and application.
    pub fn call_done(
        &self,
        side: &'static str,
        peer: &str,
        dataset: &str,
        app: Option<&str>,
        answered: bool,
        bytes: usize,
    ) {
        let mut map = self.by_call.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = CallKey { side, peer: peer.into(), dataset: dataset.into(), app: app.unwrap_or("(none)").into() };
        if !map.contains_key(&key) && map.len() >= MAX_CALL_KEYS {
            key = CallKey { side, peer: "(other)".into(), dataset: "(other)".into(), app: "(other)".into() };
        }
        let s = map.entry(key).or_default();
        s.calls += 1;
        if answered {
            s.answered += 1;
            s.bytes += bytes as u64;
        } else {
            s.not_answered += 1;
        }
    }

    /// The call statistics since start, sorted.
    pub fn call_stats(&self) -> Vec<(CallKey, CallStat)> {
        let map = self.by_call.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(CallKey, CallStat)> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The latest batch latencies in seconds: (sent, served), each oldest first.
    pub fn recent_batch_seconds(&self) -> (Vec<f64>, Vec<f64>) {
        let r = self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (r.sent.iter().copied().collect(), r.served.iter().copied().collect())
    }

    pub fn batch_served(&self, peer: &str, took: Duration, t: &Tally) {
        push_recent(
            &mut self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).served,
            took.as_secs_f64(),
        );
        let side = Side { side: "served" };
        self.batch_seconds.get_or_create(&side).observe(took.as_secs_f64());
        self.batch_calls.get_or_create(&side).observe(t.calls as f64);
        Self::count(&self.calls, "served", peer, "answered", t.answered);
        Self::count(&self.calls, "served", peer, "deferred", t.deferred);
        let refused: u64 = t.refused.iter().map(|(_, n)| n).sum();
        Self::count(&self.calls, "served", peer, "refused", refused);
        for (reason, n) in &t.refused {
            self.refused("call", *reason, *n);
        }
    }

    /// A batch of calls this node sent was answered and verified: each call's outcome and the
    /// size of its records.
    pub fn batch_sent<'a>(&self, peer: &str, took: Duration, answers: impl Iterator<Item = (&'a Outcome, usize)>) {
        let (mut calls, mut answered, mut refused, mut deferred, mut bytes) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for (o, records) in answers {
            calls += 1;
            bytes += records as u64;
            match o {
                Outcome::Answered { .. } => answered += 1,
                Outcome::Refused { .. } | Outcome::Unavailable { .. } => refused += 1,
                Outcome::Deferred => deferred += 1,
            }
        }
        push_recent(
            &mut self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sent,
            took.as_secs_f64(),
        );
        let side = Side { side: "sent" };
        self.batch_seconds.get_or_create(&side).observe(took.as_secs_f64());
        self.batch_calls.get_or_create(&side).observe(calls as f64);
        Self::count(&self.calls, "sent", peer, "answered", answered);
        Self::count(&self.calls, "sent", peer, "refused", refused);
        Self::count(&self.calls, "sent", peer, "deferred", deferred);
        self.flow("received", peer, bytes);
    }

    /// A batch of calls this node sent failed as a whole (refused, or the provider away).
    pub fn batch_failed(&self, peer: &str, calls: usize, error: &crate::node::Error) {
        let outcome = if matches!(error, crate::node::Error::Refused(_)) { "refused" } else { "failed" };
        Self::count(&self.calls, "sent", peer, outcome, calls as u64);
    }

    /// A fetch this node made ended.
    pub fn fetch_received(&self, peer: &str, outcome: FetchOutcome, took: Duration) {
        let outcome = match outcome {
            FetchOutcome::Ok => "ok",
            FetchOutcome::Refused => "refused",
            FetchOutcome::Failed => "failed",
        };
        Self::count(&self.fetches, "received", peer, outcome, 1);
        if outcome == "ok" {
            self.fetch_seconds.observe(took.as_secs_f64());
        }
    }

    /// A chunk went out on the data path (chunks answered over libp2p are counted by
    /// `answered`).
    pub fn chunk_served(&self, peer: &str, bytes: usize) {
        self.flow("served", peer, bytes as u64);
    }

    /// A verified chunk of a fetch arrived.
    pub fn chunk_received(&self, peer: &str, bytes: usize) {
        self.flow("received", peer, bytes as u64);
    }

    /// The whole exposition: the event series, then the gauges of `snap`.
    pub fn render(&self, snap: &Snapshot, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, &self.registry)?;
        encode_registry(&mut out, &snap.registry(self.started))?;
        encode_eof(&mut out)?;
        Ok(match format {
            Format::OpenMetrics => out,
            Format::Text => to_text(&out),
        })
    }
}

/// The node's state at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub member: String,
    pub federation: String,
    pub roster_version: u64,
    /// Members in the roster in force, this node included.
    pub members: u64,
    pub connected: u64,
    /// Datasets in the catalog (not withdrawn), this node's own included.
    pub catalog_datasets: u64,
    /// Sequence numbers used by the provenance log (head seq + 1).
    pub provenance_entries: u64,
    pub provenance_head_seq: Option<u64>,
    /// Deliveries waiting in the outbox, per member.
    pub outbox: Vec<(String, u64)>,
    /// Undecided access requests and, of those, the ones past the response deadline, by
    /// direction (`incoming`, `outgoing`).
    pub requests_pending: Vec<(&'static str, u64)>,
    pub requests_overdue: Vec<(&'static str, u64)>,
    /// Grants in force (not revoked, within their window), by role (`issued`, `received`).
    pub grants_active: Vec<(&'static str, u64)>,
    /// Exchanges being served now.
    pub exchanges_serving: u64,
    pub storage: Option<MemoryUsage>,
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

fn labelled(label: &'static str, values: &[(impl AsRef<str>, u64)]) -> Family<Vec<(&'static str, String)>, Gauge> {
    let f = Family::<Vec<(&'static str, String)>, Gauge>::default();
    for (k, v) in values {
        f.get_or_create(&vec![(label, k.as_ref().to_string())]).set(i64::try_from(*v).unwrap_or(i64::MAX));
    }
    f
}

impl Snapshot {
    fn registry(&self, started: SystemTime) -> Registry {
        let mut r = Registry::with_prefix("deltafed");
        let build = labelled("version", &[(env!("CARGO_PKG_VERSION"), 1)]);
        r.register("build_info", "The deltafed version this node runs (always 1)", build);
        let info = Family::<Vec<(&'static str, String)>, Gauge>::default();
        info.get_or_create(&vec![("member", self.member.clone()), ("federation", self.federation.clone())]).set(1);
        r.register("node_info", "The member this node is and its federation (always 1)", info);
        let started = started.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        r.register_with_unit(
            "start_time",
            "When the node started, in seconds since the epoch",
            Unit::Seconds,
            gauge(started),
        );
        r.register("roster_version", "Version of the roster in force", gauge(self.roster_version));
        r.register("members", "Members in the roster in force, this node included", gauge(self.members));
        r.register("members_connected", "Members connected now", gauge(self.connected));
        r.register(
            "catalog_datasets",
            "Datasets in the verified catalog, newest version each, withdrawn ones not counted",
            gauge(self.catalog_datasets),
        );
        r.register(
            "provenance_entries",
            "Entries appended to the provenance log since it began (archived ones included)",
            ConstCounter::new(self.provenance_entries),
        );
        if let Some(seq) = self.provenance_head_seq {
            r.register("provenance_head_seq", "Sequence number of the newest provenance entry", gauge(seq));
        }
        r.register(
            "outbox_deliveries",
            "Signed objects (grants, revocations, decisions, receipts) waiting in the outbox for a member to connect",
            labelled("member", &self.outbox),
        );
        r.register(
            "access_requests_pending",
            "Access requests not yet decided, by direction (incoming: this node decides)",
            labelled("direction", &self.requests_pending),
        );
        r.register(
            "access_requests_overdue",
            "Undecided access requests past the response deadline, by direction",
            labelled("direction", &self.requests_overdue),
        );
        r.register(
            "grants_active",
            "Grants in force (not revoked, within their window), by role (issued by this node or received)",
            labelled("role", &self.grants_active),
        );
        r.register(
            "exchanges_serving",
            "Fetches being served now (tickets issued, not yet closed)",
            gauge(self.exchanges_serving),
        );
        if let Some(m) = self.storage {
            let parts = [
                ("block_cache", m.block_cache),
                ("block_cache_limit", m.block_cache_limit),
                ("write_buffers", m.write_buffers),
                ("write_buffers_limit", m.write_buffers_limit),
            ];
            r.register_with_unit(
                "storage_memory",
                "RocksDB memory now and its [storage] bounds",
                Unit::Bytes,
                labelled("part", &parts),
            );
        }
        r
    }
}

/// Which exposition format a scraper gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, for a client that asks for it (Prometheus does).
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everyone else.
    Text,
}

impl Format {
    /// From a request's `Accept` header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics text as the Prometheus text format: a counter family `x` is written `x_total`
/// in `HELP` and `TYPE` (its samples already are), `UNIT` lines and `# EOF` go. The help texts
/// here hold no backslash or line break, so both formats escape them alike.
fn to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Why a request was refused, as the `reason` label says it: a fixed set, read from the
/// refusal's sentence (the words of `policy::Refusal` and of the checks before it; a test holds
/// each policy refusal to its label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotMember,
    Malformed,
    BadSignature,
    Mismatch,
    Replay,
    ClockSkew,
    NotFound,
    NotShared,
    Withdrawn,
    NeedsGrant,
    UnknownGrant,
    NotCovered,
    Revoked,
    NotYetValid,
    Expired,
    BudgetSpent,
    NotAResume,
    OutsideTicket,
    NotQueryable,
    UnknownExchange,
    TooLarge,
    Busy,
    Internal,
    Other,
}

impl Reason {
    /// The reason of a refusal's sentence. Phrases a free-text part (a withdrawal's or a
    /// revocation's reason) could repeat are looked for after the fixed words before it.
    pub fn of(sentence: &str) -> Reason {
        let s = sentence;
        let has = |p: &str| s.contains(p);
        if has("was withdrawn by its publisher") {
            Reason::Withdrawn
        } else if has(" was revoked at ") {
            Reason::Revoked
        } else if has("not a member of the roster in force") {
            Reason::NotMember
        } else if has("replayed request") {
            Reason::Replay
        } else if has("away from the provider's clock") {
            Reason::ClockSkew
        } else if has("is not shared (sharing: none)") {
            Reason::NotShared
        } else if has("is shared only under a grant") || has("holds no valid grant") || has("no valid grant from") {
            Reason::NeedsGrant
        } else if (has("no grant ") && has(" was issued by ")) || has(" is no longer held") {
            Reason::UnknownGrant
        } else if has(" does not cover ") {
            Reason::NotCovered
        } else if has(" is not valid before ") {
            Reason::NotYetValid
        } else if has(" expired at ") {
            Reason::Expired
        } else if has("and all were used") || has("has moved its limit of") || has("budget is spent") {
            Reason::BudgetSpent
        } else if has("must resume a fetch counted") {
            Reason::NotAResume
        } else if has("outside this exchange's ticket") {
            Reason::OutsideTicket
        } else if has("cannot be queried by key") {
            Reason::NotQueryable
        } else if s.starts_with("no exchange ") {
            // `node::fetch::UNKNOWN_EXCHANGE`: the provider forgot the exchange.
            Reason::UnknownExchange
        } else if has("signature does not verify") || has("is signed by another key") {
            Reason::BadSignature
        } else if has("malformed")
            || has("not well-formed CBOR")
            || has("not in canonical CBOR form")
            || has("has an unexpected shape")
            || has("this node understands version")
            || has("bytes, over the limit of")
            || has("hex characters")
        {
            Reason::Malformed
        } else if has("is not in the catalog") || has("publishes no dataset") {
            Reason::NotFound
        } else if has(" but came from ")
            || has("is addressed to")
            || has("not from its sender or not for this member")
            || has("belongs to another member")
            || has("does not match the call's signed commitment")
            || has("do not match the batch's signed root")
            || has("as many as it signs")
            || has("not a chunk boundary")
        {
            Reason::Mismatch
        } else if has("-byte limit of one answer") || has("the key is over") || has("a label of the call is over") {
            Reason::TooLarge
        } else if has("try again") || has("too many") {
            Reason::Busy
        } else if has("internal error") || has("cannot ") || has("not decided") {
            Reason::Internal
        } else {
            Reason::Other
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Reason::NotMember => "not_member",
            Reason::Malformed => "malformed",
            Reason::BadSignature => "bad_signature",
            Reason::Mismatch => "mismatch",
            Reason::Replay => "replay",
            Reason::ClockSkew => "clock_skew",
            Reason::NotFound => "not_found",
            Reason::NotShared => "not_shared",
            Reason::Withdrawn => "withdrawn",
            Reason::NeedsGrant => "needs_grant",
            Reason::UnknownGrant => "unknown_grant",
            Reason::NotCovered => "grant_not_covering",
            Reason::Revoked => "revoked",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::BudgetSpent => "budget_spent",
            Reason::NotAResume => "not_a_resume",
            Reason::OutsideTicket => "outside_ticket",
            Reason::NotQueryable => "not_queryable",
            Reason::UnknownExchange => "unknown_exchange",
            Reason::TooLarge => "too_large",
            Reason::Busy => "busy",
            Reason::Internal => "internal",
            Reason::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests;
