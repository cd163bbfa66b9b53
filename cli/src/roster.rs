//! `deltafed roster new|sign|show|install`: the roster ceremony.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deltafed_node::{Config, Multiaddr, identity, keyfile, rosterfile};
use deltafed_protocol::roster::{Member, Roster, SignedRoster};
use deltafed_protocol::{FederationId, MemberId, OBJECT_VERSION, PublicKey};
use serde::Serialize;

use crate::cli::Global;
use crate::output::emit;

#[derive(Debug, Subcommand)]
pub enum RosterCommand {
    /// Write a new, unsigned roster.
    New {
        /// The federation's id, e.g. yrd.
        #[arg(long)]
        federation: FederationId,
        /// How many distinct members must sign (and must sign any change).
        #[arg(long)]
        threshold: u32,
        /// The roster's version (1 for a new federation; the next number to replace one in force).
        #[arg(long, default_value_t = 1)]
        version: u64,
        /// A member: ID=PUBKEY[@MULTIADDR[,MULTIADDR…]] (repeatable).
        #[arg(long = "member", value_name = "ID=PUBKEY[@MULTIADDR]", required = true)]
        members: Vec<MemberSpec>,
        /// Where to write the roster.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add this member's signature to a roster file.
    Sign {
        /// The roster file.
        file: PathBuf,
    },
    /// Show a roster: members, threshold, signers, and whether it is valid (and why not).
    Show {
        /// The roster file.
        file: PathBuf,
    },
    /// Verify a roster and install it as the roster in force.
    Install {
        /// The roster file.
        file: PathBuf,
    },
}

/// `ID=PUBKEY[@MULTIADDR[,MULTIADDR…]]`.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub id: MemberId,
    pub key: PublicKey,
    pub addrs: Vec<Multiaddr>,
}

