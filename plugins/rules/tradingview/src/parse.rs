//! Alert parsing for the default TradingView rule: JSON in the
//! TradingView/TradersPost style, and plain text such as `buy 10 AAPL` or
//! `sell 0.5 BTCUSD at 64250 limit`.
//!
//! Pure logic over the SDK's types, with no host imports, so the benchmark
//! suite compiles this same file natively to compare against the component.

use algobanana_plugin_sdk::money::{self, Decimal};
use algobanana_plugin_sdk::types::{
    Decimal as WitDecimal, OrderIntent, OrderType, RuleError, Side, StopLimit, TimeInForce,
};
use serde_json::{Map, Value};

/// What a JSON alert looks like, quoted in error messages.
const JSON_EXAMPLE: &str = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35"}"#;
/// What a text alert looks like, quoted in error messages.
const TEXT_EXAMPLE: &str = "`buy 10 AAPL` or `sell 0.5 BTCUSD at 64250 limit`";

/// The route's rule settings, from the route's `rule_config` JSON object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settings {
    /// Quantity used when the alert carries none.
    pub default_quantity: Option<Decimal>,
    /// Time in force used when the alert carries none (default: day).
    pub time_in_force: Option<TimeInForce>,
}

/// Parses the route's rule settings.
///
/// # Errors
/// `invalid-config` naming the key and what it expects.
pub fn settings(config: &str) -> Result<Settings, RuleError> {
    let config = config.trim();
    if config.is_empty() {
        return Ok(Settings::default());
    }
    let value: Value =
        serde_json::from_str(config).map_err(|e| RuleError::InvalidConfig(format!("rule config is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(RuleError::InvalidConfig(
            "rule config must be a JSON object such as {\"default_quantity\":\"1\"}".into(),
        ));
    };
    let mut out = Settings::default();
    for (key, value) in &map {
        match key.as_str() {
            "default_quantity" => {
                let q = decimal_field(value, key).map_err(RuleError::InvalidConfig)?;
                if q <= Decimal::ZERO {
                    return Err(RuleError::InvalidConfig(format!(
                        "`default_quantity` must be greater than zero, got {q}"
                    )));
                }
                out.default_quantity = Some(q);
            }
            "time_in_force" => {
                let text = value.as_str().ok_or_else(|| {
                    RuleError::InvalidConfig("`time_in_force` must be a string: day, gtc, ioc, fok, opg or cls".into())
                })?;
                out.time_in_force = Some(time_in_force(text).map_err(RuleError::InvalidConfig)?);
            }
            other => {
                return Err(RuleError::InvalidConfig(format!(
                    "unknown rule config key `{other}`; expected `default_quantity` or `time_in_force`"
                )));
            }
        }
    }
    Ok(out)
}

