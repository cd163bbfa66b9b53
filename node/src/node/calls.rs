//! Sharing calls: "the records of this key in that dataset", made by a local application (or the
//! CLI) on behalf of someone, answered by the provider. Both sides, batched.
//!
//! Requester: each call is queued to the batcher of its provider. The batcher has a few batches
//! in flight at once; whenever one may go, it takes every call waiting (up to a batch's limits)
//! and sends them as one signed [`CallBatch`]. There is no timer: a lone call leaves at once, and
//! under load batches form by themselves while earlier ones are in flight. So a batch costs one
//! signature, one nonce, one verification, one provenance entry and one synced write on each
//! side, shared by all its calls.
//!
//! Provider: the batch's one signature is checked (the requester's key decompressed once, in
//! [`deltafed_protocol::crypto::KeyCache`]), its root recomputed from the calls, its nonce spent,
//! and then each call is decided on its own by the policy; calls under the same dataset and
//! grant are authorized together from the store as it is when the batch arrives (no cache that a
//! revocation would have to invalidate: the very next batch sees it), and their query budget is
//! counted in one write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use deltafed_protocol::calls::{
    self, Call, CallAnswer, CallBatch, CallResult, MAX_BATCH, MAX_KEY_BYTES, MAX_LABEL_BYTES, Outcome, Salt,
};
use deltafed_protocol::manifest::Manifest;
use deltafed_protocol::provenance::CallLog;
use deltafed_protocol::wire::{self, WireCall};
use deltafed_protocol::{
    DatasetId, DatasetRef, ExchangeId, GrantId, Hash, MemberId, Nonce, OBJECT_VERSION, Signed, Timestamp,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::serve::Refused;
use super::{Error, Node, now, random16};
use crate::policy::{self, Authorized};
use crate::provenance::{Record, audit_hash};
use crate::sources::live::LiveError;

mod serve;

/// Most keys in one `calls` invocation (one HTTP request, one `deltafed query`).
pub const MAX_KEYS: usize = 1000;
/// Most records one call answers with.
const MAX_RECORDS: usize = super::query::MAX_RECORDS;
/// Batches to one provider in flight at once; while they are, the next batch fills.
const IN_FLIGHT: usize = 2;
/// A second batch goes out beside one in flight only with at least this many calls: a batch
/// costs about a millisecond of CPU over both sides whatever its size (measured in `make bench`).
const PARALLEL_MIN: usize = 32;
/// Calls waiting for one provider; past it callers are told to slow down.
const QUEUE: usize = 16 * 1024;
/// A batch closes at about this many request bytes (the RPC request limit is 512 KiB).
const BATCH_BYTES: usize = 384 * 1024;
/// The records of one answer stay under this (the RPC response limit is 8 MiB); calls past it
/// are deferred to the next batch.
const ANSWER_BYTES: usize = 6 * 1024 * 1024;
/// A batch's log entry stays under this (the entry limit is 256 KiB): calls past it are
/// deferred too.
const LOG_BYTES: usize = 192 * 1024;

/// Who a call is made for: the local application and, when it says so, the end user or case
/// it acts for. Both travel with the call and are recorded on both sides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub app: Option<String>,
    pub on_behalf_of: Option<String>,
}

/// The answer for one key.
#[derive(Debug)]
pub struct KeyAnswer {
    pub key: String,
    /// The records (granted fields only), or why this call was refused or failed.
    pub outcome: Result<Vec<serde_json::Map<String, serde_json::Value>>, Error>,
    /// The exchange id of the provider's answer to the batch this call went in, when answered.
    pub exchange: Option<ExchangeId>,
    /// The fields returned, when projected.
    pub fields: Option<Vec<String>>,
    /// When a live dataset's rows were read from the provider's database.
    pub read: Option<Timestamp>,
}

/// The answers to the calls of one `calls` invocation, in the order of the keys asked.
#[derive(Debug)]
pub struct CallsAnswered {
    /// The dataset with the version that answered.
    pub dataset: DatasetRef,
    pub results: Vec<KeyAnswer>,
}

