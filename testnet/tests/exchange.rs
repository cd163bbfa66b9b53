//! Authorized exchanges between real nodes: requests, grants, fetches (whole, projected,
//! a refusal by the provider), record queries, sharing attributes, replay protection, and the
//! provenance both sides keep. Transfers themselves (resume, corruption, revocation in flight, a
//! full disk) are in transfer.rs.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use deltafed_protocol::access::Revocation;
use deltafed_protocol::exchange::FetchRequest;
use deltafed_protocol::wire;
use deltafed_protocol::{Nonce, OBJECT_VERSION, Signed, Timestamp};
use deltafed_testnet::Federation;
use deltafed_testnet::peer::{Seen, TestPeer, member_addr};
use serde_json::Value;

mod common;
use common::*;

/// Business licences with the CSV edge cases a projection must survive.
const LICENCES: &str = "company_id,name,legal_rep,capital,status\n\
91330100A1,\"杭州数澜科技, 滨江分公司\",张三,5000000,active\n\
91330100B2,\"The \"\"Quoted\"\" Co\",李四,120000,active\n\
91330100C3,\"Line\nbreak Ltd\",王五,,revoked\n\
91330100A1,\"杭州数澜科技 (second record)\",张三,7000000,active\n";

const PERMITS: &str = "{\"permit\":\"P1\",\"holder\":\"Acme\",\"secret\":\"s1\",\"level\":3}\n\
{\"permit\":\"P2\",\"holder\":\"Beta\",\"secret\":\"s2\",\"level\":1}\n";

fn csv_rows(path: &str) -> Result<Vec<Vec<String>>> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).from_path(path)?;
    Ok(r.records().map(|rec| rec.map(|r| r.iter().map(String::from).collect())).collect::<Result<_, _>>()?)
}

/// A member's provenance entries about exchanges (served, received, refused), newest first.
fn exchange_entries(fed: &Federation, member: &str) -> Result<Vec<Value>> {
    let log = fed.json(member, &["provenance"])?;
    let all = log.as_array().with_context(|| format!("{member}: provenance is not a list: {log}"))?;
    Ok(all.iter().filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("exchange-"))).cloned().collect())
}

/// When the revocation of `grant` was signed, read from the signed revocation `member` logged.
fn revocation_time(fed: &Federation, member: &str, grant: &str) -> Result<Timestamp> {
    let log = fed.json(member, &["provenance"])?;
    let note = format!("grant {grant} revoked: ");
    let entry = log
        .as_array()
        .and_then(|a| {
            a.iter().find(|e| {
                e["kind"].as_str().is_some_and(|k| k.starts_with("revocation-"))
                    && e["note"].as_str().is_some_and(|n| n.starts_with(&note))
            })
        })
        .with_context(|| format!("{member} logged no revocation of {grant}: {log}"))?;
    let object = entry["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "revocation"))
        .with_context(|| format!("the entry carries no revocation: {entry}"))?;
    let bytes = unhex(object["bytes"].as_str().context("the revocation's bytes")?)?;
    Ok(Signed::<Revocation>::decode(&bytes)?.body().time)
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2).context("odd-length hex")?, 16).context("not hex"))
        .collect()
}

