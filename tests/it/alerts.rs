//! Alerts end to end over real sockets.

use algobanana::audit::query::Filter;
use algobanana_tests::{HostBuilder, TestHost};
use serde_json::json;
use sha2::{Digest, Sha256};

const JSON_ALERT: &str = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35","signalId":"sig-001"}"#;

#[tokio::test]
async fn json_alert_fills_on_paper_and_every_step_is_audited() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host
        .request(
            "POST",
            &host.hook("default"),
            &[
                ("content-type", "application/json"),
                ("x-request-id", "req-json-1"),
                ("user-agent", "TradingView-test"),
            ],
            JSON_ALERT.as_bytes().to_vec(),
        )
        .await?;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["x-request-id"], "req-json-1");
    let body = reply.json();
    let alert_id = body["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(body["status"], "processed");
    assert_eq!(body["route"], "default");
    assert_eq!(body["request_id"], "req-json-1");
    assert_eq!(body["error"], json!(null));
    let order = &body["orders"][0];
    assert_eq!(body["orders"].as_array().unwrap().len(), 1);
    assert_eq!(order["outcome"], "filled");
    assert_eq!(
        order["client_order_id"], "sig-001",
        "the signal id becomes the client order id"
    );
    assert_eq!(order["intent"]["symbol"], "AAPL");
    assert_eq!(order["intent"]["side"], "buy");
    assert_eq!(order["intent"]["quantity"], "10");
    assert_eq!(order["intent"]["order_type"], json!({"type": "market"}));
    assert_eq!(order["intent"]["reference_price"], "190.35");
    assert_eq!(order["ack"]["status"], "filled");
    assert_eq!(order["ack"]["filled_quantity"], "10");
    assert_eq!(order["ack"]["average_fill_price"], "190.35");
    assert_eq!(order["ack"]["client_order_id"], "sig-001");
    assert!(order["ack"]["broker_order_id"].as_str().unwrap().starts_with("paper-"));

    let events = host.audit_of(&alert_id)?;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "alert.received",
            "plugin.call",
            "plugin.call",
            "risk.decision",
            "order.intent",
            "plugin.call",
            "alert.processed"
        ]
    );
    for e in &events {
        assert_eq!(e.request_id.as_deref(), Some("req-json-1"));
        assert_eq!(e.correlation_id.as_deref(), Some(alert_id.as_str()));
        assert_eq!(e.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.user_agent.as_deref(), Some("TradingView-test"));
    }
    let received = &events[0];
    assert_eq!(received.actor_kind, "webhook_source");
    assert_eq!(received.actor_id, "default");
    assert_eq!(received.payload["body"]["text"], JSON_ALERT);
    assert_eq!(received.payload["content_type"], "application/json");

    // A plain buy needs no portfolio, and the rule asks for it only on
    // request (its manifest), so the host did not ask the broker first.
    let rule = &events[1];
    assert_eq!(rule.payload["input"]["portfolio"], "on-request");
    assert_eq!(rule.payload["capabilities"], json!([]), "it never asked");
    assert_eq!(rule.actor_kind, "plugin");
    assert_eq!(rule.actor_id, "tradingview@0.1.0");
    assert_eq!(rule.outcome, "success");
    let p = &rule.payload;
    assert_eq!(p["plugin"], "tradingview");
    assert_eq!(p["version"], "0.1.0");
    let builtin = algobanana::plugins::builtin::find("tradingview").unwrap();
    assert_eq!(
        p["digest"],
        format!("sha256:{}", hex::encode(Sha256::digest(builtin.wasm)))
    );
    assert_eq!(p["export"], "evaluate");
    assert_eq!(p["world"], "rule");
    assert_eq!(p["wit"], "algobanana:plugin@0.1.0");
    assert_eq!(p["outcome"], "ok");
    assert_eq!(p["input"]["alert"]["id"], alert_id.as_str());
    assert_eq!(p["input"]["alert"]["body"]["text"], JSON_ALERT);
    assert_eq!(p["output"][0]["symbol"], "AAPL");
    assert_eq!(p["output"][0]["quantity"], "10");
    assert_eq!(p["output"][0]["client_order_id"], "sig-001");
    assert!(p["duration_us"].as_u64().is_some());
    assert!(p["memory_peak_bytes"].as_u64().unwrap() > 0);
    assert_eq!(p["limits"]["deadline_ms"], 100);

    let positions = &events[2];
    assert_eq!(
        positions.payload["export"], "positions",
        "the rails ask the broker first"
    );
    let risk = &events[3];
    assert_eq!(risk.outcome, "allow");
    assert_eq!(risk.payload["allowed"], true);
    assert_eq!(risk.payload["position"], "0");
    assert_eq!(risk.payload["kill_switch"], "off");

    let intent = &events[4];
    assert_eq!(intent.outcome, "allow");
    assert_eq!(intent.resource.as_deref(), Some("order:sig-001"));
    assert_eq!(intent.payload["intent"]["quantity"], "10");

    let broker = &events[5];
    assert_eq!(broker.actor_id, "paper@0.1.0");
    assert_eq!(broker.payload["export"], "place-order");
    assert_eq!(broker.payload["input"]["client_order_id"], "sig-001");
    assert_eq!(broker.payload["output"]["status"], "filled");
    assert_eq!(broker.payload["kv"]["committed"], true);

    let done = &events[6];
    assert_eq!(done.outcome, "success");
    assert_eq!(done.payload["orders"][0]["outcome"], "filled");
    // The order row and its one transition.
    let orders = host.app.orders.of_alert(&alert_id)?;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].client_order_id, "sig-001");
    assert_eq!(orders[0].state, algobanana::trading::orders::OrderState::Filled);
    assert!(orders[0].sent);
    Ok(())
}

