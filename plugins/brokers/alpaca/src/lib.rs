//! Alpaca Trading API v2 (https://docs.alpaca.markets/reference): submit,
//! cancel, look up by client order id, open orders, positions, account.
//!
//! Credentials never enter the plugin: the account settings name two
//! secrets (`key_id_secret`, `secret_key_secret`, defaults `alpaca_key_id`
//! and `alpaca_secret_key`) that the host puts into the `APCA-API-KEY-ID`
//! and `APCA-API-SECRET-KEY` headers. The host sets `live` in the settings
//! from the route (which needs the typed acknowledgement): `live = true`
//! uses `https://api.alpaca.markets`, otherwise
//! `https://paper-api.alpaca.markets`; `base_url` overrides both (tests).
//!
//! Error mapping: 401 → auth; 403 → insufficient funds when Alpaca says
//! "buying power", else auth; 404 → not found; 422 → invalid order with
//! Alpaca's message (duplicate when the client order id was used); 429 →
//! rate limited (the host never resends); 5xx, timeouts and connection
//! failures while placing → ambiguous, so the host asks by client order id
//! before doing anything else.
//!
//! `no_std`, like every first-party plugin (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use algobanana_plugin_sdk::broker::Guest;
use algobanana_plugin_sdk::http::{self, Method, Request};
use algobanana_plugin_sdk::money::{self, Decimal};
use algobanana_plugin_sdk::types::{
    Account, BrokerError, CapabilityError, OrderAck, OrderIntent, OrderStatus, OrderType, Position, Side, TimeInForce,
};
use algobanana_plugin_sdk::{export_broker, secrets};
use serde_json::{Value, json};

struct Alpaca;

struct Conn {
    base: String,
    key_id: u32,
    secret_key: u32,
}

fn conn(settings: &str) -> Result<Conn, BrokerError> {
    let s: Value = serde_json::from_str(settings)
        .map_err(|e| BrokerError::InvalidConfig(format!("account settings are not JSON: {e}")))?;
    let live = s["live"].as_bool().unwrap_or(false);
    let base = match s["base_url"].as_str() {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None if live => "https://api.alpaca.markets".to_owned(),
        None => "https://paper-api.alpaca.markets".to_owned(),
    };
    let open = |key: &str, default: &str| -> Result<u32, BrokerError> {
        let name = s[key].as_str().unwrap_or(default);
        secrets::open(name).map_err(|e| {
            BrokerError::InvalidConfig(format!(
                "secret `{name}` ({key}): {}; set it with the CLI and grant it to this plugin",
                http::error_text(&e)
            ))
        })
    };
    Ok(Conn {
        base,
        key_id: open("key_id_secret", "alpaca_key_id")?,
        secret_key: open("secret_key_secret", "alpaca_secret_key")?,
    })
}

/// What went wrong with a request, before mapping to a broker error.
enum Fail {
    /// The request may have reached Alpaca (timeout, connection reset, 5xx).
    Unsure(String),
    /// Alpaca answered with an error status.
    Status(u16, String),
    /// The host refused the request (grant, quota).
    Refused(String),
}

fn call(c: &Conn, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Fail> {
    let mut headers = vec![
        http::secret_header("APCA-API-KEY-ID", c.key_id, "{secret}"),
        http::secret_header("APCA-API-SECRET-KEY", c.secret_key, "{secret}"),
        http::header("accept", "application/json"),
    ];
    if body.is_some() {
        headers.push(http::header("content-type", "application/json"));
    }
    let request = Request {
        method,
        url: format!("{}{path}", c.base),
        url_secret: None,
        headers,
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    };
    let resp = match http::send(&request) {
        Ok(r) => r,
        Err(CapabilityError::Unavailable(m)) => return Err(Fail::Unsure(m)),
        Err(e) => return Err(Fail::Refused(http::error_text(&e))),
    };
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    let message = || {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(300).collect())
    };
    match resp.status {
        200..=299 if text.trim().is_empty() => Ok(Value::Null),
        200..=299 => serde_json::from_str(&text).map_err(|e| Fail::Unsure(format!("unreadable answer: {e}"))),
        s if s >= 500 => Err(Fail::Unsure(format!("HTTP {s}: {}", message()))),
        s => Err(Fail::Status(s, message())),
    }
}

