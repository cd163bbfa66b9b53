//! Fetch, requester side: find the manifest and a usable grant, sign a fetch request, check the
//! provider's ticket against the request and the manifest and its chunk table against the signed
//! hash, pull chunks (a window in flight), verify each against its table entry before the writer
//! thread appends it to the partial file, resume after interruptions from the last durable
//! verified chunk (without reading it again), and move the file into place only when every chunk
//! was verified. A signed receipt closes the exchange.

use std::path::PathBuf;
use std::time::Duration;

use deltafed_protocol::exchange::{FetchRequest, Receipt, Ticket, chunk_entry, table_root};
use deltafed_protocol::manifest::{Format, Manifest};
use deltafed_protocol::wire::Delivery;
use deltafed_protocol::{DatasetRef, Hash, Nonce, OBJECT_VERSION, Signed};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

use super::{Caller, Error, Node, now, random16};
use crate::admin::api;
use crate::exchange::{self, ChunkBuf, Partial, PartialState};
use crate::provenance::Record;
use crate::{datapath, policy, rpc};

/// Chunk requests in flight per fetch: enough to keep the pipe full across round trips.
const WINDOW: usize = 8;
/// How long a requester waits for a provider to come back before giving up a fetch.
const RECONNECT_WAIT: Duration = Duration::from_secs(90);
/// After a broken transfer, how long to wait for the broken connection to be noticed.
const NOTICE_BREAK: Duration = Duration::from_secs(5);
/// How a provider's refusal of a chunk starts when it no longer knows the exchange.
pub(super) const UNKNOWN_EXCHANGE: &str = "no exchange ";
/// The partial file's state is saved at least this often (bytes).
const SAVE_EVERY: u64 = 64 << 20;

/// The largest delivery a ticket may announce for a dataset of `size` bytes.
fn max_projection_size(size: u64) -> u64 {
    size.saturating_mul(2).saturating_add(1 << 20)
}

/// A finished fetch.
pub struct Fetched {
    pub ticket: Signed<Ticket>,
    pub out: PathBuf,
    /// Bytes that an earlier, interrupted attempt had already verified.
    pub resumed_from: u64,
    /// The path the last attempt's chunks came by.
    pub transport: Transport,
}

/// Why a fetch attempt stopped.
enum Stop {
    /// The provider said no, or the data failed verification: final.
    Fatal(Error),
    /// The connection broke: resume when the provider is back.
    Retry(String),
}

impl Node {
    /// The grant to receive `m` under (none for unconditional sharing without one held).
    /// What this member may ask to receive of `target`: another member's dataset, its manifest
    /// as the dataset's newest state allows, and the grant to ask under (none when shared
    /// unconditionally). Fetches, streams and calls all start here.
    pub(super) fn receivable(
        &self,
        target: &DatasetRef,
    ) -> Result<(Manifest, Option<crate::access::HeldGrant>), Error> {
        self.not_own(target)?;
        let m = self.manifest_for(target)?;
        let grant = self.grant_for(&m)?;
        Ok((m, grant))
    }

    /// Refuses to receive this member's own dataset.
    pub(super) fn not_own(&self, target: &DatasetRef) -> Result<(), Error> {
        if target.publisher == self.0.member {
            return Err(Error::invalid("DATASET", format!("{target} is this member's own dataset")));
        }
        Ok(())
    }

    pub(super) fn grant_for(&self, m: &Manifest) -> Result<Option<crate::access::HeldGrant>, Error> {
        let grants = self.0.access.grants()?;
        Ok(policy::choose_grant(m, &grants, now())?.cloned())
    }

