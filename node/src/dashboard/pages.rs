//! The dashboard's pages and forms. Each page asks [`Viewer::require`] first and builds from the
//! admin API's own views (`Node::admin_as`), so it shows what the CLI's `--json` shows; each form
//! checks the role and the CSRF token, then calls the same request the CLI sends, as the user.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use axum::extract::{Path, Query};

use super::{CsrfForm, Early, St, Viewer};
use crate::admin::api::{self, Request};
use crate::roles::Action;

/// The pages, in the order the menu shows them, with what viewing each needs.
const NAV: &[(&str, &str, Action)] = &[
    ("/", "Overview", Action::ViewOverview),
    ("/status", "Status", Action::ViewStatus),
    ("/catalog", "Catalog", Action::ViewCatalog),
    ("/requests", "Requests", Action::ViewRequests),
    ("/grants", "Grants", Action::ViewGrants),
    ("/exchanges", "Exchanges", Action::ViewExchanges),
    ("/stats", "Call statistics", Action::ViewStats),
    ("/provenance", "Provenance", Action::ViewProvenance),
    ("/apps", "Applications", Action::ViewApps),
    ("/users", "Users", Action::ViewUsers),
];

pub fn layout(v: Option<&Viewer>, title: &str, body: Markup) -> Html<String> {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · deltafed" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                header {
                    span.brand { "deltafed" }
                    @if let Some(v) = v {
                        nav {
                            @for (href, label, action) in NAV {
                                @if v.may(*action) { a href=(href) { (label) } }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(v.session.csrf);
                            span.who { (v.session.user) " (" (v.session.role) ")" }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    };
    Html(page.into_string())
}

pub fn message_page(v: Option<&Viewer>, title: &str, text: &str) -> Html<String> {
    layout(v, title, html! { p.message { (text) } })
}

pub fn login_page(error: Option<&str>) -> Html<String> {
    layout(
        None,
        "Log in",
        html! {
            @if let Some(e) = error { p.error { (e) } }
            form.login method="post" action="/login" {
                label { "User " input name="user" autocomplete="username" required; }
                label { "Secret " input name="secret" type="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
            p.hint { "The secret is the one `deltafed user add` printed." }
        },
    )
}

/// A view from the admin API, as the viewer.
async fn view<T: DeserializeOwned>(d: &St, v: &Viewer, req: Request) -> Result<T, Early> {
    let value = d.node.admin_as(req, None, &v.actor()).await.map_err(|e| failed(v, &e))?;
    serde_json::from_value(value).map_err(|e| failed(v, &crate::node::Error::internal("a dashboard view", e)))
}

fn failed(v: &Viewer, e: &crate::node::Error) -> Early {
    let status = match e.kind() {
        "refused" => StatusCode::FORBIDDEN,
        "not_found" => StatusCode::NOT_FOUND,
        "invalid" => StatusCode::BAD_REQUEST,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, message_page(Some(v), "It did not work", &e.to_string())).into_response().into()
}

/// 400, for a form or filter that names nothing valid.
fn bad_request(v: &Viewer, title: &str, text: &str) -> Response {
    (StatusCode::BAD_REQUEST, message_page(Some(v), title, text)).into_response()
}

fn csrf(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.session.csrf); }
}

macro_rules! try_page {
    ($e:expr) => {
        match $e {
            Ok(x) => x,
            Err(r) => return r.into_response(),
        }
    };
}

/// Where the members sit on the overview's map: the four provinces as on a map of the Delta,
/// any other member on a ring around them.
fn position(id: &str, i: usize, n: usize) -> (f64, f64) {
    match id {
        "jiangsu" => (250.0, 90.0),
        "anhui" => (110.0, 170.0),
        "shanghai" => (400.0, 190.0),
        "zhejiang" => (270.0, 290.0),
        _ => {
            let a = std::f64::consts::TAU * i as f64 / n.max(1) as f64;
            (260.0 + 210.0 * a.cos(), 190.0 + 150.0 * a.sin())
        }
    }
}

pub async fn overview(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewOverview));
    let status: api::Status = try_page!(view(&d, &v, Request::Status).await);
    let roster = d.node.roster();
    let members = &roster.roster.members;
    let me = status.member.clone();
    let n = members.len();
    let at: Vec<(String, String, f64, f64, bool)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (x, y) = position(m.id.as_str(), i, n);
            let up = m.id.as_str() == me || status.connected.iter().any(|c| c == m.id.as_str());
            (m.id.to_string(), m.name.clone(), x, y, up)
        })
        .collect();
    let here = at.iter().find(|m| m.0 == me).map(|m| (m.2, m.3));
    let body = html! {
        dl.facts {
            dt { "Member" } dd { (status.member) }
            dt { "Federation" } dd { (status.federation) }
            dt { "Roster version" } dd { (status.roster_version) }
            dt { "Connected" } dd { (status.connected.len()) " of " (n.saturating_sub(1)) " members" }
            dt { "Catalog" } dd { (status.catalog_size) " datasets" }
        }
        svg.map viewBox="0 0 520 380" role="img" aria-label="Members and their connections" {
            @if let Some((hx, hy)) = here {
                @for m in at.iter().filter(|m| m.4 && m.0 != me) {
                    line x1=(hx) y1=(hy) x2=(m.2) y2=(m.3) class="link" {}
                }
            }
            @for m in &at {
                g class=(if m.0 == me { "member me" } else if m.4 { "member up" } else { "member down" }) data-member=(m.0) {
                    circle cx=(m.2) cy=(m.3) r="26" {}
                    text x=(m.2) y=(m.3 + 44.0) { (m.1) }
                }
            }
        }
        p.legend { span.up { "connected" } " " span.down { "not connected" } }
    };
    layout(Some(&v), "Overview", body).into_response()
}

