//! A running node: start-up checks, the tasks it runs, and the dispatch of what the network
//! says to the handler of each concept. The operations themselves live one concept per file:
//!
//! | file | concept |
//! |---|---|
//! | `inbound.rs` | routing of RPC requests from members |
//! | `sync.rs` | gossip and catch-up sync of the catalog; roster replacement |
//! | `publish.rs` | publish, withdraw, catalog reads |
//! | `grants.rs` | access requests, decisions, grants, revocations (both sides) |
//! | `deliveries.rs` | handing signed objects to members, the outbox, receiving them |
//! | `serve.rs` | fetch, provider side: ticket, chunks, receipts |
//! | `fetch.rs` | fetch, requester side: verified, resumable download |
//! | `query.rs` | single record queries (the first release's protocol), provider side |
//! | `calls.rs` | sharing calls from applications: the batched, signed call path |
//! | `audit.rs` | checkpoints, provenance list, verify, export |
//! | `apps.rs` | local applications of the gateway and their tokens |
//!
//! Who may receive what is decided in [`crate::policy`]; operations only look values up and act
//! on its answer. Operations return domain values or a typed [`Error`]; the admin API turns
//! them into its views at the edge (`crate::admin::dispatch`).
//!
//! Start-up refuses, each with a message that says what to do: a key file readable by others,
//! a missing or invalid roster, a roster that does not list this member (or lists another key
//! for it), a data dir locked by another node, and `SSLKEYLOGFILE` in the environment (it would
//! make TLS write its session secrets to disk).

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::{MemberId, SecretKey, Timestamp};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod apps;
mod audit;
pub use audit::export_to;
mod calls;
pub use calls::{CallCounts, Caller, CallsAnswered, KeyAnswer};
mod deliveries;
mod error;
mod fetch;
mod grants;
mod inbound;
mod observe;
mod publish;
mod query;
mod serve;
mod sources;
mod sync;
mod users;

pub use deliveries::Sent;
pub use error::Error;
pub use fetch::{Fetched, Streaming};
pub use sources::Schedule;

use crate::access::Access;
use crate::admin;
use crate::blobs::Blobs;
use crate::catalog::{Catalog, Ingested};
use crate::durable::Durable;
use crate::exchange::Exchanges;
use crate::keyindex::KeyIndex;
use crate::net::{self, Event, MemberAddrs, Members, NetHandle};
use crate::outbox::Outbox;
use crate::provenance::{self, Provenance};
use crate::store::Store;
use crate::{Config, DataDir, gateway, identity, keyfile, rosterfile};

