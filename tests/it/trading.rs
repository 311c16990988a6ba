//! Trading semantics: exactly-once orders (dedupe window, signal ids,
//! restarts), the risk rails and their audited decisions, the kill switch
//! (webhook, command line, restarts), ambiguous broker failures reconciled
//! by client order id, crash recovery at start, and 202 when the pipeline
//! outlasts the response budget.

use std::time::Duration;

use algobanana::audit::query::{AuditRecord, Filter};
use algobanana::cli::{Cli, run};
use algobanana::trading::orders::OrderState;
use algobanana_tests::plugins::*;
use algobanana_tests::{HostBuilder, TestHost, eventually};
use clap::Parser;
use serde_json::{Value, json};

async fn cli(args: &[&str]) -> anyhow::Result<(u8, String)> {
    let cli = Cli::try_parse_from(std::iter::once("algobanana").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let code = run(cli, &mut out).await?;
    Ok((code, String::from_utf8(out)?))
}

async fn order(host: &TestHost, body: &str) -> anyhow::Result<Value> {
    let ct = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let reply = host.alert("default", ct, body).await?;
    Ok(reply.json()["orders"][0].clone())
}

fn sent_orders(host: &TestHost) -> usize {
    host.orders().unwrap().iter().filter(|o| o.sent).count()
}

/// The audited calls of one broker export, oldest first.
fn calls(host: &TestHost, export: &str) -> Vec<AuditRecord> {
    host.audit(&Filter {
        action: Some("plugin.call".into()),
        ..Filter::default()
    })
    .unwrap()
    .into_iter()
    .filter(|e| e.payload["export"] == export)
    .collect()
}

fn place_calls(host: &TestHost) -> usize {
    calls(host, "place-order").len()
}

#[tokio::test]
async fn the_same_alert_four_times_places_one_order_even_across_a_restart() -> anyhow::Result<()> {
    const ALERT: &str = r#"{"ticker":"MSFT","action":"buy","quantity":"2","price":"410.5"}"#;
    const SIGNAL: &str = r#"{"ticker":"MSFT","action":"buy","quantity":"1","price":"410","signalId":"sig-42"}"#;
    let host = TestHost::start().await?;
    assert_eq!(order(&host, ALERT).await?["outcome"], "filled");
    let second = order(&host, ALERT).await?;
    assert_eq!(second["outcome"], "duplicate", "{second}");
    assert!(
        second["reason"].as_str().unwrap().contains("no second order was sent"),
        "{second}"
    );
    assert_eq!(order(&host, SIGNAL).await?["outcome"], "filled");
    assert_eq!(order(&host, SIGNAL).await?["outcome"], "duplicate");

    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(order(&host, ALERT).await?["outcome"], "duplicate", "after a restart");
    assert_eq!(order(&host, ALERT).await?["outcome"], "duplicate");
    assert_eq!(
        order(&host, SIGNAL).await?["outcome"],
        "duplicate",
        "a signal id is never reused"
    );
    assert_eq!(sent_orders(&host), 2, "two orders reached the broker in all");
    assert_eq!(place_calls(&host), 2);
    let dups = host.audit(&Filter {
        action: Some("order.duplicate".into()),
        ..Filter::default()
    })?;
    assert_eq!(dups.len(), 5);

    // Outside the window the same text is a new signal.
    let host = HostBuilder::new()
        .toml("[trading]\ndedupe_window_s = 0\n")
        .start()
        .await?;
    assert_eq!(order(&host, ALERT).await?["outcome"], "filled");
    assert_eq!(order(&host, ALERT).await?["outcome"], "filled");
    Ok(())
}

#[tokio::test]
async fn rails_refuse_naming_the_rail_and_every_decision_is_audited() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml(
            "[risk]\nsymbols = [\"AAPL\", \"MSFT\"]\nmax_order_quantity = 100\nmax_order_notional = \"5000.50\"\nmax_position = 150\nmax_orders_per_minute = 6\nprice_band_pct = 5\n",
        )
        .start()
        .await?;
    let refused = |o: &Value, needle: &str| {
        assert_eq!(o["outcome"], "rejected", "{o}");
        let r = o["reason"].as_str().unwrap();
        assert!(r.contains(needle), "{r}");
    };
    refused(&order(&host, "buy 1 TSLA at 200").await?, "TSLA is not in risk.symbols");
    refused(
        &order(&host, "buy 101 AAPL at 1").await?,
        "quantity 101 is over risk.max_order_quantity = 100",
    );
    refused(
        &order(&host, "buy 50 AAPL at 100.02").await?,
        "notional 5001.00 is over risk.max_order_notional = 5000.50",
    );
    refused(&order(&host, "buy 1 AAPL").await?, "without a reference price");
    refused(
        &order(
            &host,
            r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","orderType":"limit","limitPrice":"106"}"#,
        )
        .await?,
        "risk.price_band_pct = 5",
    );
    assert_eq!(order(&host, "buy 50 AAPL at 100").await?["outcome"], "filled");
    assert_eq!(order(&host, "buy 50 AAPL at 99").await?["outcome"], "filled");
    assert_eq!(order(&host, "buy 50 AAPL at 98").await?["outcome"], "filled");
    refused(
        &order(&host, "buy 1 AAPL at 97").await?,
        "the position in AAPL would be 151, over risk.max_position = 150",
    );
    // An exit is never stopped by the size rails and is recorded as a bypass.
    let exit = order(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"150","price":"97","sentiment":"flat"}"#,
    )
    .await?;
    assert_eq!(exit["outcome"], "filled", "{exit}");
    let decisions = host.audit(&Filter {
        action: Some("risk.decision".into()),
        ..Filter::default()
    })?;
    let last = decisions.last().unwrap();
    assert_eq!(last.payload["allowed"], true);
    assert_eq!(
        last.payload["bypassed"],
        json!(["risk.max_order_quantity", "risk.max_order_notional"])
    );
    let rails: Vec<&str> = decisions.iter().filter_map(|d| d.payload["rail"].as_str()).collect();
    assert_eq!(
        rails,
        [
            "risk.symbols",
            "risk.max_order_quantity",
            "risk.max_order_notional",
            "risk.max_order_notional",
            "risk.price_band_pct",
            "risk.max_position"
        ]
    );
    // The rate rail: 4 orders sent so far this minute, the limit is 6.
    assert_eq!(order(&host, "buy 1 MSFT at 400").await?["outcome"], "filled");
    assert_eq!(order(&host, "buy 1 MSFT at 401").await?["outcome"], "filled");
    refused(
        &order(&host, "buy 1 MSFT at 402").await?,
        "6 orders were sent in the last minute",
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_position_fails_closed() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tradingview", "probe")
        .broker_settings(json!({ "fail_positions": true }))
        .toml("[secrets.k]\nvalue = \"v\"\n")
        .start()
        .await?;
    let o = host.alert("probe", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(o["orders"][0]["outcome"], "rejected", "{o}");
    let reason = o["orders"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("fail closed"), "{o}");
    // The broker's own answer is in the reason: what to fix.
    assert!(
        reason.contains("(the position is unknown: broker `probe` answered positions with unavailable:"),
        "{o}"
    );
    assert_eq!(place_calls(&host), 0);
    Ok(())
}

#[tokio::test]
async fn the_kill_switch_holds_across_restarts_and_lets_only_what_it_should_through() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml("[risk]\nmax_order_quantity = 5\n")
        .start()
        .await?;
    let data = host.path().to_str().unwrap().to_owned();
    assert_eq!(order(&host, "buy 5 AAPL at 100").await?["outcome"], "filled");
    assert_eq!(order(&host, "buy 5 AAPL at 101").await?["outcome"], "filled");

    // Thrown by an authenticated webhook action.
    let thrown = host
        .alert(
            "default",
            "application/json",
            r#"{"kill_switch":"on","reason":"runaway strategy"}"#,
        )
        .await?;
    assert_eq!(thrown.status, 200);
    assert_eq!(thrown.json()["kill_switch"], "on");
    let off = host
        .alert("default", "application/json", r#"{"kill_switch":"off"}"#)
        .await?;
    assert_eq!(off.status, 422, "a webhook cannot release it");
    // Nor loosen it: `reduce_only` while it is `on` changes nothing, says
    // so, and the attempt is audited.
    let looser = host
        .alert(
            "default",
            "application/json",
            r#"{"kill_switch":"reduce_only","reason":"calmer now"}"#,
        )
        .await?;
    assert_eq!(looser.status, 200);
    assert_eq!(looser.json()["kill_switch"], "on", "{}", looser.json());
    assert!(
        looser.json()["unchanged"]
            .as_str()
            .unwrap()
            .contains("a webhook cannot loosen it"),
        "{}",
        looser.json()
    );
    let denied = host.audit(&Filter {
        action: Some("config.changed".into()),
        ..Filter::default()
    })?;
    let denied = denied
        .iter()
        .find(|e| e.outcome == "deny")
        .expect("the attempt is audited");
    assert_eq!(denied.payload["reason"], "calmer now");
    assert_eq!(denied.payload["kill_switch"]["to"], "on");
    let exit = r#"{"ticker":"AAPL","action":"sell","quantity":"10","price":"100","sentiment":"flat"}"#;
    let blocked = order(&host, "buy 1 AAPL at 102").await?;
    assert!(
        blocked["reason"].as_str().unwrap().contains("the kill switch is on"),
        "{blocked}"
    );
    let blocked_exit = order(&host, exit).await?;
    assert!(
        blocked_exit["reason"]
            .as_str()
            .unwrap()
            .contains("the kill switch is on"),
        "exits do not pass the kill switch: {blocked_exit}"
    );

    // It survives a restart.
    let (dir, tokens) = host.stop().await;
    let (_, status) = cli(&["kill-switch", "status", "--data-dir", dir.path().to_str().unwrap()]).await?;
    assert!(status.contains("kill switch: on (set by default"), "{status}");
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let blocked = order(&host, "buy 1 AAPL at 103").await?;
    assert!(
        blocked["reason"].as_str().unwrap().contains("the kill switch is on"),
        "{blocked}"
    );

    // Reduce-only from the command line while the server runs: in effect at
    // once, audited by the server before its next decision. The exit passes
    // (and bypasses max_order_quantity = 5); a new buy does not.
    let (code, out) = cli(&[
        "kill-switch",
        "reduce-only",
        "--data-dir",
        &data,
        "--reason",
        "wind down",
    ])
    .await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("on → reduce_only (in effect now"), "{out}");
    let exit_filled = order(
        &host,
        r#"{"ticker":"AAPL","action":"sell","quantity":"10","price":"100.5","sentiment":"flat"}"#,
    )
    .await?;
    assert_eq!(exit_filled["outcome"], "filled", "{exit_filled}");
    let blocked = order(&host, "buy 1 AAPL at 104").await?;
    assert!(
        blocked["reason"].as_str().unwrap().contains("reduce-only mode"),
        "{blocked}"
    );
    let changes = host.audit(&Filter {
        action: Some("config.changed".into()),
        ..Filter::default()
    })?;
    // The changes (the webhook's attempt to loosen it is a `deny`).
    let kills: Vec<&Value> = changes
        .iter()
        .filter(|c| c.resource.as_deref() == Some("kill_switch") && c.outcome == "success")
        .map(|c| &c.payload)
        .collect();
    assert_eq!(kills.len(), 2, "{kills:?}");
    assert_eq!(kills[0]["kill_switch"]["to"], "on");
    assert_eq!(kills[0]["reason"], "runaway strategy");
    assert_eq!(kills[1]["kill_switch"]["to"], "reduce_only");
    assert_eq!(kills[1]["reason"], "wind down");

    // Released with the server stopped: audited directly.
    let (dir, tokens) = host.stop().await;
    let (code, out) = cli(&["kill-switch", "off", "--data-dir", dir.path().to_str().unwrap()]).await?;
    assert_eq!(code, 0);
    assert!(out.contains("reduce_only → off (audited)"), "{out}");
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(order(&host, "buy 1 AAPL at 105").await?["outcome"], "filled");
    Ok(())
}