/// Maps a failure; `placing` turns "unsure" into `ambiguous`.
fn map(f: Fail, placing: bool) -> BrokerError {
    match f {
        Fail::Unsure(m) if placing => BrokerError::Ambiguous(format!("Alpaca did not answer clearly: {m}")),
        Fail::Unsure(m) => BrokerError::Unavailable(m),
        Fail::Refused(m) => BrokerError::InvalidConfig(m),
        Fail::Status(401, m) => BrokerError::Auth(format!("Alpaca refused the API keys: {m}")),
        Fail::Status(403, m) if m.to_ascii_lowercase().contains("buying power") => BrokerError::InsufficientFunds(m),
        Fail::Status(403, m) => BrokerError::Auth(format!("forbidden: {m}")),
        Fail::Status(404, m) => BrokerError::NotFound(m),
        Fail::Status(422, m) if m.contains("client_order_id must be unique") => BrokerError::Duplicate(m),
        Fail::Status(422, m) => BrokerError::InvalidOrder(m),
        Fail::Status(429, m) => BrokerError::RateLimited(format!("Alpaca rate limit: {m}")),
        Fail::Status(s, m) => BrokerError::Rejected(format!("HTTP {s}: {m}")),
    }
}

fn dec_str(d: algobanana_plugin_sdk::types::Decimal) -> Result<String, BrokerError> {
    money::from_wit(d)
        .map(|v| v.normalize().to_string())
        .map_err(|e| BrokerError::InvalidOrder(e.to_string()))
}

/// Alpaca sends numbers as strings ("10", "190.35"); null stays none.
fn num(v: &Value, key: &str) -> Result<Option<Decimal>, BrokerError> {
    match &v[key] {
        Value::Null => Ok(None),
        Value::String(s) => money::parse(s)
            .map(Some)
            .map_err(|e| BrokerError::Internal(format!("Alpaca sent `{key}` = {s:?}: {e}"))),
        Value::Number(n) => money::parse(&n.to_string())
            .map(Some)
            .map_err(|e| BrokerError::Internal(format!("Alpaca sent `{key}` = {n}: {e}"))),
        other => Err(BrokerError::Internal(format!("Alpaca sent `{key}` = {other}"))),
    }
}

fn wit(d: Decimal) -> Result<algobanana_plugin_sdk::types::Decimal, BrokerError> {
    money::to_wit(d).map_err(|e| BrokerError::Internal(e.to_string()))
}

fn ack(o: &Value) -> Result<OrderAck, BrokerError> {
    let status = match o["status"].as_str().unwrap_or_default() {
        "filled" => OrderStatus::Filled,
        "partially_filled" => OrderStatus::PartiallyFilled,
        "canceled" | "pending_cancel" | "done_for_day" | "replaced" | "stopped" => OrderStatus::Canceled,
        "expired" => OrderStatus::Expired,
        "rejected" | "suspended" => OrderStatus::Rejected,
        "pending_new" => OrderStatus::Pending,
        _ => OrderStatus::Accepted,
    };
    Ok(OrderAck {
        client_order_id: o["client_order_id"].as_str().unwrap_or_default().to_owned(),
        broker_order_id: o["id"].as_str().unwrap_or_default().to_owned(),
        status,
        filled_quantity: wit(num(o, "filled_qty")?.unwrap_or(Decimal::ZERO))?,
        average_fill_price: num(o, "filled_avg_price")?.map(wit).transpose()?,
        message: o["status"].as_str().map(|s| format!("alpaca status {s}")),
    })
}

fn order_body(client_order_id: &str, order: &OrderIntent) -> Result<Value, BrokerError> {
    let mut body = json!({
        "symbol": order.symbol,
        "qty": dec_str(order.quantity)?,
        "side": if matches!(order.side, Side::Buy) { "buy" } else { "sell" },
        "time_in_force": match order.time_in_force {
            TimeInForce::Day => "day",
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
            TimeInForce::Opg => "opg",
            TimeInForce::Cls => "cls",
        },
        "client_order_id": client_order_id,
    });
    // An exit pair: a reduce-only order carrying both exits is Alpaca's OCO
    // (a limit at the take-profit and a stop at the stop-loss, one cancelling
    // the other); the order's own type must be market or a limit at the
    // take-profit price.
    if order.reduce_only
        && let (Some(tp), Some(sl)) = (order.take_profit, order.stop_loss)
    {
        match order.order_type {
            OrderType::Market => {}
            OrderType::Limit(l) if dec_str(l)? == dec_str(tp)? => {}
            _ => {
                return Err(BrokerError::InvalidOrder(
                    "an OCO exit (reduce-only with take-profit and stop-loss) must be a market order or a limit at the take-profit price".into(),
                ));
            }
        }
        body["type"] = json!("limit");
        body["order_class"] = json!("oco");
        body["take_profit"] = json!({ "limit_price": dec_str(tp)? });
        body["stop_loss"] = json!({ "stop_price": dec_str(sl)? });
        return Ok(body);
    }
    let (kind, limit, stop) = match order.order_type {
        OrderType::Market => ("market", None, None),
        OrderType::Limit(l) => ("limit", Some(l), None),
        OrderType::Stop(s) => ("stop", None, Some(s)),
        OrderType::StopLimit(sl) => ("stop_limit", Some(sl.limit), Some(sl.stop)),
        OrderType::TrailingStop(t) => {
            if order.take_profit.is_some() || order.stop_loss.is_some() {
                return Err(BrokerError::InvalidOrder(
                    "Alpaca does not take a trailing stop with take-profit or stop-loss legs; send the exits as their own orders".into(),
                ));
            }
            body["type"] = json!("trailing_stop");
            let field = if t.percent { "trail_percent" } else { "trail_price" };
            body[field] = json!(dec_str(t.trail)?);
            return Ok(body);
        }
    };
    body["type"] = json!(kind);
    if let Some(l) = limit {
        body["limit_price"] = json!(dec_str(l)?);
    }
    if let Some(s) = stop {
        body["stop_price"] = json!(dec_str(s)?);
    }
    match (order.take_profit, order.stop_loss) {
        (Some(tp), Some(sl)) => {
            body["order_class"] = json!("bracket");
            body["take_profit"] = json!({ "limit_price": dec_str(tp)? });
            body["stop_loss"] = json!({ "stop_price": dec_str(sl)? });
        }
        (Some(tp), None) => {
            body["order_class"] = json!("oto");
            body["take_profit"] = json!({ "limit_price": dec_str(tp)? });
        }
        (None, Some(sl)) => {
            body["order_class"] = json!("oto");
            body["stop_loss"] = json!({ "stop_price": dec_str(sl)? });
        }
        (None, None) => {}
    }
    Ok(body)
}

