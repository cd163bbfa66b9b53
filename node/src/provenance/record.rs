//! The entries a node writes, one constructor per step, so each kind's dataset, peer, note and
//! evidence are decided once (and the issuing and receiving sides of one object share a note).
//! Evidence is always the exact signed bytes, named by the object's own kind.

use std::time::SystemTime;

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome as DecisionOutcome, Revocation};
use deltafed_protocol::calls::{CallAnswer, CallBatch, Outcome};
use deltafed_protocol::exchange::{FetchRequest, QueryAnswer, QueryRequest, Receipt, Ticket};
use deltafed_protocol::manifest::{Manifest, Withdrawal};
use deltafed_protocol::provenance::{CallLog, EntryKind, Evidence};
use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::{DatasetRef, ExchangeId, GrantId, Hash, MemberId, Object, Signed, Timestamp};

use super::Record;

/// One signed object as evidence: its kind's tag name and its exact bytes.
pub fn evidence<T: Object>(s: &Signed<T>) -> Evidence {
    Evidence { kind: kind_name(T::KIND).into(), bytes: s.as_bytes().to_vec() }
}

fn kind_name(kind: deltafed_protocol::crypto::Kind) -> &'static str {
    let tag = kind.tag();
    tag.rsplit('/').next().unwrap_or(tag)
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// How notes name a projection.
pub fn fields_note(fields: &Option<Vec<String>>) -> String {
    match fields {
        Some(f) => format!("fields {}", f.join(",")),
        None => "all fields".into(),
    }
}

/// How notes name the grant an exchange ran under.
pub fn grant_note(grant: Option<GrantId>) -> String {
    grant.map(|g| format!("grant {g}")).unwrap_or_else(|| "no grant (shared unconditionally)".into())
}

/// A dataset of `publisher` without a version.
fn dataset(publisher: &MemberId, d: &deltafed_protocol::DatasetId) -> Option<DatasetRef> {
    Some(DatasetRef { publisher: publisher.clone(), dataset: d.clone(), version: None })
}

fn describe_grant(g: &Grant) -> String {
    format!("grant {} purpose: {}; {}; expires {}", g.id, g.purpose, fields_note(&g.fields), g.expires)
}

fn describe_request(r: &AccessRequest) -> String {
    format!("request {} purpose: {}; {}", r.id, r.purpose, fields_note(&r.fields))
}

fn describe_outcome(d: &Decision) -> String {
    match &d.outcome {
        DecisionOutcome::Approved { grant } => format!("request {} approved: grant {grant}", d.request),
        DecisionOutcome::Denied { reason } => format!("request {} denied: {reason}", d.request),
    }
}

impl Record {
    fn step(kind: EntryKind, dataset: Option<DatasetRef>, peer: Option<MemberId>, note: String) -> Record {
        Record {
            time: now(),
            kind,
            dataset,
            peer,
            exchange: None,
            note,
            objects: Vec::new(),
            calls: Vec::new(),
            also: Vec::new(),
        }
    }

    fn with(mut self, e: Evidence) -> Record {
        self.objects.push(e);
        self
    }

    /// Names who took the decision, at the end of the note (docs/audit.md).
    pub fn by(mut self, actor: &crate::roles::Actor) -> Record {
        self.note = format!("{}; {}", self.note, actor.note());
        self
    }

    fn in_exchange(mut self, id: ExchangeId) -> Record {
        self.exchange = Some(id);
        self
    }

    pub fn roster_installed(r: &SignedRoster, bytes: Vec<u8>) -> Record {
        Record::step(EntryKind::RosterInstalled, None, None, roster_note(r))
            .with(Evidence { kind: "roster".into(), bytes })
    }

    pub fn published(m: &Signed<Manifest>) -> Record {
        let b = m.body();
        let note = format!(
            "{} ({} bytes, {} records, {}, sharing {}) hash {}",
            b.title, b.size, b.records, b.classification, b.sharing, b.content_hash
        );
        Record::step(EntryKind::Published, Some(b.dataset_ref()), None, note).with(evidence(m))
    }

    pub fn withdrawn(w: &Signed<Withdrawal>) -> Record {
        let b = w.body();
        let d = DatasetRef { publisher: b.publisher.clone(), dataset: b.dataset.clone(), version: Some(b.version) };
        Record::step(EntryKind::Withdrawn, Some(d), None, b.reason.clone()).with(evidence(w))
    }

    pub fn request_sent(r: &Signed<AccessRequest>) -> Record {
        let b = r.body();
        Record::step(
            EntryKind::RequestSent,
            dataset(&b.provider, &b.dataset),
            Some(b.provider.clone()),
            describe_request(b),
        )
        .with(evidence(r))
    }

