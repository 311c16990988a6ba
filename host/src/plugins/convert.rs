//! Conversions between the WIT types of `plugins::bindings` and the host's
//! domain types, plus JSON renderings of WIT values for audit payloads.
//! Decimals stay exact: they are rendered as strings and validated, never
//! passed through a float.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::bindings::types as wit;
use crate::domain::ids::ClientOrderId;
use crate::domain::money::{self, MoneyError, Price, Quantity};
use crate::domain::order::{OrderAck, OrderIntent, OrderStatus, OrderType, Side, Symbol, TimeInForce};

/// Why a plugin's value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A number was not acceptable.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// An identifier or symbol was not acceptable.
    #[error(transparent)]
    Id(#[from] crate::domain::ids::IdError),
}

/// A WIT decimal as an exact [`Decimal`].
///
/// # Errors
/// [`MoneyError::Scale`] for a scale above 28.
pub fn decimal(d: wit::Decimal, field: &'static str) -> Result<Decimal, MoneyError> {
    money::decimal_from_parts(d.mantissa, d.scale, field)
}

/// A [`Decimal`] as a WIT decimal.
///
/// # Errors
/// [`MoneyError::TooManyDigits`] when it does not fit.
pub fn to_wit_decimal(d: Decimal) -> Result<wit::Decimal, MoneyError> {
    let (mantissa, scale) = money::decimal_to_parts(d)?;
    Ok(wit::Decimal { mantissa, scale })
}

fn price(d: wit::Decimal, field: &'static str) -> Result<Price, MoneyError> {
    Price::new_checked(decimal(d, field)?)
}

/// Validates a rule's intent into the domain type.
///
/// # Errors
/// [`ConvertError`] naming the field and what is expected.
pub fn intent(i: &wit::OrderIntent) -> Result<OrderIntent, ConvertError> {
    let order_type = match i.order_type {
        wit::OrderType::Market => OrderType::Market,
        wit::OrderType::Limit(l) => OrderType::Limit {
            limit: price(l, "limit price")?,
        },
        wit::OrderType::Stop(s) => OrderType::Stop {
            stop: price(s, "stop price")?,
        },
        wit::OrderType::StopLimit(sl) => OrderType::StopLimit {
            stop: price(sl.stop, "stop price")?,
            limit: price(sl.limit, "limit price")?,
        },
        wit::OrderType::TrailingStop(t) => {
            let trail = price(t.trail, "trailing stop distance")?;
            if t.percent && trail.get() >= Decimal::ONE_HUNDRED {
                return Err(MoneyError::OutOfRange {
                    field: "trailing stop percent",
                    value: trail.get(),
                    expected: "below 100",
                }
                .into());
            }
            OrderType::TrailingStop {
                trail,
                percent: t.percent,
            }
        }
    };
    Ok(OrderIntent {
        symbol: Symbol::new(i.symbol.clone())?,
        side: match i.side {
            wit::Side::Buy => Side::Buy,
            wit::Side::Sell => Side::Sell,
        },
        quantity: Quantity::new_checked(decimal(i.quantity, "quantity")?)?,
        order_type,
        time_in_force: match i.time_in_force {
            wit::TimeInForce::Day => TimeInForce::Day,
            wit::TimeInForce::Gtc => TimeInForce::Gtc,
            wit::TimeInForce::Ioc => TimeInForce::Ioc,
            wit::TimeInForce::Fok => TimeInForce::Fok,
            wit::TimeInForce::Opg => TimeInForce::Opg,
            wit::TimeInForce::Cls => TimeInForce::Cls,
        },
        requested_client_order_id: i.client_order_id.as_deref().map(ClientOrderId::new).transpose()?,
        reduce_only: i.reduce_only,
        reference_price: i.reference_price.map(|p| price(p, "reference price")).transpose()?,
        take_profit: i.take_profit.map(|p| price(p, "take-profit price")).transpose()?,
        stop_loss: i.stop_loss.map(|p| price(p, "stop-loss price")).transpose()?,
    })
}