#[tokio::test]
async fn an_ambiguous_broker_failure_is_reconciled_by_client_order_id_never_resent() -> anyhow::Result<()> {
    let grant = "http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n";
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant(grant)
        .route("found", "tradingview", "probe")
        .broker_settings(json!({ "place": "ambiguous", "has_order": true }))
        .route("lost", "tradingview", "probe")
        .broker_settings(json!({ "place": "unavailable", "has_order": false }))
        .toml("[secrets.k]\nvalue = \"v\"\n[trading]\nnot_found_grace_s = 1\n")
        .start()
        .await?;
    let found = host.alert("found", "text/plain", "buy 1 AAPL at 100").await?.json();
    let o = &found["orders"][0];
    assert_eq!(o["outcome"], "filled", "the broker had it: {o}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap()
            .contains("the broker reports the order as filled"),
        "{o}"
    );
    // The broker does not list the other one. Sent a moment ago, it may
    // yet appear (brokers can take a moment to list an order): unknown,
    // not never placed, until the grace (here 1 s) has passed…
    let lost = host.alert("lost", "text/plain", "buy 1 AAPL at 100").await?.json();
    let o = &lost["orders"][0];
    assert_eq!(o["outcome"], "error", "{o}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap()
            .contains("the broker does not list it yet"),
        "{o}"
    );
    assert_eq!(host.orders()?[1].state, OrderState::Unknown);
    // …then it is asked again, and still missing, it was never placed.
    let orders = eventually(Duration::from_secs(15), || {
        let o = host.orders().ok()?;
        (o[1].state == OrderState::Rejected).then_some(o)
    })
    .await?;
    assert!(
        orders[1]
            .reason
            .as_deref()
            .unwrap()
            .contains("was never placed; it was not resent"),
        "{orders:?}"
    );
    assert_eq!(orders[0].state, OrderState::Filled);
    assert_eq!(place_calls(&host), 2, "one placement each, no retry");
    // The lookup's `plugin.call` event may commit just after the state
    // it led to.
    let asked = eventually(Duration::from_secs(10), || {
        let n = calls(&host, "get-order").len();
        (n >= 3).then_some(n)
    })
    .await?;
    assert_eq!(asked, 3, "found once, lost twice (unknown, then never placed)");
    Ok(())
}

