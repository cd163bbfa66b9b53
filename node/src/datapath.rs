//! The data path: fetched data goes over its own TLS connection, not libp2p's request-response.
//!
//! After the ticket (over libp2p), the requester opens a TCP connection to a TCP address the
//! roster gives the provider (the port libp2p listens on: see [`shared`]), runs mutual TLS with
//! the members' libp2p-tls certificates ([`tls`]: AES-GCM, TLS 1.3) and sends one frame, the
//! signed fetch request whose hash the ticket names. The provider checks that the TLS peer is a
//! member, that it signed the request and that the request opened one of its exchanges, and then
//! pushes the ticket's chunks down the stream in order, each framed, checking the grant before
//! each chunk leaves. Nothing is asked per chunk, so the transfer runs at the speed of the link,
//! the disk and AES-GCM, not of round trips.
//!
//! Frames (all lengths big-endian):
//! - requester → provider, once: `u32 length`, the signed `FetchRequest` (at most 64 KiB).
//! - provider → requester, per chunk: `0x00`, `u32 length`, the chunk's bytes; or once, to stop:
//!   `0x01`, `u32 length`, a UTF-8 reason (at most 4 KiB); then the provider closes.

pub mod shared;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest from TCP connect (or accept) to the first frame.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Longest either end waits for the other to send or take anything, mid-transfer, before it
/// gives the stream up (the requester then resumes with a new ticket).
pub const STALL: Duration = Duration::from_secs(60);
/// Largest request frame: a signed fetch request is a few hundred bytes.
pub const MAX_REQUEST: u32 = 64 * 1024;
/// Largest refusal reason.
pub const MAX_REASON: u32 = 4096;
pub const TAG_CHUNK: u8 = 0;
pub const TAG_REFUSED: u8 = 1;

pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Completes the server side of a data-path handshake; returns the stream and the peer's
/// PeerId (its membership is the caller's to check).
pub async fn accept(configs: &tls::Configs, tcp: TcpStream) -> Result<(ServerStream, PeerId), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(configs.server.clone());
    let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("TLS handshake: {e}")),
        Err(_) => return Err("TLS handshake timed out".into()),
    };
    let peer = tls::peer_of(tls.get_ref().1.peer_certificates()).ok_or("no peer certificate")?;
    Ok((tls, peer))
}

/// Opens a data-path connection to `peer` at the first of `addrs` that answers.
pub async fn connect(configs: &tls::Configs, peer: PeerId, addrs: &[Multiaddr]) -> Result<ClientStream, String> {
    let client = configs.client_for(peer).map_err(|e| format!("TLS configuration: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(client);
    let mut last = "the roster lists no TCP address for it".to_string();
    for addr in addrs {
        let sockets = match resolve(addr).await {
            Ok(s) => s,
            Err(e) => {
                last = e;
                continue;
            }
        };
        for sa in sockets {
            let attempt = async {
                let tcp = TcpStream::connect(sa).await.map_err(|e| format!("connect {sa}: {e}"))?;
                tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                connector.connect(tls::server_name(), tcp).await.map_err(|e| format!("TLS handshake with {sa}: {e}"))
            };
            match tokio::time::timeout(HANDSHAKE, attempt).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{sa} did not complete the handshake in {}s", HANDSHAKE.as_secs()),
            }
        }
    }
    Err(last)
}

/// The socket addresses of a roster address, if it is a TCP one (`/ip4`, `/ip6`, `/dns`,
/// `/dns4`, `/dns6`, then `/tcp/P`). Names are resolved with hickory, as libp2p's DNS transport
/// does (the libc resolver is absent from a static image).
async fn resolve(addr: &Multiaddr) -> Result<Vec<SocketAddr>, String> {
    if let Some(sa) = shared::socket_addr(addr) {
        return Ok(vec![sa]);
    }
    let mut it = addr.iter();
    let (host, v4, v6) = match it.next() {
        Some(Protocol::Dns(h)) => (h, true, true),
        Some(Protocol::Dns4(h)) => (h, true, false),
        Some(Protocol::Dns6(h)) => (h, false, true),
        _ => return Err(format!("{addr} is not a TCP address")),
    };
    let Some(Protocol::Tcp(port)) = it.next() else { return Err(format!("{addr} is not a TCP address")) };
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| format!("DNS configuration: {e}"))?
        .build()
        .map_err(|e| format!("DNS configuration: {e}"))?;
    let ips = resolver.lookup_ip(host.as_ref()).await.map_err(|e| format!("resolving {host}: {e}"))?;
    let out: Vec<SocketAddr> = ips
        .iter()
        .filter(|ip| (ip.is_ipv4() && v4) || (ip.is_ipv6() && v6))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    if out.is_empty() { Err(format!("{host} has no address")) } else { Ok(out) }
}

pub async fn write_request<W: AsyncWrite + Unpin>(w: &mut W, request: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(request.len()).map_err(|_| std::io::Error::other("request too large"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(request).await?;
    w.flush().await
}

pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, String> {
    let len = r.read_u32().await.map_err(|e| format!("reading the request: {e}"))?;
    if len > MAX_REQUEST {
        return Err(format!("a request frame of {len} bytes (at most {MAX_REQUEST})"));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await.map_err(|e| format!("reading the request: {e}"))?;
    Ok(buf)
}

/// A frame header: its tag and its length.
pub fn header(tag: u8, len: u32) -> [u8; 5] {
    let l = len.to_be_bytes();
    [tag, l[0], l[1], l[2], l[3]]
}

pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, u32)> {
    let mut h = [0u8; 5];
    r.read_exact(&mut h).await?;
    Ok((h[0], u32::from_be_bytes([h[1], h[2], h[3], h[4]])))
}

/// Sends a refusal frame (best effort: the provider closes right after).
pub async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, reason: &str) {
    let mut bytes = reason.as_bytes();
    if bytes.len() > MAX_REASON as usize {
        let mut end = MAX_REASON as usize;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        bytes = &bytes[..end];
    }
    let len = u32::try_from(bytes.len()).unwrap_or(0);
    let _ = w.write_all(&header(TAG_REFUSED, len)).await;
    let _ = w.write_all(bytes).await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(seed: u8) -> (tls::Configs, PeerId) {
        let key = crate::identity::keypair(&deltafed_protocol::SecretKey::from_seed([seed; 32]));
        let peer = key.public().to_peer_id();
        (tls::Configs::new(&key).expect("configs"), peer)
    }

    /// Both ends name each other by PeerId; a client expecting another peer refuses the server.
    #[tokio::test]
    async fn the_handshake_names_both_peers_and_checks_the_expected_one() {
        let (server, server_id) = configs(1);
        let (client, client_id) = configs(2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/{}", listener.local_addr().expect("addr").port()).parse().expect("multiaddr");
        let accepting = tokio::spawn(async move {
            let mut named = Vec::new();
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.expect("accept");
                if let Ok((mut s, peer)) = accept(&server, tcp).await {
                    named.push(peer);
                    let frame = read_request(&mut s).await.expect("request");
                    assert_eq!(frame, b"hello");
                }
            }
            named
        });
        let mut s = connect(&client, server_id, std::slice::from_ref(&addr)).await.expect("connect");
        write_request(&mut s, b"hello").await.expect("write");
        let (other, _) = configs(3);
        let wrong = configs(4).1;
        let refused = connect(&other, wrong, std::slice::from_ref(&addr)).await;
        assert!(refused.is_err(), "a server that is not the expected peer is refused");
        assert_eq!(accepting.await.expect("task"), vec![client_id]);
    }
}
