//! `deltafed testnet init`: the whole roster ceremony for a local federation in one command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deltafed_node::config::{DashboardConfig, GatewayConfig};
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
        /// Member i listens on and is addressed at the i-th of these IPv4 addresses instead of
        /// 127.0.0.1, comma-separated (e.g. members in their own network namespaces).
        #[arg(long, value_delimiter = ',', conflicts_with = "docker")]
        hosts: Vec<std::net::Ipv4Addr>,
        /// Address members as /dns4/<member>/tcp/4001 (and udp/4001/quic-v1) for a compose network;
        /// their gateways listen on 0.0.0.0:8480 over HTTPS with a self-signed certificate each
        /// (gateway-cert.pem in the data dir), their dashboards on 0.0.0.0:8481 over HTTPS with
        /// the same certificate, their metrics on 0.0.0.0:9480. Without it, each gateway,
        /// dashboard and metrics listener takes a free port on 127.0.0.1 (see `deltafed status`).
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
    let TestnetCommand::Init { dir, members, base_port, hosts, docker, federation, threshold } = cmd;
    if !hosts.is_empty() && hosts.len() != members.len() {
        bail!("--hosts lists {} addresses for {} members; give one per member", hosts.len(), members.len());
    }
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
            let host = hosts.get(i).copied().unwrap_or(std::net::Ipv4Addr::LOCALHOST);
            let local = vec![format!("/ip4/{host}/tcp/{port}"), format!("/ip4/{host}/udp/{port}/quic-v1")];
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
        let gateway = if docker {
            GatewayConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 8480)),
                tls_cert: Some(GATEWAY_CERT.into()),
                tls_key: Some(GATEWAY_KEY.into()),
                ..GatewayConfig::default()
            }
        } else {
            GatewayConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..GatewayConfig::default() }
        };
        // Metrics: Prometheus and the probes of a container reach it from outside, so all
        // interfaces on the fixed port with --docker; a free loopback port locally.
        let metrics =
            if docker { SocketAddr::from(([0, 0, 0, 0], 9480)) } else { SocketAddr::from(([127, 0, 0, 1], 0)) };
        // The dashboard: like the gateway (HTTPS with the same certificate on the fixed port with
        // --docker, a free loopback port locally).
        let dashboard = if docker {
            DashboardConfig {
                listen: SocketAddr::from(([0, 0, 0, 0], 8481)),
                tls_cert: Some(GATEWAY_CERT.into()),
                tls_key: Some(GATEWAY_KEY.into()),
            }
        } else {
            DashboardConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..DashboardConfig::default() }
        };
        let init = init::create(&dd, m, &parse_addrs(&listen)?, key, |cfg| {
            cfg.gateway = gateway;
            cfg.metrics.listen = metrics;
            cfg.dashboard = dashboard;
        })?;
        if docker {
            write_gateway_cert(&dd, m)?;
        }
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

/// The gateway's certificate and key in a `--docker` member's data dir.
const GATEWAY_CERT: &str = "gateway-cert.pem";
const GATEWAY_KEY: &str = "gateway-key.pem";

/// A self-signed certificate for a member's gateway, valid for its compose host name,
/// `localhost` and 127.0.0.1; the key is written with mode 0600.
fn write_gateway_cert(dd: &DataDir, member: &MemberId) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let names = vec![member.to_string(), "localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).context("cannot make the gateway's certificate")?;
    let cert_path = dd.root().join(GATEWAY_CERT);
    let key_path = dd.root().join(GATEWAY_KEY);
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot create {}", key_path.display()))?;
    key.write_all(certified.key_pair.serialize_pem().as_bytes())
        .and_then(|()| key.sync_all())
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    Ok(())
}

fn parse_addrs(addrs: &[String]) -> Result<Vec<Multiaddr>> {
    addrs.iter().map(|a| a.parse::<Multiaddr>().with_context(|| format!("{a:?} is not a multiaddr"))).collect()
}
