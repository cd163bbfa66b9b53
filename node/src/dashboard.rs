//! The dashboard: server-rendered pages for the people who run and decide (`deltafed user add`),
//! on `[dashboard] listen`, apart from the admin socket and the gateway.
//!
//! | file | what |
//! |---|---|
//! | `dashboard.rs` | routes, login and sessions, the CSRF check, security headers |
//! | `dashboard/pages.rs` | every page and form, from the admin API's own views |
//! | `dashboard/assets.rs` | the stylesheet and the little script, served from the binary |
//!
//! Who may see and do what is decided by [`crate::roles::permits`], asked for every page and
//! every form (a page shows only the buttons its viewer may press; a forged post is refused all
//! the same). Decisions go through [`Node::admin_as`] with the user as actor, so the provenance
//! log records who took each one. Sessions are in memory (a restart logs everyone out): a
//! random id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` over HTTPS), a CSRF token per
//! session in every form, no secret ever in a URL.

mod assets;
mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::DataDir;
use crate::config::DashboardConfig;
use crate::gateway;
use crate::node::Node;
use crate::roles::{Action, Actor, Role, permits};

const COOKIE: &str = "deltafed_session";
const SESSION_PREFIX: &str = "dfsess_";
const SESSION_CONTEXT: &str = "deltafed 2026-12 dashboard session v1";
/// A session ends this long after login.
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once; expired ones are dropped first.
const MAX_SESSIONS: usize = 1024;
/// Largest form accepted.
const MAX_FORM: usize = 16 * 1024;

/// Binds the dashboard's socket (HTTPS with `tls_cert` and `tls_key`, only HTTPS beyond loopback).
pub async fn bind(cfg: &DashboardConfig, dir: &DataDir) -> Result<gateway::Bound, gateway::Error> {
    gateway::bind_http("dashboard", cfg.listen, cfg.tls_cert.as_ref(), cfg.tls_key.as_ref(), dir).await
}

/// Serves the dashboard until shutdown.
pub async fn serve(bound: gateway::Bound, node: Node, tasks: TaskTracker, shutdown: CancellationToken) {
    let app = router(node, bound.is_tls());
    gateway::serve_router(bound, app, tasks, shutdown).await;
}

/// One login.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Every form carries it; a post without it is refused.
    pub csrf: String,
    expires: Instant,
}

/// The logins, by the hash of their cookie.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_hash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new session for `user`: its cookie value, or `None` when the table is full of live
    /// sessions.
    fn start(&self, user: &str, role: Role) -> Option<String> {
        let (cookie, hash) = crate::secret::new(SESSION_PREFIX, SESSION_CONTEXT).ok()?;
        let (csrf, _) = crate::secret::new("", SESSION_CONTEXT).ok()?;
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        map.insert(hash, Session { user: user.into(), role, csrf, expires: now + SESSION_TTL });
        Some(cookie)
    }

    fn get(&self, cookie: &str) -> Option<Session> {
        if !crate::secret::well_formed(SESSION_PREFIX, cookie) {
            return None;
        }
        let hash = crate::secret::hash(SESSION_CONTEXT, cookie);
        let mut map = self.lock();
        match map.get(&hash) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&hash);
                None
            }
            None => None,
        }
    }

    fn end(&self, cookie: &str) {
        self.lock().remove(&crate::secret::hash(SESSION_CONTEXT, cookie));
    }

    /// Ends every session of `user` (removed).
    pub fn end_user(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }
}

#[derive(Clone)]
struct Dash {
    node: Node,
    /// `Secure` on the cookie: only when served over HTTPS (a browser drops a Secure cookie
    /// set over plain HTTP, which is loopback only).
    secure: bool,
    logins: Arc<DefaultDirectRateLimiter>,
}

fn router(node: Node, secure: bool) -> Router {
    // Guessing secrets is hopeless (256 bits), but a flood of logins is still refused.
    let quota = Quota::per_second(std::num::NonZeroU32::MIN.saturating_add(9));
    let dash = Dash { node, secure, logins: Arc::new(RateLimiter::direct(quota)) };
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(pages::overview))
        .route("/status", get(pages::status))
        .route("/catalog", get(pages::catalog))
        .route("/catalog/publish", post(pages::publish))
        .route("/catalog/{dataset}/withdraw", post(pages::withdraw))
        .route("/requests", get(pages::requests))
        .route("/requests/{id}/approve", post(pages::approve))
        .route("/requests/{id}/deny", post(pages::deny))
        .route("/grants", get(pages::grants).post(pages::grant))
        .route("/grants/{id}/revoke", post(pages::revoke))
        .route("/exchanges", get(pages::exchanges))
        .route("/stats", get(pages::stats))
        .route("/provenance", get(pages::provenance))
        .route("/provenance/verify", post(pages::verify))
        .route("/apps", get(pages::apps))
        .route("/users", get(pages::users))
        .route("/assets/dashboard.css", get(assets::css))
        .route("/assets/dashboard.js", get(assets::js))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::from_fn(headers))
        .with_state(dash)
}

