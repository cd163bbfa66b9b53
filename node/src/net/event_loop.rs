//! The task that owns the swarm: one `select!` over swarm events, commands, the redial timer
//! and shutdown.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAcceptance};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{Command, Connected, Error, Event, Members, NetStatus};

const FIRST_REDIAL: Duration = Duration::from_millis(250);
const REDIAL_TICK: Duration = Duration::from_millis(250);
/// A connection that lasted this long was not refused: redial soon after it ends.
const STABLE: Duration = Duration::from_secs(10);

pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    topic: gossipsub::IdentTopic,
    members: Members,
    /// Next dial time and current backoff, per member not connected.
    redial: HashMap<PeerId, (Instant, Duration)>,
    max_redial: Duration,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, Error>>>,
    listen: Vec<Multiaddr>,
    /// When each connected member's first connection was established.
    up_since: HashMap<PeerId, Instant>,
    /// The members connected now, published for whoever waits on connectivity.
    connected: watch::Sender<BTreeSet<PeerId>>,
    shutdown: CancellationToken,
}

impl EventLoop {
    // Each argument is one distinct channel or setting handed over once by `net::new`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        topic: gossipsub::IdentTopic,
        members: Members,
        max_redial: Duration,
        connected: watch::Sender<BTreeSet<PeerId>>,
        shutdown: CancellationToken,
    ) -> EventLoop {
        let mut lp = EventLoop {
            swarm,
            commands,
            events,
            topic,
            members: Members::new(),
            redial: HashMap::new(),
            max_redial,
            pending: HashMap::new(),
            listen: Vec::new(),
            up_since: HashMap::new(),
            connected,
            shutdown,
        };
        lp.set_members(members);
        lp
    }

    /// Runs until shutdown is requested or every handle is dropped.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(REDIAL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = tick.tick() => self.redial_due(),
            }
        }
        tracing::debug!("network task stopped");
    }

    fn set_members(&mut self, members: Members) {
        let old: HashSet<PeerId> = self.members.keys().copied().collect();
        let new: HashSet<PeerId> = members.keys().copied().collect();
        for gone in old.difference(&new) {
            tracing::info!(peer = %gone, "member removed from the roster; disconnecting");
            self.swarm.behaviour_mut().members.disallow_peer(*gone);
            self.redial.remove(gone);
        }
        for added in new.difference(&old) {
            self.swarm.behaviour_mut().members.allow_peer(*added);
            self.redial.insert(*added, (Instant::now(), FIRST_REDIAL));
        }
        self.members = members;
    }

    fn redial_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> = self
            .redial
            .iter()
            .filter(|(p, (at, _))| *at <= now && !self.swarm.is_connected(p))
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            let Some(m) = self.members.get(&peer) else {
                continue;
            };
            if m.addrs.is_empty() {
                continue;
            }
            // QUIC first, one address at a time: request-response over QUIC carries about twice
            // the small requests per second of TCP + yamux here, so TCP is the fallback.
            let mut addrs = m.addrs.clone();
            addrs.sort_by_key(|a| !a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::QuicV1)));
            let opts = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .override_dial_concurrency_factor(std::num::NonZeroU8::MIN)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(member = %m.member, error = %e, "dial not started");
            }
            if let Some((at, backoff)) = self.redial.get_mut(&peer) {
                *at = now + *backoff;
                *backoff = (*backoff * 2).min(self.max_redial);
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { data, reply } => {
                let res = match self.swarm.behaviour_mut().gossip.publish(self.topic.clone(), data) {
                    Ok(_) => Ok(()),
                    // Nobody to tell right now (or already told): members catch up by sync.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic | gossipsub::PublishError::Duplicate) => {
                        Ok(())
                    }
                    Err(e) => Err(Error::Publish(e.to_string())),
                };
                let _ = reply.send(res);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::SetMembers { members } => self.set_members(members),
            Command::Validated { id, source, acceptance } => {
                self.swarm.behaviour_mut().gossip.report_message_validation_result(&id, &source, acceptance);
            }
            Command::Respond { channel, data } => {
                if self.swarm.behaviour_mut().rpc.send_response(channel, data).is_err() {
                    tracing::debug!("response not sent: the requester went away");
                }
            }
            Command::Request { peer, data, reply } => {
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, data);
                self.pending.insert(id, reply);
            }
        }
    }

    fn status(&self) -> NetStatus {
        let mut connected = Vec::new();
        for peer in self.swarm.connected_peers() {
            if let Some(m) = self.members.get(peer) {
                connected.push(Connected {
                    peer: *peer,
                    member: m.member.clone(),
                    addrs: m.addrs.clone(),
                    score: self.swarm.behaviour().gossip.peer_score(peer),
                });
            }
        }
        connected.sort_by(|a, b| a.member.cmp(&b.member));
        NetStatus { listen: self.listen.clone(), connected }
    }

    /// Hands an event to the node without waiting: when the node is overloaded the event is
    /// dropped (gossip is ignored and re-learned by sync; a request fails and is retried by its
    /// sender), which keeps the swarm responsive.
    fn emit(&mut self, ev: Event) {
        match self.events.try_send(ev) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Event::Gossip { id, source, .. })) => {
                tracing::warn!("node busy: gossip message ignored");
                self.swarm.behaviour_mut().gossip.report_message_validation_result(
                    &id,
                    &source,
                    MessageAcceptance::Ignore,
                );
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("node busy: network event dropped")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.listen.retain(|a| a != &address),
            SwarmEvent::ListenerError { error, .. } => tracing::error!(%error, "listener failed"),
            SwarmEvent::ConnectionEstablished { peer_id, num_established, endpoint, .. } => {
                // The redial entry stays (it is skipped while connected): if the connection is
                // closed again at once (the remote refuses us), the backoff keeps growing.
                self.up_since.entry(peer_id).or_insert_with(Instant::now);
                if let Some(m) = self.members.get(&peer_id)
                    && num_established.get() == 1
                {
                    tracing::info!(member = %m.member, addr = %endpoint.get_remote_address(), "member connected");
                    self.connected.send_modify(|c| {
                        c.insert(peer_id);
                    });
                    self.emit(Event::MemberConnected { peer: peer_id });
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. }
                if num_established == 0 && self.members.contains_key(&peer_id) =>
            {
                let cause = cause.map(|c| c.to_string()).unwrap_or_else(|| "closed".into());
                tracing::info!(peer = %peer_id, %cause, "member disconnected");
                self.connected.send_modify(|c| {
                    c.remove(&peer_id);
                });
                let lived = self.up_since.remove(&peer_id).map(|t| t.elapsed()).unwrap_or_default();
                let now = Instant::now();
                let entry = self.redial.entry(peer_id).or_insert((now, FIRST_REDIAL));
                if lived >= STABLE {
                    *entry = (now + FIRST_REDIAL, FIRST_REDIAL * 2);
                } else {
                    entry.0 = now + entry.1;
                    entry.1 = (entry.1 * 2).min(self.max_redial);
                }
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(from = %send_back_addr, %error, "incoming connection refused");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                self.emit(Event::Gossip { id: message_id, source: propagation_source, data: message.data });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(ev)) => self.on_rpc(ev),
            // A connection whose peer stopped answering pings is dead even if the socket has not
            // noticed (a TCP connection to a vanished host can linger for many minutes): close
            // it, so the member shows as disconnected and the redial loop takes over. (A peer
            // that does not speak ping at all is not dead: only timeouts count.)
            SwarmEvent::Behaviour(BehaviourEvent::Ping(libp2p::ping::Event {
                peer,
                connection,
                result: Err(e @ libp2p::ping::Failure::Timeout),
            })) => {
                tracing::info!(%peer, error = %e, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            _ => {}
        }
    }

    fn on_rpc(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.emit(Event::Request { peer, data: request, channel });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(Error::Request { peer: peer.to_string(), detail: error.to_string() }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