/// A validated intent back into WIT, for the broker.
///
/// # Errors
/// [`MoneyError::TooManyDigits`] (cannot happen for values that came from WIT).
pub fn intent_to_wit(i: &OrderIntent, client_order_id: &ClientOrderId) -> Result<wit::OrderIntent, MoneyError> {
    let p = |p: Price| to_wit_decimal(p.get());
    Ok(wit::OrderIntent {
        symbol: i.symbol.as_str().to_owned(),
        side: match i.side {
            Side::Buy => wit::Side::Buy,
            Side::Sell => wit::Side::Sell,
        },
        quantity: to_wit_decimal(i.quantity.get())?,
        order_type: match i.order_type {
            OrderType::Market => wit::OrderType::Market,
            OrderType::Limit { limit } => wit::OrderType::Limit(p(limit)?),
            OrderType::Stop { stop } => wit::OrderType::Stop(p(stop)?),
            OrderType::StopLimit { stop, limit } => wit::OrderType::StopLimit(wit::StopLimit {
                stop: p(stop)?,
                limit: p(limit)?,
            }),
            OrderType::TrailingStop { trail, percent } => wit::OrderType::TrailingStop(wit::TrailingStop {
                trail: p(trail)?,
                percent,
            }),
        },
        time_in_force: match i.time_in_force {
            TimeInForce::Day => wit::TimeInForce::Day,
            TimeInForce::Gtc => wit::TimeInForce::Gtc,
            TimeInForce::Ioc => wit::TimeInForce::Ioc,
            TimeInForce::Fok => wit::TimeInForce::Fok,
            TimeInForce::Opg => wit::TimeInForce::Opg,
            TimeInForce::Cls => wit::TimeInForce::Cls,
        },
        client_order_id: Some(client_order_id.as_str().to_owned()),
        reduce_only: i.reduce_only,
        reference_price: i.reference_price.map(p).transpose()?,
        take_profit: i.take_profit.map(p).transpose()?,
        stop_loss: i.stop_loss.map(p).transpose()?,
    })
}

/// A broker's ack as the domain type.
///
/// # Errors
/// [`MoneyError`] for an unacceptable decimal.
pub fn ack(a: &wit::OrderAck) -> Result<OrderAck, MoneyError> {
    Ok(OrderAck {
        client_order_id: a.client_order_id.clone(),
        broker_order_id: a.broker_order_id.clone(),
        status: match a.status {
            wit::OrderStatus::Pending => OrderStatus::Pending,
            wit::OrderStatus::Accepted => OrderStatus::Accepted,
            wit::OrderStatus::PartiallyFilled => OrderStatus::PartiallyFilled,
            wit::OrderStatus::Filled => OrderStatus::Filled,
            wit::OrderStatus::Canceled => OrderStatus::Canceled,
            wit::OrderStatus::Rejected => OrderStatus::Rejected,
            wit::OrderStatus::Expired => OrderStatus::Expired,
        },
        filled_quantity: decimal(a.filled_quantity, "filled quantity")?,
        average_fill_price: a
            .average_fill_price
            .map(|p| decimal(p, "average fill price"))
            .transpose()?,
        message: a.message.clone(),
    })
}

/// The kind and message of a rule error.
pub fn rule_error(e: &wit::RuleError) -> (&'static str, &str) {
    match e {
        wit::RuleError::InvalidAlert(m) => ("invalid_alert", m),
        wit::RuleError::Unsupported(m) => ("unsupported", m),
        wit::RuleError::InvalidConfig(m) => ("invalid_config", m),
        wit::RuleError::Internal(m) => ("internal", m),
    }
}

/// The kind and message of a broker error.
pub fn broker_error(e: &wit::BrokerError) -> (&'static str, &str) {
    match e {
        wit::BrokerError::Rejected(m) => ("rejected", m),
        wit::BrokerError::InvalidOrder(m) => ("invalid_order", m),
        wit::BrokerError::InsufficientFunds(m) => ("insufficient_funds", m),
        wit::BrokerError::NotFound(m) => ("not_found", m),
        wit::BrokerError::Duplicate(m) => ("duplicate", m),
        wit::BrokerError::Auth(m) => ("auth", m),
        wit::BrokerError::RateLimited(m) => ("rate_limited", m),
        wit::BrokerError::Unavailable(m) => ("unavailable", m),
        wit::BrokerError::Ambiguous(m) => ("ambiguous", m),
        wit::BrokerError::InvalidConfig(m) => ("invalid_config", m),
        wit::BrokerError::Internal(m) => ("internal", m),
    }
}

/// A WIT decimal as JSON text, exact (`"190.35"`), or the raw parts when
/// the scale is out of range.
pub fn decimal_json(d: wit::Decimal) -> Value {
    match decimal(d, "value") {
        Ok(v) => Value::String(v.to_string()),
        Err(_) => json!({ "mantissa": d.mantissa, "scale": d.scale }),
    }
}