#[tokio::test]
async fn a_broker_whose_kv_writes_cannot_be_saved_places_nothing_and_the_audit_shows_its_answer() -> anyhow::Result<()>
{
    // The paper broker's book is its kv in state.db: its "no such order"
    // is final at once, no grace needed.
    let host = HostBuilder::new()
        .toml("[trading]\nnot_found_grace_s = 0\n")
        .start()
        .await?;
    // The state database refuses the paper broker's book writes, as a full
    // or failing disk would, while everything else in it keeps working.
    let conn = rusqlite::Connection::open(host.path().join("state.db"))?;
    conn.execute_batch(
        "CREATE TRIGGER kv_refuse_insert BEFORE INSERT ON plugin_kv BEGIN SELECT RAISE(ABORT, 'test: disk full'); END;
         CREATE TRIGGER kv_refuse_update BEFORE UPDATE ON plugin_kv BEGIN SELECT RAISE(ABORT, 'test: disk full'); END;",
    )?;
    let o = order(&host, "buy 2 AAPL at 100").await?;
    // The paper broker answered, but its book does not hold the order, so
    // the host treats the placement as ambiguous, asks the broker, and
    // finds it was never placed: rejected, not filled and not resent.
    assert_eq!(o["outcome"], "rejected", "{o}");
    assert!(o["reason"].as_str().unwrap().contains("never placed"), "{o}");
    let place = calls(&host, "place-order")
        .into_iter()
        .next()
        .expect("the placement is audited");
    assert_eq!(place.outcome, "trap");
    let p = &place.payload;
    assert!(
        p["error"]
            .as_str()
            .unwrap()
            .contains("could not save the plugin's kv writes"),
        "{p}"
    );
    assert!(p["error"].as_str().unwrap().contains("test: disk full"), "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("disk has space"),
        "says what to do: {p}"
    );
    assert_eq!(p["kv"]["committed"], false, "{p}");
    assert!(
        p["output"]["status"] == "filled" && p["output"]["client_order_id"].is_string(),
        "the row keeps what the plugin answered: {p}"
    );
    assert_eq!(place_calls(&host), 1, "never resent");

    // Once the disk takes writes again, the next alert goes through.
    conn.execute_batch("DROP TRIGGER kv_refuse_insert; DROP TRIGGER kv_refuse_update;")?;
    assert_eq!(order(&host, "buy 2 AAPL at 100.5").await?["outcome"], "filled");
    let states: Vec<OrderState> = host.orders()?.iter().map(|o| o.state).collect();
    assert_eq!(states, [OrderState::Rejected, OrderState::Filled]);
    Ok(())
}