/// One call waiting for its batch.
struct Pending {
    call: Vec<u8>,
    leaf: Hash,
    /// The call's salt, which its result must repeat.
    salt: Salt,
    key: String,
    key_salt: Salt,
    dataset: DatasetId,
    reply: oneshot::Sender<Result<Done, Error>>,
}

impl Pending {
    fn size(&self) -> usize {
        self.call.len() + self.key.len() + 32
    }
}

/// What came back for one call.
struct Done {
    outcome: Outcome,
    records: Vec<u8>,
    exchange: ExchangeId,
}

/// What a call to one dataset is checked against on the requester: its manifest and the
/// grants received for it, as read from the store at `sequence`.
struct Target {
    sequence: u64,
    manifest: Arc<Manifest>,
    grants: Vec<crate::access::HeldGrant>,
}

/// Most datasets whose call targets are kept; past it the table starts again.
const TARGETS: usize = 1024;

/// The requester's batchers, one per provider, and the counts of both sides.
#[derive(Default)]
pub(super) struct Batchers {
    /// Call targets by dataset, valid while the store has not been written since they were
    /// read: any write (a grant, a revocation, a manifest, a withdrawal, and also each batch's
    /// log entry) makes the next call read them again, so no write path has to remember to
    /// invalidate, and a call between two batches skips the reads and the decoding.
    targets: Mutex<HashMap<DatasetRef, Arc<Target>>>,
    senders: Mutex<HashMap<MemberId, mpsc::Sender<Pending>>>,
    batches_sent: AtomicU64,
    calls_sent: AtomicU64,
    batches_served: AtomicU64,
    calls_served: AtomicU64,
}

/// Sharing calls since the node started (each batch costs one signature and one verification
/// on each side, so `calls / batches` is what batching saves).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallCounts {
    pub batches_sent: u64,
    pub calls_sent: u64,
    pub batches_served: u64,
    pub calls_served: u64,
}