pub async fn status(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewStatus));
    let status: api::Status = try_page!(view(&d, &v, Request::Status).await);
    let peers: Vec<api::Peer> = try_page!(view(&d, &v, Request::Peers).await);
    let body = html! {
        dl.facts {
            dt { "Peer id" } dd { code { (status.peer_id) } }
            dt { "Listening" } dd { @for a in &status.listen { code { (a) } " " } }
            dt { "Gateway" } dd { (status.gateway_url) }
            dt { "Metrics" } dd { (status.metrics_url) "/metrics" }
            dt { "Calls" } dd {
                (status.calls.calls_sent) " sent in " (status.calls.batches_sent) " batches, "
                (status.calls.calls_served) " served in " (status.calls.batches_served) " batches"
            }
        }
        h2 { "Peers" }
        table {
            thead { tr { th { "Member" } th { "Peer id" } th { "Addresses" } th { "Gossip score" } } }
            tbody {
                @for p in &peers {
                    tr { td { (p.member) } td { code { (p.peer_id) } } td { (p.addrs.join(", ")) }
                         td { (p.score.map(|s| format!("{s:.1}")).unwrap_or_default()) } }
                }
            }
        }
    };
    layout(Some(&v), "Status", body).into_response()
}

#[derive(Deserialize)]
pub struct Search {
    #[serde(default)]
    q: Option<String>,
}