fn by_client_order_id(c: &Conn, id: &str) -> Result<Value, BrokerError> {
    call(
        c,
        Method::Get,
        &format!("/v2/orders:by_client_order_id?client_order_id={}", http::urlencode(id)),
        None,
    )
    .map_err(|f| map(f, false))
}

impl Guest for Alpaca {
    fn place_order(settings: String, client_order_id: String, order: OrderIntent) -> Result<OrderAck, BrokerError> {
        let c = conn(&settings)?;
        let body = order_body(&client_order_id, &order)?;
        let o = call(&c, Method::Post, "/v2/orders", Some(&body)).map_err(|f| map(f, true))?;
        ack(&o)
    }

    fn cancel_order(settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let c = conn(&settings)?;
        let o = by_client_order_id(&c, &client_order_id)?;
        let id = o["id"].as_str().unwrap_or_default();
        call(&c, Method::Delete, &format!("/v2/orders/{}", http::urlencode(id)), None).map_err(|f| map(f, false))?;
        ack(&by_client_order_id(&c, &client_order_id)?)
    }

    fn get_order(settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let c = conn(&settings)?;
        ack(&by_client_order_id(&c, &client_order_id)?)
    }

    fn open_orders(settings: String) -> Result<Vec<OrderAck>, BrokerError> {
        let c = conn(&settings)?;
        let list = call(&c, Method::Get, "/v2/orders?status=open&limit=500", None).map_err(|f| map(f, false))?;
        list.as_array().into_iter().flatten().map(ack).collect()
    }

    fn positions(settings: String) -> Result<Vec<Position>, BrokerError> {
        let c = conn(&settings)?;
        let list = call(&c, Method::Get, "/v2/positions", None).map_err(|f| map(f, false))?;
        list.as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut qty = num(p, "qty")?.unwrap_or(Decimal::ZERO);
                // Short positions: Alpaca reports side "short" (and a negative qty).
                if p["side"] == "short" && qty > Decimal::ZERO {
                    qty = -qty;
                }
                Ok(Position {
                    symbol: p["symbol"].as_str().unwrap_or_default().to_owned(),
                    quantity: wit(qty)?,
                    average_price: wit(num(p, "avg_entry_price")?.unwrap_or(Decimal::ZERO))?,
                })
            })
            .collect()
    }

    fn account(settings: String) -> Result<Account, BrokerError> {
        let c = conn(&settings)?;
        let a = call(&c, Method::Get, "/v2/account", None).map_err(|f| map(f, false))?;
        let field = |k: &str| -> Result<algobanana_plugin_sdk::types::Decimal, BrokerError> {
            wit(num(&a, k)?.unwrap_or(Decimal::ZERO))
        };
        Ok(Account {
            currency: a["currency"].as_str().unwrap_or("USD").to_owned(),
            cash: field("cash")?,
            equity: field("equity")?,
            buying_power: field("buying_power")?,
        })
    }
}

export_broker!(Alpaca);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "alpaca"
version = "0.1.0"
world = "broker"
wit = "0.1.0"
description = "Alpaca Trading API v2 broker adapter"

[requests]
http = ["https://paper-api.alpaca.markets", "https://api.alpaca.markets"]
secrets = ["alpaca_key_id", "alpaca_secret_key"]
"#
);
