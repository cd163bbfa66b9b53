//! Access requests, decisions, grants and revocations: the admin operations that make them and
//! what the node does when one is delivered to it. Every object is signed here, kept with its
//! exact bytes, logged, and handed to the member it concerns (see `deliveries.rs`).

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome, Revocation};
use deltafed_protocol::manifest::{Manifest, Sharing};
use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{DatasetRef, GrantId, MemberId, OBJECT_VERSION, RequestId, Signed, Timestamp};

use super::{Error, Node, Sent, now, random16};
use crate::access::{Direction, HeldGrant, HeldRequest, Role};
use crate::admin::api;
use crate::catalog::Latest;
use crate::provenance::Record;
use crate::roles::Actor;

/// An approval: the grant issued and whether the decision reached the requester.
pub struct Approved {
    pub request: RequestId,
    pub grant: Sent<Grant>,
    pub decision_delivered: bool,
}

impl Node {
    pub async fn request_access(
        &self,
        target: DatasetRef,
        purpose: String,
        fields: Option<Vec<String>>,
    ) -> Result<Sent<AccessRequest>, Error> {
        if purpose.trim().is_empty() {
            return Err(Error::invalid(
                "--purpose",
                "a purpose is required: say why the data is needed with --purpose",
            ));
        }
        let me = self.0.member.clone();
        let provider = target.publisher.clone();
        if provider == me {
            return Err(Error::invalid("DATASET", format!("{target} is this member's own dataset")));
        }
        let m = self.manifest_for(&target.unversioned())?;
        check_fields(&fields, &m)?;
        let body = AccessRequest {
            v: OBJECT_VERSION,
            id: RequestId(random16()?),
            requester: me,
            provider: provider.clone(),
            dataset: target.dataset.clone(),
            purpose,
            fields,
            time: now(),
        };
        let signed = Signed::sign(body, &self.0.key)?;
        let delivered = self
            .commit_and_deliver(
                |a| a.add_request_ops(&signed, Direction::Outgoing),
                Record::request_sent(&signed),
                &provider,
                Delivery::AccessRequest(signed.as_bytes().to_vec()),
            )
            .await?;
        Ok(Sent { object: signed, delivered })
    }

    /// Incoming and outgoing requests, newest first.
    pub fn requests(&self) -> Result<Vec<HeldRequest>, Error> {
        let mut out = self.0.access.requests()?;
        out.sort_by_key(|h| std::cmp::Reverse(h.request.body().time));
        Ok(out)
    }

    fn incoming_pending(&self, id: &RequestId) -> Result<Signed<AccessRequest>, Error> {
        let Some(h) = self.0.access.request(id)? else {
            return Err(Error::not_found(format!("no request {id}; see `deltafed requests`")));
        };
        if h.direction != Direction::Incoming {
            return Err(Error::refused(format!(
                "request {id} was made by this member; only its provider can answer it"
            )));
        }
        if h.decision.is_some() {
            return Err(Error::refused(format!("request {id} is already {}", h.state())));
        }
        Ok(h.request)
    }

    async fn send_decision(
        &self,
        req: &Signed<AccessRequest>,
        outcome: Outcome,
        actor: &Actor,
    ) -> Result<Sent<Decision>, Error> {
        let rb = req.body();
        let d = Decision {
            v: OBJECT_VERSION,
            request: rb.id,
            provider: self.0.member.clone(),
            requester: rb.requester.clone(),
            outcome,
            time: now(),
        };
        let signed = Signed::sign(d, &self.0.key)?;
        let delivered = self
            .commit_and_deliver(
                |a| a.decide_ops(&signed),
                Record::decision_made(req, &signed).by(actor),
                &rb.requester,
                Delivery::Decision(signed.as_bytes().to_vec()),
            )
            .await?;
        Ok(Sent { object: signed, delivered })
    }

    pub async fn approve(
        &self,
        id: RequestId,
        expires: Option<String>,
        max_fetches: Option<u64>,
        max_queries: Option<u64>,
        actor: &Actor,
    ) -> Result<Approved, Error> {
        let req = self.incoming_pending(&id)?;
        let rb = req.body();
        let grant = self
            .issue_grant(
                api::GrantRequest {
                    dataset: rb.dataset.clone(),
                    to: rb.requester.clone(),
                    purpose: rb.purpose.clone(),
                    fields: rb.fields.clone(),
                    expires,
                    max_fetches,
                    max_queries,
                    not_before: None,
                },
                Some(id),
                actor,
            )
            .await?;
        let decision = self.send_decision(&req, Outcome::Approved { grant: grant.object.body().id }, actor).await?;
        Ok(Approved { request: id, grant, decision_delivered: decision.delivered })
    }

    pub async fn deny(&self, id: RequestId, reason: String, actor: &Actor) -> Result<Sent<Decision>, Error> {
        if reason.trim().is_empty() {
            return Err(Error::invalid("--reason", "a denial needs a reason: pass --reason"));
        }
        let req = self.incoming_pending(&id)?;
        self.send_decision(&req, Outcome::Denied { reason }, actor).await
    }

