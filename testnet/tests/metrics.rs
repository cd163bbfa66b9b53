//! Metrics and health of real nodes, through a real HTTP client: the counters move with real
//! traffic (gossip, a fetch, sharing calls, refusals), the gauges match the stores, the output
//! passes `promtool check metrics`, `/healthz` and `/readyz` answer, and the listen addresses
//! follow defaults < file < environment < flags.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deltafed_testnet::{Federation, free_base_port, path_str};

const CONNECT: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(10);

/// A blocking HTTP client for the sync harness.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Http> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Http { rt, client })
    }

    /// GET `url`: status, content type and body.
    fn get(&self, url: &str, accept: Option<&str>) -> Result<(u16, String, String)> {
        self.rt.block_on(async {
            let mut req = self.client.get(url);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            let resp = req.send().await.with_context(|| format!("GET {url}"))?;
            let status = resp.status().as_u16();
            let ctype = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            Ok((status, ctype, resp.text().await?))
        })
    }
}

/// The samples of a Prometheus text exposition: `name{labels}` -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

fn scrape(http: &Http, fed: &Federation, member: &str) -> Result<(String, BTreeMap<String, f64>)> {
    let url = format!("{}/metrics", fed.metrics_url(member)?);
    let (status, ctype, body) = http.get(&url, None)?;
    if status != 200 {
        bail!("{member}: GET {url} answered {status}: {body}");
    }
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let s = samples(&body);
    Ok((body, s))
}

/// `promtool check metrics` on `text` (Debian's `prometheus` package; scripts/prereqs.sh
/// installs it). `None` when promtool is not installed.
fn promtool(text: &str) -> Result<Option<String>> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("promtool check metrics failed: {said}");
    }
    Ok(Some(said))
}

fn keyed_csv(n: usize) -> String {
    let mut s = String::from("company_id,name,capital\n");
    for i in 0..n {
        s += &format!("C{i:04},Company {i},{}\n", i * 10);
    }
    s
}

