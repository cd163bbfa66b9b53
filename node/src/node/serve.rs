//! Fetch, provider side. A member's signed fetch request is checked (sender, addressee,
//! freshness, and the policy against the dataset's newest state), answered with a signed ticket
//! naming exactly what will be sent, and then served chunk by chunk; the grant is checked again
//! as each chunk leaves, so a revocation stops transfers in flight. The requester's receipt
//! closes the exchange.

use std::sync::Arc;

use deltafed_protocol::exchange::{FetchRequest, Receipt, Ticket, table_root};
use deltafed_protocol::wire;
use deltafed_protocol::{DatasetRef, ExchangeId, Hash, MemberId, Nonce, OBJECT_VERSION, Signed, Timestamp};

use super::publish::policy_latest;
use super::{Error, Node, now, random16};
use crate::datapath;
use crate::exchange::{self, Serving};
use crate::policy::{self, Authorized};
use crate::provenance::Record;
use crate::store::{Cf, Store};

/// A refusal of a member's request, with the dataset it named when that is known.
pub(super) struct Refused {
    pub reason: String,
    pub dataset: Option<DatasetRef>,
}

impl Refused {
    pub fn about(dataset: &DatasetRef) -> impl Fn(Error) -> Refused + '_ {
        move |e| Refused { reason: e.to_string(), dataset: Some(dataset.unversioned()) }
    }
}

impl Node {
    /// A signed fetch or query request's freshness: time within the allowed skew and a nonce
    /// never seen before.
    pub(super) fn check_fresh(&self, nonce: &Nonce, time: Timestamp) -> Result<(), Error> {
        let t = now();
        let skew = self.0.config.max_clock_skew;
        policy::fresh(time, t, skew)?;
        let forget = Timestamp(t.0.saturating_sub(2 * u64::try_from(skew.as_millis()).unwrap_or(u64::MAX)));
        if self.0.access.use_nonce(nonce, t, forget)? {
            Ok(())
        } else {
            Err(Error::refused("replayed request: its nonce was already used"))
        }
    }

    /// May `from` receive the dataset `target` names, under the grant it names? Decided by the
    /// policy against the dataset's newest state.
    pub(super) fn authorize(
        &self,
        from: &MemberId,
        target: &DatasetRef,
        grant: Option<deltafed_protocol::GrantId>,
    ) -> Result<(deltafed_protocol::manifest::Manifest, Authorized), Error> {
        let (latest, asked) = self.dataset_state(target)?;
        let held = match grant {
            Some(id) => self.0.access.grant(&id)?,
            None => None,
        };
        let auth =
            policy::may_serve(&self.0.member, from, policy_latest(&latest), &asked, grant, held.as_ref(), now())?;
        Ok((asked, auth))
    }

    pub(super) async fn serve_fetch(&self, from: &MemberId, bytes: &[u8]) -> wire::Response {
        match self.try_serve_fetch(from, bytes).await {
            Ok(resp) => resp,
            Err(r) => self.refuse(from, "fetch", r, bytes),
        }
    }

    /// Logs a refused fetch or query (by the request's hash) and answers with the reason.
    pub(super) fn refuse(&self, from: &MemberId, what: &str, r: Refused, request: &[u8]) -> wire::Response {
        tracing::info!(peer = %from, reason = %r.reason, "{what} refused");
        self.record_or_log(Record::refused_request(what, from, r.dataset, &r.reason, request));
        wire::Response::Refused(r.reason)
    }

