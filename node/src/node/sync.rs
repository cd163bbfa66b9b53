//! The catalog and the roster as they travel: gossip validation, catch-up sync on every new
//! connection (pages of the peer's catalog through the same ingest path as gossip), and roster
//! replacement (from gossip, sync or the admin API), which must be a valid successor of the
//! roster in force.

use std::sync::Arc;
use std::time::Duration;

use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::wire::{self, Gossip};
use libp2p::PeerId;

use super::{Error, Node, members_of};
use crate::catalog::Ingested;
use crate::provenance::{self, Record};
use crate::rosterfile;

/// Most sync pages taken from one peer, so a misbehaving one cannot keep us syncing forever.
const MAX_SYNC_PAGES: usize = 100_000;

impl Node {
    /// Checks and applies one gossiped object.
    pub(super) async fn ingest(&self, data: &[u8]) -> Ingested {
        match Gossip::decode(data) {
            Ok(g) => self.ingest_item(g).await,
            Err(e) => Ingested::Rejected(e.to_string()),
        }
    }

    async fn ingest_item(&self, g: Gossip) -> Ingested {
        let roster = self.roster();
        let res = match &g {
            Gossip::Manifest(b) => self.0.catalog.ingest_manifest(b, &roster.roster),
            Gossip::Withdrawal(b) => self.0.catalog.ingest_withdrawal(b, &roster.roster),
            Gossip::Roster(b) => return self.ingest_roster(b).await,
        };
        match res {
            Ok(i) => {
                if i == Ingested::Accepted {
                    tracing::info!(
                        kind = if matches!(g, Gossip::Manifest(_)) { "manifest" } else { "withdrawal" },
                        "catalog updated"
                    );
                }
                i
            }
            Err(e) => {
                tracing::error!(error = %e, "catalog write failed");
                Ingested::Stale
            }
        }
    }

    /// Applies a roster that claims to replace the one in force.
    async fn ingest_roster(&self, bytes: &[u8]) -> Ingested {
        let new = match SignedRoster::decode(bytes) {
            Ok(r) => r,
            Err(e) => return Ingested::Rejected(e.to_string()),
        };
        match self.replace_roster(new).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot install a newer roster");
                Ingested::Stale
            }
        }
    }

    async fn replace_roster(&self, new: SignedRoster) -> Result<Ingested, rosterfile::Error> {
        let _guard = self.0.roster_change.lock().await;
        let current = self.roster();
        if new == *current {
            return Ok(Ingested::Duplicate);
        }
        if new.roster.federation == current.roster.federation && new.roster.version <= current.roster.version {
            return Ok(Ingested::Stale);
        }
        if let Err(reason) = new.validate_successor(&current.roster) {
            return Ok(Ingested::Rejected(format!("roster version {}: {reason}", new.roster.version)));
        }
        rosterfile::write(&self.0.roster_path, &new)?;
        let members = members_of(&new, &self.0.member);
        if new.roster.member(&self.0.member).is_none() {
            tracing::error!(member = %self.0.member, version = new.roster.version, "this member is not in the new roster; the federation will refuse it");
        }
        tracing::info!(version = new.roster.version, members = new.roster.members.len(), "roster replaced");
        *self.0.roster.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.record_roster_if_new();
        let _ = self.0.net.set_members(members).await;
        Ok(Ingested::Accepted)
    }

    /// `deltafed roster install` with a node running: the roster's bytes.
    pub async fn roster_install(&self, bytes: Vec<u8>) -> Result<SignedRoster, Error> {
        let new =
            SignedRoster::decode(&bytes).map_err(|e| Error::invalid("FILE", format!("not a readable roster: {e}")))?;
        match self.replace_roster(new.clone()).await? {
            Ingested::Accepted => self.announce(Gossip::Roster(bytes)).await?,
            Ingested::Duplicate => {}
            Ingested::Stale => {
                return Err(Error::refused(format!(
                    "roster version {} does not replace version {}, which is in force",
                    new.roster.version,
                    self.roster().roster.version
                )));
            }
            Ingested::Rejected(reason) => return Err(Error::refused(format!("roster not valid: {reason}"))),
        }
        Ok(new)
    }

    /// Logs the roster in force unless the newest entry already is that roster.
    pub(super) fn record_roster_if_new(&self) {
        let roster = self.roster();
        let Ok(bytes) = roster.encode() else { return };
        let note = provenance::record::roster_note(&roster);
        let already = self
            .0
            .provenance
            .query(&provenance::Filter { limit: Some(1), ..Default::default() })
            .ok()
            .and_then(|v| v.into_iter().next())
            .is_some_and(|e| e.kind == "roster-installed" && e.note == note);
        if !already {
            self.record_or_log(Record::roster_installed(&roster, bytes));
        }
    }

    /// Publishes an object on the catalog topic.
    pub(super) async fn announce(&self, g: Gossip) -> Result<(), Error> {
        let data = g.encode()?;
        Ok(self.0.net.publish(data).await?)
    }

    /// After a new connection: sync, retried while the member stays connected (simultaneous
    /// dials can close the connection a first sync went out on).
    pub(super) async fn catch_up(&self, peer: PeerId) {
        for attempt in 1..=3 {
            match self.sync_with(peer).await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    tracing::debug!(%peer, error = %e, attempt, "catalog sync failed; retrying");
                    if !self.0.net.is_connected(&peer) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "catalog sync failed; it is retried on the next connection")
                }
            }
        }
    }

    /// Pulls a member's roster (if newer) and catalog, page by page.
    async fn sync_with(&self, peer: PeerId) -> Result<(), crate::rpc::Error> {
        let mut after: Option<String> = None;
        let mut accepted = 0usize;
        for _ in 0..MAX_SYNC_PAGES {
            let req = wire::SyncRequest { roster_version: self.roster().roster.version, after: after.clone() };
            let page = self.0.net.sync(peer, req).await?;
            // Pages carry a roster only when the peer's is newer; a bad one is the peer's lie,
            // not a reason to stop taking the (separately verified) items.
            if let Some(r) = page.roster
                && let Ingested::Rejected(reason) = self.ingest_roster(&r).await
            {
                tracing::warn!(%peer, %reason, "sync carried an invalid roster");
            }
            for item in page.items {
                match self.ingest_item(item).await {
                    Ingested::Accepted => accepted += 1,
                    Ingested::Rejected(reason) => {
                        tracing::warn!(%peer, %reason, "sync carried an invalid object")
                    }
                    _ => {}
                }
            }
            match page.next {
                Some(n) if after.as_deref().is_none_or(|a| n.as_str() > a) => after = Some(n),
                Some(_) => return Err(crate::rpc::Error::Refused("sync cursor did not advance".into())),
                None => break,
            }
        }
        if accepted > 0 {
            tracing::info!(%peer, accepted, "caught up by sync");
        }
        Ok(())
    }

    /// One page of our catalog (and our roster if the peer's is older).
    pub(super) fn answer_sync(&self, s: &wire::SyncRequest) -> wire::Response {
        let roster = self.roster();
        let roster_bytes = if roster.roster.version > s.roster_version { roster.encode().ok() } else { None };
        match self.0.catalog.sync_page(s.after.as_deref()) {
            Ok((items, next)) => wire::Response::Sync(wire::SyncResponse { roster: roster_bytes, items, next }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the catalog for a sync");
                wire::Response::Refused("the catalog is unavailable".into())
            }
        }
    }
}
