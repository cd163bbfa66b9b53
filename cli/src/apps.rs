//! `deltafed app ...`: the local applications that call the gateway, answered by the running
//! node.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use deltafed_node::admin::api::{AppIssued, AppRemoved, AppView, Request};
use deltafed_protocol::DatasetRef;

use crate::cli::Global;
use crate::output::emit;
use crate::remote::client;

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Register an application and print its bearer token (shown only this once).
    ///
    /// The node keeps only a hash of the token: store it now, or get a new one with `deltafed app
    /// rotate`. The application then calls the gateway (`deltafed status` shows its address; see
    /// docs/gateway.md) with `Authorization: Bearer TOKEN`. With `--json`: `app`, `token`,
    /// `datasets`, `rate`.
    Add {
        /// The application's name, e.g. credit-check (lower-case letters, digits and '-').
        name: String,
        /// Datasets it may call, comma-separated MEMBER/DATASET (other members' datasets).
        #[arg(long, value_delimiter = ',', value_name = "MEMBER/DATASET")]
        datasets: Vec<DatasetRef>,
        /// Most calls per second (default: `default_rate` in [gateway] of deltafed.toml, 1000).
        #[arg(long, value_name = "N")]
        rate: Option<u32>,
    },
    /// The applications, their datasets, rates and calls made.
    ///
    /// With `--json`: a list of `app`, `datasets`, `rate`, `created`, `calls` (calls admitted:
    /// a key of a records call, a content download, a catalog listing) and `last_call` (null
    /// before the first). Tokens are never shown again.
    List,
    /// Give an application a new token; the old one is refused from now on.
    ///
    /// With `--json`: `app`, `token`, `datasets`, `rate`, as `app add` prints them.
    Rotate {
        /// The application's name.
        name: String,
    },
    /// Remove an application; its token is refused from now on.
    ///
    /// With `--json`: `app`, `removed`.
    Remove {
        /// The application's name.
        name: String,
    },
}

pub fn run(g: &Global, cmd: AppCommand) -> Result<ExitCode> {
    match cmd {
        AppCommand::Add { name, datasets, rate } => {
            let a: AppIssued = client(g)?.call(&Request::AppAdd { app: name, datasets, rate })?;
            emit(g.json, &a, || {
                let datasets = if a.datasets.is_empty() { "no datasets".to_string() } else { a.datasets.join(", ") };
                format!(
                    "{}\napplication {} may call {datasets} at {} calls/s\nthe token above is shown only now: give it to the application (Authorization: Bearer TOKEN)",
                    a.token, a.app, a.rate
                )
            })
        }
        AppCommand::List => {
            let apps: Vec<AppView> = client(g)?.call(&Request::AppList)?;
            emit(g.json, &apps, || {
                if apps.is_empty() {
                    return "no applications (add one with `deltafed app add NAME --datasets M/D`)".into();
                }
                let mut s =
                    format!("{:<24} {:>8} {:>10}  {:<24}  {}\n", "APP", "RATE/S", "CALLS", "LAST CALL", "DATASETS");
                for a in &apps {
                    s += &format!(
                        "{:<24} {:>8} {:>10}  {:<24}  {}\n",
                        a.app,
                        a.rate,
                        a.calls,
                        a.last_call.as_deref().unwrap_or("never"),
                        if a.datasets.is_empty() { "-".to_string() } else { a.datasets.join(",") }
                    );
                }
                s
            })
        }
        AppCommand::Rotate { name } => {
            let a: AppIssued = client(g)?.call(&Request::AppRotate { app: name })?;
            emit(g.json, &a, || {
                format!("{}\nnew token for {}; the old one is refused from now on (shown only now)", a.token, a.app)
            })
        }
        AppCommand::Remove { name } => {
            let r: AppRemoved = client(g)?.call(&Request::AppRemove { app: name })?;
            emit(g.json, &r, || format!("removed application {}; its token is refused from now on", r.app))
        }
    }
}
