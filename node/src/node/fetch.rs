//! Fetch, both sides. The requester signs a fetch request; the provider checks it (member,
//! signature, replay, grant, sharing), answers with a signed ticket and serves chunks; the
//! requester verifies every chunk, resumes after interruptions from the last verified chunk,
//! writes the file atomically, and signs a receipt. Both sides log every step.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deltafed_protocol::exchange::{FetchRequest, Receipt, Ticket};
use deltafed_protocol::manifest::Sharing;
use deltafed_protocol::provenance::EntryKind;
use deltafed_protocol::wire::{self, Delivery};
use deltafed_protocol::{DatasetRef, ExchangeId, Hash, MemberId, Nonce, OBJECT_VERSION, Signed, Timestamp};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

use super::{Node, ev, fields_note, grant_note, now, random16};
use crate::access::Role;
use crate::admin::api;
use crate::exchange::{self, Partial, PartialState, Serving};
use crate::provenance::Record;

/// Chunk requests in flight per fetch: enough to keep the pipe full across round trips.
const WINDOW: usize = 8;
/// How long a requester waits for a provider to come back before giving up a fetch.
const RECONNECT_WAIT: Duration = Duration::from_secs(90);
/// The partial file's state is saved at least this often (bytes).
const SAVE_EVERY: u64 = 64 << 20;

/// What authorises a delivery to a member: the grant used (none for unconditional sharing), the
/// projection it imposes, and the purpose it was granted for.
pub(super) struct Authorized {
    pub grant: Option<deltafed_protocol::GrantId>,
    pub fields: Option<Vec<String>>,
    pub purpose: String,
}

/// Why a fetch attempt stopped.
enum Stop {
    /// The provider said no, or the data failed verification: final.
    Fatal(String),
    /// The connection broke: resume when the provider is back.
    Retry(String),
}

impl Node {
    /// Checks a signed fetch or query request's freshness: time within the allowed skew and a
    /// nonce never seen before.
    pub(super) fn check_fresh(&self, nonce: &Nonce, time: Timestamp) -> Result<(), String> {
        let t = now();
        let skew = self.0.config.max_clock_skew;
        if t.abs_diff(time) > skew {
            return Err(format!(
                "the request's time {time} is more than {} away from the provider's clock",
                humantime::format_duration(skew)
            ));
        }
        let forget = Timestamp(t.0.saturating_sub(2 * u64::try_from(skew.as_millis()).unwrap_or(u64::MAX)));
        match self.0.access.use_nonce(nonce, t, forget) {
            Ok(true) => Ok(()),
            Ok(false) => Err("replayed request: its nonce was already used".into()),
            Err(e) => Err(format!("cannot check the nonce: {e}")),
        }
    }

    pub(super) async fn serve_fetch(&self, from: &MemberId, bytes: &[u8]) -> wire::Response {
        match self.try_serve_fetch(from, bytes).await {
            Ok(resp) => resp,
            Err((reason, dataset)) => self.refuse(from, "fetch", dataset, reason, bytes),
        }
    }

    /// Logs a refused fetch or query (with the request that was refused) and answers with the reason.
    pub(super) fn refuse(
        &self,
        from: &MemberId,
        what: &str,
        dataset: Option<DatasetRef>,
        reason: String,
        request: &[u8],
    ) -> wire::Response {
        tracing::info!(peer = %from, %reason, "{what} refused");
        self.record(Record {
            time: now(),
            kind: EntryKind::ExchangeRefused,
            dataset,
            peer: Some(from.clone()),
            exchange: None,
            note: format!("{what} refused: {reason}"),
            objects: vec![ev(&format!("{what}-request"), request)],
        });
        wire::Response::Refused(reason)
    }

