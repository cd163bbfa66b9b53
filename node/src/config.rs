//! The node's configuration: `DIR/deltafed.toml`.
//!
//! Precedence: built-in defaults < the file < `DELTAFED_*` environment variables < command-line
//! flags (the CLI applies those, through [`Config::set`]). Unknown keys are refused so a typo never
//! silently falls back to a default. docs/config.md is generated from these types (their doc
//! comments, `Config::default()` and [`ENVIRONMENT`]), so a key documented here is documented there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltafed_protocol::MemberId;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The keys an environment variable overrides: (key as written in docs/config.md, variable).
/// [`Config::apply_env`] reads exactly these, through [`Config::set`].
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("listen", "DELTAFED_LISTEN"),
    ("log_format", "DELTAFED_LOG_FORMAT"),
    ("gateway.listen", "DELTAFED_GATEWAY_LISTEN"),
    ("metrics.listen", "DELTAFED_METRICS_LISTEN"),
    ("dashboard.listen", "DELTAFED_DASHBOARD_LISTEN"),
];

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's member id; must be listed in the roster. Required.
    #[schemars(with = "Option<String>")]
    pub member: Option<MemberId>,
    /// Multiaddrs to listen on (`deltafed init --listen` writes them). Default: TCP and QUIC on
    /// port 4001, all interfaces.
    pub listen: Vec<String>,
    /// The roster file, relative to the data dir. Default `roster.cbor`.
    pub roster: PathBuf,
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// How long a provider has to answer an access request before it shows as overdue. Default 5d.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub response_deadline: Duration,
    /// Expiry of a grant when none is given. Default 90d.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub default_grant_expiry: Duration,
    /// Largest accepted difference between a peer's clock and ours on signed requests. Default 5m.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub max_clock_skew: Duration,
    /// Longest wait between redials of an unreachable member. Default 30s.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub max_redial_interval: Duration,
    /// Cap on the bytes per second served to one exchange, e.g. 10485760 for 10 MiB/s, so a large
    /// fetch cannot take all of a link shared with record queries. Default: no cap (0).
    pub serve_rate_limit: u64,
    /// Fetched data goes over the data path: its own mutual-TLS connection (AES-GCM) on the
    /// libp2p TCP port, the provider pushing chunks (docs/protocol.md). `false` serves and asks
    /// chunks over libp2p request-response instead, as releases before it did; a requester
    /// falls back to that by itself when a provider does not take the data path. Default true.
    pub direct_data: bool,
    /// Requests from one member handled at once; the rest wait their turn, so no member can
    /// take every handler. Default 16.
    pub member_concurrency: usize,
    /// Requests and gossip messages taken from one member per second, in bursts of up to one
    /// second's worth; past it, that member's further requests wait their turn (the sender sees
    /// a slower answer, never a refusal), so a flood costs the flooding member time and this
    /// node no more handlers, records or disk than this rate allows. A call batch counts once.
    /// Default 10000, at least 1.
    pub member_rate: u32,
    /// Of those, deliveries (access requests, grants, decisions, revocations, receipts,
    /// checkpoints: each one kept and logged here) taken from one member per second, in bursts
    /// of up to one second's worth. Default 100, at least 1.
    pub member_delivery_rate: u32,
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
    /// The application gateway (HTTP API for local applications).
    pub gateway: GatewayConfig,
    /// Sealed archives of the provenance log.
    pub provenance: ProvenanceConfig,
    /// The database's memory: block cache and write buffers.
    pub storage: StorageConfig,
    /// Prometheus metrics and the health probes.
    pub metrics: MetricsConfig,
    /// Database sources (`deltafed source add`): connections, timeouts, schedules.
    pub sources: SourcesConfig,
    /// The dashboard for the people who decide (`deltafed user add`).
    pub dashboard: DashboardConfig,
}

/// The shortest `archive_after` accepted: the law asks for logs kept at least six months
/// (Cybersecurity Law art. 21), and the live log is where a node answers audit queries fastest.
pub const MIN_ARCHIVE_AFTER: Duration = Duration::from_secs(180 * 86_400);

/// `[provenance]`: when the node moves old entries into sealed segment files, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProvenanceConfig {
    /// Entries older than this are archived by the node in the background, once a checkpoint
    /// covering them has been witnessed by a peer. Default and minimum 180 days.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub archive_after: Duration,
    /// Where segment files go, relative to the data dir unless absolute. Default `archive`.
    pub archive_dir: PathBuf,
}

