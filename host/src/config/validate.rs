//! Raw config → validated [`Config`]. Every problem is collected and reported
//! together, each naming the file, the key and what is expected.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

use rust_decimal::Decimal;

use super::Mode;
use super::TradingConfig;
use super::raw::{RawConfig, RawGrant, RawLimits, RawPlugin, RawRisk};
use super::{
    AccountConfig, Cidr, Config, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PENDING_ALERTS, Grant, HookGuard,
    LIVE_ACKNOWLEDGEMENT, Limits, NotificationConfig, Origin, PluginConfig, PluginSource, RouteConfig, SecretSource,
    ServerConfig, TRADINGVIEW_IPS, TlsFiles, World,
};
use crate::domain::ids::{PluginName, RouteName};
use crate::plugins::builtin;
use crate::trading::risk::RiskLimits;

/// 16 MiB: far above any alert; a larger cap only risks memory.
const MAX_BODY_CAP: u64 = 16 << 20;
/// 60 s: a plugin call longer than this blocks alerts behind it.
const MAX_DEADLINE_MS: u64 = 60_000;
/// 4 GiB: the most a 32-bit wasm memory can address.
const MAX_MEMORY_MIB: u64 = 4096;

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}; run `algobanana init --data-dir DIR` to create one")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config {path} is not valid: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// One or more values are invalid.
    #[error("config {path} has {} problem(s):\n{}", .problems.len(), Problems(.problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem: `key: what is wrong; what to do`.
        problems: Vec<String>,
    },
}