/// Most network events handled at once; beyond it the dispatcher waits (and the network's own
/// bounded queue starts dropping gossip, which sync repairs).
const MAX_CONCURRENT_HANDLERS: usize = 64;
/// How long shutdown waits for running tasks before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("SSLKEYLOGFILE is set: TLS session secrets would be written to disk; unset it before starting the node")]
    KeyLog,
    #[error("{config} does not name this node's member; set `member = \"...\"` in it")]
    NoMember { config: PathBuf },
    #[error(transparent)]
    Key(#[from] keyfile::Error),
    #[error("data dir {dir} is in use by another deltafed node{pid}; stop it first, or use another --data-dir")]
    Locked { dir: PathBuf, pid: String },
    #[error("cannot lock data dir {dir}: {source}")]
    Lock { dir: PathBuf, source: std::io::Error },
    #[error("no roster at {path}; install one with `deltafed roster install FILE --data-dir {dir}`")]
    NoRoster { path: PathBuf, dir: PathBuf },
    #[error(transparent)]
    Roster(#[from] rosterfile::Error),
    #[error(
        "member {member} is not in the roster at {path}; this node cannot join the federation until a roster that lists it is installed"
    )]
    NotInRoster { member: MemberId, path: PathBuf },
    #[error(
        "the roster lists a different key for {member} than {key_file}; this data dir belongs to another member or the key was replaced"
    )]
    KeyMismatch { member: MemberId, key_file: PathBuf },
    #[error("listen address {addr:?} is not a multiaddr: {detail} (check `listen` in deltafed.toml)")]
    BadListen { addr: String, detail: String },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Blobs(#[from] crate::blobs::Error),
    #[error(transparent)]
    Provenance(#[from] provenance::Error),
    #[error(transparent)]
    Net(#[from] net::Error),
    #[error("cannot open the admin socket {path}: {source}")]
    Admin { path: PathBuf, source: std::io::Error },
    #[error(
        "data dir {dir} can be written by group or others (mode {mode:o}): its key, roster and database must be the node's alone; run `chmod go-w {dir}`"
    )]
    UnsafeDir { dir: PathBuf, mode: u32 },
    #[error("cannot read data dir {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Gateway(#[from] gateway::Error),
    #[error("cannot load the applications: {0}")]
    Apps(#[from] crate::apps::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
}

/// A handle on the running node; cheap to clone.
#[derive(Clone)]
pub struct Node(Arc<Inner>);

struct Inner {
    config: Config,
    key: SecretKey,
    member: MemberId,
    peer_id: PeerId,
    roster: RwLock<Arc<SignedRoster>>,
    roster_path: PathBuf,
    /// Serialises roster changes (from gossip, sync and the admin API).
    roster_change: tokio::sync::Mutex<()>,
    store: Store,
    catalog: Catalog,
    blobs: Arc<Blobs>,
    net: NetHandle,
    access: Access,
    outbox: Outbox,
    exchanges: Exchanges,
    provenance: Arc<Provenance>,
    keyindex: Arc<KeyIndex>,
    /// Group commit: what the node reports done is durable first.
    durable: Durable,
    /// Members' keys, decompressed once for the hot verification paths.
    keys: deltafed_protocol::crypto::KeyCache,
    /// Turns call keys into the keyed hashes the log keeps (see `provenance::audit_key`).
    audit_key: [u8; 32],
    /// Requester side of sharing calls: one batcher per provider.
    batchers: calls::Batchers,
    /// Where unfinished fetches keep their state (`DIR/partial`).
    partial_dir: PathBuf,
    /// The uid owning the data dir: files the node wrote carry it.
    owner: u32,
    /// Local applications of the gateway.
    apps: crate::apps::Apps,
    /// Where the gateway actually listens (`status`).
    gateway_url: String,
    /// Counters and histograms of what happens, for `/metrics` (`observe.rs`).
    metrics: crate::metrics::Metrics,
    /// Where the metrics listener actually listens (`status`).
    metrics_url: String,
    /// Connection pools of the sources live datasets read.
    live: crate::sources::live::Live,
    /// Wakes the scheduler of `publish --every` when a schedule changes.
    schedules_changed: tokio::sync::Notify,
    /// The dashboard's logins (in memory: a restart logs everyone out).
    sessions: crate::dashboard::Sessions,
    /// Where the dashboard actually listens (`status`).
    dashboard_url: String,
    /// The data path's TLS configurations (member certificates, AES-GCM).
    data_tls: Arc<crate::datapath::tls::Configs>,
}

/// Data-path connections accepted and waiting for their TLS handshake to start.
const DATA_CONN_QUEUE: usize = 64;

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// 16 random bytes for ids and nonces.
fn random16() -> Result<[u8; 16], Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| Error::internal("drawing randomness", e.to_string()))?;
    Ok(b)
}

/// Holds the data dir's lock file for as long as it lives.
struct DirLock {
    _file: File,
}

fn lock(dir: &DataDir) -> Result<DirLock, StartError> {
    let path = dir.lock();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| StartError::Lock { dir: dir.root().to_path_buf(), source })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).map(|p| format!(" (pid {})", p.trim())).unwrap_or_default();
            return Err(StartError::Locked { dir: dir.root().to_path_buf(), pid });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(StartError::Lock { dir: dir.root().to_path_buf(), source });
        }
    }
    let _ = file.set_len(0).and_then(|()| write!(file, "{}", std::process::id()));
    Ok(DirLock { _file: file })
}