#[test]
fn counters_move_with_real_traffic_and_the_output_passes_promtool() -> Result<()> {
    let http = Http::new()?;
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    fed.start_all()?;
    fed.wait_mesh(&["shanghai", "zhejiang"], CONNECT)?;
    let (zj, sh) = (fed.metrics_url("zhejiang")?, fed.metrics_url("shanghai")?);
    assert!(zj.starts_with("http://127.0.0.1:") && !zj.ends_with(":0"), "{zj}");
    assert_ne!(zj, fed.gateway_url("zhejiang")?, "its own listener, not the gateway's");

    // Alive, and ready once the network listens (it does as soon as the admin socket answers).
    for url in [&zj, &sh] {
        let (status, _, body) = http.get(&format!("{url}/healthz"), None)?;
        assert_eq!((status, body.contains("alive")), (200, true), "{body}");
        let (status, _, body) = http.get(&format!("{url}/readyz"), None)?;
        assert_eq!(status, 200, "{body}");
        let (status, _, _) = http.get(&format!("{url}/nothing"), None)?;
        assert_eq!(status, 404);
    }
    let (_, before) = scrape(&http, &fed, "shanghai")?;

    // Traffic: three datasets published (gossip), one fetched, calls under a budget that runs
    // out inside the batch (answered and refused calls), one access request left undecided.
    let dir = fed.root().to_path_buf();
    std::fs::write(dir.join("companies.csv"), keyed_csv(20))?;
    std::fs::write(dir.join("permits.csv"), keyed_csv(200))?;
    std::fs::write(dir.join("licences.csv"), keyed_csv(5))?;
    for (file, id) in [("companies.csv", "companies"), ("permits.csv", "permits"), ("licences.csv", "licences")] {
        let p = dir.join(file);
        fed.json("zhejiang", &["publish", path_str(&p)?, "--dataset", id, "--title", id, "--key-field", "company_id"])?;
    }
    fed.wait_for("three datasets in shanghai's catalog", SOON, |f| Ok(f.catalog("shanghai")?.len() == 3))?;
    fed.json(
        "zhejiang",
        &["grant", "companies", "--to", "shanghai", "--purpose", "credit check", "--max-queries", "5"],
    )?;
    fed.json("zhejiang", &["grant", "permits", "--to", "shanghai", "--purpose", "inspection"])?;
    let out = dir.join("permits-fetched.csv");
    fed.json("shanghai", &["fetch", "zhejiang/permits", "--out", path_str(&out)?])?;
    let keys: Vec<String> = (0..8).map(|i| format!("C{i:04}")).collect();
    let mut args = vec!["query", "zhejiang/companies"];
    args.extend(keys.iter().map(String::as_str));
    let q = fed.cli("shanghai", &args)?;
    let answered = String::from_utf8_lossy(&q.stdout).matches("Company").count();
    assert_eq!(answered, 5, "five calls within the budget: {}", String::from_utf8_lossy(&q.stdout));
    fed.json("shanghai", &["request", "zhejiang/licences", "--purpose", "audit"])?;
    fed.wait_for("the request at zhejiang", SOON, |f| {
        Ok(f.json("zhejiang", &["requests"])?.as_array().is_some_and(|a| !a.is_empty()))
    })?;

    let (zj_text, z) = scrape(&http, &fed, "zhejiang")?;
    let (sh_text, s) = scrape(&http, &fed, "shanghai")?;
    // Requester side (shanghai).
    assert!(
        value(&s, "deltafed_gossip_messages_total{result=\"accepted\"}")
            >= value(&before, "deltafed_gossip_messages_total{result=\"accepted\"}") + 3.0,
        "{sh_text}"
    );
    assert_eq!(value(&s, "deltafed_fetches_total{side=\"received\",peer=\"zhejiang\",outcome=\"ok\"}"), 1.0);
    assert_eq!(value(&s, "deltafed_fetch_duration_seconds_count"), 1.0, "{sh_text}");
    assert_eq!(value(&s, "deltafed_calls_total{side=\"sent\",peer=\"zhejiang\",outcome=\"answered\"}"), 5.0);
    assert_eq!(value(&s, "deltafed_calls_total{side=\"sent\",peer=\"zhejiang\",outcome=\"refused\"}"), 3.0);
    assert!(value(&s, "deltafed_call_batch_duration_seconds_count{side=\"sent\"}") >= 1.0, "{sh_text}");
    let fetched = std::fs::metadata(&out)?.len() as f64;
    assert!(value(&s, "deltafed_data_bytes_total{direction=\"received\",peer=\"zhejiang\"}") > fetched, "{sh_text}");
    assert_eq!(value(&s, "deltafed_grants_active{role=\"received\"}"), 2.0, "{sh_text}");
    assert_eq!(value(&s, "deltafed_access_requests_pending{direction=\"outgoing\"}"), 1.0, "{sh_text}");
    assert_eq!(value(&s, "deltafed_catalog_datasets"), 3.0);
    // Provider side (zhejiang).
    assert_eq!(value(&z, "deltafed_fetches_total{side=\"served\",peer=\"shanghai\",outcome=\"ok\"}"), 1.0, "{zj_text}");
    assert_eq!(value(&z, "deltafed_calls_total{side=\"served\",peer=\"shanghai\",outcome=\"answered\"}"), 5.0);
    assert_eq!(value(&z, "deltafed_calls_total{side=\"served\",peer=\"shanghai\",outcome=\"refused\"}"), 3.0);
    assert_eq!(value(&z, "deltafed_refusals_total{request=\"call\",reason=\"budget_spent\"}"), 3.0, "{zj_text}");
    assert!(value(&z, "deltafed_call_batch_size_sum{side=\"served\"}") >= 8.0, "{zj_text}");
    assert!(value(&z, "deltafed_data_bytes_total{direction=\"served\",peer=\"shanghai\"}") >= fetched, "{zj_text}");
    assert_eq!(value(&z, "deltafed_grants_active{role=\"issued\"}"), 2.0);
    assert_eq!(value(&z, "deltafed_access_requests_pending{direction=\"incoming\"}"), 1.0);
    assert_eq!(value(&z, "deltafed_access_requests_overdue{direction=\"incoming\"}"), 0.0);
    assert_eq!(value(&z, "deltafed_outbox_deliveries{member=\"shanghai\"}"), 0.0);
    assert!(z.contains_key("deltafed_outbox_deliveries{member=\"shanghai\"}"), "{zj_text}");
    for m in [&s, &z] {
        assert_eq!(value(m, "deltafed_members"), 2.0);
        assert_eq!(value(m, "deltafed_members_connected"), 1.0);
        assert_eq!(value(m, "deltafed_roster_version"), 1.0);
        assert!(value(m, "deltafed_provenance_entries_total") >= 3.0);
        assert!(m.contains_key("deltafed_provenance_head_seq"));
        assert!(m.keys().any(|k| k.starts_with("deltafed_build_info{version=")));
    }
    // The provenance gauges are the log's: head seq + 1 entries.
    assert_eq!(value(&z, "deltafed_provenance_entries_total"), value(&z, "deltafed_provenance_head_seq") + 1.0);

    // Every series named in the issue is there, on both sides, with help text (a family with
    // no series yet is not written: shanghai refused nothing).
    assert!(zj_text.contains("# HELP deltafed_refusals_total "), "{zj_text}");
    for name in [
        "deltafed_members_connected",
        "deltafed_catalog_datasets",
        "deltafed_gossip_messages_total",
        "deltafed_fetches_total",
        "deltafed_calls_total",
        "deltafed_data_bytes_total",
        "deltafed_call_batch_duration_seconds",
        "deltafed_fetch_duration_seconds",
        "deltafed_call_batch_size",
        "deltafed_provenance_entries_total",
        "deltafed_provenance_head_seq",
        "deltafed_outbox_deliveries",
        "deltafed_access_requests_pending",
        "deltafed_access_requests_overdue",
        "deltafed_grants_active",
        "deltafed_build_info",
    ] {
        for text in [&zj_text, &sh_text] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help\n{text}");
        }
    }
    // Peers are roster members only.
    for text in [&zj_text, &sh_text] {
        for line in text.lines().filter(|l| l.contains("peer=\"")) {
            assert!(line.contains("peer=\"shanghai\"") || line.contains("peer=\"zhejiang\""), "{line}");
        }
    }

    // OpenMetrics for a client that asks for it.
    let (status, ctype, om) =
        http.get(&format!("{zj}/metrics"), Some("application/openmetrics-text; version=1.0.0"))?;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(om.ends_with("# EOF\n"), "{om}");

    match promtool(&zj_text)? {
        Some(said) => {
            promtool(&sh_text)?;
            eprintln!("promtool check metrics: passed {}", said.trim());
        }
        None => eprintln!(
            "promtool is not installed (Debian's prometheus package; scripts/prereqs.sh installs it): skipped `promtool check metrics`"
        ),
    }
    Ok(())
}

