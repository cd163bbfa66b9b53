//! The composed libp2p behaviour and how each part is configured.
//!
//! Order matters: the allow list comes first, so a peer that is not a member of the roster in
//! force is refused as soon as its connection is established (after the TLS handshake proved its
//! key, before any protocol stream opens), inbound and outbound alike.

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{allow_block_list, connection_limits, gossipsub, identity::Keypair, ping, request_response};

use deltafed_protocol::wire::MAX_GOSSIP_SIZE;

/// Fewest pending inbound connections allowed, whatever the federation's size.
const MIN_PENDING_INCOMING: u32 = 64;

use super::codec::{Codec, PROTOCOL};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub members: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    pub limits: connection_limits::Behaviour,
    pub gossip: gossipsub::Behaviour,
    pub rpc: request_response::Behaviour<Codec>,
    pub ping: ping::Behaviour,
}

/// Weight of one invalid message against the sender (P4 is quadratic in the count).
const INVALID_MESSAGE_WEIGHT: f64 = -10.0;

pub fn build(key: &Keypair, topic: &gossipsub::IdentTopic, max_members: u32) -> Result<Behaviour, BoxError> {
    let gossip_cfg = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        // Nothing is forwarded until our own checks (signature, membership, version) accept it.
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_SIZE)
        .heartbeat_interval(Duration::from_millis(700))
        // Identical bytes are the same message whoever forwards them.
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes()[..20].to_vec())
        })
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let mut gossip = gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gossip_cfg)
        .map_err(|e| format!("gossipsub: {e}"))?;

    // Scores: the catalog topic is quiet, so delivery-rate penalties (P3) would punish honest
    // members; only invalid messages (P4) count against a peer. All members may share one IP
    // (a test machine, a NAT), so colocation is not penalised either.
    let mut params = gossipsub::PeerScoreParams { ip_colocation_factor_weight: 0.0, ..Default::default() };
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        first_message_deliveries_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: INVALID_MESSAGE_WEIGHT,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    };
    params.topics.insert(topic.hash(), topic_params);
    gossip.with_peer_score(params, gossipsub::PeerScoreThresholds::default())?;
    gossip.subscribe(topic).map_err(|e| format!("subscribe to {topic}: {e}"))?;

    let rpc = request_response::Behaviour::with_codec(
        Codec,
        [(PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
    );
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(4))
        // Pending connections are bounded in time (the transport's handshake timeout) as well as
        // in number; the number leaves room for every member while strangers hold slots.
        .with_max_pending_incoming(Some(max_members.saturating_mul(4).max(MIN_PENDING_INCOMING)))
        .with_max_established_incoming(Some(max_members.saturating_mul(4)));
    Ok(Behaviour {
        members: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits),
        gossip,
        rpc,
        ping: ping::Behaviour::new(
            ping::Config::new().with_interval(Duration::from_secs(5)).with_timeout(Duration::from_secs(10)),
        ),
    })
}
