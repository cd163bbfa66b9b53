//! Crashes: a node killed with SIGKILL while operations run against it, then restarted. Whatever
//! the CLI reported as done must be there after the restart and in the provenance log, the log
//! must verify, and deliveries still arrive. The kill comes while the next operation is in
//! flight: a worker issues operations back to back, and the node is killed once the worker has
//! seen a given number of them succeed.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use deltafed_testnet::{Federation, binary, path_str};
use serde_json::Value;

const CONNECT: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(15);

const LICENCES: &str = "company_id,name,capital\n\
91330100A1,杭州数澜科技,5000000\n\
91330100B2,Quoted Co,120000\n";

/// What the worker saw reported as done.
#[derive(Debug, Clone)]
enum Done {
    Published(u64),
    Granted(String),
    Revoked(String),
    Queried(String),
}

/// Runs `deltafed ARGS --json --data-dir DIR` outside the harness (from a worker thread).
fn cli_json(dir: &std::path::Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(binary())
        .args(args)
        .args(["--json", "--data-dir", path_str(dir)?])
        .env_remove("DELTAFED_DATA_DIR")
        .output()
        .context("cannot run deltafed")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Starts a worker that runs `op(i)` for i = 0, 1, 2, ... until one fails; returns what it saw done.
fn worker(op: impl Fn(usize) -> Result<Done> + Send + 'static) -> (Arc<Mutex<Vec<Done>>>, thread::JoinHandle<()>) {
    let done = Arc::new(Mutex::new(Vec::new()));
    let log = done.clone();
    let handle = thread::spawn(move || {
        for i in 0..10_000 {
            match op(i) {
                Ok(d) => log.lock().unwrap_or_else(|p| p.into_inner()).push(d),
                Err(_) => return,
            }
        }
    });
    (done, handle)
}

fn count(done: &Arc<Mutex<Vec<Done>>>) -> usize {
    done.lock().unwrap_or_else(|p| p.into_inner()).len()
}

fn verify(fed: &Federation, member: &str) -> Result<()> {
    let out = fed.cli(member, &["provenance", "verify"])?;
    if !out.status.success() {
        bail!(
            "{member}: provenance verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Every note in `member`'s log (oldest first).
fn notes(fed: &Federation, member: &str, kind: &str) -> Result<Vec<(String, Option<String>)>> {
    let log = fed.json(member, &["provenance"])?;
    Ok(log
        .as_array()
        .context("provenance list")?
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| (e["note"].as_str().unwrap_or_default().to_string(), e["exchange_id"].as_str().map(String::from)))
        .collect())
}

/// Zhejiang and Shanghai connected, Zhejiang publishing `lic` (extra publish flags in `flags`);
/// returns the federation and the path of the published file.
fn two_provinces(flags: &[&str]) -> Result<(Federation, String)> {
    let mut fed = Federation::init(&["zhejiang", "shanghai"])?;
    fed.start_all()?;
    fed.wait_mesh(&["zhejiang", "shanghai"], CONNECT)?;
    let lic = fed.root().join("l.csv");
    std::fs::write(&lic, LICENCES)?;
    let lic = path_str(&lic)?.to_string();
    let mut args = vec!["publish", lic.as_str(), "--dataset", "lic", "--title", "L"];
    args.extend_from_slice(flags);
    fed.json("zhejiang", &args)?;
    Ok((fed, lic))
}

#[test]
fn a_crash_during_publish_grant_and_revoke_loses_nothing_reported() -> Result<()> {
    let (mut fed, lic) = two_provinces(&[])?;
    let mut reported: Vec<Done> = Vec::new();
    for round in 0..3 {
        let dir = fed.data_dir("zhejiang");
        let file = lic.clone();
        let (done, handle) = worker(move |i| match i % 3 {
            0 => {
                let g = cli_json(&dir, &["grant", "lic", "--to", "shanghai", "--purpose", "crash test"])?;
                Ok(Done::Granted(g["grant_id"].as_str().context("grant_id")?.to_string()))
            }
            1 => {
                let grants = cli_json(&dir, &["grants"])?;
                let open = grants
                    .as_array()
                    .and_then(|a| a.iter().find(|g| g["role"] == "issued" && g["revoked"] == false))
                    .and_then(|g| g["grant_id"].as_str())
                    .context("a grant to revoke")?
                    .to_string();
                cli_json(&dir, &["revoke", &open, "--reason", "crash test"])?;
                Ok(Done::Revoked(open))
            }
            _ => {
                let p = cli_json(&dir, &["publish", &file, "--dataset", "lic", "--title", "L"])?;
                Ok(Done::Published(p["version"].as_u64().context("version")?))
            }
        });
        let target = 4 + round;
        fed.wait_for(&format!("{target} operations done"), SOON * 2, |_| Ok(count(&done) >= target))?;
        fed.kill("zhejiang")?;
        handle.join().map_err(|_| anyhow::anyhow!("worker panicked"))?;
        reported.extend(done.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        fed.start("zhejiang")?;
        verify(&fed, "zhejiang")?;
    }
    let grants = fed.json("zhejiang", &["grants"])?;
    let find = |id: &str| grants.as_array().and_then(|a| a.iter().find(|g| g["grant_id"] == id).cloned());
    let catalog = fed.catalog("zhejiang")?;
    let issued = notes(&fed, "zhejiang", "grant-issued")?;
    let revoked = notes(&fed, "zhejiang", "revocation-issued")?;
    for d in &reported {
        match d {
            Done::Granted(id) => {
                find(id).with_context(|| format!("reported grant {id} is held after the crash"))?;
                assert!(issued.iter().any(|(n, _)| n.contains(id.as_str())), "grant {id} is in the log");
            }
            Done::Revoked(id) => {
                let g = find(id).context("revoked grant held")?;
                assert_eq!(g["revoked"], true, "reported revocation of {id} survived: {g}");
                assert!(revoked.iter().any(|(n, _)| n.contains(id.as_str())), "revocation of {id} is in the log");
            }
            Done::Published(v) => {
                assert!(
                    catalog
                        .iter()
                        .any(|e| e.starts_with("zhejiang/lic@") && e[13..].parse::<u64>().is_ok_and(|c| c >= *v)),
                    "version {v} (or a later one) is in the catalog: {catalog:?}"
                );
            }
            Done::Queried(_) => {}
        }
    }
    // The deliveries of every reported grant reach shanghai, sent again after each crash.
    let granted: Vec<String> =
        reported.iter().filter_map(|d| if let Done::Granted(id) = d { Some(id.clone()) } else { None }).collect();
    assert!(!granted.is_empty(), "the worker granted something: {reported:?}");
    fed.wait_for("every reported grant at shanghai", SOON * 2, |f| {
        let held = f.json("shanghai", &["grants"])?;
        let ids: Vec<&str> =
            held.as_array().map(|a| a.iter().filter_map(|g| g["grant_id"].as_str()).collect()).unwrap_or_default();
        Ok(granted.iter().all(|g| ids.contains(&g.as_str())))
    })?;
    verify(&fed, "shanghai")?;
    Ok(())
}

#[test]
fn a_provider_crash_during_a_burst_of_queries_loses_no_answered_call() -> Result<()> {
    let (mut fed, _) = two_provinces(&["--key-field", "company_id"])?;
    fed.wait_for("the manifest at shanghai", SOON, |f| Ok(f.catalog("shanghai")?.contains(&"zhejiang/lic@1".into())))?;
    fed.json("zhejiang", &["grant", "lic", "--to", "shanghai", "--purpose", "crash test"])?;
    fed.wait_for("the grant at shanghai", SOON, |f| {
        Ok(f.json("shanghai", &["grants"])?.as_array().is_some_and(|a| !a.is_empty()))
    })?;
    let dir = fed.data_dir("shanghai");
    let (done, handle) = worker(move |_| {
        let q = cli_json(&dir, &["query", "zhejiang/lic", "91330100A1"])?;
        Ok(Done::Queried(q["exchange_id"].as_str().context("exchange_id")?.to_string()))
    });
    fed.wait_for("20 answered queries", SOON * 2, |_| Ok(count(&done) >= 20))?;
    fed.kill("zhejiang")?;
    handle.join().map_err(|_| anyhow::anyhow!("worker panicked"))?;
    fed.start("zhejiang")?;
    verify(&fed, "zhejiang")?;
    verify(&fed, "shanghai")?;
    let served = notes(&fed, "zhejiang", "calls-served")?;
    let answered = notes(&fed, "shanghai", "calls-answered")?;
    let reported = done.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(reported.len() >= 20);
    for d in &reported {
        if let Done::Queried(x) = d {
            assert!(served.iter().any(|(_, e)| e.as_deref() == Some(x.as_str())), "the provider logged call {x}");
            assert!(answered.iter().any(|(_, e)| e.as_deref() == Some(x.as_str())), "the requester logged call {x}");
        }
    }
    Ok(())
}
