//! Provenance operations of a running node: periodic checkpoints sent to every member (who keep
//! them as witnesses), listing, verification (including the copies of our checkpoints that peers
//! hold), and export.

use std::path::PathBuf;
use std::time::Duration;

use deltafed_protocol::provenance::Checkpoint;
use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{DatasetRef, MemberId, Signed, Timestamp};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use super::{Error, Node, now};
use crate::provenance::{EntryView, Filter, VerifyReport};

/// How often the log head is checkpointed (when it moved).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// How long sending one checkpoint to every connected member may take in all.
const CHECKPOINT_SEND_LIMIT: Duration = Duration::from_secs(5);

pub(super) async fn checkpoints(node: Node, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => node.checkpoint_and_send().await,
        }
    }
}

impl Node {
    /// Signs the head if it moved and sends the checkpoint to every connected member.
    pub(super) async fn checkpoint_and_send(&self) {
        let cp = match self.0.provenance.checkpoint(now()) {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot checkpoint the provenance log");
                return;
            }
        };
        // Sent to everyone at once, and bounded as a whole: one member that does not answer
        // must not hold up the rest, nor a shutdown.
        let sends = self.0.net.connected().into_iter().map(|peer| self.send_checkpoint(peer, &cp)).collect::<Vec<_>>();
        if tokio::time::timeout(CHECKPOINT_SEND_LIMIT, futures::future::join_all(sends)).await.is_err() {
            tracing::warn!("some members did not acknowledge the checkpoint within {CHECKPOINT_SEND_LIMIT:?}");
        }
    }

    /// Sends our newest checkpoint to a member that just connected.
    pub(super) async fn send_checkpoint_to(&self, peer: PeerId) {
        match self.0.provenance.own_checkpoints() {
            Ok(cps) => {
                if let Some(cp) = cps.last() {
                    self.send_checkpoint(peer, cp).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read own checkpoints"),
        }
    }

    async fn send_checkpoint(&self, peer: PeerId, cp: &Signed<Checkpoint>) {
        match self.0.net.deliver(peer, Delivery::Checkpoint(cp.as_bytes().to_vec())).await {
            Ok(()) => {}
            Err(crate::rpc::Error::Refused(reason)) => tracing::warn!(%peer, %reason, "a peer refused our checkpoint"),
            Err(e) => tracing::debug!(%peer, error = %e, "checkpoint not delivered"),
        }
    }

    pub fn provenance_list(
        &self,
        dataset: Option<DatasetRef>,
        peer: Option<MemberId>,
        since: Option<String>,
        limit: Option<usize>,
    ) -> Result<Vec<EntryView>, Error> {
        let since = since
            .map(|s| {
                Timestamp::parse_at_or_before(&s, now()).map_err(|e| Error::invalid("--since", format!("--since: {e}")))
            })
            .transpose()?;
        Ok(self.0.provenance.query(&Filter { dataset, peer, since, limit })?)
    }

    /// Verifies the log, including against the copies of our checkpoints that connected members hold.
    pub async fn provenance_verify(&self) -> Result<VerifyReport, Error> {
        let me = self.0.member.clone();
        let mut witnessed = Vec::new();
        for peer in self.0.net.connected() {
            if let Ok(list) = self.0.net.witnesses_of(peer, me.clone()).await {
                let roster = self.roster();
                for b in list {
                    if let Ok(cp) = Signed::<Checkpoint>::decode_from_member(&b, &roster.roster)
                        && cp.body().member == me
                    {
                        witnessed.push(cp);
                    }
                }
            }
        }
        let prov = self.0.provenance.clone();
        Ok(tokio::task::spawn_blocking(move || prov.verify(&witnessed)).await??)
    }

    /// Writes the export to `out`; returns the number of entries.
    pub async fn provenance_export(&self, out: PathBuf) -> Result<u64, Error> {
        let prov = self.0.provenance.clone();
        tokio::task::spawn_blocking(move || export_to(&prov, &out))
            .await?
            .map_err(|e| Error::internal("exporting the provenance log", e))
    }
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Log(#[from] crate::provenance::Error),
}

/// Writes the export atomically (a reader never sees half a file).
pub fn export_to(prov: &crate::provenance::Provenance, out: &std::path::Path) -> Result<u64, ExportError> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let write = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source: std::io::Error| ExportError::Write { path, source }
    };
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(write(dir))?;
    let mut w = std::io::BufWriter::new(tmp);
    let n = prov.export(&mut w)?;
    let tmp = w.into_inner().map_err(|e| write(out)(e.into_error()))?;
    tmp.as_file().sync_all().map_err(write(out))?;
    tmp.persist(out).map_err(|e| write(out)(e.error))?;
    Ok(n)
}
