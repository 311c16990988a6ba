//! Notifier plugins, one test each (named after the plugin), against local
//! servers that check each service's wire format: sent after the order path
//! for fills, rejections and errors, with credentials the plugin never sees.

use std::time::Duration;

use algobanana::audit::query::Filter;
use algobanana_tests::{HostBuilder, TestHost, Upstream, eventually};
use serde_json::Value;

/// A default host whose fills and rejections go to `notifier`.
async fn host_with(
    notifier: &str,
    upstream: &Upstream,
    grant_secrets: &str,
    settings: &str,
    secrets: &str,
) -> TestHost {
    HostBuilder::new()
        .builtin(notifier, "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [{grant_secrets}]\n",
            upstream.origin()
        ))
        .toml(&format!(
            "[[notifications]]\nplugin = {notifier:?}\non = [\"fill\", \"rejection\"]\nsettings = {settings}\n{secrets}\n[risk]\nmax_order_quantity = 10\n"
        ))
        .start()
        .await
        .unwrap()
}

/// Sends a fill and a rejection; returns the two requests the service got.
async fn two_notifications(host: &TestHost, upstream: &Upstream) -> Vec<algobanana_tests::Received> {
    let fill = host
        .alert("default", "text/plain", "buy 2 AAPL at 190.35")
        .await
        .unwrap();
    assert_eq!(fill.json()["orders"][0]["outcome"], "filled");
    // Notifications go out after the answer: wait for the fill's, so that
    // the two arrive in the order the tests read them.
    eventually(Duration::from_secs(10), || {
        (!upstream.requests().is_empty()).then_some(())
    })
    .await
    .unwrap();
    let reject = host.alert("default", "text/plain", "buy 11 AAPL at 190").await.unwrap();
    assert_eq!(reject.json()["orders"][0]["outcome"], "rejected");
    eventually(Duration::from_secs(10), || {
        let r = upstream.requests();
        (r.len() >= 2).then_some(r)
    })
    .await
    .unwrap()
}

/// The `capability.http` audit events of the two notifications. The
/// service can answer before the host has committed the event of the call
/// that reached it, so this waits for both.
async fn audited_http(host: &TestHost) -> Vec<algobanana::audit::query::AuditRecord> {
    eventually(Duration::from_secs(10), || {
        let http = host
            .audit(&Filter {
                action: Some("capability.http".into()),
                ..Filter::default()
            })
            .ok()?;
        (http.len() >= 2).then_some(http)
    })
    .await
    .unwrap()
}

