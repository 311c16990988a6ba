//! A signed-request exchange adapter in the Binance spot style
//! (https://developers.binance.com/docs/binance-spot-api-docs/rest-api):
//! every private request carries `timestamp` and `recvWindow` in its query,
//! `signature` = hex HMAC-SHA256 of the query string, and the API key in
//! `X-MBX-APIKEY`. The plugin never holds the secret: the host signs the
//! query (`secrets::sign`) and fills the key header.
//!
//! Settings: `base_url` (default `https://api.binance.com`; the testnet is
//! `https://testnet.binance.vision`), `api_key_secret` / `api_secret_secret`
//! (secret names, defaults `binance_api_key` / `binance_api_secret`),
//! `quote` (the quote asset positions and cash are counted in, default
//! `USDT`), `recv_window` (ms, default 5000), `symbols` (required: the symbols the
//! account trades: the exchange looks orders up and cancels them per
//! symbol).
//!
//! Errors (`{"code": -…, "msg": "…"}`): 401/-1022/-2014/-2015 → auth;
//! -2010 insufficient balance → insufficient funds; -2010 duplicate →
//! duplicate; -2013 / -2011 unknown order → not found; -1021 timestamp →
//! unavailable; 429 / 418 → rate limited; other 4xx → invalid order; 5xx
//! and timeouts while placing → ambiguous (the host asks by client order id).
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
use algobanana_plugin_sdk::secrets::{self, SignAlgorithm};
use algobanana_plugin_sdk::types::{
    Account, BrokerError, CapabilityError, OrderAck, OrderIntent, OrderStatus, OrderType, Position, Side, TimeInForce,
};
use algobanana_plugin_sdk::{clock, export_broker};
use serde_json::Value;

struct Binance;

struct Conn {
    base: String,
    key: u32,
    secret: u32,
    quote: String,
    recv_window: u64,
}

fn conn(settings: &str) -> Result<Conn, BrokerError> {
    let s: Value = serde_json::from_str(settings)
        .map_err(|e| BrokerError::InvalidConfig(format!("account settings are not JSON: {e}")))?;
    let open = |key: &str, default: &str| -> Result<u32, BrokerError> {
        let name = s[key].as_str().unwrap_or(default);
        secrets::open(name)
            .map_err(|e| BrokerError::InvalidConfig(format!("secret `{name}` ({key}): {}", http::error_text(&e))))
    };
    Ok(Conn {
        base: s["base_url"]
            .as_str()
            .unwrap_or("https://api.binance.com")
            .trim_end_matches('/')
            .to_owned(),
        key: open("api_key_secret", "binance_api_key")?,
        secret: open("api_secret_secret", "binance_api_secret")?,
        quote: s["quote"].as_str().unwrap_or("USDT").to_owned(),
        recv_window: s["recv_window"].as_u64().unwrap_or(5000),
    })
}

enum Fail {
    Unsure(String),
    Api(u16, i64, String),
    Refused(String),
}

/// A signed request: `params` plus timestamp and recvWindow, signed by the host.
fn signed(c: &Conn, method: Method, path: &str, params: &[(&str, String)]) -> Result<Value, Fail> {
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", http::urlencode(v)))
        .collect();
    query.push(format!("recvWindow={}", c.recv_window));
    query.push(format!("timestamp={}", clock::now_ns() / 1_000_000));
    let query = query.join("&");
    let signature = secrets::sign(c.secret, SignAlgorithm::HmacSha256, query.as_bytes())
        .map_err(|e| Fail::Refused(format!("signing: {}", http::error_text(&e))))?;
    let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
    let request = Request {
        method,
        url: format!("{}{path}?{query}&signature={hex}", c.base),
        url_secret: None,
        headers: vec![http::secret_header("X-MBX-APIKEY", c.key, "{secret}")],
        body: Vec::new(),
    };
    let resp = match http::send(&request) {
        Ok(r) => r,
        Err(CapabilityError::Unavailable(m)) => return Err(Fail::Unsure(m)),
        Err(e) => return Err(Fail::Refused(http::error_text(&e))),
    };
    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    match resp.status {
        200..=299 => Ok(v),
        s if s >= 500 => Err(Fail::Unsure(format!("HTTP {s}"))),
        s => Err(Fail::Api(
            s,
            v["code"].as_i64().unwrap_or(0),
            v["msg"].as_str().unwrap_or_default().to_owned(),
        )),
    }
}

