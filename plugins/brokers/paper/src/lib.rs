//! The default broker: a paper (simulated) account.
//!
//! - Market orders fill at the order's reference price (the alert's price).
//! - Limit, stop and stop-limit orders fill at the reference price when it is
//!   marketable or triggered; otherwise they rest as open orders (IOC and FOK
//!   orders are canceled instead).
//! - Cash and positions live in one small kv document per account
//!   (`book/ACCOUNT`); each order is its own key (`order/ACCOUNT/ID`), so a
//!   call reads and writes a few hundred bytes however many orders exist.
//!   The newest `ORDER_WINDOW` orders are kept (a ring of keys
//!   `ring/ACCOUNT/SLOT`); a client order id is rejected as a duplicate
//!   while its order is in the window. The host commits kv writes only when
//!   a call returns `ok`.
//!
//! Account settings (JSON object, all optional): `account_id` (default
//! `"paper"`), `currency` (`"USD"`), `initial_cash` (`"100000"`),
//! `allow_short` (`true`).
//!
//! `no_std`, like the default rule (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use algobanana_plugin_sdk::broker::Guest;
use algobanana_plugin_sdk::money::{self, Decimal};
use algobanana_plugin_sdk::types::{
    Account, BrokerError, OrderAck, OrderIntent, OrderStatus, OrderType, Position, Side, TimeInForce,
};
use algobanana_plugin_sdk::{export_broker, kv, log};
use serde::{Deserialize, Serialize};

/// Orders kept per account. 400 orders + 400 ring slots + the book stay
/// under the default kv quota of 1,000 keys.
const ORDER_WINDOW: u64 = 400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_account")]
    account_id: String,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default = "default_cash")]
    initial_cash: Decimal,
    #[serde(default = "default_true")]
    allow_short: bool,
    /// Set by the host from the route's `live` (always false for paper).
    #[serde(default)]
    #[allow(dead_code)]
    live: bool,
}

fn default_account() -> String {
    "paper".into()
}
fn default_currency() -> String {
    "USD".into()
}
fn default_cash() -> Decimal {
    Decimal::from(100_000)
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct PaperPosition {
    quantity: Decimal,
    average_price: Decimal,
    last_price: Decimal,
}

#[derive(Debug, Serialize, Deserialize, Clone)]
struct PaperOrder {
    seq: u64,
    broker_order_id: String,
    symbol: String,
    side: String,
    quantity: Decimal,
    status: String,
    filled_quantity: Decimal,
    average_fill_price: Option<Decimal>,
    message: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Book {
    cash: Decimal,
    next_seq: u64,
    positions: BTreeMap<String, PaperPosition>,
}

fn settings(text: &str) -> Result<Settings, BrokerError> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| {
        BrokerError::InvalidConfig(format!(
            "paper broker settings: {e}; expected an object with optional account_id, currency, initial_cash, allow_short"
        ))
    })
}

fn book_key(s: &Settings) -> String {
    format!("book/{}", s.account_id)
}

fn order_key(s: &Settings, client_order_id: &str) -> String {
    format!("order/{}/{client_order_id}", s.account_id)
}

fn ring_key(s: &Settings, seq: u64) -> String {
    format!("ring/{}/{}", s.account_id, seq % ORDER_WINDOW)
}

fn kv_err(what: &str, e: algobanana_plugin_sdk::types::CapabilityError) -> BrokerError {
    BrokerError::Internal(format!("cannot {what}: {e:?}"))
}

fn load(s: &Settings) -> Result<Book, BrokerError> {
    let book = kv::get_json::<Book>(&book_key(s)).map_err(|e| kv_err("read the paper book", e))?;
    Ok(book.unwrap_or_else(|| Book {
        cash: s.initial_cash,
        next_seq: 1,
        positions: BTreeMap::new(),
    }))
}

fn save(s: &Settings, book: &Book) -> Result<(), BrokerError> {
    kv::set_json(&book_key(s), book).map_err(|e| kv_err("write the paper book", e))
}

