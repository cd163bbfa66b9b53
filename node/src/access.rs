//! Access requests and grants as this node holds them: the provider's issued grants (with fetch
//! counts and revocations) and incoming requests; the requester's received grants and outgoing
//! requests. Every record keeps the exact signed bytes it was made from, so what the node decides
//! is always traceable to a signature.
//!
//! Records are local (never sent), encoded with CBOR via serde; the signed objects inside are the
//! canonical ones.

use std::sync::Mutex;

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome, Revocation};
use deltafed_protocol::{GrantId, MemberId, Nonce, RequestId, Signed, Timestamp};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::store::{self, Batch, Cf, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("stored {what} record is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

pub(crate) fn enc<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, Error> {
    cbor4ii::serde::to_vec(Vec::new(), v).map_err(|e| Error::Corrupt { what, detail: e.to_string() })
}

pub(crate) fn dec<T: DeserializeOwned>(what: &'static str, b: &[u8]) -> Result<T, Error> {
    cbor4ii::serde::from_slice(b).map_err(|e| Error::Corrupt { what, detail: e.to_string() })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// We are the provider and signed it.
    Issued,
    /// We are the grantee.
    Received,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GrantRecord {
    #[serde(with = "serde_bytes")]
    grant: Vec<u8>,
    role: Role,
    #[serde(with = "serde_bytes")]
    revocation: Option<Vec<u8>>,
    fetches: u64,
    delivered: bool,
}

/// A grant as held, decoded.
#[derive(Debug, Clone)]
pub struct HeldGrant {
    pub grant: Signed<Grant>,
    pub role: Role,
    pub revocation: Option<Signed<Revocation>>,
    pub fetches: u64,
    pub delivered: bool,
}

impl HeldGrant {
    /// Why this grant does not authorise a fetch now, if it does not.
    pub fn refusal(&self, now: Timestamp) -> Option<String> {
        let g = self.grant.body();
        if let Some(r) = &self.revocation {
            return Some(format!("grant {} was revoked at {}: {}", g.id, r.body().time, r.body().reason));
        }
        if now < g.not_before {
            return Some(format!("grant {} is not valid before {}", g.id, g.not_before));
        }
        if now >= g.expires {
            return Some(format!("grant {} expired at {}", g.id, g.expires));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Incoming,
    Outgoing,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestRecord {
    #[serde(with = "serde_bytes")]
    request: Vec<u8>,
    direction: Direction,
    #[serde(with = "serde_bytes")]
    decision: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct HeldRequest {
    pub request: Signed<AccessRequest>,
    pub direction: Direction,
    pub decision: Option<Signed<Decision>>,
}

impl HeldRequest {
    pub fn state(&self) -> &'static str {
        match self.decision.as_ref().map(|d| &d.body().outcome) {
            None => "pending",
            Some(Outcome::Approved { .. }) => "approved",
            Some(Outcome::Denied { .. }) => "denied",
        }
    }
}

pub struct Access {
    store: Store,
    /// When expired nonces were last dropped (ms since the epoch).
    nonces_forgotten_at: std::sync::atomic::AtomicU64,
    /// Serialises read-modify-write of one record (fetch counts, revocation, decisions).
    write: Mutex<()>,
}

const NONCE_PREFIX: &[u8] = b"n/";
/// How often expired nonces are dropped.
const NONCE_SWEEP_MS: u64 = 60_000;

impl Access {
    pub fn new(store: Store) -> Access {
        Access { store, write: Mutex::new(()), nonces_forgotten_at: std::sync::atomic::AtomicU64::new(0) }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decode_grant(rec: GrantRecord) -> Result<HeldGrant, Error> {
        let corrupt = |e: deltafed_protocol::signed::Error| Error::Corrupt { what: "grant", detail: e.to_string() };
        Ok(HeldGrant {
            grant: Signed::from_trusted_bytes(&rec.grant).map_err(corrupt)?,
            role: rec.role,
            revocation: rec.revocation.as_deref().map(Signed::from_trusted_bytes).transpose().map_err(corrupt)?,
            fetches: rec.fetches,
            delivered: rec.delivered,
        })
    }

    fn put_grant_record(&self, id: &GrantId, rec: &GrantRecord) -> Result<(), Error> {
        self.store.put(Cf::Grants, &id.0, &enc("grant", rec)?)?;
        Ok(())
    }

    fn grant_record(&self, id: &GrantId) -> Result<Option<GrantRecord>, Error> {
        self.store.get(Cf::Grants, &id.0)?.map(|b| dec("grant", &b)).transpose()
    }

    /// Keeps a grant (issued by us, or received). A grant already held is left as it is.
    pub fn add_grant(&self, g: &Signed<Grant>, role: Role, delivered: bool) -> Result<bool, Error> {
        let _w = self.guard();
        if self.grant_record(&g.body().id)?.is_some() {
            return Ok(false);
        }
        let rec = GrantRecord { grant: g.as_bytes().to_vec(), role, revocation: None, fetches: 0, delivered };
        self.put_grant_record(&g.body().id, &rec)?;
        Ok(true)
    }

    pub fn grant(&self, id: &GrantId) -> Result<Option<HeldGrant>, Error> {
        self.grant_record(id)?.map(Self::decode_grant).transpose()
    }

    pub fn grants(&self) -> Result<Vec<HeldGrant>, Error> {
        self.store
            .scan_prefix(Cf::Grants, b"")?
            .into_iter()
            .map(|(_, v)| dec::<GrantRecord>("grant", &v).and_then(Self::decode_grant))
            .collect()
    }

    pub fn mark_delivered(&self, id: &GrantId) -> Result<(), Error> {
        let _w = self.guard();
        if let Some(mut rec) = self.grant_record(id)? {
            rec.delivered = true;
            self.put_grant_record(id, &rec)?;
        }
        Ok(())
    }

    /// Records a revocation of a held grant; false when it was already revoked.
    pub fn revoke(&self, r: &Signed<Revocation>) -> Result<bool, Error> {
        let _w = self.guard();
        let id = r.body().grant;
        let Some(mut rec) = self.grant_record(&id)? else { return Ok(false) };
        if rec.revocation.is_some() {
            return Ok(false);
        }
        rec.revocation = Some(r.as_bytes().to_vec());
        self.put_grant_record(&id, &rec)?;
        Ok(true)
    }

    /// Counts one fetch under `id`, refusing when the grant's maximum is reached.
    pub fn count_fetch(&self, id: &GrantId) -> Result<Result<u64, String>, Error> {
        let _w = self.guard();
        let Some(mut rec) = self.grant_record(id)? else { return Ok(Err(format!("no grant {id}"))) };
        let held = Self::decode_grant(rec.clone())?;
        if let Some(max) = held.grant.body().max_fetches
            && rec.fetches >= max
        {
            return Ok(Err(format!("grant {id} allows {max} fetch(es) and all were used")));
        }
        rec.fetches += 1;
        self.put_grant_record(id, &rec)?;
        Ok(Ok(rec.fetches))
    }

    /// Keeps an access request; false when it is already held.
    pub fn add_request(&self, r: &Signed<AccessRequest>, direction: Direction) -> Result<bool, Error> {
        let _w = self.guard();
        let key = r.body().id.0;
        if self.store.get(Cf::Requests, &key)?.is_some() {
            return Ok(false);
        }
        let rec = RequestRecord { request: r.as_bytes().to_vec(), direction, decision: None };
        self.store.put(Cf::Requests, &key, &enc("request", &rec)?)?;
        Ok(true)
    }

    fn decode_request(rec: RequestRecord) -> Result<HeldRequest, Error> {
        let corrupt = |e: deltafed_protocol::signed::Error| Error::Corrupt { what: "request", detail: e.to_string() };
        Ok(HeldRequest {
            request: Signed::from_trusted_bytes(&rec.request).map_err(corrupt)?,
            direction: rec.direction,
            decision: rec.decision.as_deref().map(Signed::from_trusted_bytes).transpose().map_err(corrupt)?,
        })
    }

    pub fn request(&self, id: &RequestId) -> Result<Option<HeldRequest>, Error> {
        self.store
            .get(Cf::Requests, &id.0)?
            .map(|b| dec::<RequestRecord>("request", &b).and_then(Self::decode_request))
            .transpose()
    }

    pub fn requests(&self) -> Result<Vec<HeldRequest>, Error> {
        self.store
            .scan_prefix(Cf::Requests, b"")?
            .into_iter()
            .map(|(_, v)| dec::<RequestRecord>("request", &v).and_then(Self::decode_request))
            .collect()
    }

    /// Attaches a decision to a held request; false if it already had one.
    pub fn decide(&self, d: &Signed<Decision>) -> Result<bool, Error> {
        let _w = self.guard();
        let key = d.body().request.0;
        let Some(b) = self.store.get(Cf::Requests, &key)? else { return Ok(false) };
        let mut rec: RequestRecord = dec("request", &b)?;
        if rec.decision.is_some() {
            return Ok(false);
        }
        rec.decision = Some(d.as_bytes().to_vec());
        self.store.put(Cf::Requests, &key, &enc("request", &rec)?)?;
        Ok(true)
    }

    /// Records a nonce as used; false if it was seen before (a replay). Nonces older than
    /// `forget_before` are dropped first: a request that old is refused by its time anyway.
    pub fn use_nonce(&self, nonce: &Nonce, now: Timestamp, forget_before: Timestamp) -> Result<bool, Error> {
        let _w = self.guard();
        let mut key = NONCE_PREFIX.to_vec();
        key.extend_from_slice(&nonce.0);
        if self.store.get(Cf::Nonces, &key)?.is_some() {
            return Ok(false);
        }
        let mut b = Batch::default();
        b.put(Cf::Nonces, key, now.0.to_be_bytes().to_vec());
        // Index by time so old nonces can be dropped in order.
        let mut tkey = b"t/".to_vec();
        tkey.extend_from_slice(&now.0.to_be_bytes());
        tkey.extend_from_slice(&nonce.0);
        b.put(Cf::Nonces, tkey, Vec::new());
        self.store.write(b)?;
        // Dropping expired nonces means an iterator over the column family; once a minute is
        // plenty (the table only has to outlive the clock-skew window), and on the query path
        // an iterator per request cost a seventh of the provider's CPU.
        let last = self.nonces_forgotten_at.load(std::sync::atomic::Ordering::Relaxed);
        if now.0.saturating_sub(last) >= NONCE_SWEEP_MS {
            self.nonces_forgotten_at.store(now.0, std::sync::atomic::Ordering::Relaxed);
            self.forget_nonces(forget_before)?;
        }
        Ok(true)
    }

    fn forget_nonces(&self, before: Timestamp) -> Result<(), Error> {
        let mut b = Batch::default();
        let mut n = 0;
        for (k, _) in self.store.scan_prefix_limit(Cf::Nonces, b"t/", 256)? {
            let (Some(t), Some(nonce)) = (k.get(2..10), k.get(10..26)) else { continue };
            let t = u64::from_be_bytes(t.try_into().unwrap_or([0; 8]));
            if t >= before.0 {
                break;
            }
            let mut nk = NONCE_PREFIX.to_vec();
            nk.extend_from_slice(nonce);
            b.delete(Cf::Nonces, nk).delete(Cf::Nonces, k.clone());
            n += 1;
        }
        if n > 0 {
            self.store.write(b)?;
        }
        Ok(())
    }
}

/// Whether `member` is the grantee or provider of a held grant (for listing by peer).
pub fn involves(g: &HeldGrant, member: &MemberId) -> bool {
    let b = g.grant.body();
    &b.grantee == member || &b.provider == member
}