struct Problems<'a>(&'a [String]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Reads and validates the config file at `path`.
///
/// # Errors
/// [`ConfigError`] naming the file, the key and what is expected.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text; `path` is used in messages and to resolve relative
/// plugin paths (against its directory).
///
/// # Errors
/// [`ConfigError::Syntax`] or [`ConfigError::Invalid`].
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut p = Vec::new();

    let listen = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        p.push(format!(
            "server.listen: `{listen}` is not an address; expected IP:PORT such as {DEFAULT_LISTEN}"
        ));
        SocketAddr::from(([127, 0, 0, 1], 8700))
    });
    let max_body_bytes = match raw.server.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(n) if (1..=MAX_BODY_CAP).contains(&n) => usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES),
        Some(n) => {
            p.push(format!(
                "server.max_body_bytes: {n} is out of range; expected 1 to {MAX_BODY_CAP}"
            ));
            DEFAULT_MAX_BODY_BYTES
        }
    };

    let max_pending_alerts = match raw.server.max_pending_alerts {
        None => DEFAULT_MAX_PENDING_ALERTS,
        Some(n) if (1..=1_000_000).contains(&n) => usize::try_from(n).unwrap_or(DEFAULT_MAX_PENDING_ALERTS),
        Some(n) => {
            p.push(format!(
                "server.max_pending_alerts: {n} is out of range; expected 1 to 1000000 (alerts accepted and not yet finished)"
            ));
            DEFAULT_MAX_PENDING_ALERTS
        }
    };

    let mode = match raw.server.mode.as_deref() {
        None | Some("local") => Mode::Local,
        Some("cloud") => Mode::Cloud,
        Some(other) => {
            p.push(format!("server.mode: `{other}`; expected \"local\" or \"cloud\""));
            Mode::Local
        }
    };
    let tls = match (&raw.server.tls_cert, &raw.server.tls_key) {
        (Some(c), Some(k)) => Some(TlsFiles {
            cert: base.join(c),
            key: base.join(k),
        }),
        (None, None) => None,
        _ => {
            p.push("server.tls_cert and server.tls_key: set both (PEM files) or neither".into());
            None
        }
    };
    let mut server_proxies = Vec::new();
    for entry in raw.server.trusted_proxies.iter().flatten() {
        match Cidr::parse(entry) {
            Ok(c) if c.bits == 0 => p.push(format!(
                "server.trusted_proxies: `{entry}` trusts every address, so any client could name any source address; list only your reverse proxies"
            )),
            Ok(c) => server_proxies.push(c),
            Err(e) => p.push(format!(
                "server.trusted_proxies: {e}; expected the addresses or CIDRs of your reverse proxies"
            )),
        }
    }
    if mode == Mode::Cloud && tls.is_none() && !listen.ip().is_loopback() {
        p.push(format!(
            "server.mode = \"cloud\" listens on {listen}, which is not loopback, without HTTPS: set server.tls_cert and server.tls_key (PEM files), or listen on 127.0.0.1 behind a TLS proxy (listed in server.trusted_proxies, so the audit names each client)"
        ));
    }

    let defaults = limits(&raw.limits, Limits::default(), "limits", &mut p);

    let mut plugins = IndexMap::new();
    for (name, rp) in &raw.plugins {
        let key = format!("plugins.{name}");
        let Ok(pname) = PluginName::new(name.clone()) else {
            p.push(format!(
                "{key}: plugin names are 1–64 lowercase letters, digits, '-' or '_'"
            ));
            continue;
        };
        if let Some(pc) = plugin(rp, &key, base, defaults, &mut p) {
            plugins.insert(pname, pc);
        }
    }

    let mut routes = IndexMap::new();
    let mut hashes = Vec::new();
    for (i, rr) in raw.routes.iter().enumerate() {
        let key = format!("routes[{i}]");
        let name = RouteName::new(rr.name.clone());
        if name.is_err() {
            p.push(format!(
                "{key}.name: `{}` is not valid; expected 1–64 lowercase letters, digits, '-' or '_'",
                rr.name
            ));
        }
        let hash = hex::decode(&rr.hook_token_sha256)
            .ok()
            .and_then(|h| <[u8; 32]>::try_from(h).ok());
        match hash {
            None => p.push(format!(
                "{key}.hook_token_sha256: expected 64 hex characters (the SHA-256 of the hook token); `algobanana init` writes it"
            )),
            Some(h) if hashes.contains(&h) => {
                p.push(format!("{key}.hook_token_sha256: another route already uses this hook token; give each route its own"))
            }
            Some(h) => hashes.push(h),
        }
        let rule = slot(&plugins, &raw, &rr.rule, World::Rule, &format!("{key}.rule"), &mut p);
        let broker = slot(
            &plugins,
            &raw,
            &rr.broker,
            World::Broker,
            &format!("{key}.broker"),
            &mut p,
        );
        let rule_config = table_json(rr.rule_config.as_ref(), &format!("{key}.rule_config"), &mut p);
        let broker_settings = table_json(rr.broker_settings.as_ref(), &format!("{key}.broker_settings"), &mut p);
        let is_builtin_paper = raw
            .plugins
            .get(&rr.broker)
            .is_some_and(|bp| bp.source == "builtin:paper");
        let live = match (rr.live, is_builtin_paper) {
            (Some(true), true) => {
                p.push(format!(
                    "{key}.live: the built-in paper broker never trades real money; remove `live = true`"
                ));
                false
            }
            (Some(true), false) => {
                if rr.live_acknowledgement.as_deref() != Some(LIVE_ACKNOWLEDGEMENT) {
                    p.push(format!(
                        "{key}.live_acknowledgement: a live route must carry, typed exactly, live_acknowledgement = \"{LIVE_ACKNOWLEDGEMENT}\""
                    ));
                }
                true
            }
            (Some(false), _) => false,
            (None, true) => false,
            // An undefined broker is reported under routes[i].broker.
            (None, false) if !raw.plugins.contains_key(&rr.broker) => false,
            (None, false) => {
                p.push(format!(
                    "{key}.live: broker `{}` is not the built-in paper broker; say what this route trades: `live = false` for a paper or sandbox account, or `live = true` with live_acknowledgement = \"{LIVE_ACKNOWLEDGEMENT}\"",
                    rr.broker
                ));
                false
            }
        };
        let mut broker_settings = broker_settings;
        if let serde_json::Value::Object(m) = &mut broker_settings {
            m.insert("live".into(), serde_json::Value::Bool(live));
        }
        let mut accounts = Vec::new();
        if let Some(b) = &broker {
            accounts.push(AccountConfig {
                name: "main".into(),
                broker: b.clone(),
                settings: broker_settings.clone(),
                size: Decimal::ONE,
            });
        }
        for (j, ra) in rr.accounts.iter().enumerate() {
            let akey = format!("{key}.accounts[{j}]");
            if ra.name.is_empty()
                || ra.name.len() > 32
                || !ra
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || ra.name == "main"
                || rr.accounts[..j].iter().any(|o| o.name == ra.name)
            {
                p.push(format!(
                    "{akey}.name: expected a unique name of 1–32 letters, digits, '-' or '_' (not `main`)"
                ));
            }
            let ab = slot(
                &plugins,
                &raw,
                &ra.broker,
                World::Broker,
                &format!("{akey}.broker"),
                &mut p,
            );
            let paper = raw
                .plugins
                .get(&ra.broker)
                .is_some_and(|bp| bp.source == "builtin:paper");
            if !paper && rr.live.is_none() && raw.plugins.contains_key(&ra.broker) && is_builtin_paper {
                p.push(format!(
                    "{akey}.broker: `{}` is not the built-in paper broker; set the route's `live` (false for paper or sandbox accounts)",
                    ra.broker
                ));
            }
            let mut settings = table_json(ra.broker_settings.as_ref(), &format!("{akey}.broker_settings"), &mut p);
            if let serde_json::Value::Object(m) = &mut settings {
                m.insert("live".into(), serde_json::Value::Bool(live && !paper));
            }
            let size = match &ra.size {
                None => Decimal::ONE,
                Some(toml::Value::Integer(n)) if *n > 0 => Decimal::from(*n),
                Some(toml::Value::String(t)) if t.trim().parse::<Decimal>().is_ok_and(|d| d > Decimal::ZERO) => {
                    t.trim().parse::<Decimal>().unwrap_or(Decimal::ONE)
                }
                Some(_) => {
                    p.push(format!(
                        "{akey}.size: expected a positive multiplier, an integer or a decimal string such as \"0.5\""
                    ));
                    Decimal::ONE
                }
            };
            if let Some(ab) = ab {
                accounts.push(AccountConfig {
                    name: ra.name.clone(),
                    broker: ab,
                    settings,
                    size,
                });
            }
        }
        let mut cidrs = |list: &Option<Vec<String>>, field: &str| -> Option<Vec<Cidr>> {
            list.as_ref().map(|l| {
                let mut out = Vec::new();
                for entry in l {
                    if entry == "tradingview" {
                        out.extend(TRADINGVIEW_IPS.iter().filter_map(|ip| Cidr::parse(ip).ok()));
                        continue;
                    }
                    match Cidr::parse(entry) {
                        // A proxy list that trusts everyone lets any client
                        // name any address, and so pass any allowlist.
                        Ok(c) if c.bits == 0 && field == "trusted_proxies" => p.push(format!(
                            "{key}.{field}: `{entry}` trusts every address, so any client could name any source address; list only your reverse proxies"
                        )),
                        Ok(c) => out.push(c),
                        Err(e) => p.push(format!(
                            "{key}.{field}: {e}; expected addresses, CIDRs or \"tradingview\""
                        )),
                    }
                }
                out
            })
        };
        let allowed_ips = cidrs(&rr.allowed_ips, "allowed_ips");
        let trusted_proxies = cidrs(&rr.trusted_proxies, "trusted_proxies").unwrap_or_default();
        for (field, secret) in [
            ("passphrase_secret", &rr.passphrase_secret),
            ("signature_secret", &rr.signature_secret),
        ] {
            if let Some(sname) = secret
                && !raw.secrets.contains_key(sname)
            {
                p.push(format!(
                    "{key}.{field}: secret `{sname}` is not defined; add [secrets.{sname}] with `vault = true` (after `algobanana secret set {sname}`) or `env = \"VARIABLE\"`"
                ));
            }
        }
        let guard = HookGuard {
            passphrase_secret: rr.passphrase_secret.clone(),
            signature_secret: rr.signature_secret.clone(),
            allowed_ips,
            trusted_proxies,
            rate_limit_per_minute: match rr.rate_limit_per_minute {
                None => Some(120),
                Some(0) => None,
                Some(n) => Some(n),
            },
        };
        if let (Ok(name), Some(h), Some(rule), Some(broker)) = (name, hash, rule, broker) {
            let route = RouteConfig {
                hook_token_sha256: h,
                rule,
                rule_config,
                broker,
                broker_settings,
                live,
                accounts,
                guard,
            };
            if !routes.contains_key(&name) {
                routes.insert(name, route);
            } else {
                p.push(format!(
                    "{key}.name: a route named `{name}` already exists; route names must be unique"
                ));
            }
        }
    }

    let mut secrets = IndexMap::new();
    for (name, rs) in &raw.secrets {
        let key = format!("secrets.{name}");
        if !valid_secret_name(name) {
            p.push(format!(
                "{key}: secret names are 1–64 lowercase letters, digits, '-', '_' or '.'"
            ));
            continue;
        }
        let hosts: Option<Vec<String>> = rs
            .hosts
            .as_ref()
            .map(|h| h.iter().map(|h| h.to_ascii_lowercase()).collect());
        if let Some(h) = &hosts
            && (h.is_empty() || h.iter().any(|h| h.is_empty() || h.contains(['/', ':', '*', ' '])))
        {
            p.push(format!(
                "{key}.hosts: expected host names such as \"paper-api.alpaca.markets\" (no scheme, port or wildcard)"
            ));
        }
        match (&rs.env, &rs.value, rs.vault.unwrap_or(false)) {
            (Some(var), None, false) if !var.is_empty() => {
                secrets.insert(name.clone(), (SecretSource::Env(var.clone()), hosts));
            }
            (None, Some(value), false) if !value.is_empty() => {
                secrets.insert(name.clone(), (SecretSource::Value(value.clone().into()), hosts));
            }
            (None, None, true) => {
                secrets.insert(name.clone(), (SecretSource::Vault, hosts));
            }
            _ => p.push(format!(
                "{key}: set exactly one of `vault = true` (the value set with `algobanana secret set {name}`), `env = \"VARIABLE\"` or `value = \"…\"`"
            )),
        }
    }
    for (name, pc) in &plugins {
        for s in &pc.grant.secrets {
            if !raw.secrets.contains_key(s) {
                p.push(format!(
                    "plugins.{name}.grant.secrets: `{s}` is not defined; add [secrets.{s}] with `vault = true` (after `algobanana secret set {s}`) or `env = \"VARIABLE\"`"
                ));
            }
        }
    }

    let mut notifications = Vec::new();
    for (i, rn) in raw.notifications.iter().enumerate() {
        let key = format!("notifications[{i}]");
        let plugin = slot(
            &plugins,
            &raw,
            &rn.plugin,
            World::Notifier,
            &format!("{key}.plugin"),
            &mut p,
        );
        let on = rn.on.clone().unwrap_or_else(|| {
            ["fill", "rejection", "error", "kill_switch"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        for k in &on {
            if !["fill", "rejection", "error", "kill_switch"].contains(&k.as_str()) {
                p.push(format!(
                    "{key}.on: `{k}` is not a notification kind; expected fill, rejection, error or kill_switch"
                ));
            }
        }
        if let Some(rs) = &rn.routes {
            for r in rs {
                if !raw.routes.iter().any(|rr| rr.name == *r) {
                    p.push(format!("{key}.routes: there is no route `{r}`"));
                }
            }
        }
        let settings = table_json(rn.settings.as_ref(), &format!("{key}.settings"), &mut p);
        let max_per_minute = match rn.max_per_minute {
            None => Some(super::DEFAULT_NOTIFICATIONS_PER_MINUTE),
            Some(0) => None,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n <= 10_000 => Some(n),
                _ => {
                    p.push(format!(
                        "{key}.max_per_minute: {n} is out of range; expected 1 to 10000 notifications a minute, or 0 for no limit"
                    ));
                    None
                }
            },
        };
        if let Some(plugin) = plugin {
            notifications.push(NotificationConfig {
                plugin,
                on,
                routes: rn.routes.clone(),
                settings,
                max_per_minute,
            });
        }
    }
    let risk = risk(&raw.risk, &mut p);
    let d = TradingConfig::default();
    let trading = TradingConfig {
        dedupe_window: match raw.trading.dedupe_window_s {
            None => d.dedupe_window,
            Some(n) if n <= 86_400 => Duration::from_secs(n),
            Some(n) => {
                p.push(format!(
                    "trading.dedupe_window_s: {n} is out of range; expected 0 to 86400"
                ));
                d.dedupe_window
            }
        },
        max_signal_age: match raw.trading.max_signal_age_s {
            None => d.max_signal_age,
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        },
        reconcile_interval: match raw.trading.reconcile_interval_s {
            None => d.reconcile_interval,
            Some(0) => None,
            Some(n) => Some(Duration::from_secs(n)),
        },
        not_found_grace: match raw.trading.not_found_grace_s {
            None => d.not_found_grace,
            Some(n) if n <= 3600 => Duration::from_secs(n),
            Some(n) => {
                p.push(format!(
                    "trading.not_found_grace_s: {n} is out of range; expected 0 to 3600 seconds"
                ));
                d.not_found_grace
            }
        },
        on_drift: match raw.trading.on_drift.as_deref() {
            None => d.on_drift,
            Some("report") => super::DriftPolicy::Report,
            Some("reduce_only") => super::DriftPolicy::ReduceOnly,
            Some("stop") => super::DriftPolicy::Stop,
            Some(other) => {
                p.push(format!(
                    "trading.on_drift: `{other}` is not a policy; expected \"report\", \"reduce_only\" (the default) or \"stop\""
                ));
                d.on_drift
            }
        },
        response_budget: match raw.trading.response_budget_ms {
            None => d.response_budget,
            Some(n) if (10..=60_000).contains(&n) => Duration::from_millis(n),
            Some(n) => {
                p.push(format!(
                    "trading.response_budget_ms: {n} is out of range; expected 10 to 60000"
                ));
                d.response_budget
            }
        },
    };

    let audit = crate::config::AuditConfig {
        retention_days: match raw.audit.retention_days {
            None | Some(0) => None,
            Some(n) if n <= 36_500 => u32::try_from(n).ok(),
            Some(n) => {
                p.push(format!(
                    "audit.retention_days: {n} is out of range; expected 1 to 36500 days, or 0 to keep every event"
                ));
                None
            }
        },
        archive_dir: match raw.audit.archive_dir.as_deref() {
            None => PathBuf::from("archive"),
            Some("") => {
                p.push(
                    "audit.archive_dir: is empty; expected a directory (absolute, or relative to the data dir)".into(),
                );
                PathBuf::from("archive")
            }
            Some(d) => PathBuf::from(d),
        },
    };

    if !p.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: p,
        });
    }
    Ok(Config {
        audit,
        notifications,
        risk,
        trading,
        path: path.to_owned(),
        server: ServerConfig {
            listen,
            max_body_bytes,
            max_pending_alerts,
            mode,
            tls,
            trusted_proxies: server_proxies,
        },
        plugins,
        routes,
        secrets,
    })
}

