//! The node's configuration: `DIR/deltafed.toml`.
//!
//! Precedence: built-in defaults < the file < `DELTAFED_*` environment variables < command-line
//! flags (the CLI applies those). Unknown keys are refused so a typo never silently falls back to a
//! default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use deltafed_protocol::MemberId;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is invalid: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("cannot write config {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("environment variable {var} is invalid: {detail}")]
    Env { var: &'static str, detail: String },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's member id; must be listed in the roster. Required.
    pub member: Option<MemberId>,
    /// Multiaddrs to listen on. Default: TCP and QUIC on port 4001, all interfaces.
    pub listen: Vec<String>,
    /// The roster file, relative to the data dir. Default `roster.cbor`.
    pub roster: PathBuf,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// How long a provider has to answer an access request before it shows as overdue. Default 5d.
    #[serde(with = "humantime_serde")]
    pub response_deadline: Duration,
    /// Expiry of a grant when none is given. Default 90d.
    #[serde(with = "humantime_serde")]
    pub default_grant_expiry: Duration,
    /// Largest accepted difference between a peer's clock and ours on signed requests. Default 5m.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Longest wait between redials of an unreachable member. Default 30s.
    #[serde(with = "humantime_serde")]
    pub max_redial_interval: Duration,
    /// Cap on the bytes per second served to one exchange, e.g. 10485760 for 10 MiB/s, so a large
    /// fetch cannot take all of a link shared with record queries. Default: no cap (0).
    pub serve_rate_limit: u64,
    /// Requests from one member handled at once; the rest wait their turn, so no member can
    /// take every handler. Default 16.
    pub member_concurrency: usize,
    /// Undecided access requests kept from one member; past it, its new requests are refused
    /// until some are decided. Default 100.
    pub member_pending_requests: usize,
    /// Grants held from one provider (unsolicited deliveries included); past it, new ones are
    /// refused. Default 1000.
    pub member_grants: usize,
    /// Exchanges one requester may have open here at once; a new one past it closes that
    /// requester's oldest (never another member's). Default 16.
    pub member_exchanges: usize,
    /// Datasets kept per publisher in the catalog; a manifest for one more is rejected.
    /// Default 1000.
    pub member_datasets: usize,
    /// Versions kept per dataset; older manifests are dropped as newer ones arrive. Default 100.
    pub dataset_versions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            member: None,
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into(), "/ip4/0.0.0.0/udp/4001/quic-v1".into()],
            roster: PathBuf::from("roster.cbor"),
            log_format: LogFormat::Text,
            response_deadline: Duration::from_secs(5 * 86_400),
            default_grant_expiry: Duration::from_secs(90 * 86_400),
            max_clock_skew: Duration::from_secs(300),
            max_redial_interval: Duration::from_secs(30),
            serve_rate_limit: 0,
            member_concurrency: 16,
            member_pending_requests: 100,
            member_grants: 1000,
            member_exchanges: 16,
            member_datasets: 1000,
            dataset_versions: 100,
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_path_buf(), detail: e.to_string() })?;
        cfg.apply_env()?;
        Ok(cfg)
    }

    /// `DELTAFED_LISTEN` (comma-separated multiaddrs) and `DELTAFED_LOG_FORMAT` override the file.
    pub fn apply_env(&mut self) -> Result<(), Error> {
        if let Ok(v) = std::env::var("DELTAFED_LISTEN") {
            self.listen = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        }
        if let Ok(v) = std::env::var("DELTAFED_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(Error::Env {
                        var: "DELTAFED_LOG_FORMAT",
                        detail: format!("{other:?} is not text or json"),
                    });
                }
            };
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string_pretty(self)
            .map_err(|e| Error::Parse { path: path.to_path_buf(), detail: e.to_string() })?;
        let text = format!("# deltafed node configuration. Unknown keys are refused.\n{text}");
        std::fs::write(path, text).map_err(|source| Error::Write { path: path.to_path_buf(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        let cfg = Config { member: Some("anhui".parse().expect("valid")), ..Config::default() };
        cfg.save(&path).expect("saves");
        assert_eq!(Config::load(&path).expect("loads"), cfg);
        std::fs::write(&path, "member = \"anhui\"\nlisten_on = []\n").expect("write");
        let err = Config::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("listen_on"), "{err}");
        std::fs::write(&path, "member = \"anhui\"\nresponse_deadline = \"2d\"\n").expect("write");
        assert_eq!(Config::load(&path).expect("loads").response_deadline, Duration::from_secs(2 * 86_400));
    }
}
