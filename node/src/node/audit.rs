//! Provenance operations of a running node: periodic checkpoints sent to every member (who keep
//! them as witnesses, which we record when they acknowledge), listing, verification (including
//! the copies of our checkpoints that peers hold), export, and sealed archives (on request, and
//! by age in the background).

use std::path::PathBuf;
use std::time::Duration;

use deltafed_protocol::provenance::Checkpoint;
use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{DatasetRef, MemberId, Signed, Timestamp};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use super::{Error, Node, now};
use crate::provenance::archive::SEGMENT_BYTES;
use crate::provenance::{
    ArchiveError, ArchiveRequest, ArchiveStatus, Archived, ArchivedThrough, EntryView, Filter, VerifyReport,
};

/// How often the log head is checkpointed (when it moved).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
/// How long sending one checkpoint to every connected member may take in all.
const CHECKPOINT_SEND_LIMIT: Duration = Duration::from_secs(5);
/// How often the node looks for entries older than `[provenance] archive_after` (the first
/// look is at start-up). After the first run, each one moves about an hour of entries.
const ARCHIVE_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Archives entries older than `[provenance] archive_after`, hourly, off the async threads:
/// calls keep being served while segments are written. Each run stops at shutdown.
pub(super) async fn archiving(node: Node, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ARCHIVE_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // Awaited, not raced against shutdown: the run sees the token and stops by itself, and
        // the node's shutdown then waits for it rather than closing the database under it.
        node.archive_old(&shutdown).await;
    }
}

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
            // The member stored it as our witness: entries up to here may now be archived.
            Ok(()) => {
                if let Some(member) = self.member_of_peer(&peer)
                    && let Err(e) = self.0.provenance.record_witnessed(&member, cp.body().seq)
                {
                    tracing::error!(%member, error = %e, "cannot record a witnessed checkpoint");
                }
            }
            Err(crate::rpc::Error::Refused(reason)) => tracing::warn!(%peer, %reason, "a peer refused our checkpoint"),
            Err(e) => tracing::debug!(%peer, error = %e, "checkpoint not delivered"),
        }
    }

    /// Entries matching the filter, newest first: the live log, then (with `archive`, while the
    /// limit leaves room) the sealed segments in that directory, with the same filter. The key is
    /// turned into its keyed hash here, with the node's audit key, so archived calls are found
    /// by key as well.
    pub async fn provenance_list(
        &self,
        dataset: Option<DatasetRef>,
        peer: Option<MemberId>,
        since: Option<String>,
        limit: Option<usize>,
        key: Option<String>,
        archive: Option<PathBuf>,
    ) -> Result<Vec<EntryView>, Error> {
        let since = since
            .map(|s| {
                Timestamp::parse_at_or_before(&s, now()).map_err(|e| Error::invalid("--since", format!("--since: {e}")))
            })
            .transpose()?;
        let key = key.map(|k| crate::provenance::audit_hash(&self.0.audit_key, &k));
        let filter = Filter { dataset, peer, since, limit, key };
        let mut entries = self.0.provenance.query(&filter)?;
        let room = limit.map_or(usize::MAX, |l| l.saturating_sub(entries.len()));
        if let Some(dir) = archive
            && room > 0
        {
            let f = Filter { limit: limit.map(|_| room), ..filter };
            let older = tokio::task::spawn_blocking(move || crate::provenance::archive::search(&dir, &f)).await?;
            entries.extend(older.map_err(|e| Error::invalid("--archive", e.to_string()))?);
        }
        Ok(entries)
    }

    /// Verifies the log, including against the copies of our checkpoints that connected members hold.
    pub async fn provenance_verify(&self) -> Result<VerifyReport, Error> {
        self.verify_with(None).await
    }

    /// [`Node::provenance_verify`], and every archived segment in `archive` before the live log.
    pub async fn provenance_verify_archive(&self, archive: PathBuf) -> Result<VerifyReport, Error> {
        self.verify_with(Some(archive)).await
    }

    async fn verify_with(&self, archive: Option<PathBuf>) -> Result<VerifyReport, Error> {
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
        Ok(tokio::task::spawn_blocking(move || match archive {
            Some(dir) => prov.verify_with_archive(&witnessed, &dir),
            None => prov.verify(&witnessed),
        })
        .await??)
    }

    /// Moves entries covered by a witnessed checkpoint signed before `before` (RFC 3339, or a
    /// duration back from now) into sealed segments in `out` (default `[provenance]
    /// archive_dir`), then removes them from the database.
    pub async fn provenance_archive(&self, before: String, out: Option<PathBuf>) -> Result<Archived, Error> {
        let before = Timestamp::parse_at_or_before(&before, now())
            .map_err(|e| Error::invalid("--before", format!("--before: {e}")))?;
        let dir = match out {
            Some(d) => d,
            None => self.archive_dir()?,
        };
        let prov = self.0.provenance.clone();
        let run = move || {
            prov.archive(&ArchiveRequest { before, dir: &dir, segment_bytes: SEGMENT_BYTES, cancelled: &|| false })
        };
        tokio::task::spawn_blocking(run).await?.map_err(archive_error)
    }

    /// What is archived and the segments holding it.
    pub async fn provenance_archive_status(&self) -> Result<ArchiveStatus, Error> {
        let prov = self.0.provenance.clone();
        Ok(tokio::task::spawn_blocking(move || prov.archive_status()).await??)
    }

    /// The archive record the live log starts from, if any.
    pub fn provenance_archived(&self) -> Result<Option<ArchivedThrough>, Error> {
        Ok(self.0.provenance.archived()?)
    }

    fn archive_dir(&self) -> Result<PathBuf, Error> {
        self.0.provenance.archive_dir().map(PathBuf::from).ok_or_else(|| {
            Error::internal("archiving the provenance log", "no archive directory is configured".to_string())
        })
    }

    /// One background run: entries older than `archive_after`, once witnessed.
    async fn archive_old(&self, shutdown: &CancellationToken) {
        let after = u64::try_from(self.0.config.provenance.archive_after.as_millis()).unwrap_or(u64::MAX);
        let before = Timestamp(now().0.saturating_sub(after));
        let Ok(dir) = self.archive_dir() else { return };
        let (prov, token) = (self.0.provenance.clone(), shutdown.clone());
        let run = move || {
            let cancelled = || token.is_cancelled();
            prov.archive(&ArchiveRequest { before, dir: &dir, segment_bytes: SEGMENT_BYTES, cancelled: &cancelled })
        };
        match tokio::task::spawn_blocking(run).await {
            Ok(Ok(a)) if a.entries > 0 => {}
            Ok(Ok(a)) => tracing::debug!(why = a.nothing.unwrap_or_default(), "nothing to archive"),
            Ok(Err(ArchiveError::Refused(why))) => tracing::info!(%why, "old provenance entries wait to be archived"),
            Ok(Err(ArchiveError::Busy | ArchiveError::Cancelled)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot archive the provenance log"),
            Err(e) => tracing::error!(error = %e, "the archiving task failed"),
        }
    }

    /// Writes the export to `out`; returns the number of entries.
    pub async fn provenance_export(&self, out: PathBuf) -> Result<u64, Error> {
        let prov = self.0.provenance.clone();
        tokio::task::spawn_blocking(move || export_to(&prov, &out))
            .await?
            .map_err(|e| Error::internal("exporting the provenance log", e))
    }
}

fn archive_error(e: ArchiveError) -> Error {
    match e {
        ArchiveError::Refused(why) => Error::refused(why),
        e @ ArchiveError::Busy => Error::refused(e.to_string()),
        e @ ArchiveError::Cancelled => Error::Unavailable(e.to_string()),
        e => Error::internal("archiving the provenance log", e),
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
