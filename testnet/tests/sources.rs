//! Datasets published from, and answered from, a real PostgreSQL server (started by the test in
//! its own temp dir): snapshot types and nulls, a million rows in flat memory, scheduled
//! republishing, live calls with granted fields only and bound keys, and the database going
//! away, stalling and coming back.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::web::Web;
use common::{CONNECT, SOON, refused};
use deltafed_testnet::postgres::Postgres;
use deltafed_testnet::{Federation, path_str};
use serde_json::Value;

const TYPES_TABLE: &str = "CREATE TABLE licences (
    company_id text PRIMARY KEY,
    name varchar(80) NOT NULL,
    staff int4,
    capital numeric(14,2),
    revenue int8,
    active boolean,
    founded date,
    checked timestamptz,
    ratio float8
);
INSERT INTO licences VALUES
  ('91330100A1', '杭州数澜科技, 滨江分公司', 120, 5000000.50, 9007199254740993, true, '2015-03-09', '2026-11-30 08:15:00+00', 0.25),
  ('91330100B2', 'Beta \"Ltd\"', NULL, NULL, NULL, NULL, NULL, NULL, NULL);";

fn federation(members: &[&str], config: &[(&str, &str)]) -> Result<Federation> {
    let mut fed = Federation::init(members)?;
    for (member, line) in config {
        fed.configure_in(member, Some("sources"), line)?;
    }
    fed.start_all()?;
    fed.wait_mesh(members, CONNECT)?;
    Ok(fed)
}

fn lines(path: &std::path::Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))).collect()
}

#[test]
fn a_table_is_published_with_its_column_types_and_the_password_never_shows() -> Result<()> {
    let pg = Postgres::start()?;
    pg.sql(TYPES_TABLE)?;
    pg.sql("CREATE TABLE shapes (id int PRIMARY KEY, p point)")?;
    let mut fed = federation(&["shanghai", "zhejiang"], &[])?;

    // A password in the URL (trust authentication ignores it) is kept, never shown.
    let url = format!("postgresql://deltafed:s3cret-pw@127.0.0.1:{}/deltafed", pg.port());
    let added = fed.json("zhejiang", &["source", "add", "registry", "--url", &url])?;
    assert_eq!(added["password"], "url", "{added}");
    assert!(added["url"].as_str().is_some_and(|u| u.contains("***") && !u.contains("s3cret")), "{added}");
    let listed = fed.cli("zhejiang", &["source", "list"])?;
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("s3cret"));
    assert!(refused(&fed, "zhejiang", &["source", "add", "registry", "--url", &url])?.contains("exists"));
    assert!(refused(&fed, "zhejiang", &["source", "add", "other", "--url", "mysql://x"])?.contains("postgresql://"));

    let p = fed.json(
        "zhejiang",
        &[
            "publish",
            "--source",
            "registry",
            "--table",
            "licences",
            "--dataset",
            "licences",
            "--title",
            "Business licences",
            "--key-field",
            "company_id",
        ],
    )?;
    assert_eq!(p["records"], 2, "{p}");
    assert_eq!(p["live"], false, "{p}");
    let show = fed.json("zhejiang", &["catalog", "show", "zhejiang/licences"])?;
    let types: Vec<(String, String)> = show["schema"]
        .as_array()
        .context("schema")?
        .iter()
        .map(|f| (f["name"].as_str().unwrap_or("").to_string(), f["type"].as_str().unwrap_or("").to_string()))
        .collect();
    let want = [
        ("company_id", "string"),
        ("name", "string"),
        ("staff", "integer"),
        ("capital", "number"),
        ("revenue", "integer"),
        ("active", "boolean"),
        ("founded", "string"),
        ("checked", "string"),
        ("ratio", "number"),
    ];
    assert_eq!(types, want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>(), "{show}");

    // Downstream is unchanged: a grant, a verified fetch, a query.
    fed.json("zhejiang", &["grant", "licences", "--to", "shanghai", "--purpose", "checks"])?;
    common::wait_catalog(&mut fed, "shanghai", "zhejiang/licences@1")?;
    let out = fed.root().join("licences.jsonl");
    fed.json("shanghai", &["fetch", "zhejiang/licences", "--out", path_str(&out)?])?;
    let rows = lines(&out)?;
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(a["company_id"], "91330100A1");
    assert_eq!(a["name"], "杭州数澜科技, 滨江分公司");
    assert_eq!(a["staff"], 120);
    assert_eq!(a["active"], true);
    assert_eq!(a["founded"], "2015-03-09");
    assert_eq!(a["checked"], "2026-11-30T08:15:00Z");
    assert_eq!(a["ratio"], 0.25);
    // Every digit of the numeric and the int8 is in the published bytes.
    let text = std::fs::read_to_string(&out)?;
    assert!(text.contains("\"capital\":5000000.50"), "{text}");
    assert!(text.contains("\"revenue\":9007199254740993"), "{text}");
    let b = &rows[1];
    for f in ["staff", "capital", "revenue", "active", "founded", "checked", "ratio"] {
        assert!(b[f].is_null(), "{f} should be null: {b}");
    }
    assert_eq!(b["name"], "Beta \"Ltd\"");
    let q = fed.json("shanghai", &["query", "zhejiang/licences", "91330100B2"])?;
    assert_eq!(q["records"][0]["name"], "Beta \"Ltd\"", "{q}");
    assert!(q.get("read_at").is_none(), "a snapshot has no read time: {q}");

    // A query as CSV; a type with no mapping is named with the way out.
    let csv = fed.json(
        "zhejiang",
        &[
            "publish",
            "--source",
            "registry",
            "--sql",
            "SELECT company_id, staff FROM licences ORDER BY 1",
            "--dataset",
            "staff",
            "--title",
            "Staff",
            "--format",
            "csv",
        ],
    )?;
    assert_eq!(csv["records"], 2, "{csv}");
    let err = refused(
        &fed,
        "zhejiang",
        &["publish", "--source", "registry", "--table", "shapes", "--dataset", "shapes", "--title", "S"],
    )?;
    assert!(err.contains("column p has type point") && err.contains("::text"), "{err}");
    let err = refused(
        &fed,
        "zhejiang",
        &["publish", "--source", "registry", "--sql", "SELECT * FROM nowhere", "--dataset", "x", "--title", "X"],
    )?;
    assert!(err.contains("nowhere"), "{err}");

    assert!(!fed.log("zhejiang").contains("s3cret"), "the password reached the node's log");
    let removed = fed.json("zhejiang", &["source", "remove", "registry"])?;
    assert_eq!(removed["removed"], true);
    assert_eq!(fed.json("zhejiang", &["source", "list"])?, serde_json::json!([]));
    Ok(())
}

/// Peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    Ok(line.split_whitespace().nth(1).context("VmHWM value")?.parse()?)
}

#[test]
fn a_million_rows_publish_in_flat_memory() -> Result<()> {
    let pg = Postgres::start()?;
    // About 90 MB as JSON Lines: a copy held in memory would show in the peak.
    pg.sql(
        "CREATE TABLE people AS SELECT g AS id, md5(g::text) AS name, g % 1000 AS district, \
         (g % 7 = 0) AS flagged FROM generate_series(1, 1000000) g",
    )?;
    let fed = federation(&["zhejiang"], &[])?;
    fed.json("zhejiang", &["source", "add", "census", "--url", &pg.url()])?;
    let pid = fed.pid("zhejiang").context("pid")?;
    let before = peak_rss_kb(pid)?;
    let p = fed.json(
        "zhejiang",
        &["publish", "--source", "census", "--table", "people", "--dataset", "people", "--title", "People"],
    )?;
    assert_eq!(p["records"], 1_000_000, "{p}");
    let size = p["size"].as_u64().context("size")?;
    let grew = peak_rss_kb(pid)?.saturating_sub(before);
    println!("exported {size} bytes; peak RSS grew {grew} kB");
    assert!(size > 60_000_000, "{p}");
    // The cursor holds 1000 rows at a time; RocksDB's bounded caches are the rest.
    assert!(grew < 64 * 1024, "peak RSS grew {grew} kB publishing {size} bytes");
    Ok(())
}

fn schedule_of(fed: &Federation, source: &str, dataset: &str) -> Result<Value> {
    let list = fed.json("zhejiang", &["source", "list"])?;
    let s = list.as_array().and_then(|l| l.iter().find(|s| s["name"] == source)).context("source")?;
    let x = s["schedules"].as_array().and_then(|l| l.iter().find(|x| x["dataset"] == dataset)).cloned();
    x.with_context(|| format!("no schedule for {dataset}: {s}"))
}