    async fn try_serve_fetch(&self, from: &MemberId, bytes: &[u8]) -> Result<wire::Response, Refused> {
        let req = Signed::<FetchRequest>::decode_from_member(bytes, &self.roster().roster)
            .map_err(|e| Refused { reason: e.to_string(), dataset: None })?;
        let rb = req.body();
        let me = &self.0.member;
        let target = DatasetRef { publisher: me.clone(), dataset: rb.dataset.clone(), version: rb.version };
        let fail = Refused::about(&target);
        if &rb.requester != from {
            return Err(fail(Error::refused(format!(
                "the request is signed by {} but came from {from}",
                rb.requester
            ))));
        }
        if &rb.provider != me {
            return Err(fail(Error::refused(format!("the request is addressed to {}, not {me}", rb.provider))));
        }
        self.check_fresh(&rb.nonce, rb.time).map_err(&fail)?;
        let (m, Authorized { grant, fields, purpose }) = self.authorize(from, &target, rb.grant).map_err(&fail)?;
        // What will be sent: the published bytes, or their projection to the granted fields.
        let blobs = self.0.blobs.clone();
        let store = self.0.store.clone();
        let (hash, format, f2) = (m.content_hash, m.format, fields.clone());
        let prepared = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            let io = |e: std::io::Error| Error::internal("preparing the data", e);
            match &f2 {
                Some(fields) => {
                    let p = blobs.project(&hash, format, fields)?;
                    let file = p.file.reopen().map_err(io)?;
                    let (table, whole) = exchange::chunk_table(&file, p.size, exchange::CHUNK_SIZE).map_err(io)?;
                    Ok((Arc::new(file), p.size, table, whole, Some(Arc::new(p.file))))
                }
                None => {
                    let file = blobs.open_blob(&hash)?;
                    let size = file.metadata().map_err(io)?.len();
                    let table = cached_table(&store, &hash, &file, size)?;
                    Ok((Arc::new(file), size, table, hash, None))
                }
            }
        })
        .await
        .map_err(|e| fail(e.into()))?
        .map_err(&fail)?;
        let (file, size, table, whole, projection) = prepared;
        if rb.offset > size || !rb.offset.is_multiple_of(u64::from(exchange::CHUNK_SIZE)) {
            return Err(fail(Error::invalid(
                "offset",
                format!("offset {} is not a chunk boundary within {size} bytes", rb.offset),
            )));
        }
        // A fresh fetch draws on the grant's budget; a resume must continue the fetch counted
        // for this grantee, of the same data.
        if let Some(g) = &grant {
            let decided = if rb.offset == 0 {
                self.0.access.count_fetch(g, &whole, size).map(|r| r.map(|_| ()))
            } else {
                self.0.access.resume_fetch(g, &whole)
            };
            decided.map_err(|e| fail(e.into()))?.map_err(|r| fail(r.into()))?;
        }
        let exchange_id = ExchangeId(random16().map_err(&fail)?);
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
        let signed = Signed::sign(ticket, &self.0.key).map_err(|e| fail(e.into()))?;
        self.0.exchanges.insert(
            exchange_id,
            Serving::new(from.clone(), req.hash(), grant, m.dataset_ref(), file, size, rb.offset, projection),
            self.0.config.member_exchanges,
        );
        self.record(Record::exchange_served(&req, &signed, grant, &purpose)).map_err(&fail)?;
        // The nonce, the fetch count and the record are durable before the ticket leaves.
        self.0.durable.sync().await.map_err(|e| fail(e.into()))?;
        tracing::info!(exchange = %exchange_id, peer = %from, dataset = %m.dataset_ref(), size, offset = rb.offset, "serving");
        Ok(wire::Response::Ticket { ticket: signed.into_bytes(), chunk_hashes: exchange::table_bytes(&table) })
    }

    /// The exchanges this node is serving now (the dashboard's running fetches).
    pub fn serving(&self) -> Vec<crate::exchange::ServingView> {
        self.0.exchanges.list()
    }

    /// This node's own fetches being received now.
    pub fn receiving(&self) -> Vec<(deltafed_protocol::ExchangeId, crate::exchange::Receiving)> {
        self.0.exchanges.receiving_list()
    }

    pub(super) async fn serve_chunk(&self, from: &MemberId, exchange_id: ExchangeId, index: u64) -> wire::Response {
        let Some(src) = self.0.exchanges.source(&exchange_id) else {
            return wire::Response::Refused(format!(
                "{}{exchange_id} is in progress (it ended, was revoked, or was closed for a newer one)",
                super::fetch::UNKNOWN_EXCHANGE
            ));
        };
        if &src.requester != from {
            return wire::Response::Refused("this exchange belongs to another member".into());
        }
        if let Err(r) = policy::chunk_in_ticket(index, src.first_chunk, Ticket::chunk_count(src.size, src.chunk_size)) {
            return wire::Response::Refused(r.to_string());
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
        if let Ok(Ok(bytes)) = &read
            && let Err(reason) = self.chunk_may_leave(src.grant.as_ref(), bytes.len() as u64)
        {
            return wire::Response::Refused(reason);
        }
        match read {
            Ok(Ok(bytes)) => {
                self.0.exchanges.sent(&exchange_id, bytes.len() as u64);
                wire::Response::Chunk(bytes)
            }
            Ok(Err(e)) => wire::Response::Refused(format!("cannot read chunk {index}: {e}")),
            Err(e) => wire::Response::Refused(format!("internal error: {e}")),
        }
    }

    /// Whether a chunk of `len` bytes may leave now under `grant` (none: unconditional sharing):
    /// the grant is still held and in force (revocation and expiry stop transfers in flight),
    /// and its byte budget takes the chunk. Both data paths ask this before every chunk.
    fn chunk_may_leave(&self, grant: Option<&deltafed_protocol::GrantId>, len: u64) -> Result<(), String> {
        let Some(g) = grant else { return Ok(()) };
        match self.0.access.grant(g) {
            Ok(Some(h)) => policy::grant_in_force(&h, now()).map_err(|r| r.to_string())?,
            _ => return Err(format!("grant {g} is no longer held")),
        }
        match self.0.access.serve_bytes(g, len) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(refusal.to_string()),
            Err(e) => Err(format!("cannot account the chunk: {e}")),
        }
    }

    /// One data-path connection: the TLS handshake names the peer, the roster must list it, its
    /// first frame must be a fetch request it signed that opened one of our exchanges; then the
    /// exchange's chunks are pushed down the stream.
    async fn serve_data_conn(&self, tcp: tokio::net::TcpStream, remote: std::net::SocketAddr) {
        let (mut tls, peer) = match datapath::accept(&self.0.data_tls, tcp).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "data path: handshake failed");
                return;
            }
        };
        let Some(member) = self.member_of_peer(&peer) else {
            tracing::info!(%remote, %peer, "data path: not a member of the roster in force; closed");
            return;
        };
        let request = match tokio::time::timeout(datapath::HANDSHAKE, datapath::read_request(&mut tls)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                datapath::refuse(&mut tls, &e).await;
                return;
            }
            Err(_) => return,
        };
        let opened = Signed::<FetchRequest>::decode_from_member(&request, &self.roster().roster)
            .map_err(|e| format!("bad request: {e}"))
            .and_then(|req| {
                if req.body().requester != member {
                    return Err(format!(
                        "the request is signed by {} but the connection is from {member}",
                        req.body().requester
                    ));
                }
                match self.0.exchanges.stream_by_request(&req.hash(), &member) {
                    Ok(Some(x)) => Ok(x),
                    Ok(None) => Err(format!(
                        "{}for this request is in progress (it ended, was revoked, or was closed for a newer one)",
                        super::fetch::UNKNOWN_EXCHANGE
                    )),
                    Err(id) => Err(format!("exchange {id} is being sent on another connection already")),
                }
            });
        match opened {
            Ok((id, src)) => self.push_chunks(&mut tls, &member, id, src).await,
            Err(reason) => {
                tracing::info!(peer = %member, %reason, "data path: refused");
                datapath::refuse(&mut tls, &reason).await;
            }
        }
    }

    /// Sends an exchange's chunks in order. A reader thread keeps the next chunks read (into
    /// recycled buffers) while this one writes, so the disk and the network overlap.
    async fn push_chunks(
        &self,
        tls: &mut datapath::ServerStream,
        member: &MemberId,
        id: ExchangeId,
        src: exchange::ChunkSource,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let count = Ticket::chunk_count(src.size, src.chunk_size);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(READ_AHEAD);
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        let (file, chunk_size, size, first) = (src.file.clone(), src.chunk_size, src.size, src.first_chunk);
        let reader = tokio::task::spawn_blocking(move || {
            for index in first..count {
                let mut buf = recycled.try_recv().unwrap_or_default();
                let read = exchange::read_chunk_into(&file, index, chunk_size, size, &mut buf).map(|()| buf);
                let failed = read.is_err();
                if tx.blocking_send(read).is_err() || failed {
                    return;
                }
            }
        });
        let limit = self.0.config.serve_rate_limit;
        let mut index = first;
        while let Some(read) = rx.recv().await {
            let bytes = match read {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(exchange = %id, error = %e, "cannot read a chunk to serve");
                    datapath::refuse(tls, &format!("cannot read chunk {index}: {e}")).await;
                    return;
                }
            };
            let len = bytes.len() as u64;
            if limit > 0
                && let Some(slot) = self.0.exchanges.pace(&id, len, limit)
            {
                tokio::time::sleep_until(slot.into()).await;
            }
            if let Err(reason) = self.chunk_may_leave(src.grant.as_ref(), len) {
                tracing::info!(exchange = %id, peer = %member, %reason, "transfer stopped");
                datapath::refuse(tls, &reason).await;
                return;
            }
            let header = datapath::header(datapath::TAG_CHUNK, u32::try_from(len).unwrap_or(u32::MAX));
            let write = async {
                tls.write_all(&header).await?;
                tls.write_all(&bytes).await
            };
            // A requester that stops reading must not hold the task and its buffers forever.
            match tokio::time::timeout(datapath::STALL, write).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // The requester went away; it resumes with a new ticket.
                    tracing::info!(exchange = %id, peer = %member, error = %e, "data path: the requester closed the stream");
                    return;
                }
                Err(_) => {
                    tracing::info!(exchange = %id, peer = %member, "data path: the requester took nothing for {}s; closed", datapath::STALL.as_secs());
                    return;
                }
            }
            self.0.metrics.chunk_served(member.as_str(), bytes.len());
            // After the last chunk the exchange may already be closed by its receipt.
            if !self.0.exchanges.sent(&id, len) && index + 1 < count {
                datapath::refuse(
                    tls,
                    &format!("{}{id} is in progress (it was closed for a newer one)", super::fetch::UNKNOWN_EXCHANGE),
                )
                .await;
                return;
            }
            let _ = recycle.send(bytes);
            index += 1;
        }
        let _ = reader.await;
        let _ = tls.flush().await;
        // The requester closes once it has verified the last chunk; then so do we.
        let mut byte = [0u8; 1];
        let _ = tokio::time::timeout(LINGER, tls.read(&mut byte)).await;
        let _ = tls.shutdown().await;
    }

    /// The requester acknowledges an exchange: it ends here.
    pub(super) async fn receive_receipt(&self, from: &MemberId, r: Signed<Receipt>) -> Result<(), Error> {
        let body = r.body();
        if &body.requester != from || body.provider != self.0.member {
            return Err(Error::refused("the receipt is not from its sender or not for this member"));
        }
        let dataset = self.0.exchanges.dataset_of(&body.exchange);
        if let Some(g) = self.0.exchanges.grant_of(&body.exchange) {
            self.0.access.close_fetch(&g)?;
        }
        self.0.exchanges.remove(&body.exchange);
        self.record(Record::receipt_received(&r, dataset))?;
        self.0.durable.sync().await?;
        Ok(())
    }
}

