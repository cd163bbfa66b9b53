//! The verified federation catalog: the newest manifest (or withdrawal) of every dataset, and
//! every manifest version ever accepted.
//!
//! Everything enters through [`Catalog::ingest`], whether it came from gossip, from a sync page,
//! or from this node's own `publish`: the signature is checked against the roster in force, the
//! author must be a member, and versions only move forward. Two different manifests for the same
//! version are an equivocation and are rejected.

use std::sync::Mutex;

use deltafed_protocol::manifest::{Manifest, Withdrawal};
use deltafed_protocol::roster::Roster;
use deltafed_protocol::wire::{Gossip, SYNC_PAGE_BYTES};
use deltafed_protocol::{DatasetId, MemberId, Signed};

use crate::store::{self, Batch, Cf, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("stored catalog record {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
}

/// What ingesting an object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// New: stored (and, from gossip, worth forwarding).
    Accepted,
    /// Already known, byte for byte.
    Duplicate,
    /// Older than what is held.
    Stale,
    /// Invalid; the sender should be penalised.
    Rejected(String),
}

/// The newest state of one dataset.
#[derive(Debug, Clone)]
pub enum Latest {
    Manifest(Signed<Manifest>),
    Withdrawn(Signed<Withdrawal>),
}

impl Latest {
    fn version(&self) -> u64 {
        match self {
            Latest::Manifest(m) => m.body().version,
            Latest::Withdrawn(w) => w.body().version,
        }
    }

    fn to_gossip(&self) -> Gossip {
        match self {
            Latest::Manifest(m) => Gossip::Manifest(m.as_bytes().to_vec()),
            Latest::Withdrawn(w) => Gossip::Withdrawal(w.as_bytes().to_vec()),
        }
    }
}

pub struct Catalog {
    store: Store,
    /// Serialises read-compare-write of one dataset's state (ingest is rare and fast).
    write: Mutex<()>,
    limits: Limits,
}

/// What one publisher may make this node keep.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Datasets per publisher; a manifest for one more is rejected.
    pub datasets: usize,
    /// Versions kept per dataset; older ones are dropped when a newer one arrives.
    pub versions: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { datasets: 1000, versions: 100 }
    }
}

fn key(publisher: &MemberId, dataset: &DatasetId) -> String {
    format!("{publisher}/{dataset}")
}

fn version_key(publisher: &MemberId, dataset: &DatasetId, version: u64) -> Vec<u8> {
    let mut k = format!("{publisher}/{dataset}/").into_bytes();
    k.extend_from_slice(&version.to_be_bytes());
    k
}

impl Catalog {
    pub fn new(store: Store) -> Catalog {
        Catalog::with_limits(store, Limits::default())
    }

    pub fn with_limits(store: Store, limits: Limits) -> Catalog {
        Catalog { store, write: Mutex::new(()), limits }
    }

    fn decode_latest(k: &str, bytes: &[u8]) -> Result<Latest, Error> {
        let corrupt = |detail: String| Error::Corrupt { key: k.to_string(), detail };
        // Stored records were verified on the way in; skip the canonical re-check (hot path).
        let g: Gossip = cbor4ii::serde::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        match g {
            Gossip::Manifest(b) => {
                Ok(Latest::Manifest(Signed::from_trusted_bytes(&b).map_err(|e| corrupt(e.to_string()))?))
            }
            Gossip::Withdrawal(b) => {
                Ok(Latest::Withdrawn(Signed::from_trusted_bytes(&b).map_err(|e| corrupt(e.to_string()))?))
            }
            Gossip::Roster(_) => Err(corrupt("a roster in the catalog".into())),
        }
    }

    pub fn latest(&self, publisher: &MemberId, dataset: &DatasetId) -> Result<Option<Latest>, Error> {
        let k = key(publisher, dataset);
        match self.store.get(Cf::Catalog, k.as_bytes())? {
            None => Ok(None),
            Some(b) => Self::decode_latest(&k, &b).map(Some),
        }
    }

