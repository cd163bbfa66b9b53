//! A running node: start-up checks, the tasks it runs, the handlers for what the network says,
//! and the operations the admin API offers.
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

use deltafed_protocol::manifest::{Format, Manifest, Withdrawal};
use deltafed_protocol::provenance::{EntryKind, Evidence};
use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::wire::{self, Gossip};
use deltafed_protocol::{DatasetId, DatasetRef, MemberId, OBJECT_VERSION, SecretKey, Signed, Timestamp};
use libp2p::gossipsub::MessageAcceptance;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod access_ops;
mod audit;
pub use audit::export_to;
mod fetch;
mod query;

use crate::access::Access;
use crate::admin::{self, api};
use crate::blobs::Blobs;
use crate::catalog::{Catalog, Ingested, Latest};
use crate::exchange::Exchanges;
use crate::keyindex::KeyIndex;
use crate::net::{self, Event, MemberAddrs, Members, NetHandle};
use crate::outbox::Outbox;
use crate::provenance::{self, Provenance};
use crate::store::Store;
use crate::{Config, DataDir, identity, keyfile, rosterfile};

/// Most network events handled at once; beyond it the dispatcher waits (and the network's own
/// bounded queue starts dropping gossip, which sync repairs).
const MAX_CONCURRENT_HANDLERS: usize = 64;
/// Most witnessed checkpoints sent to a verifier at once.
const MAX_WITNESSES: usize = 512;
/// How long shutdown waits for running tasks before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
}

fn now() -> Timestamp {
    Timestamp::from_system(SystemTime::now())
}

/// One signed object as provenance evidence.
fn ev(kind: &str, bytes: &[u8]) -> Evidence {
    Evidence { kind: kind.into(), bytes: bytes.to_vec() }
}

/// How provenance notes name a projection.
fn fields_note(fields: &Option<Vec<String>>) -> String {
    match fields {
        Some(f) => format!("fields {}", f.join(",")),
        None => "all fields".into(),
    }
}

/// How provenance notes name the grant an exchange ran under.
fn grant_note(grant: Option<deltafed_protocol::GrantId>) -> String {
    grant.map(|g| format!("grant {g}")).unwrap_or_else(|| "no grant (shared unconditionally)".into())
}

/// 16 random bytes for ids and nonces.
fn random16() -> Result<[u8; 16], String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(b)
}

/// Holds the data dir's lock file for as long as it lives.
struct DirLock {
    _file: File,
}

