//! Capabilities: grants checked at link time and on every call, outbound
//! HTTP through the host with an allowlist and a resolved-address check,
//! secrets as handles, and the audit rows each use and denial leaves.
//! Local upstreams on 127.0.0.1 record what actually went over the wire.

use std::collections::HashMap;
use std::sync::Arc;

use algobanana::app::AppOptions;
use algobanana::audit::query::Filter;
use algobanana_tests::plugins::*;
use algobanana_tests::{HostBuilder, MapResolver, TestHost, Upstream};
use serde_json::{Value, json};

const API_KEY: &str = "key-Zq81vX0PpL";

fn resolver(names: &[&str]) -> AppOptions {
    let map = names
        .iter()
        .map(|n| ((*n).to_owned(), vec![std::net::IpAddr::from([127, 0, 0, 1])]))
        .collect::<HashMap<_, _>>();
    AppOptions {
        resolver: Some(Arc::new(MapResolver(map))),
        ..AppOptions::default()
    }
}

/// Sends one alert to `route` and returns the probe's step results.
async fn probe(host: &TestHost, route: &str) -> anyhow::Result<Vec<Value>> {
    let reply = host.alert(route, "text/plain", "buy 1 AAPL at 100").await?;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let json = reply.json();
    let message = json["orders"][0]["ack"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("probe ack: {json}"));
    Ok(serde_json::from_str(message)?)
}

fn audit(host: &TestHost, action: &str) -> Vec<algobanana::audit::query::AuditRecord> {
    host.audit(&Filter {
        action: Some(action.into()),
        ..Filter::default()
    })
    .unwrap()
}

