//! Configuration: `algobanana.toml` in the data dir, parsed raw
//! ([`raw`], serde with `deny_unknown_fields`) and then validated into an
//! immutable [`Config`] ([`validate`]), which collects every error at once.

pub mod raw;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use crate::domain::ids::{PluginName, RouteName};

pub use validate::{ConfigError, load, parse};

/// The config file's name inside the data dir.
pub const CONFIG_FILE: &str = "algobanana.toml";

/// Default listen address: loopback only (Local mode).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8700";

/// 64 KiB: TradingView alerts are well under 4 KiB; the cap bounds memory
/// per request and what a plugin receives.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// Default bound of the intake queue (`server.max_pending_alerts`): at the
/// default body cap, at most 64 MiB of bodies waiting.
pub const DEFAULT_MAX_PENDING_ALERTS: usize = 1024;

/// A validated configuration. Immutable once built.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (for error messages).
    pub path: PathBuf,
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Plugins by name, in file order.
    pub plugins: IndexMap<PluginName, PluginConfig>,
    /// Routes by name, in file order.
    pub routes: IndexMap<RouteName, RouteConfig>,
    /// Secret sources by name, with the hosts each may be sent to (`None`:
    /// any host in the using plugin's `http` grant).
    pub secrets: IndexMap<String, (SecretSource, Option<Vec<String>>)>,
    /// Where notifications go.
    pub notifications: Vec<NotificationConfig>,
    /// The risk rails.
    pub risk: crate::trading::risk::RiskLimits,
    /// Intake and order semantics.
    pub trading: TradingConfig,
    /// The audit log's retention.
    pub audit: AuditConfig,
}

/// `[audit]`: the retention policy the running host applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditConfig {
    /// Events older than this many days are archived and removed once a
    /// day (`None`: kept forever).
    pub retention_days: Option<u32>,
    /// Where the archives go: absolute, or relative to the data dir.
    pub archive_dir: PathBuf,
}

/// One `[[notifications]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationConfig {
    /// The notifier plugin.
    pub plugin: PluginName,
    /// Which kinds: `fill`, `rejection`, `error`, `kill_switch`.
    pub on: Vec<String>,
    /// Only these routes (`None`: every route).
    pub routes: Option<Vec<String>>,
    /// The notifier's settings, a JSON object.
    pub settings: serde_json::Value,
    /// At most this many notifications a minute go out one by one; the
    /// rest of the minute's are told in one summary at its end (`None`: no
    /// limit). Chat services limit webhooks (Discord 30 a minute, a
    /// Telegram group 20), and a burst of fills past that would be
    /// refused with 429s, retried, and dropped.
    pub max_per_minute: Option<u32>,
}

/// The default of `[[notifications]] max_per_minute`.
pub const DEFAULT_NOTIFICATIONS_PER_MINUTE: u32 = 20;

/// `[trading]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradingConfig {
    /// The dedupe window for repeated identical alerts.
    pub dedupe_window: Duration,
    /// The oldest payload timestamp accepted (`None`: not checked).
    pub max_signal_age: Option<Duration>,
    /// How long a webhook waits for the result before answering 202.
    pub response_budget: Duration,
    /// How often to reconcile with the brokers (`None`: only at start).
    pub reconcile_interval: Option<Duration>,
    /// What a reconciliation does when a broker lists a working order this
    /// host never sent.
    pub on_drift: DriftPolicy,
    /// How long after an order was sent a broker's "no such order" is not
    /// yet taken to mean it was never placed.
    pub not_found_grace: Duration,
}

impl Default for TradingConfig {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(60),
            max_signal_age: Some(Duration::from_secs(300)),
            response_budget: Duration::from_millis(2500),
            reconcile_interval: Some(Duration::from_secs(300)),
            on_drift: DriftPolicy::ReduceOnly,
            not_found_grace: Duration::from_secs(30),
        }
    }
}

/// `[trading] on_drift`: what unexplained activity in a broker account (a
/// working order this host never sent) does, besides its `order.drift`
/// event and its notification. Each such order does it once: the order is
/// remembered (`state.db`, `drift_seen`), so an operator who looked and
/// released the kill switch is not overruled by the next sweep; a new
/// unexplained order throws it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftPolicy {
    /// Recorded and notified only.
    Report,
    /// The kill switch goes to `reduce_only` (exits stay possible) unless
    /// it is stricter already: the default, per docs/trading.md §11.
    ReduceOnly,
    /// The kill switch goes `on`: nothing reaches a broker.
    Stop,
}