    /// `deltafed fetch`.
    pub async fn fetch(
        &self,
        target: DatasetRef,
        out: PathBuf,
        progress: Option<mpsc::Sender<api::Progress>>,
    ) -> Result<Fetched, Error> {
        let (started, peer) = (std::time::Instant::now(), self.peer_label(&target.publisher));
        let fetched = self.fetch_to_file(target, out, progress).await;
        // Bad input and unknown datasets asked nothing of the provider: not counted.
        let outcome = match &fetched {
            Ok(_) => Some(crate::metrics::FetchOutcome::Ok),
            Err(Error::Refused(_)) => Some(crate::metrics::FetchOutcome::Refused),
            Err(Error::Invalid { .. } | Error::NotFound(_)) => None,
            Err(_) => Some(crate::metrics::FetchOutcome::Failed),
        };
        if let Some(outcome) = outcome {
            self.0.metrics.fetch_received(&peer, outcome, started.elapsed());
        }
        fetched
    }

    async fn fetch_to_file(
        &self,
        target: DatasetRef,
        out: PathBuf,
        progress: Option<mpsc::Sender<api::Progress>>,
    ) -> Result<Fetched, Error> {
        let provider = target.publisher.clone();
        let (m, grant) = self.receivable(&target)?;
        let grant_id = grant.as_ref().map(|g| g.grant.body().id);
        let fields = grant.as_ref().and_then(|g| g.grant.body().fields.clone());
        if out.is_dir() {
            return Err(Error::invalid(
                "--out",
                format!("{} is a directory; give a file name with --out", out.display()),
            ));
        }
        let partial = Partial::for_output(&out, &self.0.partial_dir, self.0.owner);
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
        // Time spent waiting for the provider, over all attempts.
        let mut waited = Duration::ZERO;
        let peer = self
            .peer_of_member(&provider)
            .ok_or_else(|| Error::not_found(format!("{provider} is not in the roster")))?;
        loop {
            let left = RECONNECT_WAIT.saturating_sub(waited).max(Duration::from_secs(1));
            let t0 = tokio::time::Instant::now();
            let connected = self.0.net.wait_connected(peer, left).await;
            waited += t0.elapsed();
            if !connected {
                return Err(if state.verified > 0 {
                    Error::Unavailable(format!(
                        "{provider} did not come back within {}s; run the same fetch again to resume from {} verified bytes",
                        RECONNECT_WAIT.as_secs(),
                        state.verified
                    ))
                } else {
                    Error::Unavailable(format!("{provider} is not connected; check `deltafed peers` and try again"))
                });
            }
            if state.verified > 0 {
                resumed_from = state.verified;
            }
            match self.fetch_attempt(peer, &m, grant_id, &partial, &mut state, &out, progress.as_ref()).await {
                Ok((request, ticket, receipt, transport)) => {
                    // The record of what was received and the receipt owed to the provider are
                    // one durable write; the receipt goes now or when the provider is back.
                    self.commit_and_deliver(
                        |_| Ok(None),
                        Record::exchange_received(&request, &ticket, &receipt, &out),
                        &provider,
                        Delivery::Receipt(receipt.as_bytes().to_vec()),
                    )
                    .await?;
                    if let Some(g) = grant_id {
                        // The grantee counts too, so `deltafed grants` shows use on both sides.
                        let _ = self.0.access.count_received(&g);
                    }
                    return Ok(Fetched { ticket, out, resumed_from, transport });
                }
                Err(Stop::Fatal(e)) => {
                    let reason = e.to_string();
                    self.record_or_log(Record::failed::<FetchRequest>(
                        "fetch failed:",
                        &provider,
                        m.dataset_ref(),
                        &reason,
                        None,
                    ));
                    return Err(e);
                }
                Err(Stop::Retry(why)) => {
                    tracing::info!(provider = %provider, %why, verified = state.verified, "fetch interrupted; resuming when the provider is back");
                    // Let the broken connection be noticed and redialed before asking again.
                    let t0 = tokio::time::Instant::now();
                    self.0.net.wait_disconnected(peer, NOTICE_BREAK).await;
                    waited += t0.elapsed();
                }
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
    ) -> Result<(Signed<FetchRequest>, Signed<Ticket>, Signed<Receipt>, Transport), Stop> {
        let me = self.0.member.clone();
        let (signed_req, ticket, table) = self.request_ticket(peer, m, grant, &state.fields, state.verified).await?;
        let t = ticket.body().clone();
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
        partial.save(state).map_err(|e| {
            Stop::Fatal(Error::internal(
                "writing the download",
                format!("cannot write {}: {e}", partial.state.display()),
            ))
        })?;
        let writer = exchange::Writer::start(partial, state, SAVE_EVERY).map_err(|e| {
            Stop::Fatal(Error::internal(
                "writing the download",
                format!("cannot write {}: {e}", partial.data.display()),
            ))
        })?;
        let mut sink = Sink::File { writer: &writer, out };
        let received = self.receive_chunks(peer, m, &signed_req, &t, &table, state.verified, &mut sink, progress).await;
        // The writer's account of what is durable is the one the resume state keeps.
        let written = writer.finish().await;
        state.verified = written.verified;
        let verified = state.verified;
        let failed = |e: std::io::Error| {
            // A full disk is the operator's to fix, and the verified prefix is kept for it.
            if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                return Stop::Fatal(Error::Unavailable(format!(
                    "no space left on the device of {} ({e}); the {verified} verified bytes are kept: free space and run the same fetch again to resume",
                    partial.data.display()
                )));
            }
            Stop::Fatal(Error::internal(
                "writing the download",
                format!("cannot write {}: {e}", partial.data.display()),
            ))
        };
        let transport = match received {
            Ok(transport) => transport,
            Err(stop @ Stop::Retry(_)) => return Err(stop),
            Err(stop @ Stop::Fatal(_)) => {
                partial.discard();
                return Err(stop);
            }
        };
        written.result.map_err(failed)?;
        // Every chunk matched its table entry and the table the signed hash: the whole matches.
        if state.verified != t.size {
            partial.discard();
            return Err(Stop::Fatal(Error::refused(format!(
                "the data does not match the ticket's hash {}; nothing was written to {}",
                t.content_hash,
                out.display()
            ))));
        }
        partial.finish(out).map_err(|e| {
            Stop::Fatal(Error::internal(
                "writing the download",
                format!("cannot move the data into {}: {e}", out.display()),
            ))
        })?;
        let receipt = Receipt {
            v: OBJECT_VERSION,
            exchange: t.exchange,
            requester: me,
            provider: m.publisher.clone(),
            content_hash: t.content_hash,
            bytes: t.size,
            time: now(),
        };
        let receipt = Signed::sign(receipt, &self.0.key).map_err(|e| Stop::Fatal(e.into()))?;
        tracing::info!(exchange = %t.exchange, bytes = t.size, out = %out.display(), transport = transport.as_str(), "fetched and verified");
        Ok((signed_req, ticket, receipt, transport))
    }

    /// Signs a fetch request (from `offset`), sends it, and checks the provider's ticket and chunk
    /// table against the request and the manifest: exactly the projection `fields` the grant
    /// imposes, never another.
    async fn request_ticket(
        &self,
        peer: libp2p::PeerId,
        m: &Manifest,
        grant: Option<deltafed_protocol::GrantId>,
        fields: &Option<Vec<String>>,
        offset: u64,
    ) -> Result<(Signed<FetchRequest>, Signed<Ticket>, Vec<Hash>), Stop> {
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
            offset,
        };
        let signed_req = Signed::sign(req, &self.0.key).map_err(|e| Stop::Fatal(e.into()))?;
        let (ticket_bytes, table_bytes) = match self.0.net.fetch(peer, signed_req.as_bytes().to_vec()).await {
            Ok(answer) => answer,
            Err(rpc::Error::Unreachable(e)) => return Err(Stop::Retry(e.to_string())),
            Err(e) => return Err(Stop::Fatal(Error::from_call(&m.publisher, e))),
        };
        let ticket = Signed::<Ticket>::decode_from_member(&ticket_bytes, &self.roster().roster)
            .map_err(|e| Stop::Fatal(Error::refused(format!("bad ticket: {e}"))))?;
        let t = ticket.body();
        let table =
            exchange::parse_table(&table_bytes).ok_or_else(|| Stop::Fatal(Error::refused("malformed chunk table")))?;
        let count = Ticket::chunk_count(t.size, t.chunk_size);
        let consistent = t.request == signed_req.hash()
            && t.provider == m.publisher
            && t.requester == me
            && t.dataset == m.dataset
            && t.version == m.version
            && t.offset == offset
            && t.chunk_size == exchange::CHUNK_SIZE
            && table.len() as u64 == count
            && Ticket::table_hash(&table) == t.chunks
            // The table is the content hash's tree: checked here against the signed hash, it
            // vouches for each chunk as it arrives.
            && table_root(&table) == t.content_hash
            // Exactly the projection the grant imposes, never another.
            && &t.fields == fields
            && (t.fields.is_some() || (t.content_hash == m.content_hash && t.size == m.size))
            // A projection keeps fewer fields of the same records; re-encoding can lengthen a
            // value (a JSON number written out), never beyond this bound.
            && t.size <= max_projection_size(m.size);
        if !consistent {
            return Err(Stop::Fatal(Error::refused(format!(
                "the ticket from {} does not match the request or the manifest; nothing was written",
                m.publisher
            ))));
        }
        Ok((signed_req, ticket, table))
    }

