//! `deltafed user ...`: the people who use the dashboard, each with one role, kept by the running
//! node (docs/dashboard.md).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use deltafed_node::admin::api::{Request, UserAdded, UserRemoved, UserView};
use deltafed_node::roles::Role;

use crate::cli::Global;
use crate::output::emit;
use crate::remote::client;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a dashboard user with one role and print its login secret (shown only this once).
    ///
    /// Roles: operator (status, peers, metrics, exchanges, call statistics), publisher (the
    /// catalog, publish from a database source, withdraw), approver (requests, approve, deny,
    /// grant, revoke), auditor (every page read-only, provenance verify), admin (everything). The node keeps only a hash of
    /// the secret. With `--json`: `user`, `role`, `secret`.
    Add {
        /// The user's name, e.g. alice (lower-case letters, digits and '-').
        name: String,
        /// admin, approver, publisher, auditor or operator.
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// The dashboard users and their roles.
    ///
    /// With `--json`: a list of `user`, `role`, `created`.
    List,
    /// Remove a user; their sessions end at once.
    ///
    /// With `--json`: `user`, `removed`.
    Remove {
        /// The user's name.
        name: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

pub fn run(g: &Global, cmd: UserCommand) -> Result<ExitCode> {
    match cmd {
        UserCommand::Add { name, role } => {
            let u: UserAdded = client(g)?.call(&Request::UserAdd { user: name, role })?;
            emit(g.json, &u, || {
                format!(
                    "added {} ({}); login secret, shown only now:\n{}\n(`deltafed status` shows the dashboard's address)",
                    u.user, u.role, u.secret
                )
            })
        }
        UserCommand::List => {
            let list: Vec<UserView> = client(g)?.call(&Request::UserList)?;
            emit(g.json, &list, || {
                if list.is_empty() {
                    return "no users (add one with `deltafed user add NAME --role ROLE`)".into();
                }
                let mut s = format!("{:<24} {:<10} {}\n", "USER", "ROLE", "CREATED");
                for u in &list {
                    s += &format!("{:<24} {:<10} {}\n", u.user, u.role, u.created);
                }
                s
            })
        }
        UserCommand::Remove { name } => {
            let r: UserRemoved = client(g)?.call(&Request::UserRemove { user: name })?;
            emit(g.json, &r, || format!("removed user {}", r.user))
        }
    }
}