#[test]
fn grants_requests_projection_queries_revocation_and_provenance() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang", "anhui"])?;
    let lic = file(&fed, "licences.csv", LICENCES.as_bytes())?;
    let permits = file(&fed, "permits.jsonl", PERMITS.as_bytes())?;
    fed.json(
        "zhejiang",
        &["publish", &lic, "--dataset", "licences", "--title", "Licences", "--key-field", "company_id"],
    )?;
    fed.json(
        "zhejiang",
        &["publish", &permits, "--dataset", "permits", "--title", "Permits", "--key-field", "permit"],
    )?;
    for m in ["shanghai", "anhui"] {
        wait_catalog(&mut fed, m, "zhejiang/licences@1")?;
        wait_catalog(&mut fed, m, "zhejiang/permits@1")?;
    }

    // No grant: refused, and nothing written.
    let o1 = out(&fed, "none.csv")?;
    let err = refused(&fed, "shanghai", &["fetch", "zhejiang/licences", "--out", &o1])?;
    assert!(err.contains("no valid grant") && err.contains("deltafed request"), "{err}");
    assert!(!Path::new(&o1).exists());

    // Grant, fetch: the published bytes exactly.
    let g = fed.json(
        "zhejiang",
        &["grant", "licences", "--to", "shanghai", "--purpose", "licence verification", "--expires", "30d"],
    )?;
    assert_eq!(g["delivered"], true, "{g}");
    let gid = g["grant_id"].as_str().context("grant_id")?.to_string();
    let held = fed.json("shanghai", &["grants"])?;
    assert_eq!(held[0]["grant_id"], gid.as_str());
    assert_eq!(held[0]["provider"], "zhejiang");
    assert_eq!(held[0]["grantee"], "shanghai");
    assert_eq!(held[0]["purpose"], "licence verification");
    assert_eq!(held[0]["revoked"], false);
    assert!(held[0]["expires_at"].as_str().is_some());
    let o2 = out(&fed, "full.csv")?;
    let f = fed.json("shanghai", &["fetch", "zhejiang/licences", "--out", &o2])?;
    assert_eq!(std::fs::read(&o2)?, LICENCES.as_bytes(), "byte-identical");
    let full_exchange = f["exchange_id"].as_str().context("exchange_id")?.to_string();

    // Queries by key: all fields under shanghai's grant.
    let q = fed.json("shanghai", &["query", "zhejiang/licences", "91330100A1"])?;
    let recs = q["records"].as_array().context("records")?;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["name"], "杭州数澜科技, 滨江分公司");
    assert_eq!(recs[0]["capital"], 5_000_000);
    assert_eq!(fed.json("shanghai", &["query", "zhejiang/licences", "nope"])?["records"], serde_json::json!([]));

    // A JSON Lines projection keeps only the granted keys.
    fed.json(
        "zhejiang",
        &["grant", "permits", "--to", "shanghai", "--purpose", "permit check", "--fields", "permit,level"],
    )?;
    let o3 = out(&fed, "permits.jsonl")?;
    fed.json("shanghai", &["fetch", "zhejiang/permits", "--out", &o3])?;
    let lines: Vec<Value> =
        std::fs::read_to_string(&o3)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(
        lines,
        vec![serde_json::json!({"permit": "P1", "level": 3}), serde_json::json!({"permit": "P2", "level": 1})]
    );

    // Request, approve with a projection and one fetch; the requester sees the outcome.
    let r = fed.json(
        "anhui",
        &["request", "zhejiang/licences", "--purpose", "credit assessment", "--fields", "status,company_id"],
    )?;
    let rid = r["request_id"].as_str().context("request_id")?.to_string();
    let incoming = fed.json("zhejiang", &["requests"])?;
    let inc =
        incoming.as_array().and_then(|a| a.iter().find(|x| x["request_id"] == rid.as_str())).context("incoming")?;
    assert_eq!(inc["direction"], "incoming");
    assert_eq!(inc["state"], "pending");
    assert_eq!(inc["purpose"], "credit assessment");
    let d = fed.json("zhejiang", &["approve", &rid, "--max-fetches", "1"])?;
    let agid = d["grant_id"].as_str().context("grant")?.to_string();
    fed.wait_for("anhui to see its request approved", SOON, |f| {
        let rs = f.json("anhui", &["requests"])?;
        Ok(rs[0]["state"] == "approved" && rs[0]["grant_id"] == agid.as_str())
    })?;
    let o4 = out(&fed, "projected.csv")?;
    let pf = fed.json("anhui", &["fetch", "zhejiang/licences", "--out", &o4])?;
    assert_eq!(pf["fields"], serde_json::json!(["status", "company_id"]));
    // Header kept, the dataset's column order kept, quoted values intact, nothing else.
    assert_eq!(
        csv_rows(&o4)?,
        vec![
            vec!["company_id", "status"],
            vec!["91330100A1", "active"],
            vec!["91330100B2", "active"],
            vec!["91330100C3", "revoked"],
            vec!["91330100A1", "active"],
        ]
    );
    let text = std::fs::read_to_string(&o4)?;
    assert!(!text.contains("张三") && !text.contains("5000000"), "{text}");
    // Max fetches: the provider refuses the second, and says why.
    let err = refused(&fed, "anhui", &["fetch", "zhejiang/licences", "--out", &out(&fed, "again.csv")?])?;
    assert!(err.contains("zhejiang refused") && err.contains("all were used"), "{err}");
    // Queries return only the granted fields.
    let q = fed.json("anhui", &["query", "zhejiang/licences", "91330100B2"])?;
    assert_eq!(q["records"], serde_json::json!([{"company_id": "91330100B2", "status": "active"}]));

    // Deny: always with a reason, which the requester sees.
    let r = fed.json("shanghai", &["request", "zhejiang/permits", "--purpose", "curiosity"])?;
    let rid2 = r["request_id"].as_str().context("request_id")?.to_string();
    let err = refused(&fed, "zhejiang", &["deny", &rid2, "--reason", ""])?;
    assert!(err.contains("reason"), "{err}");
    fed.json("zhejiang", &["deny", &rid2, "--reason", "no legal basis for this purpose"])?;
    fed.wait_for("shanghai to see the denial", SOON, |f| {
        let rs = f.json("shanghai", &["requests"])?;
        let r = rs.as_array().and_then(|a| a.iter().find(|x| x["request_id"] == rid2.as_str()).cloned());
        Ok(r.is_some_and(|r| r["state"] == "denied" && r["reason"] == "no legal basis for this purpose"))
    })?;

    // Provenance on both sides names peer, dataset, grant, purpose, hash, under one exchange id.
    let served = fed.json("zhejiang", &["provenance", "--peer", "shanghai", "--dataset", "zhejiang/licences"])?;
    let e = served
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "exchange-served" && e["exchange_id"] == full_exchange.as_str()))
        .context("exchange-served entry")?;
    assert_eq!(e["peer"], "shanghai");
    assert_eq!(e["dataset"], "zhejiang/licences");
    let note = e["note"].as_str().unwrap_or_default();
    assert!(
        note.contains(&gid)
            && note.contains("licence verification")
            && note.contains(f["content_hash"].as_str().unwrap_or("?")),
        "{note}"
    );
    let received = fed.json("shanghai", &["provenance", "--peer", "zhejiang"])?;
    let e = received
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "exchange-received" && e["exchange_id"] == full_exchange.as_str()))
        .context("exchange-received entry")?;
    assert_eq!(e["dataset"], "zhejiang/licences");
    fed.wait_for("zhejiang to log the receipt", SOON, |f| {
        let all = f.json("zhejiang", &["provenance", "--peer", "shanghai"])?;
        Ok(all.as_array().is_some_and(|a| {
            a.iter().any(|e| e["kind"] == "receipt-received" && e["exchange_id"] == full_exchange.as_str())
        }))
    })?;
    let limited = fed.json("zhejiang", &["provenance", "--limit", "2"])?;
    assert_eq!(limited.as_array().map(Vec::len), Some(2));
    assert!(limited[0]["seq"].as_u64() > limited[1]["seq"].as_u64(), "newest first");

    // Revocation: the grantee is told, and refuses its next fetch itself: it holds the signed
    // revocation, so it names the provider's reason without asking the provider.
    fed.json("zhejiang", &["revoke", &gid, "--reason", "purpose fulfilled"])?;
    fed.wait_for("shanghai to hold the revocation", SOON, |f| {
        let gs = f.json("shanghai", &["grants"])?;
        Ok(gs.as_array().is_some_and(|a| a.iter().any(|g| g["grant_id"] == gid.as_str() && g["revoked"] == true)))
    })?;
    let revoked_at = revocation_time(&fed, "shanghai", &gid)?;
    let served_before = exchange_entries(&fed, "zhejiang")?;
    let err = refused(&fed, "shanghai", &["fetch", "zhejiang/licences", "--out", &out(&fed, "after-revoke.csv")?])?;
    assert_eq!(exchange_entries(&fed, "zhejiang")?, served_before, "zhejiang was not asked: {err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: no valid grant from zhejiang for licences: grant {gid} was revoked at {revoked_at}: \
             purpose fulfilled; ask with `deltafed request zhejiang/licences --purpose ...`"
        )
    );
    assert!(refused(&fed, "zhejiang", &["revoke", &gid])?.contains("already revoked"));

    // Both logs verify, and export has one line per entry.
    for m in ["zhejiang", "shanghai", "anhui"] {
        let v = fed.json(m, &["provenance", "verify"])?;
        assert_eq!(v["intact"], true, "{m}: {v}");
    }
    let export = out(&fed, "audit.jsonl")?;
    let ex = fed.json("zhejiang", &["provenance", "export", "--out", &export])?;
    let lines = std::fs::read_to_string(&export)?.lines().count() as u64;
    assert_eq!(ex["entries"].as_u64(), Some(lines));
    assert_eq!(fed.json("zhejiang", &["provenance"])?.as_array().map(|a| a.len() as u64), Some(lines));
    Ok(())
}