#[test]
fn a_schedule_makes_a_version_only_when_the_data_changed() -> Result<()> {
    let pg = Postgres::start()?;
    pg.sql("CREATE TABLE permits (permit text PRIMARY KEY, holder text)")?;
    pg.sql("INSERT INTO permits VALUES ('P1', 'Acme')")?;
    let mut fed = federation(&["zhejiang"], &[])?;
    fed.json("zhejiang", &["source", "add", "permits-db", "--url", &pg.url()])?;
    let p = fed.json(
        "zhejiang",
        &[
            "publish",
            "--source",
            "permits-db",
            "--table",
            "permits",
            "--dataset",
            "permits",
            "--title",
            "Permits",
            "--every",
            "1s",
        ],
    )?;
    assert_eq!((p["version"].as_u64(), p["every"].as_str()), (Some(1), Some("1s")), "{p}");
    assert!(
        refused(
            &fed,
            "zhejiang",
            &[
                "publish",
                "--source",
                "permits-db",
                "--table",
                "permits",
                "--dataset",
                "x",
                "--title",
                "X",
                "--every",
                "soon"
            ],
        )?
        .contains("--every")
    );

    // Runs with nothing new make no version.
    let unchanged_runs = |fed: &Federation| -> Result<bool> {
        Ok(schedule_of(fed, "permits-db", "permits")?["last"].as_str().is_some_and(|l| l.ends_with("unchanged")))
    };
    fed.wait_for("an unchanged scheduled run", SOON, |f| unchanged_runs(f))?;
    assert_eq!(fed.catalog("zhejiang")?, vec!["zhejiang/permits@1".to_string()]);

    // A change makes exactly one new version.
    pg.sql("INSERT INTO permits VALUES ('P2', 'Beta')")?;
    fed.wait_for("version 2", SOON, |f| Ok(f.catalog("zhejiang")?.contains(&"zhejiang/permits@2".to_string())))?;
    let v2 = fed.json("zhejiang", &["catalog", "show", "zhejiang/permits"])?;
    assert_eq!(v2["records"], 2, "{v2}");
    fed.wait_for("an unchanged run after version 2", SOON, |f| unchanged_runs(f))?;
    let next = schedule_of(&fed, "permits-db", "permits")?["next"].clone();
    fed.wait_for("another run", SOON, |f| Ok(schedule_of(f, "permits-db", "permits")?["next"] != next))?;
    assert_eq!(fed.catalog("zhejiang")?, vec!["zhejiang/permits@2".to_string()]);

    // Withdrawing ends the schedule: no run brings the dataset back.
    fed.json("zhejiang", &["withdraw", "permits"])?;
    let list = fed.json("zhejiang", &["source", "list"])?;
    assert_eq!(list[0]["schedules"], serde_json::json!([]), "{list}");
    Ok(())
}

/// zhejiang publishes `companies` live, granted to shanghai with two fields; shanghai has an
/// application token for its gateway.
struct Live {
    pg: Postgres,
    fed: Federation,
    token: String,
}

fn live(config: &[(&str, &str)]) -> Result<Live> {
    let pg = Postgres::start()?;
    pg.sql(
        "CREATE TABLE companies (company_id text PRIMARY KEY, name text, capital int8, secret text);
         INSERT INTO companies SELECT 'C' || g, 'Company ' || g, g * 1000, 's' || g FROM generate_series(1, 1000) g;
         CREATE TABLE unindexed (company_id text, name text);",
    )?;
    let mut fed = federation(&["shanghai", "zhejiang"], config)?;
    fed.json("zhejiang", &["source", "add", "registry", "--url", &pg.url()])?;
    let err = refused(
        &fed,
        "zhejiang",
        &[
            "publish",
            "--source",
            "registry",
            "--table",
            "unindexed",
            "--dataset",
            "u",
            "--title",
            "U",
            "--key-field",
            "company_id",
            "--live",
        ],
    )?;
    assert!(err.contains("CREATE INDEX"), "{err}");
    let p = fed.json(
        "zhejiang",
        &[
            "publish",
            "--source",
            "registry",
            "--table",
            "companies",
            "--dataset",
            "companies",
            "--title",
            "Companies",
            "--key-field",
            "company_id",
            "--live",
        ],
    )?;
    assert_eq!(p["live"], true, "{p}");
    fed.json(
        "zhejiang",
        &["grant", "companies", "--to", "shanghai", "--purpose", "credit", "--fields", "company_id,name"],
    )?;
    common::wait_catalog(&mut fed, "shanghai", "zhejiang/companies@1")?;
    let app = fed.json("shanghai", &["app", "add", "credit-check", "--datasets", "zhejiang/companies"])?;
    let token = app["token"].as_str().context("token")?.to_string();
    Ok(Live { pg, fed, token })
}