    pub fn request_received(r: &Signed<AccessRequest>) -> Record {
        let b = r.body();
        let kind = EntryKind::RequestReceived;
        Record::step(kind, dataset(&b.provider, &b.dataset), Some(b.requester.clone()), describe_request(b))
            .with(evidence(r))
    }

    pub fn decision_made(r: &Signed<AccessRequest>, d: &Signed<Decision>) -> Record {
        let rb = r.body();
        let kind = EntryKind::DecisionMade;
        Record::step(kind, dataset(&rb.provider, &rb.dataset), Some(rb.requester.clone()), describe_outcome(d.body()))
            .with(evidence(r))
            .with(evidence(d))
    }

    /// A decision on the request `r` this member sent.
    pub fn decision_received(r: &Signed<AccessRequest>, d: &Signed<Decision>) -> Record {
        let rb = r.body();
        let kind = EntryKind::DecisionReceived;
        Record::step(kind, dataset(&rb.provider, &rb.dataset), Some(rb.provider.clone()), describe_outcome(d.body()))
            .with(evidence(d))
    }

    pub fn grant_issued(g: &Signed<Grant>) -> Record {
        let b = g.body();
        Record::step(
            EntryKind::GrantIssued,
            dataset(&b.provider, &b.dataset),
            Some(b.grantee.clone()),
            describe_grant(b),
        )
        .with(evidence(g))
    }

    pub fn grant_received(g: &Signed<Grant>) -> Record {
        let b = g.body();
        let kind = EntryKind::GrantReceived;
        Record::step(kind, dataset(&b.provider, &b.dataset), Some(b.provider.clone()), describe_grant(b))
            .with(evidence(g))
    }

    /// The revocation of `grant`, issued by this member.
    pub fn revocation_issued(grant: &Grant, r: &Signed<Revocation>) -> Record {
        let note = format!("grant {} revoked: {}", grant.id, r.body().reason);
        let kind = EntryKind::RevocationIssued;
        Record::step(kind, dataset(&grant.provider, &grant.dataset), Some(grant.grantee.clone()), note)
            .with(evidence(r))
    }

    /// The revocation of `grant`, received from its provider.
    pub fn revocation_received(grant: &Grant, r: &Signed<Revocation>) -> Record {
        let note = format!("grant {} revoked: {}", grant.id, r.body().reason);
        let kind = EntryKind::RevocationReceived;
        Record::step(kind, dataset(&grant.provider, &grant.dataset), Some(grant.provider.clone()), note)
            .with(evidence(r))
    }

    /// The provider issued a ticket for `req`.
    pub fn exchange_served(
        req: &Signed<FetchRequest>,
        ticket: &Signed<Ticket>,
        grant: Option<GrantId>,
        purpose: &str,
    ) -> Record {
        let t = ticket.body();
        let d = DatasetRef { publisher: t.provider.clone(), dataset: t.dataset.clone(), version: Some(t.version) };
        let note = format!(
            "{}; purpose: {purpose}; {}; {} bytes from offset {}; hash {}",
            grant_note(grant),
            fields_note(&t.fields),
            t.size,
            t.offset,
            t.content_hash
        );
        Record::step(EntryKind::ExchangeServed, Some(d), Some(t.requester.clone()), note)
            .in_exchange(t.exchange)
            .with(evidence(req))
            .with(evidence(ticket))
    }

    /// The requester verified and wrote a whole delivery.
    pub fn exchange_received(
        req: &Signed<FetchRequest>,
        ticket: &Signed<Ticket>,
        receipt: &Signed<Receipt>,
        out: &std::path::Path,
    ) -> Record {
        let t = ticket.body();
        let d = DatasetRef { publisher: t.provider.clone(), dataset: t.dataset.clone(), version: Some(t.version) };
        let note = format!(
            "{}; {}; {} bytes, hash {}; written to {}",
            grant_note(req.body().grant),
            fields_note(&t.fields),
            t.size,
            t.content_hash,
            out.display()
        );
        Record::step(EntryKind::ExchangeReceived, Some(d), Some(t.provider.clone()), note)
            .in_exchange(t.exchange)
            .with(evidence(req))
            .with(evidence(ticket))
            .with(evidence(receipt))
    }

