//! The application gateway through real HTTP: a real client (reqwest) against running nodes.
//! Applications and their tokens (added, rotated, removed), every status the API answers, the
//! projection of granted fields, the content stream (whole, and cut off at a chunk that fails
//! verification), HTTPS with a self-signed certificate, the refusal to listen beyond loopback
//! without TLS, and the OpenAPI document the node serves.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deltafed_testnet::{Federation, path_str};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

const CONNECT: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(10);

const LICENCES: &str = "company_id,name,legal_rep,capital,status\n\
91330100A1,\"杭州数澜科技, 滨江分公司\",张三,5000000,active\n\
91330100B2,Beta Ltd,李四,120000,active\n\
X/1 2,Slash Space Co,王五,1,revoked\n\
91330100A1,\"杭州数澜科技 (second record)\",张三,7000000,active\n";

const PERMITS: &str = "{\"permit\":\"P1\",\"holder\":\"Acme\"}\n";

/// A blocking face on an async HTTP client, for tests written like the rest of the harness.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

/// What came back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("status {}: not JSON: {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts an RFC 9457 problem with this status and `type` ending in `kind`; returns it.
    fn problem(&self, status: u16, kind: &str) -> Result<Value> {
        let p = self.json()?;
        if self.status.as_u16() != status
            || self.header("content-type") != "application/problem+json"
            || p["type"] != format!("urn:deltafed:problem:{kind}")
            || p["status"] != status
            || p["title"].as_str().is_none_or(str::is_empty)
            || p["detail"].as_str().is_none_or(str::is_empty)
        {
            bail!("expected a {status} {kind} problem, got {} {:?}: {p}", self.status, self.headers);
        }
        Ok(p)
    }
}

impl Http {
    fn new(base: &str) -> Result<Http> {
        Http::with_client(base, reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?)
    }

