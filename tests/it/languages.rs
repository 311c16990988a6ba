//! Plugins in other languages (issue 8): the JavaScript and Python ports of
//! the tradingview rule, built from source with their pinned toolchains by
//! `tests/build.rs`, run through the same host path as the Rust rule and
//! must give the same answers to the same alerts. The Python fixture proves
//! that a component importing all of WASI (sockets included) gets nothing;
//! the JavaScript components import no WASI at all.

use std::time::Duration;

use algobanana::audit::query::{AuditRecord, Filter};
use algobanana_tests::plugins::{HTTP_PROBE, PY_SNOOP, TRADINGVIEW_JS, TRADINGVIEW_PY};
use algobanana_tests::{HostBuilder, TestHost};
use serde_json::{Value, json};

/// Alerts and the intent every implementation must produce (`{sig}` is
/// replaced per route so signal ids stay distinct), or the error kind.
fn cases() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "application/json",
            r#"{"ticker":"NASDAQ:msft","action":"sell","contracts":2,"orderType":"stop_limit","stopPrice":"399.5","limitPrice":399,"timeInForce":"gtc"}"#,
            json!({"symbol":"MSFT","side":"sell","quantity":"2","order_type":{"type":"stop_limit","stop":"399.5","limit":"399"},"time_in_force":"gtc","requested_client_order_id":null,"reduce_only":false,"reference_price":null,"take_profit":null,"stop_loss":null}),
        ),
        (
            "application/json",
            r#"{"ticker":"ETHUSD","action":"sell","quantity":"0.25","sentiment":"flat","price":3000.10}"#,
            json!({"symbol":"ETHUSD","side":"sell","quantity":"0.25","order_type":{"type":"market"},"time_in_force":"day","requested_client_order_id":null,"reduce_only":true,"reference_price":"3000.1","take_profit":null,"stop_loss":null}),
        ),
        (
            "application/json",
            r#"{"ticker":"AAPL","action":"buy","quantity":"10","price":"190.35","signalId":"sig-{sig}"}"#,
            json!({"symbol":"AAPL","side":"buy","quantity":"10","order_type":{"type":"market"},"time_in_force":"day","requested_client_order_id":"sig-{sig}","reduce_only":false,"reference_price":"190.35","take_profit":null,"stop_loss":null}),
        ),
        (
            // Exact money: 18 significant digits, never through a float.
            "application/json",
            r#"{"symbol":"aapl","action":"long","qty":123456789012.345678,"orderType":"limit","limitPrice":"0.000001","price":"0.0000010"}"#,
            json!({"symbol":"AAPL","side":"buy","quantity":"123456789012.345678","order_type":{"type":"limit","limit":"0.000001"},"time_in_force":"day","requested_client_order_id":null,"reduce_only":false,"reference_price":"0.000001","take_profit":null,"stop_loss":null}),
        ),
        (
            "text/plain",
            "buy 5 SPY @ 500 stop gtc",
            json!({"symbol":"SPY","side":"buy","quantity":"5","order_type":{"type":"stop","stop":"500"},"time_in_force":"gtc","requested_client_order_id":null,"reduce_only":false,"reference_price":"500","take_profit":null,"stop_loss":null}),
        ),
        (
            "text/plain",
            "sell 0.5 BTCUSD at 64250 limit",
            json!({"symbol":"BTCUSD","side":"sell","quantity":"0.5","order_type":{"type":"limit","limit":"64250"},"time_in_force":"day","requested_client_order_id":null,"reduce_only":false,"reference_price":"64250","take_profit":null,"stop_loss":null}),
        ),
        (
            "application/json",
            r#"{"ticker":"AAPL","action":"buy"}"#,
            json!("invalid_alert"),
        ),
        (
            "application/json",
            r#"{"ticker":"AAPL","action":"cancel","quantity":1}"#,
            json!("invalid_alert"),
        ),
        (
            "application/json",
            r#"{"ticker":"AA PL","action":"buy","quantity":1}"#,
            json!("invalid_alert"),
        ),
        (
            "application/json",
            r#"{"ticker":"AAPL","action":"buy","quantity":"1e3"}"#,
            json!("invalid_alert"),
        ),
        ("text/plain", "buy 0 AAPL", json!("invalid_alert")),
        ("text/plain", "buy 1 AAPL limit", json!("invalid_alert")),
        (
            "application/json",
            r#"{"ticker":"AAPL","action":"buy","quantity":"#,
            json!("invalid_alert"),
        ),
        ("text/plain", "", json!("invalid_alert")),
    ]
}