fn opt_decimal_json(d: Option<wit::Decimal>) -> Value {
    d.map_or(Value::Null, decimal_json)
}

/// A WIT intent as JSON, as the plugin returned it (the text of
/// [`IntentJson`]).
pub fn intent_json(i: &wit::OrderIntent) -> Value {
    // Maps with string keys, strings, booleans and integers: cannot fail.
    serde_json::to_value(IntentJson(i)).unwrap_or(Value::Null)
}

/// A rule's result as the `output` of its `plugin.call` row: the intents,
/// or `{"error": {"kind", "message"}}`.
pub fn rule_output_json(r: Result<&[wit::OrderIntent], &wit::RuleError>) -> Value {
    serde_json::to_value(RuleOutputJson(r)).unwrap_or(Value::Null)
}

/// Serialises a rule's result as [`rule_output_json`] does, without
/// building a [`Value`]: every call measures its output against
/// `max_output_bytes`, and only an audited call needs the `Value` (measuring
/// by building it was about a tenth of a call of the default rule).
#[derive(Debug, Clone, Copy)]
pub struct RuleOutputJson<'a>(pub Result<&'a [wit::OrderIntent], &'a wit::RuleError>);

impl serde::Serialize for RuleOutputJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Ok(intents) => {
                let mut seq = s.serialize_seq(Some(intents.len()))?;
                for i in intents {
                    seq.serialize_element(&IntentJson(i))?;
                }
                seq.end()
            }
            Err(e) => {
                let (kind, message) = rule_error(e);
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("error", &json_map([("kind", kind), ("message", message)]))?;
                m.end()
            }
        }
    }
}

/// A small map of string values, serialised in place.
fn json_map<const N: usize>(entries: [(&'static str, &str); N]) -> impl serde::Serialize {
    struct M<'a, const N: usize>([(&'static str, &'a str); N]);
    impl<const N: usize> serde::Serialize for M<'_, N> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(N))?;
            for (k, v) in &self.0 {
                m.serialize_entry(k, v)?;
            }
            m.end()
        }
    }
    M(entries)
}

/// One intent as JSON: `symbol`, `side`, `quantity`, `order_type` (`type`
/// and its prices), `time_in_force`, `client_order_id`, `reduce_only`,
/// `reference_price`, `take_profit`, `stop_loss`; decimals as exact strings.
#[derive(Debug, Clone, Copy)]
pub struct IntentJson<'a>(pub &'a wit::OrderIntent);

impl serde::Serialize for IntentJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let i = self.0;
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("symbol", &i.symbol)?;
        m.serialize_entry(
            "side",
            match i.side {
                wit::Side::Buy => "buy",
                wit::Side::Sell => "sell",
            },
        )?;
        m.serialize_entry("quantity", &DecimalJson(i.quantity))?;
        m.serialize_entry("order_type", &OrderTypeJson(i.order_type))?;
        m.serialize_entry("time_in_force", time_in_force_name(i.time_in_force))?;
        m.serialize_entry("client_order_id", &i.client_order_id)?;
        m.serialize_entry("reduce_only", &i.reduce_only)?;
        m.serialize_entry("reference_price", &i.reference_price.map(DecimalJson))?;
        m.serialize_entry("take_profit", &i.take_profit.map(DecimalJson))?;
        m.serialize_entry("stop_loss", &i.stop_loss.map(DecimalJson))?;
        m.end()
    }
}

/// A time in force as the audit rows name it.
fn time_in_force_name(t: wit::TimeInForce) -> &'static str {
    match t {
        wit::TimeInForce::Day => "day",
        wit::TimeInForce::Gtc => "gtc",
        wit::TimeInForce::Ioc => "ioc",
        wit::TimeInForce::Fok => "fok",
        wit::TimeInForce::Opg => "opg",
        wit::TimeInForce::Cls => "cls",
    }
}

/// An order type as JSON: `{"type": …}` plus its prices.
struct OrderTypeJson(wit::OrderType);