fn body(r: &algobanana_tests::Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn header<'a>(r: &'a algobanana_tests::Received, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test]
pub async fn notify_webhook() -> anyhow::Result<()> {
    let upstream = Upstream::start().await;
    let host = host_with(
        "notify-webhook",
        &upstream,
        "\"hook_signing\"",
        &format!(
            "{{ url = \"{}/hooks/algobanana\", signing_secret = \"hook_signing\" }}",
            upstream.origin()
        ),
        "[secrets.hook_signing]\nvalue = \"whsec-9f2\"\n",
    )
    .await;
    let got = two_notifications(&host, &upstream).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].uri, "/hooks/algobanana");
    assert_eq!(header(&got[0], "content-type"), Some("application/json"));
    let fill = body(&got[0]);
    assert_eq!(fill["kind"], "fill");
    assert_eq!(fill["route"], "default");
    assert_eq!(fill["symbol"], "AAPL");
    assert_eq!(fill["summary"], "Filled buy 2 AAPL @ 190.35 (route default)");
    assert_eq!(fill["details"]["outcome"], "filled");
    // The receiver can check the signature with the shared secret.
    let expected = {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec-9f2").unwrap();
        mac.update(&got[0].body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    assert_eq!(header(&got[0], "x-algobanana-signature"), Some(expected.as_str()));
    let reject = body(&got[1]);
    assert_eq!(reject["kind"], "rejection");
    assert!(
        reject["summary"]
            .as_str()
            .unwrap()
            .contains("risk.max_order_quantity = 10"),
        "{reject}"
    );
    // Audited as plugin calls, after the alerts. The receiver can see a
    // notification before the host has recorded the call that sent it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let calls = host.audit(&Filter {
            action: Some("plugin.call".into()),
            ..Filter::default()
        })?;
        let n = calls.iter().filter(|c| c.payload["export"] == "notify").count();
        if n == 2 || std::time::Instant::now() > deadline {
            assert_eq!(n, 2);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
pub async fn notify_discord() -> anyhow::Result<()> {
    let upstream = Upstream::start_answering(204, Some("")).await;
    let url = format!("{}/api/webhooks/1187/tok-SECRET-44", upstream.origin());
    let host = host_with(
        "notify-discord",
        &upstream,
        "\"discord_hook\"",
        "{ webhook_secret = \"discord_hook\" }",
        &format!("[secrets.discord_hook]\nvalue = {url:?}\n"),
    )
    .await;
    let got = two_notifications(&host, &upstream).await;
    assert_eq!(got[0].uri, "/api/webhooks/1187/tok-SECRET-44");
    let fill = body(&got[0]);
    assert_eq!(fill["content"], "**fill** Filled buy 2 AAPL @ 190.35 (route default)");
    assert_eq!(fill["username"], "algobanana");
    assert_eq!(fill["allowed_mentions"]["parse"], serde_json::json!([]));
    assert!(
        body(&got[1])["content"]
            .as_str()
            .unwrap()
            .starts_with("**rejection** Rejected buy 11 AAPL")
    );
    // The webhook URL is a secret: the audit shows its template only.
    let http = audited_http(&host).await;
    assert_eq!(http[0].payload["url"], "{secret}");
    assert_eq!(http[0].payload["status"], 204);
    let dump = std::fs::read(host.path().join("audit.db"))?;
    let needle: &[u8] = b"tok-SECRET-44";
    assert!(!dump.windows(needle.len()).any(|w| w == needle));
    Ok(())
}

#[tokio::test]
pub async fn notify_slack() -> anyhow::Result<()> {
    let upstream = Upstream::start_answering(200, Some("ok")).await;
    let url = format!("{}/services/T000/B000/XXXX", upstream.origin());
    let host = host_with(
        "notify-slack",
        &upstream,
        "\"slack_hook\"",
        "{ webhook_secret = \"slack_hook\" }",
        &format!("[secrets.slack_hook]\nvalue = {url:?}\n"),
    )
    .await;
    let got = two_notifications(&host, &upstream).await;
    assert_eq!(got[0].uri, "/services/T000/B000/XXXX");
    assert_eq!(
        body(&got[0])["text"],
        "*fill* Filled buy 2 AAPL @ 190.35 (route default)"
    );
    assert!(body(&got[1])["text"].as_str().unwrap().starts_with("*rejection*"));

    // Slack's `invalid_token` answer is a rejected notification, audited.
    let bad = Upstream::start_answering(403, Some("invalid_token")).await;
    let url = format!("{}/services/T000/B000/XXXX", bad.origin());
    let host = host_with(
        "notify-slack",
        &bad,
        "\"slack_hook\"",
        "{ webhook_secret = \"slack_hook\" }",
        &format!("[secrets.slack_hook]\nvalue = {url:?}\n"),
    )
    .await;
    host.alert("default", "text/plain", "buy 1 AAPL at 100").await?;
    let failed = eventually(Duration::from_secs(10), || {
        host.audit(&Filter {
            action: Some("plugin.call".into()),
            ..Filter::default()
        })
        .ok()?
        .into_iter()
        .find(|c| c.payload["export"] == "notify")
    })
    .await?;
    assert_eq!(failed.outcome, "failure");
    assert!(
        failed.payload["output"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_token"),
        "{}",
        failed.payload
    );
    Ok(())
}

#[tokio::test]
pub async fn notify_telegram() -> anyhow::Result<()> {
    let upstream = Upstream::start_answering(200, Some(r#"{"ok":true,"result":{"message_id":7}}"#)).await;
    let host = host_with(
        "notify-telegram",
        &upstream,
        "\"tg_token\"",
        &format!(
            "{{ token_secret = \"tg_token\", chat_id = -1001234567890, api_base = \"{}\" }}",
            upstream.origin()
        ),
        "[secrets.tg_token]\nvalue = \"123456:ABC-DEF1234ghIkl\"\n",
    )
    .await;
    let got = two_notifications(&host, &upstream).await;
    assert_eq!(got[0].uri, "/bot123456:ABC-DEF1234ghIkl/sendMessage");
    let fill = body(&got[0]);
    assert_eq!(fill["chat_id"], -1_001_234_567_890_i64);
    assert_eq!(fill["text"], "[fill] Filled buy 2 AAPL @ 190.35 (route default)");
    let http = audited_http(&host).await;
    assert_eq!(
        http[0].payload["url"],
        format!("{}/bot{{secret}}/sendMessage", upstream.origin())
    );
    Ok(())
}

#[tokio::test]
async fn every_kill_switch_change_is_notified_whoever_makes_it() -> anyhow::Result<()> {
    let upstream = Upstream::start().await;
    let host = HostBuilder::new()
        .builtin("notify-webhook", "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"hook_signing\"]\n",
            upstream.origin()
        ))
        .route("elsewhere", "tradingview", "paper")
        .toml(&format!(
            "[[notifications]]\nplugin = \"notify-webhook\"\non = [\"kill_switch\"]\nroutes = [\"elsewhere\"]\nsettings = {{ url = \"{}/k\", signing_secret = \"hook_signing\" }}\n[secrets.hook_signing]\nvalue = \"whsec-k\"\n",
            upstream.origin()
        ))
        .start()
        .await?;
    // From a webhook…
    let thrown = host
        .alert(
            "default",
            "application/json",
            r#"{"kill_switch":"on","reason":"runaway"}"#,
        )
        .await?;
    assert_eq!(thrown.status, 200);
    // …and from the admin API (releasing takes an admin).
    let (token, _) = host
        .app
        .tokens
        .create("ops", "admin", algobanana::admin::rbac::Role::Admin, None)?;
    let auth = format!("Bearer {token}");
    let off = host
        .request(
            "PUT",
            "/v1/kill-switch",
            &[("authorization", auth.as_str()), ("content-type", "application/json")],
            br#"{"state":"off","reason":"all clear"}"#.to_vec(),
        )
        .await?;
    assert_eq!(off.status, 200);
    // Both reach the operator, although the target lists another route: the
    // switch stops every route.
    let got = eventually(Duration::from_secs(10), || {
        let r = upstream.requests();
        (r.len() >= 2).then_some(r)
    })
    .await
    .unwrap();
    let summaries: Vec<String> = got
        .iter()
        .map(|r| body(r)["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(got.iter().all(|r| body(r)["kind"] == "kill_switch"));
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("off → on by route default: runaway")),
        "{summaries:?}"
    );
    assert!(
        summaries
            .iter()
            .any(|s| s.contains("on → off by API token") && s.contains("(admin): all clear")),
        "{summaries:?}"
    );
    Ok(())
}

/// A host whose notify-webhook posts to `upstream`, after one filled alert.
async fn webhook_host_with_a_fill(upstream: &Upstream) -> anyhow::Result<TestHost> {
    let host = host_with(
        "notify-webhook",
        upstream,
        "\"hook_signing\"",
        &format!(
            "{{ url = \"{}/hooks/algobanana\", signing_secret = \"hook_signing\" }}",
            upstream.origin()
        ),
        "[secrets.hook_signing]\nvalue = \"whsec-1\"\n",
    )
    .await;
    let fill = host.alert("default", "text/plain", "buy 2 AAPL at 190.35").await?;
    assert_eq!(fill.json()["orders"][0]["outcome"], "filled");
    Ok(host)
}

/// A service that cannot take a notification (a 503, a 429) gets it again
/// a moment later (the WIT contract's `unavailable`: the host may try
/// again), each attempt audited; one that refuses it (a 400) does not.
#[tokio::test]
async fn an_unavailable_service_gets_the_notification_again_and_a_refusal_is_final() -> anyhow::Result<()> {
    // The first request fails with 503, every later one succeeds.
    let upstream = Upstream::start_flaky(1, 503, 200, None).await;
    let host = webhook_host_with_a_fill(&upstream).await?;
    let waiting =
        |host: &algobanana_tests::TestHost| host.app.notify_waiting.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(10), || (waiting(&host) == 1).then_some(())).await?;
    let got = eventually(Duration::from_secs(10), || {
        let r = upstream.requests();
        (r.len() >= 2).then_some(r)
    })
    .await?;
    assert_eq!(got[0].body, got[1].body, "the same notification, sent again");
    let outcomes = eventually(Duration::from_secs(10), || {
        let calls = host
            .audit(&Filter {
                action: Some("plugin.call".into()),
                ..Filter::default()
            })
            .ok()?;
        let notify: Vec<String> = calls
            .iter()
            .filter(|c| c.payload["export"] == "notify")
            .map(|c| c.payload["outcome"].as_str().unwrap_or_default().to_owned())
            .collect();
        (notify.len() >= 2).then_some(notify)
    })
    .await?;
    assert_eq!(outcomes, ["guest_error", "ok"]);
    // Delivered: nothing waits any more (the count is this host's own).
    eventually(Duration::from_secs(10), || (waiting(&host) == 0).then_some(())).await?;

    // A refusal is final: one attempt only.
    let refusing = Upstream::start_answering(400, Some("bad request")).await;
    let host = webhook_host_with_a_fill(&refusing).await?;
    eventually(Duration::from_secs(10), || {
        (!refusing.requests().is_empty()).then_some(())
    })
    .await?;
    tokio::time::sleep(algobanana::trading::notify::RETRY_DELAYS[0] + Duration::from_millis(700)).await;
    assert_eq!(refusing.requests().len(), 1, "a refused notification is not sent again");
    // Dropped, audited with the service's reason, and no longer queued.
    let d = eventually(Duration::from_secs(10), || {
        let d = dropped(&host);
        (!d.is_empty()).then_some(d)
    })
    .await?;
    assert_eq!(d.len(), 1, "{d:?}");
    let reason = d[0].payload["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("the service refused it"), "{reason}");
    assert_eq!(d[0].payload["attempts"], 1);
    assert!(outbox(&host).is_empty());
    Ok(())
}

/// The notifications `state.db` still holds, with their attempts.
fn outbox(host: &TestHost) -> Vec<i64> {
    host.app
        .state
        .with(|c| {
            c.prepare("SELECT attempts FROM notify_outbox ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
        .unwrap()
}

/// The `notification.dropped` events.
fn dropped(host: &TestHost) -> Vec<algobanana::audit::query::AuditRecord> {
    host.audit(&Filter {
        action: Some("notification.dropped".into()),
        ..Filter::default()
    })
    .unwrap()
}

/// `config.toml` of a stopped host's data dir, edited.
fn edit_config(dir: &std::path::Path, edit: impl FnOnce(String) -> String) -> anyhow::Result<()> {
    let path = dir.join(algobanana::config::CONFIG_FILE);
    std::fs::write(&path, edit(std::fs::read_to_string(&path)?))?;
    Ok(())
}

/// A fill whose notification the service could not take is still queued
/// in `state.db` when the host stops (the attempt counted), a stopped host
/// tries nothing, and the next start sends it: to the address the config
/// gives then (an operator who fixed a URL restarts), the same
/// notification, and then nothing is left queued.
#[tokio::test]
async fn a_notification_not_yet_delivered_is_sent_at_the_next_start() -> anyhow::Result<()> {
    let down = Upstream::start_answering(503, None).await;
    let host = webhook_host_with_a_fill(&down).await?;
    eventually(Duration::from_secs(10), || (outbox(&host) == [1]).then_some(())).await?;
    let first = down.requests()[0].body.clone();
    let (dir, tokens) = host.stop().await;
    let tried = down.requests().len();
    tokio::time::sleep(algobanana::trading::notify::RETRY_DELAYS[0] + Duration::from_millis(500)).await;
    assert_eq!(down.requests().len(), tried, "a stopped host sends nothing");

    let up = Upstream::start().await;
    edit_config(dir.path(), |c| c.replace(&down.origin(), &up.origin()))?;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let got = eventually(Duration::from_secs(10), || up.requests().first().cloned()).await?;
    assert_eq!(
        String::from_utf8_lossy(&got.body),
        String::from_utf8_lossy(&first),
        "the same notification"
    );
    assert!(
        got.uri.starts_with("/hooks/algobanana"),
        "sent to the configured path: {}",
        got.uri
    );
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    assert!(dropped(&host).is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.requests().len(), 1, "delivered once");
    Ok(())
}

/// A queued notification whose `[[notifications]]` entry is gone at the
/// next start is not sent: it is dropped, and the drop is audited with
/// the reason.
#[tokio::test]
async fn a_queued_notification_whose_entry_is_gone_is_dropped_and_audited() -> anyhow::Result<()> {
    let down = Upstream::start_answering(503, None).await;
    let host = webhook_host_with_a_fill(&down).await?;
    eventually(Duration::from_secs(10), || (outbox(&host) == [1]).then_some(())).await?;
    let (dir, tokens) = host.stop().await;
    edit_config(dir.path(), |c| {
        let start = c.find("[[notifications]]").unwrap();
        let end = start + c[start..].find("[secrets").unwrap();
        format!("{}{}", &c[..start], &c[end..])
    })?;
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    assert!(outbox(&host).is_empty());
    let d = dropped(&host);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].payload["notification"]["kind"], "fill");
    assert!(
        d[0].payload["reason"].as_str().unwrap().contains("notifications[0]"),
        "{}",
        d[0].payload["reason"]
    );
    assert_eq!(d[0].payload["attempts"], 1);
    Ok(())
}

/// An alert whose finish `state.db` lost (a crash between the audit log's
/// `alert.processed` and the batch that held its finish and its queued
/// notifications) is finished from the log at the next start, and its
/// notifications are queued and sent then: the same notification.
#[tokio::test]
async fn an_alert_finished_from_the_log_gets_its_notifications() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = webhook_host_with_a_fill(&up).await?;
    let sent = eventually(Duration::from_secs(10), || up.requests().first().cloned()).await?;
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    let alert_id = serde_json::from_slice::<Value>(&sent.body)?["alert_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (dir, tokens) = host.stop().await;
    {
        let conn = rusqlite::Connection::open(dir.path().join("state.db"))?;
        conn.execute(
            "UPDATE alert SET status = 'received', result = NULL WHERE id = ?1",
            [&alert_id],
        )?;
    }
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let again = eventually(Duration::from_secs(10), || up.requests().get(1).cloned()).await?;
    assert_eq!(
        String::from_utf8_lossy(&again.body),
        String::from_utf8_lossy(&sent.body)
    );
    let recovered = host.audit(&Filter {
        action: Some("state.recovered".into()),
        ..Filter::default()
    })?;
    assert_eq!(recovered[0].payload["notifications_queued"], 1);
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    Ok(())
}

/// A working order that fills after its alert was answered is notified
/// when reconciliation learns of it: a fill naming the alert and the
/// order, sent once.
#[tokio::test]
async fn a_fill_learned_by_reconciliation_is_notified_once() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = HostBuilder::new()
        .plugin("probe", algobanana_tests::plugins::HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tradingview", "probe")
        .broker_settings(serde_json::json!({ "has_order": true }))
        .builtin("notify-webhook", "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"k\"]\n",
            up.origin()
        ))
        .toml(&format!(
            "[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 1\n[[notifications]]\nplugin = \"notify-webhook\"\non = [\"fill\"]\nsettings = {{ url = \"{}/hooks/fills\" }}\n",
            up.origin()
        ))
        .start()
        .await?;
    let placed = host.alert("probe", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert_eq!(placed["orders"][0]["outcome"], "accepted", "{placed}");
    let got = eventually(Duration::from_secs(10), || up.requests().first().cloned()).await?;
    let n = body(&got);
    assert_eq!(n["kind"], "fill");
    assert_eq!(n["alert_id"], placed["alert_id"]);
    assert_eq!(n["client_order_id"], placed["orders"][0]["client_order_id"]);
    assert_eq!(n["summary"], "Filled buy 1 AAPL (route probe)");
    assert_eq!(n["details"]["learned_by"], "reconciliation");
    assert_eq!(n["details"]["ack"]["filled_quantity"], "1");
    // Filled, so no longer working: later sweeps notify nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(up.requests().len(), 1);
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    Ok(())
}

/// A broker account that lists a working order this host never sent is
/// told as an `error` once, though every sweep finds it again (the order
/// is remembered in `state.db`).
#[tokio::test]
async fn drift_is_notified_once() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = HostBuilder::new()
        .plugin("probe", algobanana_tests::plugins::HTTP_PROBE, "broker")
        .grant("http = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n")
        .route("probe", "tradingview", "probe")
        .broker_settings(serde_json::json!({ "open_orders": ["stray-1"] }))
        .builtin("notify-webhook", "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"k\"]\n",
            up.origin()
        ))
        .toml(&format!(
            "[secrets.k]\nvalue = \"v\"\n[trading]\nreconcile_interval_s = 1\n[[notifications]]\nplugin = \"notify-webhook\"\non = [\"error\"]\nroutes = [\"probe\"]\nsettings = {{ url = \"{}/hooks/errors\" }}\n",
            up.origin()
        ))
        .start()
        .await?;
    let got = eventually(Duration::from_secs(10), || up.requests().first().cloned()).await?;
    let n = body(&got);
    assert_eq!(n["kind"], "error");
    assert_eq!(n["route"], "probe");
    assert_eq!(n["client_order_id"], "stray-1");
    assert!(
        n["summary"].as_str().unwrap().starts_with("Drift on probe:probe/main"),
        "{}",
        n["summary"]
    );
    // Two more sweeps find it again; no second notification.
    let sweeps = |host: &TestHost| {
        host.audit(&Filter {
            action: Some("order.drift".into()),
            ..Filter::default()
        })
        .map(|d| d.len())
        .unwrap_or(0)
    };
    let seen = sweeps(&host);
    eventually(Duration::from_secs(10), || (sweeps(&host) >= seen + 2).then_some(())).await?;
    assert_eq!(up.requests().len(), 1);
    Ok(())
}

/// When the host stops taking alerts (here `state.db` is full), every
/// entry that takes errors hears it once, whatever its routes, with the
/// reason.
#[tokio::test]
async fn a_halt_is_notified_once_with_its_reason() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = HostBuilder::new()
        .route("other", "tradingview", "paper")
        .builtin("notify-webhook", "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"k\"]\n",
            up.origin()
        ))
        .toml(&format!(
            "[secrets.k]\nvalue = \"v\"\n[[notifications]]\nplugin = \"notify-webhook\"\non = [\"error\"]\nroutes = [\"other\"]\nsettings = {{ url = \"{}/hooks/errors\" }}\n",
            up.origin()
        ))
        .start()
        .await?;
    // The disk fills: state.db may not grow past its present size.
    host.app.state.with(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.pragma_update(None, "max_page_count", pages)
    })?;
    let mut refused = false;
    for i in 0..200 {
        let reply = host
            .alert("default", "text/plain", &format!("buy 1 AAPL at {}", 100 + i))
            .await?;
        if reply.status >= 500 {
            refused = true;
            break;
        }
    }
    assert!(refused, "state.db filled up");
    let got = eventually(Duration::from_secs(10), || up.requests().first().cloned()).await?;
    let n = body(&got);
    assert_eq!(n["kind"], "error");
    let summary = n["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("algobanana stopped taking alerts: state database") && summary.contains("full"),
        "{summary}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(up.requests().len(), 1, "once");
    Ok(())
}