#[test]
fn sharing_attributes_grant_checks_expiry_and_overdue_requests() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    for m in ["shanghai", "zhejiang"] {
        fed.configure(m, "response_deadline = \"1s\"")?;
    }
    fed.start_all()?;
    fed.wait_mesh(&["shanghai", "zhejiang"], CONNECT)?;
    let lic = file(&fed, "licences.csv", LICENCES.as_bytes())?;
    fed.json(
        "zhejiang",
        &[
            "publish",
            &lic,
            "--dataset",
            "open",
            "--title",
            "Open",
            "--sharing",
            "unconditional",
            "--key-field",
            "company_id",
        ],
    )?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "closed", "--title", "Closed", "--sharing", "none"])?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "normal", "--title", "Normal"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/normal@1")?;

    // Unconditional: any member, no grant, still logged on both sides.
    let o = out(&fed, "open.csv")?;
    let f = fed.json("shanghai", &["fetch", "zhejiang/open", "--out", &o])?;
    assert_eq!(std::fs::read(&o)?, LICENCES.as_bytes());
    assert_eq!(fed.json("shanghai", &["query", "zhejiang/open", "91330100C3"])?["records"][0]["status"], "revoked");
    let log = fed.json("zhejiang", &["provenance", "--peer", "shanghai"])?;
    assert!(
        log.as_array()
            .is_some_and(|a| a.iter().any(|e| e["kind"] == "exchange-served" && e["exchange_id"] == f["exchange_id"]))
    );
    // None: listed, never served, never granted.
    assert!(fed.catalog("shanghai")?.contains(&"zhejiang/closed@1".to_string()));
    assert!(
        refused(&fed, "shanghai", &["fetch", "zhejiang/closed", "--out", &out(&fed, "c.csv")?])?.contains("not shared")
    );
    assert!(
        refused(&fed, "zhejiang", &["grant", "closed", "--to", "shanghai", "--purpose", "x"])?.contains("not shared")
    );

    // Grants that make no sense are refused with a clear error.
    assert!(
        refused(&fed, "zhejiang", &["grant", "normal", "--to", "hubei", "--purpose", "x"])?.contains("not a member")
    );
    assert!(
        refused(&fed, "zhejiang", &["grant", "nothing", "--to", "shanghai", "--purpose", "x"])?
            .contains("no dataset nothing")
    );
    assert!(
        refused(
            &fed,
            "zhejiang",
            &["grant", "normal", "--to", "shanghai", "--purpose", "x", "--expires", "2020-01-01T00:00:00Z"]
        )?
        .contains("in the past")
    );
    assert!(
        refused(&fed, "zhejiang", &["grant", "normal", "--to", "shanghai", "--purpose", "x", "--fields", "salary"])?
            .contains("no field")
    );

    // Expiry: valid now, refused once expired, by the grantee itself (the provider is not asked).
    let short =
        fed.json("zhejiang", &["grant", "normal", "--to", "shanghai", "--purpose", "short", "--expires", "3s"])?;
    assert_eq!(short["delivered"], true, "{short}");
    let short_id = short["grant_id"].as_str().context("grant_id")?.to_string();
    let expires_at = short["expires_at"].as_str().context("expires_at")?.to_string();
    fed.json("shanghai", &["fetch", "zhejiang/normal", "--out", &out(&fed, "n1.csv")?])?;
    fed.wait_for("shanghai's grant to expire", Duration::from_secs(15), |f| {
        let held = f.json("shanghai", &["grants"])?;
        let g = held
            .as_array()
            .and_then(|a| a.iter().find(|g| g["grant_id"] == short_id.as_str()))
            .with_context(|| format!("shanghai does not hold grant {short_id}: {held}"))?;
        Ok(g["expired"] == true)
    })?;
    let served_before = exchange_entries(&fed, "zhejiang")?;
    let err = refused(&fed, "shanghai", &["fetch", "zhejiang/normal", "--out", &out(&fed, "n2.csv")?])?;
    assert_eq!(exchange_entries(&fed, "zhejiang")?, served_before, "zhejiang was not asked: {err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "error: no valid grant from zhejiang for normal: grant {short_id} expired at {expires_at}; \
             ask with `deltafed request zhejiang/normal --purpose ...`"
        )
    );

    // A request not answered within the response deadline shows as overdue on both sides.
    let r = fed.json("shanghai", &["request", "zhejiang/normal", "--purpose", "audit"])?;
    let rid = r["request_id"].as_str().context("request_id")?.to_string();
    fed.wait_for("the request to be overdue on both sides", SOON, |f| {
        let mut both = true;
        for m in ["shanghai", "zhejiang"] {
            let rs = f.json(m, &["requests"])?;
            both &= rs
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["request_id"] == rid.as_str() && x["overdue"] == true));
        }
        Ok(both)
    })?;
    Ok(())
}