impl FromStr for MemberSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, rest) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=PUBKEY[@MULTIADDR]"))?;
        let (key, addrs) = match rest.split_once('@') {
            Some((k, a)) => (k, a.split(',').filter(|a| !a.is_empty()).collect::<Vec<_>>()),
            None => (rest, Vec::new()),
        };
        let id: MemberId = id.parse().map_err(|e| format!("{e}"))?;
        let key: PublicKey = key.parse().map_err(|e| format!("member {id}: {e}"))?;
        if !key.is_valid() {
            return Err(format!("member {id}: {key} is not a valid ed25519 public key"));
        }
        let addrs = addrs
            .into_iter()
            .map(|a| a.parse::<Multiaddr>().map_err(|e| format!("member {id}: address {a:?} is not a multiaddr: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(MemberSpec { id, key, addrs })
    }
}

/// "zhejiang" → "Zhejiang": the display name when none is given.
pub fn display_name(id: &MemberId) -> String {
    let mut c = id.as_str().chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

pub fn build(federation: FederationId, version: u64, threshold: u32, members: &[MemberSpec]) -> Roster {
    Roster {
        v: OBJECT_VERSION,
        federation,
        version,
        threshold,
        members: members
            .iter()
            .map(|m| Member {
                id: m.id.clone(),
                name: display_name(&m.id),
                key: m.key,
                addrs: m.addrs.iter().map(ToString::to_string).collect(),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
struct MemberView {
    id: String,
    name: String,
    public_key: String,
    peer_id: Option<String>,
    addrs: Vec<String>,
}

#[derive(Debug, Serialize)]
struct RosterView {
    file: String,
    valid: bool,
    reason: Option<String>,
    federation: Option<String>,
    version: Option<u64>,
    threshold: Option<u32>,
    members: Vec<MemberView>,
    signers: Vec<String>,
}

fn view(file: &Path, r: &SignedRoster) -> RosterView {
    let reason = r.validate().err().map(|e| e.to_string());
    RosterView {
        file: file.display().to_string(),
        valid: reason.is_none(),
        reason,
        federation: Some(r.roster.federation.to_string()),
        version: Some(r.roster.version),
        threshold: Some(r.roster.threshold),
        members: r
            .roster
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id.to_string(),
                name: m.name.clone(),
                public_key: m.key.to_string(),
                peer_id: identity::peer_id(&m.key).map(|p| p.to_string()),
                addrs: m.addrs.clone(),
            })
            .collect(),
        signers: r.signer_names(),
    }
}

fn text(v: &RosterView) -> String {
    let mut s = String::new();
    let verdict = match &v.reason {
        None => "valid".to_string(),
        Some(r) => format!("INVALID: {r}"),
    };
    s += &format!("roster {}: {verdict}\n", v.file);
    if let (Some(f), Some(ver), Some(k)) = (&v.federation, v.version, v.threshold) {
        s += &format!("federation {f}, version {ver}, threshold {k} of {}\n", v.members.len());
    }
    for m in &v.members {
        let signed = if v.signers.contains(&m.id) { "signed" } else { "      " };
        s += &format!("  {signed}  {:<12} {}  {}\n", m.id, m.public_key, m.addrs.join(" "));
    }
    s
}

pub fn run(g: &Global, cmd: RosterCommand) -> Result<ExitCode> {
    match cmd {
        RosterCommand::New { federation, threshold, version, members, out } => {
            let roster = build(federation, version, threshold, &members);
            roster.check_structure().context("the roster would never be valid")?;
            let signed = SignedRoster::unsigned(roster);
            rosterfile::write(&out, &signed)?;
            let v = view(&out, &signed);
            emit(g.json, &v, || {
                format!(
                    "wrote unsigned roster {}; next: each member runs `deltafed roster sign {}`",
                    out.display(),
                    out.display()
                )
            })
        }
        RosterCommand::Sign { file } => {
            let dir = g.data_dir()?;
            let key = keyfile::read(&dir.key())?;
            let mut r = rosterfile::read(&file)?;
            let me = key.public();
            let in_force = installed(&dir.roster());
            let member_here = r.roster.member_by_key(&me).is_some();
            let member_before = in_force.as_ref().is_some_and(|c| c.roster.member_by_key(&me).is_some());
            if !member_here && !member_before {
                bail!(
                    "this node's key ({me}) is not a member of the roster in {} nor of the roster in force, so its signature would make it invalid",
                    file.display()
                );
            }
            if r.is_signed_by(&me) {
                bail!("{} is already signed by this node's key; a second signature would count once", file.display());
            }
            r.add_signature(&key)?;
            rosterfile::write(&file, &r)?;
            let v = view(&file, &r);
            emit(g.json, &v, || text(&v))
        }
        RosterCommand::Show { file } => {
            let v = match rosterfile::read(&file) {
                Ok(r) => view(&file, &r),
                Err(e @ rosterfile::Error::Read { .. }) => return Err(e.into()),
                Err(e) => RosterView {
                    file: file.display().to_string(),
                    valid: false,
                    reason: Some(e.to_string()),
                    federation: None,
                    version: None,
                    threshold: None,
                    members: Vec::new(),
                    signers: Vec::new(),
                },
            };
            emit(g.json, &v, || text(&v))
        }
        RosterCommand::Install { file } => {
            let dir = g.data_dir()?;
            let r = rosterfile::read(&file)?;
            // A running node installs it itself (and passes it on to the federation).
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if let Some(done) = crate::remote::install_roster_live(g, &bytes)? {
                return emit(g.json, &view(&file, &r), || {
                    format!(
                        "the running node installed roster version {} of federation {}",
                        done.version, done.federation
                    )
                });
            }
            let cfg = Config::load(&dir.config()).with_context(|| {
                format!(
                    "{} is not an initialized data dir (run `deltafed init --data-dir {}` first)",
                    dir.root().display(),
                    dir.root().display()
                )
            })?;
            let dest = dir.resolve(&cfg.roster);
            rosterfile::install(&dest, &r, &file)?;
            if let Some(me) = &cfg.member
                && r.roster.member(me).is_none()
            {
                eprintln!(
                    "warning: this node's member {me} is not in the installed roster; the node will refuse to start"
                );
            }
            let v = view(&dest, &r);
            emit(g.json, &v, || {
                format!(
                    "installed roster version {} of federation {} at {}",
                    r.roster.version,
                    r.roster.federation,
                    dest.display()
                )
            })
        }
    }
}

fn installed(path: &Path) -> Option<SignedRoster> {
    rosterfile::read_valid(path).ok()
}