    /// One specific version of a manifest.
    pub fn version(
        &self,
        publisher: &MemberId,
        dataset: &DatasetId,
        version: u64,
    ) -> Result<Option<Signed<Manifest>>, Error> {
        let k = version_key(publisher, dataset, version);
        match self.store.get(Cf::Manifests, &k)? {
            None => Ok(None),
            Some(b) => Signed::from_trusted_bytes(&b).map(Some).map_err(|e| Error::Corrupt {
                key: format!("{}@{version}", key(publisher, dataset)),
                detail: e.to_string(),
            }),
        }
    }

    /// Checks and stores a manifest.
    pub fn ingest_manifest(&self, bytes: &[u8], roster: &Roster) -> Result<Ingested, Error> {
        let m = match Signed::<Manifest>::decode_from_member(bytes, roster) {
            Ok(m) => m,
            Err(e) => return Ok(Ingested::Rejected(e.to_string())),
        };
        let b = m.body();
        if b.version == 0 {
            return Ok(Ingested::Rejected("manifest version 0".into()));
        }
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        match self.latest(&b.publisher, &b.dataset)? {
            Some(Latest::Manifest(cur)) if cur.body().version == b.version => {
                return Ok(if cur.as_bytes() == bytes {
                    Ingested::Duplicate
                } else {
                    Ingested::Rejected(format!(
                        "a different manifest for {} exists at the same version",
                        b.dataset_ref()
                    ))
                });
            }
            Some(cur) if cur.version() >= b.version => return Ok(Ingested::Stale),
            Some(_) => {}
            None => {
                let prefix = format!("{}/", b.publisher);
                let held = self.store.scan_prefix_limit(Cf::Catalog, prefix.as_bytes(), self.limits.datasets)?.len();
                if held >= self.limits.datasets {
                    return Ok(Ingested::Rejected(format!(
                        "{} already has {held} datasets here, the most this node keeps per member",
                        b.publisher
                    )));
                }
            }
        }
        let k = key(&b.publisher, &b.dataset);
        let latest = Gossip::Manifest(bytes.to_vec())
            .encode()
            .map_err(|e| Error::Corrupt { key: k.clone(), detail: e.to_string() })?;
        let mut batch = Batch::default();
        batch.put(Cf::Catalog, k.as_bytes(), latest).put(
            Cf::Manifests,
            version_key(&b.publisher, &b.dataset, b.version),
            bytes,
        );
        // Only the newest versions are kept (keys sort by version within a dataset).
        let versions = self.store.scan_prefix(Cf::Manifests, format!("{k}/").as_bytes())?;
        let keep = self.limits.versions.max(1).saturating_sub(1);
        if versions.len() > keep {
            for (old, _) in &versions[..versions.len() - keep] {
                batch.delete(Cf::Manifests, old.clone());
            }
        }
        self.store.write(batch)?;
        Ok(Ingested::Accepted)
    }

    /// Checks and stores a withdrawal.
    pub fn ingest_withdrawal(&self, bytes: &[u8], roster: &Roster) -> Result<Ingested, Error> {
        let w = match Signed::<Withdrawal>::decode_from_member(bytes, roster) {
            Ok(w) => w,
            Err(e) => return Ok(Ingested::Rejected(e.to_string())),
        };
        let b = w.body();
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        match self.latest(&b.publisher, &b.dataset)? {
            Some(Latest::Withdrawn(cur)) if cur.as_bytes() == bytes => {
                return Ok(Ingested::Duplicate);
            }
            Some(Latest::Withdrawn(cur)) if cur.body().version >= b.version => {
                return Ok(Ingested::Stale);
            }
            Some(Latest::Manifest(cur)) if cur.body().version > b.version => {
                return Ok(Ingested::Stale);
            }
            _ => {}
        }
        let k = key(&b.publisher, &b.dataset);
        let latest = Gossip::Withdrawal(bytes.to_vec())
            .encode()
            .map_err(|e| Error::Corrupt { key: k.clone(), detail: e.to_string() })?;
        let mut batch = Batch::default();
        batch.put(Cf::Catalog, k.as_bytes(), latest);
        self.store.write(batch)?;
        Ok(Ingested::Accepted)
    }

    /// Every dataset's newest state, in key order.
    pub fn all(&self) -> Result<Vec<Latest>, Error> {
        self.store
            .scan_prefix(Cf::Catalog, b"")?
            .into_iter()
            .map(|(k, v)| Self::decode_latest(&String::from_utf8_lossy(&k), &v))
            .collect()
    }