/// Parses one alert body into order intents.
///
/// # Errors
/// `invalid-alert` or `unsupported`, each saying what was expected.
pub fn parse_alert(body: &[u8], settings: &Settings) -> Result<Vec<OrderIntent>, RuleError> {
    let text = std::str::from_utf8(body).map_err(|_| {
        RuleError::InvalidAlert(format!(
            "alert body is not UTF-8 text; expected JSON such as {JSON_EXAMPLE} or text such as {TEXT_EXAMPLE}"
        ))
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(RuleError::InvalidAlert(format!(
            "alert body is empty; expected JSON such as {JSON_EXAMPLE} or text such as {TEXT_EXAMPLE}"
        )));
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        parse_json(trimmed, settings).map(|i| vec![i])
    } else {
        parse_text(trimmed, settings).map(|i| vec![i])
    }
}

fn parse_json(text: &str, settings: &Settings) -> Result<OrderIntent, RuleError> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        RuleError::InvalidAlert(format!(
            "alert body is not valid JSON ({e}); expected an object such as {JSON_EXAMPLE}"
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(RuleError::InvalidAlert(format!(
            "alert JSON must be an object such as {JSON_EXAMPLE}"
        )));
    };
    let invalid = RuleError::InvalidAlert;

    let symbol = string_field(&map, &["ticker", "symbol"])?.ok_or_else(|| {
        invalid(format!(
            "alert JSON has no `ticker` or `symbol`; expected an object such as {JSON_EXAMPLE}"
        ))
    })?;
    let symbol = check_symbol(&symbol)?;

    let action = string_field(&map, &["action"])?.ok_or_else(|| {
        invalid(format!(
            "alert JSON has no `action`; expected \"buy\" or \"sell\", as in {JSON_EXAMPLE}"
        ))
    })?;
    let side = side(&action)?;

    let sentiment = string_field(&map, &["sentiment"])?.map(|s| s.to_ascii_lowercase());
    let reduce_only = match sentiment.as_deref() {
        None | Some("long" | "short" | "bullish" | "bearish") => false,
        Some("flat") => true,
        Some(other) => {
            return Err(invalid(format!(
                "`sentiment` is `{other}`; expected long, short, bullish, bearish or flat"
            )));
        }
    };

    let quantity = match number_field(&map, &["quantity", "contracts", "qty"])? {
        Some(q) => q,
        None => settings.default_quantity.ok_or_else(|| {
            invalid("alert JSON has no `quantity` (or `contracts`) and the route sets no `default_quantity`; add \"quantity\": \"10\" to the alert".into())
        })?,
    };
    check_quantity(quantity)?;

    let reference = number_field(&map, &["price", "close"])?;
    let limit = number_field(&map, &["limitPrice", "limit_price"])?;
    let stop = number_field(&map, &["stopPrice", "stop_price"])?;
    let kind = string_field(&map, &["orderType", "order_type", "type"])?;
    let order_type = order_type(kind.as_deref(), limit, stop)?;

    let time_in_force = match string_field(&map, &["timeInForce", "time_in_force"])? {
        Some(t) => time_in_force(&t).map_err(invalid)?,
        None => settings.time_in_force.unwrap_or(TimeInForce::Day),
    };
    let client_order_id = string_field(&map, &["signalId", "signal_id", "clientOrderId"])?;
    let take_profit = bracket_leg(&map, "takeProfit", "limitPrice")?;
    let stop_loss = bracket_leg(&map, "stopLoss", "stopPrice")?;

    Ok(OrderIntent {
        symbol,
        side,
        quantity: wit(quantity, "quantity")?,
        order_type,
        time_in_force,
        client_order_id,
        reduce_only,
        reference_price: reference.map(|p| wit(p, "price")).transpose()?,
        take_profit: take_profit.map(|p| wit(p, "takeProfit")).transpose()?,
        stop_loss: stop_loss.map(|p| wit(p, "stopLoss")).transpose()?,
    })
}

/// `buy 10 AAPL`, `sell 0.5 BTCUSD at 64250 limit`, `buy 5 MSFT @ 410 stop gtc`.
fn parse_text(text: &str, settings: &Settings) -> Result<OrderIntent, RuleError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = |why: &str| RuleError::InvalidAlert(format!("{why}; expected text such as {TEXT_EXAMPLE}"));
    let [action, rest @ ..] = words.as_slice() else {
        return Err(bad("alert text is empty"));
    };
    let side = side(action)?;
    let (quantity, rest) = match rest {
        [q, s, rest @ ..] if money::parse(q).is_ok() => (money::parse(q).map_err(|e| bad(&e.to_string()))?, {
            let mut r = vec![*s];
            r.extend_from_slice(rest);
            r
        }),
        [s, rest @ ..] => {
            let q = settings.default_quantity.ok_or_else(|| {
                bad(&format!(
                    "`{s}` is not a quantity and the route sets no `default_quantity`"
                ))
            })?;
            let mut r = vec![*s];
            r.extend_from_slice(rest);
            (q, r)
        }
        [] => return Err(bad("alert text names no quantity and symbol")),
    };
    check_quantity(quantity)?;
    let symbol = check_symbol(rest[0])?;
    let mut rest = &rest[1..];

    let mut price = None;
    let mut kind = None;
    let mut tif = None;
    while let [word, tail @ ..] = rest {
        match word.to_ascii_lowercase().as_str() {
            "at" | "@" => {
                let [p, tail @ ..] = tail else {
                    return Err(bad("`at` must be followed by a price"));
                };
                price = Some(money::parse(p).map_err(|e| bad(&e.to_string()))?);
                rest = tail;
                continue;
            }
            k @ ("market" | "limit" | "stop") => kind = Some(k.to_owned()),
            t @ ("day" | "gtc" | "ioc" | "fok" | "opg" | "cls") => tif = Some(time_in_force(t).map_err(|e| bad(&e))?),
            other => return Err(bad(&format!("unexpected word `{other}`"))),
        }
        rest = tail;
    }
    let order_type = match (kind.as_deref(), price) {
        (None | Some("market"), _) => OrderType::Market,
        (Some("limit"), Some(p)) => OrderType::Limit(wit(p, "limit price")?),
        (Some("stop"), Some(p)) => OrderType::Stop(wit(p, "stop price")?),
        (Some(k), None) => return Err(bad(&format!("a {k} order needs a price: `... at 64250 {k}`"))),
        (Some(_), Some(_)) => unreachable!("only market, limit and stop are matched above"),
    };
    Ok(OrderIntent {
        symbol,
        side,
        quantity: wit(quantity, "quantity")?,
        order_type,
        time_in_force: tif.or(settings.time_in_force).unwrap_or(TimeInForce::Day),
        client_order_id: None,
        reduce_only: false,
        reference_price: price.map(|p| wit(p, "price")).transpose()?,
        take_profit: None,
        stop_loss: None,
    })
}