    /// Receives chunks `from/chunk_size..` of the ticket `t`, checks each against the table and
    /// hands it to the sink. Over the data path when the provider takes it (the signed request
    /// binds the connection to the exchange), else asked chunk by chunk over libp2p with a
    /// window in flight. Returns, when every chunk is handed over, the path it came by.
    #[allow(clippy::too_many_arguments)]
    async fn receive_chunks(
        &self,
        peer: libp2p::PeerId,
        m: &deltafed_protocol::manifest::Manifest,
        request: &Signed<FetchRequest>,
        t: &Ticket,
        table: &[Hash],
        from: u64,
        sink: &mut Sink<'_>,
        progress: Option<&mpsc::Sender<api::Progress>>,
    ) -> Result<Transport, Stop> {
        let _listed = self.0.exchanges.receiving(
            t.exchange,
            crate::exchange::Receiving {
                provider: m.publisher.clone(),
                dataset: m.dataset_ref(),
                size: t.size,
                done: from,
                started: std::time::Instant::now(),
            },
        );
        let mut got =
            Received { node: self, m, t, table, sink, progress, index: from / u64::from(t.chunk_size), done: from };
        if got.index >= table.len() as u64 {
            return Ok(Transport::Direct);
        }
        if self.0.config.direct_data {
            match self.open_data_path(peer, &m.publisher, request).await {
                Ok(stream) => return got.direct(stream).await.map(|()| Transport::Direct),
                Err(why) => {
                    tracing::info!(provider = %m.publisher, %why, "the data path is not available; asking chunks over libp2p")
                }
            }
        }
        got.over_libp2p(peer).await.map(|()| Transport::Libp2p)
    }

