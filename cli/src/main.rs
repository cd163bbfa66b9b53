//! `deltafed`: the one binary. `main` parses arguments, runs the command, and turns an error into
//! one line on stderr and exit code 1 (usage errors exit 2, from clap).

mod apps;
mod audit;
mod cli;
#[cfg(test)]
mod docs;
mod exchange;
mod init;
mod output;
mod remote;
mod roster;
mod run;
mod sources;
mod testnet;
mod users;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::terminal_safe(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
