//! Webhook guards beyond the URL token: body passphrase (stripped before
//! anything stores it), HMAC signature header with a window and replay
//! refusal, source allowlist with proxy trust, per-hook rate limit. Every
//! refusal is audited without the secret.

use algobanana::admin::rbac::Role;
use algobanana::audit::query::Filter;
use algobanana_tests::{HostBuilder, TestHost};
use hmac::Mac as _;

const PASS: &str = "correct horse battery staple";
const KEY: &str = "whsec_4f1c2d9e7a";

fn sign(t: i64, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_s() -> i64 {
    algobanana::audit::now_ns() / 1_000_000_000
}

async fn post(host: &TestHost, route: &str, body: &str, headers: &[(&str, &str)]) -> algobanana_tests::Reply {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    host.request("POST", &host.hook(route), &h, body.as_bytes().to_vec())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_passphrase_is_checked_and_never_stored() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .route_toml("passphrase_secret = \"hook_pass\"\n")
        .toml(&format!("[secrets.hook_pass]\nvalue = {PASS:?}\n"))
        .start()
        .await?;
    let good = format!(r#"{{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","passphrase":"{PASS}"}}"#);
    let ok = post(&host, "default", &good, &[]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    for bad in [
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100","passphrase":"wrong"}"#,
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100"}"#,
        "buy 1 AAPL at 100",
    ] {
        let r = post(&host, "default", bad, &[]).await;
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(r.json()["error"]["kind"], "bad_passphrase");
    }
    let (dir, _) = host.stop().await;
    for f in std::fs::read_dir(dir.path())? {
        let p = f?.path();
        if p.to_string_lossy().contains(".db") {
            let bytes = std::fs::read(&p)?;
            assert!(
                !bytes.windows(PASS.len()).any(|w| w == PASS.as_bytes()),
                "{} holds the passphrase",
                p.display()
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn signatures_are_checked_within_their_window_and_only_once() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .route_toml("signature_secret = \"hook_key\"\n")
        .toml(&format!("[secrets.hook_key]\nvalue = {KEY:?}\n"))
        .start()
        .await?;
    let body = r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100"}"#;
    let sig = sign(now_s(), body);
    let ok = post(&host, "default", body, &[("x-algobanana-signature", &sig)]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let replay = post(&host, "default", body, &[("x-algobanana-signature", &sig)]).await;
    assert_eq!(replay.status, 401);
    assert!(replay.json()["error"]["message"].as_str().unwrap().contains("replay"));
    let old = sign(now_s() - 400, body);
    let stale = post(&host, "default", body, &[("x-algobanana-signature", &old)]).await;
    assert_eq!(stale.status, 401);
    assert!(
        stale.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("window is 300 s")
    );
    let tampered = sign(now_s(), body).replace("v1=", "v1=00");
    assert_eq!(
        post(&host, "default", body, &[("x-algobanana-signature", &tampered)])
            .await
            .status,
        401
    );
    let other_body = post(
        &host,
        "default",
        r#"{"ticker":"AAPL","action":"buy","quantity":"9","price":"100"}"#,
        &[("x-algobanana-signature", &sign(now_s(), body))],
    )
    .await;
    assert_eq!(other_body.status, 401, "the signature covers the body");
    assert_eq!(post(&host, "default", body, &[]).await.status, 401);
    let denied = host.audit(&Filter {
        action: Some("alert.rejected".into()),
        ..Filter::default()
    })?;
    assert_eq!(denied.len(), 5);
    assert!(!serde_json::to_string(&denied)?.contains(KEY));
    Ok(())
}

#[tokio::test]
async fn sources_are_allowlisted_and_forwarding_is_trusted_only_from_proxies() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .route_toml("allowed_ips = [\"tradingview\", \"203.0.113.0/24\"]\n")
        .route("proxied", "tradingview", "paper")
        .route_toml("allowed_ips = [\"203.0.113.7\"]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .start()
        .await?;
    let body = r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100"}"#;
    // From 127.0.0.1, not allowed; a forged X-Forwarded-For is ignored
    // because 127.0.0.1 is not a trusted proxy on this route.
    let direct = post(&host, "default", body, &[("x-forwarded-for", "52.89.214.238")]).await;
    assert_eq!(direct.status, 403);
    assert!(
        direct.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alerts from 127.0.0.1")
    );
    // Behind the trusted proxy the forwarded client counts.
    let ok = post(
        &host,
        "proxied",
        body,
        &[("x-forwarded-for", "198.51.100.9, 203.0.113.7")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let received = host.audit(&Filter {
        action: Some("alert.received".into()),
        ..Filter::default()
    })?;
    assert_eq!(
        received[0].source_ip.as_deref(),
        Some("203.0.113.7"),
        "the audit names the real client"
    );
    let wrong = post(&host, "proxied", body, &[("x-forwarded-for", "198.51.100.9")]).await;
    assert_eq!(wrong.status, 403);
    Ok(())
}

/// `[server] trusted_proxies`: behind a reverse proxy every request's
/// client is the right-most forwarded address that is not a proxy, for the
/// audit, the refusal throttle, Local mode's loopback rule and a route's
/// allowlist; without it the header means nothing.
#[tokio::test]
async fn a_trusted_proxy_names_the_client_everywhere() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n")
        .route("listed", "tradingview", "paper")
        .route_toml("allowed_ips = [\"203.0.113.7\"]\n")
        .start()
        .await?;
    let body = r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"100"}"#;
    let source = |action: &str| -> anyhow::Result<Vec<Option<String>>> {
        Ok(host
            .audit(&Filter {
                action: Some(action.into()),
                ..Filter::default()
            })?
            .into_iter()
            .map(|e| e.source_ip)
            .collect())
    };
    // A webhook: the client, not the proxy (a forged left-hand entry is ignored).
    let forwarded = [("x-forwarded-for", "192.0.2.1, 198.51.100.9")];
    assert_eq!(post(&host, "default", body, &forwarded).await.status, 200);
    assert_eq!(source("alert.received")?, [Some("198.51.100.9".to_owned())]);
    // The route's allowlist checks the client too.
    assert_eq!(post(&host, "listed", body, &forwarded).await.status, 403);
    let ok = post(&host, "listed", body, &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    // An unknown hook token: refused and audited under the client's address.
    let unknown = host
        .request(
            "POST",
            "/v1/hooks/nope",
            &[("x-forwarded-for", "198.51.100.77")],
            Vec::new(),
        )
        .await?;
    assert_eq!(unknown.status, 404);
    let rejected = source("alert.rejected")?;
    assert!(rejected.contains(&Some("198.51.100.77".to_owned())), "{rejected:?}");

    // The admin API in Local mode: a local client through the proxy is
    // answered and audited as itself; a remote one through it is refused.
    let (token, _) = host.app.tokens.create("ops", "admin", Role::Admin, None)?;
    let bearer = format!("Bearer {token}");
    let local = host
        .request(
            "GET",
            "/v1/whoami",
            &[("authorization", bearer.as_str()), ("x-forwarded-for", "127.0.0.2")],
            Vec::new(),
        )
        .await?;
    assert_eq!(local.status, 200, "{}", String::from_utf8_lossy(&local.body));
    assert!(source("admin.access")?.contains(&Some("127.0.0.2".to_owned())));
    let remote = host
        .request(
            "GET",
            "/v1/whoami",
            &[("authorization", bearer.as_str()), ("x-forwarded-for", "198.51.100.9")],
            Vec::new(),
        )
        .await?;
    assert_eq!(remote.status, 403);
    assert_eq!(remote.json()["error"]["kind"], "local_mode");
    assert!(source("auth.denied")?.contains(&Some("198.51.100.9".to_owned())));

    // Without the setting the header is the client's word and ignored.
    let plain = TestHost::start().await?;
    assert_eq!(post(&plain, "default", body, &forwarded).await.status, 200);
    let received = plain.audit(&Filter {
        action: Some("alert.received".into()),
        ..Filter::default()
    })?;
    assert_eq!(received[0].source_ip.as_deref(), Some("127.0.0.1"));
    Ok(())
}

#[tokio::test]
async fn each_hook_is_rate_limited() -> anyhow::Result<()> {
    let host = HostBuilder::new()
        .route_toml("rate_limit_per_minute = 3\n")
        .start()
        .await?;
    for i in 0..3 {
        let r = post(
            &host,
            "default",
            &format!(
                r#"{{"ticker":"AAPL","action":"buy","quantity":"1","price":"{}"}}"#,
                100 + i
            ),
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let limited = post(
        &host,
        "default",
        r#"{"ticker":"AAPL","action":"buy","quantity":"1","price":"99"}"#,
        &[],
    )
    .await;
    assert_eq!(limited.status, 429);
    assert!(
        limited.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 alerts")
    );
    Ok(())
}

/// A flood of requests that prove nothing (unknown hook tokens, bad API
/// tokens) cannot fill the audit log or its writer: the first refusals
/// from a source are events of their own, the rest are counted into one
/// summary per kind, and every refusal is still accounted for.
#[tokio::test]
async fn a_flood_of_unproven_requests_is_counted_not_written_one_by_one() -> anyhow::Result<()> {
    use algobanana::audit::throttle::PER_SOURCE;
    let host = TestHost::start().await?;
    let flood = u64::from(PER_SOURCE) + 30;
    for i in 0..flood {
        let r = host
            .request("POST", &format!("/v1/hooks/abh_guess_{i}"), &[], b"buy 1 AAPL".to_vec())
            .await?;
        assert_eq!(r.status, 404);
    }
    for i in 0..flood {
        let r = host
            .request(
                "GET",
                "/v1/orders",
                &[("authorization", &format!("Bearer abk_{i:026}_guess"))],
                Vec::new(),
            )
            .await?;
        assert_eq!(r.status, 401);
    }
    let count = |action: &str| -> anyhow::Result<(usize, u64)> {
        let events = host.audit(&Filter {
            action: Some(action.into()),
            ..Filter::default()
        })?;
        let total = events.iter().map(|e| e.payload["count"].as_u64().unwrap_or(1)).sum();
        Ok((events.len(), total))
    };
    // Before the window ends: only the allowance is on record.
    assert_eq!(count("alert.rejected")?, (PER_SOURCE as usize, u64::from(PER_SOURCE)));
    // One source, so the admin API's refusals share the allowance: none
    // of them had an event of its own.
    assert_eq!(count("auth.denied")?, (0, 0));
    // The window's end (or the shutdown) writes the summaries.
    host.app.flush_refusals().await?;
    assert_eq!(count("alert.rejected")?, (PER_SOURCE as usize + 1, flood));
    let (events, denied) = count("auth.denied")?;
    assert_eq!((events, denied), (1, flood));
    let summary = host
        .audit(&Filter {
            action: Some("auth.denied".into()),
            ..Filter::default()
        })?
        .remove(0);
    assert_eq!(summary.payload["summary"], true);
    assert_eq!(summary.actor_id, "several", "each guess had its own id part");
    assert_eq!(summary.payload["status"], 401);
    assert_eq!(summary.payload["reason"], "unknown token");
    assert_eq!(summary.payload["top_sources"][0]["source"], "127.0.0.1");
    let text = serde_json::to_string(&summary)?;
    assert!(!text.contains("guess"), "no presented token is stored: {text}");
    // A real alert from the same source still goes through at once.
    let ok = host.alert("default", "text/plain", "buy 1 AAPL at 100").await?;
    assert_eq!(ok.status, 200);
    Ok(())
}
