//! Helpers the integration tests share.

// Each test file uses its own part of these.
#![allow(dead_code)]

pub mod rogue;
pub mod web;

use std::time::Duration;

use anyhow::Result;
use deltafed_testnet::{Federation, path_str};

pub const CONNECT: Duration = Duration::from_secs(20);
pub const SOON: Duration = Duration::from_secs(10);

pub fn file(fed: &Federation, name: &str, content: &[u8]) -> Result<String> {
    let p = fed.root().join(name);
    std::fs::write(&p, content)?;
    Ok(path_str(&p)?.to_string())
}

pub fn out(fed: &Federation, name: &str) -> Result<String> {
    Ok(path_str(&fed.root().join(name))?.to_string())
}

/// Runs a command that must fail; returns its stderr.
pub fn refused(fed: &Federation, member: &str, args: &[&str]) -> Result<String> {
    let o = fed.cli(member, args)?;
    assert!(
        !o.status.success(),
        "{member}: {args:?} should have been refused; stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    Ok(String::from_utf8_lossy(&o.stderr).to_string())
}

pub fn started(members: &[&str]) -> Result<Federation> {
    let mut fed = Federation::init(members)?;
    fed.start_all()?;
    fed.wait_mesh(members, CONNECT)?;
    Ok(fed)
}

pub fn wait_catalog(fed: &mut Federation, member: &str, entry: &str) -> Result<()> {
    let e = entry.to_string();
    fed.wait_for(&format!("{entry} in {member}'s catalog"), SOON, |f| Ok(f.catalog(member)?.contains(&e)))
}
