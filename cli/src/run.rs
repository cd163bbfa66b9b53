//! `deltafed run`: the node in the foreground until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use deltafed_node::config::LogFormat;
use deltafed_node::{Config, Multiaddr, node};
use tracing_subscriber::EnvFilter;

use crate::cli::Global;

/// The settings an operator overrides for one run. Each wins over the environment variable and
/// the file key of the same setting ([`FLAGS`] names the key; docs/config.md shows both).
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// Listen on this multiaddr instead of the configured ones (repeatable, or comma-separated).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub listen: Vec<Multiaddr>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Where the application gateway listens (address:port; port 0 takes a free one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub gateway_listen: Option<SocketAddr>,
    /// Where /metrics, /healthz and /readyz are served (address:port; port 0 takes a free one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    /// Where the dashboard listens (address:port; port 0 takes a free one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dashboard_listen: Option<SocketAddr>,
}

/// Each flag of [`RunArgs`] and the config key it overrides (docs/config.md's flag column).
pub const FLAGS: &[(&str, &str)] = &[
    ("listen", "--listen"),
    ("log_format", "--log-format"),
    ("gateway.listen", "--gateway-listen"),
    ("metrics.listen", "--metrics-listen"),
    ("dashboard.listen", "--dashboard-listen"),
];

impl RunArgs {
    /// The flags given, as (key, value) for [`Config::set`].
    fn overrides(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.listen.is_empty() {
            let all: Vec<String> = self.listen.iter().map(ToString::to_string).collect();
            out.push(("listen", all.join(",")));
        }
        if let Some(f) = &self.log_format {
            out.push(("log_format", f.clone()));
        }
        if let Some(a) = self.gateway_listen {
            out.push(("gateway.listen", a.to_string()));
        }
        if let Some(a) = self.metrics_listen {
            out.push(("metrics.listen", a.to_string()));
        }
        if let Some(a) = self.dashboard_listen {
            out.push(("dashboard.listen", a.to_string()));
        }
        out
    }

    /// Applies the flags given over `config` (which already holds the file and the environment).
    pub fn apply(&self, config: &mut Config) -> Result<()> {
        for (key, value) in self.overrides() {
            let flag = FLAGS.iter().find(|(k, _)| *k == key).map_or(key, |(_, f)| *f);
            config.set(key, &value).map_err(|e| anyhow::anyhow!("{flag} is invalid: {e}"))?;
        }
        Ok(())
    }
}

pub fn run(g: &Global, args: RunArgs) -> Result<ExitCode> {
    let dir = g.data_dir()?;
    if !dir.config().exists() {
        anyhow::bail!(
            "{} is not an initialized data dir (run `deltafed init --data-dir {} --member ID` first)",
            dir.root().display(),
            dir.root().display()
        );
    }
    let mut config = Config::load(&dir.config())?;
    args.apply(&mut config)?;
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(args: &[&str]) -> RunArgs {
        let mut all = vec!["deltafed", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).map(|c| c.command) {
            Ok(Command::Run(a)) => a,
            other => panic!("not a run command: {other:?}"),
        }
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        // The file's values, then the environment's over them (as `Config::load` applies it).
        let mut cfg = Config::default();
        cfg.metrics.listen = "127.0.0.1:1".parse().expect("addr");
        cfg.gateway.listen = "127.0.0.1:2".parse().expect("addr");
        cfg.apply_vars(|v| (v == "DELTAFED_METRICS_LISTEN").then(|| "127.0.0.1:3".to_string())).expect("env");
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:3");
        // No flag: nothing changes.
        run_args(&[]).apply(&mut cfg).expect("applies");
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:3");
        assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:2");
        run_args(&[
            "--metrics-listen",
            "127.0.0.1:4",
            "--gateway-listen",
            "127.0.0.1:5",
            "--log-format",
            "json",
            "--listen",
            "/ip4/127.0.0.1/tcp/6,/ip4/127.0.0.1/udp/6/quic-v1",
        ])
        .apply(&mut cfg)
        .expect("applies");
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:4");
        assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:5");
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.listen, ["/ip4/127.0.0.1/tcp/6", "/ip4/127.0.0.1/udp/6/quic-v1"]);
    }

    #[test]
    fn every_flag_names_a_key_the_environment_can_set_too() {
        let cmd = <Cli as clap::CommandFactory>::command();
        let run = cmd.find_subcommand("run").expect("run");
        let longs: Vec<String> = run
            .get_arguments()
            .filter(|a| !a.is_global_set())
            .filter_map(|a| a.get_long())
            .map(|l| format!("--{l}"))
            .collect();
        assert_eq!(longs.len(), FLAGS.len(), "{longs:?}");
        for (key, flag) in FLAGS {
            assert!(longs.iter().any(|l| l == flag), "{flag} is not a flag of run");
            assert!(deltafed_node::config::ENVIRONMENT.iter().any(|(k, _)| k == key), "{key} has no variable");
        }
        assert!(Cli::try_parse_from(["deltafed", "run", "--metrics-listen", "localhost"]).is_err());
        assert!(Cli::try_parse_from(["deltafed", "run", "--log-format", "yaml"]).is_err());
    }
}
