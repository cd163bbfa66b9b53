//! The offline commands, driven through the built binary exactly as a user would:
//! `init`, the roster ceremony and `testnet init`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use deltafed_protocol::roster::SignedRoster;
use serde_json::Value;

fn deltafed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deltafed"))
        .args(args)
        .env_remove("DELTAFED_DATA_DIR")
        .output()
        .expect("the deltafed binary runs")
}

fn ok_json(args: &[&str]) -> Value {
    let out = deltafed(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn fails(args: &[&str]) -> String {
    let out = deltafed(args);
    assert!(!out.status.success(), "{args:?} should have failed");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "one clear sentence on stderr, got: {err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn init_writes_a_private_key_and_refuses_to_overwrite_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("zj");
    let v = ok_json(&["init", "--member", "zhejiang", "--data-dir", s(&dir), "--json"]);
    assert_eq!(v["member"], "zhejiang");
    assert!(v["peer_id"].as_str().expect("peer_id").starts_with("12D3KooW"));
    assert_eq!(v["public_key"].as_str().expect("public_key").len(), 64);
    let mode = std::fs::metadata(dir.join("node.key")).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(dir.join("deltafed.toml").exists());
    let before = std::fs::read(dir.join("node.key")).expect("key");
    let err = fails(&["--data-dir", s(&dir), "init", "--member", "zhejiang"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(dir.join("node.key")).expect("key"), before, "the key is untouched");
}

#[test]
fn bad_input_gets_one_clear_sentence() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = fails(&["init", "--member", "zhejiang"]);
    assert!(err.contains("--data-dir"), "{err}");
    let out = deltafed(&["init", "--member", "Zhe Jiang", "--data-dir", s(tmp.path())]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lower-case"), "{err}");
    let err = fails(&["roster", "show", s(&tmp.path().join("missing.cbor"))]);
    assert!(err.contains("cannot read roster"), "{err}");
    for help in [&["--help"][..], &["roster", "--help"], &["roster", "new", "--help"], &["testnet", "init", "--help"]] {
        assert!(deltafed(help).status.success(), "{help:?}");
    }
}

struct Ceremony {
    _tmp: tempfile::TempDir,
    dirs: Vec<String>,
    roster: String,
}

/// Four members, `init` each, and an unsigned roster with threshold 3.
fn ceremony() -> Ceremony {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut dirs = Vec::new();
    let mut specs = Vec::new();
    for (i, m) in ["shanghai", "jiangsu", "zhejiang", "anhui"].iter().enumerate() {
        let dir = tmp.path().join(m);
        let v = ok_json(&["init", "--member", m, "--data-dir", s(&dir), "--json"]);
        specs.push(format!("{m}={}@/ip4/127.0.0.1/tcp/{}", v["public_key"].as_str().expect("key"), 5001 + i));
        dirs.push(s(&dir).to_string());
    }
    let roster = s(&tmp.path().join("roster.cbor")).to_string();
    let mut args = vec!["roster", "new", "--federation", "yrd", "--threshold", "3", "--out", &roster];
    for spec in &specs {
        args.extend(["--member", spec]);
    }
    let v = ok_json(&[&args[..], &["--json"]].concat());
    assert_eq!(v["valid"], false);
    assert_eq!(v["signers"], serde_json::json!([]));
    Ceremony { _tmp: tmp, dirs, roster }
}

#[test]
fn roster_ceremony_threshold_and_install() {
    let c = ceremony();
    ok_json(&["roster", "sign", &c.roster, "--data-dir", &c.dirs[0], "--json"]);
    let err = fails(&["roster", "sign", &c.roster, "--data-dir", &c.dirs[0]]);
    assert!(err.contains("already signed"), "{err}");
    ok_json(&["--data-dir", &c.dirs[1], "roster", "sign", &c.roster, "--json"]);

    // One signature short of the threshold.
    let v = ok_json(&["roster", "show", &c.roster, "--json"]);
    assert_eq!(v["valid"], false);
    assert!(v["reason"].as_str().expect("reason").contains("2 distinct member(s) of the 3"), "{v}");
    let err = fails(&["roster", "install", &c.roster, "--data-dir", &c.dirs[0]]);
    assert!(err.contains("not valid"), "{err}");
    assert!(!Path::new(&c.dirs[0]).join("roster.cbor").exists());

    ok_json(&["roster", "sign", &c.roster, "--data-dir", &c.dirs[2], "--json"]);
    let v = ok_json(&["roster", "show", &c.roster, "--json"]);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["federation"], "yrd");
    assert_eq!(v["version"], 1);
    assert_eq!(v["threshold"], 3);
    assert_eq!(v["signers"], serde_json::json!(["shanghai", "jiangsu", "zhejiang"]));
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 4);
    assert_eq!(members[2]["id"], "zhejiang");
    assert_eq!(members[2]["addrs"], serde_json::json!(["/ip4/127.0.0.1/tcp/5003"]));
    assert_eq!(members[2]["public_key"].as_str().expect("key").len(), 64);

    for dir in &c.dirs {
        ok_json(&["roster", "install", &c.roster, "--data-dir", dir, "--json"]);
        assert!(Path::new(dir).join("roster.cbor").exists());
    }
}

#[test]
fn double_signature_counts_once_and_is_refused() {
    let c = ceremony();
    ok_json(&["roster", "sign", &c.roster, "--data-dir", &c.dirs[0], "--json"]);
    ok_json(&["roster", "sign", &c.roster, "--data-dir", &c.dirs[1], "--json"]);
    // The CLI will not sign twice, so duplicate shanghai's signature by hand.
    let mut r = SignedRoster::decode(&std::fs::read(&c.roster).expect("read")).expect("decodes");
    let dup = r.sigs[0].clone();
    r.sigs.push(dup);
    std::fs::write(&c.roster, r.encode().expect("encodes")).expect("write");
    let v = ok_json(&["roster", "show", &c.roster, "--json"]);
    assert_eq!(v["valid"], false);
    let reason = v["reason"].as_str().expect("reason");
    assert!(reason.contains("shanghai signed more than once"), "{reason}");
    assert_eq!(v["signers"], serde_json::json!(["shanghai", "jiangsu", "shanghai"]));
    fails(&["roster", "install", &c.roster, "--data-dir", &c.dirs[3]]);
}

#[test]
fn tampered_roster_is_invalid_and_refused() {
    let c = ceremony();
    for d in &c.dirs[..3] {
        ok_json(&["roster", "sign", &c.roster, "--data-dir", d, "--json"]);
    }
    let good = std::fs::read(&c.roster).expect("read");
    // Every single-byte change is reported invalid with a reason, and never installed.
    let step = (good.len() / 40).max(1);
    for i in (0..good.len()).step_by(step) {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        std::fs::write(&c.roster, &bad).expect("write");
        let v = ok_json(&["roster", "show", &c.roster, "--json"]);
        assert_eq!(v["valid"], false, "byte {i} changed: {v}");
        assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "byte {i}: {v}");
        fails(&["roster", "install", &c.roster, "--data-dir", &c.dirs[3]]);
    }
    assert!(!Path::new(&c.dirs[3]).join("roster.cbor").exists());
}

