//! A local Alpaca Trading API v2 server that speaks its wire format, built
//! from the public reference (docs.alpaca.markets/reference): the paths,
//! JSON field names and types (quantities and prices as strings), status
//! codes and error bodies (`{"code": …, "message": …}`), the key headers,
//! duplicate `client_order_id` rejection, buying power, rate limiting.
//! Knobs make it misbehave the ways a real API does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The key pair the fake accepts.
pub const KEY_ID: &str = "PKTEST1234567890ABCD";
/// The secret the fake accepts.
pub const SECRET_KEY: &str = "sk-test-9f8e7d6c5b4a3210fedcba9876543210abcd";

/// One request: method, path and query, headers, JSON body.
pub type Recorded = (String, String, Vec<(String, String)>, Value);

/// Shared state and knobs.
#[derive(Debug, Default)]
pub struct State {
    /// Orders by client order id.
    pub orders: Mutex<HashMap<String, Value>>,
    /// Every `POST /v2/orders` received (accepted or not).
    pub posts: AtomicUsize,
    /// Answer every order submission with 429.
    pub rate_limited: AtomicBool,
    /// Record the order, then answer only after this many ms.
    pub slow_accept_ms: AtomicU64,
    /// Wait this many ms before looking at the order at all (it is not in
    /// the positions until then).
    pub slow_intake_ms: AtomicU64,
    /// Answer `GET /v2/account` and `GET /v2/positions` only after this
    /// many ms (a live API's round trip).
    pub slow_reads_ms: AtomicU64,
    /// Account and position reads being handled right now, and the most
    /// at once.
    pub reads_in_flight: AtomicUsize,
    /// The most account and position reads handled at once.
    pub max_reads_in_flight: AtomicUsize,
    /// Order submissions being handled right now, and the most at once.
    pub posts_in_flight: AtomicUsize,
    /// The most order submissions handled at once.
    pub max_posts_in_flight: AtomicUsize,
    /// Cash (and equity); buying power is twice this.
    pub cash: Mutex<Decimal>,
    /// Every request: (method, path and query, headers, JSON body).
    pub requests: Mutex<Vec<Recorded>>,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeAlpaca {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<State>,
}

fn error(status: u16, code: u64, message: &str) -> (u16, Value) {
    (status, json!({ "code": code, "message": message }))
}

fn price_of(symbol: &str) -> Decimal {
    match symbol {
        "AAPL" => Decimal::new(19035, 2),
        "MSFT" => Decimal::new(41050, 2),
        _ => Decimal::new(100, 0),
    }
}

impl FakeAlpaca {
    /// Starts it on 127.0.0.1:0 with 100,000 cash.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let state = Arc::new(State {
            cash: Mutex::new(Decimal::from(100_000)),
            ..State::default()
        });
        let st = state.clone();
        let addr = crate::serve_local(move |req| {
            let st = st.clone();
            async move {
                let (status, body) = handle(&st, req).await;
                let body = if status == 204 {
                    Bytes::new()
                } else {
                    Bytes::from(body.to_string())
                };
                (
                    status,
                    vec![("content-type".to_owned(), "application/json".to_owned())],
                    body,
                )
            }
        })
        .await;
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Order submissions received.
    pub fn posts(&self) -> usize {
        self.state.posts.load(Ordering::SeqCst)
    }

    /// The order with `client_order_id`, as the fake holds it.
    pub fn order(&self, client_order_id: &str) -> Option<Value> {
        self.state.orders.lock().unwrap().get(client_order_id).cloned()
    }
}

fn s(d: Decimal) -> String {
    d.normalize().to_string()
}

fn positions(st: &State) -> Vec<Value> {
    let mut book: HashMap<String, (Decimal, Decimal)> = HashMap::new();
    for o in st.orders.lock().unwrap().values() {
        if o["status"] != "filled" {
            continue;
        }
        let q: Decimal = o["filled_qty"].as_str().unwrap().parse().unwrap();
        let p: Decimal = o["filled_avg_price"].as_str().unwrap().parse().unwrap();
        let signed = if o["side"] == "sell" { -q } else { q };
        let e = book.entry(o["symbol"].as_str().unwrap().to_owned()).or_default();
        if e.0.is_zero() || e.0.is_sign_positive() == signed.is_sign_positive() {
            e.1 = (e.1 * e.0.abs() + p * q) / (e.0.abs() + q);
        }
        e.0 += signed;
    }
    book.into_iter()
        .filter(|(_, (q, _))| !q.is_zero())
        .map(|(sym, (q, avg))| {
            json!({
                "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415", "symbol": sym, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": true, "qty": s(q), "qty_available": s(q),
                "avg_entry_price": s(avg), "side": if q.is_sign_positive() { "long" } else { "short" },
                "market_value": s(q * price_of(&sym)), "cost_basis": s(q * avg), "unrealized_pl": "0",
                "unrealized_plpc": "0", "current_price": s(price_of(&sym)), "lastday_price": s(price_of(&sym)),
                "change_today": "0",
            })
        })
        .collect()
}

