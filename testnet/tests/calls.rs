//! Sharing calls over the batched, signed call path, between real nodes: many calls share few
//! signatures and still each get their own correct answer; a revocation stops the very next
//! batch; the query budget is counted per call inside a batch; calls are found by key on both
//! sides without the key being logged; and one call is proven from an export alone.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use deltafed_protocol::calls::{Call, CallAnswer, CallBatch, CallResult};
use deltafed_protocol::{Hash, Signed, merkle, signed};
use deltafed_testnet::{Federation, path_str};
use serde_json::Value;

const CONNECT: Duration = Duration::from_secs(20);
const SOON: Duration = Duration::from_secs(10);
const KEYS: usize = 600;

fn key(i: usize) -> String {
    format!("9133{i:06}X")
}

/// A keyed CSV dataset of `KEYS` companies, two records for key 7.
fn companies() -> String {
    let mut s = String::from("company_id,name,capital,secret\n");
    for i in 0..KEYS {
        s += &format!("{},Company {i},{},s{i}\n", key(i), i * 1000);
    }
    s += &format!("{},Company 7 (branch),1,s7b\n", key(7));
    s
}

fn started(members: &[&str]) -> Result<Federation> {
    let mut fed = Federation::init(members)?;
    fed.start_all()?;
    fed.wait_mesh(members, CONNECT)?;
    Ok(fed)
}

fn publish(fed: &mut Federation) -> Result<()> {
    let p = fed.root().join("companies.csv");
    std::fs::write(&p, companies())?;
    fed.json(
        "zhejiang",
        &["publish", path_str(&p)?, "--dataset", "companies", "--title", "Companies", "--key-field", "company_id"],
    )?;
    fed.wait_for("zhejiang/companies in shanghai's catalog", SOON, |f| {
        Ok(f.catalog("shanghai")?.contains(&"zhejiang/companies@1".to_string()))
    })
}

fn entries_of(fed: &Federation, member: &str, kind: &str) -> Result<Vec<Value>> {
    let log = fed.json(member, &["provenance"])?;
    let all = log.as_array().with_context(|| format!("{member}: provenance is not a list: {log}"))?;
    Ok(all.iter().filter(|e| e["kind"] == kind).cloned().collect())
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    hex_decode(s).with_context(|| format!("not hex: {s:.40}"))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn hash(s: &str) -> Result<Hash> {
    let b: [u8; 32] = unhex(s)?.try_into().map_err(|_| anyhow::anyhow!("not a 32-byte hash: {s}"))?;
    Ok(Hash(b))
}

#[test]
fn many_calls_share_few_signatures_and_each_gets_its_own_answer() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    publish(&mut fed)?;
    fed.json(
        "zhejiang",
        &["grant", "companies", "--to", "shanghai", "--purpose", "credit check", "--fields", "company_id,name"],
    )?;
    // 600 keys in one command, plus three commands at once: every call answered correctly.
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut args = vec!["query", "zhejiang/companies"];
    args.extend(keys.iter().map(String::as_str));
    let children: Vec<_> =
        (0..3).map(|_| fed.spawn_cli("shanghai", &["query", "zhejiang/companies", &key(1), &key(2)])).collect();
    let q = fed.json("shanghai", &args)?;
    assert_eq!(q["dataset"], "zhejiang/companies@1", "{q:.300}");
    let results = q["results"].as_array().context("results")?;
    assert_eq!(results.len(), KEYS);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["key"], key(i).as_str());
        let recs = r["records"].as_array().with_context(|| format!("records for {}: {r}", key(i)))?;
        assert_eq!(recs.len(), if i == 7 { 2 } else { 1 }, "{r}");
        assert_eq!(recs[0]["name"], format!("Company {i}"));
        // Only the granted fields.
        let mut fields: Vec<&String> = recs[0].as_object().context("record")?.keys().collect();
        fields.sort();
        assert_eq!(fields, ["company_id", "name"], "{r}");
    }
    for c in children {
        let out = c?.wait_with_output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    // Far fewer signed batches than calls, on both sides, and every call in one of them.
    let answered = entries_of(&fed, "shanghai", "calls-answered")?;
    let served = entries_of(&fed, "zhejiang", "calls-served")?;
    let calls_in = |es: &[Value]| es.iter().map(|e| e["calls"].as_array().map_or(0, Vec::len)).sum::<usize>();
    assert_eq!(calls_in(&answered), KEYS + 6, "every call logged once by the requester");
    assert_eq!(calls_in(&served), KEYS + 6, "every call logged once by the provider");
    assert!(answered.len() * 50 < KEYS, "{} batches for {} calls", answered.len(), KEYS + 6);
    assert_eq!(answered.len(), served.len());

    // The key is never in the log, but the node finds the calls for it on both sides.
    for m in ["shanghai", "zhejiang"] {
        let log = fed.cli(m, &["provenance", "--json"])?;
        assert!(!String::from_utf8_lossy(&log.stdout).contains(&key(123)), "{m} logs the key in clear");
        let found = fed.json(m, &["provenance", "--key", &key(123)])?;
        let found = found.as_array().context("list")?;
        assert_eq!(found.len(), 1, "{m}: one batch holds the call for the key: {found:?}");
        let hashes: Vec<&Value> =
            found[0]["calls"].as_array().context("calls")?.iter().map(|c| &c["key_hash"]).collect();
        assert!(hashes.len() > 1);
        let none = fed.json(m, &["provenance", "--key", "no-such-key"])?;
        assert_eq!(none, serde_json::json!([]), "{m}");
    }
    Ok(())
}

