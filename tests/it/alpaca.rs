//! The Alpaca adapter (`plugins/brokers/alpaca`) against the local fake in
//! `tests/src/alpaca.rs`: wire format, key headers filled by the host,
//! every error mapping, a 429 storm, and a timeout after Alpaca accepted.

use std::sync::atomic::Ordering;

use algobanana_tests::alpaca::{FakeAlpaca, KEY_ID, SECRET_KEY};
use algobanana_tests::plugins::ALPACA;
use algobanana_tests::{HostBuilder, TestHost};
use serde_json::{Value, json};

async fn host(fake: &FakeAlpaca, key_id: &str, extra_grant: &str) -> TestHost {
    host_with(fake, key_id, extra_grant, "").await
}

async fn host_with(fake: &FakeAlpaca, key_id: &str, extra_grant: &str, extra_toml: &str) -> TestHost {
    HostBuilder::new()
        .plugin("alpaca", ALPACA, "broker")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"alpaca_key_id\", \"alpaca_secret_key\"]\n{extra_grant}",
            fake.origin()
        ))
        .route("alpaca", "tradingview", "alpaca")
        .broker_settings(json!({ "base_url": fake.origin() }))
        .toml(&format!(
            "[secrets.alpaca_key_id]\nvalue = {key_id:?}\n[secrets.alpaca_secret_key]\nvalue = {SECRET_KEY:?}\n{extra_toml}"
        ))
        .start()
        .await
        .unwrap()
}

async fn send(host: &TestHost, body: &str) -> Value {
    let ct = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    host.alert("alpaca", ct, body).await.unwrap().json()
}

