//! Errors as RFC 9457 problem details (`application/problem+json`): `type`, `title`, `status`,
//! `detail`. Every error the gateway answers is one, including what the router itself rejects
//! (a bad path, a body that is not JSON, one that is too large).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::node;

/// The media type of problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem, as answered.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// `urn:deltafed:problem:KIND`; the kinds are listed in docs/gateway.md.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip)]
    retry_after: Option<u64>,
    #[serde(skip)]
    authenticate: Option<&'static str>,
}

impl Problem {
    fn new(status: StatusCode, kind: &str, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:deltafed:problem:{kind}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            authenticate: None,
        }
    }

    /// No token, or one that is not (or no longer) an application's.
    pub fn unauthorized(detail: impl Into<String>, presented: bool) -> Problem {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        // RFC 6750: a request without credentials gets the scheme; a bad token says so.
        p.authenticate = Some(if presented {
            "Bearer realm=\"deltafed\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"deltafed\""
        });
        p
    }

    /// The application was not given this dataset.
    pub fn not_allowed(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "not-allowed", "Dataset not allowed for this application", detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid", "Bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn method_not_allowed() -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "this route does not take that method; see /openapi.json",
        )
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large", detail)
    }

    /// Over the application's rate; `retry_after` in whole seconds.
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> Problem {
        let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many calls", detail);
        p.retry_after = Some(retry_after.max(1));
        p
    }

    /// The gateway is at one of its bounds.
    pub fn busy(detail: impl Into<String>) -> Problem {
        let mut p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "Gateway busy", detail);
        p.retry_after = Some(1);
        p
    }

    /// A node operation's error, by its kind.
    pub fn from_node(e: &node::Error) -> Problem {
        match e {
            node::Error::Refused(reason) => Problem::new(StatusCode::FORBIDDEN, "refused", "Refused", reason.clone()),
            node::Error::NotFound(what) => Problem::not_found(what.clone()),
            node::Error::Invalid { message, .. } => Problem::invalid(message.clone()),
            node::Error::Unavailable(why) => {
                let mut p =
                    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Provider unavailable", why.clone());
                p.retry_after = Some(5);
                p
            }
            node::Error::Internal { context, .. } => {
                // The cause stays in the node's log; the application learns only where it was.
                tracing::error!(error = %e, "gateway call failed");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    format!("the node failed in {context}; its log says more"),
                )
            }
        }
    }

    /// What the router rejected on its own, by the status it chose.
    fn rejected(status: StatusCode, detail: String) -> Problem {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Problem::payload_too_large(detail),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                status,
                "unsupported-media-type",
                "Unsupported media type",
                format!("{detail}; send `Content-Type: application/json`"),
            ),
            s if s.is_server_error() => Problem::new(status, "internal", "Internal error", detail),
            _ => Problem::invalid(detail),
        }
    }

    /// The problem as a JSON value (carried per key in a batch answer).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl From<PathRejection> for Problem {
    fn from(r: PathRejection) -> Problem {
        Problem::rejected(r.status(), format!("bad path: {}", r.body_text()))
    }
}

impl From<JsonRejection> for Problem {
    fn from(r: JsonRejection) -> Problem {
        Problem::rejected(r.status(), r.body_text())
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(a) = self.authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(a));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_map_to_statuses_and_problem_documents() {
        let cases = [
            (node::Error::refused("zhejiang refused: grant g was revoked"), 403, "refused"),
            (node::Error::not_found("zhejiang/x is not in the catalog"), 404, "not-found"),
            (node::Error::invalid("KEY", "bad key"), 400, "invalid"),
            (node::Error::Unavailable("zhejiang did not answer".into()), 503, "unavailable"),
            (node::Error::internal("the database", "disk full"), 500, "internal"),
        ];
        for (e, status, kind) in cases {
            let p = Problem::from_node(&e);
            assert_eq!(p.status, status, "{e}");
            let v = p.to_value();
            assert_eq!(v["type"], format!("urn:deltafed:problem:{kind}"));
            assert_eq!(v["status"], status);
            assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
            assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()));
            assert_eq!(v.as_object().map(|o| o.len()), Some(4), "{v}");
        }
        let internal = Problem::from_node(&node::Error::internal("the database", "secret path /x/y"));
        assert!(!internal.detail.contains("/x/y"), "causes stay in the log: {}", internal.detail);
        let r = Problem::rate_limited("slow down", 0).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let r = Problem::unauthorized("no token", false).into_response();
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"deltafed\"");
    }
}