#[test]
fn replayed_and_stale_fetch_requests_are_refused() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang", "anhui", "rogue"])?;
    fed.start_all_but("rogue")?;
    fed.wait_mesh(&["zhejiang", "anhui"], CONNECT)?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "open", "--title", "Open", "--sharing", "unconditional"])?;
    let key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let rogue = TestPeer::spawn(&key, "yrd-testnet")?;
    let (zj, addr) = member_addr(&fed.data_dir("zhejiang"), fed.base_port())?;
    rt.block_on(rogue.dial(addr))?;
    rt.block_on(rogue.wait_for("zhejiang to subscribe", CONNECT, |s| matches!(s, Seen::Subscribed(p) if *p == zj)))?;
    let request = |nonce: u8, time: Timestamp| -> Result<Vec<u8>> {
        let r = FetchRequest {
            v: OBJECT_VERSION,
            requester: "rogue".parse()?,
            provider: "zhejiang".parse()?,
            dataset: "open".parse()?,
            version: None,
            grant: None,
            nonce: Nonce([nonce; 16]),
            time,
            offset: 0,
        };
        Ok(wire::Request::Fetch(Signed::sign(r, &key)?.into_bytes()).encode()?)
    };
    // Each request's own answer: never another request's, never a missing one taken as fine.
    let ask = |bytes: Vec<u8>| -> Result<wire::Response> {
        Ok(wire::Response::decode(&rt.block_on(rogue.call(zj, bytes, SOON))?)?)
    };
    let now = Timestamp::from_system(std::time::SystemTime::now());
    let first = request(1, now)?;
    let a = ask(first.clone())?;
    assert!(matches!(a, wire::Response::Ticket { .. }), "a fresh request gets a ticket: {a:?}");
    // The very same signed bytes again.
    let a = ask(first)?;
    assert!(matches!(&a, wire::Response::Refused(r) if r.contains("replayed")), "{a:?}");
    // A new nonce but an hour-old time.
    let a = ask(request(2, Timestamp(now.0 - 3_600_000))?)?;
    assert!(matches!(&a, wire::Response::Refused(r) if r.contains("clock")), "{a:?}");
    // Both refusals are on the record.
    let log = fed.json("zhejiang", &["provenance", "--peer", "rogue"])?;
    let refusals = log.as_array().map(|a| a.iter().filter(|e| e["kind"] == "exchange-refused").count());
    assert_eq!(refusals, Some(2), "{log}");
    Ok(())
}

