//! The dashboard through a real HTTP client (reqwest) and a real browser (headless Chromium
//! driven over WebDriver): each role sees and does exactly its list and nothing more, a forged
//! or cross-session post is refused, decisions are recorded with the user who took them, and an
//! approver's approval in the browser reaches the other member as a grant.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::web::{Page, Web};
use common::{CONNECT, SOON, file, refused};
use deltafed_testnet::Federation;
use reqwest::StatusCode;
use serde_json::Value;

const LICENCES: &str = "company_id,name,status\n91330100A1,Acme,active\n91330100B2,Beta,revoked\n";

/// Pages and the action that viewing each needs, as `roles::permits` decides.
const PAGES: &[(&str, &str)] = &[
    ("/", "overview"),
    ("/status", "status"),
    ("/catalog", "catalog"),
    ("/requests", "requests"),
    ("/grants", "grants"),
    ("/exchanges", "exchanges"),
    ("/stats", "stats"),
    ("/provenance", "provenance"),
    ("/apps", "apps"),
    ("/users", "users"),
];

/// What each role may view (by the page names above) and do.
fn allowed(role: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match role {
        "operator" => (&["overview", "status", "exchanges", "stats"], &[]),
        "publisher" => (&["overview", "catalog"], &["publish", "withdraw"]),
        "approver" => (&["overview", "catalog", "requests", "grants"], &["approve", "deny", "grant", "revoke"]),
        "auditor" => (
            &[
                "overview",
                "status",
                "catalog",
                "requests",
                "grants",
                "exchanges",
                "stats",
                "provenance",
                "apps",
                "users",
            ],
            &["verify"],
        ),
        _ => (
            &[
                "overview",
                "status",
                "catalog",
                "requests",
                "grants",
                "exchanges",
                "stats",
                "provenance",
                "apps",
                "users",
            ],
            &["publish", "withdraw", "approve", "deny", "grant", "revoke", "verify"],
        ),
    }
}

/// shanghai and zhejiang; zhejiang publishes `licences` and `permits`, shanghai asks for
/// `licences` (pending at zhejiang) and holds a grant on `permits`.
struct Setup {
    fed: Federation,
    request_id: String,
    grant_id: String,
}

fn setup() -> Result<Setup> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    fed.start_all()?;
    fed.wait_mesh(&["shanghai", "zhejiang"], CONNECT)?;
    let p = file(&fed, "licences.csv", LICENCES.as_bytes())?;
    fed.json(
        "zhejiang",
        &["publish", &p, "--dataset", "licences", "--title", "Licences", "--key-field", "company_id"],
    )?;
    fed.json("zhejiang", &["publish", &p, "--dataset", "permits", "--title", "Permits"])?;
    common::wait_catalog(&mut fed, "shanghai", "zhejiang/licences@1")?;
    let sent = fed.json("shanghai", &["request", "zhejiang/licences", "--purpose", "credit checks"])?;
    let request_id = sent["request_id"].as_str().context("request_id")?.to_string();
    wait_request(&mut fed, &request_id)?;
    let g = fed.json("zhejiang", &["grant", "permits", "--to", "shanghai", "--purpose", "inspections"])?;
    let grant_id = g["grant_id"].as_str().context("grant_id")?.to_string();
    Ok(Setup { fed, request_id, grant_id })
}

/// Waits until zhejiang holds the access request `id`.
fn wait_request(fed: &mut Federation, id: &str) -> Result<()> {
    fed.wait_for(&format!("request {id} at zhejiang"), SOON, |f| {
        let r = f.json("zhejiang", &["requests"])?;
        Ok(r.as_array().is_some_and(|l| l.iter().any(|x| x["request_id"] == id)))
    })
}

fn add_user(fed: &Federation, name: &str, role: &str) -> Result<String> {
    let u = fed.json("zhejiang", &["user", "add", name, "--role", role])?;
    assert_eq!((u["user"].as_str(), u["role"].as_str()), (Some(name), Some(role)), "{u}");
    u["secret"].as_str().map(str::to_string).context("secret")
}