/// Alerts that close a position, in order: the rules ask the host for the
/// account (`broker-view`) on these only. `null`: flat, no order.
fn exits() -> Vec<(&'static str, &'static str, Value)> {
    let intent = |side: &str, quantity: &str, order_type: Value, coid: Value, reduce_only: bool, price: &str| json!({"symbol":"TSLA","side":side,"quantity":quantity,"order_type":order_type,"time_in_force":"day","requested_client_order_id":coid,"reduce_only":reduce_only,"reference_price":price,"take_profit":null,"stop_loss":null});
    let market = json!({"type":"market"});
    vec![
        (
            "text/plain",
            "buy 3 TSLA at 200",
            intent("buy", "3", market.clone(), Value::Null, false, "200"),
        ),
        (
            "text/plain",
            "exit TSLA at 210",
            intent("sell", "3", market.clone(), Value::Null, true, "210"),
        ),
        (
            "application/json",
            r#"{"ticker":"TSLA","action":"close","price":"211"}"#,
            Value::Null,
        ),
        (
            "text/plain",
            "buy 2.5 TSLA at 205",
            intent("buy", "2.5", market.clone(), Value::Null, false, "205"),
        ),
        (
            "text/plain",
            "sell 0.25 TSLA at 205",
            intent("sell", "0.25", market.clone(), Value::Null, false, "205"),
        ),
        (
            "application/json",
            r#"{"ticker":"NASDAQ:TSLA","action":"exit","price":"206","signalId":"x-{sig}"}"#,
            intent("sell", "2.25", market, json!("x-{sig}-x"), true, "206"),
        ),
    ]
}

/// A host with the Rust rule on `default` and `plugin` (built from `path`)
/// on `route`, both trading with the built-in paper broker, each with its
/// own paper account (so both see the same positions). One guest per host:
/// each JS or Python component takes seconds to compile.
async fn beside_rust(route: &str, plugin: &str, path: &str) -> anyhow::Result<TestHost> {
    HostBuilder::new()
        .plugin(plugin, path, "rule")
        .route(route, plugin, "paper")
        .broker_settings(json!({ "account_id": route }))
        // A broker that cannot report positions, behind both rules.
        .plugin("probe", HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .toml("[secrets.k]\nvalue = \"v\"\n")
        .route("default-down", "tradingview", "probe")
        .broker_settings(json!({ "fail_positions": true }))
        .route(&format!("{route}-down"), plugin, "probe")
        .broker_settings(json!({ "fail_positions": true }))
        .start()
        .await
}

/// Sends `alert` to the Rust rule's route and to `route`; both must give
/// `expected` (an intent, an error kind, or null for no order) and the
/// same answer.
async fn agree(
    host: &TestHost,
    route: &str,
    plugin: &str,
    content_type: &str,
    alert: &str,
    expected: &Value,
) -> anyhow::Result<()> {
    let mut answers = Vec::new();
    for r in ["default", route] {
        let body = alert.replace("{sig}", r);
        let reply = host.alert(r, content_type, &body).await?;
        let json = reply.json();
        let got = match expected.as_str() {
            Some(_) => json["error"]["kind"].clone(),
            None => json["orders"][0]["intent"].clone(),
        };
        let want: Value = serde_json::from_str(&expected.to_string().replace("{sig}", r))?;
        assert_eq!(got, want, "route {r}, alert {alert}: {json}");
        assert_eq!(
            json["orders"].as_array().map_or(0, Vec::len),
            usize::from(expected.is_object())
        );
        answers.push((
            reply.status,
            json["status"].clone(),
            json["orders"][0]["outcome"].clone(),
        ));
    }
    assert_eq!(answers[0], answers[1], "{plugin} and the Rust rule agree on {alert}");
    Ok(())
}

async fn same_answers_as_rust(route: &str, plugin: &str, path: &str) -> anyhow::Result<()> {
    let host = beside_rust(route, plugin, path).await?;
    for (content_type, alert, expected) in cases() {
        agree(&host, route, plugin, content_type, alert, &expected).await?;
    }
    for (content_type, alert, expected) in exits() {
        agree(&host, route, plugin, content_type, alert, &expected).await?;
    }
    // The host's `unavailable` reaches the rule as an error value it can
    // explain, in every language.
    for r in ["default-down".to_owned(), format!("{route}-down")] {
        let reply = host.alert(&r, "text/plain", "exit TSLA at 210").await?.json();
        assert_eq!(reply["error"]["kind"], "unsupported", "{r}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("this action needs the account's positions")
                && message.contains("could not report the account's positions and balances"),
            "{r}: {reply}"
        );
    }
    // What only the Rust rule does is refused by the port, never dropped.
    for alert in [
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"190","takeProfit":{"limitPrice":"200"}}"#,
        r#"{"ticker":"AAPL","action":"sell","quantity":"1","price":"190","trailPercent":"2"}"#,
        r#"{"ticker":"AAPL","action":"buy","price":"190","notional":"1000"}"#,
    ] {
        let rust = host.alert("default", "application/json", alert).await?.json();
        assert!(rust["error"].is_null(), "the Rust rule takes {alert}: {rust}");
        let port = host.alert(route, "application/json", alert).await?.json();
        assert_eq!(port["error"]["kind"], "unsupported", "{alert}: {port}");
        assert_eq!(port["orders"], json!([]));
    }
    // Every call went through the audited host path, with the manifest
    // the build appended.
    let calls: Vec<AuditRecord> = host
        .audit(&Filter {
            action: Some("plugin.call".into()),
            ..Filter::default()
        })?
        .into_iter()
        .filter(|e| e.payload["plugin"] == plugin)
        .collect();
    assert_eq!(calls.len(), cases().len() + exits().len() + 3 + 1);
    // Only the exits asked for the account: one fetch each, none for the
    // other alerts.
    let asked: Vec<&AuditRecord> = calls
        .iter()
        .filter(|c| c.payload["capabilities"].as_array().is_some_and(|a| !a.is_empty()))
        .collect();
    assert_eq!(
        asked.len(),
        4,
        "three exits, and one the broker could not serve: {asked:?}"
    );
    for (i, c) in asked.iter().enumerate() {
        assert_eq!(c.payload["input"]["portfolio"], "on-request");
        assert_eq!(c.payload["capabilities"][0]["action"], "broker-view.get-portfolio");
        assert_eq!(c.payload["capabilities"][0]["ok"], i < 3);
    }
    assert!(calls[0].actor_id.starts_with(plugin), "{}", calls[0].actor_id);
    let loaded = host
        .app
        .registry
        .get(&algobanana::domain::ids::PluginName::new(plugin)?)
        .expect("loaded");
    assert_eq!(loaded.manifest.as_ref().map(|m| m.name.as_str()), Some(plugin));
    Ok(())
}