    /// Connects to the provider's data path and sends the signed request that opened the
    /// exchange.
    async fn open_data_path(
        &self,
        peer: libp2p::PeerId,
        provider: &deltafed_protocol::MemberId,
        request: &Signed<FetchRequest>,
    ) -> Result<datapath::ClientStream, String> {
        let addrs: Vec<libp2p::Multiaddr> = self
            .roster()
            .roster
            .members
            .iter()
            .find(|x| &x.id == provider)
            .map(|x| x.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        let mut stream = datapath::connect(&self.0.data_tls, peer, &addrs).await?;
        datapath::write_request(&mut stream, request.as_bytes())
            .await
            .map_err(|e| format!("sending the request: {e}"))?;
        Ok(stream)
    }

    /// Fetches `target` for a local application (the gateway's content route): the ticket is
    /// checked before this returns, and the chunks come on [`Streaming::chunks`] as each is
    /// verified; the last one only once the whole content matched the ticket's hash. A failure
    /// ends the channel with an error, after which nothing more arrives. The caller spawns
    /// [`Streaming::pump`], which pulls the chunks, and closes the exchange with a signed
    /// receipt when the application has taken them all.
    pub async fn fetch_stream(&self, target: DatasetRef, caller: Caller) -> Result<Streaming, Error> {
        let provider = target.publisher.clone();
        let (m, grant) = self.receivable(&target)?;
        let grant_id = grant.as_ref().map(|g| g.grant.body().id);
        let fields = grant.as_ref().and_then(|g| g.grant.body().fields.clone());
        let peer = self
            .peer_of_member(&provider)
            .ok_or_else(|| Error::not_found(format!("{provider} is not in the roster")))?;
        if !self.0.net.wait_connected(peer, STREAM_CONNECT_WAIT).await {
            return Err(Error::Unavailable(format!("{provider} is not connected; try again later")));
        }
        let (request, ticket, table) = match self.request_ticket(peer, &m, grant_id, &fields, 0).await {
            Ok(answer) => answer,
            Err(Stop::Retry(why)) => return Err(Error::Unavailable(format!("{provider} did not answer: {why}"))),
            Err(Stop::Fatal(e)) => {
                self.record_or_log(Record::failed::<FetchRequest>(
                    "fetch failed:",
                    &provider,
                    m.dataset_ref(),
                    &e.to_string(),
                    None,
                ));
                return Err(e);
            }
        };
        let t = ticket.body().clone();
        if t.size == 0 && t.content_hash != Hash::of(&[]) {
            return Err(Error::refused(format!("the ticket from {provider} announces no bytes but another hash")));
        }
        let format = m.format;
        let (tx, chunks) = mpsc::channel(STREAM_BUFFER);
        let node = self.clone();
        let pump = Box::pin(async move {
            node.pump(peer, m, grant_id, request, ticket, table, tx, caller).await;
        });
        Ok(Streaming {
            dataset: DatasetRef { publisher: t.provider, dataset: t.dataset, version: Some(t.version) },
            format,
            size: t.size,
            content_hash: t.content_hash,
            fields: t.fields,
            chunks,
            pump,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn pump(
        &self,
        peer: libp2p::PeerId,
        m: Manifest,
        grant: Option<deltafed_protocol::GrantId>,
        request: Signed<FetchRequest>,
        ticket: Signed<Ticket>,
        table: Vec<Hash>,
        tx: mpsc::Sender<Result<bytes::Bytes, Error>>,
        caller: Caller,
    ) {
        let t = ticket.body().clone();
        let started = std::time::Instant::now();
        let mut sink = Sink::Stream { tx: &tx };
        let received = match self.receive_chunks(peer, &m, &request, &t, &table, 0, &mut sink, None).await {
            Ok(_) => Ok(()),
            Err(Stop::Fatal(e)) => Err(e),
            Err(Stop::Retry(why)) => Err(Error::Unavailable(format!(
                "the transfer from {} broke off: {why}; nothing unverified was sent",
                m.publisher
            ))),
        };
        let outcome = match &received {
            Ok(()) => crate::metrics::FetchOutcome::Ok,
            Err(Error::Refused(_)) => crate::metrics::FetchOutcome::Refused,
            Err(_) => crate::metrics::FetchOutcome::Failed,
        };
        self.0.metrics.fetch_received(m.publisher.as_str(), outcome, started.elapsed());
        let app = caller.app.as_deref().unwrap_or("unnamed");
        if let Err(e) = received {
            tracing::info!(exchange = %t.exchange, app, error = %e, "content stream stopped");
            self.record_or_log(Record::failed(
                "fetch failed:",
                &m.publisher,
                m.dataset_ref(),
                &e.to_string(),
                Some(&request),
            ));
            // The application sees the response break off (it may already have gone).
            let _ = tx.send(Err(e)).await;
            return;
        }
        let receipt = Receipt {
            v: OBJECT_VERSION,
            exchange: t.exchange,
            requester: self.0.member.clone(),
            provider: m.publisher.clone(),
            content_hash: t.content_hash,
            bytes: t.size,
            time: now(),
        };
        let receipt = match Signed::sign(receipt, &self.0.key) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a receipt");
                return;
            }
        };
        let to = std::path::PathBuf::from(format!("the gateway (application {app})"));
        if let Err(e) = self
            .commit_and_deliver(
                |_| Ok(None),
                Record::exchange_received(&request, &ticket, &receipt, &to),
                &m.publisher,
                Delivery::Receipt(receipt.as_bytes().to_vec()),
            )
            .await
        {
            tracing::error!(exchange = %t.exchange, error = %e, "cannot record a streamed fetch");
        }
        if let Some(g) = grant {
            let _ = self.0.access.count_received(&g);
        }
        tracing::info!(exchange = %t.exchange, bytes = t.size, app, "streamed and verified");
    }
}

/// How long a stream waits for the provider to be connected before answering unavailable.
const STREAM_CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Verified chunks waiting for the application to take them.
const STREAM_BUFFER: usize = 2;
/// How long a chunk waits for the application to take it before the stream is given up.
const STREAM_STALL: Duration = Duration::from_secs(60);

/// A dataset being fetched for a local application; see [`Node::fetch_stream`].
pub struct Streaming {
    /// With the version being sent.
    pub dataset: DatasetRef,
    pub format: Format,
    /// Bytes that will be sent (the granted projection's length).
    pub size: u64,
    /// The hash of exactly those bytes, as the provider's ticket signs it.
    pub content_hash: Hash,
    pub fields: Option<Vec<String>>,
    /// Verified chunks in order; an `Err` ends the stream, before the data is complete.
    pub chunks: mpsc::Receiver<Result<bytes::Bytes, Error>>,
    /// Pulls the chunks; the caller spawns it.
    pub pump: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Where verified chunks go.
enum Sink<'a> {
    /// The partial file of a fetch; its writer thread appends and syncs.
    File { writer: &'a exchange::Writer, out: &'a std::path::Path },
    /// A local application's response. Each chunk was checked against the table, and the table
    /// against the signed hash, so the last chunk leaves only if the whole matches.
    Stream { tx: &'a mpsc::Sender<Result<bytes::Bytes, Error>> },
}

impl Sink<'_> {
    /// How a refusal ends, saying what became of the data.
    fn nothing_unverified(&self) -> String {
        match self {
            Sink::File { out, .. } => format!("nothing was written to {}", out.display()),
            Sink::Stream { .. } => "nothing unverified was sent".into(),
        }
    }

    /// A buffer for the next chunk: one the file writer has finished with, when it has one.
    fn buffer(&self) -> ChunkBuf {
        match self {
            Sink::File { writer, .. } => writer.recycled(),
            Sink::Stream { .. } => exchange::chunk_buf(),
        }
    }

    /// Hands over one verified chunk. `Ok(false)`: the file writer
    /// stopped (its error is reported by `finish`).
    async fn put(&mut self, chunk: ChunkBuf) -> Result<bool, Stop> {
        match self {
            Sink::File { writer, .. } => Ok(writer.write(chunk).await),
            Sink::Stream { tx } => {
                match tokio::time::timeout(STREAM_STALL, tx.send(Ok(bytes::Bytes::from_owner(chunk)))).await {
                    Ok(Ok(())) => Ok(true),
                    Ok(Err(_)) => Err(Stop::Fatal(Error::Unavailable("the application closed the connection".into()))),
                    Err(_) => Err(Stop::Fatal(Error::Unavailable(format!(
                        "the application took no data for {}s",
                        STREAM_STALL.as_secs()
                    )))),
                }
            }
        }
    }
}

/// Which path a fetch's chunks came by (`fetch --json`: `transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The data path: one TLS stream the provider pushes chunks down.
    Direct,
    /// Chunks asked one by one over libp2p request-response.
    Libp2p,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Direct => "direct",
            Transport::Libp2p => "libp2p",
        }
    }
}

