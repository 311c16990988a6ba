//! One test per plugin in `plugins/`, named after it: `foreach_plugin!`
//! makes a plugin without a test a compile error. Hostile fixtures prove
//! containment, that the host keeps serving, and the audited cause.

use std::time::Duration;

use algobanana::audit::query::{AuditRecord, Filter};
use algobanana_tests::plugins::*;
use algobanana_tests::{HostBuilder, TestHost, eventually};
use serde_json::json;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
algobanana_tests::foreach_plugin!(assert_test_exists);
// Broker-world capability fixtures are tested next to the capabilities.
use crate::alpaca::alpaca;
use crate::binance::binance;
use crate::capabilities::{http_probe, secret_thief};
use crate::languages::{py_snoop, tradingview_js, tradingview_py};
use crate::notify::{notify_discord, notify_slack, notify_telegram, notify_webhook};

/// A host with the default route plus a `hostile` route using `plugin` as
/// its rule.
fn with_rule(name: &str, path: &str) -> HostBuilder {
    HostBuilder::new()
        .plugin(name, path, "rule")
        .route("hostile", name, "paper")
}

fn calls_of(host: &TestHost, plugin: &str) -> Vec<AuditRecord> {
    host.audit(&Filter {
        action: Some("plugin.call".into()),
        ..Filter::default()
    })
    .unwrap()
    .into_iter()
    .filter(|e| e.payload["plugin"] == plugin)
    .collect()
}

async fn assert_still_serving(host: &TestHost) {
    let ok = host.alert("default", "text/plain", "buy 1 AAPL at 100").await.unwrap();
    assert_eq!(
        ok.status,
        200,
        "the host keeps serving: {}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(ok.json()["orders"][0]["outcome"], "filled");
}

#[tokio::test]
async fn tradingview() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let cases = [
        (
            r#"{"symbol":"NASDAQ:msft","action":"sell","contracts":2,"orderType":"stop_limit","stopPrice":"399.5","limitPrice":399,"timeInForce":"gtc"}"#,
            json!({"symbol":"MSFT","side":"sell","quantity":"2","order_type":{"type":"stop_limit","stop":"399.5","limit":"399"},"time_in_force":"gtc","reduce_only":false}),
        ),
        (
            r#"{"ticker":"ETHUSD","action":"sell","quantity":"0.25","sentiment":"flat","price":3000.10}"#,
            json!({"symbol":"ETHUSD","side":"sell","quantity":"0.25","order_type":{"type":"market"},"reduce_only":true,"reference_price":"3000.1"}),
        ),
        (
            r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"190","takeProfit":{"limitPrice":"200"},"stopLoss":{"stopPrice":"185"}}"#,
            json!({"take_profit":"200","stop_loss":"185"}),
        ),
        (
            "buy 5 SPY @ 500 stop gtc",
            json!({"symbol":"SPY","order_type":{"type":"stop","stop":"500"},"time_in_force":"gtc"}),
        ),
    ];
    for (alert, expected) in cases {
        let body = host.alert("default", "application/json", alert).await?.json();
        let intent = &body["orders"][0]["intent"];
        for (k, v) in expected.as_object().unwrap() {
            assert_eq!(&intent[k], v, "{alert}: field {k} in {intent}");
        }
    }
    // Position-aware actions use the account the host passes in.
    let flat = host
        .alert(
            "default",
            "application/json",
            r#"{"ticker":"AAPL","action":"exit","price":"100"}"#,
        )
        .await?
        .json();
    let close = &flat["orders"][0];
    assert_eq!(close["intent"]["side"], "sell", "{flat}");
    assert_eq!(close["intent"]["reduce_only"], true);
    assert_eq!(close["outcome"], "filled", "the earlier buys are closed: {flat}");
    let again = host
        .alert(
            "default",
            "application/json",
            r#"{"ticker":"AAPL","action":"exit","price":"100.5"}"#,
        )
        .await?
        .json();
    assert_eq!(again["orders"], json!([]), "nothing left to close: {again}");
    let bad = host
        .alert("default", "application/json", r#"{"ticker":"AAPL","action":"cancel"}"#)
        .await?
        .json();
    assert_eq!(bad["error"]["kind"], "invalid_alert");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expected buy, sell, exit"),
        "{bad}"
    );
    Ok(())
}

