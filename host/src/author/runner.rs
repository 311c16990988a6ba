//! `algobanana plugin test`: runs a rule plugin on alert files, locally, in
//! the sandbox the server uses (the same config validation, registry,
//! precompiled cache, linker, limits and call path), and prints what it
//! returned and its resource use against each limit. Nothing is audited and
//! no order is placed; the plugin's kv namespace lives in a scratch
//! database.

// Timings and percentages for display, not money: floats are fine here.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::config::{self, Limits};
use crate::domain::ids::PluginName;
use crate::plugins::bindings::types as wit;
use crate::plugins::invoke::{CallStats, Returned};
use crate::plugins::{Registry, convert};
use crate::store::StateDb;

/// The name the plugin under test gets in the scratch config.
const NAME: &str = "under-test";

/// What to run and how.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// A `.wasm` component or `builtin:NAME`.
    pub plugin: String,
    /// Alert files, each one call.
    pub alerts: Vec<PathBuf>,
    /// The route's rule config (JSON object text).
    pub config: String,
    /// A JSON file with the account the host would pass to the rule:
    /// `{"positions": [{"symbol", "quantity", "average_price"}], "account":
    /// {"currency", "cash", "equity", "buying_power"}}`.
    pub portfolio: Option<PathBuf>,
    /// The content type of every alert; by default from the extension
    /// (`.json` is `application/json`, anything else `text/plain`).
    pub content_type: Option<String>,
    /// `key = value` lines for `[plugins.NAME.limits]`.
    pub limits: Vec<String>,
    /// A JSON file with the expected output of each alert, in order.
    pub expect: Option<PathBuf>,
    /// Keep the precompiled component and kv here between runs.
    pub data_dir: Option<PathBuf>,
    /// Print one JSON object per alert instead of text.
    pub json: bool,
}

/// Runs `run`; returns the exit code: 0 when every call returned (ok or
/// its WIT error) and matched `--expect`, 1 otherwise.
///
/// # Errors
/// When the plugin cannot be loaded or a file cannot be read: the message
/// says what to fix.
pub async fn run(run: TestRun, out: &mut (dyn Write + Send)) -> anyhow::Result<u8> {
    if run.alerts.is_empty() {
        bail!("give at least one alert file with --alert FILE");
    }
    let expected = match &run.expect {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let v: Value = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not JSON: expected an array with one output per alert",
                    path.display()
                )
            })?;
            match v {
                Value::Array(items) if items.len() == run.alerts.len() => Some(items),
                _ => bail!(
                    "{} must be a JSON array with one expected output per --alert ({} alerts)",
                    path.display(),
                    run.alerts.len()
                ),
            }
        }
    };
    let portfolio = run.portfolio.as_deref().map(read_portfolio).transpose()?;
    let scratch;
    let data_dir = match &run.data_dir {
        Some(d) => d.clone(),
        None => {
            scratch = Scratch::new()?;
            scratch.0.clone()
        }
    };
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (registry, limits, load_time) = load(&run, &data_dir)?;
    let plugin = registry
        .get(&PluginName::new(NAME).context("plugin name")?)
        .context("the plugin was not loaded")?;
    if !run.json {
        writeln!(
            out,
            "plugin {} ({}, {}), loaded in {:.1} ms",
            run.plugin,
            plugin
                .manifest
                .as_ref()
                .map_or("no manifest".to_owned(), |m| format!("{}@{}", m.name, m.version)),
            plugin.digest,
            ms(load_time)
        )?;
    }

    let mut failed = false;
    for (i, path) in run.alerts.iter().enumerate() {
        let body = std::fs::read(path).with_context(|| format!("cannot read alert file {}", path.display()))?;
        let content_type = run.content_type.clone().unwrap_or_else(|| {
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
                "application/json".into()
            } else {
                "text/plain".into()
            }
        });
        let alert = wit::Alert {
            id: uuid::Uuid::now_v7().to_string(),
            received_at: u64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0),
            route: "plugin-test".into(),
            content_type: content_type.clone(),
            body,
        };
        let ex = registry
            .execute_rule(&plugin, &alert, &run.config, portfolio.as_ref())
            .await
            .context("plugin test runs rule plugins only")?;
        let output = ex.output();
        let (outcome, detail) = match &ex.returned {
            Returned::Ok(v) => ("ok", json!(format!("{} order intent(s)", v.len()))),
            Returned::GuestError(e) => ("rule_error", json!(convert::rule_error(e).0)),
            Returned::Trap(cause) => {
                failed = true;
                (cause.code(), json!(cause.describe("plugin")))
            }
        };
        let mismatch = expected.as_ref().and_then(|e| {
            let want = &e[i];
            (*want != output).then(|| want.clone())
        });
        failed |= mismatch.is_some();
        let intents = match &ex.returned {
            Returned::Ok(v) => Some(v.len()),
            _ => None,
        };
        let usage = usage(
            &ex.stats,
            &limits,
            plugin.limits.fuel.is_some() || registry.fuel,
            intents,
        );
        if run.json {
            let line = json!({
                "alert": path.display().to_string(),
                "content_type": content_type,
                "outcome": outcome,
                "detail": detail,
                "output": output,
                "log": ex.stats.log,
                "log_dropped": ex.stats.log_dropped,
                "resources": usage,
                "expected": expected.as_ref().map(|e| e[i].clone()),
                "matches_expected": expected.as_ref().map(|_| mismatch.is_none()),
            });
            writeln!(out, "{line}")?;
        } else {
            print_text(out, path, &content_type, outcome, &detail, &output, &ex.stats, &usage)?;
            if let Some(want) = &mismatch {
                writeln!(out, "  MISMATCH: expected {want}")?;
            } else if expected.is_some() {
                writeln!(out, "  matches the expected output")?;
            }
        }
    }
    Ok(u8::from(failed))
}

