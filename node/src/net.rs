//! The libp2p side of a node: one task (the [`EventLoop`]) owns the swarm; everything else talks
//! to it through a cheap, cloneable [`NetHandle`] over a bounded channel, and receives what the
//! network says as [`Event`]s on another bounded channel.
//!
//! Transport: TCP + TLS 1.3 + yamux, and QUIC (TLS 1.3 inside); both authenticate both ends with
//! the member key (libp2p-tls certificates). The TCP listener is shared with the data path
//! ([`crate::datapath::shared`]): connections that open with a TLS record go to the node. No Noise, no plaintext. Authorization is the roster:
//! the allow list admits exactly the members of the roster in force, and is updated in place when
//! a newer roster is installed (removed members are disconnected at once).
//!
//! The event loop never does slow work: verification and storage of gossip and RPC requests
//! happen in the node's handlers, which report back (`Command::Validated`, `Command::Respond`).

mod behaviour;
pub mod codec;
mod event_loop;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deltafed_protocol::MemberId;
use libp2p::gossipsub::{MessageAcceptance, MessageId};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId, SwarmBuilder, Transport as _, gossipsub, tls, yamux};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

pub use event_loop::EventLoop;

/// Longest a TCP connection may take from accept to an authenticated, multiplexed connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Queue lengths between the event loop and the rest of the node.
const COMMAND_QUEUE: usize = 256;
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the network: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {detail} (check `listen` in deltafed.toml or DELTAFED_LISTEN)")]
    Listen { addr: String, detail: String },
    #[error("the network task has stopped")]
    Stopped,
    #[error("request to {peer} failed: {detail}")]
    Request { peer: String, detail: String },
    #[error("cannot publish: {0}")]
    Publish(String),
}

/// What the node knows of one member, for dialing and display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddrs {
    pub member: MemberId,
    pub addrs: Vec<Multiaddr>,
}

/// Members by PeerId, excluding ourselves.
pub type Members = BTreeMap<PeerId, MemberAddrs>;

/// A connected member as the network sees it.
#[derive(Debug, Clone)]
pub struct Connected {
    pub peer: PeerId,
    pub member: MemberId,
    pub addrs: Vec<Multiaddr>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct NetStatus {
    pub listen: Vec<Multiaddr>,
    pub connected: Vec<Connected>,
}

pub(crate) enum Command {
    Publish { data: Vec<u8>, reply: oneshot::Sender<Result<(), Error>> },
    Status { reply: oneshot::Sender<NetStatus> },
    SetMembers { members: Members },
    Validated { id: MessageId, source: PeerId, acceptance: MessageAcceptance },
    Respond { channel: ResponseChannel<Vec<u8>>, data: Vec<u8> },
    Request { peer: PeerId, data: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, Error>> },
}

/// What the network reports to the node.
pub enum Event {
    /// A gossip message awaiting validation; answer with [`NetHandle::validated`].
    Gossip { id: MessageId, source: PeerId, data: Vec<u8> },
    /// An RPC request; answer with [`NetHandle::respond`] (dropping the channel refuses it).
    Request { peer: PeerId, data: Vec<u8>, channel: ResponseChannel<Vec<u8>> },
    /// The first connection to a member was established (time to sync).
    MemberConnected { peer: PeerId },
}

/// A handle on the network task. Cheap to clone. Every method is cancel-safe: dropping the
/// future before it completes at most loses that one command.
#[derive(Clone)]
pub struct NetHandle {
    tx: mpsc::Sender<Command>,
    connected: watch::Receiver<BTreeSet<PeerId>>,
}

impl NetHandle {
    async fn send(&self, cmd: Command) -> Result<(), Error> {
        self.tx.send(cmd).await.map_err(|_| Error::Stopped)
    }

    /// Publishes on the catalog topic. Having no peer subscribed is not an error: members that
    /// are away catch up by sync when they connect.
    pub async fn publish(&self, data: Vec<u8>) -> Result<(), Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish { data, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    pub async fn status(&self) -> Result<NetStatus, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Status { reply }).await?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Replaces the member set (after a roster change): new members are allowed and dialed,
    /// removed ones disconnected.
    pub async fn set_members(&self, members: Members) -> Result<(), Error> {
        self.send(Command::SetMembers { members }).await
    }