#[test]
fn a_revocation_stops_the_next_batch_and_the_budget_is_counted_per_call() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    publish(&mut fed)?;
    let g = fed.json(
        "zhejiang",
        &["grant", "companies", "--to", "shanghai", "--purpose", "credit check", "--max-queries", "5"],
    )?;
    let gid = g["grant_id"].as_str().context("grant_id")?.to_string();
    // Eight calls in one batch against a budget of five: the first five answered.
    let keys: Vec<String> = (10..18).map(key).collect();
    let mut args = vec!["query", "zhejiang/companies"];
    args.extend(keys.iter().map(String::as_str));
    let q = fed.json("shanghai", &args)?;
    let results = q["results"].as_array().context("results")?;
    let ok = results.iter().filter(|r| r["records"].is_array()).count();
    assert_eq!(ok, 5, "{q}");
    for r in &results[5..] {
        let e = r["error"].as_str().context("error")?;
        assert!(e.contains("zhejiang refused") && e.contains("queries"), "{e}");
    }
    let grants = fed.json("zhejiang", &["grants"])?;
    assert_eq!(grants[0]["queries"], 5, "{grants}");

    // A fresh grant, one call answered; then revoked: the very next call is refused.
    let g2 = fed.json("zhejiang", &["grant", "companies", "--to", "shanghai", "--purpose", "credit check"])?;
    let gid2 = g2["grant_id"].as_str().context("grant_id")?.to_string();
    fed.json("zhejiang", &["revoke", &gid, "--reason", "spent"])?;
    let one = fed.json("shanghai", &["query", "zhejiang/companies", &key(20)])?;
    assert_eq!(one["records"][0]["name"], "Company 20", "{one}");
    fed.json("zhejiang", &["revoke", &gid2, "--reason", "case closed"])?;
    // The requester has not heard of the revocation yet or has; either way the provider
    // refuses, from the store as it is now.
    let out = fed.cli("shanghai", &["query", "zhejiang/companies", &key(21)])?;
    assert!(!out.status.success(), "a revoked grant still answered: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked") || err.contains("no valid grant"), "{err}");
    Ok(())
}