fn plugin(rp: &RawPlugin, key: &str, base: &Path, defaults: Limits, p: &mut Vec<String>) -> Option<PluginConfig> {
    let world = match rp.world.as_str() {
        "rule" => Some(World::Rule),
        "broker" => Some(World::Broker),
        "notifier" => Some(World::Notifier),
        other => {
            p.push(format!(
                "{key}.world: `{other}` is not a world; expected \"rule\", \"broker\" or \"notifier\""
            ));
            None
        }
    };
    let (source, builtin_version) = match rp.source.strip_prefix("builtin:") {
        Some(name) => match builtin::find(name) {
            Some(b) => (Some(PluginSource::Builtin(name.to_owned())), Some(b.version)),
            None => {
                let known: Vec<&str> = builtin::ALL.iter().map(|b| b.name).collect();
                p.push(format!(
                    "{key}.source: there is no built-in plugin `{name}`; built-ins are {}",
                    known.join(", ")
                ));
                (None, None)
            }
        },
        None if rp.source.trim().is_empty() => {
            p.push(format!(
                "{key}.source: expected `builtin:NAME` or a path to a .wasm component"
            ));
            (None, None)
        }
        None => {
            let path = Path::new(&rp.source);
            (
                Some(PluginSource::File(if path.is_absolute() {
                    path.to_owned()
                } else {
                    base.join(path)
                })),
                None,
            )
        }
    };
    let version = rp
        .version
        .clone()
        .or(builtin_version.map(str::to_owned))
        .unwrap_or_else(|| "unversioned".into());
    if version.is_empty() || version.len() > 64 || version.chars().any(char::is_whitespace) {
        p.push(format!(
            "{key}.version: expected a version such as 1.2.0 (no spaces, at most 64 characters)"
        ));
    }
    let mut limits = limits(&rp.limits, defaults, &format!("{key}.limits"), p);
    let grant = rp
        .grant
        .as_ref()
        .map(|g| grant(g, &format!("{key}.grant"), p))
        .unwrap_or_default();
    // A broker that talks to an API over the network needs more than the
    // 100 ms a pure computation gets; 10 s unless the operator set one.
    if !grant.http.is_empty() && rp.limits.deadline_ms.is_none() {
        limits.deadline = limits.deadline.max(Duration::from_secs(10));
    }
    if world == Some(World::Rule) && (!grant.http.is_empty() || !grant.secrets.is_empty()) {
        p.push(format!(
            "{key}.grant: rules cannot use `http` or `secrets` (only broker and notifier plugins can); remove them"
        ));
    }
    Some(PluginConfig {
        source: source?,
        world: world?,
        version,
        limits,
        grant,
    })
}