fn load_order(s: &Settings, client_order_id: &str) -> Result<Option<PaperOrder>, BrokerError> {
    kv::get_json(&order_key(s, client_order_id)).map_err(|e| kv_err("read a paper order", e))
}

/// Stores a new order in its ring slot, evicting the order that held it.
fn insert_order(s: &Settings, client_order_id: &str, order: &PaperOrder) -> Result<(), BrokerError> {
    let ring = ring_key(s, order.seq);
    if let Some(old) = kv::get_json::<String>(&ring).map_err(|e| kv_err("read the order ring", e))? {
        kv::delete(&order_key(s, &old)).map_err(|e| kv_err("evict an old paper order", e))?;
    }
    kv::set_json(&ring, &client_order_id).map_err(|e| kv_err("write the order ring", e))?;
    kv::set_json(&order_key(s, client_order_id), order).map_err(|e| kv_err("write a paper order", e))
}

fn dec(d: algobanana_plugin_sdk::types::Decimal, what: &str) -> Result<Decimal, BrokerError> {
    money::from_wit(d).map_err(|e| BrokerError::InvalidOrder(format!("{what}: {e}")))
}

fn wit(d: Decimal) -> Result<algobanana_plugin_sdk::types::Decimal, BrokerError> {
    money::to_wit(d).map_err(|e| BrokerError::Internal(e.to_string()))
}

fn overflow() -> BrokerError {
    BrokerError::Internal("amount overflow in paper book".into())
}

fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Pending => "pending",
        OrderStatus::Accepted => "accepted",
        OrderStatus::PartiallyFilled => "partially-filled",
        OrderStatus::Filled => "filled",
        OrderStatus::Canceled => "canceled",
        OrderStatus::Rejected => "rejected",
        OrderStatus::Expired => "expired",
    }
}

fn status_of(name: &str) -> OrderStatus {
    match name {
        "pending" => OrderStatus::Pending,
        "accepted" => OrderStatus::Accepted,
        "partially-filled" => OrderStatus::PartiallyFilled,
        "filled" => OrderStatus::Filled,
        "canceled" => OrderStatus::Canceled,
        "expired" => OrderStatus::Expired,
        _ => OrderStatus::Rejected,
    }
}

fn ack(client_order_id: &str, o: &PaperOrder) -> Result<OrderAck, BrokerError> {
    Ok(OrderAck {
        client_order_id: client_order_id.to_owned(),
        broker_order_id: o.broker_order_id.clone(),
        status: status_of(&o.status),
        filled_quantity: wit(o.filled_quantity)?,
        average_fill_price: o.average_fill_price.map(wit).transpose()?,
        message: o.message.clone(),
    })
}

/// The fill price if the order executes now against `reference`, else none.
fn executable_price(order: &OrderIntent, reference: Option<Decimal>) -> Result<Option<Decimal>, BrokerError> {
    let Some(r) = reference else { return Ok(None) };
    let buy = matches!(order.side, Side::Buy);
    let fills = match order.order_type {
        OrderType::Market => true,
        OrderType::Limit(l) => {
            let l = dec(l, "limit price")?;
            if buy { r <= l } else { r >= l }
        }
        OrderType::Stop(s) => {
            let s = dec(s, "stop price")?;
            if buy { r >= s } else { r <= s }
        }
        OrderType::StopLimit(sl) => {
            let (s, l) = (dec(sl.stop, "stop price")?, dec(sl.limit, "limit price")?);
            let triggered = if buy { r >= s } else { r <= s };
            let marketable = if buy { r <= l } else { r >= l };
            triggered && marketable
        }
        // The paper book has no price stream to trail: the order rests,
        // open, until it is canceled.
        OrderType::TrailingStop(_) => false,
    };
    Ok(fills.then_some(r))
}

