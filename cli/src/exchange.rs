//! Commands about access and exchanges, answered by the running node: request, requests,
//! approve, deny, grant, grants, revoke, fetch, query.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use deltafed_node::admin::api::{
    Decided, Fetched, GrantIssued, GrantRequest, GrantView, QueryResult, QueryResults, Request, RequestSent,
    RequestView, Revoked,
};
use deltafed_protocol::{DatasetId, DatasetRef, GrantId, MemberId, RequestId};

use crate::cli::Global;
use crate::output::emit;
use crate::remote::client;

fn split_fields(f: Option<String>) -> Option<Vec<String>> {
    f.map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// MEMBER/DATASET to ask for.
    pub dataset: DatasetRef,
    /// Why the data is needed (required; it goes into the grant and every record of its use).
    #[arg(long)]
    pub purpose: String,
    /// Only these fields, comma-separated.
    #[arg(long, value_name = "a,b")]
    pub fields: Option<String>,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The request's id (see `deltafed requests`).
    pub request_id: RequestId,
    /// RFC 3339 time or a duration such as 30d, 12h, 15m (default from the config, 90d).
    #[arg(long)]
    pub expires: Option<String>,
    /// Most fetches the grant allows.
    #[arg(long)]
    pub max_fetches: Option<u64>,
    /// Most record queries the grant allows.
    #[arg(long)]
    pub max_queries: Option<u64>,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// One of this member's datasets.
    pub dataset: DatasetId,
    /// The member receiving access.
    #[arg(long)]
    pub to: MemberId,
    /// What the data may be used for.
    #[arg(long)]
    pub purpose: String,
    /// Only these fields, comma-separated (a projection: the grantee never receives the others).
    #[arg(long, value_name = "a,b")]
    pub fields: Option<String>,
    /// RFC 3339 time or a duration such as 30d, 12h, 15m (default from the config, 90d).
    #[arg(long)]
    pub expires: Option<String>,
    /// Most fetches the grant allows.
    #[arg(long)]
    pub max_fetches: Option<u64>,
    /// Most record queries the grant allows.
    #[arg(long)]
    pub max_queries: Option<u64>,
    /// The grant is valid only from this time: RFC 3339, or a duration from now such as 7d
    /// (default now). `--expires` still counts from now.
    #[arg(long)]
    pub not_before: Option<String>,
}

pub fn request(g: &Global, a: RequestArgs) -> Result<ExitCode> {
    let r: RequestSent = client(g)?.call(&Request::AccessRequest {
        dataset: a.dataset,
        purpose: a.purpose,
        fields: split_fields(a.fields),
    })?;
    emit(g.json, &r, || {
        let note = if r.delivered { "sent" } else { "queued: the provider is not connected; it is sent when it is" };
        format!("{}\n{} for {} ({note})", r.request_id, r.provider, r.dataset)
    })
}

pub fn requests(g: &Global) -> Result<ExitCode> {
    let rs: Vec<RequestView> = client(g)?.call(&Request::Requests)?;
    emit(g.json, &rs, || {
        if rs.is_empty() {
            return "no access requests".into();
        }
        let mut s = String::new();
        for r in &rs {
            let who =
                if r.direction == "incoming" { format!("from {}", r.requester) } else { format!("to {}", r.provider) };
            let state = if r.overdue { "pending, OVERDUE".to_string() } else { r.state.clone() };
            s += &format!("{}  {:<8} {:<14} {}  [{}]\n", r.request_id, r.direction, who, r.dataset, state);
            s += &format!("    purpose: {}", r.purpose);
            if let Some(f) = &r.fields {
                s += &format!("; fields {}", f.join(","));
            }
            if let Some(gid) = &r.grant_id {
                s += &format!("; grant {gid}");
            }
            if let Some(reason) = &r.reason {
                s += &format!("; reason: {reason}");
            }
            s += &format!("; due {}\n", r.deadline);
        }
        s
    })
}

pub fn approve(g: &Global, a: ApproveArgs) -> Result<ExitCode> {
    let d: Decided = client(g)?.call(&Request::Approve {
        request_id: a.request_id,
        expires: a.expires,
        max_fetches: a.max_fetches,
        max_queries: a.max_queries,
    })?;
    emit(g.json, &d, || format!("approved {}: grant {}", d.request_id, d.grant_id.clone().unwrap_or_default()))
}

pub fn deny(g: &Global, id: RequestId, reason: String) -> Result<ExitCode> {
    let d: Decided = client(g)?.call(&Request::Deny { request_id: id, reason })?;
    emit(g.json, &d, || format!("denied {}", d.request_id))
}

