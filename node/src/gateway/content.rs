//! `GET /v1/datasets/{member}/{dataset}/content`: the dataset (the projection the grant
//! imposes) streamed while it is fetched. Each chunk is verified against the provider's signed
//! chunk table before it is sent, and the last one only once the whole matched the ticket's
//! hash; a chunk that fails ends the response short of its `Content-Length` (the connection is
//! closed), so an application never receives unverified bytes as a complete answer.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deltafed_protocol::manifest::Format;

use super::Gw;
use super::auth::Authed;
use super::problem::Problem;
use super::routes::{PathOf, dataset};

/// The signed hash of exactly the bytes sent (BLAKE3, hex).
pub const CONTENT_HASH: &str = "x-deltafed-content-hash";
/// The dataset and version sent, `MEMBER/DATASET@VERSION`.
pub const DATASET: &str = "x-deltafed-dataset";

fn content_type(f: Format) -> &'static str {
    match f {
        Format::Csv => "text/csv; charset=utf-8",
        Format::Jsonl => "application/jsonl",
        Format::Raw => "application/octet-stream",
    }
}

pub async fn content(
    State(gw): State<Gw>,
    who: Authed,
    PathOf((member, ds)): PathOf<(String, String)>,
) -> Result<Response, Problem> {
    let target = dataset(&member, &ds)?;
    who.allow(&target)?;
    // A stream holds chunks in memory while it runs: only a few at once.
    let Ok(permit) = gw.streams.clone().try_acquire_owned() else {
        return Err(Problem::busy("the gateway is streaming as many datasets as it takes; try again shortly"));
    };
    who.admit(1)?;
    let streaming = gw.node.fetch_stream(target, who.caller()).await.map_err(|e| Problem::from_node(&e))?;
    gw.tasks.spawn(streaming.pump);
    let (size, hash, name) = (streaming.size, streaming.content_hash.to_string(), streaming.dataset.to_string());
    let chunks = futures::stream::unfold((streaming.chunks, Some(permit)), |(mut rx, permit)| async move {
        // The permit lives as long as the body does.
        let item = rx.recv().await?;
        Some((item.map_err(|e| std::io::Error::other(e.to_string())), (rx, permit)))
    });
    let mut res = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(streaming.format)));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&hash) {
        h.insert(CONTENT_HASH, v);
    }
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(DATASET, v);
    }
    Ok(res)
}