/// A `[risk]` limit: an integer or a decimal string, `0` to disable.
fn limit(v: Option<&toml::Value>, default: Option<Decimal>, key: &str, p: &mut Vec<String>) -> Option<Decimal> {
    let parsed = match v {
        None => return default,
        Some(toml::Value::Integer(n)) => Some(Decimal::from(*n)),
        Some(toml::Value::String(s)) => s.trim().parse::<Decimal>().ok(),
        Some(toml::Value::Float(_)) => {
            p.push(format!(
                "risk.{key}: write decimals as strings (\"0.5\"), so they stay exact"
            ));
            return default;
        }
        Some(_) => None,
    };
    match parsed {
        Some(d) if d.is_zero() => None,
        Some(d) if d.is_sign_positive() => Some(d),
        _ => {
            p.push(format!("risk.{key}: expected a positive number (or 0 to disable)"));
            default
        }
    }
}

fn risk(raw: &RawRisk, p: &mut Vec<String>) -> RiskLimits {
    let d = RiskLimits::default();
    let count = |v: Option<u32>, default: Option<u32>| match v {
        None => default,
        Some(0) => None,
        Some(n) => Some(n),
    };
    if let Some(symbols) = &raw.symbols
        && symbols.iter().any(|s| s.trim().is_empty())
    {
        p.push("risk.symbols: empty symbol".into());
    }
    RiskLimits {
        symbols: raw.symbols.clone(),
        max_order_quantity: limit(
            raw.max_order_quantity.as_ref(),
            d.max_order_quantity,
            "max_order_quantity",
            p,
        ),
        max_order_notional: limit(
            raw.max_order_notional.as_ref(),
            d.max_order_notional,
            "max_order_notional",
            p,
        ),
        max_position: limit(raw.max_position.as_ref(), d.max_position, "max_position", p),
        max_orders_per_minute: count(raw.max_orders_per_minute, d.max_orders_per_minute),
        max_orders_per_day: count(raw.max_orders_per_day, d.max_orders_per_day),
        price_band_pct: limit(raw.price_band_pct.as_ref(), d.price_band_pct, "price_band_pct", p),
        max_daily_loss: limit(raw.max_daily_loss.as_ref(), d.max_daily_loss, "max_daily_loss", p),
        trading_hours: raw.trading_hours.as_ref().and_then(|h| hours(h, p)),
    }
}

