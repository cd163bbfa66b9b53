//! What members ask of us: each RPC request is routed to the concept that answers it. The
//! sender is identified by the connection (its authenticated PeerId), checked against the roster
//! in force here, before anything else is looked at.

use deltafed_protocol::wire;
use libp2p::PeerId;

use super::Node;
use crate::metrics::{OTHER_PEER, Rpc};

/// Most witnessed checkpoints sent to a verifier at once.
const MAX_WITNESSES: usize = 512;

impl Node {
    pub(super) async fn answer(&self, peer: PeerId, data: &[u8]) -> wire::Response {
        let req = match wire::Request::decode(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed rpc request");
                let refused = wire::Response::Refused(format!("malformed request: {e}"));
                let from = self.member_of_peer(&peer).map_or_else(|| OTHER_PEER.to_string(), |m| m.to_string());
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