/// The provider's own checks of a revoked and of an expired grant, asked by a raw peer playing
/// the member `rogue` (its node is not running): a requester that does not refuse at home, as a
/// real node does, still gets the provider's refusal and reason, and the refusals are logged.
#[test]
fn the_provider_refuses_revoked_and_expired_grants_with_its_reason() -> Result<()> {
    let mut fed = Federation::init(&["zhejiang", "rogue"])?;
    fed.start("zhejiang")?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "licences", "--title", "Licences"])?;
    let grant = |extra: &[&str]| -> Result<Value> {
        let mut args = vec!["grant", "licences", "--to", "rogue", "--purpose", "audit"];
        args.extend_from_slice(extra);
        fed.json("zhejiang", &args)
    };
    let id = |g: &Value| -> Result<String> { Ok(g["grant_id"].as_str().context("grant_id")?.to_string()) };
    let valid = id(&grant(&[])?)?;
    let revoked = id(&grant(&[])?)?;
    fed.json("zhejiang", &["revoke", &revoked, "--reason", "purpose fulfilled"])?;
    let revoked_at = revocation_time(&fed, "zhejiang", &revoked)?;
    let short = grant(&["--expires", "2s"])?;
    let (short_id, expires_at) = (id(&short)?, short["expires_at"].as_str().context("expires_at")?.to_string());

    let key = deltafed_node::keyfile::read(&fed.data_dir("rogue").join("node.key"))?;
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let rogue = TestPeer::spawn(&key, "yrd-testnet")?;
    let (zj, addr) = member_addr(&fed.data_dir("zhejiang"), fed.base_port())?;
    rt.block_on(rogue.dial(addr))?;
    rt.block_on(rogue.wait_for("zhejiang to subscribe", CONNECT, |s| matches!(s, Seen::Subscribed(p) if *p == zj)))?;
    let fetch = |grant: &str, nonce: u8| -> Result<wire::Response> {
        let r = FetchRequest {
            v: OBJECT_VERSION,
            requester: "rogue".parse()?,
            provider: "zhejiang".parse()?,
            dataset: "licences".parse()?,
            version: None,
            grant: Some(grant.parse().context("grant id")?),
            nonce: Nonce([nonce; 16]),
            time: Timestamp::from_system(std::time::SystemTime::now()),
            offset: 0,
        };
        let bytes = wire::Request::Fetch(Signed::sign(r, &key)?.into_bytes()).encode()?;
        Ok(wire::Response::decode(&rt.block_on(rogue.call(zj, bytes, SOON))?)?)
    };
    // Control: the same request under a grant in force gets a ticket.
    let a = fetch(&valid, 1)?;
    assert!(matches!(a, wire::Response::Ticket { .. }), "a grant in force gets a ticket: {a:?}");
    let a = fetch(&revoked, 2)?;
    let want = format!("grant {revoked} was revoked at {revoked_at}: purpose fulfilled");
    assert!(matches!(&a, wire::Response::Refused(r) if *r == want), "want Refused({want:?}), got {a:?}");
    fed.wait_for("the short grant to expire", Duration::from_secs(15), |f| {
        let gs = f.json("zhejiang", &["grants"])?;
        let g = gs
            .as_array()
            .and_then(|a| a.iter().find(|g| g["grant_id"] == short_id.as_str()))
            .with_context(|| format!("zhejiang does not list grant {short_id}: {gs}"))?;
        Ok(g["expired"] == true)
    })?;
    let a = fetch(&short_id, 3)?;
    let want = format!("grant {short_id} expired at {expires_at}");
    assert!(matches!(&a, wire::Response::Refused(r) if *r == want), "want Refused({want:?}), got {a:?}");
    // One ticket and two refusals on the provider's record, nothing else.
    let log = exchange_entries(&fed, "zhejiang")?;
    let kinds: Vec<&str> = log.iter().rev().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["exchange-served", "exchange-refused", "exchange-refused"], "{log:?}");
    Ok(())
}