#[tokio::test]
async fn paper() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .broker_settings(json!({"initial_cash": "10000", "allow_short": false}))
        .start()
        .await?;
    let resting = host.alert("default", "text/plain", "buy 10 AAPL at 95 limit").await?;
    let body = resting.json();
    // In the text form the price is both the limit and the reference, so
    // the order is marketable and fills at it.
    assert_eq!(body["orders"][0]["outcome"], "filled", "{body}");
    let json_limit =
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","orderType":"limit","limitPrice":"90","price":"95"}"#;
    let resting = host.alert("default", "application/json", json_limit).await?.json();
    assert_eq!(
        resting["orders"][0]["outcome"], "accepted",
        "not marketable at 95: it rests"
    );
    // A trailing stop rests (the paper book has no price stream to trail);
    // exit legs are not simulated, and the order says so.
    let trailing = r#"{"ticker":"AAPL","action":"sell","quantity":"1","price":"95","trailPercent":"2"}"#;
    let trailing = host.alert("default", "application/json", trailing).await?.json();
    assert_eq!(trailing["orders"][0]["outcome"], "accepted", "{trailing}");
    let legs = r#"{"ticker":"MSFT","action":"buy","quantity":"1","price":"95","takeProfit":{"limitPrice":"99"},"stopLoss":{"stopPrice":"93"}}"#;
    let legs = host.alert("default", "application/json", legs).await?.json();
    assert_eq!(legs["orders"][0]["outcome"], "filled", "{legs}");
    assert!(
        legs.to_string()
            .contains("does not simulate take-profit or stop-loss legs"),
        "{legs}"
    );
    let ioc = r#"{"ticker":"AAPL","action":"buy","quantity":"1","orderType":"limit","limitPrice":"90","price":"95","timeInForce":"ioc"}"#;
    assert_eq!(
        host.alert("default", "application/json", ioc).await?.json()["orders"][0]["outcome"],
        "canceled"
    );
    let short = host.alert("default", "text/plain", "sell 11 AAPL at 96").await?.json();
    assert_eq!(short["orders"][0]["outcome"], "rejected");
    assert!(
        short["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("shorting is off"),
        "{short}"
    );
    let no_price = host.alert("default", "text/plain", "buy 1 AAPL").await?.json();
    assert!(
        no_price["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("reference price"),
        "{no_price}"
    );
    let reduce = r#"{"ticker":"TSLA","action":"sell","quantity":"1","sentiment":"flat","price":"200"}"#;
    let reduce = host.alert("default", "application/json", reduce).await?.json();
    assert!(
        reduce["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("a reduce-only order must reduce the open position (0 TSLA)"),
        "the host's rail refuses it before the broker: {reduce}"
    );
    let dup = r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"95","signalId":"same"}"#;
    assert_eq!(
        host.alert("default", "application/json", dup).await?.json()["orders"][0]["outcome"],
        "filled"
    );
    let again = host.alert("default", "application/json", dup).await?.json();
    assert!(
        again["orders"][0]["reason"].as_str().unwrap().contains("duplicate"),
        "a reused signal id never places a second order: {again}"
    );
    Ok(())
}

#[tokio::test]
async fn loop_forever() -> anyhow::Result<()> {
    let host = with_rule("loop-forever", LOOP_FOREVER)
        .limit("deadline_ms", 50)
        .start()
        .await?;
    // The first call starts with the epoch ticker asleep (no call for 100
    // ticks); it must wake and count the deadline, not leave it to the
    // wall-clock guard (4 × 50 ms + 1 s).
    eventually(Duration::from_secs(10), || {
        host.app.registry.ticker().is_parked().then_some(())
    })
    .await?;
    let started = std::time::Instant::now();
    let reply = host.alert("hostile", "text/plain", "buy 1 AAPL").await?;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 500);
    let body = reply.json();
    assert_eq!(body["status"], "plugin_failed");
    assert_eq!(body["error"]["kind"], "plugin_trap");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("deadline of 50 ms"),
        "{body}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "stopped near its deadline, took {elapsed:?}"
    );
    let calls = calls_of(&host, "loop-forever");
    assert_eq!(calls[0].outcome, "trap");
    assert_eq!(calls[0].payload["outcome"], "trap:deadline");
    let ran = calls[0].payload["duration_us"].as_u64().unwrap();
    assert!(
        (50_000..500_000).contains(&ran),
        "stopped by its epoch deadline, not the wall-clock guard: {ran} µs"
    );
    assert_still_serving(&host).await;
    // A fresh instance each call: the next call traps the same way, cleanly.
    assert_eq!(host.alert("hostile", "text/plain", "x").await?.status, 500);
    assert_eq!(calls_of(&host, "loop-forever").len(), 2);
    Ok(())
}

