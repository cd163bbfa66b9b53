//! A logged-in HTTP session with a node's dashboard (a real client: reqwest), for the dashboard
//! and database-source tests.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;

/// An HTTP session with the dashboard: its cookie (after login) and this session's CSRF token.
pub struct Web {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    cookie: String,
    pub csrf: String,
}

pub struct Page {
    pub status: StatusCode,
    pub body: String,
    pub location: Option<String>,
}

impl Web {
    pub fn anonymous(base: &str) -> Result<Web> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Web { rt, client, base: base.trim_end_matches('/').into(), cookie: String::new(), csrf: String::new() })
    }

    pub fn login(base: &str, user: &str, secret: &str) -> Result<Web> {
        let mut web = Web::anonymous(base)?;
        let req = web.client.post(format!("{}/login", web.base)).form(&[("user", user), ("secret", secret)]);
        // The request's timer is made when it is sent: inside the runtime.
        let res = web.rt.block_on(async { req.send().await })?;
        let status = res.status();
        let cookie = res.headers().get("set-cookie").and_then(|v| v.to_str().ok()).map(str::to_string);
        if status != StatusCode::SEE_OTHER {
            bail!("login as {user}: {status} {}", web.rt.block_on(res.text())?);
        }
        let cookie = cookie.context("no session cookie")?;
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        web.cookie = cookie.split(';').next().unwrap_or_default().to_string();
        let home = web.get("/")?;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        web.csrf = csrf_of(&home.body).context("no CSRF token on the overview")?;
        Ok(web)
    }

    pub fn get(&self, path: &str) -> Result<Page> {
        self.send(self.client.get(format!("{}{path}", self.base)).header("cookie", &self.cookie))
    }

    /// A form post with exactly these fields (no CSRF token added).
    pub fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Page> {
        self.send(self.client.post(format!("{}{path}", self.base)).form(form).header("cookie", &self.cookie))
    }

    /// A form post with this session's CSRF token.
    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Page> {
        let mut all: Vec<(&str, &str)> = form.to_vec();
        all.push(("csrf", &self.csrf));
        self.post_form(path, &all)
    }

    pub fn send(&self, req: reqwest::RequestBuilder) -> Result<Page> {
        let res = self.rt.block_on(async { req.send().await })?;
        let (status, location) =
            (res.status(), res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string));
        let csp = res.headers().get("content-security-policy").is_some();
        let body = self.rt.block_on(res.text())?;
        assert!(csp, "no Content-Security-Policy on a dashboard response");
        Ok(Page { status, body, location })
    }
}

pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().map(str::to_string)
}