fn hours(raw: &super::raw::RawHours, p: &mut Vec<String>) -> Option<crate::trading::risk::TradingHours> {
    let minutes = |t: &str, key: &str, p: &mut Vec<String>| -> Option<u16> {
        let parsed = t
            .split_once(':')
            .and_then(|(h, m)| Some((h.parse::<u16>().ok()?, m.parse::<u16>().ok()?)))
            .filter(|(h, m)| *h <= 24 && *m < 60 && *h * 60 + *m <= 24 * 60);
        if parsed.is_none() {
            p.push(format!(
                "risk.trading_hours.{key}: `{t}` is not a time; expected HH:MM such as 09:30"
            ));
        }
        parsed.map(|(h, m)| h * 60 + m)
    };
    if jiff::tz::TimeZone::get(&raw.timezone).is_err() {
        p.push(format!(
            "risk.trading_hours.timezone: `{}` is not a time zone; expected an IANA name such as America/New_York",
            raw.timezone
        ));
    }
    let days: Vec<String> = raw
        .days
        .clone()
        .unwrap_or_else(|| {
            ["mon", "tue", "wed", "thu", "fri"]
                .iter()
                .map(|d| (*d).to_owned())
                .collect()
        })
        .into_iter()
        .map(|d| d.to_ascii_lowercase())
        .collect();
    for d in &days {
        if !["mon", "tue", "wed", "thu", "fri", "sat", "sun"].contains(&d.as_str()) {
            p.push(format!(
                "risk.trading_hours.days: `{d}` is not a day; expected mon, tue, wed, thu, fri, sat or sun"
            ));
        }
    }
    let start = minutes(&raw.start, "start", p)?;
    let end = minutes(&raw.end, "end", p)?;
    if end <= start {
        p.push("risk.trading_hours: `end` must be after `start` (overnight windows: not supported yet)".into());
    }
    Some(crate::trading::risk::TradingHours {
        timezone: raw.timezone.clone(),
        days,
        start_min: start,
        end_min: end,
    })
}