impl Default for ProvenanceConfig {
    fn default() -> Self {
        ProvenanceConfig { archive_after: MIN_ARCHIVE_AFTER, archive_dir: PathBuf::from("archive") }
    }
}

/// `[storage]`: the RocksDB memory the node may use, so its resident size is set here rather
/// than by the load. Sizes are bytes, as an integer or with a unit (`"64MiB"`, `"1GiB"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The block cache shared by every column family (data, index and filter blocks). Default
    /// 64 MiB, at least 4 MiB.
    #[schemars(with = "String")]
    pub block_cache: ByteSize,
    /// All memtables together; writers wait for a flush past it. Default 64 MiB, at least 8 MiB.
    #[schemars(with = "String")]
    pub write_buffers: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { block_cache: ByteSize(64 << 20), write_buffers: ByteSize(64 << 20) }
    }
}

impl StorageConfig {
    /// Below these RocksDB thrashes (a cache smaller than a few blocks per column family, or
    /// memtables flushed after every few writes).
    pub const MIN_BLOCK_CACHE: u64 = 4 << 20;
    pub const MIN_WRITE_BUFFERS: u64 = 8 << 20;
}

/// Durations in the file: read as humantime text (`"5days"`, `"90d"`, `"12h"`, `"1h 30m"`), written
/// in the largest unit that divides them exactly (`"90days"`, not humantime's
/// `"2months 29days 2h 52m 48s"`, whose months are 30.44 days).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let t = String::deserialize(d)?;
        humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!("{t:?} is not a duration such as \"30s\", \"12h\" or \"5days\": {e}"))
        })
    }

    pub fn text(d: Duration) -> String {
        const UNITS: [(&str, u64); 4] = [("days", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)];
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match UNITS.iter().find(|(_, m)| ms != 0 && ms.is_multiple_of(*m)) {
            Some((unit, m)) => format!("{}{unit}", ms / m),
            None => humantime::format_duration(d).to_string(),
        }
    }
}

/// A size in bytes: written as an integer, or as text with a binary unit (`B`, `KiB`, `MiB`,
/// `GiB`); saved with the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    const UNITS: [(&'static str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = (&t[..split], t[split..].trim());
        let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 67108864 or \"64MiB\""))?;
        let mult = if unit.is_empty() {
            1
        } else {
            Self::UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(|| format!("{text:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)"))?
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{text:?} is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (unit, mult) =
            Self::UNITS.iter().find(|(_, m)| self.0 != 0 && self.0.is_multiple_of(*m)).copied().unwrap_or(("B", 1));
        write!(f, "{}{unit}", self.0 / mult)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ByteSize, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size in bytes, such as 67108864 or \"64MiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[gateway]`: where the HTTP API for applications listens, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address and port, e.g. `127.0.0.1:8480` (the default); port 0 takes a free one. Beyond
    /// loopback the node serves only over HTTPS (`tls_cert` and `tls_key`).
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS, relative to the data dir unless absolute; give both it
    /// and `tls_key`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`, relative to the data dir unless absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Calls per second an application may make when `deltafed app add` is given no `--rate`.
    pub default_rate: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8480)),
            tls_cert: None,
            tls_key: None,
            default_rate: 1000,
        }
    }
}

/// `[metrics]`: where Prometheus scrapes the node (`/metrics`) and where probes ask whether it is
/// alive (`/healthz`) and ready (`/readyz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port, e.g. `127.0.0.1:9480` (the default); port 0 takes a free one. The
    /// endpoint is read-only and needs no token; beyond loopback anyone who reaches the port can
    /// read the node's counters (member names included), so restrict it there (a firewall, a
    /// Kubernetes NetworkPolicy).
    #[schemars(with = "String")]
    pub listen: SocketAddr,
}

/// `[dashboard]`: where the web dashboard for people (`deltafed user add`) listens, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Address and port, e.g. `127.0.0.1:8481` (the default); port 0 takes a free one. Beyond
    /// loopback the node starts only with `tls_cert` and `tls_key` (login secrets and session
    /// cookies never cross a network in clear).
    #[schemars(with = "String")]
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS, relative to the data dir unless absolute.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS, relative to the data dir unless absolute.
    pub tls_key: Option<PathBuf>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8481)), tls_cert: None, tls_key: None }
    }
}