/// A grant for a member that is down waits in the provider's outbox, which is kept on disk: it
/// survives the provider's restart and reaches the grantee once the grantee is up.
#[test]
fn a_delivery_queued_for_an_offline_member_survives_the_senders_restart() -> Result<()> {
    let mut fed = Federation::init(&["shanghai", "zhejiang"])?;
    fed.start("zhejiang")?;
    let lic = file(&fed, "licences.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "licences", "--title", "Licences"])?;
    let g = fed.json("zhejiang", &["grant", "licences", "--to", "shanghai", "--purpose", "queued while away"])?;
    assert_eq!(g["delivered"], false, "shanghai is down, so the grant is queued: {g}");
    let gid = g["grant_id"].as_str().context("grant_id")?.to_string();
    assert!(fed.stop("zhejiang")?.success(), "zhejiang stops cleanly");
    fed.start("zhejiang")?;
    fed.start("shanghai")?;
    fed.wait_for("the queued grant to reach shanghai", CONNECT, |f| {
        let held = f.json("shanghai", &["grants"])?;
        Ok(held.as_array().is_some_and(|a| {
            a.iter().any(|g| {
                g["grant_id"] == gid.as_str()
                    && g["role"] == "received"
                    && g["provider"] == "zhejiang"
                    && g["purpose"] == "queued while away"
            })
        }))
    })?;
    fed.wait_for("zhejiang to see the grant delivered", SOON, |f| {
        let gs = f.json("zhejiang", &["grants"])?;
        Ok(gs.as_array().is_some_and(|a| a.iter().any(|g| g["grant_id"] == gid.as_str() && g["delivered"] == true)))
    })?;
    // And it is a grant like any other: shanghai fetches under it.
    wait_catalog(&mut fed, "shanghai", "zhejiang/licences@1")?;
    let o = out(&fed, "licences.csv.out")?;
    fed.json("shanghai", &["fetch", "zhejiang/licences", "--out", &o])?;
    assert_eq!(std::fs::read(&o)?, LICENCES.as_bytes());
    Ok(())
}

/// A large raw dataset (random bytes) served slowly, so a test can act in the middle of a fetch.
#[test]
fn provenance_verify_detects_an_altered_entry_and_a_truncated_regrown_log() -> Result<()> {
    use deltafed_node::provenance::{Provenance, Record};
    use deltafed_node::store::{Batch, Cf, Store};
    use deltafed_protocol::provenance::EntryKind;

    let mut fed = started(&["shanghai", "zhejiang", "anhui"])?;
    let lic = file(&fed, "l.csv", LICENCES.as_bytes())?;
    fed.json("zhejiang", &["publish", &lic, "--dataset", "licences", "--title", "L"])?;
    wait_catalog(&mut fed, "shanghai", "zhejiang/licences@1")?;
    for to in ["shanghai", "anhui"] {
        fed.json("zhejiang", &["grant", "licences", "--to", to, "--purpose", "p"])?;
    }
    let entries = fed.json("zhejiang", &["provenance"])?.as_array().map(Vec::len).unwrap_or(0);
    assert!(entries >= 4);
    // A clean stop signs a final checkpoint and hands it to the peers.
    assert!(fed.stop("zhejiang")?.success());
    let verify = |f: &Federation| -> Result<(bool, Vec<String>)> {
        let o = f.cli("zhejiang", &["provenance", "verify", "--json"])?;
        let v: Value = serde_json::from_slice(&o.stdout)?;
        Ok((o.status.success() && v["intact"] == true, serde_json::from_value(v["problems"].clone())?))
    };
    let names_checkpoint = |problems: &[String]| problems.iter().any(|p| p.contains("checkpoint"));
    assert!(verify(&fed)?.0, "offline verify of an untouched log");
    let db = fed.data_dir("zhejiang").join("db");

    // 1. One entry altered in the database directly.
    let key2 = 2u64.to_be_bytes();
    let original = {
        let store = Store::open(&db)?;
        let orig = store.get(Cf::Provenance, &key2)?.context("entry 2")?;
        let mut bad = orig.clone();
        let last = bad.len() - 40;
        bad[last] ^= 0x01;
        store.put(Cf::Provenance, &key2, &bad)?;
        orig
    };
    // Its hash changed, so entry 3 no longer links to it; a checkpoint that happened to be
    // signed at seq 2 no longer matches it either. Nothing else is reported.
    let (ok, problems) = verify(&fed)?;
    let (at_checkpoint, rest): (Vec<&String>, Vec<&String>) = problems
        .iter()
        .partition(|p| p.starts_with("checkpoint at seq 2 ") && p.contains(": the log's entry 2 has hash "));
    assert!(!ok, "altered entry reported: {problems:?}");
    assert_eq!(rest, ["entry 3: prev hash does not match entry 2"], "altered entry reported: {problems:?}");
    assert!(at_checkpoint.len() <= 1, "{problems:?}");
    Store::open(&db)?.put(Cf::Provenance, &key2, &original)?;
    assert!(verify(&fed)?.0, "restored");

    // 2. Truncated after entry 1 and regrown with other entries, signed with the node's own key.
    {
        let store = Store::open(&db)?;
        let mut b = Batch::default();
        for seq in 2..entries as u64 + 5 {
            b.delete(Cf::Provenance, seq.to_be_bytes().to_vec());
        }
        store.write(b)?;
        let key = deltafed_node::keyfile::read(&fed.data_dir("zhejiang").join("node.key"))?;
        let prov = Provenance::open(store, "zhejiang".parse()?, Some(key))?;
        for i in 0..entries + 2 {
            prov.append(Record {
                time: Timestamp::from_system(std::time::SystemTime::now()),
                kind: EntryKind::Published,
                dataset: None,
                peer: None,
                exchange: None,
                note: format!("rewritten history {i}"),
                objects: vec![],
                calls: vec![],
                also: vec![],
            })?;
        }
    }
    let (ok, problems) = verify(&fed)?;
    assert!(!ok && names_checkpoint(&problems), "own checkpoint catches the rewrite: {problems:?}");
    // 3. And if the own checkpoints are deleted too, the peers' copies still catch it.
    {
        let store = Store::open(&db)?;
        let mut b = Batch::default();
        for (k, _) in store.scan_prefix(Cf::Checkpoints, b"")? {
            b.delete(Cf::Checkpoints, k);
        }
        store.write(b)?;
    }
    assert!(verify(&fed)?.0, "offline, with no checkpoint left, the rewrite is not detectable");
    fed.start("zhejiang")?;
    fed.wait_mesh(&["shanghai", "zhejiang", "anhui"], CONNECT)?;
    let (ok, problems) = verify(&fed)?;
    assert!(!ok && names_checkpoint(&problems), "witnessed checkpoints catch the rewrite: {problems:?}");
    let o = fed.cli("zhejiang", &["provenance", "verify"])?;
    assert!(!o.status.success(), "exit non-zero");
    Ok(())
}
