//! Listening for the gateway and the dashboard: the socket, HTTPS when configured, and the bounds on connections
//! (how many, their buffers, the time to send headers, and how long one may make no progress).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::DataDir;
use crate::config::GatewayConfig;
use crate::node::Node;

/// Connections open at once; past it new ones are closed as soon as accepted.
const MAX_CONNECTIONS: usize = 512;
/// Connections the kernel may hold for the accept loop (it caps this at `net.core.somaxconn`).
const BACKLOG: u32 = 4096;
/// Largest buffer per connection (request head included).
const MAX_BUF: usize = 64 * 1024;
/// Time to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that neither reads nor writes a byte for this long is closed (an idle
/// keep-alive connection, or a client that stopped reading a stream).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At shutdown, how long responses in progress may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the gateway (or the dashboard, which listens the same way) could not start: the node does
/// not start without it. `what` names the config section.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the {what} is set to listen on {addr}, beyond loopback, without TLS: secrets would cross the network in clear; set tls_cert and tls_key in [{what}] of {config}, or listen on 127.0.0.1"
    )]
    NeedsTls { what: &'static str, addr: SocketAddr, config: PathBuf },
    #[error("[{what}] in {config} sets {set} but not {missing}; give both for HTTPS, or neither")]
    HalfTls { what: &'static str, config: PathBuf, set: &'static str, missing: &'static str },
    #[error("cannot read the {what}'s TLS certificate {path}: {detail}")]
    Cert { what: &'static str, path: PathBuf, detail: String },
    #[error("cannot read the {what}'s TLS key {path}: {detail}")]
    Key { what: &'static str, path: PathBuf, detail: String },
    #[error("the {what}'s TLS certificate {cert} and key {key} cannot be used together: {detail}")]
    Tls { what: &'static str, cert: PathBuf, key: PathBuf, detail: String },
    #[error("cannot listen on {addr} for the {what}: {source} (check [{what}] listen in {config})")]
    Bind { what: &'static str, addr: SocketAddr, config: PathBuf, source: io::Error },
}

/// A listener, bound, and how it serves.
pub struct Bound {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    url: String,
    what: &'static str,
}

impl Bound {
    /// `http://ADDR:PORT` or `https://ADDR:PORT`, with the port actually bound.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Checks the configuration, loads the certificate and binds the socket.
pub async fn bind(cfg: &GatewayConfig, dir: &DataDir) -> Result<Bound, Error> {
    bind_http("gateway", cfg.listen, cfg.tls_cert.as_ref(), cfg.tls_key.as_ref(), dir).await
}

/// Binds an HTTP listener of the node: HTTPS with `tls_cert` and `tls_key`, and only HTTPS
/// beyond loopback. `what` names the config section (`gateway`, `dashboard`).
pub async fn bind_http(
    what: &'static str,
    listen: SocketAddr,
    tls_cert: Option<&PathBuf>,
    tls_key: Option<&PathBuf>,
    dir: &DataDir,
) -> Result<Bound, Error> {
    let config = dir.config();
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(acceptor(what, dir.resolve(cert), dir.resolve(key))?),
        (Some(_), None) => return Err(Error::HalfTls { what, config, set: "tls_cert", missing: "tls_key" }),
        (None, Some(_)) => return Err(Error::HalfTls { what, config, set: "tls_key", missing: "tls_cert" }),
        (None, None) => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        return Err(Error::NeedsTls { what, addr: listen, config });
    }
    let listener =
        listen_on(listen).map_err(|source| Error::Bind { what, addr: listen, config: config.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { what, addr: listen, config, source })?;
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    Ok(Bound { listener, tls, url, what })
}

/// A listening socket with a deep accept queue. `TcpListener::bind` asks for 128 pending
/// connections (std's value): a burst of applications connecting at once while the node is busy
/// overflows it, and the kernel then drops their SYNs, which clients resend only after a second
/// (measured in `make bench`: one overflow put a second on the p99 of the open-loop run).
pub fn listen_on(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

fn acceptor(what: &'static str, cert: PathBuf, key: PathBuf) -> Result<TlsAcceptor, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Cert { what, path: cert.clone(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(Error::Cert { what, path: cert, detail: "it holds no PEM certificate".into() });
    }
    let private = PrivateKeyDer::from_pem_file(&key).map_err(|e| Error::Key {
        what,
        path: key.clone(),
        detail: e.to_string(),
    })?;
    let tls_error = |e: rustls::Error| Error::Tls { what, cert: cert.clone(), key: key.clone(), detail: e.to_string() };
    // The provider is named rather than left to the process default: more than one may be
    // compiled in, and then rustls would not pick.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(tls_error)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Accepts connections until shutdown; each is served as one of `tasks`.
pub async fn serve(bound: Bound, node: Node, tasks: TaskTracker, shutdown: CancellationToken) {
    let app = super::router(node, tasks.clone());
    serve_router(bound, app, tasks, shutdown).await;
}

/// Serves `app` on `bound` until shutdown, under the connection bounds above.
pub async fn serve_router(bound: Bound, app: axum::Router, tasks: TaskTracker, shutdown: CancellationToken) {
    let Bound { listener, tls, url, what } = bound;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(url = %url, "{what} listening");
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait a moment rather than spin.
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{what} connection refused: too many open");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, app, shutdown) = (tls.clone(), app.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _slot = slot;
            connection(tcp, tls, app, shutdown).await;
        });
    }
}

async fn connection(tcp: TcpStream, tls: Option<TlsAcceptor>, app: axum::Router, shutdown: CancellationToken) {
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "HTTP listener: TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let io = TokioIo::new(Idle::new(stream, IDLE_TIMEOUT));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_BUF);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// A plain or TLS connection.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream that fails with `TimedOut` once it has moved no byte for `timeout` while someone
/// waited on it.
struct Idle<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<S> Idle<S> {
    fn new(inner: S, timeout: Duration) -> Idle<S> {
        Idle { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout }
    }

    fn progressed(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// On `Pending`, whether the deadline passed (the caller then fails the operation).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection made no progress")
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of 600 clients (fewer where the kernel caps the queue lower) connecting while
    /// nothing accepts them all complete their handshakes at once: the queue holds them. With
    /// std's 128 the kernel drops the SYNs past it and those clients wait out the one-second
    /// SYN retry (what the bound below tells apart; 600 loopback handshakes take milliseconds).
    #[tokio::test]
    async fn a_burst_of_connections_waits_in_the_accept_queue() {
        let listener = listen_on("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = listener.local_addr().expect("addr");
        // The kernel caps any backlog at net.core.somaxconn (4096 since Linux 5.4).
        let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|s| s.trim().parse().ok());
        let n = cap.unwrap_or(600usize).min(600);
        let connects = (0..n).map(|_| TcpStream::connect(addr));
        let all = futures::future::try_join_all(connects);
        let clients = tokio::time::timeout(Duration::from_millis(900), all)
            .await
            .expect("every client connected without a SYN retry")
            .expect("connects");
        assert_eq!(clients.len(), n);
    }

    #[tokio::test]
    async fn refuses_beyond_loopback_without_tls_and_half_a_tls_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dd = DataDir::new(dir.path());
        let open = GatewayConfig { listen: "0.0.0.0:0".parse().expect("addr"), ..GatewayConfig::default() };
        let err = bind(&open, &dd).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("beyond loopback") && err.contains("tls_cert"), "{err}");
        let half = GatewayConfig { tls_cert: Some("c.pem".into()), ..GatewayConfig::default() };
        let err = bind(&half, &dd).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("tls_key"), "{err}");
        let missing =
            GatewayConfig { tls_cert: Some("c.pem".into()), tls_key: Some("k.pem".into()), ..GatewayConfig::default() };
        let err = bind(&missing, &dd).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("c.pem"), "{err}");
        let local = GatewayConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..GatewayConfig::default() };
        let b = bind(&local, &dd).await.expect("binds on loopback");
        assert!(b.url().starts_with("http://127.0.0.1:") && !b.url().ends_with(":0"), "{}", b.url());
    }

    #[tokio::test]
    async fn an_idle_stream_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let err = tokio::io::AsyncReadExt::read(&mut idle, &mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