fn lock(dir: &DataDir) -> Result<DirLock, Error> {
    let path = dir.lock();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::Lock { dir: dir.root().to_path_buf(), source })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).map(|p| format!(" (pid {})", p.trim())).unwrap_or_default();
            return Err(Error::Locked { dir: dir.root().to_path_buf(), pid });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(Error::Lock { dir: dir.root().to_path_buf(), source });
        }
    }
    let _ = file.set_len(0).and_then(|()| write!(file, "{}", std::process::id()));
    Ok(DirLock { _file: file })
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
pub async fn run(dir: DataDir, config: Config, stop: impl Future<Output = ()>) -> Result<(), Error> {
    if std::env::var_os("SSLKEYLOGFILE").is_some() {
        return Err(Error::KeyLog);
    }
    let member = config.member.clone().ok_or_else(|| Error::NoMember { config: dir.config() })?;
    let key = keyfile::read(&dir.key())?;
    let _lock = lock(&dir)?;
    let roster_path = dir.resolve(&config.roster);
    if !roster_path.exists() {
        return Err(Error::NoRoster { path: roster_path, dir: dir.root().to_path_buf() });
    }
    let roster = rosterfile::read_valid(&roster_path)?;
    match roster.roster.key_of(&member) {
        None => {
            return Err(Error::NotInRoster { member, path: roster_path });
        }
        Some(k) if *k != key.public() => {
            return Err(Error::KeyMismatch { member, key_file: dir.key() });
        }
        Some(_) => {}
    }
    let listen = config
        .listen
        .iter()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| Error::BadListen { addr: a.clone(), detail: e.to_string() }))
        .collect::<Result<Vec<_>, _>>()?;
    let store = Store::open(&dir.db())?;
    let blobs = Arc::new(Blobs::open(&dir.blobs())?);
    let provenance = Arc::new(Provenance::open(store.clone(), member.clone(), Some(key.clone()))?);
    let keypair = identity::keypair(&key);
    let peer_id = keypair.public().to_peer_id();
    let shutdown = CancellationToken::new();
    let (net, events, event_loop) = net::new(
        net::Settings {
            key: keypair,
            federation: roster.roster.federation.to_string(),
            listen,
            members: members_of(&roster, &member),
            max_redial_interval: config.max_redial_interval,
        },
        shutdown.clone(),
    )?;
    let sock = dir.admin_socket();
    let listener = admin::bind(&sock).map_err(|source| Error::Admin { path: sock.clone(), source })?;
    tracing::info!(
        member = %member, peer_id = %peer_id, federation = %roster.roster.federation,
        roster_version = roster.roster.version, "node started"
    );
    let node = Node(Arc::new(Inner {
        config,
        key,
        member,
        peer_id,
        roster: RwLock::new(Arc::new(roster)),
        roster_path,
        roster_change: tokio::sync::Mutex::new(()),
        catalog: Catalog::new(store.clone()),
        access: Access::new(store.clone()),
        outbox: Outbox::new(store.clone()),
        exchanges: Exchanges::default(),
        keyindex: Arc::new(KeyIndex::new(store.clone(), blobs.clone())),
        provenance,
        store,
        blobs,
        net,
    }));
    node.record_roster_if_new();
    let tasks = TaskTracker::new();
    tasks.spawn(event_loop.run());
    tasks.spawn(dispatch(node.clone(), events, tasks.clone(), shutdown.clone()));
    tasks.spawn(admin::serve(listener, node.clone(), tasks.clone(), shutdown.clone()));
    tasks.spawn(audit::checkpoints(node.clone(), shutdown.clone()));

    stop.await;
    tracing::info!("shutting down");
    // A last checkpoint, so peers witness the log as it was at shutdown.
    node.checkpoint_and_send().await;
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("some tasks did not finish within {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    let _ = std::fs::remove_file(&sock);
    node.0.store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

async fn dispatch(node: Node, mut events: mpsc::Receiver<Event>, tasks: TaskTracker, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => break,
            ev = events.recv() => match ev { Some(ev) => ev, None => break },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let node = node.clone();
        tasks.spawn(async move {
            node.on_event(ev).await;
            drop(permit);
        });
    }
}