impl serde::Serialize for OrderTypeJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        match self.0 {
            wit::OrderType::Market => m.serialize_entry("type", "market")?,
            wit::OrderType::Limit(l) => {
                m.serialize_entry("type", "limit")?;
                m.serialize_entry("limit", &DecimalJson(l))?;
            }
            wit::OrderType::Stop(st) => {
                m.serialize_entry("type", "stop")?;
                m.serialize_entry("stop", &DecimalJson(st))?;
            }
            wit::OrderType::StopLimit(sl) => {
                m.serialize_entry("type", "stop_limit")?;
                m.serialize_entry("stop", &DecimalJson(sl.stop))?;
                m.serialize_entry("limit", &DecimalJson(sl.limit))?;
            }
            wit::OrderType::TrailingStop(t) => {
                m.serialize_entry("type", "trailing_stop")?;
                m.serialize_entry("trail", &DecimalJson(t.trail))?;
                m.serialize_entry("percent", &t.percent)?;
            }
        }
        m.end()
    }
}

/// A WIT decimal as [`decimal_json`] renders it.
#[derive(Clone, Copy)]
struct DecimalJson(wit::Decimal);

impl serde::Serialize for DecimalJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match decimal(self.0, "value") {
            Ok(v) => s.collect_str(&v),
            Err(_) => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("mantissa", &self.0.mantissa)?;
                m.serialize_entry("scale", &self.0.scale)?;
                m.end()
            }
        }
    }
}

/// A WIT ack as JSON.
pub fn ack_json(a: &wit::OrderAck) -> Value {
    json!({
        "client_order_id": a.client_order_id,
        "broker_order_id": a.broker_order_id,
        "status": status_name(a.status),
        "filled_quantity": decimal_json(a.filled_quantity),
        "average_fill_price": opt_decimal_json(a.average_fill_price),
        "message": a.message,
    })
}

fn status_name(s: wit::OrderStatus) -> &'static str {
    match s {
        wit::OrderStatus::Pending => "pending",
        wit::OrderStatus::Accepted => "accepted",
        wit::OrderStatus::PartiallyFilled => "partially_filled",
        wit::OrderStatus::Filled => "filled",
        wit::OrderStatus::Canceled => "canceled",
        wit::OrderStatus::Rejected => "rejected",
        wit::OrderStatus::Expired => "expired",
    }
}

/// A WIT position as JSON.
pub fn position_json(p: &wit::Position) -> Value {
    json!({ "symbol": p.symbol, "quantity": decimal_json(p.quantity), "average_price": decimal_json(p.average_price) })
}

/// A WIT account as JSON.
pub fn account_json(a: &wit::Account) -> Value {
    json!({
        "currency": a.currency,
        "cash": decimal_json(a.cash),
        "equity": decimal_json(a.equity),
        "buying_power": decimal_json(a.buying_power),
    })
}