/// A transfer in progress on the requester's side: the next chunk expected and what is done.
struct Received<'a, 's> {
    node: &'a Node,
    m: &'a Manifest,
    t: &'a Ticket,
    table: &'a [Hash],
    sink: &'a mut Sink<'s>,
    progress: Option<&'a mpsc::Sender<api::Progress>>,
    /// The next chunk expected.
    index: u64,
    /// Bytes verified so far.
    done: u64,
}

impl Received<'_, '_> {
    fn count(&self) -> u64 {
        self.table.len() as u64
    }

    /// The length the next chunk expected has.
    fn length(&self) -> u64 {
        self.length_of(self.index)
    }

    /// The length chunk `index` has (the last may be shorter).
    fn length_of(&self, index: u64) -> u64 {
        self.t.size.saturating_sub(index * u64::from(self.t.chunk_size)).min(u64::from(self.t.chunk_size))
    }

    fn mismatch(&self) -> Stop {
        self.mismatch_at(self.index)
    }

    fn mismatch_at(&self, index: u64) -> Stop {
        Stop::Fatal(Error::refused(format!(
            "chunk {index} of exchange {} does not match its hash (corrupted in transit or at the provider); {}",
            self.t.exchange,
            self.sink.nothing_unverified()
        )))
    }

    fn stopped(&self, reason: &str) -> Stop {
        // The provider forgot the exchange (idle, restarted, or it closed our oldest): what is
        // verified stays, and a new ticket resumes from there.
        if reason.starts_with(UNKNOWN_EXCHANGE) {
            return Stop::Retry(reason.to_string());
        }
        Stop::Fatal(Error::refused(format!(
            "{} stopped the transfer: {reason}; {}",
            self.m.publisher,
            self.sink.nothing_unverified()
        )))
    }