fn map(f: Fail, placing: bool) -> BrokerError {
    match f {
        Fail::Unsure(m) if placing => BrokerError::Ambiguous(format!("the exchange did not answer clearly: {m}")),
        Fail::Unsure(m) => BrokerError::Unavailable(m),
        Fail::Refused(m) => BrokerError::InvalidConfig(m),
        Fail::Api(429 | 418, _, m) => BrokerError::RateLimited(format!("rate limit: {m}")),
        Fail::Api(401, _, m) | Fail::Api(_, -1022 | -2014 | -2015, m) => BrokerError::Auth(m),
        Fail::Api(_, -2010, m) if m.to_ascii_lowercase().contains("duplicate") => BrokerError::Duplicate(m),
        Fail::Api(_, -2010, m) if m.to_ascii_lowercase().contains("insufficient") => BrokerError::InsufficientFunds(m),
        Fail::Api(_, -2013 | -2011, m) => BrokerError::NotFound(m),
        Fail::Api(_, -1021, m) => BrokerError::Unavailable(format!("clock skew: {m}")),
        Fail::Api(_, code, m) => BrokerError::InvalidOrder(format!("{code}: {m}")),
    }
}

/// The symbols the account trades (`symbols` in the settings): the
/// exchange looks orders up per symbol.
///
/// Without them the adapter cannot look an order up, and must not answer
/// `not-found` (the host would take that as "never placed").
fn symbols(settings: &str) -> Result<Vec<String>, BrokerError> {
    let s: Value = serde_json::from_str(settings).unwrap_or_default();
    let list: Vec<String> = s["symbols"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if list.is_empty() {
        return Err(BrokerError::InvalidConfig(
            "set `symbols` in the account settings (the symbols this account trades): the exchange looks orders up per symbol".into(),
        ));
    }
    Ok(list)
}

fn dec_str(d: algobanana_plugin_sdk::types::Decimal) -> Result<String, BrokerError> {
    money::from_wit(d)
        .map(|v| v.normalize().to_string())
        .map_err(|e| BrokerError::InvalidOrder(e.to_string()))
}

fn num(v: &Value, key: &str) -> Result<Decimal, BrokerError> {
    v[key]
        .as_str()
        .map(money::parse)
        .transpose()
        .map_err(|e| BrokerError::Internal(format!("`{key}`: {e}")))
        .map(|d| d.unwrap_or(Decimal::ZERO))
}

fn wit(d: Decimal) -> Result<algobanana_plugin_sdk::types::Decimal, BrokerError> {
    money::to_wit(d).map_err(|e| BrokerError::Internal(e.to_string()))
}

fn ack(o: &Value) -> Result<OrderAck, BrokerError> {
    let status = match o["status"].as_str().unwrap_or_default() {
        "FILLED" => OrderStatus::Filled,
        "PARTIALLY_FILLED" => OrderStatus::PartiallyFilled,
        "CANCELED" | "PENDING_CANCEL" => OrderStatus::Canceled,
        "EXPIRED" | "EXPIRED_IN_MATCH" => OrderStatus::Expired,
        "REJECTED" => OrderStatus::Rejected,
        _ => OrderStatus::Accepted,
    };
    let filled = num(o, "executedQty")?;
    let quote = num(o, "cummulativeQuoteQty")?;
    let average = if filled.is_zero() {
        None
    } else {
        Some(wit((quote / filled).normalize())?)
    };
    Ok(OrderAck {
        client_order_id: o["clientOrderId"].as_str().unwrap_or_default().to_owned(),
        broker_order_id: o["orderId"].as_i64().map(|i| i.to_string()).unwrap_or_default(),
        status,
        filled_quantity: wit(filled)?,
        average_fill_price: average,
        message: o["status"].as_str().map(|s| format!("exchange status {s}")),
    })
}

impl Guest for Binance {
    fn place_order(settings: String, client_order_id: String, order: OrderIntent) -> Result<OrderAck, BrokerError> {
        if order.take_profit.is_some() || order.stop_loss.is_some() {
            return Err(BrokerError::InvalidOrder(
                "this adapter places single orders; Binance spot has no bracket, so send take-profit and stop-loss as their own orders".into(),
            ));
        }
        let c = conn(&settings)?;
        let mut p: Vec<(&str, String)> = vec![
            ("symbol", order.symbol.clone()),
            (
                "side",
                if matches!(order.side, Side::Buy) { "BUY" } else { "SELL" }.to_owned(),
            ),
            ("quantity", dec_str(order.quantity)?),
            ("newClientOrderId", client_order_id),
            ("newOrderRespType", "FULL".to_owned()),
        ];
        let tif = match order.time_in_force {
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
            _ => "GTC",
        };
        match order.order_type {
            OrderType::Market => p.push(("type", "MARKET".into())),
            OrderType::Limit(l) => {
                p.push(("type", "LIMIT".into()));
                p.push(("timeInForce", tif.into()));
                p.push(("price", dec_str(l)?));
            }
            OrderType::Stop(s) => {
                p.push(("type", "STOP_LOSS".into()));
                p.push(("stopPrice", dec_str(s)?));
            }
            OrderType::StopLimit(sl) => {
                p.push(("type", "STOP_LOSS_LIMIT".into()));
                p.push(("timeInForce", tif.into()));
                p.push(("price", dec_str(sl.limit)?));
                p.push(("stopPrice", dec_str(sl.stop)?));
            }
            OrderType::TrailingStop(_) => {
                return Err(BrokerError::InvalidOrder(
                    "this adapter does not place trailing stops (Binance spot expresses them as trailingDelta on a stop order); use a stop or stop-limit".into(),
                ));
            }
        }
        let o = signed(&c, Method::Post, "/api/v3/order", &p).map_err(|f| map(f, true))?;
        ack(&o)
    }

    fn cancel_order(settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let c = conn(&settings)?;
        for symbol in symbols(&settings)? {
            match signed(
                &c,
                Method::Delete,
                "/api/v3/order",
                &[
                    ("symbol", symbol.clone()),
                    ("origClientOrderId", client_order_id.clone()),
                ],
            ) {
                Ok(o) => return ack(&o),
                Err(Fail::Api(_, -2011 | -2013, _)) => continue,
                Err(f) => return Err(map(f, false)),
            }
        }
        Err(BrokerError::NotFound(format!(
            "no working order {client_order_id} in the account's symbols"
        )))
    }

    fn get_order(settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let c = conn(&settings)?;
        let symbols = symbols(&settings)?;
        for symbol in &symbols {
            match signed(
                &c,
                Method::Get,
                "/api/v3/order",
                &[
                    ("symbol", symbol.clone()),
                    ("origClientOrderId", client_order_id.clone()),
                ],
            ) {
                Ok(o) => return ack(&o),
                Err(Fail::Api(_, -2013, _)) => continue,
                Err(f) => return Err(map(f, false)),
            }
        }
        Err(BrokerError::NotFound(format!(
            "order {client_order_id} not found in {}",
            symbols.join(", ")
        )))
    }

    fn open_orders(settings: String) -> Result<Vec<OrderAck>, BrokerError> {
        let c = conn(&settings)?;
        let list = signed(&c, Method::Get, "/api/v3/openOrders", &[]).map_err(|f| map(f, false))?;
        list.as_array().into_iter().flatten().map(ack).collect()
    }

    fn positions(settings: String) -> Result<Vec<Position>, BrokerError> {
        let c = conn(&settings)?;
        let a = signed(
            &c,
            Method::Get,
            "/api/v3/account",
            &[("omitZeroBalances", "true".into())],
        )
        .map_err(|f| map(f, false))?;
        a["balances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["asset"].as_str() != Some(c.quote.as_str()))
            .map(|b| {
                let qty = num(b, "free")? + num(b, "locked")?;
                Ok(Position {
                    symbol: format!("{}{}", b["asset"].as_str().unwrap_or_default(), c.quote),
                    quantity: wit(qty)?,
                    average_price: wit(Decimal::ZERO)?,
                })
            })
            .collect()
    }

    fn account(settings: String) -> Result<Account, BrokerError> {
        let c = conn(&settings)?;
        let a = signed(&c, Method::Get, "/api/v3/account", &[]).map_err(|f| map(f, false))?;
        let cash = a["balances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["asset"].as_str() == Some(c.quote.as_str()))
            .map(|b| num(b, "free"))
            .transpose()?
            .unwrap_or(Decimal::ZERO);
        Ok(Account {
            currency: c.quote.clone(),
            cash: wit(cash)?,
            equity: wit(cash)?,
            buying_power: wit(cash)?,
        })
    }
}

export_broker!(Binance);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "binance"
version = "0.1.0"
world = "broker"
wit = "0.1.0"
description = "Binance-style spot adapter with host-side HMAC-SHA256 signing"

[requests]
http = ["https://api.binance.com", "https://testnet.binance.vision"]
secrets = ["binance_api_key", "binance_api_secret"]
"#
);
