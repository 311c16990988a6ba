//! Alert parsing for the default TradingView rule: JSON in the
//! TradingView/TradersPost style, and plain text such as `buy 10 AAPL` or
//! `sell 0.5 BTCUSD at 64250 limit`.
//!
//! Pure logic over the SDK's types, with no host imports, so the benchmark
//! suite compiles this same file natively to compare against the component.
//! The account's portfolio comes through [`Book`], asked only by the
//! actions and sizings that need it: the component's book asks the host
//! (`broker-view`), which then asks the broker.

use algobanana_plugin_sdk::money::{self, Decimal};
use algobanana_plugin_sdk::types::{
    Decimal as WitDecimal, OrderIntent, OrderType, Portfolio, RuleError, Side, StopLimit, TimeInForce, TrailingStop,
};
use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use serde_json::{Map, Value};

/// What a JSON alert looks like, quoted in error messages.
const JSON_EXAMPLE: &str = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35"}"#;
/// What a text alert looks like, quoted in error messages.
const TEXT_EXAMPLE: &str = "`buy 10 AAPL` or `sell 0.5 BTCUSD at 64250 limit`";

/// Where the route account's portfolio comes from.
pub trait Book {
    /// The portfolio, or why there is none (a sentence for the error).
    ///
    /// # Errors
    /// Why there is no portfolio.
    fn portfolio(&mut self) -> Result<&Portfolio, String>;
}

/// A portfolio given up front (`None`: there is none).
impl Book for Option<&Portfolio> {
    fn portfolio(&mut self) -> Result<&Portfolio, String> {
        (*self).ok_or_else(|| "the broker did not provide it".to_owned())
    }
}

/// The route's rule settings, from the route's `rule_config` JSON object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Settings {
    /// Quantity used when the alert carries none.
    pub default_quantity: Option<Decimal>,
    /// Time in force used when the alert carries none (default: day).
    pub time_in_force: Option<TimeInForce>,
    /// How to size an order whose alert carries no quantity.
    pub sizing: Option<Sizing>,
    /// Decimal places of a computed quantity, rounded down (default 0:
    /// whole shares; 8 suits crypto).
    pub quantity_decimals: u32,
}