    pub async fn grant(&self, g: api::GrantRequest, actor: &Actor) -> Result<Sent<Grant>, Error> {
        self.issue_grant(g, None, actor).await
    }

    async fn issue_grant(
        &self,
        g: api::GrantRequest,
        request: Option<RequestId>,
        actor: &Actor,
    ) -> Result<Sent<Grant>, Error> {
        let me = self.0.member.clone();
        if g.purpose.trim().is_empty() {
            return Err(Error::invalid("--purpose", "a grant needs a purpose: pass --purpose"));
        }
        if g.to == me {
            return Err(Error::invalid("--to", "a member cannot grant itself access"));
        }
        if self.roster().roster.member(&g.to).is_none() {
            return Err(Error::invalid(
                "--to",
                format!("{} is not a member of the federation; see `deltafed roster show`", g.to),
            ));
        }
        let m = match self.0.catalog.latest(&me, &g.dataset)? {
            Some(Latest::Manifest(m)) => m,
            Some(Latest::Withdrawn(_)) => return Err(Error::refused(format!("{me}/{} was withdrawn", g.dataset))),
            None => {
                return Err(Error::not_found(format!(
                    "this member publishes no dataset {}; see `deltafed catalog --publisher {me}`",
                    g.dataset
                )));
            }
        };
        if m.body().sharing == Sharing::None {
            return Err(Error::refused(format!(
                "{me}/{} is not shared (sharing: none); publish it with another --sharing to grant it",
                g.dataset
            )));
        }
        check_fields(&g.fields, m.body())?;
        let t = now();
        let expires = match &g.expires {
            Some(e) => Timestamp::parse_at_or_after(e, t)
                .map_err(|e| Error::invalid("--expires", format!("--expires: {e}")))?,
            None => t.saturating_add(self.0.config.default_grant_expiry),
        };
        if expires <= t {
            return Err(Error::invalid("--expires", format!("--expires {expires} is in the past")));
        }
        let not_before = match &g.not_before {
            Some(nb) => Timestamp::parse_at_or_after(nb, t)
                .map_err(|e| Error::invalid("--not-before", format!("--not-before: {e}")))?
                // A time already past means "from now": a grant never claims to have started
                // before it was signed.
                .max(t),
            None => t,
        };
        if not_before >= expires {
            return Err(Error::invalid(
                "--not-before",
                format!("--not-before {not_before} is not before --expires {expires}"),
            ));
        }
        if g.max_fetches == Some(0) {
            return Err(Error::invalid("--max-fetches", "--max-fetches must be at least 1"));
        }
        if g.max_queries == Some(0) {
            return Err(Error::invalid("--max-queries", "--max-queries must be at least 1"));
        }
        let body = Grant {
            v: OBJECT_VERSION,
            id: GrantId(random16()?),
            provider: me,
            grantee: g.to.clone(),
            dataset: g.dataset.clone(),
            purpose: g.purpose.clone(),
            fields: g.fields.clone(),
            not_before,
            expires,
            max_fetches: g.max_fetches,
            request,
            max_queries: g.max_queries,
        };
        let signed = Signed::sign(body, &self.0.key)?;
        let b = signed.body();
        let delivered = self
            .commit_and_deliver(
                |a| a.add_grant_ops(&signed, Role::Issued, false),
                Record::grant_issued(&signed).by(actor),
                &b.grantee,
                Delivery::Grant(signed.as_bytes().to_vec()),
            )
            .await?;
        if delivered {
            self.0.access.mark_delivered(&b.id)?;
        }
        Ok(Sent { object: signed, delivered })
    }

    /// Issued and received grants, newest first.
    pub fn grants(&self) -> Result<Vec<HeldGrant>, Error> {
        let mut out = self.0.access.grants()?;
        out.sort_by_key(|h| std::cmp::Reverse(h.grant.body().not_before));
        Ok(out)
    }