#[tokio::test]
pub async fn http_probe() -> anyhow::Result<()> {
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let origin = upstream.origin();
    let secrets = format!(
        "[secrets.api_key]\nvalue = {API_KEY:?}\n[secrets.hmac_key]\nvalue = \"Jefe\"\n[secrets.unlisted]\nvalue = \"x\"\n[secrets.pinned]\nvalue = \"pinned-value\"\nhosts = [\"elsewhere.test\"]\n"
    );
    let steps = json!([
        { "open": "api_key" },
        { "send": { "method": "get", "url": format!("{origin}/v2/account?x=1"),
                    "headers": [["accept", "application/json"]],
                    "secret_headers": [["APCA-API-KEY-ID", "api_key", "{secret}"]] } },
        { "send": { "url": format!("http://127.0.0.2:{port}/v2/account") } },
        { "send": { "url": "http://169.254.169.254/latest/meta-data/" } },
        { "send": { "url": format!("{origin}/x"), "headers": [["Authorization", "Bearer guess"]] } },
        { "send": { "url": format!("{origin}/x"), "headers": [["X-MBX-APIKEY", "guess"]] } },
        { "send": { "url": format!("{origin}/x"), "headers": [["Host", "evil.test"]] } },
        { "open": "hmac_key" },
        { "sign": { "secret": "hmac_key", "alg": "hmac-sha256", "data": "what do ya want for nothing?" } },
        { "sign": { "secret": "hmac_key", "alg": "hmac-sha512", "data": "what do ya want for nothing?" } },
        { "open": "unlisted" },
        { "open": "pinned" },
        { "send": { "url": format!("{origin}/p"), "secret_headers": [["x-api-key", "pinned", "{secret}"]] } },
    ]);
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant(&format!(
            "http = [{origin:?}]\nallow_loopback = true\nsecrets = [\"api_key\", \"hmac_key\", \"pinned\"]\n"
        ))
        .route("probe", "tradingview", "probe")
        .broker_settings(json!({ "steps": steps }))
        // The DNS-rebinding case: a granted name that resolves to loopback,
        // without allow_loopback.
        .plugin("rebind", HTTP_PROBE, "broker")
        .grant(&format!(
            "http = [\"http://broker.test:{port}\", \"http://[::ffff:127.0.0.1]:{port}\"]\nsecrets = [\"hmac_key\"]\n"
        ))
        .route("rebind", "tradingview", "rebind")
        .broker_settings(json!({ "steps": [
            { "send": { "url": format!("http://broker.test:{port}/v2/account") } },
            { "send": { "url": format!("http://[::ffff:127.0.0.1]:{port}/v2/account") } },
        ] }))
        // Per-call request quota.
        .plugin("quota", HTTP_PROBE, "broker")
        .grant(&format!(
            "http = [{origin:?}]\nallow_loopback = true\nmax_requests_per_call = 2\nmax_response_bytes = 16\nsecrets = [\"hmac_key\"]\n"
        ))
        .route("quota", "tradingview", "quota")
        .broker_settings(json!({ "steps": [
            { "send": { "url": format!("{origin}/1") } },
            { "send": { "url": format!("{origin}/2"), "body": "x".repeat(10) } },
            { "send": { "url": format!("{origin}/3") } },
        ] }))
        .toml(&secrets)
        .options(resolver(&["broker.test"]))
        .start()
        .await?;

    let r = probe(&host, "probe").await?;
    // 1. The granted call: the host filled the key from the handle.
    assert_eq!(r[1]["status"], 200, "{}", r[1]);
    let got = upstream.requests();
    assert_eq!(got.len(), 1, "only the granted request left the host: {got:?}");
    assert_eq!(got[0].uri, "/v2/account?x=1");
    let header = |name: &str| got[0].headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(header("apca-api-key-id").as_deref(), Some(API_KEY));
    assert_eq!(header("host"), Some(format!("127.0.0.1:{port}")));
    assert_eq!(header("accept").as_deref(), Some("application/json"));
    // The upstream echoed the key back; the plugin sees it redacted.
    let echoed = r[1].to_string();
    assert!(!echoed.contains(API_KEY), "{echoed}");
    assert!(echoed.contains("apca-api-key-id: [REDACTED]"), "{echoed}");
    // 2–7. Refusals, each naming what is wrong.
    let denied = |i: usize, needle: &str| {
        assert_eq!(r[i]["error"], "denied", "step {i}: {}", r[i]);
        let m = r[i]["message"].as_str().unwrap();
        assert!(m.contains(needle), "step {i}: {m}");
    };
    denied(2, "http://127.0.0.2:");
    denied(2, "is not in this plugin's http grant");
    denied(3, "http://169.254.169.254:80 is not in this plugin's http grant");
    denied(4, "`authorization` is a credential header");
    denied(5, "`x-mbx-apikey` is a credential header");
    denied(6, "the `host` header is set by the host");
    // 8–9. Signing with the host's copy of the key: RFC 4231 test case 2.
    assert_eq!(
        r[8]["signature"],
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        r[9]["signature"],
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
    // 10. A defined but ungranted secret.
    denied(10, "secret `unlisted` is not granted to this plugin");
    // 12. A secret bound to another host.
    denied(
        12,
        "secret `pinned` may be sent only to elsewhere.test, not to 127.0.0.1",
    );

    // Rebinding and mapped loopback without allow_loopback.
    let r = probe(&host, "rebind").await?;
    assert_eq!(r[0]["error"], "denied", "{}", r[0]);
    assert!(
        r[0]["message"]
            .as_str()
            .unwrap()
            .contains("`broker.test` resolves to 127.0.0.1 (loopback)"),
        "{}",
        r[0]
    );
    assert_eq!(r[1]["error"], "denied", "{}", r[1]);
    assert!(r[1]["message"].as_str().unwrap().contains("(loopback)"), "{}", r[1]);
    assert_eq!(upstream.requests().len(), 1, "nothing reached the upstream");

    // Quotas: two requests, then quota-exceeded; a capped response body.
    let r = probe(&host, "quota").await?;
    assert_eq!(r[0]["error"], "quota-exceeded", "{}", r[0]);
    assert!(r[0]["message"].as_str().unwrap().contains("16-byte limit"), "{}", r[0]);
    assert_eq!(r[2]["error"], "quota-exceeded", "{}", r[2]);
    assert!(
        r[2]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 outbound requests"),
        "{}",
        r[2]
    );

    // The audit trail: each use and denial is a child row of its call.
    let used = audit(&host, "secret.used");
    assert_eq!(used.len(), 3, "one header fill and two signatures: {used:#?}");
    assert_eq!(used[0].payload["secret"], "api_key");
    assert_eq!(used[0].payload["purpose"], "http-header");
    assert_eq!(used[1].payload["algorithm"], "hmac-sha256");
    let http = audit(&host, "capability.http");
    assert_eq!(http[0].payload["status"], 200);
    assert_eq!(http[0].payload["method"], "GET");
    assert_eq!(http[0].payload["url"], format!("{origin}/v2/account?…"));
    let denials = audit(&host, "capability.denied");
    assert!(denials.len() >= 10, "{denials:#?}");
    let calls = audit(&host, "plugin.call");
    let probe_call = calls
        .iter()
        .find(|c| c.payload["plugin"] == "probe" && c.payload["export"] == "place-order")
        .unwrap();
    let call_id = &probe_call.payload["call_id"];
    assert_eq!(&used[0].payload["call_id"], call_id, "linked to the plugin.call row");
    assert_eq!(&http[0].payload["call_id"], call_id);
    assert!(denials.iter().any(|d| &d.payload["call_id"] == call_id));
    assert_eq!(probe_call.payload["http_requests"], 7);
    // The key itself is nowhere in the audit store.
    let dump = std::fs::read(host.path().join("audit.db"))?;
    assert!(!contains(&dump, API_KEY.as_bytes()));
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
pub async fn secret_thief() -> anyhow::Result<()> {
    const CANARY: &str = "CANARY-7f3e9b1c5d2a";
    let broker = Upstream::start().await;
    let other = Upstream::start().await;
    let granted = format!("http://broker.test:{}", broker.addr.port());
    let elsewhere = format!("http://other.test:{}", other.addr.port());
    let host = HostBuilder::new()
        .plugin("thief", SECRET_THIEF, "broker")
        .grant(&format!(
            "http = [{granted:?}, {elsewhere:?}]\nallow_loopback = true\nsecrets = [\"canary\"]\n"
        ))
        .route("thief", "tradingview", "thief")
        .broker_settings(json!({ "granted": granted, "other": elsewhere }))
        .toml(&format!(
            "[secrets.canary]\nvalue = {CANARY:?}\nhosts = [\"broker.test\"]\n[secrets.vault_master]\nvalue = \"{CANARY}-2\"\n"
        ))
        .options(resolver(&["broker.test", "other.test"]))
        .start()
        .await?;
    let reply = host.alert("thief", "text/plain", "buy 1 AAPL at 100").await?;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 200, "{body}");
    assert!(!body.contains(CANARY), "not in the HTTP response: {body}");
    assert!(body.contains("[REDACTED]"), "the echo came back redacted: {body}");
    assert!(body.contains("may be sent only to broker.test"), "{body}");
    assert!(body.contains("credential header"), "{body}");
    assert!(body.contains("vault_master"), "{body}");

    // On the wire: the canary reached the granted host only, only in the
    // headers the host filled.
    for r in broker.requests() {
        for (k, v) in &r.headers {
            if v.contains(CANARY) {
                assert!(k == "x-echo" || k == "authorization", "{k}: {v}");
            }
        }
        assert!(!contains(&r.body, CANARY.as_bytes()), "{r:?}");
        assert!(!r.uri.contains(CANARY));
    }
    assert!(
        broker
            .requests()
            .iter()
            .any(|r| r.headers.iter().any(|(_, v)| v.contains(CANARY))),
        "the legitimate use did happen"
    );
    for r in other.requests() {
        assert!(!format!("{r:?}").contains(CANARY), "other host got it: {r:?}");
    }

    // At rest: no SQLite file (or WAL) in the data dir holds it, while
    // running and after shutdown; kv holds only the redacted loot.
    assert!(
        no_canary_at_rest(host.path(), CANARY)? >= 4,
        "audit.db, state.db and their WAL files"
    );
    let (dir, _) = host.stop().await;
    assert!(no_canary_at_rest(dir.path(), CANARY)? >= 2);
    Ok(())
}

/// Asserts no database file in `dir` holds `canary`; returns how many were read.
fn no_canary_at_rest(dir: &std::path::Path, canary: &str) -> anyhow::Result<usize> {
    let mut checked = 0;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        // The config file holds it by the operator's choice (`value =`).
        if p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().contains(".db")) {
            checked += 1;
            assert!(
                !contains(&std::fs::read(&p)?, canary.as_bytes()),
                "{} holds the canary",
                p.display()
            );
        }
    }
    Ok(checked)
}