/// `[sources]`: how the node uses the databases it publishes from (docs/sources.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// Connections kept open to each source for live record calls. Default 8.
    pub pool_size: usize,
    /// Longest a statement may run before the database cancels it and the caller is told the
    /// source is unavailable (503). Default `5s`.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub statement_timeout: Duration,
    /// Longest the node waits to open a connection, or for a free one from the pool. Default
    /// `5s`.
    #[serde(with = "duration")]
    #[schemars(with = "String")]
    pub connect_timeout: Duration,
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            pool_size: 8,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { listen: SocketAddr::from(([127, 0, 0, 1], 9480)) }
    }
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
            direct_data: true,
            member_concurrency: 16,
            member_rate: 10_000,
            member_delivery_rate: 100,
            member_pending_requests: 100,
            member_grants: 1000,
            member_exchanges: 16,
            member_datasets: 1000,
            dataset_versions: 100,
            gateway: GatewayConfig::default(),
            provenance: ProvenanceConfig::default(),
            storage: StorageConfig::default(),
            metrics: MetricsConfig::default(),
            sources: SourcesConfig::default(),
            dashboard: DashboardConfig::default(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_path_buf(), source })?;
        let mut cfg: Config =
            toml::from_str(&text).map_err(|e| Error::Parse { path: path.to_path_buf(), detail: e.to_string() })?;
        cfg.apply_env()?;
        cfg.check().map_err(|detail| Error::Parse { path: path.to_path_buf(), detail })?;
        Ok(cfg)
    }

    /// Values that parse but cannot be used, each refused with the key to change.
    pub fn check(&self) -> Result<(), String> {
        if self.provenance.archive_after < MIN_ARCHIVE_AFTER {
            return Err(format!(
                "[provenance] archive_after = \"{}\" is below the minimum of 180 days: entries stay in the live log at least six months",
                humantime::format_duration(self.provenance.archive_after)
            ));
        }
        if self.storage.block_cache.0 < StorageConfig::MIN_BLOCK_CACHE {
            return Err(format!(
                "[storage] block_cache = \"{}\" is below the minimum of {}",
                self.storage.block_cache,
                ByteSize(StorageConfig::MIN_BLOCK_CACHE)
            ));
        }
        if self.storage.write_buffers.0 < StorageConfig::MIN_WRITE_BUFFERS {
            return Err(format!(
                "[storage] write_buffers = \"{}\" is below the minimum of {}",
                self.storage.write_buffers,
                ByteSize(StorageConfig::MIN_WRITE_BUFFERS)
            ));
        }
        if self.member_rate == 0 || self.member_delivery_rate == 0 {
            return Err("member_rate and member_delivery_rate must be at least 1 (per second)".into());
        }
        if !(1..=256).contains(&self.sources.pool_size) {
            return Err(format!("[sources] pool_size = {} must be 1 to 256", self.sources.pool_size));
        }
        if self.sources.statement_timeout.is_zero() || self.sources.connect_timeout.is_zero() {
            return Err("[sources] statement_timeout and connect_timeout must be above zero".into());
        }
        Ok(())
    }

    /// The variables of [`ENVIRONMENT`] that are set override the file.
    pub fn apply_env(&mut self) -> Result<(), Error> {
        self.apply_vars(|name| std::env::var(name).ok())
    }

    /// [`Config::apply_env`] with the variables looked up by `var` (tests pass a map).
    pub fn apply_vars(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        for &(key, name) in ENVIRONMENT {
            if let Some(value) = var(name) {
                self.set(key, &value).map_err(|detail| Error::Env { var: name, detail })?;
            }
        }
        Ok(())
    }

    /// Sets one of the keys of [`ENVIRONMENT`] from text, as an environment variable or a flag of
    /// `deltafed run` gives it: `listen` takes comma-separated multiaddrs, the `*.listen` keys an
    /// address:port. The error says what the value should look like.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let socket = |example: &str| {
            value
                .trim()
                .parse::<SocketAddr>()
                .map_err(|e| format!("{value:?} is not an address:port such as {example} ({e})"))
        };
        match key {
            "listen" => {
                self.listen = value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            }
            "log_format" => {
                self.log_format = match value {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(format!("{other:?} is not text or json")),
                };
            }
            "gateway.listen" => self.gateway.listen = socket("127.0.0.1:8480")?,
            "metrics.listen" => self.metrics.listen = socket("127.0.0.1:9480")?,
            "dashboard.listen" => self.dashboard.listen = socket("127.0.0.1:8481")?,
            other => return Err(format!("{other} cannot be set this way; set it in deltafed.toml")),
        }
        Ok(())
    }

    /// The file's JSON Schema: every key, with its doc comment here as its description
    /// (docs/config.md is made from it and from `Config::default()`).
    pub fn schema() -> serde_json::Value {
        schemars::schema_for!(Config).to_value()
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

    /// The annotated example operators start from stays a valid configuration as keys change.
    #[test]
    fn the_deploy_example_is_a_valid_config() {
        let text = include_str!("../../deploy/deltafed.toml.example");
        let cfg: Config = toml::from_str(text).expect("deploy/deltafed.toml.example parses");
        cfg.check().expect("deploy/deltafed.toml.example passes the checks");
        assert_eq!(cfg.dashboard.listen.to_string(), "127.0.0.1:8481");
        assert!(cfg.direct_data);
    }

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

    #[test]
    fn member_rates_default_and_refuse_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        let d = Config::default();
        assert_eq!((d.member_rate, d.member_delivery_rate), (10_000, 100));
        std::fs::write(&path, "member = \"anhui\"\nmember_delivery_rate = 5\n").expect("write");
        assert_eq!(Config::load(&path).expect("loads").member_delivery_rate, 5);
        for key in ["member_rate", "member_delivery_rate"] {
            std::fs::write(&path, format!("member = \"anhui\"\n{key} = 0\n")).expect("write");
            let err = Config::load(&path).expect_err("a rate of 0").to_string();
            assert!(err.contains("at least 1"), "{err}");
        }
    }

    #[test]
    fn gateway_section_round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        let mut cfg = Config { member: Some("anhui".parse().expect("valid")), ..Config::default() };
        cfg.gateway.listen = "0.0.0.0:8480".parse().expect("addr");
        cfg.gateway.tls_cert = Some("gateway-cert.pem".into());
        cfg.gateway.tls_key = Some("gateway-key.pem".into());
        cfg.save(&path).expect("saves");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("[gateway]") && text.contains("listen = \"0.0.0.0:8480\""), "{text}");
        assert_eq!(Config::load(&path).expect("loads"), cfg);
        std::fs::write(&path, "member = \"anhui\"\n[gateway]\nlisten = \"127.0.0.1:0\"\nport = 1\n").expect("write");
        let err = Config::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("port"), "{err}");
        std::fs::write(&path, "member = \"anhui\"\n[gateway]\nlisten = \"localhost\"\n").expect("write");
        assert!(Config::load(&path).is_err(), "an address without a port is refused");
        let defaults = Config::default().gateway;
        assert_eq!(defaults.listen.to_string(), "127.0.0.1:8480");
        assert_eq!(defaults.default_rate, 1000);
    }

    #[test]
    fn provenance_and_storage_sections_parse_and_refuse_unsafe_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        let cfg = Config { member: Some("anhui".parse().expect("valid")), ..Config::default() };
        cfg.save(&path).expect("saves");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("[storage]") && text.contains("block_cache = \"64MiB\""), "{text}");
        assert_eq!(Config::load(&path).expect("loads"), cfg);
        assert_eq!(cfg.provenance.archive_after, Duration::from_secs(180 * 86_400));
        assert_eq!(cfg.provenance.archive_dir, PathBuf::from("archive"));

        let load = |body: &str| {
            std::fs::write(&path, format!("member = \"anhui\"\n{body}")).expect("write");
            Config::load(&path)
        };
        let c = load("[provenance]\narchive_after = \"365d\"\narchive_dir = \"/srv/archive\"\n[storage]\nblock_cache = \"1GiB\"\nwrite_buffers = 33554432\n")
            .expect("loads");
        assert_eq!(c.provenance.archive_after, Duration::from_secs(365 * 86_400));
        assert_eq!(c.storage.block_cache, ByteSize(1 << 30));
        assert_eq!(c.storage.write_buffers, ByteSize(32 << 20));
        let err = load("[provenance]\narchive_after = \"30d\"\n").expect_err("too short").to_string();
        assert!(err.contains("archive_after") && err.contains("180 days"), "{err}");
        let err = load("[storage]\nblock_cache = \"1MiB\"\n").expect_err("too small").to_string();
        assert!(err.contains("block_cache") && err.contains("4MiB"), "{err}");
        let err = load("[storage]\nwrite_buffers = \"64 MB\"\n").expect_err("unknown unit").to_string();
        assert!(err.contains("unknown unit"), "{err}");
        let err = load("[provenance]\narchive_every = \"1h\"\n").expect_err("unknown key").to_string();
        assert!(err.contains("archive_every"), "{err}");
        assert_eq!(ByteSize::parse(" 64 MiB ").expect("parses"), ByteSize(64 << 20));
        assert_eq!(ByteSize(1536).to_string(), "1536B");
        assert_eq!(ByteSize(3 << 10).to_string(), "3KiB");
    }

    #[test]
    fn metrics_section_defaults_to_loopback_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        assert_eq!(Config::default().metrics.listen.to_string(), "127.0.0.1:9480");
        let mut cfg = Config { member: Some("anhui".parse().expect("valid")), ..Config::default() };
        cfg.metrics.listen = "0.0.0.0:9480".parse().expect("addr");
        cfg.save(&path).expect("saves");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("[metrics]") && text.contains("listen = \"0.0.0.0:9480\""), "{text}");
        assert_eq!(Config::load(&path).expect("loads"), cfg);
        std::fs::write(&path, "member = \"anhui\"\n[metrics]\npath = \"/m\"\n").expect("write");
        let err = Config::load(&path).expect_err("unknown key").to_string();
        assert!(err.contains("path"), "{err}");
    }

    #[test]
    fn every_environment_variable_overrides_its_key_and_bad_values_name_the_variable() {
        let vars: std::collections::HashMap<&str, &str> = [
            ("DELTAFED_LISTEN", "/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/udp/1/quic-v1"),
            ("DELTAFED_LOG_FORMAT", "json"),
            ("DELTAFED_GATEWAY_LISTEN", "127.0.0.1:1"),
            ("DELTAFED_METRICS_LISTEN", "127.0.0.1:2"),
            ("DELTAFED_DASHBOARD_LISTEN", "127.0.0.1:3"),
        ]
        .into();
        assert_eq!(vars.len(), ENVIRONMENT.len(), "a sample value per variable");
        let mut cfg = Config::default();
        cfg.apply_vars(|name| vars.get(name).map(|v| v.to_string())).expect("applies");
        assert_eq!(cfg.listen, ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"]);
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.gateway.listen.to_string(), "127.0.0.1:1");
        assert_eq!(cfg.metrics.listen.to_string(), "127.0.0.1:2");
        assert_eq!(cfg.dashboard.listen.to_string(), "127.0.0.1:3");
        // Nothing set: nothing changes.
        let mut same = Config::default();
        same.apply_vars(|_| None).expect("applies");
        assert_eq!(same, Config::default());
        let err = Config::default()
            .apply_vars(|name| (name == "DELTAFED_METRICS_LISTEN").then(|| "localhost".to_string()))
            .expect_err("no port")
            .to_string();
        assert!(err.contains("DELTAFED_METRICS_LISTEN") && err.contains("127.0.0.1:9480"), "{err}");
        assert!(Config::default().set("roster", "x").is_err(), "only the listed keys are set from text");
    }

    #[test]
    fn durations_are_written_in_whole_units_and_read_as_humantime() {
        assert_eq!(duration::text(Duration::from_secs(90 * 86_400)), "90days");
        assert_eq!(duration::text(Duration::from_secs(300)), "5m");
        assert_eq!(duration::text(Duration::from_secs(5400)), "90m");
        assert_eq!(duration::text(Duration::from_millis(1500)), "1s 500ms");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deltafed.toml");
        let cfg = Config { member: Some("anhui".parse().expect("valid")), ..Config::default() };
        cfg.save(&path).expect("saves");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("default_grant_expiry = \"90days\""), "{text}");
        assert!(text.contains("archive_after = \"180days\""), "{text}");
        std::fs::write(&path, "member = \"anhui\"\nresponse_deadline = \"1h 30m\"\n").expect("write");
        assert_eq!(Config::load(&path).expect("loads").response_deadline, Duration::from_secs(5400));
        std::fs::write(&path, "member = \"anhui\"\nresponse_deadline = \"soon\"\n").expect("write");
        let err = Config::load(&path).expect_err("not a duration").to_string();
        assert!(err.contains("response_deadline") && err.contains("soon"), "{err}");
    }
}