impl Batchers {
    /// Stops accepting calls; the batchers finish what they hold and end.
    pub(super) fn close(&self) {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

fn check_label(what: &'static str, v: &Option<String>) -> Result<(), Error> {
    match v {
        Some(s) if s.len() > MAX_LABEL_BYTES || s.chars().any(char::is_control) => {
            Err(Error::invalid(what, format!("{what} must be at most {MAX_LABEL_BYTES} bytes of printable text")))
        }
        _ => Ok(()),
    }
}

impl Node {
    pub fn call_counts(&self) -> CallCounts {
        let b = &self.0.batchers;
        CallCounts {
            batches_sent: b.batches_sent.load(Ordering::Relaxed),
            calls_sent: b.calls_sent.load(Ordering::Relaxed),
            batches_served: b.batches_served.load(Ordering::Relaxed),
            calls_served: b.calls_served.load(Ordering::Relaxed),
        }
    }

    /// Makes one call per key to the provider of `target`. Fails as a whole (unknown dataset,
    /// no usable grant, provider not in the roster, bad input) before anything is sent; once
    /// sent, each key has its own outcome.
    pub async fn calls(&self, target: DatasetRef, keys: Vec<String>, caller: Caller) -> Result<CallsAnswered, Error> {
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(Error::invalid("KEY", format!("give 1 to {MAX_KEYS} keys, not {}", keys.len())));
        }
        if let Some(k) = keys.iter().find(|k| k.len() > MAX_KEY_BYTES) {
            return Err(Error::invalid("KEY", format!("a key is at most {MAX_KEY_BYTES} bytes; one has {}", k.len())));
        }
        check_label("app", &caller.app)?;
        check_label("on-behalf-of", &caller.on_behalf_of)?;
        let provider = target.publisher.clone();
        let (m, grant) = self.call_target(&target.unversioned())?;
        let m = &*m;
        match &grant {
            Some(g) => {
                policy::may_query(m, g.grant.body().fields.as_deref())?;
                policy::query_budget(g.grant.body(), g.queries)?;
            }
            None => policy::may_query(m, None)?,
        }
        // Membership only: the PeerId (a point decompression) is derived once per batch.
        if self.roster().roster.key_of(&provider).is_none() {
            return Err(Error::not_found(format!("{provider} is not in the roster")));
        }
        let grant_id = grant.as_ref().map(|g| g.grant.body().id);
        let mut waiting = Vec::with_capacity(keys.len());
        for key in keys {
            let key_salt = Salt(random16()?);
            let salt = Salt(random16()?);
            let call = Call {
                v: OBJECT_VERSION,
                salt,
                dataset: m.dataset.clone(),
                grant: grant_id,
                key: calls::key_commitment(&key_salt, &key),
                app: caller.app.clone(),
                on_behalf_of: caller.on_behalf_of.clone(),
            };
            let call = deltafed_protocol::signed::encode(&call).map_err(|e| Error::internal("encoding a call", e))?;
            let (reply, rx) = oneshot::channel();
            let leaf = calls::leaf_of::<Call>(&call);
            self.submit(
                &provider,
                Pending { call, leaf, salt, key: key.clone(), key_salt, dataset: m.dataset.clone(), reply },
            )?;
            waiting.push((key, rx));
        }
        let mut dataset = m.dataset_ref().unversioned();
        let mut results = Vec::with_capacity(waiting.len());
        for (key, rx) in waiting {
            let (mut exchange, mut fields, mut read, mut bytes) = (None, None, None, 0);
            let outcome = match rx.await {
                Ok(Ok(Done {
                    outcome: Outcome::Answered { version, fields: f, read: r, .. },
                    records,
                    exchange: x,
                })) => {
                    dataset.version = Some(version);
                    (exchange, fields, read, bytes) = (Some(x), f, r, records.len());
                    serde_json::from_slice(&records)
                        .map_err(|e| Error::refused(format!("the records from {provider} are not JSON objects: {e}")))
                }
                Ok(Ok(Done { outcome: Outcome::Refused { reason }, .. })) => {
                    Err(Error::refused(format!("{provider} refused: {reason}")))
                }
                Ok(Ok(Done { outcome: Outcome::Unavailable { reason }, .. })) => {
                    Err(Error::Unavailable(format!("{provider} cannot answer now: {reason}")))
                }
                Ok(Ok(Done { outcome: Outcome::Deferred, .. })) => {
                    Err(Error::internal("a call", "deferred twice by the provider"))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Unavailable("the node is shutting down".into())),
            };
            let app = caller.app.as_deref();
            self.0.metrics.call_done("sent", provider.as_str(), m.dataset.as_str(), app, outcome.is_ok(), bytes);
            results.push(KeyAnswer { key, outcome, exchange, fields, read });
        }
        if dataset.version.is_none() {
            dataset.version = Some(m.version);
        }
        Ok(CallsAnswered { dataset, results })
    }

    /// [`Node::receivable`] for a call: the manifest and the grant to call `target` under,
    /// from the store as it is now (see [`Batchers::targets`]).
    fn call_target(&self, target: &DatasetRef) -> Result<(Arc<Manifest>, Option<crate::access::HeldGrant>), Error> {
        let sequence = self.0.store.sequence();
        let cached = self.0.batchers.targets.lock().unwrap_or_else(PoisonError::into_inner).get(target).cloned();
        let t = match cached {
            Some(t) if t.sequence == sequence => t,
            _ => {
                self.not_own(target)?;
                let manifest = self.manifest_for(target)?;
                let grants = self.0.access.received_grants_for(&manifest.publisher, &manifest.dataset)?;
                let t = Arc::new(Target { sequence, manifest: Arc::new(manifest), grants });
                let mut targets = self.0.batchers.targets.lock().unwrap_or_else(PoisonError::into_inner);
                if targets.len() >= TARGETS {
                    targets.clear();
                }
                targets.insert(target.clone(), t.clone());
                t
            }
        };
        // Chosen at every call: a grant expires or comes into force with time alone.
        let grant = policy::choose_grant(&t.manifest, &t.grants, now())?.cloned();
        Ok((t.manifest.clone(), grant))
    }

    /// Queues a call for `provider`'s batcher, starting the batcher on first use.
    fn submit(&self, provider: &MemberId, p: Pending) -> Result<(), Error> {
        let tx = {
            let mut senders = self.0.batchers.senders.lock().unwrap_or_else(PoisonError::into_inner);
            match senders.get(provider) {
                Some(tx) if !tx.is_closed() => tx.clone(),
                _ => {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(self.clone().batcher(provider.clone(), rx));
                    senders.insert(provider.clone(), tx.clone());
                    tx
                }
            }
        };
        tx.try_send(p).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                Error::Unavailable(format!("too many calls are waiting for {provider}; try again shortly"))
            }
            mpsc::error::TrySendError::Closed(_) => Error::Unavailable("the node is shutting down".into()),
        })
    }

    async fn batcher(self, provider: MemberId, mut rx: mpsc::Receiver<Pending>) {
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            // A permit first, then the calls: the batch takes everything that queued while the
            // earlier batches were in flight.
            let Ok(permit) = permits.clone().acquire_owned().await else { return };
            let Some(first) = rx.recv().await else { return };
            let mut bytes = first.size();
            let mut batch = vec![first];
            let full = |batch: &Vec<Pending>, bytes: usize| batch.len() >= MAX_BATCH || bytes >= BATCH_BYTES;
            while !full(&batch, bytes) {
                match rx.try_recv() {
                    Ok(p) => {
                        bytes += p.size();
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
            // Another batch is in flight: a second small one now would cost a batch's signatures,
            // nonce and syncs for few calls. Wait for more calls or for the other to come back.
            while batch.len() < PARALLEL_MIN && !full(&batch, bytes) && permits.available_permits() == 0 {
                tokio::select! {
                    biased;
                    freed = permits.clone().acquire_owned() => {
                        drop(freed);
                        break;
                    }
                    p = rx.recv() => match p {
                        Some(p) => {
                            bytes += p.size();
                            batch.push(p);
                        }
                        None => break,
                    },
                }
            }
            let node = self.clone();
            let provider = provider.clone();
            tokio::spawn(async move {
                node.send_batch(&provider, batch, permit).await;
            });
        }
    }

    /// Sends one batch and hands each call its result.
    async fn send_batch(&self, provider: &MemberId, batch: Vec<Pending>, permit: OwnedSemaphorePermit) {
        let started = std::time::Instant::now();
        match self.try_send_batch(provider, &batch, permit).await {
            Ok(done) => {
                let answers = done.iter().map(|d| (&d.outcome, d.records.len()));
                self.0.metrics.batch_sent(provider.as_str(), started.elapsed(), answers);
                for (p, d) in batch.into_iter().zip(done) {
                    if matches!(d.outcome, Outcome::Deferred) {
                        // Its answer did not fit this batch's response: it goes in a later one.
                        if let Err(e) = self.submit(provider, p) {
                            tracing::warn!(error = %e, "cannot requeue a deferred call");
                        }
                    } else {
                        let _ = p.reply.send(Ok(d));
                    }
                }
            }
            Err(e) => {
                self.0.metrics.batch_failed(provider.as_str(), batch.len(), &e);
                tracing::info!(%provider, error = %e, calls = batch.len(), "call batch failed");
                for p in batch {
                    let _ = p.reply.send(Err(e.duplicate()));
                }
            }
        }
    }

    /// `permit` is given back as soon as the answer is in: the next batch goes out while this
    /// one is checked, logged and synced.
    async fn try_send_batch(
        &self,
        provider: &MemberId,
        batch: &[Pending],
        permit: OwnedSemaphorePermit,
    ) -> Result<Vec<Done>, Error> {
        let peer = self
            .peer_of_member(provider)
            .ok_or_else(|| Error::not_found(format!("{provider} is not in the roster")))?;
        let leaves: Vec<Hash> = batch.iter().map(|p| p.leaf).collect();
        let body = CallBatch {
            v: OBJECT_VERSION,
            requester: self.0.member.clone(),
            provider: provider.clone(),
            nonce: Nonce(random16()?),
            time: now(),
            count: u32::try_from(batch.len()).map_err(|e| Error::internal("counting calls", e))?,
            root: deltafed_protocol::merkle::root(&leaves),
        };
        let signed = Signed::sign(body, &self.0.key)?;
        let wire_calls =
            batch.iter().map(|p| WireCall { call: p.call.clone(), key: p.key.clone(), key_salt: p.key_salt }).collect();
        let answered = self.0.net.calls(peer, signed.as_bytes().to_vec(), wire_calls).await;
        drop(permit);
        let answers = match answered {
            Ok(a) => a,
            Err(e) => {
                let e = Error::from_call(provider, e);
                if let Error::Refused(reason) = &e {
                    let d =
                        DatasetRef { publisher: provider.clone(), dataset: batch[0].dataset.clone(), version: None };
                    self.record_or_log(Record::failed("call batch refused:", provider, d, reason, Some(&signed)));
                }
                return Err(e);
            }
        };
        let salts: Vec<Salt> = batch.iter().map(|p| p.salt).collect();
        let (answer, done) = self.check_answers(provider, &signed, &leaves, &salts, answers)?;
        let logs = batch
            .iter()
            .zip(&done)
            .map(|(p, d)| CallLog {
                call: p.call.clone(),
                outcome: d.outcome.clone(),
                key: audit_hash(&self.0.audit_key, &p.key),
            })
            .collect();
        let datasets = distinct_datasets(provider, batch.iter().map(|p| &p.dataset));
        self.record(Record::calls_answered(&signed, &answer, logs, datasets))?;
        self.0.durable.sync().await?;
        self.0.batchers.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.0.batchers.calls_sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(done)
    }

    /// Checks a provider's answer to `batch` against it: signer, the batch it names, one result
    /// per call in order, the results' root, and each answered call's records against their hash.
    fn check_answers(
        &self,
        provider: &MemberId,
        batch: &Signed<CallBatch>,
        leaves: &[Hash],
        salts: &[Salt],
        a: crate::rpc::Answers,
    ) -> Result<(Signed<CallAnswer>, Vec<Done>), Error> {
        let bad = |what: &str| Error::refused(format!("the answer from {provider} {what}"));
        let answer = Signed::<CallAnswer>::decode_from_member_cached(&a.answer, &self.roster().roster, &self.0.keys)
            .map_err(|e| Error::refused(format!("bad answer from {provider}: {e}")))?;
        let ab = answer.body();
        if ab.batch != batch.hash() || ab.requester != self.0.member || &ab.provider != provider {
            return Err(bad("is not for this batch"));
        }
        let n = leaves.len();
        if ab.count as usize != n || a.results.len() != n || a.records.len() != n {
            return Err(bad("does not have one result per call"));
        }
        if calls::root_of::<CallResult>(&a.results) != ab.root {
            return Err(bad("does not match its signed root"));
        }
        let mut done = Vec::with_capacity(n);
        for ((bytes, records), leaf) in a.results.iter().zip(a.records).zip(leaves) {
            let r: CallResult =
                deltafed_protocol::signed::decode(bytes).map_err(|e| bad(&format!("has a bad result: {e}")))?;
            if &r.call != leaf {
                return Err(bad("answers calls out of order"));
            }
            if salts.get(done.len()) != Some(&r.salt) {
                return Err(bad("has a result that does not repeat its call's salt"));
            }
            if let Outcome::Answered { records: h, count, .. } = &r.outcome {
                if Hash::of(&records) != *h {
                    return Err(bad("carries records that do not match their hash"));
                }
                let n: Vec<serde::de::IgnoredAny> =
                    serde_json::from_slice(&records).map_err(|_| bad("carries records that are not a JSON array"))?;
                if n.len() as u64 != *count {
                    return Err(bad("announces a record count it does not carry"));
                }
            } else if !records.is_empty() {
                return Err(bad("carries records for a call it did not answer"));
            }
            done.push(Done { outcome: r.outcome, records, exchange: ab.exchange });
        }
        Ok((answer, done))
    }
}

/// The datasets of `publisher` named, each once, in order of first appearance.
fn distinct_datasets<'a>(publisher: &MemberId, ds: impl Iterator<Item = &'a DatasetId>) -> Vec<DatasetRef> {
    let mut out: Vec<DatasetRef> = Vec::new();
    for d in ds {
        if !out.iter().any(|r| &r.dataset == d) {
            out.push(DatasetRef { publisher: publisher.clone(), dataset: d.clone(), version: None });
        }
    }
    out
}