    pub async fn validated(&self, id: MessageId, source: PeerId, acceptance: MessageAcceptance) -> Result<(), Error> {
        self.send(Command::Validated { id, source, acceptance }).await
    }

    pub async fn respond(&self, channel: ResponseChannel<Vec<u8>>, data: Vec<u8>) -> Result<(), Error> {
        self.send(Command::Respond { channel, data }).await
    }

    /// Whether `peer` (a member) is connected now.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.borrow().contains(peer)
    }

    /// Waits until `peer` is connected (`true`) or `limit` passes (`false`). Cancel-safe.
    pub async fn wait_connected(&self, peer: PeerId, limit: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(tokio::time::timeout(limit, rx.wait_for(|c| c.contains(&peer))).await, Ok(Ok(_)))
    }

    /// Waits until `peer` is not connected (`true`) or `limit` passes (`false`). Cancel-safe.
    pub async fn wait_disconnected(&self, peer: PeerId, limit: Duration) -> bool {
        let mut rx = self.connected.clone();
        matches!(tokio::time::timeout(limit, rx.wait_for(|c| !c.contains(&peer))).await, Ok(Ok(_)))
    }

    /// The members connected now.
    pub fn connected(&self) -> Vec<PeerId> {
        self.connected.borrow().iter().copied().collect()
    }

    /// Sends an RPC request to a connected member and waits for its response.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { peer, data, reply }).await?;
        rx.await.map_err(|_| Error::Stopped)?
    }
}

/// Settings the network needs from the node.
pub struct Settings {
    pub key: libp2p::identity::Keypair,
    pub federation: String,
    pub listen: Vec<Multiaddr>,
    pub members: Members,
    pub max_redial_interval: Duration,
    /// Where data-path connections on the TCP port go; `None`: the data path is off and every
    /// connection is libp2p's.
    pub data: Option<crate::datapath::shared::DataConns>,
}

/// Builds the swarm, starts listening, and returns the handle, the event stream and the loop to
/// spawn. Listening errors (a port in use, a bad address) are returned here, before anything runs.
pub fn new(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(NetHandle, mpsc::Receiver<Event>, EventLoop), Error> {
    let topic = gossipsub::IdentTopic::new(format!("/deltafed/{}/catalog/1", settings.federation));
    let max_members = u32::try_from(settings.members.len() + 1).unwrap_or(u32::MAX);
    let setup = |e: &dyn std::fmt::Display| Error::Setup(e.to_string());
    let mut swarm = SwarmBuilder::with_existing_identity(settings.key.clone())
        .with_tokio()
        .with_quic()
        // TCP is built by hand: its listener is shared with the data path, and the whole upgrade
        // (TLS and yamux) is bounded in time, which `with_tcp` lacks. Without that bound an idle
        // socket holds a pending-connection slot for as long as the peer likes, and a handful of
        // them from a non-member lock members out.
        .with_other_transport(|key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
            Ok(crate::datapath::shared::SharedTcp::new(settings.data.clone())
                .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                .authenticate(tls::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .timeout(HANDSHAKE_TIMEOUT))
        })
        .map_err(|e| setup(&e))?
        .with_dns()
        .map_err(|e| setup(&e))?
        .with_behaviour(|key| behaviour::build(key, &topic, max_members))
        .map_err(|e| setup(&e))?
        // Members stay connected while idle: the federation is small and connections are how
        // gossip reaches everyone within a second.
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(24 * 3600)))
        .build();
    for addr in &settings.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Listen { addr: addr.to_string(), detail: e.to_string() })?;
    }
    let (tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (connected_tx, connected) = watch::channel(BTreeSet::new());
    let event_loop = EventLoop::new(
        swarm,
        commands,
        events_tx,
        topic,
        settings.members,
        settings.max_redial_interval,
        connected_tx,
        shutdown,
    );
    Ok((NetHandle { tx, connected }, events, event_loop))
}