pub async fn catalog(d: St, v: Viewer, Query(s): Query<Search>) -> Response {
    try_page!(v.require(Action::ViewCatalog));
    let q = s.q.filter(|q| !q.trim().is_empty());
    let items: Vec<api::CatalogItem> =
        try_page!(view(&d, &v, Request::Catalog { publisher: None, query: q.clone() }).await);
    let me = d.node.member().to_string();
    let sources: Vec<api::SourceView> =
        if v.may(Action::Publish) { try_page!(view(&d, &v, Request::SourceList).await) } else { Vec::new() };
    let body = html! {
        @if v.may(Action::Publish) {
            details {
                summary { "Publish from a database source" }
                @if sources.is_empty() {
                    p.hint { "No sources yet: the node's owner adds them with `deltafed source add`." }
                } @else {
                    form.grant method="post" action="/catalog/publish" {
                        (csrf(&v))
                        label { "Source " select name="source" { @for s in &sources { option value=(s.name) { (s.name) } } } }
                        label { "Table " input name="table" placeholder="schema.table"; }
                        label { "or SQL " input name="sql" placeholder="SELECT ..."; }
                        label { "Dataset id " input name="dataset" required; }
                        label { "Title " input name="title" required; }
                        label { "Key field " input name="key_field"; }
                        label { "Republish every " input name="every" placeholder="e.g. 1h"; }
                        label { input type="checkbox" name="live" value="on"; " answer record calls from the table (live)" }
                        button type="submit" { "Publish" }
                    }
                }
            }
        }
        form.search method="get" action="/catalog" {
            input type="search" name="q" value=(q.clone().unwrap_or_default()) placeholder="id, title or description";
            button type="submit" { "Search" }
        }
        table {
            thead { tr { th { "Dataset" } th { "Title" } th { "Class" } th { "Sharing" } th { "Records" } th { "Size" } th {} } }
            tbody {
                @for i in &items {
                    tr {
                        td { (i.publisher) "/" (i.dataset) "@" (i.version) @if i.live { " " span.tag { "live" } } }
                        td { (i.title) } td { (i.classification.to_string()) } td { (i.sharing.to_string()) }
                        td { (i.records) } td { (i.size) }
                        td {
                            @if i.publisher == me && v.may(Action::Withdraw) {
                                form.inline.confirm method="post" action=(format!("/catalog/{}/withdraw", i.dataset)) {
                                    (csrf(&v))
                                    input name="reason" placeholder="reason" required;
                                    button type="submit" { "Withdraw" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if items.is_empty() { p { "Nothing in the catalog matches." } }
    };
    layout(Some(&v), "Catalog", body).into_response()
}

#[derive(Deserialize)]
pub struct PublishForm {
    csrf: String,
    source: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    sql: String,
    dataset: String,
    title: String,
    #[serde(default)]
    key_field: String,
    #[serde(default)]
    every: String,
    #[serde(default)]
    live: Option<String>,
}

pub async fn publish(d: St, v: Viewer, axum::Form(f): axum::Form<PublishForm>) -> Response {
    try_page!(v.require(Action::Publish));
    try_page!(v.check_csrf(&f.csrf));
    let given = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let selection = match (given(&f.table), given(&f.sql)) {
        (Some(t), None) => crate::sources::Selection::Table(t),
        (None, Some(q)) => crate::sources::Selection::Sql(q),
        _ => {
            return bad_request(&v, "Bad form", "Give a table or a query, not both.");
        }
    };
    let Ok(dataset) = f.dataset.trim().parse() else {
        return bad_request(&v, "Bad dataset", "Not a dataset id.");
    };
    let req = Request::PublishSource(api::SourcePublishRequest {
        source: f.source,
        selection,
        dataset,
        title: f.title,
        description: String::new(),
        // The CLI's defaults; anything else is published with the CLI.
        classification: deltafed_protocol::manifest::Classification::General,
        sharing: deltafed_protocol::manifest::Sharing::Conditional,
        key_field: given(&f.key_field),
        format: None,
        live: f.live.is_some(),
        every: given(&f.every),
    });
    let _: serde_json::Value = try_page!(view(&d, &v, req).await);
    Redirect::to("/catalog").into_response()
}

#[derive(Deserialize)]
pub struct ReasonForm {
    csrf: String,
    reason: String,
}

pub async fn withdraw(
    d: St,
    v: Viewer,
    Path(dataset): Path<String>,
    axum::Form(f): axum::Form<ReasonForm>,
) -> Response {
    try_page!(v.require(Action::Withdraw));
    try_page!(v.check_csrf(&f.csrf));
    let Ok(dataset) = dataset.parse() else {
        return bad_request(&v, "Bad dataset", "Not a dataset id.");
    };
    let _: serde_json::Value = try_page!(view(&d, &v, Request::Withdraw { dataset, reason: f.reason }).await);
    Redirect::to("/catalog").into_response()
}

pub async fn requests(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewRequests));
    let list: Vec<api::RequestView> = try_page!(view(&d, &v, Request::Requests).await);
    let (incoming, outgoing): (Vec<_>, Vec<_>) = list.iter().partition(|r| r.direction == "incoming");
    let row = |r: &api::RequestView, actions: bool| {
        html! {
            tr class=(if r.overdue { "overdue" } else { "" }) data-request=(r.request_id) {
                td { code { (r.request_id) } }
                td { (r.requester) } td { (r.dataset) } td { (r.purpose) }
                td { (r.fields.as_ref().map(|f| f.join(", ")).unwrap_or_else(|| "all".into())) }
                td { (r.deadline) @if r.overdue { " " strong.overdue { "OVERDUE" } } }
                td { (r.state) @if let Some(g) = &r.grant_id { " (grant " code { (g) } ")" } @if let Some(x) = &r.reason { ": " (x) } }
                td {
                    @if actions && r.state == "pending" {
                        @if v.may(Action::Approve) {
                            form.inline method="post" action=(format!("/requests/{}/approve", r.request_id)) {
                                (csrf(&v))
                                input name="expires" placeholder="expires (30d)" size="10";
                                button.approve type="submit" { "Approve" }
                            }
                        }
                        @if v.may(Action::Deny) {
                            form.inline method="post" action=(format!("/requests/{}/deny", r.request_id)) {
                                (csrf(&v))
                                input name="reason" placeholder="reason" required;
                                button.deny type="submit" { "Deny" }
                            }
                        }
                    }
                }
            }
        }
    };
    let head = html! { thead { tr { th { "Request" } th { "Requester" } th { "Dataset" } th { "Purpose" } th { "Fields" } th { "Answer due" } th { "State" } th {} } } };
    let body = html! {
        h2 { "Incoming (this member decides)" }
        table.requests { (head) tbody { @for r in &incoming { (row(r, true)) } } }
        @if incoming.is_empty() { p { "No incoming requests." } }
        h2 { "Outgoing" }
        table { (head) tbody { @for r in &outgoing { (row(r, false)) } } }
        @if outgoing.is_empty() { p { "No outgoing requests." } }
    };
    layout(Some(&v), "Access requests", body).into_response()
}

#[derive(Deserialize)]
pub struct ApproveForm {
    csrf: String,
    #[serde(default)]
    expires: String,
}

pub async fn approve(d: St, v: Viewer, Path(id): Path<String>, axum::Form(f): axum::Form<ApproveForm>) -> Response {
    try_page!(v.require(Action::Approve));
    try_page!(v.check_csrf(&f.csrf));
    let Ok(request_id) = id.parse() else {
        return bad_request(&v, "Bad request id", "Not a request id.");
    };
    let expires = Some(f.expires.trim().to_string()).filter(|e| !e.is_empty());
    let req = Request::Approve { request_id, expires, max_fetches: None, max_queries: None };
    let _: serde_json::Value = try_page!(view(&d, &v, req).await);
    Redirect::to("/requests").into_response()
}

pub async fn deny(d: St, v: Viewer, Path(id): Path<String>, axum::Form(f): axum::Form<ReasonForm>) -> Response {
    try_page!(v.require(Action::Deny));
    try_page!(v.check_csrf(&f.csrf));
    let Ok(request_id) = id.parse() else {
        return bad_request(&v, "Bad request id", "Not a request id.");
    };
    let _: serde_json::Value = try_page!(view(&d, &v, Request::Deny { request_id, reason: f.reason }).await);
    Redirect::to("/requests").into_response()
}

pub async fn grants(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewGrants));
    let list: Vec<api::GrantView> = try_page!(view(&d, &v, Request::Grants).await);
    let body = html! {
        @if v.may(Action::Grant) {
            details {
                summary { "Grant access" }
                form.grant method="post" action="/grants" {
                    (csrf(&v))
                    label { "Dataset " input name="dataset" required; }
                    label { "To member " input name="to" required; }
                    label { "Purpose " input name="purpose" required; }
                    label { "Fields " input name="fields" placeholder="all"; }
                    label { "Expires " input name="expires" placeholder="default"; }
                    button type="submit" { "Grant" }
                }
            }
        }
        table.grants {
            thead { tr { th { "Grant" } th { "Role" } th { "Provider" } th { "Grantee" } th { "Dataset" } th { "Purpose" } th { "Fields" } th { "Expires" } th { "Use" } th { "State" } th {} } }
            tbody {
                @for g in &list {
                    tr data-grant=(g.grant_id) {
                        td { code { (g.grant_id) } } td { (g.role) } td { (g.provider) } td { (g.grantee) } td { (g.dataset) }
                        td { (g.purpose) } td { (g.fields.as_ref().map(|f| f.join(", ")).unwrap_or_else(|| "all".into())) }
                        td { (g.expires_at) }
                        td { (g.fetches) " fetches" @if let Some(m) = g.max_fetches { " of " (m) } ", " (g.queries) " queries" @if let Some(m) = g.max_queries { " of " (m) } }
                        td { @if g.revoked { "revoked" @if let Some(r) = &g.revoked_reason { ": " (r) } } @else if g.expired { "expired" } @else { "in force" } }
                        td {
                            @if g.role == "issued" && !g.revoked && v.may(Action::Revoke) {
                                form.inline.confirm method="post" action=(format!("/grants/{}/revoke", g.grant_id)) {
                                    (csrf(&v))
                                    input name="reason" placeholder="reason" required;
                                    button type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.is_empty() { p { "No grants." } }
    };
    layout(Some(&v), "Grants", body).into_response()
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf: String,
    dataset: String,
    to: String,
    purpose: String,
    #[serde(default)]
    fields: String,
    #[serde(default)]
    expires: String,
}

pub async fn grant(d: St, v: Viewer, axum::Form(f): axum::Form<GrantForm>) -> Response {
    try_page!(v.require(Action::Grant));
    try_page!(v.check_csrf(&f.csrf));
    let (Ok(dataset), Ok(to)) = (f.dataset.trim().parse(), f.to.trim().parse()) else {
        return bad_request(&v, "Bad grant", "Give a dataset id and a member id.");
    };
    let fields: Vec<String> = f.fields.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let req = Request::Grant(api::GrantRequest {
        dataset,
        to,
        purpose: f.purpose,
        fields: (!fields.is_empty()).then_some(fields),
        expires: Some(f.expires.trim().to_string()).filter(|e| !e.is_empty()),
        max_fetches: None,
        max_queries: None,
        not_before: None,
    });
    let _: serde_json::Value = try_page!(view(&d, &v, req).await);
    Redirect::to("/grants").into_response()
}

pub async fn revoke(d: St, v: Viewer, Path(id): Path<String>, axum::Form(f): axum::Form<ReasonForm>) -> Response {
    try_page!(v.require(Action::Revoke));
    try_page!(v.check_csrf(&f.csrf));
    let Ok(grant_id) = id.parse() else {
        return bad_request(&v, "Bad grant id", "Not a grant id.");
    };
    let _: serde_json::Value = try_page!(view(&d, &v, Request::Revoke { grant_id, reason: f.reason }).await);
    Redirect::to("/grants").into_response()
}

/// The latest log entries of some kinds.
async fn recent(d: &St, v: &Viewer, kinds: &[&str], limit: usize) -> Result<Vec<serde_json::Value>, Early> {
    let all: Vec<serde_json::Value> = view(
        d,
        v,
        Request::Provenance { dataset: None, peer: None, since: None, limit: Some(5000), key: None, archive: None },
    )
    .await?;
    // Newest first, as the log answers.
    Ok(all.into_iter().filter(|e| kinds.iter().any(|k| e["kind"] == *k)).take(limit).collect())
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub async fn exchanges(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewExchanges));
    let serving = d.node.serving();
    let receiving = d.node.receiving();
    let calls = try_page!(recent(&d, &v, &["calls-served", "calls-answered"], 50).await);
    let fetches = try_page!(recent(&d, &v, &["exchange-served", "exchange-received", "exchange-refused"], 50).await);
    let body = html! {
        h2 { "Fetches being served" }
        table {
            thead { tr { th { "Exchange" } th { "To" } th { "Dataset" } th { "Progress" } th { "Running" } } }
            tbody {
                @for s in &serving {
                    tr {
                        td { code { (s.id.to_string()) } } td { (s.requester) } td { (s.dataset) }
                        td { progress max=(s.size.max(1)) value=(s.sent) {} " " (s.sent) " of " (s.size) " bytes" }
                        td { (s.running_for.as_secs()) " s" }
                    }
                }
            }
        }
        @if serving.is_empty() { p { "No fetch is being served now." } }
        h2 { "Fetches being received" }
        table {
            thead { tr { th { "Exchange" } th { "From" } th { "Dataset" } th { "Progress" } th { "Running" } } }
            tbody {
                @for (id, r) in &receiving {
                    tr {
                        td { code { (id.to_string()) } } td { (r.provider) } td { (r.dataset) }
                        td { progress max=(r.size.max(1)) value=(r.done) {} " " (r.done) " of " (r.size) " bytes verified" }
                        td { (r.started.elapsed().as_secs()) " s" }
                    }
                }
            }
        }
        @if receiving.is_empty() { p { "No fetch is being received now." } }
        h2 { "Recent fetches" }
        (entries_table(&fetches))
        h2 { "Recent call batches" }
        table {
            thead { tr { th { "Time" } th { "Kind" } th { "Peer" } th { "Calls" } th { "Answered" } th { "Note" } } }
            tbody {
                @for e in &calls {
                    @let list = e["calls"].as_array().cloned().unwrap_or_default();
                    tr {
                        td { (text(&e["time"])) } td { (text(&e["kind"])) } td { (text(&e["peer"])) }
                        td { (list.len()) } td { (list.iter().filter(|c| c["outcome"] == "answered").count()) }
                        td { (text(&e["note"])) }
                    }
                }
            }
        }
    };
    layout(Some(&v), "Exchanges", body).into_response()
}

fn entries_table(entries: &[serde_json::Value]) -> Markup {
    html! {
        table.entries {
            thead { tr { th { "Seq" } th { "Time" } th { "Kind" } th { "Dataset" } th { "Peer" } th { "Note" } } }
            tbody {
                @for e in entries {
                    tr data-kind=(text(&e["kind"])) {
                        td { (text(&e["seq"])) } td { (text(&e["time"])) } td { (text(&e["kind"])) }
                        td { (text(&e["dataset"])) } td { (text(&e["peer"])) } td { (text(&e["note"])) }
                    }
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// Counts of one grouping: key → (calls, answered, not answered, bytes answered).
type Groups = std::collections::BTreeMap<String, (u64, u64, u64, u64)>;

pub async fn stats(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewStats));
    // Counts and bytes since the node started, kept in memory by the call path.
    let (mut by_peer, mut by_dataset, mut by_app) = (Groups::new(), Groups::new(), Groups::new());
    let mut total = (0u64, 0u64, 0u64, 0u64);
    for (k, st) in d.node.metrics().call_stats() {
        let side = if k.side == "served" { "served to" } else { "sent to" };
        for (g, key) in [
            (&mut by_peer, format!("{side} {}", k.peer)),
            (&mut by_dataset, k.dataset.clone()),
            (&mut by_app, k.app.clone()),
        ] {
            let x = g.entry(key).or_default();
            x.0 += st.calls;
            x.1 += st.answered;
            x.2 += st.not_answered;
            x.3 += st.bytes;
        }
        total.0 += st.calls;
        total.1 += st.answered;
        total.2 += st.not_answered;
        total.3 += st.bytes;
    }
    // Refusals by reason, from the latest batches in the log (the reasons are recorded there).
    let entries = try_page!(recent(&d, &v, &["calls-served", "calls-answered"], 5000).await);
    let mut reasons: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for c in entries.iter().flat_map(|e| e["calls"].as_array().cloned().unwrap_or_default()) {
        if let Some(r) = c["reason"].as_str() {
            *reasons.entry(r.to_string()).or_default() += 1;
        }
    }
    let (mut sent, mut served) = d.node.metrics().recent_batch_seconds();
    sent.sort_by(f64::total_cmp);
    served.sort_by(f64::total_cmp);
    let ms = |x: Option<f64>| x.map(|s| format!("{:.2} ms", s * 1000.0)).unwrap_or_else(|| "-".into());
    let group = |title: &str, g: &Groups| {
        // A bar per row: answered and not answered, to scale with the largest row.
        let most = g.values().map(|x| x.0).max().unwrap_or(0).max(1) as f64;
        let height = 22 * g.len().max(1);
        html! {
            h2 { (title) }
            svg.chart viewBox=(format!("0 0 620 {height}")) role="img" aria-label=(format!("{title}: calls")) {
                @for (i, (k, (n, a, _, _))) in g.iter().enumerate() {
                    @let y = 22 * i;
                    @let w_all = 400.0 * *n as f64 / most;
                    @let w_ok = 400.0 * *a as f64 / most;
                    text x="0" y=(y + 15) class="label" { (k) }
                    rect x="200" y=(y + 3) width=(format!("{w_all:.1}")) height="16" class="not-answered" {}
                    rect x="200" y=(y + 3) width=(format!("{w_ok:.1}")) height="16" class="answered" {}
                    text x=(format!("{:.1}", 206.0 + w_all)) y=(y + 15) class="value" { (n) }
                }
            }
            table.stats {
                thead { tr { th {} th { "Calls" } th { "Answered" } th { "Not answered" } th { "Bytes answered" } } }
                tbody { @for (k, (n, a, r, b)) in g { tr { td { (k) } td { (n) } td { (a) } td { (r) } td { (b) } } } }
            }
        }
    };
    let body = html! {
        p { "Since the node started: " (total.0) " calls, " (total.1) " answered, " (total.2) " not answered, "
            (total.3) " bytes of records answered." }
        table.stats {
            thead { tr { th { "Batch latency" } th { "batches" } th { "p50" } th { "p99" } } }
            tbody {
                tr { td { "sent (request to verified answer)" } td { (sent.len()) } td { (ms(percentile(&sent, 0.5))) } td { (ms(percentile(&sent, 0.99))) } }
                tr { td { "served (decode to signed answer)" } td { (served.len()) } td { (ms(percentile(&served, 0.5))) } td { (ms(percentile(&served, 0.99))) } }
            }
        }
        (group("By peer", &by_peer))
        (group("By dataset", &by_dataset))
        (group("By application", &by_app))
        h2 { "Refusals by reason (latest " (entries.len()) " batches in the log)" }
        table.stats {
            thead { tr { th { "Reason" } th { "Calls" } } }
            tbody { @for (r, n) in &reasons { tr { td { (r) } td { (n) } } } }
        }
    };
    layout(Some(&v), "Call statistics", body).into_response()
}

#[derive(Deserialize)]
pub struct LogFilter {
    #[serde(default)]
    dataset: Option<String>,
    #[serde(default)]
    peer: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

pub async fn provenance(d: St, v: Viewer, Query(f): Query<LogFilter>) -> Response {
    try_page!(v.require(Action::ViewProvenance));
    let nonempty = |s: &Option<String>| s.clone().filter(|x| !x.trim().is_empty());
    let dataset = match nonempty(&f.dataset).map(|s| s.parse()) {
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            return bad_request(&v, "Bad filter", "dataset is MEMBER/DATASET.");
        }
        None => None,
    };
    let peer = match nonempty(&f.peer).map(|s| s.parse()) {
        Some(Ok(p)) => Some(p),
        Some(Err(_)) => {
            return bad_request(&v, "Bad filter", "peer is a member id.");
        }
        None => None,
    };
    let req =
        Request::Provenance { dataset, peer, since: nonempty(&f.since), limit: Some(500), key: None, archive: None };
    let all: Vec<serde_json::Value> = try_page!(view(&d, &v, req).await);
    let kind = nonempty(&f.kind);
    let shown: Vec<serde_json::Value> =
        all.into_iter().filter(|e| kind.as_ref().is_none_or(|k| e["kind"] == k.as_str())).take(200).collect();
    let body = html! {
        form.search method="get" action="/provenance" {
            input name="dataset" placeholder="MEMBER/DATASET" value=(f.dataset.clone().unwrap_or_default());
            input name="peer" placeholder="peer" value=(f.peer.clone().unwrap_or_default());
            input name="kind" placeholder="kind" value=(f.kind.clone().unwrap_or_default());
            input name="since" placeholder="since (24h)" value=(f.since.clone().unwrap_or_default());
            button type="submit" { "Filter" }
        }
        @if v.may(Action::VerifyProvenance) {
            form.inline method="post" action="/provenance/verify" {
                (csrf(&v))
                button type="submit" { "Verify the log" }
            }
        }
        (entries_table(&shown))
    };
    layout(Some(&v), "Provenance", body).into_response()
}

pub async fn verify(d: St, v: Viewer, axum::Form(f): axum::Form<CsrfForm>) -> Response {
    try_page!(v.require(Action::VerifyProvenance));
    try_page!(v.check_csrf(&f.csrf));
    let report: serde_json::Value = try_page!(view(&d, &v, Request::ProvenanceVerify).await);
    let intact = report["intact"].as_bool().unwrap_or(false);
    let body = html! {
        p class=(if intact { "ok" } else { "error" }) {
            @if intact { "The log is intact." } @else { "The log is NOT intact." }
        }
        dl.facts {
            dt { "Entries" } dd { (text(&report["entries"])) }
            dt { "Head" } dd { (text(&report["head_seq"])) " " code { (text(&report["head_hash"])) } }
            dt { "Own checkpoints checked" } dd { (text(&report["checkpoints_checked"])) }
            dt { "Witnessed copies checked" } dd { (text(&report["witnesses_checked"])) }
        }
        pre { (serde_json::to_string_pretty(&report).unwrap_or_default()) }
    };
    layout(Some(&v), "Verification", body).into_response()
}

pub async fn apps(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewApps));
    let list: Vec<api::AppView> = try_page!(view(&d, &v, Request::AppList).await);
    let body = html! {
        table {
            thead { tr { th { "Application" } th { "Datasets" } th { "Rate" } th { "Calls" } th { "Last call" } th { "Created" } } }
            tbody {
                @for a in &list {
                    tr { td { (a.app) } td { (a.datasets.join(", ")) } td { (a.rate) "/s" } td { (a.calls) }
                         td { (a.last_call.clone().unwrap_or_default()) } td { (a.created) } }
                }
            }
        }
        @if list.is_empty() { p { "No applications (`deltafed app add`)." } }
    };
    layout(Some(&v), "Applications", body).into_response()
}

pub async fn users(d: St, v: Viewer) -> Response {
    try_page!(v.require(Action::ViewUsers));
    let list: Vec<api::UserView> = try_page!(view(&d, &v, Request::UserList).await);
    let body = html! {
        table {
            thead { tr { th { "User" } th { "Role" } th { "Created" } } }
            tbody { @for u in &list { tr { td { (u.user) } td { (u.role) } td { (u.created) } } } }
        }
        p.hint { (PreEscaped("Users are added and removed with <code>deltafed user</code> on the node.")) }
    };
    layout(Some(&v), "Users", body).into_response()
}