    pub async fn revoke(&self, id: GrantId, reason: String, actor: &Actor) -> Result<Sent<Revocation>, Error> {
        let Some(held) = self.0.access.grant(&id)? else {
            return Err(Error::not_found(format!("no grant {id}; see `deltafed grants`")));
        };
        if held.role != Role::Issued {
            return Err(Error::refused(format!(
                "grant {id} was issued by {}; only its provider can revoke it",
                held.grant.body().provider
            )));
        }
        if held.revocation.is_some() {
            return Err(Error::refused(format!("grant {id} is already revoked")));
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
        let signed = Signed::sign(r, &self.0.key)?;
        // Revocation takes effect here first (durably, before this returns): exchanges in
        // flight are refused at their next chunk, with the revocation's reason.
        let delivered = self
            .commit_and_deliver(
                |a| a.revoke_ops(&signed),
                Record::revocation_issued(g, &signed).by(actor),
                &g.grantee,
                Delivery::Revocation(signed.as_bytes().to_vec()),
            )
            .await?;
        Ok(Sent { object: signed, delivered })
    }

    /// A member asks us for access.
    pub(super) async fn receive_request(&self, from: &MemberId, r: Signed<AccessRequest>) -> Result<(), Error> {
        let me = &self.0.member;
        let body = r.body();
        if &body.requester != from || &body.provider != me {
            return Err(Error::refused("the access request is not from its sender or not for this member"));
        }
        match self.0.catalog.latest(me, &body.dataset)? {
            Some(Latest::Manifest(_)) => {}
            _ => return Err(Error::not_found(format!("{me} publishes no dataset {}", body.dataset))),
        }
        let quota = self.0.config.member_pending_requests;
        let pending = self
            .0
            .access
            .requests()?
            .iter()
            .filter(|h| {
                h.direction == Direction::Incoming && h.decision.is_none() && &h.request.body().requester == from
            })
            .count();
        if pending >= quota {
            return Err(Error::refused(format!(
                "{from} has {pending} undecided access requests here, the most this member keeps; wait for decisions"
            )));
        }
        if self.commit(|a| a.add_request_ops(&r, Direction::Incoming), || Record::request_received(&r)).await? {
            tracing::info!(request = %body.id, from = %from, dataset = %body.dataset, "access request received");
        }
        Ok(())
    }

    /// A provider answers a request we sent it.
    pub(super) async fn receive_decision(&self, from: &MemberId, d: Signed<Decision>) -> Result<(), Error> {
        let body = d.body();
        if &body.provider != from || body.requester != self.0.member {
            return Err(Error::refused("the decision is not from its sender or not for this member"));
        }
        let Some(held) = self.0.access.request(&body.request)? else {
            return Err(Error::not_found(format!("no request {} was sent by this member", body.request)));
        };
        if held.direction != Direction::Outgoing {
            return Err(Error::refused("a decision for a request this member did not make"));
        }
        if &held.request.body().provider != from {
            return Err(Error::refused("a decision on a request made to another provider"));
        }
        self.commit(|a| a.decide_ops(&d), || Record::decision_received(&held.request, &d)).await?;
        Ok(())
    }

    pub(super) async fn receive_grant(&self, from: &MemberId, g: Signed<Grant>) -> Result<(), Error> {
        let body = g.body();
        if &body.provider != from || body.grantee != self.0.member {
            return Err(Error::refused("the grant is not from its sender or not for this member"));
        }
        let quota = self.0.config.member_grants;
        let held = self.0.access.grants()?;
        if !held.iter().any(|h| h.grant.body().id == body.id)
            && held.iter().filter(|h| h.role == Role::Received && &h.grant.body().provider == from).count() >= quota
        {
            return Err(Error::refused(format!(
                "this member already holds {quota} grants from {from}, the most it keeps"
            )));
        }
        if self.commit(|a| a.add_grant_ops(&g, Role::Received, true), || Record::grant_received(&g)).await? {
            tracing::info!(grant = %body.id, from = %from, dataset = %body.dataset, "grant received");
        }
        Ok(())
    }

    pub(super) async fn receive_revocation(&self, from: &MemberId, r: Signed<Revocation>) -> Result<(), Error> {
        let body = r.body();
        if &body.provider != from || body.grantee != self.0.member {
            return Err(Error::refused("the revocation is not from its sender or not for this member"));
        }
        let Some(held) = self.0.access.grant(&body.grant)? else {
            return Err(Error::not_found(format!("no grant {} is held", body.grant)));
        };
        if &held.grant.body().provider != from {
            return Err(Error::refused("a revocation of another provider's grant"));
        }
        self.commit(|a| a.revoke_ops(&r), || Record::revocation_received(held.grant.body(), &r)).await?;
        Ok(())
    }
}

/// Fields named in a request or grant must exist in the dataset, and the dataset must have a
/// schema (raw data cannot be projected).
fn check_fields(fields: &Option<Vec<String>>, m: &Manifest) -> Result<(), Error> {
    let Some(fields) = fields else { return Ok(()) };
    if fields.is_empty() {
        return Err(Error::invalid("--fields", "--fields names no field"));
    }
    if m.schema.is_empty() {
        return Err(Error::invalid(
            "--fields",
            format!("{} is raw data without fields; drop --fields", m.dataset_ref()),
        ));
    }
    let unknown: Vec<&str> =
        fields.iter().filter(|f| !m.schema.iter().any(|s| &s.name == *f)).map(String::as_str).collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = m.schema.iter().map(|f| f.name.as_str()).collect();
        return Err(Error::invalid(
            "--fields",
            format!("{} has no field(s) {}; its fields are {}", m.dataset_ref(), unknown.join(", "), known.join(", ")),
        ));
    }
    Ok(())
}