/// On every response: no framing, no caching of pages, no scripts or styles but our own.
async fn headers(req: Request<axum::body::Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, pages::message_page(None, "Not found", "There is no such page.")).into_response()
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A page's early answer (not allowed, a stale form, a failure), boxed: the rare path.
pub struct Early(Box<Response>);

impl IntoResponse for Early {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for Early {
    fn from(r: Response) -> Early {
        Early(Box::new(r))
    }
}

/// The logged-in viewer of a page. Without a session: a page redirects to the login, a post is
/// refused.
pub struct Viewer {
    pub session: Session,
}

impl Viewer {
    pub fn actor(&self) -> Actor {
        Actor::User { name: self.session.user.clone(), role: self.session.role }
    }

    pub fn may(&self, action: Action) -> bool {
        permits(self.session.role, action)
    }

    /// The one check before every page and every action.
    pub fn require(&self, action: Action) -> Result<(), Early> {
        if self.may(action) {
            return Ok(());
        }
        tracing::info!(user = %self.session.user, role = %self.session.role, ?action, "dashboard: refused by role");
        Err((
            StatusCode::FORBIDDEN,
            pages::message_page(
                Some(self),
                "Not allowed",
                &format!("The {} role may not do this ({action:?}).", self.session.role),
            ),
        )
            .into_response()
            .into())
    }

    /// For a post: the form's CSRF token is this session's.
    pub fn check_csrf(&self, presented: &str) -> Result<(), Early> {
        // Compared as hashes, in constant time.
        if blake3::hash(presented.as_bytes()) == blake3::hash(self.session.csrf.as_bytes()) {
            return Ok(());
        }
        Err((
            StatusCode::FORBIDDEN,
            pages::message_page(
                Some(self),
                "Form expired",
                "The form was not issued by this session; reload the page.",
            ),
        )
            .into_response()
            .into())
    }
}

impl FromRequestParts<Dash> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dash: &Dash) -> Result<Self, Self::Rejection> {
        let session = cookie_of(&parts.headers).and_then(|c| dash.node.sessions().get(&c));
        match session {
            Some(session) => Ok(Viewer { session }),
            None if parts.method == axum::http::Method::GET => Err(Redirect::to("/login").into_response()),
            None => Err((
                StatusCode::UNAUTHORIZED,
                pages::message_page(None, "Not logged in", "Log in first: the session ended or never began."),
            )
                .into_response()),
        }
    }
}

async fn login_page() -> Response {
    pages::login_page(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    secret: String,
}

async fn login(State(dash): State<Dash>, Form(f): Form<LoginForm>) -> Response {
    if dash.logins.check().is_err() {
        return (StatusCode::TOO_MANY_REQUESTS, pages::login_page(Some("Too many logins at once; try again.")))
            .into_response();
    }
    let user = match dash.node.user_login(f.user.trim(), f.secret.trim()) {
        Ok(Some(u)) => u,
        Ok(None) => {
            tracing::info!(user = %f.user.trim(), "dashboard login refused");
            return (StatusCode::UNAUTHORIZED, pages::login_page(Some("Wrong name or secret."))).into_response();
        }
        Err(e) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, pages::login_page(Some(&e.to_string()))).into_response();
        }
    };
    let Some(cookie) = dash.node.sessions().start(&user.name, user.role) else {
        return (StatusCode::SERVICE_UNAVAILABLE, pages::login_page(Some("Too many sessions; try again later.")))
            .into_response();
    };
    tracing::info!(user = %user.name, role = %user.role, "dashboard login");
    let secure = if dash.secure { "; Secure" } else { "" };
    let value =
        format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", SESSION_TTL.as_secs());
    let mut res = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

async fn logout(State(dash): State<Dash>, headers: HeaderMap, viewer: Viewer, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = viewer.check_csrf(&f.csrf) {
        return r.into_response();
    }
    if let Some(c) = cookie_of(&headers) {
        dash.node.sessions().end(&c);
    }
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("deltafed_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

/// What the pages' handlers take.
type St = State<Dash>;