#[tokio::test]
pub async fn tradingview_js() -> anyhow::Result<()> {
    same_answers_as_rust("js", "tradingview-js", TRADINGVIEW_JS).await?;
    // No WASI at all: built with every componentize-js feature off, the
    // component imports only the rule world's interfaces.
    let imports = component_imports(TRADINGVIEW_JS)?;
    assert!(!imports.is_empty());
    for i in &imports {
        // Names without a package are the world's `use`d types.
        assert!(
            i.starts_with("algobanana:plugin/") || !i.contains(':'),
            "unexpected import {i} in {imports:?}"
        );
    }
    Ok(())
}

#[tokio::test]
pub async fn tradingview_py() -> anyhow::Result<()> {
    same_answers_as_rust("py", "tradingview-py", TRADINGVIEW_PY).await?;
    let imports = component_imports(TRADINGVIEW_PY)?;
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:sockets/")),
        "componentize-py imports all of WASI, sockets included ({imports:?}); the deny-all context is what stops it"
    );
    Ok(())
}

#[tokio::test]
pub async fn py_snoop() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let host = HostBuilder::new()
        .plugin("py-snoop", PY_SNOOP, "rule")
        .route("hostile", "py-snoop", "paper")
        // A string: the test config goes through TOML, where a bare JSON
        // number with arbitrary precision would become a table.
        .rule_config(json!({ "port": port.to_string() }))
        .start()
        .await?;
    let reply = host.alert("hostile", "text/plain", "x").await?;
    let body = reply.json();
    let call = host
        .audit(&Filter {
            action: Some("plugin.call".into()),
            ..Filter::default()
        })?
        .into_iter()
        .find(|e| e.payload["plugin"] == "py-snoop")
        .expect("the call is audited");
    assert_eq!(reply.status, 200, "py-snoop must get nothing: {body}; {}", call.payload);
    assert_eq!(body["orders"], json!([]));
    let log: Vec<String> = call.payload["log"]
        .as_array()
        .expect("log lines")
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    for what in [
        "read /etc/passwd",
        "list /",
        "write /tmp/algobanana-py-snoop",
        "environ",
        "tcp",
        "udp",
        "getaddrinfo",
    ] {
        assert!(
            log.iter().any(|l| l.starts_with(&format!("{what}: "))),
            "attempted {what}: {log:?}"
        );
    }
    assert!(!std::path::Path::new("/tmp/algobanana-py-snoop").exists());
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "the plugin must not reach the listener");
    Ok(())
}

/// The top-level import names of the component at `path` (imports of
/// nested modules and components are satisfied inside it).
fn component_imports(path: &str) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)?;
    let mut out = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload? {
            wasmparser::Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    out.push(import?.name.name.to_owned());
                }
            }
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(out)
}