/// A host whose webhook notifier takes fills, at most 2 a window of
/// `window`.
async fn rate_limited_host(up: &Upstream, window: Duration) -> anyhow::Result<TestHost> {
    HostBuilder::new()
        .options(algobanana::app::AppOptions {
            notify_window: Some(window),
            ..Default::default()
        })
        .builtin("notify-webhook", "notifier")
        .grant(&format!(
            "http = [{:?}]\nallow_loopback = true\nsecrets = [\"k\"]\n",
            up.origin()
        ))
        .toml(&format!(
            "[secrets.k]\nvalue = \"v\"\n[[notifications]]\nplugin = \"notify-webhook\"\non = [\"fill\"]\nmax_per_minute = 2\nsettings = {{ url = \"{}/hooks/fills\" }}\n",
            up.origin()
        ))
        .start()
        .await
}

/// `n` filled alerts, at prices from `from` on (distinct signals); their
/// ids.
async fn fills(host: &TestHost, from: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in from..from + n {
        let reply = host
            .alert("default", "text/plain", &format!("buy 1 AAPL at {i}"))
            .await?
            .json();
        assert_eq!(reply["orders"][0]["outcome"], "filled", "{reply}");
        ids.push(reply["alert_id"].as_str().unwrap().to_owned());
    }
    Ok(ids)
}