/// Every page and every action of one role: allowed ones work, the others are 403, and the
/// menu names exactly the allowed pages.
fn role_does_exactly_its_list(role: &str) -> Result<()> {
    let Setup { mut fed, request_id, grant_id } = setup()?;
    let secret = add_user(&fed, "person", role)?;
    let web = Web::login(&fed.dashboard_url("zhejiang")?, "person", &secret)?;
    let (pages, actions) = allowed(role);
    let home = web.get("/")?.body;
    for (path, name) in PAGES {
        let page = web.get(path)?;
        let want = if pages.contains(name) { StatusCode::OK } else { StatusCode::FORBIDDEN };
        assert_eq!(page.status, want, "{role} GET {path}: {}", page.body);
        // The menu links exactly the pages the role may open.
        let linked = home.contains(&format!("href=\"{path}\""));
        assert_eq!(linked, pages.contains(name), "{role}: menu link to {path}");
    }
    let may = |a: &str| actions.contains(&a);
    let expect = |a: &str, page: &Page| {
        if may(a) {
            assert!(
                page.status == StatusCode::SEE_OTHER || page.status == StatusCode::OK,
                "{role} {a} should work: {} {}",
                page.status,
                page.body
            );
        } else {
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} {a} should be refused: {}", page.body);
        }
    };
    expect("verify", &web.post("/provenance/verify", &[])?);
    expect("grant", &web.post("/grants", &[("dataset", "licences"), ("to", "shanghai"), ("purpose", "audit")])?);
    expect("deny", &web.post(&format!("/requests/{request_id}/deny"), &[("reason", "not now")])?);
    if may("deny") {
        // Denied above; a second request to approve.
        let sent = fed.json("shanghai", &["request", "zhejiang/licences", "--purpose", "again"])?;
        let again = sent["request_id"].as_str().context("request_id")?.to_string();
        wait_request(&mut fed, &again)?;
        expect("approve", &web.post(&format!("/requests/{again}/approve"), &[("expires", "30d")])?);
    } else {
        expect("approve", &web.post(&format!("/requests/{request_id}/approve"), &[("expires", "")])?);
    }
    expect("revoke", &web.post(&format!("/grants/{grant_id}/revoke"), &[("reason", "ended")])?);
    expect("withdraw", &web.post("/catalog/permits/withdraw", &[("reason", "retired")])?);
    // Publishing from a source: past the role check it fails for want of a source (there is
    // none here); the role check alone is what this tests.
    let p = web.post("/catalog/publish", &[("source", "none"), ("table", "t"), ("dataset", "t"), ("title", "T")])?;
    if may("publish") {
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{role} publish: {}", p.body);
        assert!(p.body.contains("no source named none"), "{}", p.body);
    } else {
        assert_eq!(p.status, StatusCode::FORBIDDEN, "{role} publish: {}", p.body);
    }

    // What was refused changed nothing; what was allowed is in the log under the user's name.
    let requests = fed.json("zhejiang", &["requests"])?;
    let first = requests.as_array().and_then(|l| l.iter().find(|r| r["request_id"] == request_id.as_str())).cloned();
    let state = first.as_ref().and_then(|r| r["state"].as_str()).unwrap_or_default().to_string();
    assert_eq!(state, if may("deny") { "denied" } else { "pending" }, "{requests}");
    let grants = fed.json("zhejiang", &["grants"])?;
    let permits = grants.as_array().and_then(|l| l.iter().find(|g| g["grant_id"] == grant_id.as_str())).cloned();
    assert_eq!(permits.map(|g| g["revoked"] == true), Some(may("revoke")), "{grants}");
    let log = fed.json("zhejiang", &["provenance"])?;
    let by_user = format!("by dashboard user person ({role})");
    let noted: Vec<String> = log
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["note"].as_str())
        .filter(|n| n.ends_with(&by_user))
        .map(str::to_string)
        .collect();
    if pages.contains(&"provenance") {
        // The timeline starts with the newest entry.
        let newest = log.as_array().into_iter().flatten().filter_map(|e| e["seq"].as_u64()).max().context("seqs")?;
        let page = web.get("/provenance")?.body;
        let first = page
            .split("<tr data-kind=")
            .nth(1)
            .and_then(|row| row.split("<td>").nth(1))
            .and_then(|cell| cell.split("</td>").next())
            .context("no entry row on the provenance page")?;
        assert_eq!(first, newest.to_string(), "{role}: the provenance page's first row");
    }
    let decisions = ["deny", "approve", "grant", "revoke", "withdraw"].iter().filter(|a| may(a)).count();
    // An approval makes two entries (the grant and the decision).
    let want = decisions + usize::from(may("approve"));
    assert_eq!(noted.len(), want, "{role}: entries by the user: {noted:?}");
    Ok(())
}