#[tokio::test]
pub async fn alpaca() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    *fake.state.cash.lock().unwrap() = rust_decimal::Decimal::from(10_000);
    let host = host(&fake, KEY_ID, "").await;

    // A market order: the JSON Alpaca documents, quantities as strings, the
    // keys in headers the plugin never saw.
    let reply = send(
        &host,
        r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35","signalId":"sig-a1"}"#,
    )
    .await;
    let o = &reply["orders"][0];
    assert_eq!(o["outcome"], "accepted", "{reply}");
    assert_eq!(o["ack"]["client_order_id"], "sig-a1");
    let sent = fake.state.requests.lock().unwrap().clone();
    let post = sent.iter().find(|r| r.0 == "POST").unwrap();
    assert_eq!(post.1, "/v2/orders");
    assert_eq!(
        post.3,
        json!({ "symbol": "AAPL", "qty": "10", "side": "buy", "type": "market", "time_in_force": "day", "client_order_id": "sig-a1" })
    );
    let header = |n: &str| post.2.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(header("apca-api-key-id"), Some(KEY_ID));
    assert_eq!(header("apca-api-secret-key"), Some(SECRET_KEY));
    // The fill shows up through get-order, positions and account.
    let order = fake.order("sig-a1").unwrap();
    assert_eq!(order["status"], "filled");
    let ack = host
        .app
        .registry
        .call_broker(
            &host
                .app
                .registry
                .get(&algobanana::domain::ids::PluginName::new("alpaca")?)
                .unwrap(),
            algobanana::plugins::invoke::BrokerCall::GetOrder {
                settings: json!({ "base_url": fake.origin() }).to_string(),
                client_order_id: "sig-a1".into(),
            },
            &host.app.audit,
            &Default::default(),
        )
        .await?;
    match ack.returned {
        algobanana::plugins::invoke::Returned::Ok(algobanana::plugins::invoke::BrokerReply::Ack(a)) => {
            assert_eq!(a.status, algobanana::plugins::bindings::types::OrderStatus::Filled);
            assert_eq!(a.filled_quantity.mantissa, 10);
        }
        other => panic!("{other:?}"),
    }

    // A limit order with a bracket: order_class and both legs.
    let reply = send(
        &host,
        r#"{"ticker":"MSFT","action":"buy","quantity":"2","price":"410","orderType":"limit","limitPrice":"405.5","takeProfit":{"limitPrice":"420"},"stopLoss":{"stopPrice":"400"}}"#,
    )
    .await;
    assert_eq!(reply["orders"][0]["outcome"], "accepted", "{reply}");
    let post = fake
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|r| r.0 == "POST")
        .unwrap()
        .3
        .clone();
    assert_eq!(post["type"], "limit");
    assert_eq!(post["limit_price"], "405.5");
    assert_eq!(post["order_class"], "bracket");
    assert_eq!(post["take_profit"], json!({ "limit_price": "420" }));
    assert_eq!(post["stop_loss"], json!({ "stop_price": "400" }));

    // 422 with Alpaca's own message; 403 insufficient buying power.
    let bad = send(&host, "buy 1 BADSYM at 10").await;
    assert_eq!(bad["orders"][0]["outcome"], "rejected");
    assert!(
        bad["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid_order: asset \"BADSYM\" not found"),
        "{bad}"
    );
    let poor = send(
        &host,
        r#"{"ticker":"XYZ","action":"buy","quantity":"300","price":"99"}"#,
    )
    .await;
    assert!(
        poor["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds: insufficient buying power"),
        "{poor}"
    );
    // A trailing stop, by price and by percent: Alpaca's trailing_stop type
    // with exactly one of trail_price / trail_percent.
    let last_post = || {
        fake.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| r.0 == "POST")
            .unwrap()
            .3
            .clone()
    };
    let trail = send(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"4","price":"190","orderType":"trailing_stop","trailPrice":"2.5","timeInForce":"gtc"}"#,
    )
    .await;
    assert_eq!(trail["orders"][0]["outcome"], "accepted", "{trail}");
    assert_eq!(
        trail["orders"][0]["intent"]["order_type"],
        json!({ "type": "trailing_stop", "trail": "2.5", "percent": false })
    );
    let post = last_post();
    assert_eq!(post["type"], "trailing_stop");
    assert_eq!(post["trail_price"], "2.5");
    assert!(
        post.get("trail_percent").is_none() && post.get("stop_price").is_none(),
        "{post}"
    );
    let trail = send(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"1","price":"190","trailPercent":"1.5"}"#,
    )
    .await;
    assert_eq!(trail["orders"][0]["outcome"], "accepted", "{trail}");
    assert_eq!(last_post()["trail_percent"], "1.5");
    let bad = send(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"1","price":"190","trailPercent":"100"}"#,
    )
    .await;
    assert!(bad.to_string().contains("trailPercent` must be below 100"), "{bad}");
    // A trailing stop with exit legs: refused by the adapter before Alpaca.
    let posts = fake
        .state
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "POST")
        .count();
    let legs = send(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"1","price":"190","trailPrice":"1","stopLoss":{"stopPrice":"180"}}"#,
    )
    .await;
    assert!(
        legs["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("trailing stop with take-profit"),
        "{legs}"
    );
    assert_eq!(
        fake.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.0 == "POST")
            .count(),
        posts
    );

    // An exit with both legs protects the position with an OCO pair.
    let oco = send(
        &host,
        r#"{"ticker":"AAPL","action":"exit","price":"190","takeProfit":{"limitPrice":"205"},"stopLoss":{"stopPrice":"182"},"timeInForce":"gtc"}"#,
    )
    .await;
    assert_eq!(oco["orders"][0]["outcome"], "accepted", "{oco}");
    let post = last_post();
    assert_eq!(post["order_class"], "oco");
    assert_eq!(post["type"], "limit");
    assert_eq!(post["side"], "sell");
    assert_eq!(post["qty"], "10");
    assert_eq!(post["take_profit"], json!({ "limit_price": "205" }));
    assert_eq!(post["stop_loss"], json!({ "stop_price": "182" }));
    assert!(post.get("limit_price").is_none(), "{post}");

    // Positions reach the rule: `exit` sells the 10 AAPL.
    let exit = send(&host, r#"{"ticker":"AAPL","action":"exit","price":"190"}"#).await;
    assert_eq!(exit["orders"][0]["intent"]["quantity"], "10", "{exit}");
    assert_eq!(exit["orders"][0]["intent"]["side"], "sell");
    Ok(())
}