async fn handle(st: &State, req: hyper::Request<hyper::body::Incoming>) -> (u16, Value) {
    let method = req.method().to_string();
    let uri = req.uri().clone();
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let body_bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body_bytes).unwrap_or(Value::Null);
    st.requests
        .lock()
        .unwrap()
        .push((method.clone(), uri.to_string(), headers.clone(), body.clone()));
    if header("apca-api-key-id").as_deref() != Some(KEY_ID)
        || header("apca-api-secret-key").as_deref() != Some(SECRET_KEY)
    {
        return error(401, 40110000, "request is not authorized");
    }
    if method == "GET" && (path == "/v2/account" || path == "/v2/positions") {
        let now = st.reads_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_reads_in_flight.fetch_max(now, Ordering::SeqCst);
        let slow = st.slow_reads_ms.load(Ordering::SeqCst);
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(slow)).await;
        }
        st.reads_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/v2/account") => {
            let cash = *st.cash.lock().unwrap();
            (
                200,
                json!({
                    "id": "904837e3-3b76-47ec-b432-046db621571b", "account_number": "PA3XYZ1234", "status": "ACTIVE",
                    "currency": "USD", "cash": s(cash), "portfolio_value": s(cash), "equity": s(cash),
                    "buying_power": s(cash * Decimal::from(2)), "pattern_day_trader": false, "trading_blocked": false,
                    "shorting_enabled": true, "multiplier": "2",
                }),
            )
        }
        ("GET", "/v2/positions") => (200, Value::Array(positions(st))),
        ("GET", "/v2/orders:by_client_order_id") => {
            let id = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("client_order_id="))
                .unwrap_or_default()
                .replace("%2D", "-");
            match st.orders.lock().unwrap().get(&id) {
                Some(o) => (200, o.clone()),
                None => error(404, 40410000, "order not found"),
            }
        }
        ("GET", "/v2/orders") => {
            let open: Vec<Value> = st
                .orders
                .lock()
                .unwrap()
                .values()
                .filter(|o| {
                    ["new", "accepted", "pending_new", "partially_filled"].contains(&o["status"].as_str().unwrap())
                })
                .cloned()
                .collect();
            (200, Value::Array(open))
        }
        ("DELETE", p) if p.starts_with("/v2/orders/") => {
            let id = &p["/v2/orders/".len()..];
            let mut orders = st.orders.lock().unwrap();
            match orders.values_mut().find(|o| o["id"] == id) {
                None => error(404, 40410000, "order not found"),
                Some(o) if o["status"] == "filled" => error(422, 42210000, "order is not cancelable"),
                Some(o) => {
                    o["status"] = json!("canceled");
                    (204, Value::Null)
                }
            }
        }
        ("POST", "/v2/orders") => {
            st.posts.fetch_add(1, Ordering::SeqCst);
            if st.rate_limited.load(Ordering::SeqCst) {
                return error(429, 42910000, "rate limit exceeded");
            }
            let now = st.posts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            st.max_posts_in_flight.fetch_max(now, Ordering::SeqCst);
            let intake = st.slow_intake_ms.load(Ordering::SeqCst);
            if intake > 0 {
                tokio::time::sleep(Duration::from_millis(intake)).await;
            }
            let answer = submit(st, &body).await;
            st.posts_in_flight.fetch_sub(1, Ordering::SeqCst);
            answer
        }
        _ => error(404, 40410000, "endpoint not found"),
    }
}

