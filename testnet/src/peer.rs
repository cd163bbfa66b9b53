//! A test peer: a real libp2p swarm (TCP + TLS + yamux, gossipsub, the deltafed RPC protocol)
//! under the test's control, to play a non-member or a misbehaving member. It runs as a task and
//! records everything it observes, so tests can assert on what it did and did not learn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deltafed_node::identity;
use deltafed_node::net::codec::{Codec, PROTOCOL};
use deltafed_protocol::SecretKey;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, gossipsub, request_response, tcp, tls, yamux};
use tokio::sync::{mpsc, oneshot};

/// What the test peer saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Connected(PeerId),
    Closed(PeerId),
    DialFailed(String),
    Subscribed(PeerId),
    Message(Vec<u8>),
    Response(Vec<u8>),
    RequestFailed(String),
}

enum Cmd {
    Dial(Multiaddr),
    Publish(Vec<u8>),
    Request(PeerId, Vec<u8>),
    Call(PeerId, Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossip: gossipsub::Behaviour,
    rpc: request_response::Behaviour<Codec>,
}

/// How a test peer answers the RPC requests members send it: the encoded request in, the encoded
/// response out (`None`: no answer, the member sees the request fail).
pub type Answerer = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Which requests a test peer holds: never answered, their streams kept open while it runs, so
/// the member waits on its own timeout (a member that does not answer, rather than one that
/// fails at once).
pub type Holder = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

pub struct TestPeer {
    cmds: mpsc::Sender<Cmd>,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub peer_id: PeerId,
}

impl TestPeer {
    /// Spawns the peer on the current tokio runtime; it answers no request.
    pub fn spawn(key: &SecretKey, federation: &str) -> Result<TestPeer> {
        TestPeer::spawn_answering(key, federation, Arc::new(|_| None))
    }

    /// Spawns the peer on the current tokio runtime; `answer` answers the requests it receives,
    /// so it can play a (misbehaving) provider.
    pub fn spawn_answering(key: &SecretKey, federation: &str, answer: Answerer) -> Result<TestPeer> {
        TestPeer::spawn_holding(key, federation, answer, Arc::new(|_| false))
    }

    /// [`TestPeer::spawn_answering`], holding the requests `hold` picks instead of answering them.
    pub fn spawn_holding(key: &SecretKey, federation: &str, answer: Answerer, hold: Holder) -> Result<TestPeer> {
        let keypair = identity::keypair(key);
        let peer_id = keypair.public().to_peer_id();
        let topic = gossipsub::IdentTopic::new(format!("/deltafed/{federation}/catalog/1"));
        let t = topic.clone();
        let mut swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(tcp::Config::default(), tls::Config::new, yamux::Config::default)?
            .with_quic()
            .with_behaviour(move |key| {
                // Large enough to send oversized messages on purpose.
                let cfg = gossipsub::ConfigBuilder::default()
                    .max_transmit_size(2 * 1024 * 1024)
                    .validation_mode(gossipsub::ValidationMode::Permissive)
                    .build()?;
                let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)?;
                gossip.subscribe(&t)?;
                let rpc = request_response::Behaviour::with_codec(
                    Codec,
                    [(PROTOCOL, request_response::ProtocolSupport::Full)],
                    // Callers give each request its own timeout (`call`); the stream outlives it.
                    request_response::Config::default().with_request_timeout(Duration::from_secs(300)),
                );
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour { gossip, rpc })
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let (cmds, mut rx) = mpsc::channel::<Cmd>(64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            let push = |s: Seen| log.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            let mut held = Vec::new();
            let mut calls: HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>> =
                HashMap::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => match cmd {
                        None => break,
                        Some(Cmd::Dial(a)) => if let Err(e) = swarm.dial(a) { push(Seen::DialFailed(e.to_string())) },
                        Some(Cmd::Publish(d)) => { let _ = swarm.behaviour_mut().gossip.publish(topic.clone(), d); }
                        Some(Cmd::Request(p, d)) => { swarm.behaviour_mut().rpc.send_request(&p, d); }
                        Some(Cmd::Call(p, d, reply)) => { calls.insert(swarm.behaviour_mut().rpc.send_request(&p, d), reply); }
                    },
                    ev = swarm.select_next_some() => match ev {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => push(Seen::Connected(peer_id)),
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => push(Seen::Closed(peer_id)),
                        SwarmEvent::OutgoingConnectionError { error, .. } => push(Seen::DialFailed(error.to_string())),
                        SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed { peer_id, .. })) => push(Seen::Subscribed(peer_id)),
                        SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message { message, .. })) => push(Seen::Message(message.data)),
                        SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message { message: request_response::Message::Response { request_id, response }, .. })) => match calls.remove(&request_id) {
                            Some(reply) => { let _ = reply.send(Ok(response)); }
                            None => push(Seen::Response(response)),
                        },
                        SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::Message { message: request_response::Message::Request { request, channel, .. }, .. })) => {
                            if hold(&request) {
                                held.push(channel);
                            } else if let Some(response) = answer(&request) {
                                let _ = swarm.behaviour_mut().rpc.send_response(channel, response);
                            }
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Rpc(request_response::Event::OutboundFailure { request_id, error, .. })) => match calls.remove(&request_id) {
                            Some(reply) => { let _ = reply.send(Err(error.to_string())); }
                            None => push(Seen::RequestFailed(error.to_string())),
                        },
                        _ => {}
                    },
                }
            }
        });
        Ok(TestPeer { cmds, seen, peer_id })
    }

    async fn send(&self, c: Cmd) -> Result<()> {
        self.cmds.send(c).await.map_err(|_| anyhow::anyhow!("test peer stopped"))
    }

    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.send(Cmd::Dial(addr)).await
    }

    pub async fn publish(&self, data: Vec<u8>) -> Result<()> {
        self.send(Cmd::Publish(data)).await
    }

    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<()> {
        self.send(Cmd::Request(peer, data)).await
    }

    /// Sends an RPC request and waits for its own answer (or failure), up to `timeout`.
    pub async fn call(&self, peer: PeerId, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Call(peer, data, reply)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(e))) => bail!("test peer: the request failed: {e}"),
            Ok(Err(_)) => bail!("test peer stopped"),
            Err(_) => bail!("test peer: no answer within {timeout:?}"),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until something matching `pred` has been seen.
    pub async fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> Result<Seen> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.seen().into_iter().find(|s| pred(s)) {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("test peer: timed out after {timeout:?} waiting for {what}; saw {:?}", self.seen());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The PeerId of a member's data dir key, and its TCP address in a local testnet.
pub fn member_addr(dir: &std::path::Path, port: u16) -> Result<(PeerId, Multiaddr)> {
    member_addr_over(dir, port, Transport::Tcp)
}

/// How a test peer reaches a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Quic,
}

/// The PeerId of a member's data dir key, and its address over `transport` in a local testnet
/// (a member listens on TCP and UDP port P+i).
pub fn member_addr_over(dir: &std::path::Path, port: u16, transport: Transport) -> Result<(PeerId, Multiaddr)> {
    let key = deltafed_node::keyfile::read(&dir.join("node.key"))?;
    let peer = identity::peer_id(&key.public()).context("key has no PeerId")?;
    let addr: Multiaddr = match transport {
        Transport::Tcp => format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"),
        Transport::Quic => format!("/ip4/127.0.0.1/udp/{port}/quic-v1/p2p/{peer}"),
    }
    .parse()?;
    Ok((peer, addr))
}
