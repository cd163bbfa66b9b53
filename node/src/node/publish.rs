//! Publishing: import a file, sign the next version's manifest, ingest it like any other and
//! announce it; withdraw a dataset; read the catalog (the node's own datasets included).

use deltafed_protocol::manifest::{Format, Manifest, Withdrawal};
use deltafed_protocol::wire::Gossip;
use deltafed_protocol::{DatasetId, DatasetRef, MemberId, OBJECT_VERSION, Signed};

use super::{Error, Node, now, serve};
use crate::admin::api;
use crate::catalog::{Ingested, Latest};
use crate::policy;
use crate::provenance::Record;

/// How a file is published, beyond its request.
#[derive(Debug, Clone, Default)]
pub(super) struct Publishing {
    pub schema: Option<Vec<deltafed_protocol::manifest::Field>>,
    pub live: bool,
    pub only_if_changed: bool,
    /// Who publishes, for the record.
    pub actor: crate::roles::Actor,
}

impl Node {
    pub async fn publish(
        &self,
        p: api::PublishRequest,
        actor: &crate::roles::Actor,
    ) -> Result<Signed<Manifest>, Error> {
        let dataset = p.dataset.clone();
        let how = Publishing { actor: actor.clone(), ..Publishing::default() };
        let (signed, _) = self.publish_with(p, how).await?;
        // A file replaces whatever a source published under this id: no schedule, not live.
        self.end_source_publishing(&dataset)?;
        Ok(signed)
    }