fn gateway_get(fed: &Federation, token: &str, key: &str) -> Result<(u16, Value)> {
    let url = format!("{}/v1/records/zhejiang/companies/{key}", fed.gateway_url("shanghai")?);
    let out = Command::new("curl")
        .args(["-s", "-m", "30", "-w", "\n%{http_code}", "-H", &format!("Authorization: Bearer {token}"), &url])
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').with_context(|| format!("curl printed {text:?}"))?;
    let code: u16 = code.trim().parse().with_context(|| format!("curl printed {text:?}"))?;
    let body = serde_json::from_str(body).with_context(|| format!("not JSON ({code}): {body}"))?;
    Ok((code, body))
}

#[test]
fn live_calls_answer_from_the_table_with_granted_fields_and_bound_keys() -> Result<()> {
    let Live { pg, mut fed, token } = live(&[])?;
    // Every member's catalog says the dataset is live (the flag is in the signed manifest).
    let catalog = fed.json("shanghai", &["catalog"])?;
    assert_eq!(catalog[0]["live"], true, "{catalog}");
    let q = fed.json("shanghai", &["query", "zhejiang/companies", "C42"])?;
    assert_eq!(q["records"], serde_json::json!([{"company_id": "C42", "name": "Company 42"}]), "{q}");
    assert!(q["read_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{q}");

    // Current data: a change in the table is the next answer.
    pg.sql("UPDATE companies SET name = 'Renamed 42' WHERE company_id = 'C42'")?;
    let (code, body) = gateway_get(&fed, &token, "C42")?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["records"], serde_json::json!([{"company_id": "C42", "name": "Renamed 42"}]), "{body}");
    assert!(body["read_at"].is_string(), "{body}");

    // Keys are bound parameters: an injection attempt matches nothing and harms nothing.
    for key in ["C1' OR '1'='1", "C1'; DROP TABLE companies; --", "%", "C1\" OR 1=1"] {
        let q = fed.json("shanghai", &["query", "zhejiang/companies", key])?;
        assert_eq!(q["records"], serde_json::json!([]), "{key}: {q}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM companies")?, "1000");
    // Several keys in one command, one batch, each its own answer.
    let many = fed.json("shanghai", &["query", "zhejiang/companies", "C1", "C2", "nope"])?;
    let results = many["results"].as_array().context("results")?;
    assert_eq!(results[0]["records"][0]["name"], "Company 1", "{many}");
    assert_eq!(results[1]["records"][0]["name"], "Company 2", "{many}");
    assert_eq!(results[2]["records"], serde_json::json!([]), "{many}");
    // An integer key: bound as an integer; a key that is not one matches nothing.
    pg.sql("CREATE TABLE staff (id int4 PRIMARY KEY, name text); INSERT INTO staff VALUES (7, 'Seven'), (8, 'Eight')")?;
    fed.json(
        "zhejiang",
        &[
            "publish",
            "--source",
            "registry",
            "--table",
            "staff",
            "--dataset",
            "staff",
            "--title",
            "Staff",
            "--key-field",
            "id",
            "--live",
        ],
    )?;
    fed.json("zhejiang", &["grant", "staff", "--to", "shanghai", "--purpose", "directory"])?;
    common::wait_catalog(&mut fed, "shanghai", "zhejiang/staff@1")?;
    let staff = fed.json("shanghai", &["query", "zhejiang/staff", "7", "x7", "8", "7 OR 1=1"])?;
    let r = staff["results"].as_array().context("results")?;
    assert_eq!(r[0]["records"], serde_json::json!([{"id": 7, "name": "Seven"}]), "{staff}");
    assert_eq!(r[1]["records"], serde_json::json!([]), "{staff}");
    assert_eq!(r[2]["records"][0]["name"], "Eight", "{staff}");
    assert_eq!(r[3]["records"], serde_json::json!([]), "{staff}");

    // Fetch still delivers the signed snapshot (as published, projected to the grant).
    let out = fed.root().join("companies.jsonl");
    fed.json("shanghai", &["fetch", "zhejiang/companies", "--out", path_str(&out)?])?;
    let rows = lines(&out)?;
    assert_eq!(rows.len(), 1000);
    let r42 = rows.iter().find(|r| r["company_id"] == "C42").context("C42 in the snapshot")?;
    assert_eq!(r42, &serde_json::json!({"company_id": "C42", "name": "Company 42"}));
    Ok(())
}