/// A portfolio file, with exact decimals (text or bare JSON numbers).
fn read_portfolio(path: &Path) -> anyhow::Result<wit::Portfolio> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Position {
        symbol: String,
        quantity: rust_decimal::Decimal,
        average_price: rust_decimal::Decimal,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Account {
        currency: String,
        cash: rust_decimal::Decimal,
        equity: rust_decimal::Decimal,
        buying_power: rust_decimal::Decimal,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        #[serde(default)]
        positions: Vec<Position>,
        account: Account,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let raw: Raw = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a portfolio: expected {{\"positions\": [{{\"symbol\": \"AAPL\", \"quantity\": \"10\", \"average_price\": \"190\"}}], \"account\": {{\"currency\": \"USD\", \"cash\": \"1000\", \"equity\": \"2900\", \"buying_power\": \"1000\"}}}}",
            path.display()
        )
    })?;
    let d = |v: rust_decimal::Decimal, field: &str| {
        convert::to_wit_decimal(v).map_err(|e| anyhow::anyhow!("{}: `{field}`: {e}", path.display()))
    };
    Ok(wit::Portfolio {
        positions: raw
            .positions
            .into_iter()
            .map(|p| {
                Ok(wit::Position {
                    quantity: d(p.quantity, "quantity")?,
                    average_price: d(p.average_price, "average_price")?,
                    symbol: p.symbol,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        account: wit::Account {
            cash: d(raw.account.cash, "cash")?,
            equity: d(raw.account.equity, "equity")?,
            buying_power: d(raw.account.buying_power, "buying_power")?,
            currency: raw.account.currency,
        },
    })
}

/// Writes the scratch config and loads it through the server's registry.
fn load(run: &TestRun, data_dir: &Path) -> anyhow::Result<(Registry, Limits, Duration)> {
    let source = if run.plugin.starts_with("builtin:") {
        run.plugin.clone()
    } else {
        let path = Path::new(&run.plugin);
        let abs = std::fs::canonicalize(path).with_context(|| format!("cannot find plugin file {}", path.display()))?;
        abs.display().to_string()
    };
    let bytes = match run.plugin.strip_prefix("builtin:") {
        Some(b) => crate::plugins::builtin::find(b)
            .map(|b| b.wasm.to_vec())
            .unwrap_or_default(),
        None => std::fs::read(&source).with_context(|| format!("cannot read {source}"))?,
    };
    if let Ok(Some(m)) = crate::plugins::manifest::read(&bytes)
        && m.world != "rule"
    {
        bail!(
            "{} is a {} plugin ({}); plugin test runs rule plugins",
            run.plugin,
            m.world,
            m.name
        );
    }
    let mut text = format!(
        "[plugins.{NAME}]\nsource = {}\nworld = \"rule\"\n",
        toml_string(&source)
    );
    if !run.limits.is_empty() {
        text.push_str(&format!("[plugins.{NAME}.limits]\n"));
        for l in &run.limits {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("--limit `{l}`: expected KEY=VALUE such as deadline_ms=50"))?;
            text.push_str(&format!("{} = {}\n", k.trim(), v.trim()));
        }
    }
    let config_path = data_dir.join("plugin-test.toml");
    let config = config::validate::parse(&text, &config_path)
        .map_err(|e| anyhow::anyhow!("{}", e.to_string().replace(&format!("plugins.{NAME}"), "the plugin")))?;
    let limits = config.plugins.values().next().map(|p| p.limits).unwrap_or_default();
    let db = StateDb::open(&data_dir.join("plugin-test-state.db")).context("cannot open the scratch state database")?;
    let started = Instant::now();
    let registry = Registry::load(&config, db, &data_dir.join("cache")).map_err(|e| {
        anyhow::anyhow!(
            "{}",
            e.to_string()
                .replace(&format!("`{NAME}`"), &format!("`{}`", run.plugin))
        )
    })?;
    Ok((registry, limits, started.elapsed()))
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Resource use against each limit, as JSON.
fn usage(stats: &CallStats, limits: &Limits, fuel_on: bool, intents: Option<usize>) -> Value {
    let log_bytes: usize = stats.log.iter().map(|l| l.message.len()).sum();
    json!({
        "time_us": u64::try_from(stats.duration.as_micros()).unwrap_or(u64::MAX),
        "deadline_ms": u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
        "memory_peak_bytes": stats.memory_peak,
        "memory_cap_bytes": limits.memory_bytes,
        "fuel_consumed": stats.fuel_consumed,
        "fuel_limit": limits.fuel,
        "fuel_metering": fuel_on,
        "output_bytes": stats.output_bytes,
        "max_output_bytes": limits.max_output_bytes,
        "intents": intents,
        "max_intents": limits.max_intents,
        "log_lines": stats.log.len(),
        "log_bytes": log_bytes,
        "log_bytes_per_call": limits.log_bytes_per_call,
        "log_line_bytes": limits.log_line_bytes,
        "log_dropped": stats.log_dropped,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[allow(clippy::too_many_arguments)]
fn print_text(
    out: &mut (dyn Write + Send),
    path: &Path,
    content_type: &str,
    outcome: &str,
    detail: &Value,
    output: &Value,
    stats: &CallStats,
    u: &Value,
) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(out, "alert {} ({content_type})", path.display())?;
    writeln!(out, "  outcome: {outcome}: {}", detail.as_str().unwrap_or_default())?;
    if !output.is_null() {
        let pretty = serde_json::to_string_pretty(output).unwrap_or_default();
        writeln!(out, "  output:")?;
        for line in pretty.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    if !stats.log.is_empty() {
        writeln!(out, "  log:")?;
        for l in &stats.log {
            writeln!(out, "    {:<5} {}", l.level, l.message)?;
        }
    }
    let pct = |a: f64, b: f64| if b > 0.0 { a / b * 100.0 } else { 0.0 };
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    writeln!(out, "  resources (use / limit):")?;
    let (t, d) = (n("time_us") as f64 / 1e3, n("deadline_ms") as f64);
    writeln!(out, "    time    {t:>10.3} ms  / {d} ms deadline ({:.1} %)", pct(t, d))?;
    let (m, c) = (n("memory_peak_bytes") as f64, n("memory_cap_bytes") as f64);
    writeln!(
        out,
        "    memory  {:>10.2} MiB / {:.0} MiB ({:.1} %)",
        m / 1048576.0,
        c / 1048576.0,
        pct(m, c)
    )?;
    match (u["fuel_consumed"].as_u64(), u["fuel_limit"].as_u64()) {
        (Some(f), Some(l)) => writeln!(out, "    fuel    {f:>10} / {l} ({:.1} %)", pct(f as f64, l as f64))?,
        (Some(f), None) => writeln!(out, "    fuel    {f:>10} / unlimited")?,
        _ => writeln!(out, "    fuel    off (set fuel with --limit fuel=N to meter it)")?,
    }
    let (o, oc) = (n("output_bytes"), n("max_output_bytes"));
    writeln!(
        out,
        "    output  {o:>10} B   / {oc} B ({:.1} %)",
        pct(o as f64, oc as f64)
    )?;
    if let Some(i) = u["intents"].as_u64() {
        writeln!(out, "    intents {i:>10}     / {}", n("max_intents"))?;
    }
    let (lb, lc) = (n("log_bytes"), n("log_bytes_per_call"));
    writeln!(
        out,
        "    log     {lb:>10} B   / {lc} B per call in {} line(s) of at most {} B; {} dropped",
        n("log_lines"),
        n("log_line_bytes"),
        n("log_dropped")
    )
}

/// A scratch data dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("algobanana-plugin-test-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