fn valid_secret_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn grant(raw: &RawGrant, key: &str, p: &mut Vec<String>) -> Grant {
    let d = Grant::default();
    let mut http = Vec::new();
    for (i, o) in raw.http.iter().enumerate() {
        match Origin::parse(o) {
            Ok(origin) => http.push(origin),
            Err(e) => p.push(format!("{key}.http[{i}]: {e}")),
        }
    }
    if let Some(digest) = &raw.digest
        && !(digest.len() == 71 && digest.starts_with("sha256:") && digest[7..].chars().all(|c| c.is_ascii_hexdigit()))
    {
        p.push(format!("{key}.digest: expected sha256: and 64 hex digits"));
    }
    let mut bounded = |name: &str, v: Option<u64>, max: u64, default: u64| -> u64 {
        match v {
            None => default,
            Some(n) if (1..=max).contains(&n) => n,
            Some(n) => {
                p.push(format!("{key}.{name}: {n} is out of range; expected 1 to {max}"));
                default
            }
        }
    };
    let max_requests_per_call = bounded(
        "max_requests_per_call",
        raw.max_requests_per_call.map(u64::from),
        64,
        u64::from(d.max_requests_per_call),
    );
    let max_request_bytes = bounded(
        "max_request_bytes",
        raw.max_request_bytes,
        16 << 20,
        d.max_request_bytes as u64,
    );
    let max_response_bytes = bounded(
        "max_response_bytes",
        raw.max_response_bytes,
        64 << 20,
        d.max_response_bytes as u64,
    );
    let kv_max_keys = bounded("kv_max_keys", raw.kv_max_keys, 1_000_000, d.kv_max_keys);
    let kv_max_bytes = bounded("kv_max_bytes", raw.kv_max_bytes, 1 << 30, d.kv_max_bytes);
    let connect = bounded("connect_timeout_ms", raw.connect_timeout_ms, MAX_DEADLINE_MS, 2_000);
    let response = bounded("response_timeout_ms", raw.response_timeout_ms, MAX_DEADLINE_MS, 5_000);
    let mut secrets: Vec<String> = Vec::new();
    for s in &raw.secrets {
        if !secrets.contains(s) {
            secrets.push(s.clone());
        }
    }
    Grant {
        digest: raw.digest.clone(),
        kv: raw.kv.unwrap_or(true),
        kv_max_keys,
        kv_max_bytes,
        http,
        allow_loopback: raw.allow_loopback,
        allow_private: raw.allow_private,
        secrets,
        max_requests_per_call: u32::try_from(max_requests_per_call).unwrap_or(8),
        max_request_bytes: usize::try_from(max_request_bytes).unwrap_or(d.max_request_bytes),
        max_response_bytes: usize::try_from(max_response_bytes).unwrap_or(d.max_response_bytes),
        connect_timeout: Duration::from_millis(connect),
        response_timeout: Duration::from_millis(response),
    }
}

fn limits(raw: &RawLimits, base: Limits, key: &str, p: &mut Vec<String>) -> Limits {
    let mut out = base;
    let mut range = |name: &str, value: Option<u64>, lo: u64, hi: u64| -> Option<u64> {
        let v = value?;
        if (lo..=hi).contains(&v) {
            Some(v)
        } else {
            p.push(format!("{key}.{name}: {v} is out of range; expected {lo} to {hi}"));
            None
        }
    };
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    if let Some(v) = range("deadline_ms", raw.deadline_ms, 1, MAX_DEADLINE_MS) {
        out.deadline = Duration::from_millis(v);
    }
    if let Some(v) = range("memory_mib", raw.memory_mib, 1, MAX_MEMORY_MIB) {
        out.memory_bytes = size(v << 20);
    }
    if let Some(v) = range("fuel", raw.fuel, 0, u64::MAX) {
        out.fuel = (v > 0).then_some(v);
    }
    if let Some(v) = range("max_output_bytes", raw.max_output_bytes, 1024, 16 << 20) {
        out.max_output_bytes = size(v);
    }
    if let Some(v) = range("max_intents", raw.max_intents, 1, 1000) {
        out.max_intents = size(v);
    }
    if let Some(v) = range("log_bytes_per_call", raw.log_bytes_per_call, 0, 1 << 20) {
        out.log_bytes_per_call = size(v);
    }
    if let Some(v) = range("log_line_bytes", raw.log_line_bytes, 16, 64 * 1024) {
        out.log_line_bytes = size(v);
    }
    out
}