#[tokio::test]
async fn after_a_crash_orders_are_reconciled_and_unfinished_alerts_resume_once() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml("[trading]\nnot_found_grace_s = 1\n")
        .start()
        .await?;
    let (dir, tokens) = host.stop().await;
    // The state a kill -9 leaves between recording an intent and the broker
    // call, and an alert accepted but not yet run.
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db"))?;
        let now = algobanana::audit::now_ns();
        conn.execute(
            "INSERT INTO orders(client_order_id, fingerprint, alert_id, route, broker, intent, state, sent, created_at_ns, updated_at_ns)
             VALUES ('ab-crashed', 'f', '01a24200-0000-7000-8000-000000000001', 'default', 'paper', '{}', 'intent', 1, ?1, ?1)",
            [now],
        )?;
        conn.execute(
            "INSERT INTO alert(id, route, received_at_ns, request_id, content_type, body, status)
             VALUES ('01a24200-0000-7000-8000-000000000002', 'default', ?1, 'req-resumed', 'text/plain', CAST('buy 3 AMD at 150' AS BLOB), 'received')",
            [now],
        )?;
    }
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    // Sent (by its row) a moment before the crash: the broker may not list
    // it yet, so it is unknown until its grace has passed, then asked again.
    let orders = host.orders()?;
    assert_eq!(orders[0].client_order_id, "ab-crashed");
    assert_eq!(orders[0].state, OrderState::Unknown, "{orders:?}");
    let orders = eventually(Duration::from_secs(15), || {
        let o = host.orders().ok()?;
        (o[0].state == OrderState::Rejected).then_some(o)
    })
    .await?;
    assert!(
        orders[0].reason.as_deref().unwrap().contains("never placed"),
        "paper never had it: {orders:?}"
    );
    let resumed = host.app.orders.of_alert("01a24200-0000-7000-8000-000000000002")?;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].state, OrderState::Filled, "the unfinished alert ran");
    assert_eq!(
        place_calls(&host),
        1,
        "nothing was resent, the resumed alert placed once"
    );

    // A second restart finds nothing left to do.
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert_eq!(place_calls(&host), 1);
    Ok(())
}

/// A sweep that runs while an alert is placing an order leaves that order
/// to its alert. The order is working by its state but not yet at the
/// broker: asking the broker found nothing and rejected it, and the
/// broker's answer then could not be recorded (seen with the sweep at
/// start, beside a host's first alert).
#[tokio::test]
async fn a_sweep_leaves_an_order_being_placed_to_its_alert() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .limit("deadline_ms", 5000)
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("slow", "tradingview", "probe")
        // Once placed, the broker lists it as working: later sweeps have
        // nothing to ask either.
        .broker_settings(json!({ "busy_ms": 2500, "open_orders": ["slow-1"] }))
        .toml("[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 1\n")
        .start()
        .await?;
    let sweeps = |host: &TestHost| {
        host.audit(&Filter {
            action: Some("reconcile.sweep".into()),
            ..Filter::default()
        })
        .map(|s| s.len())
        .unwrap_or(0)
    };
    let before = sweeps(&host);
    let reply = host
        .alert(
            "slow",
            "application/json",
            r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","signalId":"slow-1"}"#,
        )
        .await?
        .json();
    assert!(sweeps(&host) > before, "a sweep ran during the placement");
    assert_eq!(reply["orders"][0]["client_order_id"], "slow-1", "{reply}");
    assert_eq!(reply["orders"][0]["outcome"], "accepted", "{reply}");
    let orders = host.orders()?;
    assert_eq!(orders[0].state, OrderState::Accepted, "{orders:?}");
    let asked = host.audit(&Filter {
        action: Some("order.reconciled".into()),
        ..Filter::default()
    })?;
    assert!(asked.is_empty(), "the sweep did not ask about it: {asked:?}");
    Ok(())
}

