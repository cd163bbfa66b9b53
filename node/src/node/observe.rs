//! What the metrics listener reads of the node: its counters, its state at scrape time
//! ([`crate::metrics::Snapshot`], from the stores) and whether its database answers.

use deltafed_protocol::MemberId;

use super::{Error, Node, now};
use crate::access::{Direction, Role};
use crate::catalog::Latest;
use crate::metrics::{Metrics, OTHER_PEER, Snapshot};
use crate::policy;
use crate::store::Cf;

impl Node {
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, as bound (`http://127.0.0.1:9480`).
    pub fn metrics_url(&self) -> &str {
        &self.0.metrics_url
    }

    /// A member as the `peer` label says it: only members of the roster in force are named,
    /// so the label's values stay bounded whatever a caller typed.
    pub(super) fn peer_label(&self, member: &MemberId) -> String {
        if self.roster().roster.key_of(member).is_some() { member.to_string() } else { OTHER_PEER.to_string() }
    }

    /// One read of the database, for `/readyz`.
    pub fn database_answers(&self) -> Result<(), Error> {
        self.0.store.get(Cf::Peers, b"")?;
        Ok(())
    }

    /// The gauges of a scrape, read from the stores (blocking: call it off the async threads).
    pub fn metrics_snapshot(&self) -> Result<Snapshot, Error> {
        let roster = self.roster();
        let r = &roster.roster;
        let t = now();
        let catalog_datasets = self.0.catalog.all()?.iter().filter(|l| matches!(l, Latest::Manifest(_))).count() as u64;
        let mut outbox = Vec::new();
        for m in r.members.iter().filter(|m| m.id != self.0.member) {
            outbox.push((m.id.to_string(), self.0.outbox.pending(&m.id)?.len() as u64));
        }
        let deadline = self.0.config.response_deadline;
        let (mut pending, mut overdue) = ([0u64; 2], [0u64; 2]);
        for h in self.0.access.requests()?.iter().filter(|h| h.decision.is_none()) {
            let i = usize::from(h.direction == Direction::Outgoing);
            pending[i] += 1;
            if t > h.request.body().time.saturating_add(deadline) {
                overdue[i] += 1;
            }
        }
        let mut active = [0u64; 2];
        for g in self.0.access.grants()?.iter().filter(|g| policy::grant_in_force(g, t).is_ok()) {
            active[usize::from(g.role == Role::Received)] += 1;
        }
        let head = self.0.provenance.head();
        Ok(Snapshot {
            member: self.0.member.to_string(),
            federation: r.federation.to_string(),
            roster_version: r.version,
            members: r.members.len() as u64,
            connected: self.0.net.connected().len() as u64,
            catalog_datasets,
            provenance_entries: self.0.provenance.len(),
            provenance_head_seq: head.map(|h| h.seq),
            outbox,
            requests_pending: vec![("incoming", pending[0]), ("outgoing", pending[1])],
            requests_overdue: vec![("incoming", overdue[0]), ("outgoing", overdue[1])],
            grants_active: vec![("issued", active[0]), ("received", active[1])],
            exchanges_serving: self.0.exchanges.open() as u64,
            storage: self.0.store.memory_usage(),
        })
    }
}