/// A live API's round trips and the portfolio: the rule asks for it only
/// on the alerts that need it, the account and position reads run at the
/// same time, and the wait does not count against the rule's 100 ms
/// deadline (the reads take 600 ms each here).
#[tokio::test]
async fn slow_account_reads_are_made_once_at_once_and_only_for_exits() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    let host = host_with(&fake, KEY_ID, "", "[plugins.alpaca.limits]\ndeadline_ms = 3000\n").await;
    // Alpaca answers a market order `accepted`; the fake fills it at once.
    let sent = |reply: &Value| reply["orders"][0]["outcome"] == "accepted";
    let buy = send(
        &host,
        r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190"}"#,
    )
    .await;
    assert!(sent(&buy), "{buy}");
    fake.state.slow_reads_ms.store(600, Ordering::SeqCst);
    let reads = |host: &TestHost, id: &str| -> anyhow::Result<Vec<algobanana::audit::query::AuditRecord>> {
        Ok(host
            .audit_of(id)?
            .into_iter()
            .filter(|e| e.action == "plugin.call")
            .collect())
    };

    let buy = send(
        &host,
        r#"{"ticker":"MSFT","action":"buy","quantity":"1","price":"400"}"#,
    )
    .await;
    assert!(sent(&buy), "{buy}");
    let calls = reads(&host, buy["alert_id"].as_str().unwrap())?;
    let exports: Vec<&str> = calls.iter().map(|c| c.payload["export"].as_str().unwrap()).collect();
    assert_eq!(
        exports,
        ["evaluate", "positions", "place-order"],
        "a buy reads only what the position rail needs"
    );

    let exit = send(&host, r#"{"ticker":"AAPL","action":"exit","price":"191"}"#).await;
    assert_eq!(exit["orders"][0]["intent"]["quantity"], "10", "{exit}");
    assert!(sent(&exit), "{exit}");
    let calls = reads(&host, exit["alert_id"].as_str().unwrap())?;
    let rule = calls.iter().find(|c| c.payload["export"] == "evaluate").unwrap();
    assert_eq!(rule.payload["outcome"], "ok", "{}", rule.payload);
    let asked = &rule.payload["capabilities"][0];
    assert_eq!(asked["ok"], true, "{asked}");
    let waited = asked["wait_us"].as_u64().unwrap();
    assert!(
        (600_000..1_150_000).contains(&waited),
        "one round trip of waiting, not two in a row: {waited} µs"
    );
    assert!(
        fake.state.max_reads_in_flight.load(Ordering::SeqCst) >= 2,
        "the reads overlapped"
    );
    Ok(())
}

#[tokio::test]
async fn wrong_keys_are_an_auth_error() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    let host = host(&fake, "PKWRONG", "").await;
    let reply = send(&host, "buy 1 AAPL at 190").await;
    // The rails cannot learn the position without the broker: fail closed,
    // and the broker's refusal is on record.
    assert_eq!(reply["orders"][0]["outcome"], "rejected", "{reply}");
    assert!(
        reply["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("Alpaca refused the API keys"),
        "the reason says why the position is unknown: {reply}"
    );
    assert_eq!(fake.posts(), 0);
    let calls = host.audit(&algobanana::audit::query::Filter {
        action: Some("plugin.call".into()),
        ..Default::default()
    })?;
    assert!(
        calls.iter().any(|c| c.payload["output"]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Alpaca refused the API keys")),
        "{calls:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_429_storm_never_produces_a_second_order() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    fake.state.rate_limited.store(true, Ordering::SeqCst);
    let host = host(&fake, KEY_ID, "").await;
    let reply = send(
        &host,
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"190","signalId":"storm-1"}"#,
    )
    .await;
    assert_eq!(reply["orders"][0]["outcome"], "rejected");
    assert!(
        reply["orders"][0]["reason"].as_str().unwrap().contains("rate_limited"),
        "{reply}"
    );
    for _ in 0..3 {
        let again = send(
            &host,
            r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"190","signalId":"storm-1"}"#,
        )
        .await;
        assert_eq!(again["orders"][0]["outcome"], "duplicate", "{again}");
    }
    assert_eq!(fake.posts(), 1, "one submission, no retries");
    assert!(fake.order("storm-1").is_none());
    Ok(())
}