    /// The live catalog: newest manifest of each dataset not withdrawn, filtered.
    pub fn list(&self, publisher: Option<&MemberId>, query: Option<&str>) -> Result<Vec<Signed<Manifest>>, Error> {
        let q = query.map(str::to_lowercase);
        Ok(self
            .all()?
            .into_iter()
            .filter_map(|l| match l {
                Latest::Manifest(m) => Some(m),
                Latest::Withdrawn(_) => None,
            })
            .filter(|m| publisher.is_none_or(|p| &m.body().publisher == p))
            .filter(|m| {
                q.as_deref().is_none_or(|q| {
                    let b = m.body();
                    b.dataset.as_str().contains(q)
                        || b.title.to_lowercase().contains(q)
                        || b.description.to_lowercase().contains(q)
                })
            })
            .collect())
    }

    /// One page of the catalog for a peer's sync, after the cursor `after` (exclusive).
    pub fn sync_page(&self, after: Option<&str>) -> Result<(Vec<Gossip>, Option<String>), Error> {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut last = None;
        for l in self.all()? {
            let (p, d) = match &l {
                Latest::Manifest(m) => (&m.body().publisher, &m.body().dataset),
                Latest::Withdrawn(w) => (&w.body().publisher, &w.body().dataset),
            };
            let k = key(p, d);
            if after.is_some_and(|a| k.as_str() <= a) {
                continue;
            }
            let g = l.to_gossip();
            if bytes + g.len() > SYNC_PAGE_BYTES && !items.is_empty() {
                return Ok((items, last));
            }
            bytes += g.len();
            items.push(g);
            last = Some(k);
        }
        Ok((items, None))
    }
}

#[cfg(test)]
mod tests {
    use deltafed_protocol::manifest::{Classification, Format, Sharing};
    use deltafed_protocol::roster::{Member, Roster};
    use deltafed_protocol::{Hash, OBJECT_VERSION, SecretKey, Timestamp};

    use super::*;

    /// One publisher cannot make a node keep unbounded datasets or versions.
    #[test]
    fn datasets_and_versions_per_publisher_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("db")).expect("store");
        let catalog = Catalog::with_limits(store.clone(), Limits { datasets: 3, versions: 2 });
        let key = SecretKey::from_seed([5; 32]);
        let member: MemberId = "anhui".parse().expect("member");
        let roster = Roster {
            v: OBJECT_VERSION,
            federation: "f".parse().expect("federation"),
            version: 1,
            threshold: 1,
            members: vec![Member { id: member.clone(), name: "Anhui".into(), key: key.public(), addrs: vec![] }],
        };
        let manifest = |dataset: &str, version: u64| {
            let m = Manifest {
                v: OBJECT_VERSION,
                publisher: member.clone(),
                dataset: dataset.parse().expect("dataset"),
                version,
                title: "t".into(),
                description: String::new(),
                format: Format::Raw,
                schema: vec![],
                key_field: None,
                classification: Classification::General,
                sharing: Sharing::Conditional,
                size: 1,
                records: 0,
                content_hash: Hash([1; 32]),
                created: Timestamp(1_700_000_000_000),
                live: false,
            };
            Signed::sign(m, &key).expect("sign").into_bytes()
        };
        for d in ["a", "b", "c"] {
            assert_eq!(catalog.ingest_manifest(&manifest(d, 1), &roster).expect("ingest"), Ingested::Accepted);
        }
        let over = catalog.ingest_manifest(&manifest("d", 1), &roster).expect("ingest");
        assert!(matches!(&over, Ingested::Rejected(r) if r.contains("3 datasets")), "{over:?}");
        for v in 2..=5 {
            assert_eq!(catalog.ingest_manifest(&manifest("a", v), &roster).expect("ingest"), Ingested::Accepted);
        }
        let id: DatasetId = "a".parse().expect("dataset");
        let kept: Vec<u64> = (1..=5).filter(|v| catalog.version(&member, &id, *v).expect("read").is_some()).collect();
        assert_eq!(kept, vec![4, 5], "only the newest two versions are kept");
    }
}
