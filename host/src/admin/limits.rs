//! Risk limits changed through the admin API, over the config's.
//!
//! The config file's values are the admin-set ceiling. An admin may set any
//! rail; a trader may tighten any rail and loosen one only back up to that
//! ceiling (never disable a rail the config sets). Changes persist in
//! `state.db` and apply to the next decision.

use std::str::FromStr as _;

use rusqlite::params;
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::rbac::Role;
use crate::store::{StateDb, StoreError};
use crate::trading::risk::RiskLimits;

/// The rails the API can change.
pub const RAILS: &[&str] = &[
    "symbols",
    "max_order_quantity",
    "max_order_notional",
    "max_position",
    "max_orders_per_minute",
    "max_orders_per_day",
    "price_band_pct",
    "max_daily_loss",
];

/// One rail's new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RailValue {
    /// A decimal limit; `None` turns the rail off.
    Decimal(Option<Decimal>),
    /// A count limit; `None` turns the rail off.
    Count(Option<u32>),
    /// The allowed symbols; `None` allows any.
    Symbols(Option<Vec<String>>),
}

fn parse_rail(rail: &str, v: &Value) -> Result<RailValue, String> {
    let dec = |v: &Value| -> Result<Option<Decimal>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Decimal::from_str(s)
                .ok()
                .filter(|d| d.is_sign_positive() && !d.is_zero())
                .map(Some)
                .ok_or_else(|| format!("`{rail}`: `{s}` is not a positive decimal")),
            Value::Number(n) => Decimal::from_str(&n.to_string())
                .ok()
                .filter(|d| d.is_sign_positive() && !d.is_zero())
                .map(Some)
                .ok_or_else(|| format!("`{rail}`: {n} is not a positive decimal")),
            _ => Err(format!("`{rail}`: expected a decimal string such as \"100\" or null")),
        }
    };
    match rail {
        "symbols" => match v {
            Value::Null => Ok(RailValue::Symbols(None)),
            Value::Array(a) => a
                .iter()
                .map(|s| {
                    s.as_str()
                        .filter(|s| !s.is_empty() && s.len() <= 32)
                        .map(str::to_ascii_uppercase)
                        .ok_or_else(|| "`symbols`: expected a list of symbol strings".to_owned())
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| RailValue::Symbols(Some(v))),
            _ => Err("`symbols`: expected a list of symbols or null".into()),
        },
        "max_orders_per_minute" | "max_orders_per_day" => match v {
            Value::Null => Ok(RailValue::Count(None)),
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(|n| RailValue::Count(Some(n)))
                .ok_or_else(|| format!("`{rail}`: expected a whole number ≥ 1 or null")),
            _ => Err(format!("`{rail}`: expected a whole number ≥ 1 or null")),
        },
        "max_order_quantity" | "max_order_notional" | "max_position" | "price_band_pct" | "max_daily_loss" => {
            dec(v).map(RailValue::Decimal)
        }
        other => Err(format!(
            "`{other}` is not a rail the API can change; expected one of {}",
            RAILS.join(", ")
        )),
    }
}

fn current(limits: &RiskLimits, rail: &str) -> RailValue {
    match rail {
        "symbols" => RailValue::Symbols(limits.symbols.clone()),
        "max_order_quantity" => RailValue::Decimal(limits.max_order_quantity),
        "max_order_notional" => RailValue::Decimal(limits.max_order_notional),
        "max_position" => RailValue::Decimal(limits.max_position),
        "price_band_pct" => RailValue::Decimal(limits.price_band_pct),
        "max_daily_loss" => RailValue::Decimal(limits.max_daily_loss),
        "max_orders_per_minute" => RailValue::Count(limits.max_orders_per_minute),
        _ => RailValue::Count(limits.max_orders_per_day),
    }
}

fn apply(limits: &mut RiskLimits, rail: &str, v: RailValue) {
    match (rail, v) {
        ("symbols", RailValue::Symbols(s)) => limits.symbols = s,
        ("max_order_quantity", RailValue::Decimal(d)) => limits.max_order_quantity = d,
        ("max_order_notional", RailValue::Decimal(d)) => limits.max_order_notional = d,
        ("max_position", RailValue::Decimal(d)) => limits.max_position = d,
        ("price_band_pct", RailValue::Decimal(d)) => limits.price_band_pct = d,
        ("max_daily_loss", RailValue::Decimal(d)) => limits.max_daily_loss = d,
        ("max_orders_per_minute", RailValue::Count(c)) => limits.max_orders_per_minute = c,
        ("max_orders_per_day", RailValue::Count(c)) => limits.max_orders_per_day = c,
        _ => {}
    }
}

/// Whether `new` is at least as strict as `reference`.
fn at_least_as_tight(new: &RailValue, reference: &RailValue) -> bool {
    match (new, reference) {
        (_, RailValue::Decimal(None) | RailValue::Count(None) | RailValue::Symbols(None)) => true,
        (RailValue::Decimal(Some(n)), RailValue::Decimal(Some(r))) => n <= r,
        (RailValue::Count(Some(n)), RailValue::Count(Some(r))) => n <= r,
        (RailValue::Symbols(Some(n)), RailValue::Symbols(Some(r))) => n.iter().all(|s| r.contains(s)),
        _ => false,
    }
}

fn to_json(v: &RailValue) -> Value {
    match v {
        RailValue::Decimal(d) => d.map_or(Value::Null, |d| json!(d.to_string())),
        RailValue::Count(c) => c.map_or(Value::Null, |c| json!(c)),
        RailValue::Symbols(s) => s.as_ref().map_or(Value::Null, |s| json!(s)),
    }
}