async fn submit(st: &State, b: &Value) -> (u16, Value) {
    let Some(symbol) = b["symbol"].as_str() else {
        return error(422, 40010001, "symbol is required");
    };
    if symbol == "BADSYM" {
        return error(422, 40010001, "asset \"BADSYM\" not found");
    }
    let qty: Option<Decimal> = match &b["qty"] {
        Value::String(q) => q.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    };
    let Some(qty) = qty.filter(|q| *q > Decimal::ZERO) else {
        return error(422, 40010001, "qty must be > 0");
    };
    let side = b["side"].as_str().unwrap_or_default();
    if side != "buy" && side != "sell" {
        return error(422, 40010001, "invalid side");
    }
    let kind = b["type"].as_str().unwrap_or_default();
    if !["market", "limit", "stop", "stop_limit", "trailing_stop"].contains(&kind) {
        return error(422, 40010001, "invalid order type");
    }
    if ["limit", "stop_limit"].contains(&kind) && !b["limit_price"].is_string() && b["order_class"] != "oco" {
        return error(422, 40010001, "limit_price is required");
    }
    if ["stop", "stop_limit"].contains(&kind) && !b["stop_price"].is_string() {
        return error(422, 40010001, "stop_price is required");
    }
    if !["day", "gtc", "opg", "cls", "ioc", "fok"].contains(&b["time_in_force"].as_str().unwrap_or_default()) {
        return error(422, 40010001, "invalid time_in_force");
    }
    if kind == "trailing_stop" {
        // Exactly one of trail_price / trail_percent, as strings; no legs.
        match (b["trail_price"].as_str(), b["trail_percent"].as_str()) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => return error(422, 40010001, "trail_price or trail_percent is required"),
        }
        if !b["order_class"].is_null() {
            return error(422, 40010001, "trailing_stop orders do not support order_class");
        }
    } else if !b["trail_price"].is_null() || !b["trail_percent"].is_null() {
        return error(
            422,
            40010001,
            "trail_price and trail_percent are for trailing_stop orders only",
        );
    }
    let class = b["order_class"].as_str().unwrap_or("simple");
    if !["simple", "bracket", "oco", "oto"].contains(&class) {
        return error(422, 40010001, "invalid order_class");
    }
    if class == "oco"
        && (kind != "limit"
            || !b["take_profit"]["limit_price"].is_string()
            || !b["stop_loss"]["stop_price"].is_string()
            || !b["limit_price"].is_null())
    {
        return error(
            422,
            40010001,
            "oco orders must be limit orders with take_profit.limit_price and stop_loss.stop_price",
        );
    }
    if class == "bracket" && (!b["take_profit"]["limit_price"].is_string() || !b["stop_loss"]["stop_price"].is_string())
    {
        return error(
            422,
            40010001,
            "bracket orders require take_profit.limit_price and stop_loss.stop_price",
        );
    }
    let coid = b["client_order_id"].as_str().unwrap_or_default().to_owned();
    if coid.len() > 128 {
        return error(422, 40010001, "client_order_id must be no more than 128 characters");
    }
    let price = b["limit_price"]
        .as_str()
        .and_then(|p| p.parse::<Decimal>().ok())
        .unwrap_or_else(|| price_of(symbol));
    if side == "buy" && qty * price > *st.cash.lock().unwrap() * Decimal::from(2) {
        return error(403, 40310000, "insufficient buying power");
    }
    let order = {
        let mut orders = st.orders.lock().unwrap();
        if orders.contains_key(&coid) {
            return error(422, 40010001, "client_order_id must be unique");
        }
        let id = uuid::Uuid::now_v7().to_string();
        let now = "2026-12-04T15:30:00.123456Z";
        let o = json!({
            "id": id, "client_order_id": coid, "created_at": now, "updated_at": now, "submitted_at": now,
            "filled_at": null, "expired_at": null, "canceled_at": null, "failed_at": null, "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            "symbol": symbol, "asset_class": "us_equity", "notional": null, "qty": s(qty), "filled_qty": "0",
            "filled_avg_price": null, "order_class": b["order_class"].as_str().unwrap_or(""), "order_type": kind, "type": kind,
            "side": side, "time_in_force": b["time_in_force"], "limit_price": b["limit_price"], "stop_price": b["stop_price"],
            "trail_price": b["trail_price"], "trail_percent": b["trail_percent"], "hwm": null,
            "status": "accepted", "extended_hours": false, "legs": null,
        });
        orders.insert(coid.clone(), o.clone());
        // A market order fills right after it is accepted.
        if kind == "market" {
            let filled = orders.get_mut(&coid).unwrap();
            filled["status"] = json!("filled");
            filled["filled_qty"] = json!(s(qty));
            filled["filled_avg_price"] = json!(s(price));
        }
        o
    };
    let slow = st.slow_accept_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    (200, order)
}