    /// The provider refused a fetch or query request. Only the request's hash and size are
    /// kept: the log can never be pruned, so a member's bytes must not be able to fill it.
    pub fn refused_request(
        what: &str,
        from: &MemberId,
        dataset: Option<DatasetRef>,
        reason: &str,
        request: &[u8],
    ) -> Record {
        let note = format!("{what} refused: {reason}; request {} ({} bytes)", Hash::of(request), request.len());
        Record::step(EntryKind::ExchangeRefused, dataset, Some(from.clone()), note)
    }

    /// The requester's fetch or query failed or was refused by `provider`; `request` is ours.
    pub fn failed<T: Object>(
        what: &str,
        provider: &MemberId,
        dataset: DatasetRef,
        reason: &str,
        request: Option<&Signed<T>>,
    ) -> Record {
        let rec =
            Record::step(EntryKind::ExchangeRefused, Some(dataset), Some(provider.clone()), format!("{what} {reason}"));
        match request {
            Some(r) => rec.with(evidence(r)),
            None => rec,
        }
    }

    /// `from` acknowledged an exchange of `dataset`.
    pub fn receipt_received(r: &Signed<Receipt>, dataset: Option<DatasetRef>) -> Record {
        let b = r.body();
        let note = format!("{} received {} bytes, hash {}", b.requester, b.bytes, b.content_hash);
        Record::step(EntryKind::ReceiptReceived, dataset, Some(b.requester.clone()), note)
            .in_exchange(b.exchange)
            .with(evidence(r))
    }

    pub fn query_served(
        req: &Signed<QueryRequest>,
        answer: &Signed<QueryAnswer>,
        grant: Option<GrantId>,
        purpose: &str,
    ) -> Record {
        let (q, a) = (req.body(), answer.body());
        let d = DatasetRef { publisher: a.provider.clone(), dataset: a.dataset.clone(), version: Some(a.version) };
        let note = format!(
            "{}; purpose: {purpose}; key {:?}; {} record(s); {}",
            grant_note(grant),
            q.key,
            a.count,
            fields_note(&a.fields)
        );
        Record::step(EntryKind::QueryServed, Some(d), Some(a.requester.clone()), note)
            .in_exchange(a.exchange)
            .with(evidence(req))
            .with(evidence(answer))
    }

    /// The provider answered a batch of calls (`calls` in batch order, key hashes already
    /// keyed with the audit key). `datasets`: those the calls named.
    pub fn calls_served(
        batch: &Signed<CallBatch>,
        answer: &Signed<CallAnswer>,
        calls: Vec<CallLog>,
        datasets: Vec<DatasetRef>,
    ) -> Record {
        let a = answer.body();
        Record::calls(EntryKind::CallsServed, a.requester.clone(), batch, answer, calls, datasets)
    }

    /// The requester had a batch of its calls answered.
    pub fn calls_answered(
        batch: &Signed<CallBatch>,
        answer: &Signed<CallAnswer>,
        calls: Vec<CallLog>,
        datasets: Vec<DatasetRef>,
    ) -> Record {
        let a = answer.body();
        Record::calls(EntryKind::CallsAnswered, a.provider.clone(), batch, answer, calls, datasets)
    }

    fn calls(
        kind: EntryKind,
        peer: MemberId,
        batch: &Signed<CallBatch>,
        answer: &Signed<CallAnswer>,
        calls: Vec<CallLog>,
        mut datasets: Vec<DatasetRef>,
    ) -> Record {
        let answered = calls.iter().filter(|c| matches!(c.outcome, Outcome::Answered { .. })).count();
        // Short: the note is paid for once per batch, the calls say the rest.
        let note = format!("{} call(s), {answered} answered", calls.len());
        let first = if datasets.is_empty() { None } else { Some(datasets.remove(0)) };
        let mut rec = Record::step(kind, first, Some(peer), note)
            .in_exchange(answer.body().exchange)
            .with(evidence(batch))
            .with(evidence(answer));
        rec.calls = calls;
        rec.also = datasets;
        rec
    }

    pub fn query_answered(req: &Signed<QueryRequest>, answer: &Signed<QueryAnswer>) -> Record {
        let (q, a) = (req.body(), answer.body());
        let d = DatasetRef { publisher: a.provider.clone(), dataset: a.dataset.clone(), version: Some(a.version) };
        let note = format!("key {:?}; {} record(s); hash {}", q.key, a.count, a.records);
        Record::step(EntryKind::QueryAnswered, Some(d), Some(a.provider.clone()), note)
            .in_exchange(a.exchange)
            .with(evidence(req))
            .with(evidence(answer))
    }
}

/// The note of a roster installation (also how a restart recognises the roster already logged).
pub fn roster_note(r: &SignedRoster) -> String {
    format!("roster version {} of federation {}", r.roster.version, r.roster.federation)
}