#[test]
fn an_operator_does_exactly_its_list() -> Result<()> {
    role_does_exactly_its_list("operator")
}

#[test]
fn a_publisher_does_exactly_its_list() -> Result<()> {
    role_does_exactly_its_list("publisher")
}

#[test]
fn an_approver_does_exactly_its_list() -> Result<()> {
    role_does_exactly_its_list("approver")
}

#[test]
fn an_auditor_does_exactly_its_list() -> Result<()> {
    role_does_exactly_its_list("auditor")
}

#[test]
fn an_admin_does_everything() -> Result<()> {
    role_does_exactly_its_list("admin")
}

#[test]
fn logins_sessions_and_forms_are_guarded() -> Result<()> {
    let Setup { fed, request_id, .. } = setup()?;
    let secret = add_user(&fed, "alice", "approver")?;
    let base = fed.dashboard_url("zhejiang")?;
    // Without a session: pages send to the login, posts are refused.
    let anon = Web::anonymous(&base)?;
    let p = anon.get("/requests")?;
    assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/login")));
    let p = anon.post_form(&format!("/requests/{request_id}/approve"), &[("csrf", "x")])?;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    // A wrong secret, an unknown user.
    for (u, s) in [("alice", "dfuser_00"), ("mallory", secret.as_str())] {
        let p = anon.post_form("/login", &[("user", u), ("secret", s)])?;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED, "{u}");
    }
    // A form without this session's CSRF token is refused and changes nothing.
    let web = Web::login(&base, "alice", &secret)?;
    let forged = web.post_form(&format!("/requests/{request_id}/approve"), &[("csrf", "not-the-token")])?;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let other = Web::login(&base, "alice", &secret)?;
    assert_ne!(other.csrf, web.csrf, "each session has its own token");
    let cross = web.post_form(&format!("/requests/{request_id}/approve"), &[("csrf", &other.csrf)])?;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let r = fed.json("zhejiang", &["requests"])?;
    assert!(r.to_string().contains("\"pending\""), "{r}");
    // A removed user's sessions end at once.
    fed.json("zhejiang", &["user", "remove", "alice"])?;
    assert_eq!(web.get("/requests")?.status, StatusCode::SEE_OTHER);
    assert!(refused(&fed, "zhejiang", &["user", "add", "Bad_Name", "--role", "admin"])?.contains("not valid"));
    assert!(refused(&fed, "zhejiang", &["user", "add", "bob", "--role", "root"])?.contains("not a role"));
    // Decisions through the admin socket stay the owner's.
    fed.json("zhejiang", &["deny", &request_id, "--reason", "by hand"])?;
    let log = fed.json("zhejiang", &["provenance"])?;
    assert!(log.to_string().contains("by hand; by the node owner (admin socket)"), "{log}");
    Ok(())
}

/// chromedriver on a free loopback port, for as long as this lives.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> Option<(&'static str, &'static str)> {
    let browser =
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| std::path::Path::new(p).exists())?;
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    Some((browser, driver))
}