#[tokio::test]
async fn a_slow_pipeline_answers_202_and_finishes_in_the_background() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("slow", "tradingview", "probe")
        .broker_settings(json!({ "busy_ms": 400 }))
        .toml("[secrets.k]\nvalue = \"v\"\n[trading]\nresponse_budget_ms = 50\n")
        .start()
        .await?;
    let reply = host.alert("slow", "text/plain", "buy 1 AAPL at 100").await?;
    assert_eq!(reply.status, 202, "{}", String::from_utf8_lossy(&reply.body));
    let id = reply.json()["alert_id"].as_str().unwrap().to_owned();
    assert_eq!(reply.json()["status"], "processing");
    let done = eventually(Duration::from_secs(10), || {
        host.audit_of(&id)
            .ok()
            .and_then(|e| e.into_iter().find(|e| e.action == "alert.processed"))
    })
    .await?;
    assert_eq!(done.payload["orders"][0]["outcome"], "accepted");
    Ok(())
}

#[tokio::test]
async fn a_stale_signal_is_refused() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let old = r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","time":"2026-01-02T14:30:00Z"}"#;
    let reply = host.alert("default", "application/json", old).await?;
    assert_eq!(reply.status, 422);
    assert_eq!(reply.json()["error"]["kind"], "stale_signal");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trading.max_signal_age_s = 300"),
        "{}",
        reply.json()
    );
    let fresh = format!(
        r#"{{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","time":"{}"}}"#,
        jiff::Timestamp::now()
    );
    assert_eq!(order(&host, &fresh).await?["outcome"], "filled");
    Ok(())
}

#[tokio::test]
async fn concurrent_alerts_cannot_together_exceed_a_rail() -> anyhow::Result<()> {
    let host = std::sync::Arc::new(
        HostBuilder::new()
            .toml("[risk]\nmax_position = 150\nmax_orders_per_minute = 0\n")
            .start()
            .await?,
    );
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move { order(&host, &format!("buy 50 AAPL at {}", 100 + i)).await })
        })
        .collect();
    let mut filled = 0;
    for t in tasks {
        let o = t.await??;
        if o["outcome"] == "filled" {
            filled += 1;
        } else {
            assert!(o["reason"].as_str().unwrap().contains("risk.max_position = 150"), "{o}");
        }
    }
    assert_eq!(filled, 3, "150 / 50");
    Ok(())
}

