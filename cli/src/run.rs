//! `deltafed run`: the node in the foreground until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::{Context, Result};
use deltafed_node::config::LogFormat;
use deltafed_node::{Config, node};
use tracing_subscriber::EnvFilter;

use crate::cli::Global;

pub fn run(g: &Global) -> Result<ExitCode> {
    let dir = g.data_dir()?;
    if !dir.config().exists() {
        anyhow::bail!(
            "{} is not an initialized data dir (run `deltafed init --data-dir {} --member ID` first)",
            dir.root().display(),
            dir.root().display()
        );
    }
    let config = Config::load(&dir.config())?;
    init_logging(config.log_format);
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(node::run(dir, config, stop_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr; `DELTAFED_LOG` (or `RUST_LOG`) sets the filter, default `info`.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("DELTAFED_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_gossipsub=warn,libp2p_swarm=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