#[tokio::test]
async fn memory_hog() -> anyhow::Result<()> {
    let host = with_rule("memory-hog", MEMORY_HOG)
        .limit("memory_mib", 16)
        .start()
        .await?;
    let reply = host.alert("hostile", "text/plain", "x").await?;
    assert_eq!(reply.status, 500);
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("memory cap of 16777216 bytes"), "{message}");
    assert!(message.contains("memory_mib"), "says which limit to raise: {message}");
    let calls = calls_of(&host, "memory-hog");
    assert_eq!(calls[0].payload["outcome"], "limit:memory");
    assert!(calls[0].payload["memory_peak_bytes"].as_u64().unwrap() <= 16 << 20);
    assert_still_serving(&host).await;
    Ok(())
}

#[tokio::test]
async fn panics() -> anyhow::Result<()> {
    let host = with_rule("panics", PANICS).start().await?;
    let reply = host.alert("hostile", "text/plain", "x").await?;
    assert_eq!(reply.status, 500);
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("crashed"));
    let calls = calls_of(&host, "panics");
    assert_eq!(calls[0].outcome, "trap");
    assert_eq!(calls[0].payload["outcome"], "trap:unreachable");
    assert_still_serving(&host).await;
    Ok(())
}

/// The SDK's `no_std` runtime (`no_std_runtime!`, which every first-party
/// plugin uses): a heap that grows past the initial memory through
/// `realloc`, over-aligned blocks, and a panic that traps as with `std`.
#[tokio::test]
async fn no_std_rule() -> anyhow::Result<()> {
    let host = with_rule("no-std-rule", NO_STD_RULE).start().await?;
    let grown = host.alert("hostile", "text/plain", "grow 8").await?;
    assert_eq!(grown.status, 200, "{}", String::from_utf8_lossy(&grown.body));
    assert_eq!(grown.json()["orders"], json!([]));
    let calls = calls_of(&host, "no-std-rule");
    assert_eq!(calls[0].payload["outcome"], "ok");
    let peak = calls[0].payload["memory_peak_bytes"].as_u64().unwrap();
    assert!(peak >= 8 << 20, "8 MiB went through the heap: peak {peak} bytes");

    let panicked = host.alert("hostile", "text/plain", "panic").await?;
    assert_eq!(panicked.status, 500);
    assert!(
        panicked.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("crashed")
    );
    let calls = calls_of(&host, "no-std-rule");
    assert_eq!(calls[1].outcome, "trap");
    assert_eq!(calls[1].payload["outcome"], "trap:unreachable");

    // A fresh instance after the trap: the heap starts over and works.
    let again = host.alert("hostile", "text/plain", "grow 1").await?;
    assert_eq!(again.status, 200, "{}", String::from_utf8_lossy(&again.body));
    assert_still_serving(&host).await;
    Ok(())
}