/// Chunks read ahead of the one being sent.
const READ_AHEAD: usize = 4;
/// How long a finished stream waits for the requester to close it.
const LINGER: std::time::Duration = std::time::Duration::from_secs(30);
/// Data-path connections served at once; past it, new ones are closed (the requester falls
/// back to chunks over libp2p).
const DATA_CONNS: usize = 64;

/// Serves the data-path connections the shared TCP port hands over, each on its own task.
pub(super) async fn data_path(
    node: Node,
    mut conns: tokio::sync::mpsc::Receiver<(tokio::net::TcpStream, std::net::SocketAddr)>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(DATA_CONNS));
    loop {
        let (tcp, remote) = tokio::select! {
            () = shutdown.cancelled() => return,
            c = conns.recv() => match c { Some(c) => c, None => return },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::info!(%remote, "data path: {DATA_CONNS} connections already; closed");
            continue;
        };
        let (node, stop) = (node.clone(), shutdown.clone());
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = stop.cancelled() => {}
                () = node.serve_data_conn(tcp, remote) => {}
            }
        });
    }
}

/// The chunk table of a published blob, computed once and kept (1 GiB costs ~0.1 s to hash, but
/// the cached table also lets a blob corrupted on disk after publishing be caught chunk by chunk).
/// A kept table is used only if it still merges into the blob's hash; a table computed now must
/// too, or the blob no longer holds what was published.
fn cached_table(store: &Store, hash: &Hash, file: &std::fs::File, size: u64) -> Result<Vec<Hash>, Error> {
    // `cvs/`: tables of chaining values (the `chunks/` tables before them held plain hashes).
    let mut key = b"cvs/".to_vec();
    key.extend_from_slice(&hash.0);
    if let Ok(Some(b)) = store.get(Cf::Exchanges, &key)
        && let Some(t) = exchange::parse_table(&b)
        && t.len() as u64 == Ticket::chunk_count(size, exchange::CHUNK_SIZE)
        && table_root(&t) == *hash
    {
        return Ok(t);
    }
    let (table, whole) = exchange::chunk_table(file, size, exchange::CHUNK_SIZE)
        .map_err(|e| Error::internal("hashing the chunk table", e))?;
    if whole != *hash {
        return Err(Error::internal(
            "reading the blob",
            format!("the stored blob {hash} no longer has that hash (damaged on disk); publish it again"),
        ));
    }
    store.put(Cf::Exchanges, &key, &exchange::table_bytes(&table))?;
    Ok(table)
}

/// Computes and keeps a published blob's chunk table (at publish time).
pub(super) fn remember_table(store: &Store, blobs: &crate::blobs::Blobs, hash: &Hash) -> Result<(), Error> {
    let file = blobs.open_blob(hash)?;
    let size = file.metadata().map_err(|e| Error::internal("reading the blob", e))?.len();
    cached_table(store, hash, &file, size).map(|_| ())
}
