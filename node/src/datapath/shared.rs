//! One TCP port for libp2p and the data path. The node accepts TCP connections itself and looks
//! at the first byte a client sends: a TLS record (0x16, a ClientHello) is a data-path
//! connection and goes to the node; anything else (multistream-select opens with a length byte,
//! 0x13) goes to libp2p, which upgrades it as before (TLS 1.3 + yamux). So a member's roster
//! addresses stay the only addresses it has, and a member that runs an older release, whose
//! libp2p gets the data path's ClientHello, just fails that handshake (the requester then falls
//! back to chunks over libp2p).
//!
//! This is a libp2p [`Transport`] over tokio's TCP written on libp2p-core's public trait:
//! listening and accepting are ours, dialing is a plain TCP connect.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::{BoxFuture, Ready};
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, tcp};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Longest a new connection may take to send its first byte.
const FIRST_BYTE: Duration = Duration::from_secs(10);
/// Connections waiting for their first byte at once; past it, new ones are closed at once so
/// silent sockets cannot pile up.
const PEEKING: usize = 256;
/// Accepted connections waiting for libp2p or the node to take them.
const QUEUE: usize = 64;

/// Where data-path connections go (the node's data server).
pub type DataConns = mpsc::Sender<(TcpStream, SocketAddr)>;

struct Accepted {
    listener: ListenerId,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
}

pub struct SharedTcp {
    data: Option<DataConns>,
    accepted_tx: mpsc::Sender<Accepted>,
    accepted_rx: mpsc::Receiver<Accepted>,
    events: VecDeque<TransportEvent<Ready<Result<tcp::tokio::TcpStream, std::io::Error>>, std::io::Error>>,
    listeners: HashMap<ListenerId, CancellationToken>,
    peeking: Arc<Semaphore>,
    waker: Option<Waker>,
}

impl SharedTcp {
    /// `data`: where TLS connections go; `None` hands every connection to libp2p (the data path
    /// is off).
    pub fn new(data: Option<DataConns>) -> SharedTcp {
        let (accepted_tx, accepted_rx) = mpsc::channel(QUEUE);
        SharedTcp {
            data,
            accepted_tx,
            accepted_rx,
            events: VecDeque::new(),
            listeners: HashMap::new(),
            peeking: Arc::new(Semaphore::new(PEEKING)),
            waker: None,
        }
    }

    fn push(&mut self, event: TransportEvent<Ready<Result<tcp::tokio::TcpStream, std::io::Error>>, std::io::Error>) {
        self.events.push_back(event);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl Drop for SharedTcp {
    /// The accept loops are tasks of their own: they stop with the transport (the swarm).
    fn drop(&mut self) {
        for stop in self.listeners.values() {
            stop.cancel();
        }
    }
}

/// `/ip4|ip6/A/tcp/P` (with an optional `/p2p/ID`) as a socket address.
pub fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) if ip.is_none() => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) if ip.is_none() => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) if ip.is_some() && port.is_none() => port = Some(p),
            Protocol::P2p(_) if port.is_some() => {}
            _ => return None,
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

fn multiaddr(a: SocketAddr) -> Multiaddr {
    Multiaddr::empty().with(a.ip().into()).with(Protocol::Tcp(a.port()))
}

impl Transport for SharedTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = Ready<Result<Self::Output, Self::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        let Some(sa) = socket_addr(&addr) else { return Err(TransportError::MultiaddrNotSupported(addr)) };
        // Bound here, synchronously, so a port in use fails `listen_on` (and the node's start).
        // With the gateway's deep accept queue (`gateway::conn`), not std's 128: members and
        // fetches reconnecting at once after a restart are not made to resend their SYNs.
        let listener = crate::gateway::listen_on(sa).map_err(TransportError::Other)?;
        let local = listener.local_addr().map_err(TransportError::Other)?;
        let stop = CancellationToken::new();
        self.listeners.insert(id, stop.clone());
        tokio::spawn(accept_loop(
            id,
            listener,
            local,
            self.data.clone(),
            self.accepted_tx.clone(),
            self.peeking.clone(),
            stop,
        ));
        self.push(TransportEvent::NewAddress { listener_id: id, listen_addr: multiaddr(local) });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.remove(&id) {
            Some(stop) => {
                stop.cancel();
                self.push(TransportEvent::ListenerClosed { listener_id: id, reason: Ok(()) });
                true
            }
            None => false,
        }
    }

    fn dial(&mut self, addr: Multiaddr, _opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(sa) = socket_addr(&addr) else { return Err(TransportError::MultiaddrNotSupported(addr)) };
        if sa.ip().is_unspecified() || sa.port() == 0 {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        Ok(Box::pin(async move {
            let s = TcpStream::connect(sa).await?;
            s.set_nodelay(true)?;
            Ok(tcp::tokio::TcpStream(s))
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(e) = self.events.pop_front() {
            return Poll::Ready(e);
        }
        match self.accepted_rx.poll_recv(cx) {
            Poll::Ready(Some(a)) if self.listeners.contains_key(&a.listener) => Poll::Ready(TransportEvent::Incoming {
                listener_id: a.listener,
                upgrade: futures::future::ready(Ok(tcp::tokio::TcpStream(a.stream))),
                local_addr: multiaddr(a.local),
                send_back_addr: multiaddr(a.remote),
            }),
            Poll::Ready(Some(_)) => {
                // A connection accepted just before its listener was removed: dropped.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            // The sender lives in `self`: never closed.
            Poll::Ready(None) | Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

async fn accept_loop(
    id: ListenerId,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    data: Option<DataConns>,
    to_libp2p: mpsc::Sender<Accepted>,
    peeking: Arc<Semaphore>,
    stop: CancellationToken,
) {
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, %local, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(data) = data.clone() else {
            let _ = to_libp2p.try_send(Accepted { listener: id, stream, local, remote });
            continue;
        };
        let Ok(permit) = peeking.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "too many connections waiting for their first byte; closed");
            continue;
        };
        let to_libp2p = to_libp2p.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut first = [0u8; 1];
            // Nothing sent in time, or the peer closed: dropped.
            let Ok(Ok(1)) = tokio::time::timeout(FIRST_BYTE, stream.peek(&mut first)).await else { return };
            if first[0] == TLS_HANDSHAKE {
                if data.try_send((stream, remote)).is_err() {
                    tracing::debug!(%remote, "data path busy; connection closed");
                }
            } else {
                // Waits (holding its peek slot) while libp2p's queue is full.
                let _ = to_libp2p.send(Accepted { listener: id, stream, local, remote }).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ip_and_tcp_addresses_are_taken() {
        let ok = |s: &str| socket_addr(&s.parse().expect("multiaddr"));
        assert_eq!(ok("/ip4/127.0.0.1/tcp/4001"), Some("127.0.0.1:4001".parse().expect("sa")));
        assert_eq!(ok("/ip6/::1/tcp/7"), Some("[::1]:7".parse().expect("sa")));
        assert!(ok("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWGzh8ZRCvZYdZsrDbGk3ptyQBAeKHUmB3mMGWu7nFpo4e").is_some());
        assert_eq!(ok("/ip4/127.0.0.1/udp/4001/quic-v1"), None);
        assert_eq!(ok("/dns4/zhejiang/tcp/4001"), None);
        assert_eq!(ok("/ip4/127.0.0.1/tcp/1/tcp/2"), None);
    }
}
