//! The config file as written: serde types with `deny_unknown_fields`, so a
//! misspelt key is an error, never silently ignored. [`super::validate`]
//! turns this into a [`super::Config`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[limits]`: defaults for every plugin.
    #[serde(default)]
    pub limits: RawLimits,
    /// `[plugins.NAME]`.
    #[serde(default)]
    pub plugins: BTreeMap<String, RawPlugin>,
    /// `[[routes]]`.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Secrets plugins may be granted, by name: where each value comes
    /// from. Until the vault lands (issue 5) this is the operator's config
    /// or environment.
    #[serde(default)]
    pub secrets: BTreeMap<String, RawSecret>,
    /// Where notifications go.
    #[serde(default)]
    pub notifications: Vec<RawNotification>,
    /// The host's risk rails (on by default; see `trading::risk`).
    #[serde(default)]
    pub risk: RawRisk,
    /// Intake and order semantics.
    #[serde(default)]
    pub trading: RawTrading,
    /// The audit log's retention.
    #[serde(default)]
    pub audit: RawAudit,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Archive and remove events older than this many days, once a day,
    /// while the host runs (default 0: keep everything).
    pub retention_days: Option<u64>,
    /// Where the archives go (default `archive` in the data dir).
    pub archive_dir: Option<String>,
}

/// `[risk]`: each limit as an integer or a decimal string; `0` disables it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRisk {
    /// Symbols that may be traded; absent allows any.
    pub symbols: Option<Vec<String>>,
    /// Largest order quantity.
    pub max_order_quantity: Option<toml::Value>,
    /// Largest order notional.
    pub max_order_notional: Option<toml::Value>,
    /// Largest absolute position per symbol.
    pub max_position: Option<toml::Value>,
    /// Orders per minute.
    pub max_orders_per_minute: Option<u32>,
    /// Orders per UTC day.
    pub max_orders_per_day: Option<u32>,
    /// Price band around the reference price, percent.
    pub price_band_pct: Option<toml::Value>,
    /// Realized loss per UTC day after which only reducing orders pass.
    pub max_daily_loss: Option<toml::Value>,
    /// When new positions may be opened.
    pub trading_hours: Option<RawHours>,
}

/// `risk.trading_hours`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHours {
    /// IANA time zone.
    pub timezone: String,
    /// `mon` … `sun` (default Monday to Friday).
    pub days: Option<Vec<String>>,
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM` (exclusive).
    pub end: String,
}

/// `[[routes.accounts]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// A name for audit rows and responses (unique in the route).
    pub name: String,
    /// The broker plugin.
    pub broker: String,
    /// The account's settings.
    #[serde(default)]
    pub broker_settings: Option<toml::Table>,
    /// Quantity multiplier for this account (integer or decimal string; default 1).
    pub size: Option<toml::Value>,
}

/// `[[notifications]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
    /// A notifier plugin.
    pub plugin: String,
    /// Kinds to send (default: fill, rejection, error, kill_switch).
    pub on: Option<Vec<String>>,
    /// Only for these routes.
    pub routes: Option<Vec<String>>,
    /// The notifier's settings.
    #[serde(default)]
    pub settings: Option<toml::Table>,
    /// At most this many a minute, the rest told in one summary (default
    /// 20; 0: no limit).
    pub max_per_minute: Option<i64>,
}

/// `[trading]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrading {
    /// A repeated identical alert within this many seconds places no second order (default 60).
    pub dedupe_window_s: Option<u64>,
    /// Alerts whose payload timestamp is older than this are refused (default 300; 0 disables).
    pub max_signal_age_s: Option<u64>,
    /// Reconcile with every broker this often, in seconds (default 300; 0: only at start).
    pub reconcile_interval_s: Option<u64>,
    /// Answer with the full result when the pipeline finishes within this
    /// many ms, else 202 while it continues (default 2,500: under
    /// TradingView's 3 s timeout).
    pub response_budget_ms: Option<u64>,
    /// A working order at a broker that this host never sent: `report`,
    /// `reduce_only` (default: the kill switch goes reduce-only) or `stop`
    /// (the kill switch goes on).
    pub on_drift: Option<String>,
    /// Seconds after an order was sent during which a broker's "no such
    /// order" is asked again rather than taken as "never placed" (default
    /// 30; 0: at once).
    pub not_found_grace_s: Option<u64>,
}

/// Where a secret's value comes from: exactly one of the two.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    /// An environment variable of the host process.
    pub env: Option<String>,
    /// The value itself (stored in plain text in this file; prefer `env`).
    pub value: Option<String>,
    /// `true`: the value is in the encrypted vault (`algobanana secret set`).
    pub vault: Option<bool>,
    /// Hosts the secret may be sent to in a header (default: every host in
    /// the using plugin's `http` grant).
    pub hosts: Option<Vec<String>>,
}