/// Past `max_per_minute`, an entry's notifications are held and told in
/// one summary when the window ends: the service gets the first 2 fills,
/// then one summary of the other 3 naming their alerts; nothing is left
/// queued, and the next window starts afresh.
#[tokio::test]
async fn past_the_rate_the_rest_of_a_window_is_one_summary() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = rate_limited_host(&up, Duration::from_secs(10)).await?;
    let ids = fills(&host, 100, 5).await?;
    let got = eventually(Duration::from_secs(30), || {
        let r = up.requests();
        (r.len() >= 3).then_some(r)
    })
    .await?;
    let bodies: Vec<Value> = got.iter().map(body).collect();
    assert_eq!(
        (bodies[0]["alert_id"].as_str(), bodies[1]["alert_id"].as_str()),
        (Some(ids[0].as_str()), Some(ids[1].as_str()))
    );
    let summary = &bodies[2];
    assert_eq!(summary["kind"], "fill");
    let text = summary["summary"].as_str().unwrap();
    assert!(
        text.starts_with(
            "3 more notifications within 10 s, not sent one by one (notifications[0] sends at most 2 a minute): 3 fills"
        ),
        "{text}"
    );
    assert_eq!(summary["details"]["held"], 3);
    assert_eq!(summary["details"]["alert_ids"], serde_json::json!(ids[2..]));
    assert_eq!(summary["route"], "default");
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    // A new window: the next fill goes out on its own.
    let next = fills(&host, 200, 1).await?;
    let got = eventually(Duration::from_secs(10), || up.requests().get(3).cloned()).await?;
    assert_eq!(body(&got)["alert_id"], next[0].as_str());
    assert_eq!(up.requests().len(), 4);
    Ok(())
}

/// A window's summary is an outbox row from the first notification it
/// holds, kept up to date: a stop before the window ends leaves it queued,
/// and the next start sends it as it stood.
#[tokio::test]
async fn a_summary_not_yet_sent_survives_a_restart() -> anyhow::Result<()> {
    let up = Upstream::start().await;
    let host = rate_limited_host(&up, Duration::from_secs(600)).await?;
    let ids = fills(&host, 100, 4).await?;
    eventually(Duration::from_secs(10), || (up.requests().len() == 2).then_some(())).await?;
    eventually(Duration::from_secs(10), || (outbox(&host) == [0]).then_some(())).await?;
    let (dir, tokens) = host.stop().await;
    assert_eq!(up.requests().len(), 2, "the summary waits for the window's end");
    let host = TestHost::start_in(dir, tokens, Default::default()).await?;
    let got = eventually(Duration::from_secs(10), || up.requests().get(2).cloned()).await?;
    let summary = body(&got);
    assert_eq!(summary["details"]["held"], 2);
    assert_eq!(summary["details"]["alert_ids"], serde_json::json!(ids[2..]));
    eventually(Duration::from_secs(10), || outbox(&host).is_empty().then_some(())).await?;
    Ok(())
}