#[test]
fn one_call_is_proven_from_the_export_alone() -> Result<()> {
    let mut fed = started(&["shanghai", "zhejiang"])?;
    publish(&mut fed)?;
    fed.json("zhejiang", &["grant", "companies", "--to", "shanghai", "--purpose", "credit check"])?;
    let keys: Vec<String> = (30..40).map(key).collect();
    let mut args = vec!["query", "zhejiang/companies"];
    args.extend(keys.iter().map(String::as_str));
    fed.json("shanghai", &args)?;
    let roster = deltafed_protocol::roster::SignedRoster::decode(&std::fs::read(fed.roster_file())?)?;
    for (member, kind) in [("shanghai", "calls-answered"), ("zhejiang", "calls-served")] {
        let out = fed.root().join(format!("{member}-export.jsonl"));
        fed.json(member, &["provenance", "export", "--out", path_str(&out)?])?;
        let text = std::fs::read_to_string(&out)?;
        let entry: Value = text
            .lines()
            .map(serde_json::from_str::<Value>)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|e| e["kind"] == kind && e["calls"].as_array().is_some_and(|c| c.len() == 10))
            .with_context(|| format!("{member}: no batch of ten calls in the export"))?;
        let object = |k: &str| -> Result<Vec<u8>> {
            let o = entry["objects"].as_array().and_then(|o| o.iter().find(|o| o["kind"] == k));
            unhex(o.and_then(|o| o["bytes"].as_str()).with_context(|| format!("no {k} in the entry"))?)
        };
        let batch = Signed::<CallBatch>::decode_from_member(&object("call-batch")?, &roster.roster)?;
        let answer = Signed::<CallAnswer>::decode_from_member(&object("call-answer")?, &roster.roster)?;
        assert_eq!(answer.body().batch, batch.hash());
        assert_eq!(batch.body().requester.as_str(), "shanghai");
        let call = &entry["calls"][4];
        let bytes = unhex(call["call"].as_str().context("call")?)?;
        let leaf = deltafed_protocol::calls::leaf_of::<Call>(&bytes);
        assert_eq!(leaf, hash(call["leaf"].as_str().context("leaf")?)?);
        let proof: Vec<Hash> = call["proof"]
            .as_array()
            .context("proof")?
            .iter()
            .map(|h| hash(h.as_str().unwrap_or("")))
            .collect::<Result<_>>()?;
        let n = u64::from(batch.body().count);
        assert!(merkle::verify(&leaf, 4, n, &proof, &batch.body().root), "{member}: the call is in the signed batch");
        let c: Call = signed::decode(&bytes)?;
        assert_eq!(c.dataset.as_str(), "companies");
        // Its result, under the provider's signature.
        let rbytes = unhex(call["result"].as_str().context("result")?)?;
        let r: CallResult = signed::decode(&rbytes)?;
        assert_eq!(r.call, leaf);
        let rleaf = deltafed_protocol::calls::leaf_of::<CallResult>(&rbytes);
        let rproof: Vec<Hash> = call["result_proof"]
            .as_array()
            .context("result_proof")?
            .iter()
            .map(|h| hash(h.as_str().unwrap_or("")))
            .collect::<Result<_>>()?;
        assert!(merkle::verify(&rleaf, 4, n, &rproof, &answer.body().root), "{member}: the result is signed");
        // A neighbour's proof, a moved index or a changed byte proves nothing.
        let other = &entry["calls"][5];
        let obytes = unhex(other["call"].as_str().context("call")?)?;
        assert!(!merkle::verify(&deltafed_protocol::calls::leaf_of::<Call>(&obytes), 4, n, &proof, &batch.body().root));
        assert!(!merkle::verify(&leaf, 5, n, &proof, &batch.body().root));
        let mut bad = bytes.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        } else {
            bail!("an empty call");
        }
        assert!(!merkle::verify(&deltafed_protocol::calls::leaf_of::<Call>(&bad), 4, n, &proof, &batch.body().root));
    }
    Ok(())
}