/// Applies a fill of `qty` (signed: + buys) at `price` to cash and position.
fn apply_fill(book: &mut Book, symbol: &str, qty: Decimal, price: Decimal) -> Result<(), BrokerError> {
    let notional = qty.checked_mul(price).ok_or_else(overflow)?;
    book.cash = book.cash.checked_sub(notional).ok_or_else(overflow)?;
    let pos = book.positions.entry(symbol.to_owned()).or_insert(PaperPosition {
        quantity: Decimal::ZERO,
        average_price: price,
        last_price: price,
    });
    let old = pos.quantity;
    let new = old.checked_add(qty).ok_or_else(overflow)?;
    if old.is_zero() || (old.is_sign_positive() == qty.is_sign_positive()) {
        // Opening or adding: volume-weighted average entry price.
        let cost = old
            .abs()
            .checked_mul(pos.average_price)
            .and_then(|c| c.checked_add(qty.abs().checked_mul(price)?));
        let cost = cost.ok_or_else(overflow)?;
        pos.average_price = cost.checked_div(new.abs()).ok_or_else(overflow)?.normalize();
    } else if !new.is_zero() && new.is_sign_positive() != old.is_sign_positive() {
        // Flipped through zero: the remainder was opened at this price.
        pos.average_price = price;
    }
    pos.quantity = new;
    pos.last_price = price;
    if pos.quantity.is_zero() {
        book.positions.remove(symbol);
    }
    Ok(())
}

struct Paper;

impl Guest for Paper {
    fn place_order(
        account_settings: String,
        client_order_id: String,
        order: OrderIntent,
    ) -> Result<OrderAck, BrokerError> {
        let s = settings(&account_settings)?;
        let mut book = load(&s)?;
        if load_order(&s, &client_order_id)?.is_some() {
            return Err(BrokerError::Duplicate(format!(
                "client order id `{client_order_id}` was already used"
            )));
        }
        let qty = dec(order.quantity, "quantity")?;
        if qty <= Decimal::ZERO {
            return Err(BrokerError::InvalidOrder(format!(
                "quantity must be greater than zero, got {qty}"
            )));
        }
        let reference = order.reference_price.map(|p| dec(p, "reference price")).transpose()?;
        let signed = if matches!(order.side, Side::Buy) { qty } else { -qty };
        let held = book.positions.get(&order.symbol).map_or(Decimal::ZERO, |p| p.quantity);

        let seq = book.next_seq;
        book.next_seq += 1;
        let mut record = PaperOrder {
            seq,
            broker_order_id: format!("paper-{}-{seq}", s.account_id),
            symbol: order.symbol.clone(),
            side: if matches!(order.side, Side::Buy) { "buy" } else { "sell" }.into(),
            quantity: qty,
            status: status_name(OrderStatus::Accepted).into(),
            filled_quantity: Decimal::ZERO,
            average_fill_price: None,
            // Said on the order, never silently dropped.
            message: (order.take_profit.is_some() || order.stop_loss.is_some()).then(|| {
                "the paper broker does not simulate take-profit or stop-loss legs; only the entry was placed".to_owned()
            }),
        };

        let reject = |record: &mut PaperOrder, why: String| {
            record.status = status_name(OrderStatus::Rejected).into();
            record.message = Some(why);
        };
        let after = held.checked_add(signed).ok_or_else(overflow)?;
        let reduces = !held.is_zero() && held.is_sign_positive() != signed.is_sign_positive() && qty <= held.abs();
        if order.reduce_only && !reduces {
            let why = format!(
                "reduce-only {} of {qty} {} would not reduce the position of {held}",
                record.side, order.symbol
            );
            reject(&mut record, why);
        } else if !s.allow_short && after < Decimal::ZERO {
            reject(
                &mut record,
                format!(
                    "selling {qty} {} would leave a short position of {after}; shorting is off for this paper account",
                    order.symbol
                ),
            );
        } else if matches!(order.order_type, OrderType::Market) && reference.is_none() {
            reject(&mut record, "the paper broker fills market orders at the alert's reference price and this order has none; add a price (e.g. \"price\": \"{{close}}\") to the alert".into());
        } else {
            match executable_price(&order, reference)? {
                Some(price) => {
                    let cost = qty.checked_mul(price).ok_or_else(overflow)?;
                    if signed.is_sign_positive() && cost > book.cash {
                        return Err(BrokerError::InsufficientFunds(format!(
                            "buying {qty} {} at {price} costs {cost} {} but the paper account has {} cash",
                            order.symbol, s.currency, book.cash
                        )));
                    }
                    apply_fill(&mut book, &order.symbol, signed, price)?;
                    record.status = status_name(OrderStatus::Filled).into();
                    record.filled_quantity = qty;
                    record.average_fill_price = Some(price);
                }
                None if matches!(order.time_in_force, TimeInForce::Ioc | TimeInForce::Fok) => {
                    record.status = status_name(OrderStatus::Canceled).into();
                    record.message = Some("not marketable at the reference price; IOC/FOK order canceled".into());
                }
                None => {
                    record.message = Some("resting: not marketable at the reference price".into());
                }
            }
        }
        log::info(&format!(
            "paper {} {} {qty} {} -> {}",
            client_order_id, record.side, order.symbol, record.status
        ));
        let out = ack(&client_order_id, &record)?;
        insert_order(&s, &client_order_id, &record)?;
        save(&s, &book)?;
        Ok(out)
    }

