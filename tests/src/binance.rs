//! A local Binance-spot-style server built from the public REST docs: it
//! checks `X-MBX-APIKEY`, recomputes `signature` = hex HMAC-SHA256 of the
//! query string before `&signature=` with the account's secret exactly as
//! the exchange does, enforces `recvWindow` against `timestamp`, and answers
//! with Binance's field names (strings for quantities and prices) and error
//! bodies (`{"code": -…, "msg": "…"}`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hmac::Mac as _;
use http_body_util::BodyExt;
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// The API key the fake accepts.
pub const API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
/// The secret it signs with (Binance's documented example secret).
pub const API_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

/// A request line (`METHOD /path?query`) and its headers.
pub type RawRequest = (String, Vec<(String, String)>);

/// State and knobs.
#[derive(Debug, Default)]
pub struct State {
    /// Orders by client order id.
    pub orders: Mutex<HashMap<String, Value>>,
    /// Order submissions received.
    pub posts: AtomicUsize,
    /// Requests whose signature verified.
    pub valid_signatures: AtomicUsize,
    /// Every raw request line (method, path?query) and its headers.
    pub raw: Mutex<Vec<RawRequest>>,
    /// Answer every order submission with 429.
    pub rate_limited: AtomicBool,
    /// USDT balance.
    pub usdt: Mutex<Decimal>,
    /// Next order id.
    pub next_id: AtomicI64,
}

/// A running fake.
#[derive(Debug, Clone)]
pub struct FakeBinance {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<State>,
}

fn err(status: u16, code: i64, msg: &str) -> (u16, Value) {
    (status, json!({ "code": code, "msg": msg }))
}

fn price_of(symbol: &str) -> Decimal {
    if symbol == "BTCUSDT" {
        Decimal::from(64_250)
    } else {
        Decimal::from(100)
    }
}

fn s8(d: Decimal) -> String {
    format!("{:.8}", d)
}

impl FakeBinance {
    /// Starts it with 10,000 USDT.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let state = Arc::new(State {
            usdt: Mutex::new(Decimal::from(10_000)),
            next_id: AtomicI64::new(28),
            ..State::default()
        });
        let st = state.clone();
        let addr = crate::serve_local(move |req| {
            let st = st.clone();
            async move {
                let (status, body) = handle(&st, req).await;
                (status, Vec::new(), Bytes::from(body.to_string()))
            }
        })
        .await;
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(st: &State, req: hyper::Request<hyper::body::Incoming>) -> (u16, Value) {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    st.raw
        .lock()
        .unwrap()
        .push((format!("{method} {path}?{query}"), headers.clone()));
    let _ = req.into_body().collect().await;
    if st.rate_limited.load(Ordering::SeqCst) && method == "POST" {
        st.posts.fetch_add(1, Ordering::SeqCst);
        return err(
            429,
            -1003,
            "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute.",
        );
    }
    if headers
        .iter()
        .find(|(k, _)| k == "x-mbx-apikey")
        .map(|(_, v)| v.as_str())
        != Some(API_KEY)
    {
        return err(401, -2015, "Invalid API-key, IP, or permissions for action.");
    }
    // The signature covers everything before `&signature=`.
    let Some((payload, signature)) = query.rsplit_once("&signature=") else {
        return err(
            400,
            -1102,
            "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
        );
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(API_SECRET.as_bytes()).unwrap();
    mac.update(payload.as_bytes());
    if hex::encode(mac.finalize().into_bytes()) != signature {
        return err(400, -1022, "Signature for this request is not valid.");
    }
    st.valid_signatures.fetch_add(1, Ordering::SeqCst);
    let p: HashMap<String, String> = payload
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%2D", "-").replace("%5F", "_")))
        .collect();
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let ts: i64 = p.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    let window: i64 = p.get("recvWindow").and_then(|t| t.parse().ok()).unwrap_or(5000);
    if ts > now_ms + 1000 || now_ms - ts > window {
        return err(400, -1021, "Timestamp for this request is outside of the recvWindow.");
    }
    match (method.as_str(), path.as_str()) {
        ("POST", "/api/v3/order") => {
            st.posts.fetch_add(1, Ordering::SeqCst);
            new_order(st, &p, now_ms)
        }
        ("GET", "/api/v3/order") | ("DELETE", "/api/v3/order") => {
            let id = p.get("origClientOrderId").cloned().unwrap_or_default();
            let mut orders = st.orders.lock().unwrap();
            match orders
                .get_mut(&id)
                .filter(|o| o["symbol"].as_str() == p.get("symbol").map(String::as_str))
            {
                None if method == "GET" => err(400, -2013, "Order does not exist."),
                None => err(400, -2011, "Unknown order sent."),
                Some(o) if method == "DELETE" => {
                    if o["status"] == "FILLED" {
                        return err(400, -2011, "Unknown order sent.");
                    }
                    o["status"] = json!("CANCELED");
                    (200, o.clone())
                }
                Some(o) => (200, o.clone()),
            }
        }
        ("GET", "/api/v3/openOrders") => (
            200,
            Value::Array(
                st.orders
                    .lock()
                    .unwrap()
                    .values()
                    .filter(|o| o["status"] == "NEW" || o["status"] == "PARTIALLY_FILLED")
                    .cloned()
                    .collect(),
            ),
        ),
        ("GET", "/api/v3/account") => {
            let mut btc = Decimal::ZERO;
            for o in st.orders.lock().unwrap().values().filter(|o| o["status"] == "FILLED") {
                let q: Decimal = o["executedQty"].as_str().unwrap().parse().unwrap();
                btc += if o["side"] == "BUY" { q } else { -q };
            }
            let mut balances =
                vec![json!({ "asset": "USDT", "free": s8(*st.usdt.lock().unwrap()), "locked": s8(Decimal::ZERO) })];
            if !btc.is_zero() {
                balances.push(json!({ "asset": "BTC", "free": s8(btc), "locked": s8(Decimal::ZERO) }));
            }
            (
                200,
                json!({ "makerCommission": 10, "takerCommission": 10, "canTrade": true, "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"] }),
            )
        }
        _ => err(404, -1000, "An unknown error occured while processing the request."),
    }
}