fn slot(
    plugins: &IndexMap<PluginName, PluginConfig>,
    raw: &RawConfig,
    name: &str,
    world: World,
    key: &str,
    p: &mut Vec<String>,
) -> Option<PluginName> {
    let pname = PluginName::new(name).ok();
    match pname.as_ref().and_then(|n| plugins.get(n)) {
        Some(pc) if pc.world == world => pname,
        Some(pc) => {
            p.push(format!(
                "{key}: plugin `{name}` is a {} plugin; expected a {} plugin here",
                pc.world.as_str(),
                world.as_str()
            ));
            None
        }
        // Already reported under [plugins.NAME].
        None if raw.plugins.contains_key(name) => None,
        None => {
            let known: Vec<&str> = raw.plugins.keys().map(String::as_str).collect();
            p.push(format!(
                "{key}: plugin `{name}` is not defined; add a [plugins.{name}] table or use one of: {}",
                if known.is_empty() {
                    "(none defined)".to_owned()
                } else {
                    known.join(", ")
                }
            ));
            None
        }
    }
}

fn table_json(table: Option<&toml::Table>, key: &str, p: &mut Vec<String>) -> serde_json::Value {
    let Some(t) = table else {
        return serde_json::Value::Object(serde_json::Map::new());
    };
    // TOML floats are binary: `1e5` or `0.1` would reach a plugin as an
    // f64, which cannot hold every decimal amount exactly, and plugins read
    // money as decimal strings (or integers). Refused here, with the fix,
    // rather than as a broker error on the first order.
    for (k, v) in t {
        floats(v, &format!("{key}.{k}"), p);
    }
    serde_json::to_value(t).unwrap_or_else(|e| {
        p.push(format!("{key}: cannot be expressed as JSON: {e}"));
        serde_json::Value::Object(serde_json::Map::new())
    })
}