    fn cancel_order(account_settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let s = settings(&account_settings)?;
        let Some(mut order) = load_order(&s, &client_order_id)? else {
            return Err(BrokerError::NotFound(format!(
                "no paper order with client order id `{client_order_id}`"
            )));
        };
        if !matches!(order.status.as_str(), "accepted" | "partially-filled") {
            return Err(BrokerError::Rejected(format!(
                "order `{client_order_id}` is already {} and cannot be canceled",
                order.status
            )));
        }
        order.status = status_name(OrderStatus::Canceled).into();
        let out = ack(&client_order_id, &order)?;
        kv::set_json(&order_key(&s, &client_order_id), &order).map_err(|e| kv_err("write a paper order", e))?;
        Ok(out)
    }

    fn get_order(account_settings: String, client_order_id: String) -> Result<OrderAck, BrokerError> {
        let s = settings(&account_settings)?;
        match load_order(&s, &client_order_id)? {
            Some(o) => ack(&client_order_id, &o),
            None => Err(BrokerError::NotFound(format!(
                "no paper order with client order id `{client_order_id}`"
            ))),
        }
    }

    fn open_orders(account_settings: String) -> Result<Vec<OrderAck>, BrokerError> {
        let s = settings(&account_settings)?;
        let prefix = format!("order/{}/", s.account_id);
        let mut open = Vec::new();
        for key in kv::list_keys(&prefix).map_err(|e| kv_err("list paper orders", e))? {
            let id = &key[prefix.len()..];
            if let Some(o) = load_order(&s, id)?
                && matches!(o.status.as_str(), "accepted" | "partially-filled")
            {
                open.push(ack(id, &o)?);
            }
        }
        Ok(open)
    }

    fn positions(account_settings: String) -> Result<Vec<Position>, BrokerError> {
        let s = settings(&account_settings)?;
        let book = load(&s)?;
        book.positions
            .iter()
            .map(|(symbol, p)| {
                Ok(Position {
                    symbol: symbol.clone(),
                    quantity: wit(p.quantity)?,
                    average_price: wit(p.average_price)?,
                })
            })
            .collect()
    }

    fn account(account_settings: String) -> Result<Account, BrokerError> {
        let s = settings(&account_settings)?;
        let book = load(&s)?;
        let mut equity = book.cash;
        for p in book.positions.values() {
            equity = p
                .quantity
                .checked_mul(p.last_price)
                .and_then(|v| equity.checked_add(v))
                .ok_or_else(overflow)?;
        }
        Ok(Account {
            currency: s.currency.clone(),
            cash: wit(book.cash)?,
            equity: wit(equity)?,
            buying_power: wit(book.cash.max(Decimal::ZERO))?,
        })
    }
}

export_broker!(Paper);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "paper"
version = "0.1.0"
world = "broker"
wit = "0.1.0"
description = "Paper trading: fills market orders at the reference price; keeps its book in kv"

[requests]
kv = true
"#
);
