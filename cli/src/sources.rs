//! `deltafed source ...`: the database connections datasets are published from, kept by the
//! running node. Passwords are never printed: the URL is shown with `***` in their place.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use deltafed_node::admin::api::{Request, SourceRemoved, SourceView};

use crate::cli::Global;
use crate::output::emit;
use crate::remote::client;

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// Register a PostgreSQL database (then `deltafed publish --source NAME --table T ...`).
    ///
    /// The password may be in the URL, in a file the node reads at each connection
    /// (--password-file), or in the node's environment (--password-env); it is never printed
    /// or logged. With `--json`: `name`, `url` (password as `***`), `password` (`none`, `url`,
    /// `file:PATH` or `env:VAR`), `created`, `schedules`.
    Add {
        /// The source's name, e.g. registry-db (lower-case letters, digits and '-').
        name: String,
        /// postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?host=/socket/dir]
        #[arg(long)]
        url: String,
        /// A file whose first line is the password (read by the node, at each connection).
        #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// An environment variable of the node's process that holds the password.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// The sources and the scheduled republishes of each.
    ///
    /// With `--json`: a list of `name`, `url`, `password`, `created` and `schedules` (each
    /// `dataset`, `every`, `next`, `last`).
    List,
    /// Remove a source; its schedules end, datasets already published stay.
    ///
    /// With `--json`: `name`, `removed`.
    Remove {
        /// The source's name.
        name: String,
    },
}

pub fn run(g: &Global, cmd: SourceCommand) -> Result<ExitCode> {
    match cmd {
        SourceCommand::Add { name, url, password_file, password_env } => {
            let password_file = match password_file {
                Some(p) => Some(std::path::absolute(&p).with_context(|| format!("cannot resolve {}", p.display()))?),
                None => None,
            };
            let s: SourceView = client(g)?.call(&Request::SourceAdd { name, url, password_file, password_env })?;
            emit(g.json, &s, || format!("added source {} ({}, password: {})", s.name, s.url, s.password))
        }
        SourceCommand::List => {
            let list: Vec<SourceView> = client(g)?.call(&Request::SourceList)?;
            emit(g.json, &list, || {
                if list.is_empty() {
                    return "no sources (add one with `deltafed source add NAME --url postgresql://...`)".into();
                }
                let mut out = format!("{:<20} {:<50} {}\n", "NAME", "URL", "PASSWORD");
                for s in &list {
                    out += &format!("{:<20} {:<50} {}\n", s.name, s.url, s.password);
                    for x in &s.schedules {
                        out += &format!(
                            "  {} every {}, next {}{}\n",
                            x.dataset,
                            x.every,
                            x.next,
                            x.last.as_ref().map(|l| format!(", last: {l}")).unwrap_or_default()
                        );
                    }
                }
                out
            })
        }
        SourceCommand::Remove { name } => {
            let r: SourceRemoved = client(g)?.call(&Request::SourceRemove { name })?;
            emit(g.json, &r, || format!("removed source {}", r.name))
        }
    }
}