fn new_order(st: &State, p: &HashMap<String, String>, now_ms: i64) -> (u16, Value) {
    let need = |k: &str| -> Result<String, (u16, Value)> {
        p.get(k).cloned().filter(|v| !v.is_empty()).ok_or_else(|| {
            err(
                400,
                -1102,
                &format!("Mandatory parameter '{k}' was not sent, was empty/null, or malformed."),
            )
        })
    };
    let r = (|| -> Result<(u16, Value), (u16, Value)> {
        let symbol = need("symbol")?;
        let side = need("side")?;
        let kind = need("type")?;
        let qty: Decimal = need("quantity")?
            .parse()
            .map_err(|_| err(400, -1100, "Illegal characters found in parameter 'quantity'."))?;
        if ["LIMIT", "STOP_LOSS_LIMIT"].contains(&kind.as_str()) {
            need("timeInForce")?;
            need("price")?;
        }
        let coid = p.get("newClientOrderId").cloned().unwrap_or_default();
        let price = p
            .get("price")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| price_of(&symbol));
        let mut orders = st.orders.lock().unwrap();
        if orders.contains_key(&coid) {
            return Err(err(400, -2010, "Duplicate order sent."));
        }
        let mut usdt = st.usdt.lock().unwrap();
        if side == "BUY" && qty * price > *usdt {
            return Err(err(
                400,
                -2010,
                "Account has insufficient balance for requested action.",
            ));
        }
        let fills = kind == "MARKET";
        if fills && side == "BUY" {
            *usdt -= qty * price;
        }
        let id = st.next_id.fetch_add(1, Ordering::SeqCst);
        let o = json!({
            "symbol": symbol, "orderId": id, "orderListId": -1, "clientOrderId": coid, "transactTime": now_ms,
            "price": s8(if fills { Decimal::ZERO } else { price }), "origQty": s8(qty),
            "executedQty": s8(if fills { qty } else { Decimal::ZERO }),
            "cummulativeQuoteQty": s8(if fills { qty * price } else { Decimal::ZERO }),
            "status": if fills { "FILLED" } else { "NEW" }, "timeInForce": p.get("timeInForce").map_or("GTC", String::as_str),
            "type": kind, "side": side, "workingTime": now_ms, "selfTradePreventionMode": "NONE",
            "fills": if fills { json!([{ "price": s8(price), "qty": s8(qty), "commission": "0.00000000", "commissionAsset": "BNB", "tradeId": id }]) } else { json!([]) },
        });
        orders.insert(coid, o.clone());
        Ok((200, o))
    })();
    r.unwrap_or_else(|e| e)
}
