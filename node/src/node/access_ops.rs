//! Requests, decisions, grants and revocations: the admin operations and what the node does
//! when one of these objects is delivered to it.

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome, Revocation};
use deltafed_protocol::exchange::Receipt;
use deltafed_protocol::provenance::EntryKind;
use deltafed_protocol::wire::{self, Delivery};
use deltafed_protocol::{DatasetRef, GrantId, MemberId, OBJECT_VERSION, RequestId, Signed, Timestamp};
use libp2p::PeerId;

use super::{Node, ev, fields_note, now, random16};
use crate::access::{Direction, HeldGrant, Role};
use crate::admin::api;
use crate::catalog::Latest;
use crate::provenance::Record;

/// How long a delivery waits for the member's acknowledgement before going to the outbox.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Node {
    /// Sends a delivery now if the member answers, otherwise keeps it in the outbox for when
    /// it connects. Returns whether it was delivered (acknowledged) now.
    pub(super) async fn deliver(&self, to: &MemberId, d: Delivery) -> Result<bool, String> {
        if let Some(peer) = self.peer_of_member(to)
            && self.send_delivery(peer, &d).await.is_ok()
        {
            return Ok(true);
        }
        self.0.outbox.push(to, &d, now()).map_err(|e| e.to_string())?;
        Ok(false)
    }

    async fn send_delivery(&self, peer: PeerId, d: &Delivery) -> Result<(), String> {
        let req = wire::Request::Deliver(d.clone()).encode().map_err(|e| e.to_string())?;
        // A member that does not answer quickly gets it from the outbox later; an admin command
        // should not hang on it.
        let bytes = tokio::time::timeout(DELIVERY_TIMEOUT, self.0.net.request(peer, req))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?;
        match wire::Response::decode(&bytes).map_err(|e| e.to_string())? {
            wire::Response::Ack => Ok(()),
            wire::Response::Refused(reason) => Err(reason),
            other => Err(format!("unexpected answer {other:?}")),
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
                Err(reason) => {
                    // A refusal will not change by retrying; drop it, and say so.
                    tracing::warn!(%member, %reason, "a queued delivery was refused");
                    let _ = self.0.outbox.done(&key);
                }
            }
        }
    }

    /// Verifies and applies a delivered object from `from`.
    pub(super) async fn receive(&self, from: &MemberId, d: Delivery) -> Result<(), String> {
        let roster = self.roster();
        let me = &self.0.member;
        match d {
            Delivery::AccessRequest(b) => {
                let r = Signed::<AccessRequest>::decode_from_member(&b, &roster.roster).map_err(|e| e.to_string())?;
                let body = r.body();
                if &body.requester != from || &body.provider != me {
                    return Err("the access request is not from its sender or not for this member".into());
                }
                match self.0.catalog.latest(me, &body.dataset).map_err(|e| e.to_string())? {
                    Some(Latest::Manifest(_)) => {}
                    _ => return Err(format!("{me} publishes no dataset {}", body.dataset)),
                }
                if self.0.access.add_request(&r, Direction::Incoming).map_err(|e| e.to_string())? {
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::RequestReceived,
                        dataset: Some(DatasetRef {
                            publisher: me.clone(),
                            dataset: body.dataset.clone(),
                            version: None,
                        }),
                        peer: Some(from.clone()),
                        exchange: None,
                        note: format!("request {} purpose: {}; {}", body.id, body.purpose, fields_note(&body.fields)),
                        objects: vec![ev("access-request", &b)],
                    });
                    tracing::info!(request = %body.id, from = %from, dataset = %body.dataset, "access request received");
                }
                Ok(())
            }
            Delivery::Decision(b) => {
                let d = Signed::<Decision>::decode_from_member(&b, &roster.roster).map_err(|e| e.to_string())?;
                let body = d.body();
                if &body.provider != from || &body.requester != me {
                    return Err("the decision is not from its sender or not for this member".into());
                }
                let Some(held) = self.0.access.request(&body.request).map_err(|e| e.to_string())? else {
                    return Err(format!("no request {} was sent by this member", body.request));
                };
                if held.direction != Direction::Outgoing {
                    return Err("a decision for a request this member did not make".into());
                }
                if self.0.access.decide(&d).map_err(|e| e.to_string())? {
                    let rb = held.request.body();
                    let outcome = match &body.outcome {
                        Outcome::Approved { grant } => format!("approved: grant {grant}"),
                        Outcome::Denied { reason } => format!("denied: {reason}"),
                    };
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::DecisionReceived,
                        dataset: Some(DatasetRef {
                            publisher: from.clone(),
                            dataset: rb.dataset.clone(),
                            version: None,
                        }),
                        peer: Some(from.clone()),
                        exchange: None,
                        note: format!("request {} {outcome}", body.request),
                        objects: vec![ev("decision", &b)],
                    });
                }
                Ok(())
            }
            Delivery::Grant(b) => {
                let g = Signed::<Grant>::decode_from_member(&b, &roster.roster).map_err(|e| e.to_string())?;
                let body = g.body();
                if &body.provider != from || &body.grantee != me {
                    return Err("the grant is not from its sender or not for this member".into());
                }
                if self.0.access.add_grant(&g, Role::Received, true).map_err(|e| e.to_string())? {
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::GrantReceived,
                        dataset: Some(DatasetRef {
                            publisher: from.clone(),
                            dataset: body.dataset.clone(),
                            version: None,
                        }),
                        peer: Some(from.clone()),
                        exchange: None,
                        note: format!(
                            "grant {} purpose: {}; {}; expires {}",
                            body.id,
                            body.purpose,
                            fields_note(&body.fields),
                            body.expires
                        ),
                        objects: vec![ev("grant", &b)],
                    });
                    tracing::info!(grant = %body.id, from = %from, dataset = %body.dataset, "grant received");
                }
                Ok(())
            }
            Delivery::Revocation(b) => {
                let r = Signed::<Revocation>::decode_from_member(&b, &roster.roster).map_err(|e| e.to_string())?;
                let body = r.body();
                if &body.provider != from || &body.grantee != me {
                    return Err("the revocation is not from its sender or not for this member".into());
                }
                let Some(held) = self.0.access.grant(&body.grant).map_err(|e| e.to_string())? else {
                    return Err(format!("no grant {} is held", body.grant));
                };
                if &held.grant.body().provider != from {
                    return Err("a revocation of another provider's grant".into());
                }
                if self.0.access.revoke(&r).map_err(|e| e.to_string())? {
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::RevocationReceived,
                        dataset: Some(DatasetRef {
                            publisher: from.clone(),
                            dataset: held.grant.body().dataset.clone(),
                            version: None,
                        }),
                        peer: Some(from.clone()),
                        exchange: None,
                        note: format!("grant {} revoked: {}", body.grant, body.reason),
                        objects: vec![ev("revocation", &b)],
                    });
                }
                Ok(())
            }
            Delivery::Receipt(b) => {
                let r = Signed::<Receipt>::decode_from_member(&b, &roster.roster).map_err(|e| e.to_string())?;
                let body = r.body();
                if &body.requester != from || &body.provider != me {
                    return Err("the receipt is not from its sender or not for this member".into());
                }
                let dataset = self.0.exchanges.dataset_of(&body.exchange);
                self.0.exchanges.remove(&body.exchange);
                self.record(Record {
                    time: now(),
                    kind: EntryKind::ReceiptReceived,
                    dataset,
                    peer: Some(from.clone()),
                    exchange: Some(body.exchange),
                    note: format!("{} received {} bytes, hash {}", from, body.bytes, body.content_hash),
                    objects: vec![ev("receipt", &b)],
                });
                Ok(())
            }
            Delivery::Checkpoint(b) => {
                let cp = self.0.provenance.store_witness(&b, &roster.roster).map_err(|e| e.to_string())?;
                if &cp.body().member != from {
                    return Err("a checkpoint of another member".into());
                }
                Ok(())
            }
        }
    }

    pub(super) async fn request_access(
        &self,
        target: DatasetRef,
        purpose: String,
        fields: Option<Vec<String>>,
    ) -> Result<api::RequestSent, String> {
        if purpose.trim().is_empty() {
            return Err("a purpose is required: say why the data is needed with --purpose".into());
        }
        let me = self.0.member.clone();
        let provider = target.publisher.clone();
        if provider == me {
            return Err(format!("{target} is this member's own dataset"));
        }
        let m = self.manifest_for(&target.unversioned())?;
        check_fields(&fields, &m)?;
        let body = AccessRequest {
            v: OBJECT_VERSION,
            id: RequestId(random16()?),
            requester: me.clone(),
            provider: provider.clone(),
            dataset: target.dataset.clone(),
            purpose,
            fields,
            time: now(),
        };
        let signed = Signed::sign(body, &self.0.key).map_err(|e| e.to_string())?;
        self.0.access.add_request(&signed, Direction::Outgoing).map_err(|e| e.to_string())?;
        let b = signed.body();
        self.record(Record {
            time: now(),
            kind: EntryKind::RequestSent,
            dataset: Some(target.unversioned()),
            peer: Some(provider.clone()),
            exchange: None,
            note: format!("request {} purpose: {}; {}", b.id, b.purpose, fields_note(&b.fields)),
            objects: vec![ev("access-request", signed.as_bytes())],
        });
        let delivered = self.deliver(&provider, Delivery::AccessRequest(signed.as_bytes().to_vec())).await?;
        Ok(api::RequestSent {
            request_id: b.id.to_string(),
            provider: provider.to_string(),
            dataset: target.unversioned().to_string(),
            delivered,
        })
    }

    pub(super) fn list_requests(&self) -> Result<Vec<api::RequestView>, String> {
        let deadline = self.0.config.response_deadline;
        let t = now();
        let mut out: Vec<api::RequestView> = self
            .0
            .access
            .requests()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|h| {
                let b = h.request.body();
                let due = b.time.saturating_add(deadline);
                let (grant_id, reason) = match h.decision.as_ref().map(|d| &d.body().outcome) {
                    Some(Outcome::Approved { grant }) => (Some(grant.to_string()), None),
                    Some(Outcome::Denied { reason }) => (None, Some(reason.clone())),
                    None => (None, None),
                };
                api::RequestView {
                    request_id: b.id.to_string(),
                    direction: match h.direction {
                        Direction::Incoming => "incoming".into(),
                        Direction::Outgoing => "outgoing".into(),
                    },
                    requester: b.requester.to_string(),
                    provider: b.provider.to_string(),
                    dataset: format!("{}/{}", b.provider, b.dataset),
                    purpose: b.purpose.clone(),
                    fields: b.fields.clone(),
                    time: b.time.to_string(),
                    deadline: due.to_string(),
                    state: h.state().into(),
                    overdue: h.decision.is_none() && t > due,
                    grant_id,
                    reason,
                }
            })
            .collect();
        out.sort_by(|a, b| b.time.cmp(&a.time));
        Ok(out)
    }

    fn incoming_pending(&self, id: &RequestId) -> Result<Signed<AccessRequest>, String> {
        let Some(h) = self.0.access.request(id).map_err(|e| e.to_string())? else {
            return Err(format!("no request {id}; see `deltafed requests`"));
        };
        if h.direction != Direction::Incoming {
            return Err(format!("request {id} was made by this member; only its provider can answer it"));
        }
        if h.decision.is_some() {
            return Err(format!("request {id} is already {}", h.state()));
        }
        Ok(h.request)
    }

    async fn send_decision(&self, req: &Signed<AccessRequest>, outcome: Outcome) -> Result<bool, String> {
        let rb = req.body();
        let d = Decision {
            v: OBJECT_VERSION,
            request: rb.id,
            provider: self.0.member.clone(),
            requester: rb.requester.clone(),
            outcome,
            time: now(),
        };
        let signed = Signed::sign(d, &self.0.key).map_err(|e| e.to_string())?;
        self.0.access.decide(&signed).map_err(|e| e.to_string())?;
        let note = match &signed.body().outcome {
            Outcome::Approved { grant } => format!("request {} approved: grant {grant}", rb.id),
            Outcome::Denied { reason } => format!("request {} denied: {reason}", rb.id),
        };
        self.record(Record {
            time: now(),
            kind: EntryKind::DecisionMade,
            dataset: Some(DatasetRef { publisher: self.0.member.clone(), dataset: rb.dataset.clone(), version: None }),
            peer: Some(rb.requester.clone()),
            exchange: None,
            note,
            objects: vec![ev("access-request", req.as_bytes()), ev("decision", signed.as_bytes())],
        });
        self.deliver(&rb.requester, Delivery::Decision(signed.as_bytes().to_vec())).await
    }

    pub(super) async fn approve(
        &self,
        id: RequestId,
        expires: Option<String>,
        max_fetches: Option<u64>,
    ) -> Result<api::Decided, String> {
        let req = self.incoming_pending(&id)?;
        let rb = req.body();
        let issued = self
            .issue_grant(
                api::GrantRequest {
                    dataset: rb.dataset.clone(),
                    to: rb.requester.clone(),
                    purpose: rb.purpose.clone(),
                    fields: rb.fields.clone(),
                    expires,
                    max_fetches,
                },
                Some(id),
            )
            .await?;
        let grant: GrantId = issued.grant_id.parse().map_err(|e: deltafed_protocol::crypto::Error| e.to_string())?;
        let delivered = self.send_decision(&req, Outcome::Approved { grant }).await?;
        Ok(api::Decided {
            request_id: id.to_string(),
            state: "approved".into(),
            grant_id: Some(issued.grant_id),
            reason: None,
            delivered: delivered && issued.delivered,
        })
    }

    pub(super) async fn deny(&self, id: RequestId, reason: String) -> Result<api::Decided, String> {
        if reason.trim().is_empty() {
            return Err("a denial needs a reason: pass --reason".into());
        }
        let req = self.incoming_pending(&id)?;
        let delivered = self.send_decision(&req, Outcome::Denied { reason: reason.clone() }).await?;
        Ok(api::Decided {
            request_id: id.to_string(),
            state: "denied".into(),
            grant_id: None,
            reason: Some(reason),
            delivered,
        })
    }

    pub(super) async fn grant(&self, g: api::GrantRequest) -> Result<api::GrantIssued, String> {
        self.issue_grant(g, None).await
    }

    async fn issue_grant(&self, g: api::GrantRequest, request: Option<RequestId>) -> Result<api::GrantIssued, String> {
        let me = self.0.member.clone();
        if g.purpose.trim().is_empty() {
            return Err("a grant needs a purpose: pass --purpose".into());
        }
        if g.to == me {
            return Err("a member cannot grant itself access".into());
        }
        if self.roster().roster.member(&g.to).is_none() {
            return Err(format!("{} is not a member of the federation; see `deltafed roster show`", g.to));
        }
        let m = match self.0.catalog.latest(&me, &g.dataset).map_err(|e| e.to_string())? {
            Some(Latest::Manifest(m)) => m,
            Some(Latest::Withdrawn(_)) => return Err(format!("{me}/{} was withdrawn", g.dataset)),
            None => {
                return Err(format!(
                    "this member publishes no dataset {}; see `deltafed catalog --publisher {me}`",
                    g.dataset
                ));
            }
        };
        if m.body().sharing == deltafed_protocol::manifest::Sharing::None {
            return Err(format!(
                "{me}/{} is not shared (sharing: none); publish it with another --sharing to grant it",
                g.dataset
            ));
        }
        check_fields(&g.fields, m.body())?;
        let t = now();
        let expires = match &g.expires {
            Some(e) => Timestamp::parse_at_or_after(e, t).map_err(|e| format!("--expires: {e}"))?,
            None => t.saturating_add(self.0.config.default_grant_expiry),
        };
        if expires <= t {
            return Err(format!("--expires {} is in the past", expires));
        }
        if g.max_fetches == Some(0) {
            return Err("--max-fetches must be at least 1".into());
        }
        let body = Grant {
            v: OBJECT_VERSION,
            id: GrantId(random16()?),
            provider: me.clone(),
            grantee: g.to.clone(),
            dataset: g.dataset.clone(),
            purpose: g.purpose.clone(),
            fields: g.fields.clone(),
            not_before: t,
            expires,
            max_fetches: g.max_fetches,
            request,
        };
        let signed = Signed::sign(body, &self.0.key).map_err(|e| e.to_string())?;
        self.0.access.add_grant(&signed, Role::Issued, false).map_err(|e| e.to_string())?;
        let b = signed.body();
        self.record(Record {
            time: now(),
            kind: EntryKind::GrantIssued,
            dataset: Some(DatasetRef { publisher: me.clone(), dataset: b.dataset.clone(), version: None }),
            peer: Some(b.grantee.clone()),
            exchange: None,
            note: format!("grant {} purpose: {}; {}; expires {}", b.id, b.purpose, fields_note(&b.fields), b.expires),
            objects: vec![ev("grant", signed.as_bytes())],
        });
        let delivered = self.deliver(&b.grantee, Delivery::Grant(signed.as_bytes().to_vec())).await?;
        if delivered {
            self.0.access.mark_delivered(&b.id).map_err(|e| e.to_string())?;
        }
        Ok(api::GrantIssued {
            grant_id: b.id.to_string(),
            grantee: b.grantee.to_string(),
            dataset: format!("{me}/{}", b.dataset),
            expires_at: b.expires.to_string(),
            delivered,
        })
    }

    pub(super) fn list_grants(&self) -> Result<Vec<api::GrantView>, String> {
        let t = now();
        let mut out: Vec<api::GrantView> =
            self.0.access.grants().map_err(|e| e.to_string())?.iter().map(|h| grant_view(h, t)).collect();
        out.sort_by(|a, b| b.not_before.cmp(&a.not_before));
        Ok(out)
    }

    pub(super) async fn revoke(&self, id: GrantId, reason: String) -> Result<api::Revoked, String> {
        let Some(held) = self.0.access.grant(&id).map_err(|e| e.to_string())? else {
            return Err(format!("no grant {id}; see `deltafed grants`"));
        };
        if held.role != Role::Issued {
            return Err(format!(
                "grant {id} was issued by {}; only its provider can revoke it",
                held.grant.body().provider
            ));
        }
        if held.revocation.is_some() {
            return Err(format!("grant {id} is already revoked"));
        }
        let g = held.grant.body();
        let r = Revocation {
            v: OBJECT_VERSION,
            grant: id,
            provider: self.0.member.clone(),
            grantee: g.grantee.clone(),
            time: now(),
            reason,
        };
        let signed = Signed::sign(r, &self.0.key).map_err(|e| e.to_string())?;
        // Revocation takes effect here first: exchanges in flight are refused at their next
        // chunk, with the revocation's reason.
        self.0.access.revoke(&signed).map_err(|e| e.to_string())?;
        self.record(Record {
            time: now(),
            kind: EntryKind::RevocationIssued,
            dataset: Some(DatasetRef { publisher: self.0.member.clone(), dataset: g.dataset.clone(), version: None }),
            peer: Some(g.grantee.clone()),
            exchange: None,
            note: format!("grant {id} revoked: {}", signed.body().reason),
            objects: vec![ev("revocation", signed.as_bytes())],
        });
        let delivered = self.deliver(&g.grantee, Delivery::Revocation(signed.as_bytes().to_vec())).await?;
        Ok(api::Revoked { grant_id: id.to_string(), grantee: g.grantee.to_string(), delivered })
    }

    /// The newest manifest of a dataset (or the named version), refusing withdrawn ones.
    pub(super) fn manifest_for(&self, r: &DatasetRef) -> Result<deltafed_protocol::manifest::Manifest, String> {
        match r.version {
            Some(v) => self
                .0
                .catalog
                .version(&r.publisher, &r.dataset, v)
                .map_err(|e| e.to_string())?
                .map(|m| m.body().clone())
                .ok_or_else(|| format!("{r} is not in the catalog; see `deltafed catalog`")),
            None => match self.0.catalog.latest(&r.publisher, &r.dataset).map_err(|e| e.to_string())? {
                Some(Latest::Manifest(m)) => Ok(m.body().clone()),
                Some(Latest::Withdrawn(w)) => Err(format!("{r} was withdrawn by its publisher ({})", w.body().reason)),
                None => Err(format!("{r} is not in the catalog; see `deltafed catalog`")),
            },
        }
    }

    /// The grant to use for receiving `m`: none needed for unconditional sharing (one held is
    /// still used, for its projection), required otherwise. When none is valid, the error says
    /// why, with the provider's own words if it revoked the grant.
    pub(super) fn required_grant(
        &self,
        m: &deltafed_protocol::manifest::Manifest,
    ) -> Result<Option<HeldGrant>, String> {
        use deltafed_protocol::manifest::Sharing;
        let provider = &m.publisher;
        match m.sharing {
            Sharing::None => {
                Err(format!("{} is listed but not shared by its publisher (sharing: none)", m.dataset_ref()))
            }
            Sharing::Unconditional => self.usable_grant(provider, &m.dataset),
            Sharing::Conditional => {
                if let Some(g) = self.usable_grant(provider, &m.dataset)? {
                    return Ok(Some(g));
                }
                let t = now();
                let last = self
                    .0
                    .access
                    .grants()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|h| {
                        let b = h.grant.body();
                        h.role == Role::Received && &b.provider == provider && b.dataset == m.dataset
                    })
                    .max_by_key(|h| h.grant.body().not_before);
                let ask = format!("ask with `deltafed request {provider}/{} --purpose ...`", m.dataset);
                Err(match last.and_then(|h| h.refusal(t)) {
                    Some(why) => format!("no valid grant from {provider} for {}: {why}; {ask}", m.dataset),
                    None => format!("this member holds no valid grant from {provider} for {}; {ask}", m.dataset),
                })
            }
        }
    }

    /// A grant this member received from `provider` for `dataset` that is valid now.
    pub(super) fn usable_grant(
        &self,
        provider: &MemberId,
        dataset: &deltafed_protocol::DatasetId,
    ) -> Result<Option<HeldGrant>, String> {
        let t = now();
        Ok(self
            .0
            .access
            .grants()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|h| {
                let b = h.grant.body();
                h.role == Role::Received && &b.provider == provider && &b.dataset == dataset && h.refusal(t).is_none()
            })
            .max_by_key(|h| h.grant.body().expires))
    }
}

