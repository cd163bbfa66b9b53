//! The metrics listener: `GET /metrics`, `GET /healthz` (alive) and `GET /readyz` (ready), on
//! `[metrics] listen`, apart from the gateway and the admin socket.
//!
//! It is bound before the database opens (a port in use stops the start, as the gateway's does)
//! and serves from then on, so a probe sees the node alive and not yet ready while it opens its
//! database, and not ready again once it is shutting down. Read-only and tokenless: the default
//! is loopback; beyond it the node warns (Kubernetes probes and a scraper on the pod network
//! need it there, a NetworkPolicy or firewall is what restricts it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Format;
use crate::DataDir;
use crate::config::MetricsConfig;
use crate::node::Node;

/// Connections open at once (scrapers and probes hold few); past it new ones are closed.
const MAX_CONNECTIONS: usize = 32;
/// Scrapes rendered at once: each reads the stores.
const MAX_RENDERS: usize = 2;
/// Time to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is closed (gracefully: the request in progress finishes) after this long, so an
/// idle keep-alive connection cannot hold a place for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);
/// How long a readiness check waits for the network task's answer.
const NET_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scrape may take to read the stores.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot listen on {addr} for metrics: {source} (check [metrics] listen in {config}, DELTAFED_METRICS_LISTEN or --metrics-listen)"
    )]
    Bind { addr: SocketAddr, config: PathBuf, source: std::io::Error },
}

/// The metrics socket, bound.
pub struct Bound {
    listener: TcpListener,
    url: String,
}

impl Bound {
    /// `http://ADDR:PORT`, with the port actually bound.
    pub fn url(&self) -> &str {
        &self.url
    }
}

pub async fn bind(cfg: &MetricsConfig, dir: &DataDir) -> Result<Bound, Error> {
    let config = dir.config();
    let listener = TcpListener::bind(cfg.listen).await.map_err(|source| Error::Bind {
        addr: cfg.listen,
        config: config.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: cfg.listen, config, source })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "metrics and health listen beyond loopback, without authentication: whoever reaches the port reads the node's counters (member names included); restrict it with a firewall or a NetworkPolicy"
        );
    }
    Ok(Bound { listener, url: format!("http://{addr}") })
}

const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const STOPPING: u8 = 2;

/// Where the node is in its life, for `/readyz`; the node once it exists, for `/metrics`.
pub struct Health {
    phase: AtomicU8,
    node: OnceLock<Node>,
}

impl Health {
    pub fn starting() -> Arc<Health> {
        Arc::new(Health { phase: AtomicU8::new(STARTING), node: OnceLock::new() })
    }

    /// Every task of the node runs: from now on readiness is the node's own state.
    pub fn running(&self, node: Node) {
        let _ = self.node.set(node);
        self.phase.store(RUNNING, Ordering::Release);
    }

    /// Shutdown began: not ready from now on.
    pub fn stopping(&self) {
        self.phase.store(STOPPING, Ordering::Release);
    }

    fn node(&self) -> Option<&Node> {
        self.node.get()
    }

    /// `Ok` when the node should be sent traffic, or why not.
    async fn ready(&self) -> Result<(), String> {
        match self.phase.load(Ordering::Acquire) {
            STARTING => return Err("starting: opening the database and the network".into()),
            STOPPING => return Err("shutting down".into()),
            _ => {}
        }
        let node = self.node().ok_or_else(|| "starting".to_string())?;
        node.database_answers().map_err(|e| format!("the database does not answer: {e}"))?;
        if node.roster().roster.key_of(node.member()).is_none() {
            return Err(format!("the roster in force does not list {}", node.member()));
        }
        match tokio::time::timeout(NET_TIMEOUT, node.net().status()).await {
            Ok(Ok(s)) if !s.listen.is_empty() => Ok(()),
            Ok(Ok(_)) => Err("the network is not listening yet".into()),
            Ok(Err(e)) => Err(format!("the network does not answer: {e}")),
            Err(_) => Err(format!("the network did not answer within {}s", NET_TIMEOUT.as_secs())),
        }
    }
}

#[derive(Clone)]
struct Served {
    health: Arc<Health>,
    renders: Arc<Semaphore>,
}

fn router(health: Arc<Health>) -> Router {
    let state = Served { health, renders: Arc::new(Semaphore::new(MAX_RENDERS)) };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "not found: this listener serves /metrics, /healthz and /readyz\n")
        })
        .with_state(state)
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(s): State<Served>) -> Response {
    match s.health.ready().await {
        Ok(()) => json(StatusCode::OK, serde_json::json!({ "status": "ready" })),
        Err(reason) => {
            json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "status": "not ready", "reason": reason }))
        }
    }
}

async fn metrics(State(s): State<Served>, headers: HeaderMap) -> Response {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    let Some(node) = s.health.node().cloned() else {
        return unavailable("starting: no metrics yet".into());
    };
    let Ok(_permit) = s.renders.clone().try_acquire_owned() else {
        return unavailable("busy: other scrapes are being answered".into());
    };
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let reader = node.clone();
    let read = tokio::time::timeout(RENDER_TIMEOUT, tokio::task::spawn_blocking(move || reader.metrics_snapshot()));
    let snapshot = match read.await {
        Ok(Ok(Ok(snap))) => snap,
        Ok(Ok(Err(e))) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the node's state: {e}\n")).into_response();
        }
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("the scrape failed: {e}\n")).into_response(),
        Err(_) => return unavailable(format!("the stores did not answer within {}s", RENDER_TIMEOUT.as_secs())),
    };
    match node.metrics().render(&snapshot, format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

/// Accepts connections until shutdown; each is served as one of `tasks`.
pub async fn serve(bound: Bound, health: Arc<Health>, tasks: TaskTracker, shutdown: CancellationToken) {
    let Bound { listener, url } = bound;
    let app = router(health);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(url = %url, "metrics and health listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _slot = slot;
            connection(tcp, app, shutdown).await;
        });
    }
}

async fn connection(tcp: TcpStream, app: Router, shutdown: CancellationToken) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => return,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(RENDER_TIMEOUT, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "metrics connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_a_free_port_and_answers_alive_but_not_ready_before_the_node() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dd = DataDir::new(dir.path());
        let cfg = MetricsConfig { listen: "127.0.0.1:0".parse().expect("addr") };
        let bound = bind(&cfg, &dd).await.expect("binds");
        assert!(bound.url().starts_with("http://127.0.0.1:") && !bound.url().ends_with(":0"), "{}", bound.url());
        let taken: SocketAddr = bound.url().trim_start_matches("http://").parse().expect("addr");
        let err = bind(&MetricsConfig { listen: taken }, &dd).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("[metrics] listen"), "{err}");

        let health = Health::starting();
        let app = router(health.clone());
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                let req = axum::http::Request::get(path).body(axum::body::Body::empty()).expect("request");
                let resp = tower::ServiceExt::oneshot(app, req).await.expect("answers");
                let status = resp.status();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
                (status, String::from_utf8_lossy(&body).to_string())
            }
        };
        assert_eq!(call("/healthz").await.0, StatusCode::OK);
        let (status, body) = call("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("starting"), "{body}");
        assert_eq!(call("/metrics").await.0, StatusCode::SERVICE_UNAVAILABLE);
        health.stopping();
        let (status, body) = call("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("shutting down"), "{body}");
        assert_eq!(call("/nothing").await.0, StatusCode::NOT_FOUND);
    }
}
