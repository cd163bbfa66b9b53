//! The edge between the admin API and the node: each request is routed to its operation, and
//! the operation's domain result is turned into the view the CLI prints with `--json`. Views are
//! built here only, so operations stay free of presentation.

use deltafed_protocol::access::Outcome;
use deltafed_protocol::{Signed, Timestamp};
use serde::Serialize;
use tokio::sync::mpsc;

use super::api;
use crate::access::{Direction, HeldGrant, HeldRequest, Role};
use crate::apps::{App, Issued};
use crate::node::{Error, Node, Sent};
use crate::roles::Actor;

fn json<T: Serialize>(v: T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::internal("encoding the reply", e))
}

fn now() -> Timestamp {
    Timestamp::from_system(std::time::SystemTime::now())
}

impl Node {
    /// Handles one admin API request.
    pub async fn admin(
        &self,
        req: api::Request,
        progress: Option<mpsc::Sender<api::Progress>>,
    ) -> Result<serde_json::Value, Error> {
        self.admin_as(req, progress, &Actor::Owner).await
    }

    /// Handles one request on behalf of `actor`, whom the decisions it takes are recorded as
    /// taken by. Who may ask what is decided before this (the admin socket is the owner's; the
    /// dashboard asks `roles::permits`).
    pub async fn admin_as(
        &self,
        req: api::Request,
        progress: Option<mpsc::Sender<api::Progress>>,
        actor: &Actor,
    ) -> Result<serde_json::Value, Error> {
        use api::Request as R;
        match req {
            R::Status => json(self.status_view().await?),
            R::Peers => json(self.peers_view().await?),
            R::Publish(p) => {
                let m = self.publish(p, actor).await?;
                json(api::Published::from(m.body()))
            }
            R::Withdraw { dataset, reason } => {
                let w = self.withdraw(dataset, reason, actor).await?;
                let b = w.body();
                json(api::Withdrawn {
                    publisher: b.publisher.to_string(),
                    dataset: b.dataset.to_string(),
                    version: b.version,
                })
            }
            R::Catalog { publisher, query } => {
                let items: Vec<api::CatalogItem> = self
                    .catalog(publisher.as_ref(), query.as_deref())?
                    .iter()
                    .map(|m| api::CatalogItem::from(m.body()))
                    .collect();
                json(items)
            }
            R::CatalogShow { dataset } => {
                let (m, valid) = self.catalog_show(&dataset)?;
                json(api::ManifestView::new(&m, valid))
            }
            R::RosterInstall { roster } => {
                let bytes =
                    hex::decode(&roster).map_err(|_| Error::invalid("FILE", "the roster was not sent as hex"))?;
                let r = self.roster_install(bytes).await?;
                json(api::RosterInstalled {
                    federation: r.roster.federation.to_string(),
                    version: r.roster.version,
                    members: r.roster.members.iter().map(|m| m.id.to_string()).collect(),
                })
            }
            R::AccessRequest { dataset, purpose, fields } => {
                let Sent { object, delivered } = self.request_access(dataset, purpose, fields).await?;
                let b = object.body();
                json(api::RequestSent {
                    request_id: b.id.to_string(),
                    provider: b.provider.to_string(),
                    dataset: format!("{}/{}", b.provider, b.dataset),
                    delivered,
                })
            }
            R::Requests => {
                let deadline = self.config().response_deadline;
                let t = now();
                json(self.requests()?.iter().map(|h| request_view(h, deadline, t)).collect::<Vec<_>>())
            }
            R::Approve { request_id, expires, max_fetches, max_queries } => {
                let a = self.approve(request_id, expires, max_fetches, max_queries, actor).await?;
                json(api::Decided {
                    request_id: a.request.to_string(),
                    state: "approved".into(),
                    grant_id: Some(a.grant.object.body().id.to_string()),
                    reason: None,
                    delivered: a.decision_delivered && a.grant.delivered,
                })
            }
            R::Deny { request_id, reason } => {
                let d = self.deny(request_id, reason.clone(), actor).await?;
                json(api::Decided {
                    request_id: request_id.to_string(),
                    state: "denied".into(),
                    grant_id: None,
                    reason: Some(reason),
                    delivered: d.delivered,
                })
            }
            R::Grant(g) => json(grant_issued(&self.grant(g, actor).await?)),
            R::Grants => {
                let t = now();
                json(self.grants()?.iter().map(|h| grant_view(h, t)).collect::<Vec<_>>())
            }
            R::Revoke { grant_id, reason } => {
                let Sent { object, delivered } = self.revoke(grant_id, reason, actor).await?;
                json(api::Revoked {
                    grant_id: grant_id.to_string(),
                    grantee: object.body().grantee.to_string(),
                    delivered,
                })
            }
            R::Fetch { dataset, out } => {
                let f = self.fetch(dataset, out, progress).await?;
                let t = f.ticket.body();
                json(api::Fetched {
                    publisher: t.provider.to_string(),
                    dataset: t.dataset.to_string(),
                    version: t.version,
                    exchange_id: t.exchange.to_string(),
                    content_hash: t.content_hash.to_string(),
                    bytes: t.size,
                    out: f.out.display().to_string(),
                    fields: t.fields.clone(),
                    resumed_from: f.resumed_from,
                    transport: f.transport.as_str().into(),
                })
            }
            R::Query { dataset, key, keys } => {
                let single = key.is_some() && keys.is_empty();
                let keys: Vec<String> = key.into_iter().chain(keys).collect();
                let a = self.calls(dataset, keys, crate::node::Caller::default()).await?;
                let unversioned = a.dataset.unversioned().to_string();
                if single {
                    // One key: the original shape, and a refusal is the command's error.
                    let Some(r) = a.results.into_iter().next() else {
                        return Err(crate::node::Error::internal("a query", "no answer for the key"));
                    };
                    let records = r.outcome?;
                    return json(api::QueryResult {
                        dataset: unversioned,
                        key: r.key,
                        exchange_id: r.exchange.map(|x| x.to_string()).unwrap_or_default(),
                        fields: r.fields,
                        records,
                        version: a.dataset.version,
                        read_at: r.read.map(|t| t.to_string()),
                    });
                }
                json(api::QueryResults {
                    dataset: a.dataset.to_string(),
                    results: a
                        .results
                        .into_iter()
                        .map(|r| {
                            let exchange_id = r.exchange.map(|x| x.to_string());
                            match r.outcome {
                                Ok(records) => api::KeyResult {
                                    key: r.key,
                                    exchange_id,
                                    records: Some(records),
                                    error: None,
                                    read_at: r.read.map(|t| t.to_string()),
                                },
                                Err(e) => api::KeyResult {
                                    key: r.key,
                                    exchange_id,
                                    records: None,
                                    error: Some(e.to_string()),
                                    read_at: None,
                                },
                            }
                        })
                        .collect(),
                })
            }
            R::Provenance { dataset, peer, since, limit, key, archive } => {
                json(self.provenance_list(dataset, peer, since, limit, key, archive).await?)
            }
            R::ProvenanceVerify => json(self.provenance_verify().await?),
            R::ProvenanceExport { out } => {
                let entries = self.provenance_export(out.clone()).await?;
                let archived = self.provenance_archived()?;
                json(api::Exported {
                    out: out.display().to_string(),
                    entries,
                    first_seq: archived.as_ref().map_or(0, |a| a.seq.saturating_add(1)),
                    archive_dir: archived.map(|a| a.dir),
                })
            }
            R::ProvenanceArchive { before, out } => {
                let a = self.provenance_archive(before, out).await?;
                json(api::ArchivedView {
                    dir: a.dir.display().to_string(),
                    entries: a.entries,
                    segments: a.segments,
                    archived_through: a.through.as_ref().map(|t| t.seq),
                    archived_hash: a.through.map(|t| t.hash.to_string()),
                    nothing: a.nothing,
                })
            }
            R::ProvenanceVerifyArchive { archive } => json(self.provenance_verify_archive(archive).await?),
            R::ProvenanceArchiveStatus => {
                let s = self.provenance_archive_status().await?;
                json(api::ArchiveStatusView {
                    dir: s.dir.map(|d| d.display().to_string()),
                    archived_through: s.through.as_ref().map(|t| t.seq),
                    archived_hash: s.through.as_ref().map(|t| t.hash.to_string()),
                    newest_segment: s.through.as_ref().map(|t| t.segment.clone()),
                    archived_until: s.through.map(|t| t.max_time.to_string()),
                    segments: s.segments,
                    unreadable: s.unreadable,
                })
            }
            R::AppAdd { app, datasets, rate } => json(app_issued(&self.app_add(app, datasets, rate).await?)),
            R::AppList => json(self.apps().iter().map(|a| app_view(a)).collect::<Vec<_>>()),
            R::AppRotate { app } => json(app_issued(&self.app_rotate(&app).await?)),
            R::SourceAdd { name, url, password_file, password_env } => {
                let password = match (password_file, password_env) {
                    (Some(_), Some(_)) => {
                        return Err(crate::node::Error::invalid(
                            "--password-file",
                            "give --password-file or --password-env, not both",
                        ));
                    }
                    (Some(path), None) => crate::sources::PasswordRef::File { path },
                    (None, Some(var)) => crate::sources::PasswordRef::Env { var },
                    (None, None) => crate::sources::PasswordRef::Url,
                };
                let s = self.source_add(name, url, password).await?;
                json(source_view(&s, &[]))
            }
            R::SourceList => json(self.source_list()?.iter().map(|(s, sch)| source_view(s, sch)).collect::<Vec<_>>()),
            R::SourceRemove { name } => {
                let s = self.source_remove(&name).await?;
                json(api::SourceRemoved { name: s.name, removed: true })
            }
            R::PublishSource(p) => {
                let every = p.every.clone();
                let (m, _) = self.publish_source(p, actor).await?;
                json(api::SourcePublished { published: api::Published::from(m.body()), live: m.body().live, every })
            }
            R::UserAdd { user, role } => {
                let (u, secret) = self.user_add(&user, role).await?;
                json(api::UserAdded { user: u.name, role: u.role, secret })
            }
            R::UserList => json(
                self.users()?
                    .into_iter()
                    .map(|u| api::UserView { user: u.name, role: u.role, created: u.created.to_string() })
                    .collect::<Vec<_>>(),
            ),
            R::UserRemove { user } => {
                let u = self.user_remove(&user).await?;
                json(api::UserRemoved { user: u.name, removed: true })
            }
            R::AppRemove { app } => {
                let removed = self.app_remove(&app).await?;
                json(api::AppRemoved { app: removed.name.clone(), removed: true })
            }
        }
    }

