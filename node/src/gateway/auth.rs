//! Who is calling: the bearer token names the application; `X-Deltafed-On-Behalf-Of`, when
//! present, the end user or case it acts for. Then what it may do: the datasets it was given,
//! at its rate.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use deltafed_protocol::{DatasetRef, Timestamp};

use super::Gw;
use super::problem::Problem;
use crate::apps::{App, Throttled};
use crate::node::Caller;

/// The optional header naming whom the application acts for.
pub const ON_BEHALF_OF: &str = "x-deltafed-on-behalf-of";
/// Longest on-behalf-of value, in bytes.
pub const MAX_ON_BEHALF_OF: usize = 256;

/// An authenticated call.
pub struct Authed {
    pub app: Arc<App>,
    pub on_behalf_of: Option<String>,
}

impl FromRequestParts<Gw> for Authed {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, gw: &Gw) -> Result<Authed, Problem> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized(
                "no bearer token: send `Authorization: Bearer TOKEN` with the token `deltafed app add` printed",
                false,
            )
        })?;
        let unknown = || {
            Problem::unauthorized(
                "the bearer token is not one of this node's applications (it may have been rotated or removed)",
                true,
            )
        };
        let text = header.to_str().map_err(|_| unknown())?;
        let (scheme, token) = text.split_once(' ').ok_or_else(unknown)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Problem::unauthorized(
                format!("the Authorization header uses the {scheme:?} scheme; send `Authorization: Bearer TOKEN`"),
                false,
            ));
        }
        let app = gw.node.app_by_token(token.trim()).ok_or_else(unknown)?;
        let on_behalf_of = match parts.headers.get(ON_BEHALF_OF) {
            None => None,
            Some(v) => Some(on_behalf_of(v.as_bytes())?),
        };
        Ok(Authed { app, on_behalf_of })
    }
}

/// Checks an on-behalf-of value: UTF-8 text, printable, not empty, bounded.
fn on_behalf_of(bytes: &[u8]) -> Result<String, Problem> {
    let bad = |why: &str| Problem::invalid(format!("the X-Deltafed-On-Behalf-Of header {why}"));
    if bytes.len() > MAX_ON_BEHALF_OF {
        return Err(bad(&format!("is longer than {MAX_ON_BEHALF_OF} bytes")));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text"))?.trim();
    if text.is_empty() {
        return Err(bad("is empty; leave it out instead"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("holds control characters"));
    }
    Ok(text.to_string())
}

impl Authed {
    /// Who the call is for, as the node records it.
    pub fn caller(&self) -> Caller {
        Caller { app: Some(self.app.name.clone()), on_behalf_of: self.on_behalf_of.clone() }
    }

    /// Refuses a dataset the application was not given.
    pub fn allow(&self, target: &DatasetRef) -> Result<(), Problem> {
        if self.app.may_call(target) {
            return Ok(());
        }
        Err(Problem::not_allowed(format!(
            "application {} may not call {}: it was given {}",
            self.app.name,
            target.unversioned(),
            if self.app.datasets.is_empty() {
                "no datasets".to_string()
            } else {
                self.app.datasets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            }
        )))
    }

    /// Counts `n` calls against the application's rate.
    pub fn admit(&self, n: u32) -> Result<(), Problem> {
        let now = Timestamp::from_system(std::time::SystemTime::now());
        match self.app.admit(n, now) {
            Ok(()) => Ok(()),
            Err(Throttled::Wait(d)) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                Err(Problem::rate_limited(
                    format!(
                        "application {} may make {} calls per second; try again in {secs}s",
                        self.app.name, self.app.rate
                    ),
                    secs,
                ))
            }
            Err(Throttled::TooMany { asked, rate }) => Err(Problem::invalid(format!(
                "{asked} calls at once exceed the {rate} calls per second application {} may make; split them into smaller batches",
                self.app.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_behalf_of_is_bounded_printable_text() {
        assert_eq!(on_behalf_of("case 2026-117 / 王五".as_bytes()).expect("ok"), "case 2026-117 / 王五");
        assert!(on_behalf_of(b"").is_err());
        assert!(on_behalf_of(b"  ").is_err());
        assert!(on_behalf_of(b"a\x1bb").is_err());
        assert!(on_behalf_of(&[0xff, 0xfe]).is_err());
        assert!(on_behalf_of("x".repeat(MAX_ON_BEHALF_OF + 1).as_bytes()).is_err());
        assert!(on_behalf_of("x".repeat(MAX_ON_BEHALF_OF).as_bytes()).is_ok());
    }
}