#[tokio::test]
async fn a_timeout_after_alpaca_accepted_is_reconciled_not_resent() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    fake.state.slow_accept_ms.store(3_000, Ordering::SeqCst);
    let host = host(&fake, KEY_ID, "response_timeout_ms = 300\n").await;
    let reply = send(
        &host,
        r#"{"ticker":"AAPL","action":"buy","quantity":"3","price":"190","signalId":"slow-1"}"#,
    )
    .await;
    let o = &reply["orders"][0];
    assert_eq!(o["outcome"], "filled", "reconciled by client order id: {reply}");
    assert!(o["reason"].as_str().unwrap().contains("ambiguous"), "{o}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap()
            .contains("the broker reports the order as filled"),
        "{o}"
    );
    assert_eq!(fake.posts(), 1, "not resent");
    // Alpaca's own duplicate refusal is reconciled the same way.
    fake.state.slow_accept_ms.store(0, Ordering::SeqCst);
    let dup = send(
        &host,
        r#"{"ticker":"AAPL","action":"buy","quantity":"3","price":"190","signalId":"slow-1"}"#,
    )
    .await;
    assert_eq!(dup["orders"][0]["outcome"], "duplicate");
    assert_eq!(fake.posts(), 1);
    Ok(())
}

/// The order path's locks end before the broker call, so orders whose
/// answer is still on its way must count against the position rail: here
/// the broker shows an order in its positions only 300 ms after it arrives.
/// Without counting them, twelve concurrent buys of 50 would all see a flat
/// position and together pass a 150 limit.
#[tokio::test]
async fn orders_still_in_flight_count_against_the_position_rail() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    fake.state.slow_intake_ms.store(300, Ordering::SeqCst);
    let host = std::sync::Arc::new(
        host_with(
            &fake,
            KEY_ID,
            "",
            "[risk]\nmax_position = 150\nmax_orders_per_minute = 0\n",
        )
        .await,
    );
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move { send(&host, &format!("buy 50 AAPL at {}", 185 + i)).await })
        })
        .collect();
    let mut filled = 0;
    for t in tasks {
        let r = t.await?;
        let o = &r["orders"][0];
        // The fake answers `accepted` and fills right after.
        if o["outcome"] == "accepted" {
            filled += 1;
        } else {
            assert!(
                o["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("risk.max_position = 150"),
                "{r}"
            );
        }
    }
    assert_eq!(filled, 3, "150 / 50");
    assert_eq!(fake.posts(), 3, "refused orders never reach the broker");
    // The broker calls overlapped: no lock is held across them.
    assert!(
        fake.state.max_posts_in_flight.load(Ordering::SeqCst) >= 2,
        "order submissions were serialised"
    );
    Ok(())
}