fn start_driver(path: &str) -> Result<Driver> {
    let port = deltafed_testnet::free_base_port(1)?;
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {path}"))?;
    let driver = Driver { child, port };
    // Ready when it answers its status endpoint.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(driver);
        }
        if std::time::Instant::now() > deadline {
            bail!("chromedriver did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the screenshots go: `test-artifacts/dashboard` in the build's target dir.
fn artifacts() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe.ancestors().nth(3).context("no target dir")?.to_path_buf();
    let dir = target.join("test-artifacts").join("dashboard");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn in_a_browser_an_approver_approves_and_an_auditor_only_looks() -> Result<()> {
    let Some((browser, driver_path)) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium and chromedriver (apt-get install chromium chromium-driver; scripts/prereqs.sh does)"
        );
        return Ok(());
    };
    let Setup { mut fed, request_id, .. } = setup()?;
    let approver = add_user(&fed, "alice", "approver")?;
    let auditor = add_user(&fed, "carol", "auditor")?;
    let base = fed.dashboard_url("zhejiang")?;
    let driver = start_driver(driver_path)?;
    let shots = artifacts()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use fantoccini::{ClientBuilder, Locator};
        let caps: serde_json::Map<String, Value> = serde_json::from_value(serde_json::json!({
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
            }
        }))?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .context("connecting to chromedriver")?;
        let login = |user: &'static str, secret: String| {
            let (c, base) = (c.clone(), base.clone());
            async move {
                c.goto(&format!("{base}/login")).await?;
                c.find(Locator::Css("input[name=user]")).await?.send_keys(user).await?;
                c.find(Locator::Css("input[name=secret]")).await?.send_keys(&secret).await?;
                c.find(Locator::Css("form.login button")).await?.click().await?;
                c.wait().for_element(Locator::Css("form.logout")).await?;
                anyhow::Ok(())
            }
        };
        // The approver: every page it may open, then the approval.
        login("alice", approver).await?;
        for (path, name) in [("/", "overview"), ("/catalog", "catalog"), ("/requests", "requests"), ("/grants", "grants")] {
            c.goto(&format!("{base}{path}")).await?;
            std::fs::write(shots.join(format!("approver-{name}.png")), c.screenshot().await?)?;
        }
        c.goto(&format!("{base}/requests")).await?;
        let row = format!("tr[data-request='{request_id}'] button.approve");
        c.find(Locator::Css(&row)).await?.click().await?;
        // Back on the requests page, the row says approved.
        let approved = format!("tr[data-request='{request_id}'] td:nth-child(7)");
        let deadline = std::time::Instant::now() + SOON;
        loop {
            let state = match c.find(Locator::Css(&approved)).await {
                Ok(cell) => cell.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if state.starts_with("approved") {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("the request did not show as approved: {:.2000}", c.source().await?);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::write(shots.join("approver-approved.png"), c.screenshot().await?)?;
        c.find(Locator::Css("form.logout button")).await?.click().await?;
        c.wait().for_element(Locator::Css("form.login")).await?;

        // The auditor: every page, and no button that changes anything.
        login("carol", auditor).await?;
        for (path, name) in PAGES {
            c.goto(&format!("{base}{path}")).await?;
            let html = c.source().await?;
            assert!(!html.contains("Not allowed"), "auditor on {path}: {html:.1000}");
            for forbidden in ["class=\"approve\"", "class=\"deny\"", "\">Revoke<", "\">Withdraw<", "\">Grant<"] {
                assert!(!html.contains(forbidden), "auditor sees {forbidden} on {path}");
            }
            std::fs::write(shots.join(format!("auditor-{name}.png")), c.screenshot().await?)?;
        }
        c.goto(&format!("{base}/provenance")).await?;
        c.find(Locator::Css("form[action='/provenance/verify'] button")).await?.click().await?;
        c.wait().for_element(Locator::Css("dl.facts")).await?;
        let verified = c.source().await?;
        assert!(verified.contains("The log is intact."), "{verified:.1000}");
        std::fs::write(shots.join("auditor-verified.png"), c.screenshot().await?)?;
        c.close().await?;
        anyhow::Ok(())
    })?;
    // The grant reached the requester.
    fed.wait_for("the grant at shanghai", SOON, |f| {
        let g = f.json("shanghai", &["grants"])?;
        Ok(g.as_array()
            .is_some_and(|l| l.iter().any(|x| x["dataset"] == "zhejiang/licences" && x["role"] == "received")))
    })?;
    let log = fed.json("zhejiang", &["provenance"])?;
    assert!(log.to_string().contains("by dashboard user alice (approver)"), "{log}");
    // A forged approve post with an auditor's own session (and its valid token) is refused.
    let dave = add_user(&fed, "dave", "auditor")?;
    let web = Web::login(&base, "dave", &dave)?;
    let p = web.post(&format!("/requests/{request_id}/approve"), &[])?;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    println!("screenshots in {}", shots.display());
    Ok(())
}