/// Position sizing from the account (needs the route's portfolio).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sizing {
    /// Quantity = this amount of money / price.
    Notional(Decimal),
    /// Quantity = this percent of equity / price.
    PercentOfEquity(Decimal),
    /// Quantity = (this percent of equity) / |price − stop|: the loss at
    /// the stop is that percent of equity. Needs a stop loss in the alert.
    RiskPercent(Decimal),
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
            "notional" | "percent_of_equity" | "risk_percent" => {
                let v = decimal_field(value, key).map_err(RuleError::InvalidConfig)?;
                if v <= Decimal::ZERO {
                    return Err(RuleError::InvalidConfig(format!("`{key}` must be greater than zero")));
                }
                if out.sizing.is_some() {
                    return Err(RuleError::InvalidConfig(
                        "set only one of `notional`, `percent_of_equity` and `risk_percent`".into(),
                    ));
                }
                out.sizing = Some(match key.as_str() {
                    "notional" => Sizing::Notional(v),
                    "percent_of_equity" => Sizing::PercentOfEquity(v),
                    _ => Sizing::RiskPercent(v),
                });
            }
            "quantity_decimals" => {
                out.quantity_decimals = value
                    .as_u64()
                    .filter(|d| *d <= 12)
                    .and_then(|d| u32::try_from(d).ok())
                    .ok_or_else(|| RuleError::InvalidConfig("`quantity_decimals` must be 0 to 12".into()))?;
            }
            other => {
                return Err(RuleError::InvalidConfig(format!(
                    "unknown rule config key `{other}`; expected `default_quantity`, `time_in_force`, `notional`, `percent_of_equity`, `risk_percent` or `quantity_decimals`"
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
pub fn parse_alert(body: &[u8], settings: &Settings, book: &mut dyn Book) -> Result<Vec<OrderIntent>, RuleError> {
    let text = core::str::from_utf8(body).map_err(|_| {
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
        parse_json(trimmed, settings, book)
    } else {
        parse_text(trimmed, settings, book)
    }
}

/// What the alert asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Open or add: buy or sell.
    Trade(Side),
    /// Close the whole position in the symbol.
    Exit,
    /// Close the position and open the same size the other way.
    Reverse,
}

fn action(word: &str) -> Result<Action, RuleError> {
    match word.to_ascii_lowercase().as_str() {
        "buy" | "long" => Ok(Action::Trade(Side::Buy)),
        "sell" | "short" => Ok(Action::Trade(Side::Sell)),
        "exit" | "close" | "flat" | "flatten" => Ok(Action::Exit),
        "reverse" => Ok(Action::Reverse),
        other => Err(RuleError::InvalidAlert(format!(
            "action `{other}` is not supported; expected buy, sell, exit (close, flat) or reverse"
        ))),
    }
}

/// The signed position in `symbol` (0 when there is none).
fn position(book: &mut dyn Book, symbol: &str) -> Result<Decimal, RuleError> {
    let p = book
        .portfolio()
        .map_err(|why| RuleError::Unsupported(format!("this action needs the account's positions: {why}")))?;
    let mut total = Decimal::ZERO;
    for pos in p.positions.iter().filter(|p| p.symbol.eq_ignore_ascii_case(symbol)) {
        total += money::from_wit(pos.quantity).map_err(|e| RuleError::Internal(e.to_string()))?;
    }
    Ok(total)
}

/// Intents that close the position: one reduce-only market order, or none
/// when flat. An `exit` alert that carries both `takeProfit` and `stopLoss`
/// instead protects the position with an OCO exit pair: a reduce-only limit
/// at the take-profit with the stop-loss, one cancelling the other.
fn exit_intents(template: &OrderIntent, position: Decimal) -> Result<Vec<OrderIntent>, RuleError> {
    if let (Some(tp), Some(_)) = (template.take_profit, template.stop_loss)
        && !position.is_zero()
    {
        let mut pair = template.clone();
        pair.side = if position > Decimal::ZERO {
            Side::Sell
        } else {
            Side::Buy
        };
        pair.quantity = wit(position.abs(), "quantity")?;
        pair.order_type = OrderType::Limit(tp);
        pair.reduce_only = true;
        pair.client_order_id = template.client_order_id.as_ref().map(|c| format!("{c}-x"));
        return Ok(vec![pair]);
    }
    close_intents(template, position)
}

/// One reduce-only market order that closes the position, or none when flat.
fn close_intents(template: &OrderIntent, position: Decimal) -> Result<Vec<OrderIntent>, RuleError> {
    if position.is_zero() {
        return Ok(Vec::new());
    }
    let mut close = template.clone();
    close.side = if position > Decimal::ZERO {
        Side::Sell
    } else {
        Side::Buy
    };
    close.quantity = wit(position.abs(), "quantity")?;
    close.order_type = OrderType::Market;
    close.reduce_only = true;
    close.take_profit = None;
    close.stop_loss = None;
    close.client_order_id = template.client_order_id.as_ref().map(|c| format!("{c}-x"));
    Ok(vec![close])
}

/// Quantity from the sizing rule, rounded down to `decimals`.
fn sized(
    settings: &Settings,
    sizing: Sizing,
    price: Option<Decimal>,
    stop: Option<Decimal>,
    book: &mut dyn Book,
) -> Result<Decimal, RuleError> {
    let price = price.ok_or_else(|| {
        RuleError::InvalidAlert("sizing by notional, equity or risk needs the alert's `price`".into())
    })?;
    let mut equity = || -> Result<Decimal, RuleError> {
        let p = book
            .portfolio()
            .map_err(|why| RuleError::Unsupported(format!("sizing by equity needs the account: {why}")))?;
        money::from_wit(p.account.equity).map_err(|e| RuleError::Internal(e.to_string()))
    };
    let hundred = Decimal::from(100);
    let raw = match sizing {
        Sizing::Notional(n) => n / price,
        Sizing::PercentOfEquity(pct) => equity()? * pct / hundred / price,
        Sizing::RiskPercent(pct) => {
            let stop = stop.ok_or_else(|| {
                RuleError::InvalidAlert(
                    "risk-percent sizing needs a stop: add \"stopLoss\": {\"stopPrice\": \"…\"}".into(),
                )
            })?;
            let distance = (price - stop).abs();
            if distance.is_zero() {
                return Err(RuleError::InvalidAlert(
                    "the stop equals the price; risk sizing needs a distance".into(),
                ));
            }
            equity()? * pct / hundred / distance
        }
    };
    let q = raw.trunc_with_scale(settings.quantity_decimals).normalize();
    if q <= Decimal::ZERO {
        return Err(RuleError::InvalidAlert(format!(
            "the sizing rule gives a quantity of {raw}, which rounds to zero at {} decimals",
            settings.quantity_decimals
        )));
    }
    Ok(q)
}

fn parse_json(text: &str, settings: &Settings, book: &mut dyn Book) -> Result<Vec<OrderIntent>, RuleError> {
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

    let action_word = string_field(&map, &["action"])?.ok_or_else(|| {
        invalid(format!(
            "alert JSON has no `action`; expected \"buy\" or \"sell\", as in {JSON_EXAMPLE}"
        ))
    })?;
    let action = action(&action_word)?;
    let side = match action {
        Action::Trade(s) => s,
        Action::Exit | Action::Reverse => Side::Sell,
    };

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

    let reference = number_field(&map, &["price", "close"])?;
    let alert_sizing = match (
        number_field(&map, &["notional"])?,
        number_field(&map, &["percentOfEquity"])?,
        number_field(&map, &["riskPercent"])?,
    ) {
        (Some(n), _, _) => Some(Sizing::Notional(positive(n, "notional")?)),
        (_, Some(p), _) => Some(Sizing::PercentOfEquity(positive(p, "percentOfEquity")?)),
        (_, _, Some(r)) => Some(Sizing::RiskPercent(positive(r, "riskPercent")?)),
        _ => None,
    };
    let stop_for_sizing = bracket_leg(&map, "stopLoss", "stopPrice")?;
    let exit_only = matches!(action, Action::Exit);
    let quantity = match number_field(&map, &["quantity", "contracts", "qty"])? {
        Some(q) => q,
        None if exit_only => Decimal::ONE,
        None => match alert_sizing.or(settings.sizing) {
            Some(sizing) => sized(settings, sizing, reference, stop_for_sizing, book)?,
            None => settings.default_quantity.ok_or_else(|| {
                invalid("alert JSON has no `quantity` (or `contracts`) and the route sets no `default_quantity`; add \"quantity\": \"10\" to the alert".into())
            })?,
        },
    };
    check_quantity(quantity)?;

    let limit = number_field(&map, &["limitPrice", "limit_price"])?;
    let stop = number_field(&map, &["stopPrice", "stop_price"])?;
    let kind = string_field(&map, &["orderType", "order_type", "type"])?;
    let trail_price = number_field(&map, &["trailPrice", "trail_price"])?;
    let trail_percent = number_field(&map, &["trailPercent", "trail_percent"])?;
    let order_type = match (trail_price, trail_percent) {
        (None, None) => order_type(kind.as_deref(), limit, stop)?,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "a trailing stop takes `trailPrice` or `trailPercent`, not both".into(),
            ));
        }
        (price, percent) => {
            let is_trailing = kind
                .as_deref()
                .is_none_or(|k| k.to_ascii_lowercase().replace(['_', '-', ' '], "") == "trailingstop");
            if !is_trailing || limit.is_some() || stop.is_some() {
                return Err(invalid(
                    "`trailPrice` / `trailPercent` make a trailing stop: use orderType \"trailing_stop\" without limitPrice or stopPrice".into(),
                ));
            }
            let trail = positive(price.or(percent).unwrap_or_default(), "trail")?;
            if percent.is_some() && trail >= Decimal::ONE_HUNDRED {
                return Err(invalid("`trailPercent` must be below 100".into()));
            }
            OrderType::TrailingStop(TrailingStop {
                trail: wit(trail, "trail")?,
                percent: percent.is_some(),
            })
        }
    };

    let time_in_force = match string_field(&map, &["timeInForce", "time_in_force"])? {
        Some(t) => time_in_force(&t).map_err(invalid)?,
        None => settings.time_in_force.unwrap_or(TimeInForce::Day),
    };
    let client_order_id = string_field(&map, &["signalId", "signal_id", "clientOrderId"])?;
    let take_profit = bracket_leg(&map, "takeProfit", "limitPrice")?;
    let stop_loss = bracket_leg(&map, "stopLoss", "stopPrice")?;

    let intent = OrderIntent {
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
    };
    finish(
        action,
        intent,
        book,
        number_field(&map, &["quantity", "contracts", "qty"])?.is_some(),
    )
}

/// Turns the parsed intent into the action's intents.
fn finish(
    action: Action,
    intent: OrderIntent,
    book: &mut dyn Book,
    explicit_quantity: bool,
) -> Result<Vec<OrderIntent>, RuleError> {
    match action {
        Action::Trade(_) => Ok(vec![intent]),
        Action::Exit => exit_intents(&intent, position(book, &intent.symbol)?),
        Action::Reverse => {
            let p = position(book, &intent.symbol)?;
            if p.is_zero() {
                return Err(RuleError::InvalidAlert(format!(
                    "there is no position in {} to reverse; send buy or sell to open one",
                    intent.symbol
                )));
            }
            let mut out = close_intents(&intent, p)?;
            let mut open = intent;
            open.side = if p > Decimal::ZERO { Side::Sell } else { Side::Buy };
            open.reduce_only = false;
            if !explicit_quantity {
                open.quantity = wit(p.abs(), "quantity")?;
            }
            out.push(open);
            Ok(out)
        }
    }
}

/// `buy 10 AAPL`, `sell 0.5 BTCUSD at 64250 limit`, `buy 5 MSFT @ 410 stop gtc`.
fn parse_text(text: &str, settings: &Settings, book: &mut dyn Book) -> Result<Vec<OrderIntent>, RuleError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = |why: &str| RuleError::InvalidAlert(format!("{why}; expected text such as {TEXT_EXAMPLE}"));
    let [action_word, rest @ ..] = words.as_slice() else {
        return Err(bad("alert text is empty"));
    };
    let action = action(action_word)?;
    let side = match action {
        Action::Trade(s) => s,
        Action::Exit | Action::Reverse => Side::Sell,
    };
    // `exit AAPL` / `reverse AAPL`: no quantity needed.
    let rest: Vec<&str> = match (action, rest) {
        (Action::Exit | Action::Reverse, [s, tail @ ..]) if money::parse(s).is_err() => {
            let mut r = vec!["1", *s];
            r.extend_from_slice(tail);
            r
        }
        _ => rest.to_vec(),
    };
    let explicit_quantity = !matches!(action, Action::Exit | Action::Reverse) || rest.len() != words.len();
    let rest = rest.as_slice();
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
    let intent = OrderIntent {
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
    };
    finish(action, intent, book, explicit_quantity)
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
        "trailingstop" => Err(invalid(
            "orderType is trailing_stop; it needs `trailPrice` or `trailPercent`".into(),
        )),
        other => Err(invalid(format!(
            "orderType `{other}` is unknown; expected market, limit, stop, stop_limit or trailing_stop"
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