fn dir_owner(dir: &DataDir) -> Result<u32, StartError> {
    use std::os::unix::fs::MetadataExt;
    let root = dir.root().to_path_buf();
    Ok(std::fs::metadata(&root).map_err(|source| StartError::Dir { dir: root, source })?.uid())
}

/// Refuses a data dir others can write to: they could swap the roster or plant files.
fn check_dir_mode(dir: &DataDir) -> Result<(), StartError> {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.root().to_path_buf();
    let mode =
        std::fs::metadata(&root).map_err(|source| StartError::Dir { dir: root.clone(), source })?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(StartError::UnsafeDir { dir: root, mode: mode & 0o7777 });
    }
    Ok(())
}

/// The members to connect to: everyone in the roster but us, with their parsed addresses.
fn members_of(roster: &SignedRoster, me: &MemberId) -> Members {
    let mut out = Members::new();
    for m in &roster.roster.members {
        if &m.id == me {
            continue;
        }
        let Some(peer) = identity::peer_id(&m.key) else {
            tracing::warn!(member = %m.id, "roster key has no PeerId; skipped");
            continue;
        };
        let addrs = m
            .addrs
            .iter()
            .filter_map(|a| match a.parse::<Multiaddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(member = %m.id, addr = %a, error = %e, "unusable address in roster");
                    None
                }
            })
            .collect();
        out.insert(peer, MemberAddrs { member: m.id.clone(), addrs });
    }
    out
}

