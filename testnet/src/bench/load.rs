//! An HTTP/1.1 load generator for the gateway figures, in two modes:
//!
//! - closed loop ([`closed`]): `conns` connections, each sending its next call as soon as the
//!   last one is answered: capacity, and the lone-call latency with `conns = 1`;
//! - open loop ([`open`]): calls scheduled at a fixed rate whatever the server does, each timed
//!   from its *scheduled* send time, so a stall shows as latency of every call that should have
//!   gone out during it (no coordinated omission). A call that finds no idle connection opens
//!   one, up to a cap; past it, it waits, and the wait counts.
//!
//! The clients are tasks on one thread, so the generator takes at most one core from the
//! processes it measures. Its timer ticks every millisecond, so calls are sent in millisecond
//! bursts; each is still timed from its own schedule.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What each call asks: a path, and the bearer token.
#[derive(Clone)]
pub struct Target {
    pub addr: std::net::SocketAddr,
    pub token: Option<String>,
}

impl Target {
    /// A gateway application on the requester allowed `provider/records` without a rate that
    /// matters, and the requester's gateway address: what the gateway rows call through.
    pub fn requester_app(fed: &crate::Federation, app: &str) -> Result<Target> {
        let added =
            fed.json("requester", &["app", "add", app, "--datasets", "provider/records", "--rate", "1000000"])?;
        let token = added["token"].as_str().context("app add printed no token")?.to_string();
        let url = fed.gateway_url("requester")?;
        let addr = url
            .strip_prefix("http://")
            .context("the gateway is not plain HTTP on loopback")?
            .trim_end_matches('/')
            .parse()
            .with_context(|| format!("gateway url {url}"))?;
        Ok(Target { addr, token: Some(token) })
    }
}

async fn connect(t: &Target) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(t.addr).await.with_context(|| format!("connecting to {}", t.addr))?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// The body of `GET path` from `addr`, on a connection of its own (the nodes' /metrics).
pub fn get_text(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut send = connect(&Target { addr, token: None }).await?;
        send.ready().await?;
        let req = hyper::Request::get(path).header("host", addr.to_string()).body(Empty::new())?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("GET {path} from {addr}: {status}");
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}