impl Node {
    fn roster(&self) -> Arc<SignedRoster> {
        self.0.roster.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn on_event(&self, ev: Event) {
        match ev {
            Event::Gossip { id, source, data } => {
                let acceptance = match self.ingest(&data).await {
                    Ingested::Accepted => MessageAcceptance::Accept,
                    Ingested::Duplicate | Ingested::Stale => MessageAcceptance::Ignore,
                    Ingested::Rejected(reason) => {
                        tracing::warn!(peer = %source, %reason, "rejected gossip message");
                        MessageAcceptance::Reject
                    }
                };
                let _ = self.0.net.validated(id, source, acceptance).await;
            }
            Event::Request { peer, data, channel } => {
                let response = self.answer(peer, &data).await;
                match response.encode() {
                    Ok(bytes) => {
                        let _ = self.0.net.respond(channel, bytes).await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot encode a response"),
                }
            }
            Event::MemberConnected { peer } => {
                // Simultaneous dials can close the connection a first sync went out on; retry
                // while the member stays connected.
                for attempt in 1..=3 {
                    match self.sync_with(peer).await {
                        Ok(()) => break,
                        Err(e) if attempt < 3 => {
                            tracing::debug!(%peer, error = %e, attempt, "catalog sync failed; retrying");
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "catalog sync failed; it is retried on the next connection")
                        }
                    }
                }
                self.flush_outbox(peer).await;
                self.send_checkpoint_to(peer).await;
            }
        }
    }

    /// Checks and applies one gossiped (or synced) object.
    async fn ingest(&self, data: &[u8]) -> Ingested {
        let g = match Gossip::decode(data) {
            Ok(g) => g,
            Err(e) => return Ingested::Rejected(e.to_string()),
        };
        self.ingest_item(g).await
    }

    async fn ingest_item(&self, g: Gossip) -> Ingested {
        let roster = self.roster();
        let res = match &g {
            Gossip::Manifest(b) => self.0.catalog.ingest_manifest(b, &roster.roster),
            Gossip::Withdrawal(b) => self.0.catalog.ingest_withdrawal(b, &roster.roster),
            Gossip::Roster(b) => return self.ingest_roster(b).await,
        };
        match res {
            Ok(i) => {
                if i == Ingested::Accepted {
                    tracing::info!(
                        kind = if matches!(g, Gossip::Manifest(_)) { "manifest" } else { "withdrawal" },
                        "catalog updated"
                    );
                }
                i
            }
            Err(e) => {
                tracing::error!(error = %e, "catalog write failed");
                Ingested::Stale
            }
        }
    }

    /// Applies a roster that claims to replace the one in force.
    async fn ingest_roster(&self, bytes: &[u8]) -> Ingested {
        let new = match SignedRoster::decode(bytes) {
            Ok(r) => r,
            Err(e) => return Ingested::Rejected(e.to_string()),
        };
        match self.replace_roster(new).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot install a newer roster");
                Ingested::Stale
            }
        }
    }

    async fn replace_roster(&self, new: SignedRoster) -> Result<Ingested, rosterfile::Error> {
        let _guard = self.0.roster_change.lock().await;
        let current = self.roster();
        if new == *current {
            return Ok(Ingested::Duplicate);
        }
        if new.roster.federation == current.roster.federation && new.roster.version <= current.roster.version {
            return Ok(Ingested::Stale);
        }
        if let Err(reason) = new.validate_successor(&current.roster) {
            return Ok(Ingested::Rejected(format!("roster version {}: {reason}", new.roster.version)));
        }
        rosterfile::write(&self.0.roster_path, &new)?;
        let members = members_of(&new, &self.0.member);
        if new.roster.member(&self.0.member).is_none() {
            tracing::error!(member = %self.0.member, version = new.roster.version, "this member is not in the new roster; the federation will refuse it");
        }
        tracing::info!(version = new.roster.version, members = new.roster.members.len(), "roster replaced");
        *self.0.roster.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.record_roster_if_new();
        let _ = self.0.net.set_members(members).await;
        Ok(Ingested::Accepted)
    }

    async fn answer(&self, peer: PeerId, data: &[u8]) -> wire::Response {
        let req = match wire::Request::decode(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed rpc request");
                return wire::Response::Refused(format!("malformed request: {e}"));
            }
        };
        // The allow list admits members only, but the roster may have changed since.
        let Some(from) = self.member_of_peer(&peer) else {
            return wire::Response::Refused("not a member of the roster in force".into());
        };
        match req {
            wire::Request::Sync(s) => self.answer_sync(&s),
            wire::Request::Deliver(d) => match self.receive(&from, d).await {
                Ok(()) => wire::Response::Ack,
                Err(reason) => {
                    tracing::warn!(member = %from, %reason, "refused a delivery");
                    wire::Response::Refused(reason)
                }
            },
            wire::Request::Fetch(bytes) => self.serve_fetch(&from, &bytes).await,
            wire::Request::Chunk { exchange, index } => self.serve_chunk(&from, exchange, index).await,
            wire::Request::Query(bytes) => self.serve_query(&from, &bytes).await,
            wire::Request::WitnessOf { member } => match self.0.provenance.witnesses(&member, MAX_WITNESSES) {
                Ok(cps) => wire::Response::Witnesses(
                    cps.into_iter().map(|c| serde_bytes::ByteBuf::from(c.as_bytes().to_vec())).collect(),
                ),
                Err(e) => wire::Response::Refused(e.to_string()),
            },
        }
    }

    fn answer_sync(&self, s: &wire::SyncRequest) -> wire::Response {
        let roster = self.roster();
        let roster_bytes = if roster.roster.version > s.roster_version { roster.encode().ok() } else { None };
        match self.0.catalog.sync_page(s.after.as_deref()) {
            Ok((items, next)) => wire::Response::Sync(wire::SyncResponse { roster: roster_bytes, items, next }),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the catalog for a sync");
                wire::Response::Refused("the catalog is unavailable".into())
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

    /// Appends to the provenance log. A failure to record is an operator's problem (disk), and is
    /// logged as an error; the operation it describes has already happened.
    fn record(&self, rec: provenance::Record) {
        if let Err(e) = self.0.provenance.append(rec) {
            tracing::error!(error = %e, "cannot append to the provenance log");
        }
    }

    fn record_roster_if_new(&self) {
        let roster = self.roster();
        let bytes = match roster.encode() {
            Ok(b) => b,
            Err(_) => return,
        };
        let note = format!("roster version {} of federation {}", roster.roster.version, roster.roster.federation);
        let already = self
            .0
            .provenance
            .query(&provenance::Filter { dataset: None, peer: None, since: None, limit: Some(1) })
            .ok()
            .and_then(|v| v.into_iter().next())
            .is_some_and(|e| e.kind == "roster-installed" && e.note == note);
        if !already {
            self.record(provenance::Record {
                time: now(),
                kind: EntryKind::RosterInstalled,
                dataset: None,
                peer: None,
                exchange: None,
                note,
                objects: vec![Evidence { kind: "roster".into(), bytes }],
            });
        }
    }

    /// Pulls a member's roster (if newer) and catalog, page by page.
    async fn sync_with(&self, peer: PeerId) -> Result<(), String> {
        let mut after: Option<String> = None;
        let mut accepted = 0usize;
        // A bound on pages so a misbehaving peer cannot keep us syncing forever.
        for _ in 0..100_000 {
            let req = wire::Request::Sync(wire::SyncRequest {
                roster_version: self.roster().roster.version,
                after: after.clone(),
            });
            let bytes =
                self.0.net.request(peer, req.encode().map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
            let page = match wire::Response::decode(&bytes).map_err(|e| e.to_string())? {
                wire::Response::Sync(page) => page,
                wire::Response::Refused(reason) => return Err(format!("refused: {reason}")),
                other => return Err(format!("unexpected answer to a sync: {other:?}")),
            };
            if let Some(r) = page.roster {
                self.ingest_roster(&r).await;
            }
            for item in page.items {
                match self.ingest_item(item).await {
                    Ingested::Accepted => accepted += 1,
                    Ingested::Rejected(reason) => {
                        tracing::warn!(%peer, %reason, "sync carried an invalid object")
                    }
                    _ => {}
                }
            }
            match page.next {
                Some(n) if after.as_deref().is_none_or(|a| n.as_str() > a) => after = Some(n),
                Some(_) => return Err("sync cursor did not advance".into()),
                None => break,
            }
        }
        if accepted > 0 {
            tracing::info!(%peer, accepted, "caught up by sync");
        }
        Ok(())
    }

    /// Handles one admin API request; errors are the sentence the user sees.
    pub async fn admin(
        &self,
        req: api::Request,
        progress: Option<mpsc::Sender<api::Progress>>,
    ) -> Result<serde_json::Value, String> {
        let json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
        match req {
            api::Request::Status => json(serde_json::to_value(self.status().await?)),
            api::Request::Peers => json(serde_json::to_value(self.peers().await?)),
            api::Request::Publish(p) => json(serde_json::to_value(self.publish(p).await?)),
            api::Request::Withdraw { dataset, reason } => {
                json(serde_json::to_value(self.withdraw(dataset, reason).await?))
            }
            api::Request::Catalog { publisher, query } => {
                let items: Vec<api::CatalogItem> = self
                    .0
                    .catalog
                    .list(publisher.as_ref(), query.as_deref())
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|m| api::CatalogItem::from(m.body()))
                    .collect();
                json(serde_json::to_value(items))
            }
            api::Request::CatalogShow { dataset } => json(serde_json::to_value(self.catalog_show(&dataset)?)),
            api::Request::RosterInstall { roster } => json(serde_json::to_value(self.roster_install(&roster).await?)),
            api::Request::AccessRequest { dataset, purpose, fields } => {
                json(serde_json::to_value(self.request_access(dataset, purpose, fields).await?))
            }
            api::Request::Requests => json(serde_json::to_value(self.list_requests()?)),
            api::Request::Approve { request_id, expires, max_fetches } => {
                json(serde_json::to_value(self.approve(request_id, expires, max_fetches).await?))
            }
            api::Request::Deny { request_id, reason } => {
                json(serde_json::to_value(self.deny(request_id, reason).await?))
            }
            api::Request::Grant(g) => json(serde_json::to_value(self.grant(g).await?)),
            api::Request::Grants => json(serde_json::to_value(self.list_grants()?)),
            api::Request::Revoke { grant_id, reason } => {
                json(serde_json::to_value(self.revoke(grant_id, reason).await?))
            }
            api::Request::Fetch { dataset, out } => {
                json(serde_json::to_value(self.fetch(dataset, out, progress).await?))
            }
            api::Request::Query { dataset, key } => json(serde_json::to_value(self.query(dataset, key).await?)),
            api::Request::Provenance { dataset, peer, since, limit } => {
                json(serde_json::to_value(self.provenance_list(dataset, peer, since, limit)?))
            }
            api::Request::ProvenanceVerify => json(serde_json::to_value(self.provenance_verify().await?)),
            api::Request::ProvenanceExport { out } => json(serde_json::to_value(self.provenance_export(out).await?)),
        }
    }

    async fn status(&self) -> Result<api::Status, String> {
        let net = self.0.net.status().await.map_err(|e| e.to_string())?;
        let roster = self.roster();
        let catalog_size = self.0.catalog.list(None, None).map_err(|e| e.to_string())?.len();
        Ok(api::Status {
            member: self.0.member.to_string(),
            peer_id: self.0.peer_id.to_string(),
            federation: roster.roster.federation.to_string(),
            roster_version: roster.roster.version,
            listen: net.listen.iter().map(ToString::to_string).collect(),
            connected: net.connected.iter().map(|c| c.member.to_string()).collect(),
            catalog_size,
        })
    }

    async fn peers(&self) -> Result<Vec<api::Peer>, String> {
        let net = self.0.net.status().await.map_err(|e| e.to_string())?;
        Ok(net
            .connected
            .into_iter()
            .map(|c| api::Peer {
                member: c.member.to_string(),
                peer_id: c.peer.to_string(),
                addrs: c.addrs.iter().map(ToString::to_string).collect(),
                score: c.score,
            })
            .collect())
    }

    async fn publish(&self, p: api::PublishRequest) -> Result<api::Published, String> {
        let meta = std::fs::metadata(&p.path).map_err(|e| format!("cannot read {}: {e}", p.path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", p.path.display()));
        }
        let format = p.format.unwrap_or_else(|| Format::from_file_name(&p.path.to_string_lossy()));
        let blobs = self.0.blobs.clone();
        let (path, key_field) = (p.path.clone(), p.key_field.clone());
        let index = self.0.keyindex.clone();
        let store = self.0.store.clone();
        let imported = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let imported = blobs.import(&path, format, key_field.as_deref()).map_err(|e| e.to_string())?;
            if let Some(k) = &key_field {
                // Indexed at publish time so the first query is as fast as the rest.
                index.build(&imported.hash, format, &imported.schema, k).map_err(|e| e.to_string())?;
            }
            fetch::remember_table(&store, &blobs, &imported.hash)?;
            Ok(imported)
        })
        .await
        .map_err(|e| format!("import task failed: {e}"))??;
        let me = &self.0.member;
        let version = match self.0.catalog.latest(me, &p.dataset).map_err(|e| e.to_string())? {
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
        };
        let signed = Signed::sign(manifest, &self.0.key).map_err(|e| e.to_string())?;
        match self.0.catalog.ingest_manifest(signed.as_bytes(), &self.roster().roster).map_err(|e| e.to_string())? {
            Ingested::Accepted => {}
            other => {
                return Err(format!("the new manifest was not accepted locally: {other:?}"));
            }
        }
        self.announce(Gossip::Manifest(signed.as_bytes().to_vec())).await?;
        let b = signed.body();
        tracing::info!(dataset = %b.dataset_ref(), hash = %b.content_hash, "published");
        self.record(provenance::Record {
            time: now(),
            kind: EntryKind::Published,
            dataset: Some(b.dataset_ref()),
            peer: None,
            exchange: None,
            note: format!(
                "{} ({} bytes, {} records, {}, sharing {}) hash {}",
                b.title, b.size, b.records, b.classification, b.sharing, b.content_hash
            ),
            objects: vec![Evidence { kind: "manifest".into(), bytes: signed.as_bytes().to_vec() }],
        });
        Ok(api::Published {
            publisher: b.publisher.to_string(),
            dataset: b.dataset.to_string(),
            version: b.version,
            content_hash: b.content_hash.to_string(),
            size: b.size,
            records: b.records,
        })
    }

    async fn announce(&self, g: Gossip) -> Result<(), String> {
        let data = g.encode().map_err(|e| e.to_string())?;
        self.0.net.publish(data).await.map_err(|e| e.to_string())
    }

    async fn withdraw(&self, dataset: DatasetId, reason: String) -> Result<api::Withdrawn, String> {
        let me = &self.0.member;
        let version = match self.0.catalog.latest(me, &dataset).map_err(|e| e.to_string())? {
            Some(Latest::Manifest(m)) => m.body().version,
            Some(Latest::Withdrawn(_)) => {
                return Err(format!("{me}/{dataset} is already withdrawn"));
            }
            None => {
                return Err(format!(
                    "this node has published no dataset {dataset}; see `deltafed catalog --publisher {me}`"
                ));
            }
        };
        let w = Withdrawal {
            v: OBJECT_VERSION,
            publisher: me.clone(),
            dataset: dataset.clone(),
            version,
            reason,
            time: now(),
        };
        let signed = Signed::sign(w, &self.0.key).map_err(|e| e.to_string())?;
        self.0.catalog.ingest_withdrawal(signed.as_bytes(), &self.roster().roster).map_err(|e| e.to_string())?;
        self.announce(Gossip::Withdrawal(signed.as_bytes().to_vec())).await?;
        self.record(provenance::Record {
            time: now(),
            kind: EntryKind::Withdrawn,
            dataset: Some(DatasetRef { publisher: me.clone(), dataset: dataset.clone(), version: Some(version) }),
            peer: None,
            exchange: None,
            note: signed.body().reason.clone(),
            objects: vec![Evidence { kind: "withdrawal".into(), bytes: signed.as_bytes().to_vec() }],
        });
        Ok(api::Withdrawn { publisher: me.to_string(), dataset: dataset.to_string(), version })
    }

    fn catalog_show(&self, r: &DatasetRef) -> Result<api::ManifestView, String> {
        let m = match r.version {
            Some(v) => self
                .0
                .catalog
                .version(&r.publisher, &r.dataset, v)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{r} is not in the catalog"))?,
            None => match self.0.catalog.latest(&r.publisher, &r.dataset).map_err(|e| e.to_string())? {
                Some(Latest::Manifest(m)) => m,
                Some(Latest::Withdrawn(w)) => {
                    return Err(format!("{r} was withdrawn at version {} ({})", w.body().version, w.body().reason));
                }
                None => return Err(format!("{r} is not in the catalog; see `deltafed catalog`")),
            },
        };
        let valid = m.check_signer(&self.roster().roster).is_ok();
        Ok(api::ManifestView::new(&m, valid))
    }

    async fn roster_install(&self, hex_bytes: &str) -> Result<api::RosterInstalled, String> {
        let bytes = hex::decode(hex_bytes).map_err(|_| "the roster was not sent as hex".to_string())?;
        let new = SignedRoster::decode(&bytes).map_err(|e| format!("not a readable roster: {e}"))?;
        match self.replace_roster(new.clone()).await.map_err(|e| e.to_string())? {
            Ingested::Accepted => self.announce(Gossip::Roster(bytes)).await?,
            Ingested::Duplicate => {}
            Ingested::Stale => {
                return Err(format!(
                    "roster version {} does not replace version {}, which is in force",
                    new.roster.version,
                    self.roster().roster.version
                ));
            }
            Ingested::Rejected(reason) => return Err(format!("roster not valid: {reason}")),
        }
        Ok(api::RosterInstalled {
            federation: new.roster.federation.to_string(),
            version: new.roster.version,
            members: new.roster.members.iter().map(|m| m.id.to_string()).collect(),
        })
    }
}
