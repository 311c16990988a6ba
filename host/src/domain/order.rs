//! Orders on the host side: a rule's [`OrderIntent`] after validation, and a
//! broker's [`OrderAck`]. These are the types the risk engine, the audit
//! trail and the HTTP responses see; WIT types are converted at the plugin
//! boundary (`plugins::convert`).

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;

use super::ids::{ClientOrderId, IdError};
use super::money::{Price, Quantity};

/// An instrument symbol as the broker names it: 1–32 characters of
/// `[A-Z0-9./_-]`, upper case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Symbol(String);

impl Symbol {
    /// Validates `value`.
    ///
    /// # Errors
    /// [`IdError`] unless it is 1–32 upper-case letters, digits, '.', '/', '_' or '-'.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= 32
            && value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || matches!(c, '.' | '/' | '_' | '-'));
        if ok {
            Ok(Self(value))
        } else {
            Err(IdError {
                kind: "symbol",
                value: value.chars().take(80).collect(),
                expected: "1–32 upper-case letters, digits, '.', '/', '_' or '-' (AAPL, BTC/USD)",
            })
        }
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which way an order trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

/// How an order is priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderType {
    /// At the best available price.
    Market,
    /// At `limit` or better.
    Limit {
        /// The limit price.
        limit: Price,
    },
    /// A market order once `stop` trades.
    Stop {
        /// The stop price.
        stop: Price,
    },
    /// A limit order at `limit` once `stop` trades.
    StopLimit {
        /// The stop price.
        stop: Price,
        /// The limit price.
        limit: Price,
    },
    /// A market order once the price retraces by `trail` from its best
    /// since the order was placed.
    TrailingStop {
        /// The distance: a price amount, or a percentage (below 100) when
        /// `percent`.
        trail: Price,
        /// Whether `trail` is a percentage.
        percent: bool,
    },
}

/// How long an order stays working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Until the end of the trading day.
    Day,
    /// Good until canceled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
    /// Opening auction only.
    Opg,
    /// Closing auction only.
    Cls,
}

/// A validated order intent from a rule plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderIntent {
    /// The instrument.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// How much, greater than zero.
    pub quantity: Quantity,
    /// Market, limit, stop or stop-limit.
    pub order_type: OrderType,
    /// How long it works.
    pub time_in_force: TimeInForce,
    /// The id the rule asked for, when it asked for a valid one.
    pub requested_client_order_id: Option<ClientOrderId>,
    /// True if and only if the order may only reduce a position.
    pub reduce_only: bool,
    /// The alert's market price.
    pub reference_price: Option<Price>,
    /// Bracket take-profit price.
    pub take_profit: Option<Price>,
    /// Bracket stop-loss price.
    pub stop_loss: Option<Price>,
}

/// Lifecycle state of an order as a broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Received, not yet acknowledged by the venue.
    Pending,
    /// Working, nothing filled.
    Accepted,
    /// Partly filled, the rest working.
    PartiallyFilled,
    /// Completely filled.
    Filled,
    /// Canceled.
    Canceled,
    /// Refused.
    Rejected,
    /// Expired by its time in force.
    Expired,
}

/// A broker's answer about one order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderAck {
    /// The id the host sent.
    pub client_order_id: String,
    /// The broker's id.
    pub broker_order_id: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// Filled so far.
    pub filled_quantity: Decimal,
    /// Average fill price, when anything filled.
    pub average_fill_price: Option<Decimal>,
    /// The broker's free text.
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn symbols_are_validated() {
        assert!(Symbol::new("BTC/USD").is_ok());
        assert!(Symbol::new("aapl").is_err());
        assert!(Symbol::new("").is_err());
        assert!(Symbol::new("A B").is_err());
    }

    #[test]
    fn intents_serialise_with_exact_decimal_strings() {
        let intent = OrderIntent {
            symbol: Symbol::new("AAPL").unwrap(),
            side: Side::Buy,
            quantity: Quantity::new_checked(Decimal::from_str("0.1").unwrap()).unwrap(),
            order_type: OrderType::Limit {
                limit: Price::new_checked(Decimal::from_str("190.35").unwrap()).unwrap(),
            },
            time_in_force: TimeInForce::Gtc,
            requested_client_order_id: None,
            reduce_only: false,
            reference_price: None,
            take_profit: None,
            stop_loss: None,
        };
        let json = serde_json::to_value(&intent).unwrap();
        assert_eq!(json["quantity"], "0.1");
        assert_eq!(json["order_type"]["type"], "limit");
        assert_eq!(json["order_type"]["limit"], "190.35");
        assert_eq!(json["time_in_force"], "gtc");
    }
}
