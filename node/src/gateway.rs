//! The application gateway: an HTTP/1.1 JSON API for local applications, apart from the admin
//! socket. An application holds a bearer token (`deltafed app add`) and may call the datasets it
//! was given, at its rate; it can do nothing else (no grants, no publishing, nothing of the
//! admin API). docs/gateway.md describes the API; docs/openapi.json is its OpenAPI document,
//! served at `/openapi.json`.
//!
//! | file | what |
//! |---|---|
//! | `problem.rs` | RFC 9457 problem details: every error, the router's own rejections included |
//! | `auth.rs` | the bearer token, the on-behalf-of header, the app's rate |
//! | `routes.rs` | `/v1/catalog` and `/v1/records/...` |
//! | `content.rs` | `/v1/datasets/{member}/{dataset}/content`, streamed as it is verified |
//! | `conn.rs` | listening: TLS, connection limits, idle and header timeouts |
//! | `openapi.rs` | `/openapi.json` |
//!
//! Bounds, so that no client can make the gateway grow without limit: connections (and each
//! connection's buffer), requests in flight, concurrent content streams, the request body,
//! the time to send a request's headers, to produce a response, and to make any progress on a
//! connection at all.
//!
//! The node refuses to start the gateway on an address beyond loopback without TLS: a bearer
//! token sent in clear over a network can be copied by anyone on the path.

mod auth;
mod conn;
mod content;
mod openapi;
mod problem;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

pub use conn::{Bound, Error, bind, bind_http, listen_on, serve, serve_router};
use problem::Problem;

use crate::node::Node;

/// Largest request body (a batch of 1,000 keys of up to [`routes::MAX_KEY_BYTES`] fits).
const MAX_BODY: usize = 1536 * 1024;
/// Requests being answered at once; past it new ones are answered 503 at once. At 10,000
/// calls/s a stall of 100 ms (a disk flush) already holds a thousand.
const MAX_IN_FLIGHT: usize = 2048;
/// Content streams at once (each holds a window of chunks in memory).
const MAX_STREAMS: usize = 4;
/// How long a request may take to produce its response (a content stream's body is not
/// counted: it is bounded by progress, see `conn.rs`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler gets.
#[derive(Clone)]
struct Gw {
    node: Node,
    in_flight: Arc<Semaphore>,
    streams: Arc<Semaphore>,
    /// Content streams' pumps run as the node's tasks, so shutdown waits for them.
    tasks: TaskTracker,
}

/// The router, and the routes it serves (method and path), which the OpenAPI test checks.
struct Routes {
    router: Router<Gw>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, Gw>,
        T: 'static,
    {
        // Every method used here has a filter; a typo would fail the OpenAPI test first.
        if let Ok(filter) = MethodFilter::try_from(method.clone()) {
            self.router = self.router.route(path, on(filter, handler));
            self.list.push((method, path));
        }
        self
    }
}

fn routes() -> Routes {
    Routes { router: Router::new(), list: Vec::new() }
        .add(Method::GET, "/openapi.json", openapi::document)
        .add(Method::GET, "/v1/catalog", routes::catalog)
        .add(Method::GET, "/v1/records/{member}/{dataset}/{key}", routes::record)
        .add(Method::POST, "/v1/records/{member}/{dataset}", routes::records)
        .add(Method::GET, "/v1/datasets/{member}/{dataset}/content", content::content)
}

/// The whole HTTP application.
fn router(node: Node, tasks: TaskTracker) -> Router {
    let gw = Gw {
        node,
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        tasks,
    };
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(gw.clone(), bounded))
        .with_state(gw)
}

/// Bounds each request: a place among those in flight, and a deadline for its response.
async fn bounded(State(gw): State<Gw>, req: Request, next: Next) -> Response {
    let Ok(_permit) = gw.in_flight.clone().try_acquire_owned() else {
        return Problem::busy("the gateway is answering as many requests as it takes; try again shortly")
            .into_response();
    };
    let answer = async move {
        match read_body(req).await {
            Ok(req) => next.run(req).await,
            Err(p) => p.into_response(),
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
        Ok(response) => response,
        Err(_) => {
            Problem::busy(format!("no answer within {}s; try again later", REQUEST_TIMEOUT.as_secs())).into_response()
        }
    }
}

/// Reads the whole request body (at most [`MAX_BODY`]) before any handler answers. A response
/// sent with the request's body unread makes the server close the connection, which a client
/// may already be reusing for its next request; read first, every answer (a 401 or a 404 to a
/// POST included) leaves the connection fit for the next one.
async fn read_body(req: Request) -> Result<Request, Problem> {
    let too_large = || Problem::payload_too_large(format!("the request body is larger than {MAX_BODY} bytes"));
    let (parts, body) = req.into_parts();
    // Past the limit (read that far, no further, so that a client which sent a little too much
    // can still read the answer), or the client went away mid-body.
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| too_large())?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; the routes are described at /openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::method_not_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_in_the_openapi_document_and_nothing_else() {
        let doc = openapi::parsed().expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let mut described: Vec<(String, String)> = Vec::new();
        for (path, item) in paths {
            for (method, _) in item.as_object().expect("path item").iter().filter(|(k, _)| *k != "parameters") {
                described.push((method.to_uppercase(), path.clone()));
            }
        }
        described.sort();
        let mut served: Vec<(String, String)> =
            routes().list.iter().map(|(m, p)| (m.to_string(), (*p).to_string())).collect();
        served.sort();
        assert_eq!(served, described, "routes served vs. described in docs/openapi.json");
        // Every /v1 operation documents the errors every call can meet.
        for (path, item) in paths.iter().filter(|(p, _)| p.starts_with("/v1/")) {
            for (method, op) in item.as_object().expect("path item").iter().filter(|(k, _)| *k != "parameters") {
                let responses = op["responses"].as_object().expect("responses");
                let mut statuses = vec!["200", "400", "401", "429", "503"];
                if path.contains("{dataset}") {
                    statuses.extend(["403", "404"]);
                }
                for status in statuses {
                    assert!(responses.contains_key(status), "{method} {path} does not describe {status}");
                }
                assert!(!op["security"].is_null(), "{method} {path} names no security");
            }
        }
    }
}