/// A problem for every float in `v` (at `key`).
fn floats(v: &toml::Value, key: &str, p: &mut Vec<String>) {
    match v {
        toml::Value::Float(f) => p.push(format!(
            "{key}: {f} is a floating-point number, which cannot hold every decimal amount exactly; write it as a string, e.g. \"{f}\""
        )),
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| floats(v, &format!("{key}.{k}"), p)),
        toml::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| floats(v, &format!("{key}[{i}]"), p)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[plugins.tradingview]
source = "builtin:tradingview"
world = "rule"

[plugins.paper]
source = "builtin:paper"
world = "broker"
limits = { deadline_ms = 250 }

[[routes]]
name = "default"
hook_token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
rule = "tradingview"
broker = "paper"
rule_config = { default_quantity = "1" }
"#;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/data/algobanana.toml"))
    }

    #[test]
    fn a_good_config_validates() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        let paper = c.plugins.get(&PluginName::new("paper").unwrap()).unwrap();
        assert_eq!(paper.limits.deadline, Duration::from_millis(250));
        let route = c.routes.get(&RouteName::new("default").unwrap()).unwrap();
        assert_eq!(route.rule_config["default_quantity"], "1");
    }

    /// A float in a plugin's settings would reach it as an f64 (money is
    /// decimal strings or integers): refused at load, naming the key and
    /// the fix, instead of failing every order later.
    #[test]
    fn floats_in_plugin_settings_are_refused_with_the_fix() {
        let text = GOOD.replace(
            "rule_config = { default_quantity = \"1\" }",
            "rule_config = { default_quantity = \"1\", notional = 250.5 }\nbroker_settings = { initial_cash = 1e5, fees = [0.1, \"0.2\"], nested = { x = 3 } }",
        );
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("3 problem(s)"), "{err}");
        assert!(
            err.contains("routes[0].rule_config.notional: 250.5 is a floating-point number"),
            "{err}"
        );
        assert!(err.contains("write it as a string, e.g. \"250.5\""), "{err}");
        assert!(err.contains("routes[0].broker_settings.initial_cash: 100000"), "{err}");
        assert!(err.contains("routes[0].broker_settings.fees[0]: 0.1"), "{err}");
        // Integers and strings pass.
        let fine = GOOD.replace(
            "rule_config = { default_quantity = \"1\" }",
            "broker_settings = { initial_cash = 100000, currency = \"USD\" }",
        );
        assert!(parse_str(&fine).is_ok());
    }

    #[test]
    fn a_notification_rate_defaults_to_20_a_minute_and_0_lifts_it() {
        let with = |extra: &str| {
            parse_str(&format!(
                "{GOOD}\n[plugins.hook]\nsource = \"builtin:notify-webhook\"\nworld = \"notifier\"\n[[notifications]]\nplugin = \"hook\"\nsettings = {{ url = \"https://example.com/h\" }}\n{extra}"
            ))
        };
        assert_eq!(with("").unwrap().notifications[0].max_per_minute, Some(20));
        assert_eq!(
            with("max_per_minute = 0").unwrap().notifications[0].max_per_minute,
            None
        );
        assert_eq!(
            with("max_per_minute = 5").unwrap().notifications[0].max_per_minute,
            Some(5)
        );
        for bad in ["-1", "10001"] {
            let err = with(&format!("max_per_minute = {bad}")).unwrap_err().to_string();
            assert!(
                err.contains(&format!("notifications[0].max_per_minute: {bad} is out of range")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_drift_policy_defaults_to_reduce_only_and_is_checked() {
        use crate::config::DriftPolicy;
        assert_eq!(parse_str(GOOD).unwrap().trading.on_drift, DriftPolicy::ReduceOnly);
        for (name, policy) in [
            ("report", DriftPolicy::Report),
            ("reduce_only", DriftPolicy::ReduceOnly),
            ("stop", DriftPolicy::Stop),
        ] {
            let c = parse_str(&format!("{GOOD}\n[trading]\non_drift = \"{name}\"\n")).unwrap();
            assert_eq!(c.trading.on_drift, policy);
        }
        let err = parse_str(&format!("{GOOD}\n[trading]\non_drift = \"panic\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trading.on_drift: `panic` is not a policy"), "{err}");
        assert_eq!(
            parse_str(GOOD).unwrap().trading.not_found_grace,
            Duration::from_secs(30)
        );
        let err = parse_str(&format!("{GOOD}\n[trading]\nnot_found_grace_s = 3601\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trading.not_found_grace_s: 3601 is out of range"), "{err}");
    }

    #[test]
    fn the_audit_retention_is_checked() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.audit.retention_days, None, "off by default");
        assert_eq!(c.audit.archive_dir, PathBuf::from("archive"));
        let c = parse_str(&format!(
            "{GOOD}\n[audit]\nretention_days = 2555\narchive_dir = \"/srv/archive\"\n"
        ))
        .unwrap();
        assert_eq!(c.audit.retention_days, Some(2555));
        assert_eq!(c.audit.archive_dir, PathBuf::from("/srv/archive"));
        assert_eq!(
            parse_str(&format!("{GOOD}\n[audit]\nretention_days = 0\n"))
                .unwrap()
                .audit
                .retention_days,
            None
        );
        let err = parse_str(&format!(
            "{GOOD}\n[audit]\nretention_days = 99999\narchive_dir = \"\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("audit.retention_days: 99999 is out of range; expected 1 to 36500"),
            "{err}"
        );
        assert!(err.contains("audit.archive_dir: is empty"), "{err}");
        let err = parse_str(&format!("{GOOD}\n[audit]\nretention = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `retention`"), "{err}");
    }

    #[test]
    fn server_trusted_proxies_are_checked() {
        assert!(
            parse_str(GOOD).unwrap().server.trusted_proxies.is_empty(),
            "none by default"
        );
        let c = parse_str(&format!(
            "{GOOD}\n[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n"
        ))
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        let err = parse_str(&format!(
            "{GOOD}\n[server]\ntrusted_proxies = [\"0.0.0.0/0\", \"proxy.local\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("server.trusted_proxies: `0.0.0.0/0` trusts every address"),
            "{err}"
        );
        assert!(
            err.contains("server.trusted_proxies:") && err.contains("proxy.local"),
            "{err}"
        );
        // A route's own list is held to the same rule.
        let err = parse_str(&GOOD.replace(
            "name = \"default\"\n",
            "name = \"default\"\ntrusted_proxies = [\"::/0\"]\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("trusted_proxies: `::/0` trusts every address"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_line() {
        let err = parse_str(&format!("{GOOD}\n[server]\nlisten_addr = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/data/algobanana.toml"), "{err}");
        assert!(err.contains("unknown field `listen_addr`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = GOOD
            .replace("rule = \"tradingview\"", "rule = \"paper\"")
            .replace("broker = \"paper\"", "broker = \"missing\"")
            .replace("deadline_ms = 250", "deadline_ms = 0");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("3 problem(s)"), "{err}");
        assert!(
            err.contains("routes[0].rule: plugin `paper` is a broker plugin; expected a rule plugin here"),
            "{err}"
        );
        assert!(
            err.contains("routes[0].broker: plugin `missing` is not defined; add a [plugins.missing] table"),
            "{err}"
        );
        assert!(
            err.contains("plugins.paper.limits.deadline_ms: 0 is out of range; expected 1 to 60000"),
            "{err}"
        );
    }

    #[test]
    fn unknown_builtins_and_bad_hashes_are_explained() {
        let text = GOOD.replace("builtin:paper", "builtin:nope").replace(
            "\"0000000000000000000000000000000000000000000000000000000000000000\"",
            "\"xyz\"",
        );
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("plugins.paper.source: there is no built-in plugin `nope`; built-ins are tradingview, paper"),
            "{err}"
        );
        assert!(
            err.contains("routes[0].hook_token_sha256: expected 64 hex characters"),
            "{err}"
        );
    }
}