#[test]
fn a_database_that_goes_away_or_stalls_gives_503_and_the_node_recovers() -> Result<()> {
    let Live { mut pg, mut fed, token } =
        live(&[("zhejiang", "statement_timeout = \"500ms\""), ("zhejiang", "connect_timeout = \"2s\"")])?;
    let (code, _) = gateway_get(&fed, &token, "C7")?;
    assert_eq!(code, 200);

    // A table locked by another session: the statement times out, the caller gets 503.
    let mut locker = Command::new(deltafed_testnet::postgres::bin_dir()?.join("psql"))
        .args(["-X", "-q", "-h", path_str(pg.dir())?, "-p", &pg.port().to_string(), "-U", "deltafed", "-d", "deltafed"])
        .args(["-c", "BEGIN; LOCK TABLE companies IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    pg.wait_for("the lock", SOON, || {
        Ok(pg.sql(
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND relation = 'companies'::regclass",
        )? == "1")
    })?;
    let (code, body) = gateway_get(&fed, &token, "C7")?;
    assert_eq!((code, body["type"].as_str()), (503, Some("urn:deltafed:problem:unavailable")), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("statement timeout")), "{body}");
    // Ending the locking session (killing psql alone would leave its backend asleep).
    pg.sql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = 'companies'::regclass AND mode = 'AccessExclusiveLock'")?;
    locker.wait()?;
    fed.wait_for("answers after the lock", SOON, |f| Ok(gateway_get(f, &token, "C7")?.0 == 200))?;

    // The server gone: 503 at once, not a hang.
    pg.stop()?;
    let (code, body) = gateway_get(&fed, &token, "C7")?;
    assert_eq!(code, 503, "{body}");
    let e = refused(&fed, "shanghai", &["query", "zhejiang/companies", "C7"])?;
    assert!(e.contains("cannot answer now"), "{e}");

    // Back: the pool reconnects by itself.
    pg.start_again()?;
    fed.wait_for("answers after the restart", Duration::from_secs(30), |f| Ok(gateway_get(f, &token, "C7")?.0 == 200))?;
    let (_, body) = gateway_get(&fed, &token, "C7")?;
    assert_eq!(body["records"][0]["name"], "Company 7", "{body}");
    if fed.log("zhejiang").contains("panicked") {
        bail!("the node panicked");
    }
    Ok(())
}

#[test]
fn a_publisher_publishes_a_table_from_the_dashboard_and_the_record_names_them() -> Result<()> {
    let pg = Postgres::start()?;
    pg.sql("CREATE TABLE permits (permit text PRIMARY KEY, holder text); INSERT INTO permits VALUES ('P1', 'Acme')")?;
    let fed = federation(&["zhejiang"], &[])?;
    fed.json("zhejiang", &["source", "add", "permits-db", "--url", &pg.url()])?;
    let u = fed.json("zhejiang", &["user", "add", "paula", "--role", "publisher"])?;
    let web = Web::login(&fed.dashboard_url("zhejiang")?, "paula", u["secret"].as_str().context("secret")?)?;
    let catalog = web.get("/catalog")?;
    assert!(catalog.body.contains("permits-db"), "the form offers the source: {}", catalog.body);
    let form = [
        ("source", "permits-db"),
        ("table", "permits"),
        ("dataset", "permits"),
        ("title", "Permits"),
        ("key_field", "permit"),
        ("every", "1h"),
    ];
    let p = web.post("/catalog/publish", &form)?;
    assert_eq!(p.status.as_u16(), 303, "{}", p.body);
    assert_eq!(fed.catalog("zhejiang")?, vec!["zhejiang/permits@1".to_string()]);
    let log = fed.json("zhejiang", &["provenance"])?;
    let published = log.as_array().and_then(|l| l.iter().find(|e| e["kind"] == "published")).context("published")?;
    let note = published["note"].as_str().unwrap_or_default();
    assert!(note.ends_with("by dashboard user paula (publisher)"), "{note}");
    // The schedule remembers who set it; a source that does not exist is a clear 404.
    let s = schedule_of(&fed, "permits-db", "permits")?;
    assert!(s["every"] == "1h", "{s}");
    let bad = web.post("/catalog/publish", &[("source", "nope"), ("table", "t"), ("dataset", "t"), ("title", "T")])?;
    assert_eq!(bad.status.as_u16(), 404, "{}", bad.body);
    Ok(())
}