    fn with_client(base: &str, client: reqwest::Client) -> Result<Http> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Http { rt, client, base: base.trim_end_matches('/').to_string() })
    }

    fn send(&self, req: reqwest::RequestBuilder) -> Result<Answer> {
        self.rt.block_on(async {
            let res = req.send().await?;
            let (status, headers) = (res.status(), res.headers().clone());
            let body = res.bytes().await?.to_vec();
            Ok(Answer { status, headers, body })
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str, token: Option<&str>) -> Result<Answer> {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> Result<Answer> {
        self.send(self.client.post(self.url(path)).bearer_auth(token).json(body))
    }

    /// The body of a streamed response as far as it got, and whether it ended in an error.
    fn get_stream(&self, path: &str, token: &str) -> Result<(Answer, bool)> {
        self.rt.block_on(async {
            let mut res = self.client.get(self.url(path)).bearer_auth(token).send().await?;
            let (status, headers) = (res.status(), res.headers().clone());
            let mut body = Vec::new();
            let broke = loop {
                match res.chunk().await {
                    Ok(Some(c)) => body.extend_from_slice(&c),
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            };
            Ok((Answer { status, headers, body }, broke))
        })
    }
}

fn file(fed: &Federation, name: &str, content: &[u8]) -> Result<String> {
    let p = fed.root().join(name);
    std::fs::write(&p, content)?;
    Ok(path_str(&p)?.to_string())
}

fn started(members: &[&str]) -> Result<Federation> {
    let mut fed = Federation::init(members)?;
    fed.start_all()?;
    fed.wait_mesh(members, CONNECT)?;
    Ok(fed)
}

fn wait_catalog(fed: &mut Federation, member: &str, entry: &str) -> Result<()> {
    let e = entry.to_string();
    fed.wait_for(&format!("{entry} in {member}'s catalog"), SOON, |f| Ok(f.catalog(member)?.contains(&e)))
}

/// Runs a command that must fail; returns its stderr.
fn refused(fed: &Federation, member: &str, args: &[&str]) -> Result<String> {
    let o = fed.cli(member, args)?;
    if o.status.success() {
        bail!("{member}: {args:?} should have been refused; stdout: {}", String::from_utf8_lossy(&o.stdout));
    }
    Ok(String::from_utf8_lossy(&o.stderr).to_string())
}

fn token_of(v: &Value) -> Result<String> {
    v["token"].as_str().map(str::to_string).with_context(|| format!("no token in {v}"))
}

fn openapi_file() -> Result<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
}

#[test]
fn applications_call_exactly_the_datasets_they_were_given_at_their_rate() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    let lic = file(&fed, "licences.csv", LICENCES.as_bytes())?;
    let permits = file(&fed, "permits.jsonl", PERMITS.as_bytes())?;
    for (path, id, key) in
        [(&lic, "licences", "company_id"), (&permits, "permits", "permit"), (&lic, "secret", "company_id")]
    {
        fed.json("zhejiang", &["publish", path, "--dataset", id, "--title", id, "--key-field", key])?;
    }
    for d in ["licences", "permits", "secret"] {
        wait_catalog(&mut fed, "shanghai", &format!("zhejiang/{d}@1"))?;
    }
    let g = fed.json(
        "zhejiang",
        &["grant", "licences", "--to", "shanghai", "--purpose", "credit checks", "--fields", "company_id,status"],
    )?;
    let gid = g["grant_id"].as_str().context("grant_id")?.to_string();
    assert_eq!(g["delivered"], true, "{g}");

    // Applications: registered through the admin socket, token shown once, clear refusals.
    let added = fed.json(
        "shanghai",
        &[
            "app",
            "add",
            "credit-check",
            "--datasets",
            "zhejiang/licences,zhejiang/permits,zhejiang/ghost",
            "--rate",
            "1000",
        ],
    )?;
    assert_eq!(added["app"], "credit-check");
    assert_eq!(added["rate"], 1000);
    assert_eq!(added["datasets"], json!(["zhejiang/ghost", "zhejiang/licences", "zhejiang/permits"]));
    let token = token_of(&added)?;
    assert!(token.starts_with("dfapp_") && token.len() == 70, "{token}");
    let dup = refused(&fed, "shanghai", &["app", "add", "credit-check"])?;
    assert!(dup.contains("already exists"), "{dup}");
    let slug = refused(&fed, "shanghai", &["app", "add", "Credit_Check"])?;
    assert!(slug.contains("not valid") && slug.contains("lower-case"), "{slug}");
    let versioned = refused(&fed, "shanghai", &["app", "add", "x", "--datasets", "zhejiang/licences@1"])?;
    assert!(versioned.contains("without a version"), "{versioned}");
    let own = refused(&fed, "shanghai", &["app", "add", "x", "--datasets", "shanghai/anything"])?;
    assert!(own.contains("own dataset"), "{own}");
    let stranger = refused(&fed, "shanghai", &["app", "add", "x", "--datasets", "nowhere/licences"])?;
    assert!(stranger.contains("not a member"), "{stranger}");
    let rate = refused(&fed, "shanghai", &["app", "add", "x", "--rate", "0"])?;
    assert!(rate.contains("--rate"), "{rate}");
    assert!(refused(&fed, "shanghai", &["app", "rotate", "nope"])?.contains("no application named nope"));
    assert!(refused(&fed, "shanghai", &["app", "remove", "nope"])?.contains("no application named nope"));
    let slow =
        token_of(&fed.json("shanghai", &["app", "add", "slow", "--datasets", "zhejiang/licences", "--rate", "1"])?)?;
    let defaulted = fed.json("shanghai", &["app", "add", "defaulted"])?;
    assert_eq!(defaulted["rate"], 1000, "the default rate of the config");
    assert_eq!(defaulted["datasets"], json!([]));

    let url = fed.gateway_url("shanghai")?;
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
    let http = Http::new(&url)?;

    // The OpenAPI document needs no token and is exactly docs/openapi.json.
    let doc = http.get("/openapi.json", None)?;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.header("content-type"), "application/json");
    assert_eq!(String::from_utf8_lossy(&doc.body), openapi_file()?, "served and committed OpenAPI differ");

    // 401: no token, an unknown one, another scheme.
    let none = http.get("/v1/catalog", None)?;
    none.problem(401, "unauthorized")?;
    assert_eq!(none.header("www-authenticate"), "Bearer realm=\"deltafed\"");
    let unknown = http.get("/v1/catalog", Some(&format!("dfapp_{}", "0".repeat(64))))?;
    unknown.problem(401, "unauthorized")?;
    assert!(unknown.header("www-authenticate").contains("invalid_token"));
    http.get("/v1/catalog", Some("not-a-token"))?.problem(401, "unauthorized")?;
    let basic = http.send(http.client.get(http.url("/v1/catalog")).basic_auth("credit-check", Some(&token)))?;
    basic.problem(401, "unauthorized")?;
    // Every /v1 route asks for the token before anything else.
    http.get("/v1/records/zhejiang/licences/91330100A1", None)?.problem(401, "unauthorized")?;
    http.get("/v1/datasets/zhejiang/licences/content", None)?.problem(401, "unauthorized")?;
    let post = http.send(http.client.post(http.url("/v1/records/zhejiang/licences")).json(&json!({"keys": ["a"]})))?;
    post.problem(401, "unauthorized")?;

    // The catalog: the datasets given that exist, with the fields of `catalog --json`.
    let cat = http.get("/v1/catalog", Some(&token))?;
    assert_eq!(cat.status, 200, "{}", String::from_utf8_lossy(&cat.body));
    let listed = cat.json()?["datasets"].as_array().cloned().context("datasets")?;
    let names: Vec<&str> = listed.iter().filter_map(|d| d["dataset"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listed:?}");
    assert!(names.contains(&"licences") && names.contains(&"permits"), "{names:?}");
    let cli_catalog = fed.json("shanghai", &["catalog", "--publisher", "zhejiang"])?;
    let cli_licences = cli_catalog
        .as_array()
        .and_then(|a| a.iter().find(|d| d["dataset"] == "licences").cloned())
        .context("licences in catalog --json")?;
    let gw_licences = listed.iter().find(|d| d["dataset"] == "licences").context("licences")?;
    assert_eq!(gw_licences, &cli_licences, "same fields as catalog --json");

    // One key: only the granted fields.
    let one = http.get("/v1/records/zhejiang/licences/91330100A1", Some(&token))?;
    assert_eq!(one.status, 200, "{}", String::from_utf8_lossy(&one.body));
    assert_eq!(one.header("content-type"), "application/json");
    let v = one.json()?;
    assert_eq!(v["dataset"], "zhejiang/licences@1");
    assert_eq!(
        v["records"],
        json!([{"company_id": "91330100A1", "status": "active"}, {"company_id": "91330100A1", "status": "active"}])
    );
    // A key with a slash and a space, percent-encoded.
    let enc = http.get("/v1/records/zhejiang/licences/X%2F1%202", Some(&token))?;
    assert_eq!(enc.json()?["records"], json!([{"company_id": "X/1 2", "status": "revoked"}]), "{}", enc.status);
    let missing = http.get("/v1/records/zhejiang/licences/nope", Some(&token))?;
    assert_eq!((missing.status.as_u16(), missing.json()?["records"].clone()), (200, json!([])));

    // Several keys, answered in the order asked.
    let batch =
        http.post("/v1/records/zhejiang/licences", &token, &json!({"keys": ["91330100B2", "nope", "91330100A1"]}))?;
    assert_eq!(batch.status, 200, "{}", String::from_utf8_lossy(&batch.body));
    let b = batch.json()?;
    assert_eq!(b["dataset"], "zhejiang/licences@1");
    let results = b["results"].as_array().context("results")?;
    let keys: Vec<&str> = results.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(keys, ["91330100B2", "nope", "91330100A1"]);
    assert_eq!(results[0]["records"], json!([{"company_id": "91330100B2", "status": "active"}]));
    assert_eq!(results[1]["records"], json!([]));
    assert_eq!(results[2]["records"].as_array().map(Vec::len), Some(2));

    // On behalf of an end user: accepted (and bounded).
    let obo = http.send(
        http.client
            .get(http.url("/v1/records/zhejiang/licences/91330100B2"))
            .bearer_auth(&token)
            .header("X-Deltafed-On-Behalf-Of", "case 2026-117 (王五)"),
    )?;
    assert_eq!(obo.status, 200, "{}", String::from_utf8_lossy(&obo.body));
    let long = http.send(
        http.client
            .get(http.url("/v1/records/zhejiang/licences/91330100B2"))
            .bearer_auth(&token)
            .header("X-Deltafed-On-Behalf-Of", "x".repeat(300)),
    )?;
    long.problem(400, "invalid")?;

    // 403: a dataset the application was not given; one without a usable grant.
    let secret = http.get("/v1/records/zhejiang/secret/91330100A1", Some(&token))?;
    let p = secret.problem(403, "not-allowed")?;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("zhejiang/secret")), "{p}");
    http.get("/v1/datasets/zhejiang/secret/content", Some(&token))?.problem(403, "not-allowed")?;
    let no_grant = http.get("/v1/records/zhejiang/permits/P1", Some(&token))?;
    let p = no_grant.problem(403, "refused")?;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("no valid grant from zhejiang for permits")), "{p}");
    // 404: given, but not in the catalog.
    http.get("/v1/records/zhejiang/ghost/k", Some(&token))?.problem(404, "not-found")?;

    // 400: malformed paths and bodies, and the router's own rejections, all problem documents.
    http.get("/v1/records/Zhejiang/licences/k", Some(&token))?.problem(400, "invalid")?;
    http.get("/v1/records/zhejiang/Lic%20ences/k", Some(&token))?.problem(400, "invalid")?;
    http.get("/v1/records/zhejiang/licences/%FF", Some(&token))?.problem(400, "invalid")?;
    let lib = "/v1/records/zhejiang/licences";
    http.post(lib, &token, &json!({"keys": []}))?.problem(400, "invalid")?;
    let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    http.post(lib, &token, &json!({ "keys": many }))?.problem(400, "invalid")?;
    http.post(lib, &token, &json!({"keys": ["a"], "extra": 1}))?.problem(400, "invalid")?;
    http.post(lib, &token, &json!({"keys": [1, 2]}))?.problem(400, "invalid")?;
    let bad_json = http.send(
        http.client
            .post(http.url(lib))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{\"keys\": ["),
    )?;
    bad_json.problem(400, "invalid")?;
    let no_type = http.send(http.client.post(http.url(lib)).bearer_auth(&token).body("{\"keys\": [\"a\"]}"))?;
    no_type.problem(415, "unsupported-media-type")?;
    let huge = http.send(
        http.client
            .post(http.url(lib))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(vec![b' '; 1536 * 1024 + 1000]),
    )?;
    huge.problem(413, "payload-too-large")?;

    // Nothing of the admin API is reachable: no such routes, whatever the token.
    for path in ["/v1/admin", "/admin", "/admin.sock", "/v1/grants", "/v1/status", "/v1/apps", "/"] {
        http.get(path, Some(&token))?.problem(404, "not-found")?;
    }
    let admin_line = json!({"op": "grant", "dataset": "x", "to": "zhejiang", "purpose": "p"});
    for path in ["/", "/v1", "/v1/admin"] {
        let a = http.post(path, &token, &admin_line)?;
        assert!(a.status == 404 || a.status == 405, "{path}: {}", a.status);
    }
    http.send(http.client.delete(http.url("/v1/catalog")).bearer_auth(&token))?.problem(405, "method-not-allowed")?;

    // 429 over the rate, with Retry-After; more keys at once than a second allows is malformed.
    let first = http.get("/v1/catalog", Some(&slow))?;
    assert_eq!(first.status, 200);
    let second = http.get("/v1/catalog", Some(&slow))?;
    second.problem(429, "rate-limited")?;
    let retry: u64 = second.header("retry-after").parse().context("Retry-After is whole seconds")?;
    assert!(retry >= 1, "{retry}");
    http.post(lib, &slow, &json!({"keys": ["a", "b"]}))?.problem(400, "invalid")?;

    // The content: the granted projection, with its length and signed hash.
    let (content, broke) = http.get_stream("/v1/datasets/zhejiang/licences/content", &token)?;
    assert!(!broke && content.status == 200, "{} {}", content.status, String::from_utf8_lossy(&content.body));
    let text = String::from_utf8(content.body.clone())?;
    assert_eq!(text, "company_id,status\n91330100A1,active\n91330100B2,active\nX/1 2,revoked\n91330100A1,active\n");
    assert_eq!(content.header("content-length"), content.body.len().to_string());
    assert_eq!(content.header("x-deltafed-content-hash"), blake3::hash(&content.body).to_hex().as_str());
    assert_eq!(content.header("x-deltafed-dataset"), "zhejiang/licences@1");
    assert!(content.header("content-type").starts_with("text/csv"));
    fed.wait_for("zhejiang to log the receipt of the streamed fetch", SOON, |f| {
        let log = f.json("zhejiang", &["provenance", "--peer", "shanghai"])?;
        Ok(log.as_array().is_some_and(|a| a.iter().any(|e| e["kind"] == "receipt-received")))
    })?;

    // Calls are counted per application.
    let apps = fed.json("shanghai", &["app", "list"])?;
    let cc = apps.as_array().and_then(|a| a.iter().find(|x| x["app"] == "credit-check").cloned()).context("listed")?;
    assert!(cc["calls"].as_u64().is_some_and(|n| n >= 8), "{cc}");
    assert!(cc["last_call"].as_str().is_some(), "{cc}");
    assert!(cc["created"].as_str().is_some(), "{cc}");
    assert_eq!(cc["rate"], 1000);
    let d = apps.as_array().and_then(|a| a.iter().find(|x| x["app"] == "defaulted").cloned()).context("listed")?;
    assert_eq!((d["calls"].clone(), d["last_call"].clone()), (json!(0), Value::Null));
    assert!(!apps.to_string().contains(&token[6..]), "app list never shows a token");

    // Revoked: refused with the provider's reason.
    fed.json("zhejiang", &["revoke", &gid, "--reason", "purpose fulfilled"])?;
    fed.wait_for("shanghai to hold the revocation", SOON, |f| {
        let gs = f.json("shanghai", &["grants"])?;
        Ok(gs.as_array().is_some_and(|a| a.iter().any(|g| g["grant_id"] == gid.as_str() && g["revoked"] == true)))
    })?;
    let revoked = http.get("/v1/records/zhejiang/licences/91330100A1", Some(&token))?;
    let p = revoked.problem(403, "refused")?;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("purpose fulfilled")), "{p}");

    // Rotate: the old token is refused at once, the new one works; remove: refused at once.
    let rotated = fed.json("shanghai", &["app", "rotate", "credit-check"])?;
    let new_token = token_of(&rotated)?;
    assert_ne!(new_token, token);
    http.get("/v1/catalog", Some(&token))?.problem(401, "unauthorized")?;
    assert_eq!(http.get("/v1/catalog", Some(&new_token))?.status, 200);
    let removed = fed.json("shanghai", &["app", "remove", "credit-check"])?;
    assert_eq!(removed, json!({"app": "credit-check", "removed": true}));
    http.get("/v1/catalog", Some(&new_token))?.problem(401, "unauthorized")?;

    // Applications and their counters survive a restart; removed ones stay removed.
    let before = fed.json("shanghai", &["app", "list"])?;
    assert!(fed.stop("shanghai")?.success());
    fed.start("shanghai")?;
    let after = fed.json("shanghai", &["app", "list"])?;
    assert_eq!(after, before);
    let http = Http::new(&fed.gateway_url("shanghai")?)?;
    http.get("/v1/catalog", Some(&new_token))?.problem(401, "unauthorized")?;
    assert_eq!(http.get("/v1/catalog", Some(&slow))?.status, 200);
    Ok(())
}