impl DriftPolicy {
    /// The configured name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::ReduceOnly => "reduce_only",
            Self::Stop => "stop",
        }
    }
}

/// Where a secret's value comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// The value from the config file.
    Value(secrecy::SecretString),
    /// The value in the encrypted vault (`DATA_DIR/vault.abv`).
    Vault,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env(v) => write!(f, "Env({v})"),
            Self::Value(_) => f.write_str("Value(REDACTED)"),
            Self::Vault => f.write_str("Vault"),
        }
    }
}

/// One `http` grant entry: `scheme://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or IP literal; `*.example.com` matches
    /// subdomains (not the apex).
    pub host: String,
    /// The port (the scheme's default when not written).
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]`; paths, queries, user info and bare
    /// wildcards are refused.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme; expected https://host or http://host:port"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(format!("`{text}`: the scheme must be http or https")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{text}`: expected only scheme://host[:port], without a path, query or user"
            ));
        }
        let bad_port = |p: &str| format!("`{text}`: `{p}` is not a port (1–65535)");
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unterminated IPv6 literal"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(p))?),
                None if after.is_empty() => (h, default_port),
                None => return Err(format!("`{text}`: unexpected `{after}` after the address")),
            }
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad_port(p))?),
                None => (rest, default_port),
            }
        };
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains('*') {
            return Err(format!(
                "`{text}`: the only wildcard is a `*.` prefix on the host, as in https://*.example.com"
            ));
        }
        Ok(Self { scheme, host, port })
    }

    /// Returns true if and only if `scheme`, `host` and `port` are allowed by this entry.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port != port {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => self.host == host,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{}:{}", self.scheme, host, self.port)
    }
}

/// What a plugin may use beyond `log` and `clock`. Deny by default: no
/// `http` entries means no outbound HTTP, no `secrets` means no secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The digest the operator approved (`sha256:…`), when pinned.
    pub digest: Option<String>,
    /// The private key-value store.
    pub kv: bool,
    /// Most keys in the kv namespace.
    pub kv_max_keys: u64,
    /// Most bytes in the kv namespace.
    pub kv_max_bytes: u64,
    /// Reachable origins.
    pub http: Vec<Origin>,
    /// Loopback addresses allowed.
    pub allow_loopback: bool,
    /// Private, CGNAT and link-local addresses allowed.
    pub allow_private: bool,
    /// Secret names.
    pub secrets: Vec<String>,
    /// Outbound requests per call.
    pub max_requests_per_call: u32,
    /// Request body cap.
    pub max_request_bytes: usize,
    /// Response body cap.
    pub max_response_bytes: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time to the response.
    pub response_timeout: Duration,
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            digest: None,
            kv: true,
            kv_max_keys: 1000,
            kv_max_bytes: 4 << 20,
            http: Vec::new(),
            allow_loopback: false,
            allow_private: false,
            secrets: Vec::new(),
            max_requests_per_call: 8,
            max_request_bytes: 256 * 1024,
            max_response_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
    /// Alerts accepted and not yet finished, at most (the intake queue's
    /// bound); past it new alerts are refused with 503 and Retry-After.
    pub max_pending_alerts: usize,
    /// Local or Cloud.
    pub mode: Mode,
    /// Certificate and key files when HTTPS is served.
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose `X-Forwarded-For` is believed for every
    /// request (a route's own `trusted_proxies` add to these for it).
    pub trusted_proxies: Vec<Cidr>,
}

/// How the host is deployed (`docs/security.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One machine, one operator: the admin API answers loopback peers
    /// only; only the `admin` user exists.
    Local,
    /// Reachable from a network: HTTPS required on any non-loopback
    /// address; several users with roles.
    Cloud,
}

/// PEM files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `algobanana:plugin/rule`.
    Rule,
    /// `algobanana:plugin/broker`.
    Broker,
    /// `algobanana:plugin/notifier`.
    Notifier,
}

impl World {
    /// The world's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Broker => "broker",
            Self::Notifier => "notifier",
        }
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A first-party plugin embedded in the binary (`builtin:NAME`).
    Builtin(String),
    /// A `.wasm` component file (relative paths are from the data dir).
    File(PathBuf),
}