/// An alert as JSON for audit payloads: the body as text when it is UTF-8,
/// else base64.
pub fn alert_json(a: &wit::Alert) -> Value {
    let body = match std::str::from_utf8(&a.body) {
        Ok(t) => json!({ "text": t }),
        Err(_) => {
            use base64::Engine as _;
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(&a.body) })
        }
    };
    json!({
        "id": a.id,
        "received_at_ns": a.received_at,
        "route": a.route,
        "content_type": a.content_type,
        "body": body,
        "body_bytes": a.body.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_intent() -> wit::OrderIntent {
        wit::OrderIntent {
            symbol: "AAPL".into(),
            side: wit::Side::Buy,
            quantity: wit::Decimal { mantissa: 10, scale: 0 },
            order_type: wit::OrderType::Limit(wit::Decimal {
                mantissa: 19035,
                scale: 2,
            }),
            time_in_force: wit::TimeInForce::Gtc,
            client_order_id: Some("sig-1".into()),
            reduce_only: false,
            reference_price: Some(wit::Decimal {
                mantissa: 1901,
                scale: 1,
            }),
            take_profit: None,
            stop_loss: None,
        }
    }

    /// The JSON the audit rows held before `IntentJson` (built with
    /// `json!`), kept as the reference the serialiser must match.
    fn reference_intent_json(i: &wit::OrderIntent) -> Value {
        let order_type = match i.order_type {
            wit::OrderType::Market => json!({ "type": "market" }),
            wit::OrderType::Limit(l) => json!({ "type": "limit", "limit": decimal_json(l) }),
            wit::OrderType::Stop(s) => json!({ "type": "stop", "stop": decimal_json(s) }),
            wit::OrderType::StopLimit(sl) => {
                json!({ "type": "stop_limit", "stop": decimal_json(sl.stop), "limit": decimal_json(sl.limit) })
            }
            wit::OrderType::TrailingStop(t) => {
                json!({ "type": "trailing_stop", "trail": decimal_json(t.trail), "percent": t.percent })
            }
        };
        let tif = time_in_force_name(i.time_in_force);
        json!({
            "symbol": i.symbol,
            "side": match i.side { wit::Side::Buy => "buy", wit::Side::Sell => "sell" },
            "quantity": decimal_json(i.quantity),
            "order_type": order_type,
            "time_in_force": tif,
            "client_order_id": i.client_order_id,
            "reduce_only": i.reduce_only,
            "reference_price": i.reference_price.map_or(Value::Null, decimal_json),
            "take_profit": i.take_profit.map_or(Value::Null, decimal_json),
            "stop_loss": i.stop_loss.map_or(Value::Null, decimal_json),
        })
    }

    #[test]
    fn the_output_serialiser_writes_what_the_audit_row_holds() {
        let d = |mantissa, scale| wit::Decimal { mantissa, scale };
        let order_types = [
            wit::OrderType::Market,
            wit::OrderType::Limit(d(19035, 2)),
            wit::OrderType::Stop(d(-5, 0)),
            wit::OrderType::StopLimit(wit::StopLimit {
                stop: d(100, 0),
                limit: d(1005, 1),
            }),
            wit::OrderType::TrailingStop(wit::TrailingStop {
                trail: d(15, 1),
                percent: true,
            }),
            // A scale past 28 is not a decimal: rendered as its parts.
            wit::OrderType::Limit(d(1, 40)),
        ];
        let mut intents = Vec::new();
        for (n, order_type) in order_types.into_iter().enumerate() {
            let mut i = wit_intent();
            i.order_type = order_type;
            i.side = if n % 2 == 0 { wit::Side::Buy } else { wit::Side::Sell };
            i.symbol = format!("SYM\"{n}\u{e9}");
            i.take_profit = (n % 3 == 0).then(|| d(i64::MAX, 28));
            i.stop_loss = (n % 2 == 1).then(|| d(i64::MIN, 3));
            i.client_order_id = (n % 2 == 0).then(|| format!("c-{n}"));
            assert_eq!(intent_json(&i), reference_intent_json(&i), "{n}");
            intents.push(i);
        }
        let reference = Value::Array(intents.iter().map(reference_intent_json).collect());
        let view = RuleOutputJson(Ok(&intents));
        assert_eq!(rule_output_json(Ok(&intents)), reference);
        assert_eq!(serde_json::to_string(&view).unwrap().len(), reference.to_string().len());

        let e = wit::RuleError::InvalidAlert("no \"ticker\"".into());
        let reference = json!({ "error": { "kind": "invalid_alert", "message": "no \"ticker\"" } });
        assert_eq!(rule_output_json(Err(&e)), reference);
        assert_eq!(
            serde_json::to_string(&RuleOutputJson(Err(&e))).unwrap().len(),
            reference.to_string().len()
        );
        assert_eq!(rule_output_json(Ok(&[])), json!([]));
    }

    #[test]
    fn intents_convert_exactly_both_ways() {
        let d = intent(&wit_intent()).unwrap();
        assert_eq!(
            d.order_type,
            OrderType::Limit {
                limit: Price::new_checked("190.35".parse().unwrap()).unwrap()
            }
        );
        let coid = ClientOrderId::new("sig-1").unwrap();
        assert_eq!(intent_to_wit(&d, &coid).unwrap(), wit_intent());
    }

    #[test]
    fn invalid_intents_name_the_field() {
        let mut i = wit_intent();
        i.quantity = wit::Decimal { mantissa: 0, scale: 0 };
        assert_eq!(
            intent(&i).unwrap_err().to_string(),
            "quantity must be greater than zero, got 0"
        );
        let mut i = wit_intent();
        i.order_type = wit::OrderType::Limit(wit::Decimal { mantissa: 1, scale: 40 });
        assert!(intent(&i).unwrap_err().to_string().starts_with("limit price: scale 40"));
        let mut i = wit_intent();
        i.symbol = "aapl; drop".into();
        assert!(intent(&i).unwrap_err().to_string().contains("symbol"));
    }

    #[test]
    fn json_renders_decimals_as_exact_strings() {
        let v = intent_json(&wit_intent());
        assert_eq!(v["order_type"]["limit"], "190.35");
        assert_eq!(v["reference_price"], "190.1");
        assert_eq!(v["time_in_force"], "gtc");
    }
}