#[test]
fn a_chunk_that_fails_verification_cuts_the_content_response_short() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
    let path = file(&fed, "d.bin", &data)?;
    let p = fed.json("zhejiang", &["publish", &path, "--dataset", "d", "--title", "D"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/d@1")?;
    fed.json("zhejiang", &["grant", "d", "--to", "shanghai", "--purpose", "p"])?;
    let token = token_of(&fed.json("shanghai", &["app", "add", "bulk", "--datasets", "zhejiang/d"])?)?;
    let http = Http::new(&fed.gateway_url("shanghai")?)?;
    let (whole, broke) = http.get_stream("/v1/datasets/zhejiang/d/content", &token)?;
    assert!(!broke && whole.status == 200 && whole.body == data, "the intact dataset streams whole");
    assert_eq!(whole.header("content-type"), "application/octet-stream");
    assert_eq!(whole.header("x-deltafed-content-hash"), p["content_hash"].as_str().context("hash")?);

    // The provider's stored copy rots: one bit in the second chunk.
    let blob = fed.data_dir("zhejiang").join("blobs").join(p["content_hash"].as_str().context("hash")?);
    let mut perms = std::fs::metadata(&blob)?.permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(&blob)?;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((1 << 20) + 12345))?;
    f.write_all(&[data[(1 << 20) + 12345] ^ 0x01])?;
    drop(f);
    let (cut, broke) = http.get_stream("/v1/datasets/zhejiang/d/content", &token)?;
    assert_eq!(cut.status, 200, "the headers went out before the bad chunk arrived");
    assert_eq!(cut.header("content-length"), data.len().to_string());
    assert!(broke, "the response must end in an error, not look complete");
    assert!(cut.body.len() <= 1 << 20, "only the verified first chunk was sent: {} bytes", cut.body.len());
    assert_eq!(cut.body, data[..cut.body.len()], "what was sent is the verified prefix");
    fed.wait_for("shanghai to log the failed fetch", SOON, |f| {
        let log = f.json("shanghai", &["provenance", "--peer", "zhejiang"])?;
        Ok(log.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["kind"] == "exchange-refused" && e["note"].as_str().is_some_and(|n| n.contains("chunk 1")))
        }))
    })?;
    Ok(())
}

