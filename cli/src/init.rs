//! `deltafed init`: a new data dir with a member key and a config.

use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use deltafed_node::Multiaddr;
use deltafed_node::{Config, DataDir, identity, keyfile};
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
    let key = keyfile::generate()?;
    let out = create(&dir, &args.member, &args.listen, &key)?;
    emit(g.json, &out, || {
        format!(
            "initialized {}\n  member      {}\n  peer id     {}\n  public key  {}\nnext: add this member to the roster (deltafed roster new / sign / install)",
            out.data_dir, out.member, out.peer_id, out.public_key
        )
    })
}

/// Creates the data dir for `member` with `key`; shared with `testnet init`.
pub fn create(dir: &DataDir, member: &MemberId, listen: &[Multiaddr], key: &SecretKey) -> Result<Initialized> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.root())
        .with_context(|| format!("cannot create data dir {}", dir.root().display()))?;
    keyfile::write_new(&dir.key(), key)?;
    let mut cfg = Config { member: Some(member.clone()), ..Config::default() };
    if !listen.is_empty() {
        cfg.listen = listen.iter().map(ToString::to_string).collect();
    }
    cfg.save(&dir.config())?;
    let peer = identity::peer_id(&key.public()).context("the new key has no PeerId")?;
    Ok(Initialized {
        member: member.to_string(),
        peer_id: peer.to_string(),
        public_key: key.public().to_string(),
        data_dir: dir.root().display().to_string(),
    })
}