/// One plugin as the operator configured it.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Where the component comes from.
    pub source: PluginSource,
    /// The world it must implement.
    pub world: World,
    /// The version recorded in audit rows.
    pub version: String,
    /// Per-call limits.
    pub limits: Limits,
    /// Capabilities granted.
    pub grant: Grant,
}

/// Per-call limits of a plugin. Every hit is a trap or typed error, audited
/// with the limit's name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for one call, host calls included.
    pub deadline: Duration,
    /// Total bytes of all linear memories of the call's store.
    pub memory_bytes: usize,
    /// Fuel per call; none means fuel metering is off for this plugin.
    pub fuel: Option<u64>,
    /// Largest serialised output (JSON) accepted from a call.
    pub max_output_bytes: usize,
    /// Most order intents one rule call may return.
    pub max_intents: usize,
    /// Log bytes kept per call.
    pub log_bytes_per_call: usize,
    /// Longest log line kept; longer lines are truncated and marked.
    pub log_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 100 ms: a Rust rule takes tens of microseconds; a loop is cut
            // off long before TradingView's 3 s webhook timeout.
            deadline: Duration::from_millis(100),
            // 64 MiB: the largest first-party plugin peaks under 2 MiB.
            memory_bytes: 64 << 20,
            fuel: None,
            max_output_bytes: 64 * 1024,
            max_intents: 32,
            log_bytes_per_call: 4 * 1024,
            log_line_bytes: 1024,
        }
    }
}

/// One route: a webhook, the rule that reads its alerts and the broker that
/// places the orders.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// SHA-256 of the hook token; the token itself is never stored.
    pub hook_token_sha256: [u8; 32],
    /// The rule plugin.
    pub rule: PluginName,
    /// The rule's settings, a JSON object.
    pub rule_config: serde_json::Value,
    /// The broker plugin.
    pub broker: PluginName,
    /// The broker account's settings, a JSON object. The host sets its
    /// `live` key from the route's `live`, so an adapter picks its live or
    /// paper endpoint from what the operator acknowledged, never on its own.
    pub broker_settings: serde_json::Value,
    /// Returns true if and only if the route trades real money.
    pub live: bool,
    /// Every account the route trades: the route's own broker first
    /// (`name = "main"`, size 1), then `[[routes.accounts]]`.
    pub accounts: Vec<AccountConfig>,
    /// Webhook guards beyond the URL token.
    pub guard: HookGuard,
}

/// TradingView's published webhook source addresses.
pub const TRADINGVIEW_IPS: [&str; 4] = ["52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7"];

/// An IP network (`a.b.c.d/n` or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub bits: u8,
}

impl Cidr {
    /// Parses `addr[/bits]`.
    ///
    /// # Errors
    /// What is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, b) = text.split_once('/').map_or((text, None), |(a, b)| (a, Some(b)));
        let addr: std::net::IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("`{text}`: bad prefix length"))?,
        };
        Ok(Self { addr, bits })
    }

    /// Returns true if and only if `ip` is inside.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.bits))
                };
                (u32::from(n) & mask) == (u32::from(a) & mask)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.bits))
                };
                (u128::from(n) & mask) == (u128::from(a) & mask)
            }
            _ => false,
        }
    }
}

/// Webhook guards of one route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookGuard {
    /// Secret name of the body passphrase.
    pub passphrase_secret: Option<String>,
    /// Secret name of the HMAC signature key.
    pub signature_secret: Option<String>,
    /// Allowed sources (`None`: any).
    pub allowed_ips: Option<Vec<Cidr>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Alerts per minute (`None`: unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

/// One broker account of a route.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// Its name in the route (`main` for the route's own broker).
    pub name: String,
    /// The broker plugin.
    pub broker: PluginName,
    /// Its settings (with `live` set by the host).
    pub settings: serde_json::Value,
    /// Quantity multiplier.
    pub size: rust_decimal::Decimal,
}

/// What an operator types to let a route trade real money.
pub const LIVE_ACKNOWLEDGEMENT: &str = "I understand this route places real orders with real money";

/// The hook path for a token.
pub fn hook_path(token: &str) -> String {
    format!("/v1/hooks/{token}")
}
