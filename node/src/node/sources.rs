//! Database sources (`deltafed source ...`) and publishing from them: the rows are exported to a
//! temporary file in the data dir and published through [`Node::publish`]'s own path, so the
//! manifest, the blob, the key index and everything downstream are those of any dataset. The
//! registry, the export and live lookups are [`crate::sources`].
//!
//! Schedules (`publish --source ... --every D`) are kept in `Cf::Meta` as `schedule/DATASET` →
//! a [`Schedule`]; one task runs them, re-exporting and publishing a new version only when the
//! data changed. Publishing the dataset again replaces its schedule; withdrawing it ends it.

use std::time::Duration;

use deltafed_protocol::manifest::{Format, Manifest};
use deltafed_protocol::{DatasetId, Signed, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::publish::Publishing;
use super::{Error, Node, now};
use crate::admin::api;
use crate::roles::Actor;
use crate::sources::{self, PasswordRef, Selection, Source, Sources, live};
use crate::store::{Batch, Cf};

const SCHEDULE_PREFIX: &[u8] = b"schedule/";
/// The shortest `--every`. A run that takes longer than the period simply makes the next one
/// due at once; runs never overlap (one task runs them all).
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A scheduled republish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Schedule {
    pub request: api::SourcePublishRequest,
    pub every_ms: u64,
    pub next: Timestamp,
    /// What the last run did: `published vN`, `unchanged` or the error.
    #[serde(default)]
    pub last: Option<String>,
    /// Who set the schedule ([`Actor::who`]).
    #[serde(default)]
    pub set_by: String,
}

fn schedule_key(dataset: &DatasetId) -> Vec<u8> {
    [SCHEDULE_PREFIX, dataset.as_str().as_bytes()].concat()
}

fn source_error(e: sources::Error) -> Error {
    use sources::Error as E;
    match e {
        E::BadName(_) | E::Exists(_) => Error::invalid("NAME", e.to_string()),
        E::Unknown(_) => Error::not_found(e.to_string()),
        E::TooMany => Error::refused(e.to_string()),
        E::BadUrl(_) => Error::invalid("--url", e.to_string()),
        E::Password(_) => Error::invalid("--password-file", e.to_string()),
        E::Connect { .. } => Error::Unavailable(e.to_string()),
        E::Query { .. } | E::Unsupported { .. } | E::DuplicateColumn(_) | E::NoColumns => {
            Error::invalid("--sql", e.to_string())
        }
        E::NotIndexed { .. } | E::LiveNeedsTable | E::LiveKeyType { .. } => Error::invalid("--live", e.to_string()),
        E::Write { .. } | E::Corrupt { .. } | E::Store(_) => Error::internal("the source", e),
    }
}

impl Node {
    fn sources(&self) -> Sources {
        Sources::new(self.0.store.clone())
    }

    /// `deltafed source add`.
    pub async fn source_add(&self, name: String, url: String, password: PasswordRef) -> Result<Source, Error> {
        let source = self.sources().add(&name, url, password, now().to_string()).map_err(source_error)?;
        self.0.durable.sync().await?;
        tracing::info!(source = %name, url = %source.redacted_url(), "source added");
        Ok(source)
    }

    /// `deltafed source list`, with the schedules of each source.
    pub fn source_list(&self) -> Result<Vec<(Source, Vec<Schedule>)>, Error> {
        let schedules = self.schedules()?;
        let list = self.sources().list().map_err(source_error)?;
        Ok(list
            .into_iter()
            .map(|s| {
                let mine = schedules.iter().filter(|x| x.request.source == s.name).cloned().collect();
                (s, mine)
            })
            .collect())
    }

    /// `deltafed source remove`: datasets already published from it stay published (live ones
    /// answer "unavailable" until published from another source); its schedules end.
    pub async fn source_remove(&self, name: &str) -> Result<Source, Error> {
        let source = self.sources().get(name).map_err(source_error)?;
        let mut batch = Batch::default();
        for s in self.schedules()?.iter().filter(|s| s.request.source == name) {
            batch.delete(Cf::Meta, schedule_key(&s.request.dataset));
        }
        self.0.store.write(batch)?;
        self.sources().remove(name).map_err(source_error)?;
        self.0.live.forget(name);
        self.0.durable.sync().await?;
        self.0.schedules_changed.notify_one();
        tracing::info!(source = %name, "source removed");
        Ok(source)
    }

    /// `deltafed publish --source NAME (--table T | --sql Q) [--live] [--every D]`: a snapshot
    /// of the rows as the next version of the dataset, its schema from the column types.
    pub async fn publish_source(
        &self,
        p: api::SourcePublishRequest,
        actor: &Actor,
    ) -> Result<(Signed<Manifest>, bool), Error> {
        let every = match &p.every {
            None => None,
            Some(text) => {
                let d = humantime::parse_duration(text).map_err(|e| {
                    Error::invalid("--every", format!("--every {text:?} is not a duration (15m, 1h, 1d): {e}"))
                })?;
                if d < MIN_EVERY {
                    return Err(Error::invalid("--every", format!("--every {text} is below the minimum of 1s")));
                }
                Some(d)
            }
        };
        let (signed, changed) = self.publish_source_once(&p, false, actor).await?;
        let key = schedule_key(&p.dataset);
        let mut batch = Batch::default();
        match every {
            Some(d) => {
                let every_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let s = Schedule {
                    request: p.clone(),
                    every_ms,
                    next: now().saturating_add(d),
                    last: None,
                    set_by: actor.who(),
                };
                let bytes = serde_json::to_vec(&s).map_err(|e| Error::internal("encoding a schedule", e))?;
                batch.put(Cf::Meta, key, bytes);
            }
            None => {
                batch.delete(Cf::Meta, key);
            }
        }
        self.0.store.write(batch)?;
        self.0.durable.sync().await?;
        self.0.schedules_changed.notify_one();
        Ok((signed, changed))
    }

    async fn publish_source_once(
        &self,
        p: &api::SourcePublishRequest,
        only_if_changed: bool,
        actor: &Actor,
    ) -> Result<(Signed<Manifest>, bool), Error> {
        let format = match p.format {
            None | Some(Format::Jsonl) => Format::Jsonl,
            Some(Format::Csv) => Format::Csv,
            Some(other) => {
                return Err(Error::invalid("--format", format!("a source is published as csv or jsonl, not {other}")));
            }
        };
        let table = match (&p.selection, p.live) {
            (Selection::Table(t), true) if p.key_field.is_some() => Some(t.clone()),
            (_, true) => return Err(source_error(sources::Error::LiveNeedsTable)),
            _ => None,
        };
        let source = self.sources().get(&p.source).map_err(source_error)?;
        // Beside the data dir's other files, so the import's copy stays on one file system.
        let dir = self.0.partial_dir.parent().map(ToOwned::to_owned).unwrap_or_else(|| self.0.partial_dir.clone());
        let suffix = if format == Format::Csv { ".csv" } else { ".jsonl" };
        let tmp = tempfile::Builder::new()
            .prefix(".source-export-")
            .suffix(suffix)
            .tempfile_in(&dir)
            .map_err(|e| Error::internal("creating the export file", e))?;
        let exported = sources::export(&source, &p.selection, format, tmp.path()).await.map_err(source_error)?;
        tracing::info!(source = %source.name, records = exported.records, "source exported");
        let spec = match (&table, &p.key_field) {
            (Some(t), Some(k)) => {
                Some(sources::live_spec(&source, t, k, &exported.columns).await.map_err(source_error)?)
            }
            _ => None,
        };
        // The spec is in place before a live manifest is announced, so the first call finds it.
        live::put_spec(&self.0.store, &p.dataset, spec.as_ref()).map_err(source_error)?;
        let publish = api::PublishRequest {
            path: tmp.path().to_owned(),
            dataset: p.dataset.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            classification: p.classification,
            sharing: p.sharing,
            key_field: p.key_field.clone(),
            format: Some(format),
        };
        let how = Publishing { schema: Some(exported.schema), live: p.live, only_if_changed, actor: actor.clone() };
        // `tmp` lives until the import has copied it.
        let out = self.publish_with(publish, how).await;
        drop(tmp);
        out
    }

    fn schedules(&self) -> Result<Vec<Schedule>, Error> {
        let mut out = Vec::new();
        for (k, v) in self.0.store.scan_prefix(Cf::Meta, SCHEDULE_PREFIX)? {
            match serde_json::from_slice::<Schedule>(&v) {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(key = %String::from_utf8_lossy(&k), error = %e, "unreadable schedule skipped"),
            }
        }
        Ok(out)
    }

    /// Ends the schedule of a dataset (on withdrawal) and forgets its live source.
    pub(super) fn end_source_publishing(&self, dataset: &DatasetId) -> Result<(), Error> {
        let mut batch = Batch::default();
        batch.delete(Cf::Meta, schedule_key(dataset));
        self.0.store.write(batch)?;
        live::put_spec(&self.0.store, dataset, None).map_err(source_error)?;
        self.0.schedules_changed.notify_one();
        Ok(())
    }

    /// Runs the schedules that are due; returns when the next one is.
    async fn run_due_schedules(&self) -> Option<Timestamp> {
        let schedules = match self.schedules() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the schedules");
                return Some(now().saturating_add(MIN_EVERY));
            }
        };
        let mut next: Option<Timestamp> = None;
        for mut s in schedules {
            if s.next <= now() {
                let dataset = s.request.dataset.clone();
                // A scheduled run is recorded as the schedule's, naming who set it.
                let by = Actor::Schedule { set_by: s.set_by.clone() };
                let last = match self.publish_source_once(&s.request, true, &by).await {
                    Ok((m, true)) => {
                        tracing::info!(dataset = %m.body().dataset_ref(), "scheduled republish: changed");
                        format!("published version {}", m.body().version)
                    }
                    Ok((_, false)) => {
                        tracing::debug!(dataset = %dataset, "scheduled republish: unchanged");
                        "unchanged".to_string()
                    }
                    Err(e) => {
                        tracing::warn!(dataset = %dataset, error = %e, "scheduled republish failed; tried again at the next run");
                        format!("failed: {e}")
                    }
                };
                s.last = Some(format!("{} {last}", now()));
                s.next = now().saturating_add(Duration::from_millis(s.every_ms));
                // Only if the schedule is still there: it may have been replaced or ended while
                // this run exported.
                let key = schedule_key(&dataset);
                if let Ok(Some(cur)) = self.0.store.get(Cf::Meta, &key)
                    && let Ok(cur) = serde_json::from_slice::<Schedule>(&cur)
                    && cur.every_ms == s.every_ms
                    && serde_json::to_value(&cur.request).ok() == serde_json::to_value(&s.request).ok()
                    && let Ok(bytes) = serde_json::to_vec(&s)
                {
                    let mut batch = Batch::default();
                    batch.put(Cf::Meta, key, bytes);
                    if let Err(e) = self.0.store.write(batch) {
                        tracing::warn!(error = %e, "cannot save a schedule's next run");
                    }
                }
            }
            next = Some(next.map_or(s.next, |n| n.min(s.next)));
        }
        next
    }
}

/// The scheduler of `publish --every`: sleeps until the next run is due or a schedule changes.
pub(super) async fn schedules(node: Node, shutdown: CancellationToken) {
    loop {
        let next = node.run_due_schedules().await;
        let wait = match next {
            Some(t) => t.to_system().duration_since(std::time::SystemTime::now()).unwrap_or_default(),
            // Nothing scheduled: sleep until a schedule is added.
            None => Duration::from_secs(86_400),
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = node.0.schedules_changed.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