#[test]
fn readyz_goes_unready_at_shutdown_and_the_listener_closes() -> Result<()> {
    let http = Http::new()?;
    let mut fed = Federation::init(&["anhui"])?;
    fed.start("anhui")?;
    let url = fed.metrics_url("anhui")?;
    fed.wait_for("anhui ready", SOON, |_| Ok(http.get(&format!("{url}/readyz"), None)?.0 == 200))?;
    let pid = fed.pid("anhui").context("running")?;
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    // Once the node has taken the signal (the signal is delivered asynchronously, so a probe
    // right after `kill` may still be answered as before), never ready again: 503 while it
    // shuts down, then nothing listens.
    let deadline = std::time::Instant::now() + SOON;
    let mut unready = false;
    loop {
        match http.get(&format!("{url}/readyz"), None) {
            Ok((200, _, body)) => assert!(!unready, "ready again after saying it shuts down: {body}"),
            Ok((status, _, body)) => {
                assert_eq!(status, 503, "{body}");
                assert!(body.contains("shutting down"), "{body}");
                unready = true;
            }
            Err(_) => break,
        }
        if std::time::Instant::now() > deadline {
            bail!("the metrics listener still answers {SOON:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(fed.stop("anhui")?.success(), "anhui stops cleanly");
    Ok(())
}

#[test]
fn listen_addresses_follow_defaults_file_environment_then_flags() -> Result<()> {
    let mut fed = Federation::init(&["jiangsu"])?;
    let port = |_: ()| free_base_port(1);
    let (file, env, flag) = (port(())?, port(())?, port(())?);
    let addr = |p: u16| format!("127.0.0.1:{p}");

    // testnet init: a free loopback port.
    fed.start("jiangsu")?;
    let url = fed.metrics_url("jiangsu")?;
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");
    assert!(fed.stop("jiangsu")?.success());

    // The file.
    fed.configure_in("jiangsu", Some("metrics"), &format!("listen = \"{}\"", addr(file)))?;
    fed.start("jiangsu")?;
    assert_eq!(fed.metrics_url("jiangsu")?, format!("http://{}", addr(file)));
    assert!(fed.stop("jiangsu")?.success());

    // The environment over the file.
    fed.start_with_env("jiangsu", &[("DELTAFED_METRICS_LISTEN", &addr(env))])?;
    assert_eq!(fed.metrics_url("jiangsu")?, format!("http://{}", addr(env)));
    assert!(fed.stop("jiangsu")?.success());

    // Flags over the environment, for every setting that has one.
    let (gw, net) = (port(())?, port(())?);
    let listen = format!("/ip4/127.0.0.1/tcp/{net},/ip4/127.0.0.1/udp/{net}/quic-v1");
    fed.start_with(
        "jiangsu",
        &[
            ("DELTAFED_METRICS_LISTEN", &addr(env)),
            ("DELTAFED_GATEWAY_LISTEN", "127.0.0.1:0"),
            ("DELTAFED_LOG_FORMAT", "text"),
            ("DELTAFED_LISTEN", "/ip4/127.0.0.1/tcp/0"),
        ],
        &["--metrics-listen", &addr(flag), "--gateway-listen", &addr(gw), "--log-format", "json", "--listen", &listen],
    )?;
    let status = fed.json("jiangsu", &["status"])?;
    assert_eq!(status["metrics_url"], format!("http://{}", addr(flag)), "{status}");
    assert_eq!(status["gateway_url"], format!("http://{}", addr(gw)), "{status}");
    let bound: Vec<&str> = status["listen"].as_array().context("listen")?.iter().filter_map(|v| v.as_str()).collect();
    assert!(bound.contains(&format!("/ip4/127.0.0.1/tcp/{net}").as_str()), "{status}");
    assert!(fed.stop("jiangsu")?.success());
    let json_lines = fed.log("jiangsu").lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines > 0, "--log-format json over DELTAFED_LOG_FORMAT=text: {}", fed.log_tail("jiangsu", 5));

    // A flag the node cannot use is refused before anything starts, naming the flag.
    let out = fed.cli("jiangsu", &["run", "--metrics-listen", "localhost"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metrics-listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
