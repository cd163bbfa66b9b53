//! `/v1/catalog` and the record calls `/v1/records/...`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use deltafed_protocol::{DatasetId, DatasetRef, MemberId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Gw;
use super::auth::Authed;
use super::problem::Problem;
use crate::admin::api::CatalogItem;

/// Most keys in one batch call.
pub const MAX_KEYS: usize = 1000;
/// Longest key, in bytes (after percent-decoding).
pub const MAX_KEY_BYTES: usize = 1024;

/// Path parameters, with the router's rejection turned into a problem.
pub struct PathOf<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Gw> for PathOf<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, gw: &Gw) -> Result<Self, Problem> {
        Ok(PathOf(Path::<T>::from_request_parts(parts, gw).await?.0))
    }
}

/// A JSON body, with the router's rejection turned into a problem.
pub struct JsonOf<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Gw> for JsonOf<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, gw: &Gw) -> Result<Self, Problem> {
        let Json(v) = Json::<T>::from_request(req, gw).await.map_err(|e: JsonRejection| Problem::from(e))?;
        Ok(JsonOf(v))
    }
}

/// `MEMBER/DATASET` from the path, checked.
pub fn dataset(member: &str, dataset: &str) -> Result<DatasetRef, Problem> {
    let publisher: MemberId = member.parse().map_err(|e| Problem::invalid(format!("{e}")))?;
    let dataset: DatasetId = dataset.parse().map_err(|e| Problem::invalid(format!("{e}")))?;
    Ok(DatasetRef { publisher, dataset, version: None })
}

fn check_key(key: &str) -> Result<(), Problem> {
    if key.is_empty() {
        return Err(Problem::invalid("an empty key matches no record; give the key field's value"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Problem::invalid(format!("a key is {} bytes; at most {MAX_KEY_BYTES} are accepted", key.len())));
    }
    Ok(())
}

/// `GET /v1/catalog`: the datasets this application may call, as `deltafed catalog --json`
/// lists them.
pub async fn catalog(State(gw): State<Gw>, who: Authed) -> Result<Json<Value>, Problem> {
    who.admit(1)?;
    let items: Vec<CatalogItem> = gw
        .node
        .catalog(None, None)
        .map_err(|e| Problem::from_node(&e))?
        .iter()
        .map(|m| m.body())
        .filter(|m| who.app.may_call(&m.dataset_ref()))
        .map(CatalogItem::from)
        .collect();
    Ok(Json(json!({ "datasets": items })))
}

/// `GET /v1/records/{member}/{dataset}/{key}`: the records with one key.
pub async fn record(
    State(gw): State<Gw>,
    who: Authed,
    PathOf((member, ds, key)): PathOf<(String, String, String)>,
) -> Result<Json<Value>, Problem> {
    let target = dataset(&member, &ds)?;
    check_key(&key)?;
    who.allow(&target)?;
    who.admit(1)?;
    let answered = gw.node.calls(target, vec![key], who.caller()).await.map_err(|e| Problem::from_node(&e))?;
    let Some(answer) = answered.results.into_iter().next() else {
        return Err(Problem::from_node(&crate::node::Error::internal("the call", "no answer for the key")));
    };
    let records = answer.outcome.map_err(|e| Problem::from_node(&e))?;
    let mut body = json!({ "dataset": answered.dataset.to_string(), "records": records });
    if let Some(t) = answer.read {
        body["read_at"] = json!(t.to_string());
    }
    Ok(Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    keys: Vec<String>,
}

/// `POST /v1/records/{member}/{dataset}` with `{"keys": [...]}`: one call per key, answered in
/// the order asked; a key that failed on its own carries a problem instead of records.
pub async fn records(
    State(gw): State<Gw>,
    who: Authed,
    PathOf((member, ds)): PathOf<(String, String)>,
    JsonOf(body): JsonOf<Keys>,
) -> Result<Json<Value>, Problem> {
    let target = dataset(&member, &ds)?;
    let n = body.keys.len();
    if n == 0 || n > MAX_KEYS {
        return Err(Problem::invalid(format!("give 1 to {MAX_KEYS} keys, not {n}")));
    }
    for k in &body.keys {
        check_key(k)?;
    }
    who.allow(&target)?;
    who.admit(u32::try_from(n).unwrap_or(u32::MAX))?;
    let answered = gw.node.calls(target, body.keys, who.caller()).await.map_err(|e| Problem::from_node(&e))?;
    let results: Vec<Value> = answered
        .results
        .into_iter()
        .map(|a| match a.outcome {
            Ok(records) => match a.read {
                Some(t) => json!({ "key": a.key, "records": records, "read_at": t.to_string() }),
                None => json!({ "key": a.key, "records": records }),
            },
            Err(e) => json!({ "key": a.key, "error": Problem::from_node(&e).to_value() }),
        })
        .collect();
    Ok(Json(json!({ "dataset": answered.dataset.to_string(), "results": results })))
}