/// Snoop fixtures return `Ok([])` when they got nothing and a rule error
/// starting with `LEAK` otherwise.
async fn assert_got_nothing(host: &TestHost, plugin: &str) -> anyhow::Result<AuditRecord> {
    let reply = host.alert("hostile", "text/plain", "x").await?;
    let body = reply.json();
    assert_eq!(reply.status, 200, "{plugin} must get nothing: {body}");
    assert_eq!(body["status"], "processed");
    assert_eq!(body["orders"], json!([]));
    Ok(calls_of(host, plugin).remove(0))
}

/// One alert's data never reaches the next call: each call of the fixture
/// searches its whole linear memory (data, heap and a grown 2 MiB block, at
/// the addresses the previous call wrote) for the records earlier calls
/// left, then writes its own into 131 places, 128 of them on separate pages,
/// and proves its scanner finds them. The pool hands a finished call's
/// memory slot to the next call of the same plugin and resets only the
/// pages it wrote (`vendor/README.md`).
///
/// Checked against a broken reset (session 10, not kept): with the vendored
/// `reset_with_pagemap` leaving the pages between 0x102000 and 0x1f0000
/// dirty, the second call failed with "LEAK: linear memory at 0x102fe0
/// holds what the call for alert … wrote"; leaving the allocator's pages
/// dirty too made it trap instead (a corrupted heap), which fails the test
/// as well.
#[tokio::test]
async fn memory_snoop() -> anyhow::Result<()> {
    let host = with_rule("memory-snoop", MEMORY_SNOOP).start().await?;
    let n = 20;
    for _ in 0..n {
        assert_got_nothing(&host, "memory-snoop").await?;
    }
    let calls = calls_of(&host, "memory-snoop");
    assert_eq!(calls.len(), n);
    for call in &calls {
        let log = call.payload["log"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            log.contains(": clean; wrote 131 markers (128 scattered pages), found 131"),
            "every call wrote and found its own records and no earlier one: {log}"
        );
        // The scan covered the grown block, not just the initial image.
        let scanned: u64 = log
            .strip_prefix("scanned ")
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(scanned > 2 << 20, "{log}");
    }
    Ok(())
}

#[tokio::test]
async fn fs_snoop() -> anyhow::Result<()> {
    let host = with_rule("fs-snoop", FS_SNOOP).start().await?;
    let call = assert_got_nothing(&host, "fs-snoop").await?;
    let log = call.payload["log"].to_string();
    assert!(
        log.contains("read /etc/passwd"),
        "each attempt was made and failed: {log}"
    );
    assert!(!std::path::Path::new("/tmp/algobanana-fs-snoop").exists());
    Ok(())
}

#[tokio::test]
async fn env_snoop() -> anyhow::Result<()> {
    let host = with_rule("env-snoop", ENV_SNOOP).start().await?;
    let call = assert_got_nothing(&host, "env-snoop").await?;
    assert_eq!(call.payload["log"][0]["message"], "vars: 0, args: 0, named: 0");
    Ok(())
}

#[tokio::test]
async fn net_snoop() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let host = with_rule("net-snoop", NET_SNOOP)
        .rule_config(json!({ "port": port }))
        .start()
        .await?;
    let call = assert_got_nothing(&host, "net-snoop").await?;
    assert!(
        call.payload["log"]
            .to_string()
            .contains(&format!("tcp 127.0.0.1:{port}:")),
        "it tried the listener's port: {}",
        call.payload["log"]
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the plugin must not reach the listener");
    Ok(())
}

