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
}

/// HTTP server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest accepted webhook body.
    pub max_body_bytes: usize,
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `algobanana:plugin/rule`.
    Rule,
    /// `algobanana:plugin/broker`.
    Broker,
}

impl World {
    /// The world's WIT name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rule => "rule",
            Self::Broker => "broker",
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
    /// The broker account's settings, a JSON object.
    pub broker_settings: serde_json::Value,
}

/// The hook path for a token.
pub fn hook_path(token: &str) -> String {
    format!("/v1/hooks/{token}")
}