/// A burst past the intake bound: the alerts that fit are acknowledged and
/// every one of them is processed; the rest are refused up front with 503,
/// `Retry-After` and a message naming the setting, audited, and never
/// recorded as taken, so the sender knows exactly which to send again.
#[tokio::test]
async fn a_burst_past_the_intake_bound_gets_503_and_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    // Each alert holds its place in the queue for at least 300 ms.
    fake.state.slow_intake_ms.store(300, Ordering::SeqCst);
    let host = std::sync::Arc::new(host_with(&fake, KEY_ID, "", "[server]\nmax_pending_alerts = 8\n").await);
    let tasks: Vec<_> = (0..48)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let body = json!({ "ticker": "AAPL", "action": "buy", "quantity": "1", "price": "190", "signalId": format!("burst-{i}") });
                host.alert("alpaca", "application/json", &body.to_string()).await
            })
        })
        .collect();
    let (mut acknowledged, mut refused) = (Vec::new(), 0u64);
    for t in tasks {
        let r = t.await??;
        match r.status {
            200 | 202 => acknowledged.push(r.json()["alert_id"].as_str().unwrap().to_owned()),
            503 => {
                refused += 1;
                assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("1"));
                let e = r.json();
                assert_eq!(e["error"]["kind"], "overloaded", "{e}");
                assert!(
                    e["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("server.max_pending_alerts"),
                    "{e}"
                );
            }
            other => panic!("unexpected status {other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(
        acknowledged.len() >= 8,
        "the queue takes its bound: {}",
        acknowledged.len()
    );
    assert!(refused > 0, "48 alerts at once over a bound of 8 must overflow");
    assert_eq!(acknowledged.len() as u64 + refused, 48);
    // Every acknowledged alert is processed, with its order placed once.
    for id in &acknowledged {
        let mut status = None;
        for _ in 0..200 {
            status = host.app.state.alert_status(id)?.map(|s| s.0);
            if status.as_deref() == Some("processed") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(status.as_deref(), Some("processed"), "alert {id}");
        assert_eq!(host.app.orders.of_alert(id)?.len(), 1, "alert {id}");
    }
    assert_eq!(
        fake.posts(),
        acknowledged.len(),
        "one order per acknowledged alert, none for refused ones"
    );
    // Each refusal is audited: the first ones from this source one by one,
    // the rest counted in a summary (`audit::throttle`).
    host.app.flush_refusals().await?;
    let rejected = host.audit(&algobanana::audit::query::Filter {
        action: Some("alert.rejected".into()),
        ..Default::default()
    })?;
    let full: u64 = rejected
        .iter()
        .filter(|e| {
            serde_json::to_string(e)
                .unwrap_or_default()
                .contains("intake queue full")
        })
        .map(|e| e.payload["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(full, refused);
    // Once the queue drains, the same alerts are taken.
    let again =
        json!({ "ticker": "AAPL", "action": "buy", "quantity": "1", "price": "190", "signalId": "burst-again" });
    assert_eq!(
        host.alert("alpaca", "application/json", &again.to_string())
            .await?
            .status,
        200
    );
    Ok(())
}

/// A full intake queue refuses alerts, never the kill switch: throwing it
/// from a webhook works however many alerts are waiting.
#[tokio::test]
async fn the_kill_switch_works_while_the_intake_queue_is_full() -> anyhow::Result<()> {
    let fake = FakeAlpaca::start().await;
    fake.state.slow_intake_ms.store(2_000, Ordering::SeqCst);
    let host = std::sync::Arc::new(host_with(&fake, KEY_ID, "", "[server]\nmax_pending_alerts = 1\n").await);
    // One alert holds the only place while the broker takes its time.
    let first = {
        let host = host.clone();
        tokio::spawn(async move { send(&host, "buy 1 AAPL at 190").await })
    };
    let mut waited = 0;
    while fake.state.posts_in_flight.load(Ordering::SeqCst) == 0 && waited < 400 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(
        fake.state.posts_in_flight.load(Ordering::SeqCst),
        1,
        "the first alert is at the broker"
    );
    let full = host.alert("alpaca", "text/plain", "buy 1 AAPL at 191").await?;
    assert_eq!(full.status, 503, "{}", String::from_utf8_lossy(&full.body));
    let thrown = host
        .alert(
            "alpaca",
            "application/json",
            r#"{"kill_switch":"on","reason":"queue is full"}"#,
        )
        .await?;
    assert_eq!(thrown.status, 200, "{}", String::from_utf8_lossy(&thrown.body));
    assert_eq!(thrown.json()["kill_switch"], "on");
    assert_eq!(host.app.kill_switch()?, algobanana::trading::risk::KillSwitch::On);
    // The alert that held the place still finishes (it was past the rails).
    assert!(first.await?["orders"][0]["outcome"].is_string());
    Ok(())
}