#[tokio::test]
async fn a_plugin_importing_an_ungranted_capability_is_refused_at_load() -> anyhow::Result<()> {
    let err = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .route("probe", "tradingview", "probe")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin `probe` was refused at load"), "{err}");
    assert!(err.contains("algobanana:plugin/http@0.1.0"), "names the import: {err}");
    assert!(err.contains("algobanana:plugin/secrets@0.1.0"), "{err}");
    assert!(err.contains("[plugins.probe.grant]"), "says where to grant: {err}");

    // kv can be withheld too: the paper broker imports it.
    let err = HostBuilder::new()
        .grant("kv = false")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("algobanana:plugin/kv@0.1.0"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_changed_component_keeps_its_grant_only_if_it_requests_nothing_more() -> anyhow::Result<()> {
    let upstream = Upstream::start().await;
    let old = format!("sha256:{}", "ab".repeat(32));
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(HTTP_PROBE)?))
    );
    let secrets =
        "[secrets.api_key]\nvalue = \"a\"\n[secrets.hmac_key]\nvalue = \"b\"\n[secrets.pinned]\nvalue = \"c\"\n";
    // Approved for another digest, and the new manifest asks for secrets the
    // grant does not have: refused, naming what more it wants.
    let err = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant(&format!(
            "digest = {old:?}\nhttp = [{:?}]\nallow_loopback = true\nsecrets = [\"api_key\"]\n",
            upstream.origin()
        ))
        .route("probe", "tradingview", "probe")
        .toml(secrets)
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("plugin `probe` changed"), "{err}");
    assert!(err.contains(&old), "{err}");
    assert!(
        err.contains("it requests more: secret hmac_key, secret pinned"),
        "{err}"
    );
    assert!(
        err.contains(&format!("set digest = \"{digest}\"")),
        "says exactly what to approve: {err}"
    );

    // The same change when the grant already covers every request: carried
    // over, and the start event records it with the manifest.
    let host = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "broker")
        .grant(&format!(
            "digest = {old:?}\nhttp = [{:?}]\nallow_loopback = true\nsecrets = [\"api_key\", \"hmac_key\", \"pinned\"]\n",
            upstream.origin()
        ))
        .route("probe", "tradingview", "probe")
        .broker_settings(json!({ "steps": [] }))
        .toml(secrets)
        .start()
        .await?;
    let start = audit(&host, "system.start");
    let probe = start[0].payload["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "probe")
        .unwrap()
        .clone();
    assert_eq!(probe["grant_carried_from"], old);
    assert_eq!(probe["digest"], digest);
    assert_eq!(probe["manifest"]["name"], "http-probe");
    assert_eq!(
        probe["manifest"]["requests"]["secrets"],
        json!(["api_key", "hmac_key", "pinned"])
    );
    assert_eq!(
        probe["grant"]["http"],
        json!([format!("http://127.0.0.1:{}", upstream.addr.port())])
    );

    // A manifest that contradicts the config's world is refused.
    let err = HostBuilder::new()
        .plugin("probe", HTTP_PROBE, "rule")
        .route("probe", "probe", "paper")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("its manifest says world `broker`"), "{err}");

    // `portfolio` is a rule's setting: a broker's manifest with it is
    // refused. (A component without a manifest, given one.)
    let dir = tempfile::tempdir()?;
    let mut bytes = std::fs::read(NO_STD_RULE)?;
    bytes.extend(algobanana_tests::custom_section::custom_section(
        "algobanana-manifest",
        b"name = \"b\"\nversion = \"0.1.0\"\nworld = \"broker\"\nwit = \"0.1.0\"\nportfolio = \"on-request\"\n",
    ));
    let path = dir.path().join("b.wasm");
    std::fs::write(&path, bytes)?;
    let err = HostBuilder::new()
        .plugin("b", path.to_str().unwrap(), "broker")
        .route("b", "tradingview", "b")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("its manifest sets `portfolio`, which only rules have"),
        "{err}"
    );
    Ok(())
}