#[test]
fn https_with_a_self_signed_certificate_and_no_clear_text_beyond_loopback() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang"])?;
    // Beyond loopback without TLS: the node refuses to start, and says what to set.
    fed.configure_in("zhejiang", Some("gateway"), "listen = \"0.0.0.0:0\"")?;
    let err = fed.start_refused("zhejiang", SOON)?;
    assert!(err.contains("beyond loopback") && err.contains("tls_cert"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one sentence: {err}");

    // `testnet init --docker` writes a certificate per member; with it the node serves HTTPS.
    let docker = fed.root().join("docker");
    let out = fed.run(&["testnet", "init", "--dir", path_str(&docker)?, "--members", "zhejiang", "--docker"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["gateway-cert.pem", "gateway-key.pem"] {
        std::fs::copy(docker.join("zhejiang").join(f), fed.data_dir("zhejiang").join(f))?;
    }
    fed.configure_in("zhejiang", Some("gateway"), "tls_cert = \"gateway-cert.pem\"")?;
    fed.configure_in("zhejiang", Some("gateway"), "tls_key = \"gateway-key.pem\"")?;
    fed.start("zhejiang")?;
    let url = fed.gateway_url("zhejiang")?;
    let port = url.strip_prefix("https://0.0.0.0:").with_context(|| format!("HTTPS on every interface: {url}"))?;
    let base = format!("https://localhost:{port}");
    let cert = reqwest::Certificate::from_pem(&std::fs::read(docker.join("zhejiang/gateway-cert.pem"))?)?;
    let trusting = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .timeout(Duration::from_secs(30))
        .build()?;
    let https = Http::with_client(&base, trusting)?;
    let doc = https.get("/openapi.json", None)?;
    assert_eq!(doc.status, 200);
    assert_eq!(String::from_utf8_lossy(&doc.body), openapi_file()?);
    let token = token_of(&fed.json("zhejiang", &["app", "add", "tls-app"])?)?;
    let cat = https.get("/v1/catalog", Some(&token))?;
    assert_eq!((cat.status.as_u16(), cat.json()?), (200, json!({"datasets": []})));
    https.get("/v1/catalog", None)?.problem(401, "unauthorized")?;

    // A client that does not trust the certificate gets no answer; nor does clear text.
    let untrusting = Http::with_client(
        &base,
        reqwest::Client::builder().use_rustls_tls().timeout(Duration::from_secs(10)).build()?,
    )?;
    assert!(untrusting.get("/openapi.json", None).is_err(), "an untrusted certificate is refused by the client");
    let plain = Http::new(&format!("http://127.0.0.1:{port}"))?;
    assert!(plain.get("/openapi.json", None).is_err(), "no clear-text HTTP on the HTTPS port");
    // The server is still healthy after both.
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}"))?);
    let again = https.send(https.client.get(https.url("/v1/catalog")).headers(headers))?;
    assert_eq!(again.status, 200);
    Ok(())
}