pub fn grant(g: &Global, a: GrantArgs) -> Result<ExitCode> {
    let r: GrantIssued = client(g)?.call(&Request::Grant(GrantRequest {
        dataset: a.dataset,
        to: a.to,
        purpose: a.purpose,
        fields: split_fields(a.fields),
        expires: a.expires,
        max_fetches: a.max_fetches,
        max_queries: a.max_queries,
        not_before: a.not_before,
    }))?;
    emit(g.json, &r, || {
        let note = if r.delivered {
            format!("{} holds it", r.grantee)
        } else {
            format!("{} is not connected; it receives the grant when it connects", r.grantee)
        };
        format!("{}\ngranted {} to {} until {} ({note})", r.grant_id, r.dataset, r.grantee, r.expires_at)
    })
}

pub fn grants(g: &Global) -> Result<ExitCode> {
    let gs: Vec<GrantView> = client(g)?.call(&Request::Grants)?;
    emit(g.json, &gs, || {
        if gs.is_empty() {
            return "no grants".into();
        }
        let mut s = String::new();
        for v in &gs {
            let state = if v.revoked {
                format!("REVOKED: {}", v.revoked_reason.clone().unwrap_or_default())
            } else if v.expired {
                "expired".to_string()
            } else {
                "valid".to_string()
            };
            s += &format!(
                "{}  {:<8} {} -> {}  {}  [{state}] until {}\n",
                v.grant_id, v.role, v.provider, v.grantee, v.dataset, v.expires_at
            );
            s += &format!("    purpose: {}", v.purpose);
            if let Some(f) = &v.fields {
                s += &format!("; fields {}", f.join(","));
            }
            match v.max_fetches {
                Some(m) => s += &format!("; fetches {}/{m}", v.fetches),
                None => s += &format!("; fetches {}", v.fetches),
            }
            match v.max_queries {
                Some(m) => s += &format!("; queries {}/{m}\n", v.queries),
                None => s += &format!("; queries {}\n", v.queries),
            }
        }
        s
    })
}

pub fn revoke(g: &Global, id: GrantId, reason: String) -> Result<ExitCode> {
    let r: Revoked = client(g)?.call(&Request::Revoke { grant_id: id, reason })?;
    emit(g.json, &r, || {
        let note = if r.delivered { "notified" } else { "notified when it connects" };
        format!("revoked {} ({} {note})", r.grant_id, r.grantee)
    })
}

pub fn fetch(g: &Global, dataset: DatasetRef, out: PathBuf) -> Result<ExitCode> {
    let out = std::path::absolute(&out).with_context(|| format!("cannot resolve {}", out.display()))?;
    let mut c = client(g)?;
    let bar = (!g.json && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let value = c.call_with_progress(&Request::Fetch { dataset, out }, |p| {
        if let Some(b) = &bar {
            b.set_length(p.total);
            b.set_position(p.done);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let f: Fetched = serde_json::from_value(value?).context("the node's answer was not understood")?;
    emit(g.json, &f, || {
        let resumed =
            if f.resumed_from > 0 { format!(" (resumed at {} bytes)", f.resumed_from) } else { String::new() };
        format!(
            "fetched {}/{}@{}: {} bytes, hash {} verified, written to {}{resumed}",
            f.publisher, f.dataset, f.version, f.bytes, f.content_hash, f.out
        )
    })
}

pub fn query(g: &Global, dataset: DatasetRef, mut keys: Vec<String>) -> Result<ExitCode> {
    if keys.len() > 1 {
        let q: QueryResults = client(g)?.call(&Request::Query { dataset, key: None, keys })?;
        return emit(g.json, &q, || {
            q.results
                .iter()
                .map(|r| match (&r.records, &r.error) {
                    (_, Some(e)) => format!("{}: refused: {e}", r.key),
                    (Some(recs), None) => {
                        let recs: Vec<String> =
                            recs.iter().map(|x| serde_json::Value::Object(x.clone()).to_string()).collect();
                        format!("{}: {}", r.key, if recs.is_empty() { "no record".into() } else { recs.join(" ") })
                    }
                    (None, None) => format!("{}: no answer", r.key),
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let key = keys.pop();
    let q: QueryResult = client(g)?.call(&Request::Query { dataset, key, keys })?;
    emit(g.json, &q, || {
        if q.records.is_empty() {
            return format!("no record with key {:?} in {}", q.key, q.dataset);
        }
        q.records.iter().map(|r| serde_json::Value::Object(r.clone()).to_string()).collect::<Vec<_>>().join("\n")
    })
}