#[tokio::test]
async fn the_rule_sizes_from_the_account_and_exits_and_reverses_positions() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .rule_config(json!({ "percent_of_equity": "10" }))
        .start()
        .await?;
    // 10 % of 100,000 equity at 190 → 52.63…, rounded down to whole shares.
    let o = order(&host, r#"{"ticker":"AAPL","action":"buy","price":"190"}"#).await?;
    assert_eq!(o["intent"]["quantity"], "52", "{o}");
    assert_eq!(o["outcome"], "filled");
    // Alert-level sizing overrides the route's.
    let o = order(
        &host,
        r#"{"ticker":"MSFT","action":"buy","notional":"1000","price":"400"}"#,
    )
    .await?;
    assert_eq!(o["intent"]["quantity"], "2", "{o}");
    let o = order(
        &host,
        r#"{"ticker":"NVDA","action":"buy","riskPercent":"1","price":"100","stopLoss":{"stopPrice":"95"}}"#,
    )
    .await?;
    // 1 % of equity (~100,000) risked over a 5.00 stop distance.
    let q: u32 = o["intent"]["quantity"].as_str().unwrap().parse()?;
    assert!((195..=200).contains(&q), "{o}");
    let no_stop = host
        .alert(
            "default",
            "application/json",
            r#"{"ticker":"NVDA","action":"buy","riskPercent":"1","price":"101"}"#,
        )
        .await?
        .json();
    assert!(
        no_stop["error"]["message"].as_str().unwrap().contains("needs a stop"),
        "{no_stop}"
    );

    // Reverse: close the 52 long and open 52 short, in that order.
    let reply = host
        .alert(
            "default",
            "application/json",
            r#"{"ticker":"AAPL","action":"reverse","price":"191"}"#,
        )
        .await?
        .json();
    let orders = reply["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2, "{reply}");
    assert_eq!(orders[0]["intent"]["side"], "sell");
    assert_eq!(orders[0]["intent"]["reduce_only"], true);
    assert_eq!(orders[0]["intent"]["quantity"], "52");
    assert_eq!(orders[1]["intent"]["side"], "sell");
    assert_eq!(orders[1]["intent"]["reduce_only"], false);
    assert!(orders.iter().all(|o| o["outcome"] == "filled"), "{reply}");
    // Exit: buy back the 52 short, reduce-only; then nothing is left.
    let exit = host.alert("default", "text/plain", "exit AAPL at 189").await?.json();
    assert_eq!(exit["orders"][0]["intent"]["side"], "buy", "{exit}");
    assert_eq!(exit["orders"][0]["intent"]["quantity"], "52");
    assert_eq!(exit["orders"][0]["outcome"], "filled");
    let flat = host.alert("default", "text/plain", "close AAPL at 188").await?.json();
    assert_eq!(flat["orders"], json!([]), "{flat}");
    Ok(())
}

#[tokio::test]
async fn periodic_reconciliation_refreshes_working_orders_and_reports_drift() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tradingview", "probe")
        .broker_settings(json!({ "has_order": true, "open_orders": ["stray-1"] }))
        .toml("[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 1\n")
        .start()
        .await?;
    let placed = host.alert("probe", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(placed["orders"][0]["outcome"], "accepted", "{placed}");
    // The broker no longer lists it as working: the sweep asks and learns
    // it filled. It also lists an order this host never sent.
    let filled = eventually(Duration::from_secs(10), || {
        let o = host.orders().ok()?;
        (o[0].state == OrderState::Filled).then_some(o)
    })
    .await?;
    assert_eq!(filled.len(), 1, "nothing was placed by reconciliation");
    let drift = eventually(Duration::from_secs(10), || {
        host.audit(&Filter {
            action: Some("order.drift".into()),
            ..Filter::default()
        })
        .ok()
        .filter(|d| !d.is_empty())
    })
    .await?;
    assert_eq!(drift[0].payload["client_order_id"], "stray-1");
    let sweeps = host.audit(&Filter {
        action: Some("reconcile.sweep".into()),
        ..Filter::default()
    })?;
    assert!(!sweeps.is_empty());
    assert_eq!(place_calls(&host), 1);
    Ok(())
}

/// A working order at the broker that this host never sent throws the
/// kill switch to reduce-only (the default `trading.on_drift`), audited
/// with the reason, once: an operator who looked and released it is not
/// overruled by the sweeps that find the same order again. With
/// `on_drift = "report"` it is only recorded.
#[tokio::test]
async fn drift_throws_the_kill_switch_to_reduce_only_once() -> anyhow::Result<()> {
    use algobanana::trading::risk::KillSwitch;
    let start = |policy: &str| {
        HostBuilder::new()
            .plugin("probe", HTTP_PROBE, "broker")
            .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
            .route("probe", "tradingview", "probe")
            .broker_settings(json!({ "open_orders": ["stray-1"] }))
            .toml(&format!(
                "[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 1\n{policy}"
            ))
            .start()
    };
    let drifts = |host: &TestHost| {
        host.audit(&Filter {
            action: Some("order.drift".into()),
            ..Filter::default()
        })
        .map(|d| d.len())
        .unwrap_or(0)
    };
    let host = start("").await?;
    eventually(Duration::from_secs(10), || {
        (host.app.kill_switch().ok()? == KillSwitch::ReduceOnly).then_some(())
    })
    .await?;
    let thrown = host.audit(&Filter {
        action: Some("config.changed".into()),
        ..Filter::default()
    })?;
    let thrown = thrown.last().unwrap();
    assert_eq!(thrown.actor_id, "reconcile");
    let reason = thrown.payload["reason"].as_str().unwrap();
    assert!(
        reason.contains("stray-1 at probe:probe/main") && reason.contains("algobanana kill-switch off"),
        "{reason}"
    );
    // The operator looks and releases it; the next sweeps find the same
    // order and leave the switch alone.
    algobanana::trading::kill::set(
        &host.app.state,
        &host.app.audit,
        KillSwitch::Off,
        algobanana::audit::ActorKind::User,
        "ops",
        &algobanana::audit::Context::default(),
        "a manual order of mine",
    )
    .await?;
    let seen = drifts(&host);
    eventually(Duration::from_secs(10), || (drifts(&host) >= seen + 2).then_some(())).await?;
    assert_eq!(host.app.kill_switch()?, KillSwitch::Off);

    let reporting = start("on_drift = \"report\"\n").await?;
    eventually(Duration::from_secs(10), || (drifts(&reporting) >= 1).then_some(())).await?;
    assert_eq!(reporting.app.kill_switch()?, KillSwitch::Off);
    Ok(())
}

/// An order working when the host stopped may fill while it is down: the
/// host sweeps at start instead of one interval later (here never: the
/// periodic sweep is off), and only when something was working.
#[tokio::test]
async fn orders_working_at_the_last_stop_are_reconciled_at_start() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tradingview", "probe")
        .broker_settings(json!({ "has_order": true }))
        .toml("[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 0\n")
        .start()
        .await?;
    let placed = host.alert("probe", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(placed["orders"][0]["outcome"], "accepted", "{placed}");
    let sweeps = |host: &TestHost| -> anyhow::Result<usize> {
        Ok(host
            .audit(&Filter {
                action: Some("reconcile.sweep".into()),
                ..Filter::default()
            })?
            .len())
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sweeps(&host)?, 0, "nothing was working at this start");
    let (dir, tokens) = host.stop().await;

    // The broker no longer lists it as open; looked up, it filled.
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let filled = eventually(Duration::from_secs(10), || {
        let o = host.orders().ok()?;
        (o[0].state == OrderState::Filled).then_some(o)
    })
    .await?;
    assert_eq!(filled.len(), 1, "nothing was placed by reconciliation");
    // One sweep event per account: the default route's paper account too.
    let swept = eventually(Duration::from_secs(10), || sweeps(&host).ok().filter(|n| *n == 2)).await?;
    assert_eq!(place_calls(&host), 1);

    // Nothing working any more: the next start does not sweep.
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sweeps(&host)?, swept);
    Ok(())
}