/// What the operator grants one plugin beyond `log` and `clock`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    /// The component digest (`sha256:…`) this grant was approved for.
    pub digest: Option<String>,
    /// The private key-value store (default true).
    pub kv: Option<bool>,
    /// Origins (`scheme://host[:port]`, `*.` prefix allowed on the host).
    #[serde(default)]
    pub http: Vec<String>,
    /// Allow loopback addresses (tests, local gateways).
    #[serde(default)]
    pub allow_loopback: bool,
    /// Allow private, CGNAT and link-local addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// Secret names (keys of `[secrets]`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Most keys in the plugin's kv namespace (default 1,000).
    pub kv_max_keys: Option<u64>,
    /// Most bytes (keys plus values) in the namespace (default 4 MiB).
    pub kv_max_bytes: Option<u64>,
    /// Outbound requests per call (default 8).
    pub max_requests_per_call: Option<u32>,
    /// Request body cap in bytes (default 256 KiB).
    pub max_request_bytes: Option<u64>,
    /// Response body cap in bytes (default 1 MiB).
    pub max_response_bytes: Option<u64>,
    /// Connect timeout in ms (default 2,000).
    pub connect_timeout_ms: Option<u64>,
    /// Time to the response in ms (default 5,000; never past the call deadline).
    pub response_timeout_ms: Option<u64>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `listen = "127.0.0.1:8700"`.
    pub listen: Option<String>,
    /// `max_body_bytes = 65536`.
    pub max_body_bytes: Option<u64>,
    /// `max_pending_alerts = 1024`: alerts accepted and not yet finished;
    /// past it new alerts get 503 with Retry-After.
    pub max_pending_alerts: Option<u64>,
    /// `mode = "local"` (default) or `"cloud"`.
    pub mode: Option<String>,
    /// PEM certificate chain for HTTPS (relative to the data dir).
    pub tls_cert: Option<String>,
    /// PEM private key for HTTPS (relative to the data dir).
    pub tls_key: Option<String>,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` names
    /// the client of every request: in audit events, refusal throttling,
    /// the Local-mode loopback check and every route's `allowed_ips`.
    pub trusted_proxies: Option<Vec<String>>,
}

/// `[limits]` or `[plugins.NAME.limits]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Wall-clock budget per call in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Memory cap per call in MiB (all memories of the store together).
    pub memory_mib: Option<u64>,
    /// Fuel per call; 0 turns fuel metering off.
    pub fuel: Option<u64>,
    /// Largest serialised output per call.
    pub max_output_bytes: Option<u64>,
    /// Most order intents per rule call.
    pub max_intents: Option<u64>,
    /// Log bytes kept per call.
    pub log_bytes_per_call: Option<u64>,
    /// Longest log line kept.
    pub log_line_bytes: Option<u64>,
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// `builtin:NAME` or a path to a `.wasm` component.
    pub source: String,
    /// `rule` or `broker`.
    pub world: String,
    /// Version recorded in audit rows (builtins know their own).
    pub version: Option<String>,
    /// Overrides of `[limits]`.
    #[serde(default)]
    pub limits: RawLimits,
    /// Capabilities granted beyond `log` and `clock`.
    #[serde(default)]
    pub grant: Option<RawGrant>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route's name.
    pub name: String,
    /// Hex SHA-256 of the hook token.
    pub hook_token_sha256: String,
    /// The rule plugin's name.
    pub rule: String,
    /// The broker plugin's name.
    pub broker: String,
    /// Settings handed to the rule as a JSON object.
    #[serde(default)]
    pub rule_config: Option<toml::Table>,
    /// Settings of the broker account, handed to the broker as a JSON object.
    #[serde(default)]
    pub broker_settings: Option<toml::Table>,
    /// A secret whose value must arrive as the JSON body's `passphrase`
    /// field (removed before the alert is stored or handed to a plugin).
    pub passphrase_secret: Option<String>,
    /// A secret for `X-Algobanana-Signature: t=<unix s>,v1=<hex HMAC-SHA256
    /// of "<t>.<body>">`, checked within 300 s and never accepted twice.
    pub signature_secret: Option<String>,
    /// Source addresses allowed to send (IPs or CIDRs; `"tradingview"` is
    /// TradingView's four published addresses).
    pub allowed_ips: Option<Vec<String>>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Alerts per minute on this hook (default 120; 0 disables).
    pub rate_limit_per_minute: Option<u32>,
    /// More broker accounts the same alert goes to (fan-out), each with its
    /// own size multiplier. The route's own `broker` is the first account.
    #[serde(default)]
    pub accounts: Vec<RawAccount>,
    /// Whether the route trades real money (required for any broker but
    /// the built-in paper one).
    pub live: Option<bool>,
    /// With `live = true`: the exact sentence in [`super::LIVE_ACKNOWLEDGEMENT`].
    pub live_acknowledgement: Option<String>,
}