#[test]
fn testnet_init_makes_a_ready_federation() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = tmp.path().join("net");
    let v = ok_json(&[
        "testnet",
        "init",
        "--dir",
        s(&net),
        "--members",
        "shanghai,jiangsu,zhejiang,anhui",
        "--base-port",
        "6100",
        "--json",
    ]);
    let members = v["members"].as_array().expect("members");
    assert_eq!(members.len(), 4);
    for (i, m) in members.iter().enumerate() {
        let port = 6100 + i;
        assert_eq!(
            m["listen"],
            serde_json::json!([format!("/ip4/127.0.0.1/tcp/{port}"), format!("/ip4/127.0.0.1/udp/{port}/quic-v1")])
        );
        let dir = net.join(m["member"].as_str().expect("member"));
        let installed = ok_json(&["roster", "show", s(&dir.join("roster.cbor")), "--json"]);
        assert_eq!(installed["valid"], true);
        assert_eq!(installed["signers"].as_array().expect("signers").len(), 4, "signed by all");
        let cfg = std::fs::read_to_string(dir.join("deltafed.toml")).expect("config");
        assert!(cfg.contains(&format!("/ip4/127.0.0.1/tcp/{port}")), "{cfg}");
    }
    let docker = tmp.path().join("docker");
    let v = ok_json(&["testnet", "init", "--dir", s(&docker), "--members", "shanghai,anhui", "--docker", "--json"]);
    assert_eq!(v["members"][1]["addrs"], serde_json::json!(["/dns4/anhui/tcp/4001", "/dns4/anhui/udp/4001/quic-v1"]));
    let roster_before = std::fs::read(net.join("roster.cbor")).expect("roster");
    let err = fails(&["testnet", "init", "--dir", s(&net), "--members", "shanghai"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(net.join("roster.cbor")).expect("roster"), roster_before, "the roster is untouched");
}