    async fn try_serve_fetch(
        &self,
        from: &MemberId,
        bytes: &[u8],
    ) -> Result<wire::Response, (String, Option<DatasetRef>)> {
        let roster = self.roster();
        let req =
            Signed::<FetchRequest>::decode_from_member(bytes, &roster.roster).map_err(|e| (e.to_string(), None))?;
        let rb = req.body();
        let me = &self.0.member;
        let target = DatasetRef { publisher: me.clone(), dataset: rb.dataset.clone(), version: rb.version };
        let fail = |r: String| (r, Some(target.unversioned()));
        if &rb.requester != from {
            return Err(fail(format!("the request is signed by {} but came from {from}", rb.requester)));
        }
        if &rb.provider != me {
            return Err(fail(format!("the request is addressed to {}, not {me}", rb.provider)));
        }
        self.check_fresh(&rb.nonce, rb.time).map_err(fail)?;
        let m = self.manifest_for(&target).map_err(fail)?;
        let Authorized { grant, fields, purpose } = self.authorize(from, &m, rb.grant.as_ref()).map_err(fail)?;
        if rb.offset == 0
            && let Some(g) = &grant
        {
            match self.0.access.count_fetch(g) {
                Ok(Ok(_)) => {}
                Ok(Err(reason)) => return Err(fail(reason)),
                Err(e) => return Err(fail(format!("cannot count the fetch: {e}"))),
            }
        }
        // What will be sent: the published bytes, or their projection to the granted fields.
        let blobs = self.0.blobs.clone();
        let store = self.0.store.clone();
        let (hash, format, f2) = (m.content_hash, m.format, fields.clone());
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, String> {
            match &f2 {
                Some(fields) => {
                    let p = blobs.project(&hash, format, fields).map_err(|e| e.to_string())?;
                    let file = p.file.reopen().map_err(|e| e.to_string())?;
                    let (table, whole) =
                        exchange::chunk_table(&file, p.size, exchange::CHUNK_SIZE).map_err(|e| e.to_string())?;
                    Ok((Arc::new(file), p.size, table, whole, Some(Arc::new(p.file))))
                }
                None => {
                    let file = blobs.open_blob(&hash).map_err(|e| e.to_string())?;
                    let size = file.metadata().map_err(|e| e.to_string())?.len();
                    let table = cached_table(&store, &hash, &file, size)?;
                    Ok((Arc::new(file), size, table, hash, None))
                }
            }
        })
        .await
        .map_err(|e| fail(format!("internal error preparing the data: {e}")))?
        .map_err(fail)?;
        let (file, size, table, whole, projection) = prepared;
        if rb.offset > size || !rb.offset.is_multiple_of(u64::from(exchange::CHUNK_SIZE)) {
            return Err(fail(format!("offset {} is not a chunk boundary within {size} bytes", rb.offset)));
        }
        let exchange_id = ExchangeId(random16().map_err(fail)?);
        let ticket = Ticket {
            v: OBJECT_VERSION,
            exchange: exchange_id,
            request: req.hash(),
            provider: me.clone(),
            requester: from.clone(),
            dataset: m.dataset.clone(),
            version: m.version,
            fields: fields.clone(),
            content_hash: whole,
            size,
            offset: rb.offset,
            chunk_size: exchange::CHUNK_SIZE,
            chunks: Ticket::table_hash(&table),
            time: now(),
        };
        let signed = Signed::sign(ticket, &self.0.key).map_err(|e| fail(e.to_string()))?;
        self.0
            .exchanges
            .insert(exchange_id, Serving::new(from.clone(), grant, m.dataset_ref(), file, size, projection));
        let (fields_note, grant_note) = (fields_note(&fields), grant_note(grant));
        self.record(Record {
            time: now(),
            kind: EntryKind::ExchangeServed,
            dataset: Some(m.dataset_ref()),
            peer: Some(from.clone()),
            exchange: Some(exchange_id),
            note: format!(
                "{grant_note}; purpose: {purpose}; {fields_note}; {size} bytes from offset {}; hash {whole}",
                rb.offset
            ),
            objects: vec![ev("fetch-request", bytes), ev("ticket", signed.as_bytes())],
        });
        tracing::info!(exchange = %exchange_id, peer = %from, dataset = %m.dataset_ref(), size, offset = rb.offset, "serving");
        Ok(wire::Response::Ticket { ticket: signed.into_bytes(), chunk_hashes: exchange::table_bytes(&table) })
    }

    /// May `from` receive `m` now? Returns the grant used (if any), the projection, and the purpose.
    pub(super) fn authorize(
        &self,
        from: &MemberId,
        m: &deltafed_protocol::manifest::Manifest,
        grant: Option<&deltafed_protocol::GrantId>,
    ) -> Result<Authorized, String> {
        if m.sharing == Sharing::None {
            return Err(format!("{} is not shared (sharing: none)", m.dataset_ref()));
        }
        let Some(id) = grant else {
            if m.sharing == Sharing::Unconditional {
                return Ok(Authorized { grant: None, fields: None, purpose: "unconditional sharing".into() });
            }
            return Err(format!(
                "{} is shared only under a grant; ask with `deltafed request {}/{} --purpose ...`",
                m.dataset_ref(),
                m.publisher,
                m.dataset
            ));
        };
        let held = self
            .0
            .access
            .grant(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no grant {id} was issued by {}", self.0.member))?;
        let g = held.grant.body();
        if held.role != Role::Issued || &g.grantee != from || g.dataset != m.dataset {
            return Err(format!("grant {id} does not cover {from} for {}", m.dataset_ref()));
        }
        if let Some(reason) = held.refusal(now()) {
            return Err(reason);
        }
        Ok(Authorized { grant: Some(*id), fields: g.fields.clone(), purpose: g.purpose.clone() })
    }

    pub(super) async fn serve_chunk(&self, from: &MemberId, exchange_id: ExchangeId, index: u64) -> wire::Response {
        let Some(src) = self.0.exchanges.source(&exchange_id) else {
            return wire::Response::Refused(format!(
                "no exchange {exchange_id} is in progress (it ended or was revoked)"
            ));
        };
        if &src.requester != from {
            return wire::Response::Refused("this exchange belongs to another member".into());
        }
        let limit = self.0.config.serve_rate_limit;
        let read =
            tokio::task::spawn_blocking(move || exchange::read_chunk(&src.file, index, src.chunk_size, src.size)).await;
        if limit > 0
            && let Ok(Ok(bytes)) = &read
            && let Some(slot) = self.0.exchanges.pace(&exchange_id, bytes.len() as u64, limit)
        {
            tokio::time::sleep_until(slot.into()).await;
        }
        // Revocation and expiry take effect for exchanges in flight too: checked at the moment
        // the chunk would leave, after any pacing wait.
        if let Some(g) = &src.grant {
            match self.0.access.grant(g) {
                Ok(Some(h)) => {
                    if let Some(reason) = h.refusal(now()) {
                        // The exchange stays listed so every chunk still in flight gets this
                        // reason too; idle exchanges are dropped later.
                        return wire::Response::Refused(reason);
                    }
                }
                _ => return wire::Response::Refused(format!("grant {g} is no longer held")),
            }
        }
        match read {
            Ok(Ok(bytes)) => wire::Response::Chunk(bytes),
            Ok(Err(e)) => wire::Response::Refused(format!("cannot read chunk {index}: {e}")),
            Err(e) => wire::Response::Refused(format!("internal error: {e}")),
        }
    }

    /// `deltafed fetch`: the requester's side.
    pub(super) async fn fetch(
        &self,
        target: DatasetRef,
        out: PathBuf,
        progress: Option<mpsc::Sender<api::Progress>>,
    ) -> Result<api::Fetched, String> {
        let me = self.0.member.clone();
        let provider = target.publisher.clone();
        if provider == me {
            return Err(format!("{target} is this member's own dataset"));
        }
        let m = self.manifest_for(&target)?;
        let grant = self.required_grant(&m)?;
        let grant_id = grant.as_ref().map(|g| g.grant.body().id);
        let fields = grant.as_ref().and_then(|g| g.grant.body().fields.clone());
        if out.is_dir() {
            return Err(format!("{} is a directory; give a file name with --out", out.display()));
        }
        let partial = Partial::for_output(&out);
        let mut state = match partial.load() {
            Some(st)
                if st.provider == provider.as_str()
                    && st.dataset == m.dataset.as_str()
                    && st.version == m.version
                    && st.fields == fields =>
            {
                st
            }
            _ => {
                partial.discard();
                PartialState {
                    provider: provider.to_string(),
                    dataset: m.dataset.to_string(),
                    version: m.version,
                    fields: fields.clone(),
                    content_hash: String::new(),
                    chunk_size: exchange::CHUNK_SIZE,
                    chunks: String::new(),
                    verified: 0,
                }
            }
        };
        let mut resumed_from = state.verified;
        let mut waited = Duration::ZERO;
        loop {
            let peer = self.wait_connected(&provider, RECONNECT_WAIT.saturating_sub(waited)).await?;
            if state.verified > 0 {
                resumed_from = state.verified;
            }
            match self.fetch_attempt(peer, &m, grant_id, &partial, &mut state, &out, progress.as_ref()).await {
                Ok((ticket, receipt, fetch_req)) => {
                    let tb = ticket.body();
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::ExchangeReceived,
                        dataset: Some(m.dataset_ref()),
                        peer: Some(provider.clone()),
                        exchange: Some(tb.exchange),
                        note: format!(
                            "{}; {}; {} bytes, hash {}; written to {}",
                            grant_note(grant_id),
                            fields_note(&tb.fields),
                            tb.size,
                            tb.content_hash,
                            out.display()
                        ),
                        objects: vec![
                            ev("fetch-request", &fetch_req),
                            ev("ticket", ticket.as_bytes()),
                            ev("receipt", receipt.as_bytes()),
                        ],
                    });
                    let _ = self.deliver(&provider, Delivery::Receipt(receipt.as_bytes().to_vec())).await;
                    if let Some(g) = grant_id {
                        // The grantee counts too, so `deltafed grants` shows use on both sides.
                        let _ = self.0.access.count_fetch(&g);
                    }
                    return Ok(api::Fetched {
                        publisher: provider.to_string(),
                        dataset: m.dataset.to_string(),
                        version: m.version,
                        exchange_id: tb.exchange.to_string(),
                        content_hash: tb.content_hash.to_string(),
                        bytes: tb.size,
                        out: out.display().to_string(),
                        fields: tb.fields.clone(),
                        resumed_from,
                    });
                }
                Err(Stop::Fatal(reason)) => {
                    self.record(Record {
                        time: now(),
                        kind: EntryKind::ExchangeRefused,
                        dataset: Some(m.dataset_ref()),
                        peer: Some(provider.clone()),
                        exchange: None,
                        note: format!("fetch failed: {reason}"),
                        objects: vec![],
                    });
                    return Err(reason);
                }
                Err(Stop::Retry(why)) => {
                    tracing::info!(provider = %provider, %why, verified = state.verified, "fetch interrupted; resuming when the provider is back");
                    let t0 = tokio::time::Instant::now();
                    // Let the broken connection be noticed and redialed before asking again.
                    self.wait_disconnected_or(&provider, Duration::from_secs(5)).await;
                    waited += t0.elapsed();
                    if waited >= RECONNECT_WAIT {
                        return Err(format!(
                            "{provider} did not come back within {}s; run the same fetch again to resume from {} verified bytes",
                            RECONNECT_WAIT.as_secs(),
                            state.verified
                        ));
                    }
                }
            }
        }
    }

    async fn wait_connected(&self, member: &MemberId, limit: Duration) -> Result<libp2p::PeerId, String> {
        let peer = self.peer_of_member(member).ok_or_else(|| format!("{member} is not in the roster"))?;
        let deadline = tokio::time::Instant::now() + limit.max(Duration::from_secs(1));
        loop {
            let st = self.0.net.status().await.map_err(|e| e.to_string())?;
            if st.connected.iter().any(|c| c.peer == peer) {
                return Ok(peer);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("{member} is not connected; check `deltafed peers` and try again"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// After a broken transfer: waits until the provider is seen disconnected (or `limit`).
    async fn wait_disconnected_or(&self, member: &MemberId, limit: Duration) {
        let Some(peer) = self.peer_of_member(member) else { return };
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            match self.0.net.status().await {
                Ok(st) if st.connected.iter().any(|c| c.peer == peer) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                _ => return,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_attempt(
        &self,
        peer: libp2p::PeerId,
        m: &deltafed_protocol::manifest::Manifest,
        grant: Option<deltafed_protocol::GrantId>,
        partial: &Partial,
        state: &mut PartialState,
        out: &std::path::Path,
        progress: Option<&mpsc::Sender<api::Progress>>,
    ) -> Result<(Signed<Ticket>, Signed<Receipt>, Vec<u8>), Stop> {
        let me = self.0.member.clone();
        let req = FetchRequest {
            v: OBJECT_VERSION,
            requester: me.clone(),
            provider: m.publisher.clone(),
            dataset: m.dataset.clone(),
            version: Some(m.version),
            grant,
            nonce: Nonce(random16().map_err(Stop::Fatal)?),
            time: now(),
            offset: state.verified,
        };
        let signed_req = Signed::sign(req, &self.0.key).map_err(|e| Stop::Fatal(e.to_string()))?;
        let rpc =
            wire::Request::Fetch(signed_req.as_bytes().to_vec()).encode().map_err(|e| Stop::Fatal(e.to_string()))?;
        let answer = self.0.net.request(peer, rpc).await.map_err(|e| Stop::Retry(e.to_string()))?;
        let (ticket_bytes, table_bytes) = match wire::Response::decode(&answer)
            .map_err(|e| Stop::Fatal(format!("bad answer from {}: {e}", m.publisher)))?
        {
            wire::Response::Ticket { ticket, chunk_hashes } => (ticket, chunk_hashes),
            wire::Response::Refused(reason) => return Err(Stop::Fatal(format!("{} refused: {reason}", m.publisher))),
            other => return Err(Stop::Fatal(format!("unexpected answer from {}: {other:?}", m.publisher))),
        };
        let ticket = Signed::<Ticket>::decode_from_member(&ticket_bytes, &self.roster().roster)
            .map_err(|e| Stop::Fatal(format!("bad ticket: {e}")))?;
        let t = ticket.body().clone();
        let table = exchange::parse_table(&table_bytes).ok_or_else(|| Stop::Fatal("malformed chunk table".into()))?;
        let count = Ticket::chunk_count(t.size, t.chunk_size);
        let consistent = t.request == signed_req.hash()
            && t.provider == m.publisher
            && t.requester == me
            && t.dataset == m.dataset
            && t.version == m.version
            && t.offset == state.verified
            && t.chunk_size > 0
            && table.len() as u64 == count
            && Ticket::table_hash(&table) == t.chunks
            && (t.fields.is_some() || (t.content_hash == m.content_hash && t.size == m.size));
        if !consistent {
            return Err(Stop::Fatal(format!(
                "the ticket from {} does not match the request or the manifest; nothing was written",
                m.publisher
            )));
        }
        if state.verified > 0 && (state.content_hash != t.content_hash.to_string() || state.chunk_size != t.chunk_size)
        {
            // The data changed since the partial download: start over.
            partial.discard();
            state.verified = 0;
            return Err(Stop::Retry("the provider's data changed; starting over".into()));
        }
        state.content_hash = t.content_hash.to_string();
        state.chunk_size = t.chunk_size;
        state.chunks = t.chunks.to_string();
        partial.save(state).map_err(|e| Stop::Fatal(format!("cannot write {}: {e}", partial.state.display())))?;
        let writer = exchange::Writer::start(partial, state, SAVE_EVERY)
            .map_err(|e| Stop::Fatal(format!("cannot write {}: {e}", partial.data.display())))?;
        let received = self.receive_chunks(peer, m, &t, &table, state.verified, &writer, out, progress).await;
        // The writer's account of what is durable is the one the resume state keeps.
        let written = writer.finish().await;
        state.verified = written.verified;
        let failed = |e: std::io::Error| Stop::Fatal(format!("cannot write {}: {e}", partial.data.display()));
        match received {
            Ok(()) => {}
            Err(stop @ Stop::Retry(_)) => return Err(stop),
            Err(stop @ Stop::Fatal(_)) => {
                partial.discard();
                return Err(stop);
            }
        }
        let whole = written.whole.map_err(failed)?;
        if whole != t.content_hash || state.verified != t.size {
            partial.discard();
            return Err(Stop::Fatal(format!(
                "the data does not match the ticket's hash {}; nothing was written to {}",
                t.content_hash,
                out.display()
            )));
        }
        partial.finish(out).map_err(|e| Stop::Fatal(format!("cannot move the data into {}: {e}", out.display())))?;
        let receipt = Receipt {
            v: OBJECT_VERSION,
            exchange: t.exchange,
            requester: me,
            provider: m.publisher.clone(),
            content_hash: whole,
            bytes: t.size,
            time: now(),
        };
        let receipt = Signed::sign(receipt, &self.0.key).map_err(|e| Stop::Fatal(e.to_string()))?;
        tracing::info!(exchange = %t.exchange, bytes = t.size, out = %out.display(), "fetched and verified");
        Ok((ticket, receipt, signed_req.into_bytes()))
    }

    /// Asks for chunks `from/chunk_size..` with a window in flight, checks each against the
    /// table, and queues it for the writer. Returns when every chunk is queued.
    #[allow(clippy::too_many_arguments)]
    async fn receive_chunks(
        &self,
        peer: libp2p::PeerId,
        m: &deltafed_protocol::manifest::Manifest,
        t: &Ticket,
        table: &[Hash],
        from: u64,
        writer: &exchange::Writer,
        out: &std::path::Path,
        progress: Option<&mpsc::Sender<api::Progress>>,
    ) -> Result<(), Stop> {
        let count = table.len() as u64;
        let mut next = from / u64::from(t.chunk_size);
        let mut index = next;
        let mut done = from;
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < WINDOW && next < count {
                let rpc = wire::Request::Chunk { exchange: t.exchange, index: next }
                    .encode()
                    .map_err(|e| Stop::Fatal(e.to_string()))?;
                let net = self.0.net.clone();
                inflight.push_back(async move { net.request(peer, rpc).await });
                next += 1;
            }
            let Some(res) = inflight.next().await else { return Ok(()) };
            let bytes = res.map_err(|e| Stop::Retry(e.to_string()))?;
            let chunk = match wire::Response::decode(&bytes) {
                Ok(wire::Response::Chunk(c)) => c,
                Ok(wire::Response::Refused(reason)) => {
                    return Err(Stop::Fatal(format!(
                        "{} stopped the transfer: {reason}; nothing was written to {}",
                        m.publisher,
                        out.display()
                    )));
                }
                Ok(other) => return Err(Stop::Fatal(format!("unexpected answer {other:?}"))),
                Err(e) => return Err(Stop::Fatal(format!("malformed chunk answer: {e}"))),
            };
            let expected = table.get(usize::try_from(index).unwrap_or(usize::MAX)).copied().unwrap_or(Hash([0; 32]));
            if Hash::of(&chunk) != expected {
                return Err(Stop::Fatal(format!(
                    "chunk {index} of exchange {} does not match its hash (corrupted in transit or at the provider); nothing was written to {}",
                    t.exchange,
                    out.display()
                )));
            }
            done += chunk.len() as u64;
            if !writer.write(chunk).await {
                // The writer stopped on a disk error; `finish` reports it.
                return Ok(());
            }
            index += 1;
            if let Some(p) = progress {
                let _ = p.try_send(api::Progress { done, total: t.size });
            }
        }
    }
}

/// The chunk table of a published blob, computed once and kept (1 GiB costs ~0.1 s to hash, but
/// the cached table also lets a blob corrupted on disk after publishing be caught chunk by chunk).
fn cached_table(
    store: &crate::store::Store,
    hash: &Hash,
    file: &std::fs::File,
    size: u64,
) -> Result<Vec<Hash>, String> {
    let mut key = b"chunks/".to_vec();
    key.extend_from_slice(&hash.0);
    if let Ok(Some(b)) = store.get(crate::store::Cf::Exchanges, &key)
        && let Some(t) = exchange::parse_table(&b)
        && t.len() as u64 == Ticket::chunk_count(size, exchange::CHUNK_SIZE)
    {
        return Ok(t);
    }
    let (table, _) = exchange::chunk_table(file, size, exchange::CHUNK_SIZE).map_err(|e| e.to_string())?;
    store.put(crate::store::Cf::Exchanges, &key, &exchange::table_bytes(&table)).map_err(|e| e.to_string())?;
    Ok(table)
}

/// Computes and keeps a published blob's chunk table (at publish time).
pub(crate) fn remember_table(
    store: &crate::store::Store,
    blobs: &crate::blobs::Blobs,
    hash: &Hash,
) -> Result<(), String> {
    let file = blobs.open_blob(hash).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    cached_table(store, hash, &file, size).map(|_| ())
}