/// The stored overrides applied over `config`.
///
/// # Errors
/// [`StoreError`].
pub fn effective(db: &StateDb, config: &RiskLimits) -> Result<RiskLimits, StoreError> {
    let rows: Vec<(String, Option<String>)> = db.with(|c| {
        let mut s = c.prepare("SELECT rail, value FROM risk_override")?;
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
    })?;
    let mut limits = config.clone();
    for (rail, value) in rows {
        let v: Value = value
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        if let Ok(rv) = parse_rail(&rail, &v) {
            apply(&mut limits, &rail, rv);
        }
    }
    Ok(limits)
}

/// Why a change was refused.
#[derive(Debug)]
pub enum Refused {
    /// The body is wrong.
    Invalid(String),
    /// A trader tried to loosen past the ceiling.
    Forbidden(String),
}

/// Checks and stores a change; returns the new limits and what changed
/// (`{rail: {from, to}}`).
///
/// # Errors
/// [`Refused`] (nothing stored), or [`StoreError`].
pub fn change(
    db: &StateDb,
    ceiling: &RiskLimits,
    now: &RiskLimits,
    role: Role,
    by: &str,
    body: &Map<String, Value>,
) -> Result<Result<(RiskLimits, Value), Refused>, StoreError> {
    if body.is_empty() {
        return Ok(Err(Refused::Invalid(format!(
            "the body names no rail; expected e.g. {{\"max_order_quantity\": \"10\"}} with rails from {}",
            RAILS.join(", ")
        ))));
    }
    let mut next = now.clone();
    let mut changes = Map::new();
    let mut parsed = Vec::new();
    for (rail, v) in body {
        let new = match parse_rail(rail, v) {
            Ok(n) => n,
            Err(e) => return Ok(Err(Refused::Invalid(e))),
        };
        let was = current(now, rail);
        if role != Role::Admin && !at_least_as_tight(&new, &was) && !at_least_as_tight(&new, &current(ceiling, rail)) {
            return Ok(Err(Refused::Forbidden(format!(
                "`{rail}`: a trader may tighten a rail, or loosen it only up to the config's value ({}); ask an admin",
                to_json(&current(ceiling, rail))
            ))));
        }
        changes.insert(rail.clone(), json!({ "from": to_json(&was), "to": to_json(&new) }));
        apply(&mut next, rail, new.clone());
        parsed.push((rail.clone(), new));
    }
    db.durable(|tx| {
        for (rail, v) in &parsed {
            tx.execute(
                "INSERT INTO risk_override(rail, value, set_by, set_at_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(rail) DO UPDATE SET value = excluded.value, set_by = excluded.set_by, set_at_ns = excluded.set_at_ns",
                params![rail, to_json(v).to_string(), by, crate::audit::now_ns()],
            )?;
        }
        Ok(())
    })?;
    Ok(Ok((next, Value::Object(changes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[plugins.tradingview]
source = "builtin:tradingview"
world = "rule"

[plugins.paper]
source = "builtin:paper"
world = "broker"

[[routes]]
name = "default"
hook_token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
rule = "tradingview"
broker = "paper"
"#;

    fn limits() -> RiskLimits {
        crate::config::parse(CONFIG, std::path::Path::new("x.toml"))
            .unwrap()
            .risk
    }

    #[test]
    fn traders_tighten_and_loosen_only_to_the_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        let ceiling = limits();
        let q = ceiling.max_order_quantity.expect("quantity rail on by default");
        let body = |v: Value| v.as_object().unwrap().clone();
        // Tighten.
        let half = (q / Decimal::TWO).to_string();
        let (tight, changes) = change(
            &db,
            &ceiling,
            &ceiling,
            Role::Trader,
            "t",
            &body(json!({ "max_order_quantity": half })),
        )
        .unwrap()
        .unwrap();
        assert_eq!(changes["max_order_quantity"]["to"], json!(half));
        // Loosen back to the ceiling: allowed; past it: refused.
        change(
            &db,
            &ceiling,
            &tight,
            Role::Trader,
            "t",
            &body(json!({ "max_order_quantity": q.to_string() })),
        )
        .unwrap()
        .unwrap();
        let over = (q * Decimal::TWO).to_string();
        assert!(matches!(
            change(
                &db,
                &ceiling,
                &tight,
                Role::Trader,
                "t",
                &body(json!({ "max_order_quantity": over }))
            )
            .unwrap(),
            Err(Refused::Forbidden(_))
        ));
        assert!(matches!(
            change(
                &db,
                &ceiling,
                &tight,
                Role::Trader,
                "t",
                &body(json!({ "max_order_quantity": null }))
            )
            .unwrap(),
            Err(Refused::Forbidden(_))
        ));
        // An admin may.
        let (loose, _) = change(
            &db,
            &ceiling,
            &tight,
            Role::Admin,
            "a",
            &body(json!({ "max_order_quantity": over })),
        )
        .unwrap()
        .unwrap();
        assert_eq!(loose.max_order_quantity, Some(q * Decimal::TWO));
        assert_eq!(effective(&db, &ceiling).unwrap(), loose);
        // Bad input.
        for bad in [
            json!({ "nope": 1 }),
            json!({ "max_order_quantity": "-1" }),
            json!({ "max_orders_per_day": 0 }),
            json!({}),
        ] {
            assert!(
                matches!(
                    change(&db, &ceiling, &loose, Role::Admin, "a", &body(bad.clone())).unwrap(),
                    Err(Refused::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}
