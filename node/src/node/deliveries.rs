//! Handing signed objects to the member they concern (grantee, provider, requester, witness):
//! now if the member acknowledges in time, otherwise from the outbox when it next connects. And
//! the receiving side: each delivered object is verified against the roster and handed to the
//! concept it belongs to.

use std::time::Duration;

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Revocation};
use deltafed_protocol::exchange::Receipt;
use deltafed_protocol::provenance::Checkpoint;
use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{Authored, MemberId, Signed};
use libp2p::PeerId;

use super::{Error, Node, now};
use crate::access::{self, Access};
use crate::provenance::Record;
use crate::store::Batch;

/// How long a delivery waits for the member's acknowledgement before going to the outbox.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// A signed object made by an operation, and whether its member acknowledged it already
/// (otherwise it waits in the outbox).
pub struct Sent<T> {
    pub object: Signed<T>,
    pub delivered: bool,
}

impl Node {
    /// Writes a change (`change`, computed under the access write lock), its provenance entry
    /// and the delivery queued for `to` in one atomic write, makes it durable, and then hands
    /// the delivery over if the member answers now (the queued copy goes once acknowledged;
    /// otherwise it is sent when the member connects). Returns whether it was acknowledged now.
    pub(super) async fn commit_and_deliver(
        &self,
        change: impl FnOnce(&Access) -> Result<Option<Batch>, access::Error>,
        rec: Record,
        to: &MemberId,
        d: Delivery,
    ) -> Result<bool, Error> {
        let key = {
            let _w = self.0.access.write_lock();
            let mut batch = change(&self.0.access)?.unwrap_or_default();
            let (key, queued) = self.0.outbox.push_ops(to, &d, now())?;
            batch.extend(queued);
            self.0.provenance.append_with(rec, batch)?;
            key
        };
        self.0.durable.sync().await?;
        let Some(peer) = self.peer_of_member(to) else { return Ok(false) };
        if self.send_delivery(peer, &d).await.is_err() {
            return Ok(false);
        }
        if let Err(e) = self.0.outbox.done(&key) {
            // It is sent again when the member next connects; receivers ignore what they hold.
            tracing::error!(error = %e, "cannot update the outbox");
        }
        Ok(true)
    }

    /// Writes a change and its provenance entry in one atomic write and makes it durable;
    /// `Ok(false)` (nothing written) when `change` finds nothing to change.
    pub(super) async fn commit(
        &self,
        change: impl FnOnce(&Access) -> Result<Option<Batch>, access::Error>,
        rec: impl FnOnce() -> Record,
    ) -> Result<bool, Error> {
        let changed = {
            let _w = self.0.access.write_lock();
            match change(&self.0.access)? {
                Some(batch) => {
                    self.0.provenance.append_with(rec(), batch)?;
                    true
                }
                None => false,
            }
        };
        if changed {
            self.0.durable.sync().await?;
        }
        Ok(changed)
    }

    async fn send_delivery(&self, peer: PeerId, d: &Delivery) -> Result<(), crate::rpc::Error> {
        // A member that does not answer quickly gets it from the outbox later; an admin command
        // should not hang on it.
        match tokio::time::timeout(DELIVERY_TIMEOUT, self.0.net.deliver(peer, d.clone())).await {
            Ok(r) => r,
            Err(_) => Err(crate::rpc::Error::Unreachable(crate::net::Error::Request {
                peer: peer.to_string(),
                detail: "no answer in time".into(),
            })),
        }
    }

    /// Sends what waited for `peer` while it was away.
    pub(super) async fn flush_outbox(&self, peer: PeerId) {
        let Some(member) = self.member_of_peer(&peer) else { return };
        let pending = match self.0.outbox.pending(&member) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        for (key, d) in pending {
            match self.send_delivery(peer, &d).await {
                Ok(()) => {
                    if let Delivery::Grant(b) = &d
                        && let Ok(g) = Signed::<Grant>::decode(b)
                    {
                        let _ = self.0.access.mark_delivered(&g.body().id);
                    }
                    if let Err(e) = self.0.outbox.done(&key) {
                        tracing::error!(error = %e, "cannot update the outbox");
                    }
                }
                Err(crate::rpc::Error::Refused(reason)) => {
                    // A refusal will not change by retrying; drop it, and say so.
                    tracing::warn!(%member, %reason, "a queued delivery was refused");
                    let _ = self.0.outbox.done(&key);
                }
                Err(e) => {
                    // Lost connection or no answer in time: it stays queued for the next one.
                    tracing::info!(%member, error = %e, "a queued delivery is kept for the next connection");
                    return;
                }
            }
        }
    }

    /// Verifies a delivered object from `from` and hands it to the concept it belongs to.
    pub(super) async fn receive(&self, from: &MemberId, d: Delivery) -> Result<(), Error> {
        match d {
            Delivery::AccessRequest(b) => self.receive_request(from, self.verified::<AccessRequest>(&b)?).await,
            Delivery::Decision(b) => self.receive_decision(from, self.verified::<Decision>(&b)?).await,
            Delivery::Grant(b) => self.receive_grant(from, self.verified::<Grant>(&b)?).await,
            Delivery::Revocation(b) => self.receive_revocation(from, self.verified::<Revocation>(&b)?).await,
            Delivery::Receipt(b) => self.receive_receipt(from, self.verified::<Receipt>(&b)?).await,
            Delivery::Checkpoint(b) => {
                // Who sent it is checked before anything is kept.
                let cp = self.verified::<Checkpoint>(&b)?;
                if &cp.body().member != from {
                    return Err(Error::refused("a checkpoint of another member"));
                }
                self.0
                    .provenance
                    .store_witness(&b, &self.roster().roster)
                    .map_err(|e| Error::refused(e.to_string()))?;
                Ok(())
            }
        }
    }

    /// Decodes a member's signed object: canonical, within limits, signed by its author's roster key.
    fn verified<T: Authored>(&self, bytes: &[u8]) -> Result<Signed<T>, Error> {
        Signed::<T>::decode_from_member(bytes, &self.roster().roster).map_err(|e| Error::refused(e.to_string()))
    }
}
