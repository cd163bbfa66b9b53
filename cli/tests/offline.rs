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
fn init_with_a_given_key_and_roster_is_idempotent_as_a_provisioning_step() {
    // What a Kubernetes init container does at every start: the key from a mounted Secret
    // (group-readable), the roster from a ConfigMap, the config possibly there already.
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = tmp.path().join("net");
    ok_json(&["testnet", "init", "--dir", s(&net), "--members", "shanghai,anhui", "--json"]);
    let secret = tmp.path().join("secret-node.key");
    std::fs::copy(net.join("anhui/node.key"), &secret).expect("copy");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o440)).expect("chmod");
    let roster = net.join("roster.cbor");
    let dir = tmp.path().join("pvc/node");
    let args =
        ["init", "--member", "anhui", "--key", s(&secret), "--roster", s(&roster), "--data-dir", s(&dir), "--json"];
    let first = ok_json(&args);
    let again = ok_json(&args);
    assert_eq!(first, again, "the same identity both times");
    let original = std::fs::read_to_string(net.join("anhui/node.key")).expect("key");
    assert_eq!(std::fs::read_to_string(dir.join("node.key")).expect("key"), original);
    assert_eq!(std::fs::metadata(dir.join("node.key")).expect("key").permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read(dir.join("roster.cbor")).expect("roster"), std::fs::read(&roster).expect("roster"));
    // A config already there (a mounted one) is kept.
    std::fs::write(dir.join("deltafed.toml"), "member = \"anhui\"\nserve_rate_limit = 5\n").expect("write");
    ok_json(&args);
    assert!(std::fs::read_to_string(dir.join("deltafed.toml")).expect("config").contains("serve_rate_limit = 5"));
    // --config replaces it with the source's, once checked.
    let source = tmp.path().join("configmap.toml");
    std::fs::write(&source, "member = \"anhui\"\nlog_format = \"json\"\n").expect("write");
    let mut with_config = args.to_vec();
    with_config.splice(3..3, ["--config", s(&source)]);
    ok_json(&with_config);
    assert_eq!(std::fs::read(dir.join("deltafed.toml")).expect("config"), std::fs::read(&source).expect("source"));
    std::fs::write(&source, "member = \"shanghai\"\n").expect("write");
    let err = fails(&with_config[..with_config.len() - 1]);
    assert!(err.contains("does not name member anhui"), "{err}");
    std::fs::write(&source, "member = \"anhui\"\n[provenance]\narchive_after = \"30d\"\n").expect("write");
    let err = fails(&with_config[..with_config.len() - 1]);
    assert!(err.contains("archive_after"), "{err}");
    assert!(std::fs::read_to_string(dir.join("deltafed.toml")).expect("config").contains("json"), "kept");
    // Another member's key in the same data dir is refused; a key readable by others too.
    std::fs::copy(net.join("shanghai/node.key"), &secret).expect("copy");
    let err = fails(&args[..args.len() - 1]);
    assert!(err.contains("another key"), "{err}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let err = fails(&["init", "--member", "anhui", "--key", s(&secret), "--data-dir", s(&tmp.path().join("other"))]);
    assert!(err.contains("unsafe permissions"), "{err}");
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

#[test]
fn app_commands_need_a_running_node_and_check_their_arguments() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("zj");
    ok_json(&["init", "--member", "zhejiang", "--data-dir", s(&dir), "--json"]);
    let err = fails(&["app", "list", "--data-dir", s(&dir)]);
    assert!(err.contains("no node is running") && err.contains("deltafed run"), "{err}");
    let out = deltafed(&["app", "add", "credit-check", "--datasets", "shanghai", "--data-dir", s(&dir)]);
    assert_eq!(out.status.code(), Some(2), "a malformed dataset reference is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("MEMBER/DATASET"));
    let out = deltafed(&["app", "add", "credit-check", "--rate", "lots", "--data-dir", s(&dir)]);
    assert_eq!(out.status.code(), Some(2));
    for help in [&["app", "--help"][..], &["app", "add", "--help"], &["app", "rotate", "--help"]] {
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
        // Local gateways take a free loopback port each, plain HTTP.
        assert!(cfg.contains("[gateway]\nlisten = \"127.0.0.1:0\""), "{cfg}");
        assert!(!cfg.contains("tls_cert"), "{cfg}");
        // Metrics too: a free loopback port each.
        assert!(cfg.contains("[metrics]\nlisten = \"127.0.0.1:0\""), "{cfg}");
    }
    let docker = tmp.path().join("docker");
    let v = ok_json(&["testnet", "init", "--dir", s(&docker), "--members", "shanghai,anhui", "--docker", "--json"]);
    assert_eq!(v["members"][1]["addrs"], serde_json::json!(["/dns4/anhui/tcp/4001", "/dns4/anhui/udp/4001/quic-v1"]));
    // Docker gateways listen on every interface, so over HTTPS: a certificate each, key private.
    for m in ["shanghai", "anhui"] {
        let dir = docker.join(m);
        let cfg = std::fs::read_to_string(dir.join("deltafed.toml")).expect("config");
        assert!(cfg.contains("listen = \"0.0.0.0:8480\""), "{cfg}");
        // Metrics on every interface, where the probes and Prometheus of the network reach them.
        assert!(cfg.contains("[metrics]\nlisten = \"0.0.0.0:9480\""), "{cfg}");
        assert!(
            cfg.contains("tls_cert = \"gateway-cert.pem\"") && cfg.contains("tls_key = \"gateway-key.pem\""),
            "{cfg}"
        );
        let cert = std::fs::read_to_string(dir.join("gateway-cert.pem")).expect("cert");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        let key = dir.join("gateway-key.pem");
        assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&key).expect("key").contains("PRIVATE KEY"));
    }
    assert_ne!(
        std::fs::read(docker.join("shanghai/gateway-cert.pem")).expect("cert"),
        std::fs::read(docker.join("anhui/gateway-cert.pem")).expect("cert"),
        "one certificate per member"
    );
    let roster_before = std::fs::read(net.join("roster.cbor")).expect("roster");
    let err = fails(&["testnet", "init", "--dir", s(&net), "--members", "shanghai"]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(net.join("roster.cbor")).expect("roster"), roster_before, "the roster is untouched");
}