    /// Checks the next chunk against its table entry and hands it over. `Ok(false)`: the file
    /// writer stopped on a disk error (`finish` reports it).
    async fn accept(&mut self, chunk: Vec<u8>) -> Result<bool, Stop> {
        let entry = chunk_entry(&chunk, self.index, self.count(), self.t.chunk_size);
        // Chunks over libp2p (the fallback path) arrive in libp2p's buffers: copied into one
        // the disk can take directly.
        let mut buf = self.sink.buffer();
        buf.clear();
        buf.extend_from_slice(&chunk);
        self.accept_hashed(buf, entry).await
    }

    /// [`Received::accept`] for a chunk whose table entry `entry` is computed already (`None`:
    /// the bytes cannot be this chunk).
    async fn accept_hashed(&mut self, chunk: ChunkBuf, entry: Option<Hash>) -> Result<bool, Stop> {
        let expected = self.table.get(usize::try_from(self.index).unwrap_or(usize::MAX)).copied();
        if chunk.len() as u64 != self.length() || entry.is_none() || entry != expected {
            return Err(self.mismatch());
        }
        self.done += chunk.len() as u64;
        self.node.0.exchanges.received(&self.t.exchange, self.done);
        self.node.0.metrics.chunk_received(self.m.publisher.as_str(), chunk.len());
        if !self.sink.put(chunk).await? {
            return Ok(false);
        }
        self.index += 1;
        if let Some(p) = self.progress {
            let _ = p.try_send(api::Progress { done: self.done, total: self.t.size });
        }
        Ok(true)
    }

