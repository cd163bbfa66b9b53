//! The command tree (the command line is a contract, documented in docs/commands.md, which is
//! generated from this tree by `docs.rs`: names, flags and `--json` fields are extended, never
//! renamed) and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use deltafed_node::DataDir;

use crate::{apps, audit, exchange, init, remote, roster, run, sources, testnet, users};

#[derive(Debug, Parser)]
#[command(name = "deltafed", version, about = "A node of the Yangtze River Delta data federation", long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts, before or after its own arguments.
#[derive(Debug, Args)]
pub struct Global {
    /// The node's data directory.
    #[arg(long, global = true, env = "DELTAFED_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print exactly one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    pub fn data_dir(&self) -> Result<DataDir> {
        let dir = self
            .data_dir
            .clone()
            .context("this command needs a data dir: pass --data-dir DIR or set DELTAFED_DATA_DIR")?;
        Ok(DataDir::new(dir))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data dir with a new member key and a config.
    Init(init::InitArgs),
    /// Create, sign, inspect and install the federation roster.
    #[command(subcommand)]
    Roster(roster::RosterCommand),
    /// Set up a local federation for development and tests.
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
    /// Run the node in the foreground until SIGINT or SIGTERM.
    ///
    /// Settings come from DIR/deltafed.toml, then the DELTAFED_* environment variables, then these
    /// flags, each overriding the one before (docs/config.md lists every key).
    Run(run::RunArgs),
    /// This node: member, peer id, federation, listen addresses, connected members.
    Status,
    /// Connected members and their addresses.
    Peers,
    /// Import a file, sign its manifest and announce it to the federation.
    Publish(remote::PublishArgs),
    /// Withdraw one of this node's datasets from every catalog.
    Withdraw {
        /// The dataset id.
        dataset: deltafed_protocol::DatasetId,
        /// Why, for the record.
        #[arg(long, default_value = "withdrawn by the publisher")]
        reason: String,
    },
    /// The verified federation catalog (newest version of each dataset), or one manifest.
    Catalog(remote::CatalogArgs),
    /// Ask a provider for access to one of its datasets.
    Request(exchange::RequestArgs),
    /// Incoming requests (as provider) and outgoing ones with their state (as requester).
    Requests,
    /// Turn an incoming request into a grant.
    Approve(exchange::ApproveArgs),
    /// Refuse an incoming request, with a reason.
    Deny {
        /// The request's id (see `deltafed requests`).
        request_id: deltafed_protocol::RequestId,
        /// Why, for the requester and the record.
        #[arg(long)]
        reason: String,
    },
    /// Grant a member access to one of this member's datasets.
    Grant(exchange::GrantArgs),
    /// Issued and received grants.
    Grants,
    /// Revoke a grant at once (fetches in flight stop too).
    Revoke {
        /// The grant's id (see `deltafed grants`).
        grant_id: deltafed_protocol::GrantId,
        /// Why, for the grantee and the record.
        #[arg(long, default_value = "revoked by the provider")]
        reason: String,
    },
    /// Fetch a dataset under a grant held, verify it and write it atomically.
    Fetch {
        /// MEMBER/DATASET or MEMBER/DATASET@VERSION.
        dataset: deltafed_protocol::DatasetRef,
        /// Where to write the data.
        #[arg(long)]
        out: PathBuf,
    },
    /// The records with a key (or several keys, in one batched call), only the fields granted.
    Query {
        /// MEMBER/DATASET (published with --key-field).
        dataset: deltafed_protocol::DatasetRef,
        /// The key field's value(s) to look up (at most 1000).
        #[arg(required = true, num_args = 1..)]
        keys: Vec<String>,
    },
    /// The provenance log, newest first; `verify` checks it, `export` writes it for auditors.
    Provenance(audit::ProvenanceArgs),
    /// Local applications of the gateway: their datasets, rates and bearer tokens.
    #[command(subcommand)]
    App(apps::AppCommand),
    /// Database connections that datasets are published from (`publish --source`).
    #[command(subcommand)]
    Source(sources::SourceCommand),
    /// People who use the dashboard, each with one role.
    #[command(subcommand)]
    User(users::UserCommand),
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Init(args) => init::run(g, args),
        Command::Roster(cmd) => roster::run(g, cmd),
        Command::Testnet(cmd) => testnet::run(g, cmd),
        Command::Run(a) => run::run(g, a),
        Command::Status => remote::status(g),
        Command::Peers => remote::peers(g),
        Command::Publish(a) => remote::publish(g, a),
        Command::Withdraw { dataset, reason } => remote::withdraw(g, dataset, reason),
        Command::Catalog(a) => remote::catalog(g, a),
        Command::Request(a) => exchange::request(g, a),
        Command::Requests => exchange::requests(g),
        Command::Approve(a) => exchange::approve(g, a),
        Command::Deny { request_id, reason } => exchange::deny(g, request_id, reason),
        Command::Grant(a) => exchange::grant(g, a),
        Command::Grants => exchange::grants(g),
        Command::Revoke { grant_id, reason } => exchange::revoke(g, grant_id, reason),
        Command::Fetch { dataset, out } => exchange::fetch(g, dataset, out),
        Command::Query { dataset, keys } => exchange::query(g, dataset, keys),
        Command::Provenance(a) => audit::run(g, a),
        Command::App(cmd) => apps::run(g, cmd),
        Command::Source(cmd) => sources::run(g, cmd),
        Command::User(cmd) => users::run(g, cmd),
    }
}