pub(super) fn grant_view(h: &HeldGrant, t: Timestamp) -> api::GrantView {
    let b = h.grant.body();
    api::GrantView {
        grant_id: b.id.to_string(),
        provider: b.provider.to_string(),
        grantee: b.grantee.to_string(),
        dataset: format!("{}/{}", b.provider, b.dataset),
        purpose: b.purpose.clone(),
        fields: b.fields.clone(),
        not_before: b.not_before.to_string(),
        expires_at: b.expires.to_string(),
        max_fetches: b.max_fetches,
        fetches: h.fetches,
        revoked: h.revocation.is_some(),
        revoked_reason: h.revocation.as_ref().map(|r| r.body().reason.clone()),
        role: match h.role {
            Role::Issued => "issued".into(),
            Role::Received => "received".into(),
        },
        expired: t >= b.expires,
        delivered: h.delivered,
    }
}

/// Fields named in a request or grant must exist in the dataset, and the dataset must have a
/// schema (raw data cannot be projected).
fn check_fields(fields: &Option<Vec<String>>, m: &deltafed_protocol::manifest::Manifest) -> Result<(), String> {
    let Some(fields) = fields else { return Ok(()) };
    if fields.is_empty() {
        return Err("--fields names no field".into());
    }
    if m.schema.is_empty() {
        return Err(format!("{} is raw data without fields; drop --fields", m.dataset_ref()));
    }
    let unknown: Vec<&str> =
        fields.iter().filter(|f| !m.schema.iter().any(|s| &s.name == *f)).map(String::as_str).collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = m.schema.iter().map(|f| f.name.as_str()).collect();
        return Err(format!(
            "{} has no field(s) {}; its fields are {}",
            m.dataset_ref(),
            unknown.join(", "),
            known.join(", ")
        ));
    }
    Ok(())
}