    /// Publishes `p.path` as the next version; with `how.schema`, the manifest carries that
    /// schema (a database's column types) instead of the one inferred from the file. Returns
    /// whether a new version was made: with `how.only_if_changed`, none is when the content and
    /// the catalog fields are those of the latest version.
    pub(super) async fn publish_with(
        &self,
        p: api::PublishRequest,
        how: Publishing,
    ) -> Result<(Signed<Manifest>, bool), Error> {
        let meta = std::fs::metadata(&p.path)
            .map_err(|e| Error::invalid("FILE", format!("cannot read {}: {e}", p.path.display())))?;
        if !meta.is_file() {
            return Err(Error::invalid("FILE", format!("{} is not a regular file", p.path.display())));
        }
        let format = p.format.unwrap_or_else(|| Format::from_file_name(&p.path.to_string_lossy()));
        let blobs = self.0.blobs.clone();
        let (path, key_field) = (p.path.clone(), p.key_field.clone());
        let index = self.0.keyindex.clone();
        let store = self.0.store.clone();
        let given = how.schema.clone();
        let imported = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            // What is wrong with the file is the publisher's to fix. A given schema is checked
            // here rather than by the import (an empty table infers none).
            let check_key = if given.is_some() { None } else { key_field.as_deref() };
            let mut imported =
                blobs.import(&path, format, check_key).map_err(|e| Error::invalid("FILE", e.to_string()))?;
            if let Some(schema) = given {
                let inferred: Vec<&str> = imported.schema.iter().map(|f| f.name.as_str()).collect();
                if !inferred.is_empty() && inferred != schema.iter().map(|f| f.name.as_str()).collect::<Vec<_>>() {
                    return Err(Error::internal("the export", "its fields differ from the columns it was read from"));
                }
                if let Some(k) = &key_field
                    && !schema.iter().any(|f| &f.name == k)
                {
                    return Err(Error::invalid("--key-field", format!("the rows have no column {k}")));
                }
                imported.schema = schema;
            }
            if let Some(k) = &key_field {
                // Indexed at publish time so the first query is as fast as the rest.
                index.build(&imported.hash, format, &imported.schema, k)?;
            }
            serve::remember_table(&store, &blobs, &imported.hash)?;
            Ok(imported)
        })
        .await??;
        let me = &self.0.member;
        let latest = self.0.catalog.latest(me, &p.dataset)?;
        if how.only_if_changed
            && let Some(Latest::Manifest(m)) = &latest
        {
            let b = m.body();
            let same = b.content_hash == imported.hash
                && b.schema == imported.schema
                && b.live == how.live
                && b.title == p.title
                && b.description == p.description
                && b.classification == p.classification
                && b.sharing == p.sharing
                && b.key_field == p.key_field;
            if same {
                return Ok((m.clone(), false));
            }
        }
        let version = match &latest {
            Some(Latest::Manifest(m)) => m.body().version + 1,
            Some(Latest::Withdrawn(w)) => w.body().version + 1,
            None => 1,
        };
        let manifest = Manifest {
            v: OBJECT_VERSION,
            publisher: me.clone(),
            dataset: p.dataset.clone(),
            version,
            title: p.title,
            description: p.description,
            format,
            schema: imported.schema,
            key_field: p.key_field,
            classification: p.classification,
            sharing: p.sharing,
            size: imported.size,
            records: imported.records,
            content_hash: imported.hash,
            created: now(),
            live: how.live,
        };
        let signed = Signed::sign(manifest, &self.0.key)?;
        match self.0.catalog.ingest_manifest(signed.as_bytes(), &self.roster().roster)? {
            Ingested::Accepted => {}
            other => {
                return Err(Error::refused(format!("the new manifest was not accepted locally: {other:?}")));
            }
        }
        self.record(Record::published(&signed).by(&how.actor))?;
        self.0.durable.sync().await?;
        self.announce(Gossip::Manifest(signed.as_bytes().to_vec())).await?;
        let b = signed.body();
        tracing::info!(dataset = %b.dataset_ref(), hash = %b.content_hash, live = b.live, "published");
        Ok((signed, true))
    }

    pub async fn withdraw(
        &self,
        dataset: DatasetId,
        reason: String,
        actor: &crate::roles::Actor,
    ) -> Result<Signed<Withdrawal>, Error> {
        let me = &self.0.member;
        let version = match self.0.catalog.latest(me, &dataset)? {
            Some(Latest::Manifest(m)) => m.body().version,
            Some(Latest::Withdrawn(_)) => {
                return Err(Error::refused(format!("{me}/{dataset} is already withdrawn")));
            }
            None => {
                return Err(Error::not_found(format!(
                    "this node has published no dataset {dataset}; see `deltafed catalog --publisher {me}`"
                )));
            }
        };
        let w = Withdrawal { v: OBJECT_VERSION, publisher: me.clone(), dataset, version, reason, time: now() };
        let signed = Signed::sign(w, &self.0.key)?;
        self.0.catalog.ingest_withdrawal(signed.as_bytes(), &self.roster().roster)?;
        self.record(Record::withdrawn(&signed).by(actor))?;
        // No scheduled run brings a withdrawn dataset back.
        self.end_source_publishing(&signed.body().dataset)?;
        self.0.durable.sync().await?;
        self.announce(Gossip::Withdrawal(signed.as_bytes().to_vec())).await?;
        Ok(signed)
    }

    /// The verified catalog, newest version of each dataset.
    pub fn catalog(&self, publisher: Option<&MemberId>, query: Option<&str>) -> Result<Vec<Signed<Manifest>>, Error> {
        Ok(self.0.catalog.list(publisher, query)?)
    }

    /// One manifest (newest, or the version named) and whether its signer is the publisher's
    /// key in the roster in force.
    pub fn catalog_show(&self, r: &DatasetRef) -> Result<(Signed<Manifest>, bool), Error> {
        let m = match r.version {
            Some(v) => self
                .0
                .catalog
                .version(&r.publisher, &r.dataset, v)?
                .ok_or_else(|| Error::not_found(format!("{r} is not in the catalog")))?,
            None => match self.0.catalog.latest(&r.publisher, &r.dataset)? {
                Some(Latest::Manifest(m)) => m,
                Some(Latest::Withdrawn(w)) => {
                    return Err(Error::refused(format!(
                        "{r} was withdrawn at version {} ({})",
                        w.body().version,
                        w.body().reason
                    )));
                }
                None => return Err(Error::not_found(format!("{r} is not in the catalog; see `deltafed catalog`"))),
            },
        };
        let valid = m.check_signer(&self.roster().roster).is_ok();
        Ok((m, valid))
    }

    /// A dataset's newest state and the manifest of the version `r` names (the newest when it
    /// names none). Whether that may be served or fetched is the policy's to say.
    pub(super) fn dataset_state(&self, r: &DatasetRef) -> Result<(Latest, Manifest), Error> {
        let missing = || Error::not_found(format!("{r} is not in the catalog; see `deltafed catalog`"));
        let latest = self.0.catalog.latest(&r.publisher, &r.dataset)?.ok_or_else(missing)?;
        let asked = match (r.version, &latest) {
            (None, Latest::Manifest(m)) => m.body().clone(),
            (None, Latest::Withdrawn(w)) => {
                // Refused by policy below; the newest published version stands in for it.
                let v = w.body().version;
                self.0.catalog.version(&r.publisher, &r.dataset, v)?.ok_or_else(missing)?.body().clone()
            }
            (Some(v), _) => self.0.catalog.version(&r.publisher, &r.dataset, v)?.ok_or_else(missing)?.body().clone(),
        };
        Ok((latest, asked))
    }

    /// The manifest to receive `r` by, refusing what the dataset's newest state does not allow
    /// (withdrawn, not shared), whatever version `r` names.
    pub(super) fn manifest_for(&self, r: &DatasetRef) -> Result<Manifest, Error> {
        let (latest, asked) = self.dataset_state(r)?;
        policy::servable(policy_latest(&latest), r)?;
        Ok(asked)
    }
}

/// The catalog's view of a dataset's newest state, as the policy takes it.
pub(super) fn policy_latest(l: &Latest) -> policy::Latest<'_> {
    match l {
        Latest::Manifest(m) => policy::Latest::Published(m.body()),
        Latest::Withdrawn(w) => policy::Latest::Withdrawn { version: w.body().version, reason: &w.body().reason },
    }
}
