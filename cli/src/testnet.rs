//! `deltafed testnet init`: the whole roster ceremony for a local federation in one command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deltafed_node::{DataDir, Multiaddr, keyfile, rosterfile};
use deltafed_protocol::roster::SignedRoster;
use deltafed_protocol::{FederationId, MemberId};
use serde::Serialize;

use crate::cli::Global;
use crate::init::{self, Initialized};
use crate::output::emit;
use crate::roster::{MemberSpec, build};

#[derive(Debug, Subcommand)]
pub enum TestnetCommand {
    /// Create data dirs for every member and a roster signed by all, installed in each.
    Init {
        /// Where to create the member data dirs (DIR/<member>).
        #[arg(long)]
        dir: PathBuf,
        /// Member ids, comma-separated, e.g. shanghai,jiangsu,zhejiang,anhui.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<MemberId>,
        /// Member i (0-based) listens on 127.0.0.1 TCP and UDP (QUIC) port P+i.
        #[arg(long, default_value_t = 4001)]
        base_port: u16,
        /// Address members as /dns4/<member>/tcp/4001 (and udp/4001/quic-v1) for a compose network.
        #[arg(long)]
        docker: bool,
        /// The federation id.
        #[arg(long, default_value = "yrd-testnet")]
        federation: FederationId,
        /// Signatures required for roster changes. Default: a majority of the members.
        #[arg(long)]
        threshold: Option<u32>,
    },
}

#[derive(Debug, Serialize)]
struct TestnetMember {
    #[serde(flatten)]
    init: Initialized,
    listen: Vec<String>,
    addrs: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Testnet {
    federation: String,
    dir: String,
    roster: String,
    threshold: u32,
    members: Vec<TestnetMember>,
}

pub fn run(g: &Global, cmd: TestnetCommand) -> Result<ExitCode> {
    let TestnetCommand::Init { dir, members, base_port, docker, federation, threshold } = cmd;
    let mut seen = std::collections::BTreeSet::new();
    for m in &members {
        if !seen.insert(m) {
            bail!("member {m} is listed twice in --members");
        }
    }
    let n = u32::try_from(members.len()).context("too many members")?;
    let threshold = threshold.unwrap_or(n / 2 + 1);
    if base_port.checked_add(u16::try_from(members.len()).unwrap_or(u16::MAX)).is_none() {
        bail!("--base-port {base_port} leaves no room for {} members below port 65535", members.len());
    }
    // Refuse before writing anything: a second run must not replace the roster of a federation
    // whose keys it cannot overwrite.
    for m in &members {
        let key = dir.join(m.as_str()).join("node.key");
        if key.exists() {
            bail!(
                "{} already exists; refusing to overwrite a member key (use another --dir, or remove it first)",
                key.display()
            );
        }
    }
    let keys = members.iter().map(|_| keyfile::generate()).collect::<Result<Vec<_>, _>>()?;
    let mut specs = Vec::new();
    let mut plans = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let port = base_port + u16::try_from(i).unwrap_or(0);
        let (listen, addrs) = if docker {
            (
                vec![format!("/ip4/0.0.0.0/tcp/4001"), format!("/ip4/0.0.0.0/udp/4001/quic-v1")],
                vec![format!("/dns4/{m}/tcp/4001"), format!("/dns4/{m}/udp/4001/quic-v1")],
            )
        } else {
            let local = vec![format!("/ip4/127.0.0.1/tcp/{port}"), format!("/ip4/127.0.0.1/udp/{port}/quic-v1")];
            (local.clone(), local)
        };
        specs.push(MemberSpec { id: m.clone(), key: keys[i].public(), addrs: parse_addrs(&addrs)? });
        plans.push((listen, addrs));
    }
    let mut roster = SignedRoster::unsigned(build(federation.clone(), 1, threshold, &specs));
    roster.roster.check_structure().context("the roster would never be valid")?;
    for key in &keys {
        roster.add_signature(key)?;
    }
    roster.validate().context("the signed roster does not validate")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let roster_path = dir.join("roster.cbor");
    rosterfile::write(&roster_path, &roster)?;
    let mut out = Vec::new();
    for ((m, key), (listen, addrs)) in members.iter().zip(&keys).zip(plans) {
        let dd = DataDir::new(dir.join(m.as_str()));
        let init = init::create(&dd, m, &parse_addrs(&listen)?, key)?;
        rosterfile::install(&dd.roster(), &roster, &roster_path)?;
        out.push(TestnetMember { init, listen, addrs });
    }
    let t = Testnet {
        federation: federation.to_string(),
        dir: dir.display().to_string(),
        roster: roster_path.display().to_string(),
        threshold,
        members: out,
    };
    emit(g.json, &t, || {
        let mut s = format!(
            "federation {} ({} members, threshold {}) in {}\n",
            t.federation,
            t.members.len(),
            t.threshold,
            t.dir
        );
        for m in &t.members {
            s += &format!("  {:<10} {}  {}\n", m.init.member, m.init.peer_id, m.listen.join(" "));
        }
        s += &format!("start a member: deltafed run --data-dir {}/<member>", t.dir);
        s
    })
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>> {
    addrs.iter().map(|a| a.parse::<Multiaddr>().with_context(|| format!("{a:?} is not a multiaddr"))).collect()
}