/// Runs a node on `dir` until `stop` completes, then shuts down cleanly.
pub async fn run(dir: DataDir, config: Config, stop: impl Future<Output = ()>) -> Result<(), StartError> {
    if std::env::var_os("SSLKEYLOGFILE").is_some() {
        return Err(StartError::KeyLog);
    }
    let member = config.member.clone().ok_or_else(|| StartError::NoMember { config: dir.config() })?;
    check_dir_mode(&dir)?;
    let key = keyfile::read(&dir.key())?;
    let _lock = lock(&dir)?;
    let roster_path = dir.resolve(&config.roster);
    if !roster_path.exists() {
        return Err(StartError::NoRoster { path: roster_path, dir: dir.root().to_path_buf() });
    }
    let roster = rosterfile::read_valid(&roster_path)?;
    match roster.roster.key_of(&member) {
        None => {
            return Err(StartError::NotInRoster { member, path: roster_path });
        }
        Some(k) if *k != key.public() => {
            return Err(StartError::KeyMismatch { member, key_file: dir.key() });
        }
        Some(_) => {}
    }
    let listen = config
        .listen
        .iter()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| StartError::BadListen { addr: a.clone(), detail: e.to_string() }))
        .collect::<Result<Vec<_>, _>>()?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    // A start that fails below stops what was spawned so far (the metrics listener).
    let _stop_on_error = shutdown.clone().drop_guard();
    // Before the database is opened: a gateway or metrics listener that may not (or cannot)
    // listen stops the start. Health is answered from now on ("not ready" until all runs).
    let gateway = gateway::bind(&config.gateway, &dir).await?;
    let dashboard = crate::dashboard::bind(&config.dashboard, &dir).await?;
    let health = crate::metrics::Health::starting();
    let metrics = crate::metrics::bind(&config.metrics, &dir).await?;
    let metrics_url = metrics.url().to_string();
    tasks.spawn(crate::metrics::serve(metrics, health.clone(), tasks.clone(), shutdown.clone()));
    let store = Store::open_with(&dir.db(), &config.storage)?;
    let apps = crate::apps::Apps::open(store.clone())?;
    let blobs = Arc::new(Blobs::open(&dir.blobs())?);
    let provenance = Arc::new(
        Provenance::open(store.clone(), member.clone(), Some(key.clone()))?
            .with_archive_dir(dir.resolve(&config.provenance.archive_dir)),
    );
    let keypair = identity::keypair(&key);
    let peer_id = keypair.public().to_peer_id();
    let data_tls = Arc::new(
        crate::datapath::tls::Configs::new(&keypair)
            .map_err(|e| net::Error::Setup(format!("the data path's TLS configuration: {e}")))?,
    );
    let (data_tx, data_conns) = mpsc::channel(DATA_CONN_QUEUE);
    let (net, events, event_loop) = net::new(
        net::Settings {
            key: keypair,
            federation: roster.roster.federation.to_string(),
            listen,
            members: members_of(&roster, &member),
            max_redial_interval: config.max_redial_interval,
            data: config.direct_data.then_some(data_tx),
        },
        shutdown.clone(),
    )?;
    let sock = dir.admin_socket();
    let listener = admin::bind(&sock).map_err(|source| StartError::Admin { path: sock.clone(), source })?;
    tracing::info!(
        member = %member, peer_id = %peer_id, federation = %roster.roster.federation,
        roster_version = roster.roster.version, "node started"
    );
    let limits = crate::catalog::Limits { datasets: config.member_datasets, versions: config.dataset_versions };
    let audit_key = provenance::audit_key(&key);
    let (store_for_live, sources_config) = (store.clone(), config.sources);
    let node = Node(Arc::new(Inner {
        config,
        key,
        member,
        peer_id,
        roster: RwLock::new(Arc::new(roster)),
        roster_path,
        roster_change: tokio::sync::Mutex::new(()),
        catalog: Catalog::with_limits(store.clone(), limits),
        access: Access::new(store.clone()),
        outbox: Outbox::new(store.clone()),
        exchanges: Exchanges::default(),
        keyindex: Arc::new(KeyIndex::new(store.clone(), blobs.clone())),
        provenance,
        durable: Durable::new(store.clone()),
        keys: Default::default(),
        audit_key,
        batchers: Default::default(),
        store,
        blobs,
        net,
        partial_dir: dir.partial(),
        owner: dir_owner(&dir)?,
        apps,
        gateway_url: gateway.url().to_string(),
        metrics: crate::metrics::Metrics::new(),
        metrics_url,
        live: crate::sources::live::Live::new(store_for_live, sources_config),
        schedules_changed: tokio::sync::Notify::new(),
        sessions: crate::dashboard::Sessions::default(),
        dashboard_url: dashboard.url().to_string(),
        data_tls,
    }));
    node.record_roster_if_new();
    tasks.spawn(event_loop.run());
    tasks.spawn(dispatch(node.clone(), events, tasks.clone(), shutdown.clone()));
    tasks.spawn(admin::serve(listener, node.clone(), tasks.clone(), shutdown.clone()));
    tasks.spawn(audit::checkpoints(node.clone(), shutdown.clone()));
    tasks.spawn(audit::archiving(node.clone(), shutdown.clone()));
    tasks.spawn(gateway::serve(gateway, node.clone(), tasks.clone(), shutdown.clone()));
    tasks.spawn(crate::dashboard::serve(dashboard, node.clone(), tasks.clone(), shutdown.clone()));
    tasks.spawn(apps::flush_usage(node.clone(), shutdown.clone()));
    tasks.spawn(sources::schedules(node.clone(), shutdown.clone()));
    tasks.spawn(serve::data_path(node.clone(), data_conns, tasks.clone(), shutdown.clone()));
    health.running(node.clone());

    stop.await;
    health.stopping();
    tracing::info!("shutting down");
    // A last checkpoint, so peers witness the log as it was at shutdown.
    node.checkpoint_and_send().await;
    node.0.batchers.close();
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("some tasks did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    let _ = std::fs::remove_file(&sock);
    node.flush_app_usage();
    node.0.store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

async fn dispatch(node: Node, mut events: mpsc::Receiver<Event>, tasks: TaskTracker, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
    // Each member first waits for one of its own permits, then for its rate, and only then for
    // a shared permit: a member with many requests in flight (or pacing sleeps, or over its
    // rate) queues behind itself, never takes the whole pool. What waits is bounded by
    // libp2p's streams per connection.
    let per_member = node.0.config.member_concurrency.max(1);
    let rates = Arc::new(inbound::Rates::new(&node.0.config));
    let mut members: std::collections::HashMap<PeerId, Arc<Semaphore>> = std::collections::HashMap::new();
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => break,
            ev = events.recv() => match ev { Some(ev) => ev, None => break },
        };
        let peer = match &ev {
            Event::Gossip { source, .. } => *source,
            Event::Request { peer, .. } | Event::MemberConnected { peer } => *peer,
        };
        // Bounded by the members of the roster: only they get past the allow list.
        if members.len() > 4 * MAX_CONCURRENT_HANDLERS {
            members.retain(|_, s| s.available_permits() < per_member);
            rates.forget_idle();
        }
        let own = members.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(per_member))).clone();
        let (node, shared, rates) = (node.clone(), limit.clone(), rates.clone());
        tasks.spawn(async move {
            let from = node.member_label(&peer);
            let waiting = node.0.metrics.in_progress(&from, "waiting");
            let Ok(_own) = own.acquire_owned().await else { return };
            let ev = inbound::Inbound::decode(ev);
            if let Some(rate) = rates.admit(&peer, &ev).await {
                node.paced(&from, rate);
            }
            let Ok(_shared) = shared.acquire_owned().await else { return };
            drop(waiting);
            let _handling = node.0.metrics.in_progress(&from, "handling");
            node.on_event(ev).await;
        });
    }
}