    async fn status_view(&self) -> Result<api::Status, Error> {
        let net = self.net().status().await?;
        let roster = self.roster();
        Ok(api::Status {
            member: self.member().to_string(),
            peer_id: self.peer_id().to_string(),
            federation: roster.roster.federation.to_string(),
            roster_version: roster.roster.version,
            listen: net.listen.iter().map(ToString::to_string).collect(),
            connected: net.connected.iter().map(|c| c.member.to_string()).collect(),
            catalog_size: self.catalog(None, None)?.len(),
            gateway_url: self.gateway_url().to_string(),
            metrics_url: self.metrics_url().to_string(),
            dashboard_url: self.dashboard_url().to_string(),
            storage: self.storage_memory(),
            calls: self.call_counts(),
        })
    }

    async fn peers_view(&self) -> Result<Vec<api::Peer>, Error> {
        let net = self.net().status().await?;
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
}

fn source_view(s: &crate::sources::Source, schedules: &[crate::node::Schedule]) -> api::SourceView {
    api::SourceView {
        name: s.name.clone(),
        url: s.redacted_url(),
        password: s.password_label(),
        created: s.created.clone(),
        schedules: schedules
            .iter()
            .map(|x| api::ScheduleView {
                dataset: x.request.dataset.to_string(),
                every: humantime::format_duration(std::time::Duration::from_millis(x.every_ms)).to_string(),
                next: x.next.to_string(),
                last: x.last.clone(),
            })
            .collect(),
    }
}

fn app_issued(i: &Issued) -> api::AppIssued {
    api::AppIssued {
        app: i.app.name.clone(),
        token: i.token.clone(),
        datasets: i.app.datasets.iter().map(ToString::to_string).collect(),
        rate: i.app.rate,
    }
}

fn app_view(a: &App) -> api::AppView {
    let (calls, last_call) = a.usage();
    api::AppView {
        app: a.name.clone(),
        datasets: a.datasets.iter().map(ToString::to_string).collect(),
        rate: a.rate,
        created: a.created.to_string(),
        calls,
        last_call: last_call.map(|t| t.to_string()),
    }
}

fn grant_issued(s: &Sent<deltafed_protocol::access::Grant>) -> api::GrantIssued {
    let b = s.object.body();
    api::GrantIssued {
        grant_id: b.id.to_string(),
        grantee: b.grantee.to_string(),
        dataset: format!("{}/{}", b.provider, b.dataset),
        expires_at: b.expires.to_string(),
        delivered: s.delivered,
    }
}

pub(crate) fn grant_view(h: &HeldGrant, t: Timestamp) -> api::GrantView {
    let b = h.grant.body();
    api::GrantView {
        grant_id: b.id.to_string(),
        provider: b.provider.to_string(),
        grantee: b.grantee.to_string(),
        dataset: format!("{}/{}", b.provider, b.dataset),
        purpose: b.purpose.clone(),
        fields: b.fields.clone(),
        not_before: b.not_before.to_string(),
        expires_at: b.expires.to_string(),
        max_fetches: b.max_fetches,
        fetches: h.fetches,
        max_queries: b.max_queries,
        queries: h.queries,
        revoked: h.revocation.is_some(),
        revoked_reason: h.revocation.as_ref().map(|r| r.body().reason.clone()),
        role: match h.role {
            Role::Issued => "issued".into(),
            Role::Received => "received".into(),
        },
        expired: t >= b.expires,
        delivered: h.delivered,
    }
}

fn request_view(h: &HeldRequest, deadline: std::time::Duration, t: Timestamp) -> api::RequestView {
    let b = h.request.body();
    let due = b.time.saturating_add(deadline);
    let (grant_id, reason) = match h.decision.as_ref().map(|d: &Signed<_>| &d.body().outcome) {
        Some(Outcome::Approved { grant }) => (Some(grant.to_string()), None),
        Some(Outcome::Denied { reason }) => (None, Some(reason.clone())),
        None => (None, None),
    };
    api::RequestView {
        request_id: b.id.to_string(),
        direction: match h.direction {
            Direction::Incoming => "incoming".into(),
            Direction::Outgoing => "outgoing".into(),
        },
        requester: b.requester.to_string(),
        provider: b.provider.to_string(),
        dataset: format!("{}/{}", b.provider, b.dataset),
        purpose: b.purpose.clone(),
        fields: b.fields.clone(),
        time: b.time.to_string(),
        deadline: due.to_string(),
        state: h.state().into(),
        overdue: h.decision.is_none() && t > due,
        grant_id,
        reason,
    }
}