#[tokio::test]
async fn one_alert_fans_out_to_every_account_with_its_own_size_exactly_once() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml(
            "[[routes.accounts]]\nname = \"small\"\nbroker = \"paper\"\nbroker_settings = { account_id = \"small\" }\nsize = \"0.5\"\n\n[[routes.accounts]]\nname = \"double\"\nbroker = \"paper\"\nbroker_settings = { account_id = \"double\" }\nsize = 2\n",
        )
        .start()
        .await?;
    let alert = r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"100","signalId":"sig-7"}"#;
    let reply = host.alert("default", "application/json", alert).await?.json();
    let orders = reply["orders"].as_array().unwrap();
    let got: Vec<(&str, &str, &str, &str)> = orders
        .iter()
        .map(|o| {
            (
                o["account"].as_str().unwrap(),
                o["intent"]["quantity"].as_str().unwrap(),
                o["client_order_id"].as_str().unwrap(),
                o["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("main", "10", "sig-7", "filled"),
            ("small", "5", "sig-7-small", "filled"),
            ("double", "20", "sig-7-double", "filled")
        ]
    );
    let again = host.alert("default", "application/json", alert).await?.json();
    assert!(
        again["orders"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["outcome"] == "duplicate"),
        "{again}"
    );
    assert_eq!(sent_orders(&host), 3);
    // Derived ids differ per account too.
    let text = host.alert("default", "text/plain", "buy 2 MSFT at 400").await?.json();
    let ids: std::collections::BTreeSet<&str> = text["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["client_order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{text}");
    Ok(())
}

#[tokio::test]
async fn past_the_daily_loss_limit_only_exits_pass() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml("[risk]\nmax_daily_loss = \"100\"\n")
        .start()
        .await?;
    assert_eq!(order(&host, "buy 10 AAPL at 100").await?["outcome"], "filled");
    // Selling half at 70 realizes (70 − 100) × 5 = −150.
    assert_eq!(order(&host, "sell 5 AAPL at 70").await?["outcome"], "filled");
    let refused = order(&host, "buy 1 AAPL at 70.5").await?;
    assert_eq!(refused["outcome"], "rejected");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("today's realized loss is 150"),
        "{refused}"
    );
    let exit = order(&host, r#"{"ticker":"AAPL","action":"exit","price":"71"}"#).await?;
    assert_eq!(exit["outcome"], "filled", "{exit}");
    assert_eq!(exit["intent"]["quantity"], "5");
    Ok(())
}

/// The exports of an alert's plugin calls, in audit order.
fn exports_of(host: &TestHost, alert_id: &str) -> Vec<String> {
    host.audit_of(alert_id)
        .unwrap()
        .iter()
        .filter(|e| e.action == "plugin.call")
        .map(|e| e.payload["export"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `portfolio = "on-request"` (the tradingview rule's manifest): a plain
/// buy makes no portfolio calls before the rule; an alert that needs the
/// account (equity sizing, then the position it reverses) makes one
/// `positions` and one `account` call however often the rule asks, both
/// audited under the alert and counted in the rule's own row.
#[tokio::test]
async fn the_rule_asks_for_the_portfolio_only_on_the_alerts_that_need_it() -> anyhow::Result<()> {
    let host = HostBuilder::new().start().await?;
    let buy = host.alert("default", "text/plain", "buy 10 AAPL at 190").await?.json();
    assert_eq!(buy["orders"][0]["outcome"], "filled", "{buy}");
    let id = buy["alert_id"].as_str().unwrap();
    assert_eq!(
        exports_of(&host, id),
        ["evaluate", "positions", "place-order"],
        "only the rails' position check asks the broker"
    );

    let reverse = host
        .alert(
            "default",
            "application/json",
            r#"{"ticker":"AAPL","action":"reverse","percentOfEquity":"1","price":"200"}"#,
        )
        .await?
        .json();
    let orders = reverse["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2, "{reverse}");
    assert_eq!(orders[0]["intent"]["quantity"], "10", "closes the 10 long: {reverse}");
    // The rule sized the alert from the account's equity first, then
    // reversed the position's own size (no explicit quantity): two uses of
    // the portfolio, one fetch.
    assert_eq!(orders[1]["intent"]["quantity"], "10", "{reverse}");
    let id = reverse["alert_id"].as_str().unwrap();
    let exports = exports_of(&host, id);
    let mut fetched = exports[..2].to_vec();
    fetched.sort();
    assert_eq!(
        (fetched.as_slice(), exports[2].as_str()),
        (["account".to_owned(), "positions".to_owned()].as_slice(), "evaluate"),
        "fetched once, during the rule's call (whose row is written when it ends): {exports:?}"
    );
    let events = host.audit_of(id)?;
    let rule = events.iter().find(|e| e.payload["export"] == "evaluate").unwrap();
    assert_eq!(rule.payload["input"]["portfolio"], "on-request");
    let asked = rule.payload["capabilities"].as_array().unwrap();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["action"], "broker-view.get-portfolio");
    assert_eq!(asked[0]["fetched"], true);
    assert_eq!(asked[0]["ok"], true);
    for e in events.iter().filter(|e| e.action == "plugin.call") {
        assert_eq!(e.correlation_id.as_deref(), Some(id), "{e:?}");
    }
    Ok(())
}

/// A rule without the setting gets the portfolio as `evaluate`'s argument,
/// fetched before the call, and `get-portfolio` answers the same without
/// asking the broker again.
#[tokio::test]
async fn a_rule_without_the_setting_gets_the_portfolio_before_the_call() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("nostd", NO_STD_RULE, "rule")
        .route("nostd", "nostd", "paper")
        .start()
        .await?;
    let reply = host.alert("nostd", "text/plain", "portfolio").await?.json();
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("arg=100000 asked=100000 again=100000"), "{reply}");
    let id = reply["alert_id"].as_str().unwrap();
    let mut exports = exports_of(&host, id);
    exports[..2].sort();
    assert_eq!(
        exports,
        ["account", "positions", "evaluate"],
        "fetched once, before the call"
    );
    Ok(())
}

/// A broker slower than the rule's deadline: the wait is the broker's
/// time, bounded by the broker's own limits, not the rule's (a suspended
/// rule sees no epoch ticks, and its wall-clock guard is extended by the
/// most the broker's calls may take). A broker that never answers is cut
/// at its own deadline, and the rule gets `unavailable` with the reason.
#[tokio::test]
async fn a_rule_waits_for_a_slow_broker_within_the_brokers_limits_not_its_own() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .plugin("tv", "builtin:tradingview", "rule")
        .limit("deadline_ms", 10)
        .plugin("probe", HTTP_PROBE, "broker")
        // Past the rule's wall-clock guard of its own (4 × 10 ms + 1 s).
        .limit("deadline_ms", 1500)
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tv", "probe")
        .broker_settings(json!({ "spin_positions": true }))
        .toml("[secrets.k]\nvalue = \"v\"\n")
        .start()
        .await?;
    let reply = host.alert("probe", "text/plain", "exit AAPL at 100").await?;
    assert_eq!(reply.status, 422, "{}", String::from_utf8_lossy(&reply.body));
    let body = reply.json();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("needs the account's positions")
            && message.contains("could not report the account's positions and balances"),
        "{body}"
    );
    let id = body["alert_id"].as_str().unwrap();
    let events = host.audit_of(id)?;
    let positions = events.iter().find(|e| e.payload["export"] == "positions").unwrap();
    assert_eq!(
        positions.payload["outcome"], "trap:deadline",
        "the broker's own deadline"
    );
    let rule = events.iter().find(|e| e.payload["export"] == "evaluate").unwrap();
    assert_eq!(
        rule.payload["outcome"], "guest_error",
        "not a deadline trap: {}",
        rule.payload
    );
    let waited = rule.payload["capabilities"][0]["wait_us"].as_u64().unwrap();
    assert!(
        waited >= 1_400_000,
        "waited {waited} µs for the broker, past the rule's own 10 ms and its guard"
    );
    assert_eq!(place_calls(&host), 0);
    Ok(())
}

/// More rules waiting for the portfolio than there are call slots: the
/// broker calls they wait for have slots of their own, so every alert is
/// answered (with a shared slot pool they would wait on each other until
/// the deadline).
#[tokio::test]
async fn rules_waiting_for_the_portfolio_never_starve_the_broker_calls() -> anyhow::Result<()> {
    let host = std::sync::Arc::new(HostBuilder::new().start().await?);
    let n = algobanana::plugins::engine::MAX_CONCURRENT_CALLS * 2;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move { host.alert("default", "text/plain", &format!("exit SYM{i} at 10")).await })
        })
        .collect();
    for t in tasks {
        let r = t.await??;
        let body = r.json();
        assert_eq!(r.status, 200, "{body}");
        assert_eq!(body["orders"], json!([]), "flat: nothing to close: {body}");
    }
    Ok(())
}
