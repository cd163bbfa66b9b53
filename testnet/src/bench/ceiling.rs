//! The ceiling libp2p itself puts on the node: two swarms in this process with the node's own
//! transport stack (TCP + TLS 1.3 + yamux, and QUIC) and its RPC codec, one asking, one
//! answering from memory with nothing else to do. Whatever the node adds (signatures, grants,
//! disk, provenance) can only come on top of this, so it bounds the bulk and query figures.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deltafed_node::net::codec::{Codec, PROTOCOL};
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, request_response};

type Rpc = request_response::Behaviour<Codec>;

fn swarm() -> Result<Swarm<Rpc>> {
    let s = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::tls::Config::new,
            libp2p::yamux::Config::default,
        )?
        .with_quic()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                Codec,
                [(PROTOCOL, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(60)),
            )
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(s)
}

/// Runs `total` requests with `in_flight` outstanding, each answered with `response` bytes.
/// Returns (requests per second, bytes per second) over the given transport (`tcp` or `quic`).
pub fn measure(transport: &str, total: usize, in_flight: usize, response: usize) -> Result<(f64, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let mut server = swarm()?;
        let mut client = swarm()?;
        let listen: Multiaddr = if transport == "quic" {
            "/ip4/127.0.0.1/udp/0/quic-v1".parse()?
        } else {
            "/ip4/127.0.0.1/tcp/0".parse()?
        };
        server.listen_on(listen)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        let server_id = *server.local_peer_id();
        let payload = vec![0x5au8; response];
        tokio::spawn(async move {
            loop {
                if let SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                }) = server.select_next_some().await
                {
                    let _ = server.behaviour_mut().send_response(channel, payload.clone());
                }
            }
        });
        client.dial(addr.with(libp2p::multiaddr::Protocol::P2p(server_id)))?;
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
                break;
            }
        }
        let request = vec![0u8; 64];
        let mut sent = 0usize;
        let mut done = 0usize;
        let mut bytes = 0u64;
        let start = Instant::now();
        while sent < in_flight.min(total) {
            client.behaviour_mut().send_request(&server_id, request.clone());
            sent += 1;
        }
        let deadline = start + Duration::from_secs(120);
        while done < total {
            anyhow::ensure!(Instant::now() < deadline, "libp2p ceiling: {done} of {total} answers in 120 s");
            match client.select_next_some().await {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => {
                    done += 1;
                    bytes += response.len() as u64;
                    if sent < total {
                        client.behaviour_mut().send_request(&server_id, request.clone());
                        sent += 1;
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                    return Err(anyhow::anyhow!("libp2p ceiling: request failed: {error}"));
                }
                _ => {}
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok::<_, anyhow::Error>((done as f64 / secs, bytes as f64 / secs))
    })
    .context("libp2p ceiling")
}