impl Node {
    /// The member this node is.
    pub fn member(&self) -> &MemberId {
        &self.0.member
    }

    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn net(&self) -> &NetHandle {
        &self.0.net
    }

    /// RocksDB's memory now, against the `[storage]` bounds.
    pub fn storage_memory(&self) -> Option<crate::store::MemoryUsage> {
        self.0.store.memory_usage()
    }

    /// The gateway's address as bound, `http://…` or `https://…`.
    pub fn gateway_url(&self) -> &str {
        &self.0.gateway_url
    }

    pub fn roster(&self) -> Arc<SignedRoster> {
        self.0.roster.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Routes one network event to the concept that handles it.
    async fn on_event(&self, ev: inbound::Inbound) {
        match ev {
            inbound::Inbound::Gossip { id, source, data } => {
                let ingested = self.ingest(&data).await;
                self.0.metrics.gossip(&ingested);
                let acceptance = match ingested {
                    Ingested::Accepted => MessageAcceptance::Accept,
                    Ingested::Duplicate | Ingested::Stale => MessageAcceptance::Ignore,
                    Ingested::Rejected(reason) => {
                        tracing::warn!(peer = %source, %reason, "rejected gossip message");
                        MessageAcceptance::Reject
                    }
                };
                let _ = self.0.net.validated(id, source, acceptance).await;
            }
            inbound::Inbound::Request { peer, req, channel } => {
                let response = self.answer(peer, req).await;
                match response.encode() {
                    Ok(bytes) => {
                        let _ = self.0.net.respond(channel, bytes).await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a response"),
                }
            }
            inbound::Inbound::MemberConnected { peer } => {
                self.catch_up(peer).await;
                self.flush_outbox(peer).await;
                self.send_checkpoint_to(peer).await;
            }
        }
    }

    /// The member a connected peer is, by the roster in force.
    fn member_of_peer(&self, peer: &PeerId) -> Option<MemberId> {
        let key = identity::public_key_of(peer)?;
        self.roster().roster.member_by_key(&key).map(|m| m.id.clone())
    }

    fn peer_of_member(&self, member: &MemberId) -> Option<PeerId> {
        self.roster().roster.key_of(member).and_then(identity::peer_id)
    }

    /// Appends to the provenance log (not yet synced: see [`crate::durable`]). An operation
    /// whose record cannot be written is refused, not done silently.
    fn record(&self, rec: provenance::Record) -> Result<(), Error> {
        self.0.provenance.append(rec)?;
        Ok(())
    }

    /// Appends a record of something that already failed or was refused; a failure to write it
    /// is logged for the operator (the disk), since the answer is already decided.
    fn record_or_log(&self, rec: provenance::Record) {
        if let Err(e) = self.0.provenance.append(rec) {
            tracing::error!(error = %e, "cannot append to the provenance log");
        }
    }
}
