//! The signed-request adapter (`plugins/brokers/binance`) against the local
//! Binance-style server: every request signed by the host with a secret
//! the plugin never holds, and verified by the server exactly as the
//! exchange computes it.

use std::sync::atomic::Ordering;

use algobanana_tests::binance::{API_KEY, API_SECRET, FakeBinance};
use algobanana_tests::plugins::BINANCE;
use algobanana_tests::{HostBuilder, TestHost};
use serde_json::{Value, json};

async fn host(fake: &FakeBinance, secret: &str) -> TestHost {
    HostBuilder::new()
        .plugin("binance", BINANCE, "broker")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"binance_api_key\", \"binance_api_secret\"]\n",
            fake.origin()
        ))
        .route("spot", "tradingview", "binance")
        .broker_settings(json!({ "base_url": fake.origin(), "symbols": ["BTCUSDT"] }))
        .toml(&format!(
            "[secrets.binance_api_key]\nvalue = {API_KEY:?}\n[secrets.binance_api_secret]\nvalue = {secret:?}\n[risk]\nmax_order_notional = 0\n"
        ))
        .start()
        .await
        .unwrap()
}

async fn send(host: &TestHost, body: &str) -> Value {
    host.alert("spot", "application/json", body).await.unwrap().json()
}

#[tokio::test]
pub async fn binance() -> anyhow::Result<()> {
    let fake = FakeBinance::start().await;
    let host = host(&fake, API_SECRET).await;
    let reply = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.01","price":"64250","signalId":"b-1"}"#,
    )
    .await;
    let o = &reply["orders"][0];
    assert_eq!(o["outcome"], "filled", "{reply}");
    assert_eq!(o["ack"]["average_fill_price"], "64250");
    assert_eq!(o["ack"]["filled_quantity"], "0.01");
    // Every private request was signed correctly, by the host.
    let raw = fake.state.raw.lock().unwrap().clone();
    // (The rails' position check and the order: the rule asked for no
    // portfolio.)
    assert!(fake.state.valid_signatures.load(Ordering::SeqCst) >= 2, "{raw:?}");
    let post = raw.iter().find(|(l, _)| l.starts_with("POST /api/v3/order?")).unwrap();
    // Exit legs and trailing stops are refused before the exchange sees
    // anything, never silently dropped.
    for body in [
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.01","price":"64250","stopLoss":{"stopPrice":"60000"}}"#,
        r#"{"ticker":"BTCUSDT","action":"sell","quantity":"0.01","price":"64250","trailPercent":"1"}"#,
    ] {
        let refused = send(&host, body).await;
        let reason = refused["orders"][0]["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.contains("send take-profit and stop-loss as their own orders")
                || reason.contains("does not place trailing stops"),
            "{refused}"
        );
    }
    assert_eq!(
        fake.state
            .raw
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.starts_with("POST /api/v3/order?"))
            .count(),
        1
    );
    for part in [
        "symbol=BTCUSDT",
        "side=BUY",
        "quantity=0.01",
        "newClientOrderId=b-1",
        "type=MARKET",
        "recvWindow=5000",
        "timestamp=",
        "&signature=",
    ] {
        assert!(post.0.contains(part), "{part} in {}", post.0);
    }
    assert!(post.1.iter().any(|(k, v)| k == "x-mbx-apikey" && v == API_KEY));
    for (line, headers) in &raw {
        assert!(
            !line.contains(API_SECRET) && !headers.iter().any(|(_, v)| v.contains(API_SECRET)),
            "the secret never leaves the host"
        );
    }
    // Insufficient balance, with the exchange's own words.
    let poor = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"1","price":"64250","signalId":"b-2"}"#,
    )
    .await;
    assert!(
        poor["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds: Account has insufficient balance"),
        "{poor}"
    );
    // The balance is a position the rule can close.
    let exit = send(&host, r#"{"ticker":"BTCUSDT","action":"exit","price":"64000"}"#).await;
    assert_eq!(exit["orders"][0]["intent"]["side"], "sell", "{exit}");
    assert_eq!(exit["orders"][0]["intent"]["quantity"], "0.01");
    assert_eq!(exit["orders"][0]["outcome"], "filled");
    // Limit orders rest; reconciliation finds them by client order id.
    let rest = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.001","price":"64000","orderType":"limit","limitPrice":"60000","signalId":"b-3"}"#,
    )
    .await;
    assert_eq!(rest["orders"][0]["outcome"], "accepted", "{rest}");
    let post = fake
        .state
        .raw
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(l, _)| l.starts_with("POST"))
        .unwrap()
        .0
        .clone();
    assert!(
        post.contains("type=LIMIT") && post.contains("price=60000") && post.contains("timeInForce=GTC"),
        "{post}"
    );
    // The exchange's duplicate refusal: asked, not resent.
    fake.state.orders.lock().unwrap().insert(
        "b-4".into(),
        json!({
            "symbol": "BTCUSDT", "orderId": 99, "clientOrderId": "b-4", "status": "FILLED", "executedQty": "0.00100000",
            "cummulativeQuoteQty": "64.25000000", "side": "BUY", "type": "MARKET",
        }),
    );
    let dup = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.001","price":"64250","signalId":"b-4"}"#,
    )
    .await;
    assert_eq!(dup["orders"][0]["outcome"], "filled", "{dup}");
    assert!(
        dup["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Duplicate order sent"),
        "{dup}"
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_fails_the_exchanges_signature_check() -> anyhow::Result<()> {
    let fake = FakeBinance::start().await;
    let host = host(&fake, "not-the-secret").await;
    let reply = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.01","price":"64250"}"#,
    )
    .await;
    // Positions fail the same way, so the rails fail closed before placing.
    assert_eq!(reply["orders"][0]["outcome"], "rejected", "{reply}");
    assert_eq!(fake.state.valid_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(fake.state.posts.load(Ordering::SeqCst), 0);
    let calls = host.audit(&algobanana::audit::query::Filter {
        action: Some("plugin.call".into()),
        ..Default::default()
    })?;
    assert!(calls.iter().any(|c| {
        c.payload["output"]
            .to_string()
            .contains("Signature for this request is not valid")
    }));
    Ok(())
}

#[tokio::test]
async fn rate_limits_are_not_retried() -> anyhow::Result<()> {
    let fake = FakeBinance::start().await;
    let host = host(&fake, API_SECRET).await;
    fake.state.rate_limited.store(true, Ordering::SeqCst);
    let alert = r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.01","price":"64250","signalId":"rl-1"}"#;
    let reply = send(&host, alert).await;
    assert_eq!(reply["orders"][0]["outcome"], "rejected", "{reply}");
    assert!(
        reply["orders"][0]["reason"].as_str().unwrap().contains("rate_limited"),
        "{reply}"
    );
    for _ in 0..3 {
        assert_eq!(send(&host, alert).await["orders"][0]["outcome"], "duplicate");
    }
    assert_eq!(
        fake.state.posts.load(Ordering::SeqCst),
        1,
        "one submission, never retried"
    );
    Ok(())
}

#[tokio::test]
async fn without_symbols_an_unclear_order_stays_unknown_not_never_placed() -> anyhow::Result<()> {
    let fake = FakeBinance::start().await;
    fake.state.orders.lock().unwrap().insert(
        "b-9".into(),
        json!({ "symbol": "BTCUSDT", "orderId": 9, "clientOrderId": "b-9", "status": "FILLED",
                "executedQty": "0.00100000", "cummulativeQuoteQty": "64.25000000", "side": "BUY", "type": "MARKET" }),
    );
    let host = HostBuilder::new()
        .plugin("binance", BINANCE, "broker")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"binance_api_key\", \"binance_api_secret\"]\n",
            fake.origin()
        ))
        .route("spot", "tradingview", "binance")
        .broker_settings(json!({ "base_url": fake.origin() }))
        .toml(&format!(
            "[secrets.binance_api_key]\nvalue = {API_KEY:?}\n[secrets.binance_api_secret]\nvalue = {API_SECRET:?}\n[risk]\nmax_order_notional = 0\n"
        ))
        .start()
        .await?;
    let reply = send(
        &host,
        r#"{"ticker":"BTCUSDT","action":"buy","quantity":"0.001","price":"64250","signalId":"b-9"}"#,
    )
    .await;
    let o = &reply["orders"][0];
    assert_eq!(o["outcome"], "error", "{reply}");
    assert!(o["reason"].as_str().unwrap().contains("state stays unknown"), "{o}");
    let orders = host.orders()?;
    assert_eq!(orders[0].state, algobanana::trading::orders::OrderState::Unknown);
    Ok(())
}
