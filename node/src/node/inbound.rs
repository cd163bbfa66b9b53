//! What members ask of us: each RPC request is routed to the concept that answers it. The
//! sender is identified by the connection (its authenticated PeerId), checked against the roster
//! in force here, before anything else is looked at.

use std::num::NonZeroU32;

use deltafed_protocol::{cbor, wire};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use libp2p::PeerId;
use libp2p::gossipsub::MessageId;
use libp2p::request_response::ResponseChannel;

use super::Node;
use crate::Config;
use crate::metrics::{OTHER_PEER, Rpc};
use crate::net::Event;

/// Most witnessed checkpoints sent to a verifier at once.
const MAX_WITNESSES: usize = 512;

/// A network event with its request decoded, so that its sender's rate can be applied to it
/// before it takes a handler.
pub(super) enum Inbound {
    Gossip { id: MessageId, source: PeerId, data: Vec<u8> },
    Request { peer: PeerId, req: Result<wire::Request, cbor::Error>, channel: ResponseChannel<Vec<u8>> },
    MemberConnected { peer: PeerId },
}

impl Inbound {
    /// Decodes a request (in the sending member's own turn, not in a shared handler).
    pub(super) fn decode(ev: Event) -> Inbound {
        match ev {
            Event::Gossip { id, source, data } => Inbound::Gossip { id, source, data },
            Event::Request { peer, data, channel } => {
                Inbound::Request { peer, req: wire::Request::decode(&data), channel }
            }
            Event::MemberConnected { peer } => Inbound::MemberConnected { peer },
        }
    }

    /// The rates it is counted against: `None` for what this node started itself.
    fn charged(&self) -> Option<Charge> {
        match self {
            Inbound::Gossip { .. } => Some(Charge::Request),
            Inbound::Request { req: Ok(wire::Request::Deliver(_)), .. } => Some(Charge::Delivery),
            Inbound::Request { .. } => Some(Charge::Request),
            Inbound::MemberConnected { .. } => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Charge {
    Request,
    /// A request that is also a delivery: kept and logged here, so it has a rate of its own.
    Delivery,
}

/// What one member may send per second (`member_rate`, `member_delivery_rate`). A member over
/// its rate waits: a refusal would make an outbox drop the delivery, and waiting already bounds
/// what the member costs, since its requests in flight are bounded by its own handler permits
/// and libp2p's streams per connection.
pub(super) struct Rates {
    requests: DefaultKeyedRateLimiter<PeerId>,
    deliveries: DefaultKeyedRateLimiter<PeerId>,
}

impl Rates {
    pub(super) fn new(config: &Config) -> Rates {
        // `Config::check` refuses a rate of 0; the MIN is for a config built in code.
        let quota = |n: u32| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Rates {
            requests: RateLimiter::keyed(quota(config.member_rate)),
            deliveries: RateLimiter::keyed(quota(config.member_delivery_rate)),
        }
    }

    /// Waits until `peer` may send `ev`; the rate it had to wait for, if any.
    pub(super) async fn admit(&self, peer: &PeerId, ev: &Inbound) -> Option<&'static str> {
        let charge = ev.charged()?;
        let mut waited = None;
        if self.requests.check_key(peer).is_err() {
            waited = Some("requests");
            self.requests.until_key_ready(peer).await;
        }
        if charge == Charge::Delivery && self.deliveries.check_key(peer).is_err() {
            waited = Some("deliveries");
            self.deliveries.until_key_ready(peer).await;
        }
        waited
    }

    /// Forgets members whose buckets are full again (so the map holds only recent senders).
    pub(super) fn forget_idle(&self) {
        self.requests.retain_recent();
        self.deliveries.retain_recent();
    }
}

impl Node {
    /// Counts a request that waited for its sender's rate.
    /// The member a peer is, as metrics label it.
    pub(super) fn member_label(&self, peer: &PeerId) -> String {
        self.member_of_peer(peer).map_or_else(|| OTHER_PEER.to_string(), |m| m.to_string())
    }

    pub(super) fn paced(&self, from: &str, rate: &'static str) {
        tracing::debug!(member = %from, rate, "a member over its rate waits its turn");
        self.0.metrics.paced(from, rate);
    }

    pub(super) async fn answer(&self, peer: PeerId, req: Result<wire::Request, cbor::Error>) -> wire::Response {
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed rpc request");
                let refused = wire::Response::Refused(format!("malformed request: {e}"));
                let from = self.member_label(&peer);
                self.0.metrics.answered(&from, Rpc::Unknown, &refused, 0);
                return refused;
            }
        };
        let (rpc, calls) = (Rpc::of(&req), if let wire::Request::Calls { calls, .. } = &req { calls.len() } else { 0 });
        // The allow list admits members only, but the roster may have changed since.
        let Some(from) = self.member_of_peer(&peer) else {
            let refused = wire::Response::Refused("not a member of the roster in force".into());
            self.0.metrics.answered(OTHER_PEER, rpc, &refused, calls);
            return refused;
        };
        let response = match req {
            wire::Request::Sync(s) => self.answer_sync(&s),
            wire::Request::Deliver(d) => match self.receive(&from, d).await {
                Ok(()) => wire::Response::Ack,
                Err(e) => {
                    tracing::warn!(member = %from, reason = %e, "refused a delivery");
                    wire::Response::Refused(e.to_string())
                }
            },
            wire::Request::Fetch(bytes) => self.serve_fetch(&from, &bytes).await,
            wire::Request::Chunk { exchange, index } => self.serve_chunk(&from, exchange, index).await,
            wire::Request::Query(bytes) => self.serve_query(&from, &bytes).await,
            wire::Request::Calls { batch, calls } => self.serve_calls(&from, &batch, calls).await,
            wire::Request::WitnessOf { member } => match self.0.provenance.witnesses(&member, MAX_WITNESSES) {
                Ok(cps) => wire::Response::Witnesses(
                    cps.into_iter().map(|c| serde_bytes::ByteBuf::from(c.as_bytes().to_vec())).collect(),
                ),
                Err(e) => wire::Response::Refused(e.to_string()),
            },
        };
        self.0.metrics.answered(from.as_str(), rpc, &response, calls);
        response
    }
}