#[tokio::test]
async fn text_alert_with_limit_price_fills_at_the_reference_price() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host
        .alert("default", "text/plain", "sell 0.5 BTCUSD at 64250 limit")
        .await?;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let order = &body["orders"][0];
    assert_eq!(order["intent"]["symbol"], "BTCUSD");
    assert_eq!(order["intent"]["side"], "sell");
    assert_eq!(order["intent"]["quantity"], "0.5");
    assert_eq!(
        order["intent"]["order_type"],
        json!({"type": "limit", "limit": "64250"})
    );
    assert_eq!(order["outcome"], "filled");
    assert_eq!(order["ack"]["average_fill_price"], "64250");
    let coid = order["client_order_id"].as_str().unwrap();
    assert!(coid.starts_with("ab-") && coid.len() == 29, "derived id: {coid}");
    let events = host.audit_of(body["alert_id"].as_str().unwrap())?;
    assert_eq!(
        events[1].payload["input"]["alert"]["body"]["text"],
        "sell 0.5 BTCUSD at 64250 limit"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_token_is_404_without_a_hint_and_is_audited_without_the_token() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host
        .request("POST", "/v1/hooks/abh_not_a_real_token", &[], b"buy 1 AAPL".to_vec())
        .await?;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.json(),
        json!({"error": {"kind": "not_found", "message": "not found"}})
    );
    let other = host.request("GET", "/v1/anything", &[], Vec::new()).await?;
    assert_eq!(other.status, 404);
    assert_eq!(other.body, reply.body, "an unknown hook looks like any unknown path");
    let events = host.audit(&Filter {
        action: Some("alert.rejected".into()),
        ..Filter::default()
    })?;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, "deny");
    assert!(
        !serde_json::to_string(&events[0])?.contains("abh_not_a_real_token"),
        "the presented token is never stored"
    );
    Ok(())
}

#[tokio::test]
async fn oversize_body_is_413_and_nothing_runs() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let big = format!(
        "{{\"ticker\":\"AAPL\",\"action\":\"buy\",\"quantity\":\"1\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let reply = host.alert("default", "application/json", &big).await?;
    assert_eq!(reply.status, 413);
    let body = reply.json();
    assert_eq!(body["error"]["kind"], "payload_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("65536-byte cap"),
        "{body}"
    );
    assert!(
        host.audit(&Filter {
            action: Some("plugin.call".into()),
            ..Filter::default()
        })?
        .is_empty()
    );
    let rejected = host.audit(&Filter {
        action: Some("alert.rejected".into()),
        ..Filter::default()
    })?;
    assert_eq!(rejected[0].actor_id, "default");
    // Exactly at the cap is accepted (and fails in the rule, which is fine).
    let at_cap = format!("buy 1 AAPL{}", " ".repeat(65536 - 10));
    assert_eq!(host.alert("default", "text/plain", &at_cap).await?.status, 200);
    Ok(())
}