/// One call; `Ok(false)` when the server answered with an error status (counted, not fatal:
/// a run reports how many calls failed rather than stopping at the first 503).
async fn call(send: &mut SendRequest<Empty<Bytes>>, t: &Target, path: &str) -> Result<bool> {
    let mut req = hyper::Request::get(path).header("host", t.addr.to_string());
    if let Some(tok) = &t.token {
        req = req.header("authorization", format!("Bearer {tok}"));
    }
    send.ready().await?;
    let resp = send.send_request(req.body(Empty::new())?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status.is_client_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS {
        // A mistake of the benchmark itself (bad token, unknown dataset): stop.
        bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(status.is_success())
}

/// Calls answered with an error status in the last run of this thread (see [`call`]).
pub fn failures() -> u64 {
    FAILED.with(|f| f.replace(0))
}

thread_local! {
    static FAILED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn failed() {
    FAILED.with(|f| f.set(f.get() + 1));
}

/// `total` calls over `conns` connections, closed loop; (calls/s, sorted latencies in ms).
pub fn closed(t: &Target, conns: usize, total: usize, path: impl Fn(usize) -> String) -> Result<(f64, Vec<f64>)> {
    let per = total.div_ceil(conns);
    let paths: Vec<Vec<String>> = (0..conns).map(|c| (0..per).map(|i| path(c * per + i)).collect()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for list in paths {
            let t = t.clone();
            tasks.spawn(async move {
                let mut send = connect(&t).await?;
                let mut lat = Vec::with_capacity(list.len());
                for p in list {
                    let t0 = Instant::now();
                    if !call(&mut send, &t, &p).await? {
                        failed();
                    }
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                anyhow::Ok(lat)
            });
        }
        let mut all = Vec::with_capacity(total);
        while let Some(r) = tasks.join_next().await {
            all.extend(r??);
        }
        let secs = start.elapsed().as_secs_f64();
        all.sort_by(f64::total_cmp);
        Ok((all.len() as f64 / secs, all))
    })
}

/// What an open-loop run saw.
pub struct OpenRun {
    /// Calls answered per second over the run.
    pub achieved: f64,
    /// Sorted latencies from each call's scheduled send time, ms.
    pub latencies: Vec<f64>,
    /// p99 of each second of the run, to show drift.
    pub p99_by_second: Vec<f64>,
    /// Each call's scheduled send (seconds into the run) and latency (ms), in answer order.
    pub samples: Vec<(f64, f64)>,
    pub connections: usize,
}

/// Calls offered at `rate` per second for `secs`, open loop, at most `max_conns` connections.
pub fn open(t: &Target, rate: f64, secs: f64, max_conns: usize, path: impl Fn(usize) -> String) -> Result<OpenRun> {
    let n = (rate * secs) as usize;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let (idle_tx, mut idle_rx) = tokio::sync::mpsc::unbounded_channel::<SendRequest<Empty<Bytes>>>();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<(bool, f64, f64)>>();
        let start = Instant::now();
        let mut opened = 0usize;
        // Each path is made when its call is due: a long run holds no list of them.
        for i in 0..n {
            let p = path(i);
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            // A new connection is opened by the call that needs it, so a slow connect delays
            // that call (its latency counts it) and not the schedule of every call after it.
            let send = match idle_rx.try_recv() {
                Ok(s) => Some(s),
                Err(_) if opened < max_conns => {
                    opened += 1;
                    None
                }
                // Every connection busy: wait for one; the wait is part of this call's latency.
                Err(_) => Some(idle_rx.recv().await.context("no connection came back")?),
            };
            let (t, idle, done) = (t.clone(), idle_tx.clone(), done_tx.clone());
            tokio::spawn(async move {
                let mut send = match send {
                    Some(s) => s,
                    None => match connect(&t).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = done.send(Err(e));
                            return;
                        }
                    },
                };
                let r = call(&mut send, &t, &p).await;
                let end = Instant::now();
                let lat = end.saturating_duration_since(due).as_secs_f64() * 1e3;
                let _ = done.send(r.map(|ok| (ok, due.duration_since(start).as_secs_f64(), lat)));
                let _ = idle.send(send);
            });
        }
        drop(done_tx);
        let mut samples = Vec::with_capacity(n);
        while let Some(r) = done_rx.recv().await {
            let (ok, at, lat) = r?;
            if !ok {
                failed();
            }
            samples.push((at, lat));
        }
        let elapsed = start.elapsed().as_secs_f64();
        let seconds = secs.ceil() as usize;
        let mut by_second: Vec<Vec<f64>> = vec![Vec::new(); seconds.max(1)];
        for (at, lat) in &samples {
            by_second[(*at as usize).min(seconds.max(1) - 1)].push(*lat);
        }
        let p99_by_second = by_second
            .into_iter()
            .map(|mut v| {
                v.sort_by(f64::total_cmp);
                super::percentile(&v, 0.99)
            })
            .collect();
        let mut latencies: Vec<f64> = samples.iter().map(|(_, l)| *l).collect();
        latencies.sort_by(f64::total_cmp);
        Ok(OpenRun {
            achieved: latencies.len() as f64 / elapsed,
            latencies,
            p99_by_second,
            samples,
            connections: opened,
        })
    })
}

/// A bare HTTP server on the same stack as the gateway (axum on hyper, two worker threads like
/// the node's runtime) answering every GET with a small JSON body: the baseline for what HTTP
/// alone costs. Runs until the returned guard is dropped.
pub struct NoopServer {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NoopServer {
    pub fn start() -> Result<NoopServer> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
                let app = axum::Router::new().fallback(|| async { axum::Json(serde_json::json!({"ok": true})) });
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(NoopServer { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for NoopServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
