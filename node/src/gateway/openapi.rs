//! `GET /openapi.json`: the OpenAPI 3.1 description of the gateway, exactly the committed
//! docs/openapi.json (compiled in). A unit test checks it describes every route the router
//! serves and no other; an integration test compares what the running node serves with the file.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// docs/openapi.json.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

pub async fn document() -> Response {
    let mut res = DOCUMENT.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
pub fn parsed() -> serde_json::Result<serde_json::Value> {
    serde_json::from_str(DOCUMENT)
}