#[tokio::test]
async fn malformed_json_gets_the_rules_clear_error_and_an_audit_row() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host
        .alert("default", "application/json", r#"{"ticker": "AAPL", "action": }"#)
        .await?;
    assert_eq!(reply.status, 422);
    let body = reply.json();
    assert_eq!(body["status"], "rule_error");
    assert_eq!(body["error"]["kind"], "invalid_alert");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("not valid JSON"), "{message}");
    assert!(message.contains("expected an object such as"), "{message}");
    let events = host.audit_of(body["alert_id"].as_str().unwrap())?;
    let call = events
        .iter()
        .find(|e| e.action == "plugin.call" && e.payload["export"] == "evaluate")
        .unwrap();
    assert_eq!(call.outcome, "failure");
    assert_eq!(call.payload["outcome"], "guest_error");
    assert_eq!(call.payload["output"]["error"]["kind"], "invalid_alert");
    assert_eq!(events.last().unwrap().action, "alert.processed");
    assert_eq!(events.last().unwrap().outcome, "failure");

    for (bad, expect) in [
        ("", "alert body is empty"),
        (r#"{"ticker":"AAPL"}"#, "has no `action`"),
        (
            r#"{"ticker":"AAPL","action":"hold","quantity":1}"#,
            "action `hold` is not supported; expected buy, sell, exit",
        ),
        (
            r#"{"ticker":"AAPL","action":"buy","quantity":"1e3"}"#,
            "is not a decimal number",
        ),
        (
            r#"{"ticker":"AAPL","action":"buy","quantity":"99999999999999999999999999999999999"}"#,
            "has too many digits to pass exactly",
        ),
        (
            r#"{"ticker":"AAPL","action":"buy","quantity":"-1"}"#,
            "greater than zero",
        ),
        ("buy ten AAPL", "not a quantity"),
    ] {
        let reply = host.alert("default", "text/plain", bad).await?;
        assert_eq!(reply.status, 422, "{bad}");
        let m = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(m.contains(expect), "{bad:?}: {m}");
    }
    Ok(())
}

#[tokio::test]
async fn invalid_request_ids_are_replaced_by_generated_ones() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host
        .request(
            "POST",
            &host.hook("default"),
            &[("x-request-id", "bad id with spaces")],
            b"buy 1 AAPL at 10".to_vec(),
        )
        .await?;
    let id = &reply.headers["x-request-id"];
    assert_ne!(id, "bad id with spaces");
    assert!(uuid::Uuid::parse_str(id).is_ok());
    Ok(())
}

#[tokio::test]
async fn paper_account_state_persists_across_alerts_and_restarts() -> anyhow::Result<()> {
    let builder = HostBuilder::new().broker_settings(json!({"initial_cash": "1000"}));
    let host = builder.clone().start().await?;
    let buy = host.alert("default", "text/plain", "buy 10 AAPL at 100").await?.json();
    assert_eq!(buy["orders"][0]["outcome"], "filled");
    let more = host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(more["orders"][0]["outcome"], "rejected");
    assert!(
        more["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("insufficient_funds"),
        "{more}"
    );

    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let same = host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(
        same["orders"][0]["outcome"], "duplicate",
        "the same alert within the dedupe window, across a restart: {same}"
    );
    let again = host.alert("default", "text/plain", "buy 1 AAPL at 100.5").await?.json();
    assert_eq!(
        again["orders"][0]["outcome"], "rejected",
        "cash was persisted in kv across the restart"
    );
    let sell = host.alert("default", "text/plain", "sell 10 AAPL at 101").await?.json();
    assert_eq!(sell["orders"][0]["outcome"], "filled");
    let after = host.alert("default", "text/plain", "buy 10 AAPL at 101").await?.json();
    assert_eq!(after["orders"][0]["outcome"], "filled", "the sale returned 1010 cash");
    Ok(())
}

#[tokio::test]
async fn concurrent_alerts_all_fill_with_distinct_ids() -> anyhow::Result<()> {
    let host = std::sync::Arc::new(TestHost::start().await?);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            host.alert("default", "text/plain", &format!("buy {} MSFT at 100", i + 1))
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut brokers = std::collections::HashSet::new();
    for t in tasks {
        let body = t.await??.json();
        assert_eq!(body["orders"][0]["outcome"], "filled", "{body}");
        assert!(ids.insert(body["orders"][0]["client_order_id"].as_str().unwrap().to_owned()));
        assert!(brokers.insert(body["orders"][0]["ack"]["broker_order_id"].as_str().unwrap().to_owned()));
    }
    // 24 serialised paper calls: the account's sequence has no gaps or repeats.
    let expected: std::collections::HashSet<String> = (1..=24).map(|n| format!("paper-paper-{n}")).collect();
    assert_eq!(brokers, expected);
    Ok(())
}

#[tokio::test]
async fn healthz_answers_without_a_token() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let reply = host.request("GET", "/healthz", &[], Vec::new()).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    Ok(())
}
