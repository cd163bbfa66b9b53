//! Access requests and grants as this node holds them: the provider's issued grants (with fetch
//! counts and revocations) and incoming requests; the requester's received grants and outgoing
//! requests. Every record keeps the exact signed bytes it was made from, so what the node decides
//! is always traceable to a signature.
//!
//! Records are local (never sent), encoded with CBOR via serde; the signed objects inside are the
//! canonical ones.

use std::sync::Mutex;

use deltafed_protocol::access::{AccessRequest, Decision, Grant, Outcome, Revocation};
use deltafed_protocol::{DatasetId, GrantId, Hash, MemberId, Nonce, RequestId, Signed, Timestamp};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::policy::{self, Refusal};
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
    #[serde(default)]
    queries: u64,
    #[serde(default)]
    open: Option<OpenFetch>,
}

/// The provider's account of the counted fetch under a grant that has not been receipted yet:
/// resumes continue it, within a bound on the bytes it may move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFetch {
    /// Hash of exactly what the counted fetch delivers.
    pub content: [u8; 32],
    pub size: u64,
    /// Bytes served under it so far, over every resume.
    pub served: u64,
}

/// A grant as held, decoded.
#[derive(Debug, Clone)]
pub struct HeldGrant {
    pub grant: Signed<Grant>,
    pub role: Role,
    pub revocation: Option<Signed<Revocation>>,
    pub fetches: u64,
    pub delivered: bool,
    /// Record queries answered (provider) or made (grantee) under it.
    pub queries: u64,
    pub open: Option<OpenFetch>,
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
/// Expired nonces dropped per write while sweeping.
const NONCE_SWEEP_BATCH: usize = 4096;

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
            queries: rec.queries,
            open: rec.open,
        })
    }

    fn put_grant_record(&self, id: &GrantId, rec: &GrantRecord) -> Result<(), Error> {
        self.store.put(Cf::Grants, &id.0, &enc("grant", rec)?)?;
        Ok(())
    }

    fn grant_record(&self, id: &GrantId) -> Result<Option<GrantRecord>, Error> {
        self.store.get(Cf::Grants, &id.0)?.map(|b| dec("grant", &b)).transpose()
    }

    /// Serialises read-modify-write of records. The `*_ops` methods expect it held by the
    /// caller, who writes their batch (with its provenance entry) before letting it go.
    pub fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.guard()
    }

    /// Keeps a grant (issued by us, or received). A grant already held is left as it is.
    pub fn add_grant(&self, g: &Signed<Grant>, role: Role, delivered: bool) -> Result<bool, Error> {
        let _w = self.guard();
        self.write_ops(self.add_grant_ops(g, role, delivered)?)
    }

    /// The writes that keep `g`; `None` when it is held already. Call with [`Access::write_lock`].
    pub fn add_grant_ops(&self, g: &Signed<Grant>, role: Role, delivered: bool) -> Result<Option<Batch>, Error> {
        if self.grant_record(&g.body().id)?.is_some() {
            return Ok(None);
        }
        let rec = GrantRecord {
            grant: g.as_bytes().to_vec(),
            role,
            revocation: None,
            fetches: 0,
            delivered,
            queries: 0,
            open: None,
        };
        let mut b = Batch::default();
        b.put(Cf::Grants, g.body().id.0.to_vec(), enc("grant", &rec)?);
        Ok(Some(b))
    }

    fn write_ops(&self, ops: Option<Batch>) -> Result<bool, Error> {
        match ops {
            Some(b) => {
                self.store.write(b)?;
                Ok(true)
            }
            None => Ok(false),
        }
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

    /// The grants received from `provider` for `dataset` (in force or not).
    pub fn received_grants_for(&self, provider: &MemberId, dataset: &DatasetId) -> Result<Vec<HeldGrant>, Error> {
        Ok(self
            .grants()?
            .into_iter()
            .filter(|h| {
                h.role == Role::Received && &h.grant.body().provider == provider && &h.grant.body().dataset == dataset
            })
            .collect())
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
        self.write_ops(self.revoke_ops(r)?)
    }

    /// The writes that record `r`; `None` when the grant is not held or already revoked. Call
    /// with [`Access::write_lock`].
    pub fn revoke_ops(&self, r: &Signed<Revocation>) -> Result<Option<Batch>, Error> {
        let id = r.body().grant;
        let Some(mut rec) = self.grant_record(&id)? else { return Ok(None) };
        if rec.revocation.is_some() {
            return Ok(None);
        }
        rec.revocation = Some(r.as_bytes().to_vec());
        let mut b = Batch::default();
        b.put(Cf::Grants, id.0.to_vec(), enc("grant", &rec)?);
        Ok(Some(b))
    }

    /// Reads, decides on and rewrites one grant record under the write lock. `f` answers with
    /// a refusal to leave the record as it was.
    fn update_grant<T>(
        &self,
        id: &GrantId,
        f: impl FnOnce(&HeldGrant, &mut GrantRecord) -> Result<T, Refusal>,
    ) -> Result<Result<T, Refusal>, Error> {
        let _w = self.guard();
        let Some(mut rec) = self.grant_record(id)? else {
            return Ok(Err(Refusal::GrantNotHeld { grant: *id }));
        };
        let held = Self::decode_grant(rec.clone())?;
        match f(&held, &mut rec) {
            Ok(v) => {
                self.put_grant_record(id, &rec)?;
                Ok(Ok(v))
            }
            Err(r) => Ok(Err(r)),
        }
    }

    /// Provider: counts a fresh fetch of `content` (`size` bytes) under `id`, within the grant's
    /// budget, and opens it for resumes until its receipt.
    pub fn count_fetch(&self, id: &GrantId, content: &Hash, size: u64) -> Result<Result<u64, Refusal>, Error> {
        self.update_grant(id, |held, rec| {
            policy::fetch_budget(held.grant.body(), rec.fetches)?;
            rec.fetches += 1;
            rec.open = Some(OpenFetch { content: content.0, size, served: 0 });
            Ok(rec.fetches)
        })
    }

    /// Provider: a resume of the counted fetch under `id`, which must deliver the same `content`.
    pub fn resume_fetch(&self, id: &GrantId, content: &Hash) -> Result<Result<(), Refusal>, Error> {
        self.update_grant(id, |held, _| policy::resume(held.grant.body(), held.open.as_ref(), content))
    }

    /// Provider: `bytes` more are leaving under the counted fetch of `id`.
    pub fn serve_bytes(&self, id: &GrantId, bytes: u64) -> Result<Result<(), Refusal>, Error> {
        self.update_grant(id, |held, rec| {
            if let Some(open) = policy::serve_more(held.grant.body(), held.open.as_ref(), bytes)? {
                rec.open = Some(open);
            }
            Ok(())
        })
    }

    /// Provider: the requester receipted the fetch under `id`; resumes of it end.
    pub fn close_fetch(&self, id: &GrantId) -> Result<(), Error> {
        let _ = self.update_grant(id, |_, rec| {
            rec.open = None;
            Ok(())
        })?;
        Ok(())
    }

    /// Grantee: one more fetch was received under `id` (so `deltafed grants` shows use on both sides).
    pub fn count_received(&self, id: &GrantId) -> Result<(), Error> {
        let _ = self.update_grant(id, |_, rec| {
            rec.fetches += 1;
            Ok(())
        })?;
        Ok(())
    }

    /// Counts one record query under `id`, within the grant's query budget (both sides count).
    pub fn count_query(&self, id: &GrantId) -> Result<Result<u64, Refusal>, Error> {
        self.update_grant(id, |held, rec| {
            policy::query_budget(held.grant.body(), rec.queries)?;
            rec.queries += 1;
            Ok(rec.queries)
        })
    }

    /// Provider: counts up to `n` calls under `id` within the grant's query budget, in one
    /// write; answers how many may go ahead (the first ones of a batch), or why none may.
    pub fn count_queries(&self, id: &GrantId, n: u64) -> Result<Result<u64, Refusal>, Error> {
        self.update_grant(id, |held, rec| {
            policy::query_budget(held.grant.body(), rec.queries)?;
            let left = held.grant.body().max_queries.map_or(n, |max| max.saturating_sub(rec.queries));
            let take = n.min(left);
            rec.queries += take;
            Ok(take)
        })
    }

    /// Keeps an access request; false when it is already held.
    pub fn add_request(&self, r: &Signed<AccessRequest>, direction: Direction) -> Result<bool, Error> {
        let _w = self.guard();
        self.write_ops(self.add_request_ops(r, direction)?)
    }

    /// The writes that keep `r`; `None` when it is held already. Call with [`Access::write_lock`].
    pub fn add_request_ops(&self, r: &Signed<AccessRequest>, direction: Direction) -> Result<Option<Batch>, Error> {
        let key = r.body().id.0;
        if self.store.get(Cf::Requests, &key)?.is_some() {
            return Ok(None);
        }
        let rec = RequestRecord { request: r.as_bytes().to_vec(), direction, decision: None };
        let mut b = Batch::default();
        b.put(Cf::Requests, key.to_vec(), enc("request", &rec)?);
        Ok(Some(b))
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
        self.write_ops(self.decide_ops(d)?)
    }

    /// The writes that attach `d`; `None` when the request is unknown or decided. Call with
    /// [`Access::write_lock`].
    pub fn decide_ops(&self, d: &Signed<Decision>) -> Result<Option<Batch>, Error> {
        let key = d.body().request.0;
        let Some(b) = self.store.get(Cf::Requests, &key)? else { return Ok(None) };
        let mut rec: RequestRecord = dec("request", &b)?;
        if rec.decision.is_some() {
            return Ok(None);
        }
        rec.decision = Some(d.as_bytes().to_vec());
        let mut out = Batch::default();
        out.put(Cf::Requests, key.to_vec(), enc("request", &rec)?);
        Ok(Some(out))
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

    /// Drops every nonce older than `before`, in batches, so the table never outgrows the
    /// skew window whatever the request rate (a sweep bounded by count fell behind above a few
    /// requests per second).
    fn forget_nonces(&self, before: Timestamp) -> Result<usize, Error> {
        let mut total = 0;
        loop {
            let mut b = Batch::default();
            let mut n = 0;
            let mut done = true;
            for (k, _) in self.store.scan_prefix_limit(Cf::Nonces, b"t/", NONCE_SWEEP_BATCH)? {
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
            if n == NONCE_SWEEP_BATCH {
                done = false;
            }
            if n > 0 {
                self.store.write(b)?;
            }
            total += n;
            if done {
                return Ok(total);
            }
        }
    }
}

/// Whether `member` is the grantee or provider of a held grant (for listing by peer).
pub fn involves(g: &HeldGrant, member: &MemberId) -> bool {
    let b = g.grant.body();
    &b.grantee == member || &b.provider == member
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far more nonces than one sweep batch expire; a single sweep drops them all.
    #[test]
    fn a_sweep_drops_every_expired_nonce() {
        let dir = tempfile::tempdir().expect("tempdir");
        let access = Access::new(Store::open(&dir.path().join("db")).expect("store"));
        let n = 3 * NONCE_SWEEP_BATCH + 7;
        for i in 0..n {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            // Spread over the first second; the sweep threshold stays at zero, so nothing goes.
            assert!(access.use_nonce(&Nonce(nonce), Timestamp(1 + i as u64 % 1000), Timestamp(0)).expect("use"));
        }
        let left = || access.store.scan_prefix(Cf::Nonces, b"t/").expect("scan").len();
        assert_eq!(left(), n);
        assert_eq!(access.forget_nonces(Timestamp(10_000)).expect("sweep"), n);
        assert_eq!(left(), 0, "every expired nonce is gone after one sweep");
        assert!(access.store.scan_prefix(Cf::Nonces, NONCE_PREFIX).expect("scan").is_empty());
    }
}