fn side(action: &str) -> Result<Side, RuleError> {
    match action.to_ascii_lowercase().as_str() {
        "buy" | "long" => Ok(Side::Buy),
        "sell" | "short" => Ok(Side::Sell),
        a @ ("exit" | "close" | "flat" | "flatten" | "reverse" | "cancel" | "add") => {
            Err(RuleError::Unsupported(format!(
                "action `{a}` is not supported by this version of the tradingview rule; expected \"buy\" or \"sell\""
            )))
        }
        other => Err(RuleError::InvalidAlert(format!(
            "action `{other}` is not an order side; expected \"buy\" or \"sell\""
        ))),
    }
}

fn order_type(kind: Option<&str>, limit: Option<Decimal>, stop: Option<Decimal>) -> Result<OrderType, RuleError> {
    let invalid = RuleError::InvalidAlert;
    let kind = kind.map(|k| k.to_ascii_lowercase().replace(['_', '-', ' '], ""));
    let kind = match kind.as_deref() {
        Some(k) => k,
        // No explicit type: infer from the prices present.
        None => match (limit, stop) {
            (None, None) => "market",
            (Some(_), None) => "limit",
            (None, Some(_)) => "stop",
            (Some(_), Some(_)) => "stoplimit",
        },
    };
    match kind {
        "market" => Ok(OrderType::Market),
        "limit" => {
            let l = limit.ok_or_else(|| invalid("orderType is limit but `limitPrice` is missing".into()))?;
            Ok(OrderType::Limit(wit(positive(l, "limitPrice")?, "limitPrice")?))
        }
        "stop" => {
            let s = stop.ok_or_else(|| invalid("orderType is stop but `stopPrice` is missing".into()))?;
            Ok(OrderType::Stop(wit(positive(s, "stopPrice")?, "stopPrice")?))
        }
        "stoplimit" => {
            let (Some(s), Some(l)) = (stop, limit) else {
                return Err(invalid(
                    "orderType is stop_limit; it needs both `stopPrice` and `limitPrice`".into(),
                ));
            };
            Ok(OrderType::StopLimit(StopLimit {
                stop: wit(positive(s, "stopPrice")?, "stopPrice")?,
                limit: wit(positive(l, "limitPrice")?, "limitPrice")?,
            }))
        }
        other => Err(invalid(format!(
            "orderType `{other}` is unknown; expected market, limit, stop or stop_limit"
        ))),
    }
}