    /// Reads the provider's chunk frames off the data path until the last chunk. Each chunk is
    /// hashed on a blocking thread while the next one is read and decrypted, so the two overlap.
    async fn direct(&mut self, mut stream: datapath::ClientStream) -> Result<(), Stop> {
        use tokio::io::AsyncWriteExt;
        let mut next = self.index;
        let mut hashing: Option<tokio::task::JoinHandle<(ChunkBuf, Option<Hash>)>> = None;
        while self.index < self.count() {
            let read = if next < self.count() { Some(self.read_chunk(&mut stream, next).await?) } else { None };
            if let Some(h) = hashing.take() {
                let (chunk, entry) =
                    h.await.map_err(|e| Stop::Fatal(Error::internal("hashing a chunk", e.to_string())))?;
                if !self.accept_hashed(chunk, entry).await? {
                    return Ok(());
                }
            }
            if let Some(chunk) = read {
                let (index, count, size) = (next, self.count(), self.t.chunk_size);
                hashing = Some(tokio::task::spawn_blocking(move || {
                    let entry = chunk_entry(&chunk, index, count, size);
                    (chunk, entry)
                }));
                next += 1;
            }
        }
        let _ = stream.shutdown().await;
        Ok(())
    }

    /// Reads the frame of chunk `index` (of the length the ticket gives it), or the provider's
    /// refusal.
    async fn read_chunk(&self, stream: &mut datapath::ClientStream, index: u64) -> Result<ChunkBuf, Stop> {
        use tokio::io::AsyncReadExt;
        let broke = |e: std::io::Error| Stop::Retry(format!("the data path broke off: {e}"));
        let silent = || Stop::Retry(format!("the provider sent nothing for {}s", datapath::STALL.as_secs()));
        let (tag, len) = tokio::time::timeout(datapath::STALL, datapath::read_header(stream))
            .await
            .map_err(|_| silent())?
            .map_err(broke)?;
        match tag {
            datapath::TAG_CHUNK if u64::from(len) == self.length_of(index) => {}
            datapath::TAG_REFUSED if len <= datapath::MAX_REASON => {
                let mut reason = vec![0u8; len as usize];
                stream.read_exact(&mut reason).await.map_err(broke)?;
                return Err(self.stopped(&String::from_utf8_lossy(&reason)));
            }
            // A frame that is not the next chunk (or is not a frame): nothing of it is read.
            _ => return Err(self.mismatch_at(index)),
        }
        let mut chunk = self.sink.buffer();
        chunk.resize(len as usize, 0);
        tokio::time::timeout(datapath::STALL, stream.read_exact(&mut chunk))
            .await
            .map_err(|_| silent())?
            .map_err(broke)?;
        Ok(chunk)
    }

    /// Asks for the chunks one by one over libp2p, a window in flight.
    async fn over_libp2p(&mut self, peer: libp2p::PeerId) -> Result<(), Stop> {
        let net = self.node.0.net.clone();
        let exchange = self.t.exchange;
        let mut next = self.index;
        let mut inflight = FuturesOrdered::new();
        loop {
            while inflight.len() < WINDOW && next < self.count() {
                let (net, index) = (net.clone(), next);
                inflight.push_back(async move { net.chunk(peer, exchange, index).await });
                next += 1;
            }
            let Some(res) = inflight.next().await else { return Ok(()) };
            let chunk = match res {
                Ok(c) => c,
                Err(rpc::Error::Unreachable(e)) => return Err(Stop::Retry(e.to_string())),
                Err(rpc::Error::Refused(reason)) => return Err(self.stopped(&reason)),
                Err(e) => return Err(Stop::Fatal(Error::from_call(&self.m.publisher, e))),
            };
            if !self.accept(chunk).await? {
                return Ok(());
            }
        }
    }
}
