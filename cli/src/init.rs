//! `deltafed init`: a new data dir with a member key and a config.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use deltafed_node::Multiaddr;
use deltafed_node::{Config, DataDir, identity, keyfile, rosterfile};
use deltafed_protocol::{MemberId, SecretKey};
use serde::Serialize;

use crate::cli::Global;
use crate::output::emit;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// This member's id, e.g. zhejiang (lower-case letters, digits and '-').
    #[arg(long)]
    pub member: MemberId,
    /// A multiaddr to listen on (repeatable). Default: TCP and QUIC on port 4001, all interfaces.
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Use the key in FILE (hex, as node.key holds it) instead of a new one, e.g. a key kept in
    /// a secret store. Run again with the same key it changes nothing, so a provisioning step
    /// (a Kubernetes init container) can run it at every start; an existing deltafed.toml is
    /// kept, a data dir holding another key is refused. FILE may be readable by its group (a
    /// mounted Secret is), not by others.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Install this roster when the data dir has none. One already installed is kept: newer
    /// ones arrive from the federation, and `deltafed roster install` replaces it.
    #[arg(long, value_name = "FILE")]
    pub roster: Option<PathBuf>,
    /// Make FILE the data dir's deltafed.toml, replacing the one there (checked first: it must
    /// be valid and name --member), so the config follows its source (a Kubernetes ConfigMap).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Initialized {
    pub member: String,
    pub peer_id: String,
    pub public_key: String,
    pub data_dir: String,
}

pub fn run(g: &Global, args: InitArgs) -> Result<ExitCode> {
    let dir = g.data_dir()?;
    let out = match &args.key {
        None => create(&dir, &args.member, &args.listen, &keyfile::generate()?, |_| {})?,
        Some(file) => adopt(&dir, &args.member, &args.listen, &keyfile::read_import(file)?)?,
    };
    if let Some(file) = &args.config {
        replace_config(&dir, &args.member, file)?;
    }
    if let Some(file) = &args.roster {
        seed_roster(&dir, file)?;
    }
    emit(g.json, &out, || {
        format!(
            "initialized {}\n  member      {}\n  peer id     {}\n  public key  {}\nnext: add this member to the roster (deltafed roster new / sign / install)",
            out.data_dir, out.member, out.peer_id, out.public_key
        )
    })
}

/// `init --key`: the data dir for `member` with a key given, idempotent. The key is written
/// (0600) unless the same one is there; the config unless one is there (it may be mounted).
fn adopt(dir: &DataDir, member: &MemberId, listen: &[Multiaddr], key: &SecretKey) -> Result<Initialized> {
    make_dir(dir)?;
    if dir.key().exists() {
        let held = keyfile::read(&dir.key())?;
        if held.public() != key.public() {
            anyhow::bail!(
                "{} holds another key than the one given with --key; this data dir belongs to another member or identity",
                dir.key().display()
            );
        }
    } else {
        keyfile::write_new(&dir.key(), key)?;
    }
    if !dir.config().exists() {
        let mut cfg = Config { member: Some(member.clone()), ..Config::default() };
        if !listen.is_empty() {
            cfg.listen = listen.iter().map(ToString::to_string).collect();
        }
        cfg.save(&dir.config())?;
    }
    initialized(dir, member, key)
}

/// `init --config`: FILE, once it loads and names `member`, as the data dir's config (0600).
fn replace_config(dir: &DataDir, member: &MemberId, file: &std::path::Path) -> Result<()> {
    let cfg = Config::load(file)?;
    if cfg.member.as_ref() != Some(member) {
        anyhow::bail!("{} does not name member {member} (set `member = \"{member}\"` in it)", file.display());
    }
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let dest = dir.config();
    let tmp = dest.with_extension("toml.new");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&text).and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("cannot replace {}", dest.display()))
}

/// `init --roster`: installs the roster unless the data dir already has one.
fn seed_roster(dir: &DataDir, file: &std::path::Path) -> Result<()> {
    let cfg = Config::load(&dir.config())?;
    let dest = dir.resolve(&cfg.roster);
    if !dest.exists() {
        let roster = rosterfile::read(file)?;
        rosterfile::install(&dest, &roster, file)?;
    }
    Ok(())
}

fn make_dir(dir: &DataDir) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.root())
        .with_context(|| format!("cannot create data dir {}", dir.root().display()))
}

fn initialized(dir: &DataDir, member: &MemberId, key: &SecretKey) -> Result<Initialized> {
    let peer = identity::peer_id(&key.public()).context("the key has no PeerId")?;
    Ok(Initialized {
        member: member.to_string(),
        peer_id: peer.to_string(),
        public_key: key.public().to_string(),
        data_dir: dir.root().display().to_string(),
    })
}

/// Creates the data dir for `member` with `key`; shared with `testnet init`, which also says
/// where the gateway, metrics and other listeners listen (`listeners` adjusts the config).
pub fn create(
    dir: &DataDir,
    member: &MemberId,
    listen: &[Multiaddr],
    key: &SecretKey,
    listeners: impl FnOnce(&mut Config),
) -> Result<Initialized> {
    make_dir(dir)?;
    keyfile::write_new(&dir.key(), key)?;
    let mut cfg = Config { member: Some(member.clone()), ..Config::default() };
    listeners(&mut cfg);
    if !listen.is_empty() {
        cfg.listen = listen.iter().map(ToString::to_string).collect();
    }
    cfg.save(&dir.config())?;
    initialized(dir, member, key)
}