fn time_in_force(text: &str) -> Result<TimeInForce, String> {
    match text.to_ascii_lowercase().as_str() {
        "day" => Ok(TimeInForce::Day),
        "gtc" => Ok(TimeInForce::Gtc),
        "ioc" => Ok(TimeInForce::Ioc),
        "fok" => Ok(TimeInForce::Fok),
        "opg" => Ok(TimeInForce::Opg),
        "cls" => Ok(TimeInForce::Cls),
        other => Err(format!(
            "time in force `{other}` is unknown; expected day, gtc, ioc, fok, opg or cls"
        )),
    }
}

/// A TradersPost bracket leg: `"takeProfit": {"limitPrice": "200"}` or a bare
/// number.
fn bracket_leg(map: &Map<String, Value>, key: &str, inner: &str) -> Result<Option<Decimal>, RuleError> {
    let leg = match map.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => match o.get(inner) {
            Some(v) => decimal_field(v, &format!("{key}.{inner}")).map_err(RuleError::InvalidAlert)?,
            None => {
                return Err(RuleError::InvalidAlert(format!(
                    "`{key}` must carry `{inner}`, e.g. {{\"{inner}\": \"200\"}}"
                )));
            }
        },
        Some(v) => decimal_field(v, key).map_err(RuleError::InvalidAlert)?,
    };
    positive(leg, key).map(Some)
}

fn string_field(map: &Map<String, Value>, keys: &[&str]) -> Result<Option<String>, RuleError> {
    for key in keys {
        match map.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.trim().is_empty() => continue,
            Some(Value::String(s)) => return Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => return Ok(Some(n.to_string())),
            Some(_) => return Err(RuleError::InvalidAlert(format!("`{key}` must be a string"))),
        }
    }
    Ok(None)
}

fn number_field(map: &Map<String, Value>, keys: &[&str]) -> Result<Option<Decimal>, RuleError> {
    for key in keys {
        match map.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) if s.trim().is_empty() => continue,
            Some(v) => return decimal_field(v, key).map(Some).map_err(RuleError::InvalidAlert),
        }
    }
    Ok(None)
}

/// A number given as JSON text (`"0.5"`) or a bare JSON number (`0.5`); with
/// serde_json's `arbitrary_precision` a bare number keeps its exact digits.
fn decimal_field(value: &Value, key: &str) -> Result<Decimal, String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return Err(format!("`{key}` must be a number such as \"10\" or 0.5")),
    };
    money::parse(&text).map_err(|e| format!("`{key}`: {e}"))
}

fn check_symbol(symbol: &str) -> Result<String, RuleError> {
    // Exchange prefixes from TradingView's {{ticker}} ("NASDAQ:AAPL") are not
    // part of the broker's symbol.
    let symbol = symbol.rsplit(':').next().unwrap_or(symbol).trim();
    let ok = !symbol.is_empty()
        && symbol.len() <= 32
        && symbol
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'));
    if ok {
        Ok(symbol.to_ascii_uppercase())
    } else {
        Err(RuleError::InvalidAlert(format!(
            "symbol `{symbol}` is not valid; expected 1–32 letters, digits, '.', '/', '-' or '_' such as AAPL or BTC/USD"
        )))
    }
}

fn check_quantity(q: Decimal) -> Result<(), RuleError> {
    if q <= Decimal::ZERO {
        return Err(RuleError::InvalidAlert(format!(
            "quantity must be greater than zero, got {q}"
        )));
    }
    Ok(())
}

fn positive(d: Decimal, key: &str) -> Result<Decimal, RuleError> {
    if d <= Decimal::ZERO {
        return Err(RuleError::InvalidAlert(format!(
            "`{key}` must be greater than zero, got {d}"
        )));
    }
    Ok(d)
}

fn wit(d: Decimal, key: &str) -> Result<WitDecimal, RuleError> {
    money::to_wit(d).map_err(|e| RuleError::InvalidAlert(format!("`{key}`: {e}")))
}