#[tokio::test]
async fn huge_output() -> anyhow::Result<()> {
    let host = with_rule("huge-output", HUGE_OUTPUT)
        .rule_config(json!({"mode": "many"}))
        .route("big", "huge-output", "paper")
        .rule_config(json!({"mode": "big"}))
        .start()
        .await?;
    let many = host.alert("hostile", "text/plain", "x").await?.json();
    assert!(
        many["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10000 order intents, above the cap of 32"),
        "{many}"
    );
    let big = host.alert("big", "text/plain", "x").await?.json();
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("above its output cap of 65536"),
        "{big}"
    );
    let outcomes: Vec<String> = calls_of(&host, "huge-output")
        .iter()
        .map(|c| c.payload["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["limit:max_intents", "limit:max_output_bytes"]);
    assert!(
        host.audit(&Filter {
            action: Some("order.intent".into()),
            ..Filter::default()
        })?
        .is_empty(),
        "no order was attempted"
    );
    Ok(())
}

#[tokio::test]
async fn log_flood() -> anyhow::Result<()> {
    let host = with_rule("log-flood", LOG_FLOOD).start().await?;
    let call = assert_got_nothing(&host, "log-flood").await?;
    let lines = call.payload["log"].as_array().unwrap();
    let kept: usize = lines.iter().map(|l| l["message"].as_str().unwrap().len()).sum();
    assert!(
        kept <= 4096 + lines.len() * 16,
        "kept {kept} bytes in {} lines",
        lines.len()
    );
    assert!(lines[0]["message"].as_str().unwrap().ends_with("[truncated]"));
    assert!(call.payload["log_dropped"].as_u64().unwrap() >= 9_990);
    Ok(())
}

#[tokio::test]
async fn kv_counter() -> anyhow::Result<()> {
    let host = with_rule("kv-counter", KV_COUNTER)
        .route("crash", "kv-counter", "paper")
        .rule_config(json!({"panic_after_write": true}))
        .route("fill", "kv-counter", "paper")
        .rule_config(json!({"fill": 100}))
        .plugin("tight", KV_COUNTER, "rule")
        .grant("kv_max_keys = 5")
        .route("tight", "tight", "paper")
        .rule_config(json!({"fill": 100}))
        .start()
        .await?;
    let count = |body: serde_json::Value| body["orders"][0]["intent"]["quantity"].as_str().map(str::to_owned);
    assert_eq!(
        count(host.alert("hostile", "text/plain", "x").await?.json()).as_deref(),
        Some("1")
    );
    assert_eq!(
        count(host.alert("hostile", "text/plain", "x").await?.json()).as_deref(),
        Some("2")
    );
    let crashed = host.alert("crash", "text/plain", "x").await?;
    assert_eq!(crashed.status, 500);
    assert_eq!(
        count(host.alert("hostile", "text/plain", "x").await?.json()).as_deref(),
        Some("3"),
        "the write made before the trap was discarded"
    );
    let tight = host.alert("tight", "text/plain", "x").await?.json();
    let message = tight["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the cap is 5 (kv.max_keys"),
        "the grant's quota applies: {message}"
    );
    let fill = host.alert("fill", "text/plain", "x").await?.json();
    let message = fill["error"]["message"].as_str().unwrap();
    assert!(message.contains("kv.max_total_bytes"), "{message}");
    let calls = calls_of(&host, "kv-counter");
    let last = calls.last().unwrap();
    assert!(
        last.payload["kv"]["refused"][0]
            .as_str()
            .unwrap()
            .contains("kv.max_total_bytes")
    );
    assert_eq!(
        last.payload["kv"]["committed"], false,
        "an error result discards the writes that passed"
    );
    Ok(())
}

#[tokio::test]
async fn undeclared_import() -> anyhow::Result<()> {
    let err = with_rule("undeclared", UNDECLARED_IMPORT)
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin `undeclared` was refused at load"), "{err}");
    assert!(err.contains("`evil:steal/exfil@1.0.0`"), "names the import: {err}");
    Ok(())
}
