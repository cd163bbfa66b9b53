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
                if target.publisher == self.0.member {
                    return Err(Error::invalid("DATASET", format!("{target} is this member's own dataset")));
                }
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

    pub(super) async fn serve_calls(&self, from: &MemberId, batch: &[u8], calls: Vec<WireCall>) -> wire::Response {
        match self.try_serve_calls(from, batch, calls).await {
            Ok(r) => r,
            Err(r) => self.refuse(from, "call batch", r, batch),
        }
    }

    async fn try_serve_calls(
        &self,
        from: &MemberId,
        batch_bytes: &[u8],
        calls: Vec<WireCall>,
    ) -> Result<wire::Response, Refused> {
        let started = std::time::Instant::now();
        let whole = |reason: String| Refused { reason, dataset: None };
        let batch = Signed::<CallBatch>::decode_from_member_cached(batch_bytes, &self.roster().roster, &self.0.keys)
            .map_err(|e| whole(e.to_string()))?;
        let b = batch.body();
        let me = &self.0.member;
        if &b.requester != from || &b.provider != me {
            return Err(whole("the batch is not from its sender or not for this member".into()));
        }
        if calls.is_empty() || calls.len() > MAX_BATCH || b.count as usize != calls.len() {
            return Err(whole(format!(
                "a batch has 1 to {MAX_BATCH} calls, as many as it signs; this one signs {} and carries {}",
                b.count,
                calls.len()
            )));
        }
        let leaves: Vec<Hash> = calls.iter().map(|c| calls::leaf_of::<Call>(&c.call)).collect();
        if deltafed_protocol::merkle::root(&leaves) != b.root {
            return Err(whole("the calls do not match the batch's signed root".into()));
        }
        self.check_fresh(&b.nonce, b.time).map_err(|e| whole(e.to_string()))?;

        // Each call on its own: decoded, its key checked against its commitment, authorized.
        let mut decided: Vec<Result<(Call, usize), String>> = Vec::with_capacity(calls.len());
        let mut groups: Vec<Group> = Vec::new();
        for c in &calls {
            decided.push(self.decide_call(from, c, &mut groups));
        }
        // The lookups of the calls the policy allows, off the async threads, all in one go; a
        // call whose answer or log record would overflow this batch is deferred to the next.
        let index = self.0.keyindex.clone();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; calls.len()];
        // What a group's calls are looked up by, shared by them rather than copied per call.
        let targets: Vec<Option<LookupTarget>> =
            groups.iter().map(|g| g.auth.as_ref().ok().map(|(m, a)| Arc::new((m.clone(), a.fields.clone())))).collect();
        let mut work: Vec<Lookup> = Vec::new();
        for (i, d) in decided.iter().enumerate() {
            match d {
                Err(reason) => outcomes[i] = Some(Outcome::Refused { reason: reason.clone() }),
                Ok((_, g)) => {
                    if let Some(t) = &targets[*g] {
                        work.push((i, *g, t.clone(), calls[i].key.clone()));
                    }
                }
            }
        }
        let log_bytes: usize = calls.iter().map(|c| c.call.len() + 64).sum();
        // A live dataset's rows come from its database (concurrently, as many at a time as the
        // source's pool has connections), before the accounting below.
        // A live dataset's rows come from its database: one statement per dataset and
        // projection for the whole batch (`Live::lookup_many`), before the accounting below.
        let mut live_groups: Vec<(DatasetId, Option<Vec<String>>, Vec<usize>)> = Vec::new();
        for (w, item) in work.iter().enumerate() {
            let (m, fields) = &*item.2;
            if !m.live {
                continue;
            }
            match live_groups.iter_mut().find(|(d, f, _)| d == &m.dataset && f == fields) {
                Some(group) => group.2.push(w),
                None => live_groups.push((m.dataset.clone(), fields.clone(), vec![w])),
            }
        }
        let live = self.0.live.clone();
        let answers = futures::future::join_all(live_groups.iter().map(|(dataset, fields, members)| {
            let keys: Vec<&str> = members.iter().map(|w| work[*w].3.as_str()).collect();
            let live = live.clone();
            async move {
                let got = live.lookup_many(dataset, &keys, fields.as_deref(), MAX_RECORDS).await;
                (got, now())
            }
        }))
        .await;
        let mut pre: Vec<Option<(LiveGot, Timestamp)>> = (0..work.len()).map(|_| None).collect();
        for ((_, _, members), (got, read)) in live_groups.iter().zip(answers) {
            match got {
                Ok(rows) => {
                    for (w, r) in members.iter().zip(rows) {
                        pre[*w] = Some((Ok(r), read));
                    }
                }
                Err(e) => {
                    for w in members {
                        pre[*w] = Some((Err(e.clone()), read));
                    }
                }
            }
        }
        let work: Vec<(Lookup, Option<(LiveGot, Timestamp)>)> = work.into_iter().zip(pre).collect();
        let found = tokio::task::spawn_blocking(move || {
            let (mut answer_room, mut log_room) = (ANSWER_BYTES, LOG_BYTES.saturating_sub(log_bytes));
            work.into_iter()
                .map(|((i, g, target, key), pre)| {
                    let (m, fields) = &*target;
                    let (got, read) = match pre {
                        Some((got, t)) => (got, Some(t)),
                        None => (
                            index
                                .lookup(&m.content_hash, m.format, &m.schema, &key, fields.as_deref(), MAX_RECORDS)
                                .map_err(|e| LiveError::Invalid(e.to_string())),
                            None,
                        ),
                    };
                    let r = got.and_then(|recs| {
                        serde_json::to_vec(&recs)
                            .map(|b| (recs.len(), b))
                            .map_err(|e| LiveError::Invalid(e.to_string()))
                    });
                    let logged = fields.as_ref().map_or(0, |f| f.iter().map(|x| x.len() + 2).sum::<usize>());
                    let out = match r {
                        Ok((n, bytes)) if bytes.len() > ANSWER_BYTES => (
                            Outcome::Refused {
                                reason: format!("its {n} records are over the {ANSWER_BYTES}-byte limit of one answer"),
                            },
                            Vec::new(),
                        ),
                        Ok((_, bytes)) if bytes.len() > answer_room || logged > log_room => {
                            (Outcome::Deferred, Vec::new())
                        }
                        Ok((n, bytes)) => {
                            answer_room -= bytes.len();
                            log_room -= logged;
                            let o = Outcome::Answered {
                                version: m.version,
                                fields: fields.clone(),
                                records: Hash::of(&bytes),
                                count: n as u64,
                                read,
                            };
                            (o, bytes)
                        }
                        Err(LiveError::Unavailable(reason)) => (Outcome::Unavailable { reason }, Vec::new()),
                        Err(LiveError::Invalid(reason)) => {
                            (Outcome::Refused { reason: format!("cannot answer: {reason}") }, Vec::new())
                        }
                    };
                    (i, g, out)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| whole(format!("the lookups failed: {e}")))?;
        // Query budgets last, so that only calls about to be answered are counted: one write per
        // grant, for as many as it has left (the first ones of the batch); the rest are refused.
        let mut wanted = vec![0u64; groups.len()];
        for (_, g, (o, _)) in &found {
            if matches!(o, Outcome::Answered { .. }) {
                wanted[*g] += 1;
            }
        }
        let mut allowed = wanted.clone();
        let mut budget_reason = vec![None; groups.len()];
        for (g, group) in groups.iter().enumerate() {
            if let (Ok((_, Authorized { grant: Some(id), .. })), true) = (&group.auth, wanted[g] > 0) {
                match self.0.access.count_queries(id, wanted[g]) {
                    Ok(Ok(n)) => allowed[g] = n,
                    Ok(Err(r)) => {
                        allowed[g] = 0;
                        budget_reason[g] = Some(r.to_string());
                    }
                    Err(e) => return Err(whole(Error::from(e).to_string())),
                }
                if allowed[g] < wanted[g] && budget_reason[g].is_none() {
                    budget_reason[g] = Some(self.budget_reason(id));
                }
            }
        }
        let mut records: Vec<Vec<u8>> = vec![Vec::new(); calls.len()];
        for (i, g, (o, bytes)) in found {
            if matches!(o, Outcome::Answered { .. }) {
                if allowed[g] == 0 {
                    let reason = budget_reason[g].clone().unwrap_or_else(|| "the query budget is spent".into());
                    outcomes[i] = Some(Outcome::Refused { reason });
                    continue;
                }
                allowed[g] -= 1;
            }
            outcomes[i] = Some(o);
            records[i] = bytes;
        }
        let outcomes: Vec<Outcome> =
            outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Refused { reason: "not decided".into() })).collect();
        let results: Vec<Vec<u8>> = outcomes
            .iter()
            .zip(&leaves)
            .zip(&decided)
            .map(|((o, leaf), d)| {
                // The call's own salt: a neighbour's result leaf, in one call's proof, cannot be
                // tested against guesses of its outcome without it.
                let salt = d.as_ref().map_or(Salt([0; 16]), |(c, _)| c.salt);
                deltafed_protocol::signed::encode(&CallResult {
                    v: OBJECT_VERSION,
                    call: *leaf,
                    salt,
                    outcome: o.clone(),
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| whole(format!("cannot encode a result: {e}")))?;
        let answer = CallAnswer {
            v: OBJECT_VERSION,
            batch: batch.hash(),
            exchange: ExchangeId(random16().map_err(|e| whole(e.to_string()))?),
            provider: me.clone(),
            requester: from.clone(),
            count: b.count,
            root: calls::root_of::<CallResult>(&results),
            time: now(),
        };
        let answer = Signed::sign(answer, &self.0.key).map_err(|e| whole(e.to_string()))?;
        let datasets = distinct_datasets(me, decided.iter().filter_map(|d| d.as_ref().ok()).map(|(c, _)| &c.dataset));
        let tally = crate::metrics::Tally::of(outcomes.iter());
        for ((d, o), r) in decided.iter().zip(&outcomes).zip(&records) {
            let (dataset, app) = match d {
                Ok((c, _)) => (c.dataset.as_str(), c.app.as_deref()),
                Err(_) => ("(not decoded)", None),
            };
            let answered = matches!(o, Outcome::Answered { .. });
            self.0.metrics.call_done("served", from.as_str(), dataset, app, answered, r.len());
        }
        let logs = calls
            .iter()
            .zip(outcomes)
            .map(|(c, outcome)| CallLog { call: c.call.clone(), outcome, key: audit_hash(&self.0.audit_key, &c.key) })
            .collect();
        self.record(Record::calls_served(&batch, &answer, logs, datasets)).map_err(|e| whole(e.to_string()))?;
        // The nonce, the counts and the record are durable before the answer leaves.
        self.0.durable.sync().await.map_err(|e| whole(e.to_string()))?;
        self.0.batchers.batches_served.fetch_add(1, Ordering::Relaxed);
        self.0.batchers.calls_served.fetch_add(u64::from(b.count), Ordering::Relaxed);
        self.0.metrics.batch_served(from.as_str(), started.elapsed(), &tally);
        Ok(wire::Response::Answers {
            answer: answer.into_bytes(),
            results: results.into_iter().map(serde_bytes::ByteBuf::from).collect(),
            records: records.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        })
    }

    /// Decodes and checks one call, and finds (or adds) the group of calls it is authorized with.
    fn decide_call(&self, from: &MemberId, c: &WireCall, groups: &mut Vec<Group>) -> Result<(Call, usize), String> {
        let call: Call = deltafed_protocol::signed::decode(&c.call).map_err(|e| e.to_string())?;
        if c.key.len() > MAX_KEY_BYTES {
            return Err(format!("the key is over {MAX_KEY_BYTES} bytes"));
        }
        if calls::key_commitment(&c.key_salt, &c.key) != call.key {
            return Err("the key sent does not match the call's signed commitment".into());
        }
        for label in [&call.app, &call.on_behalf_of].into_iter().flatten() {
            if label.len() > MAX_LABEL_BYTES {
                return Err(format!("a label of the call is over {MAX_LABEL_BYTES} bytes"));
            }
        }
        let g = match groups.iter().position(|g| g.dataset == call.dataset && g.grant == call.grant) {
            Some(g) => g,
            None => {
                let target =
                    DatasetRef { publisher: self.0.member.clone(), dataset: call.dataset.clone(), version: None };
                let auth = self.authorize(from, &target, call.grant).and_then(|(m, a)| {
                    policy::may_query(&m, a.fields.as_deref())?;
                    Ok((m, a))
                });
                groups.push(Group {
                    dataset: call.dataset.clone(),
                    grant: call.grant,
                    auth: auth.map_err(|e| e.to_string()),
                    calls: 0,
                });
                groups.len() - 1
            }
        };
        if let Err(reason) = &groups[g].auth {
            return Err(reason.clone());
        }
        groups[g].calls += 1;
        Ok((call, g))
    }

    /// Why a grant's query budget refuses, in the policy's words.
    fn budget_reason(&self, id: &GrantId) -> String {
        match self.0.access.grant(id) {
            Ok(Some(h)) => match policy::query_budget(h.grant.body(), h.queries) {
                Err(r) => r.to_string(),
                Ok(()) => "the grant's query budget is spent".into(),
            },
            _ => "the grant's query budget is spent".into(),
        }
    }
}

/// What one group's calls are looked up by: the manifest and the fields granted.
type LookupTarget = Arc<(Manifest, Option<Vec<String>>)>;
/// One call to look up: its index in the batch, its group, the group's target, its key.
type Lookup = (usize, usize, LookupTarget, String);
/// A live dataset's rows for one call.
type LiveGot = Result<Vec<serde_json::Map<String, serde_json::Value>>, LiveError>;

/// The calls of a batch under one dataset and grant: authorized once, budgeted in one write.
struct Group {
    dataset: DatasetId,
    grant: Option<GrantId>,
    auth: Result<(Manifest, Authorized), String>,
    calls: u64,
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
