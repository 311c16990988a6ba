//! The admin API: bearer tokens, the role × endpoint table walked in full
//! against an independent expectation table, denials audited, tokens
//! revoked with immediate effect, and the kill switch and audit log over
//! HTTP.

use algobanana::admin::rbac::{Endpoint, Role};
use algobanana::admin::{ROUTES, openapi_document};
use algobanana::audit::query::Filter;
use algobanana_tests::{HostBuilder, TestHost};
use serde_json::json;

/// What each role may do, written out independently of the host's table
/// (the golden matrix of `docs/security.md`): `match` is exhaustive, so a
/// new endpoint without an expectation does not compile.
fn expected(role: Role, e: Endpoint) -> bool {
    use Endpoint::*;
    let (admin, trader, viewer, auditor) = match e {
        Whoami | OpenApi => (true, true, true, true),
        KillSwitchRead | OrdersRead | AlertsRead | RoutesRead | PluginsRead | LimitsRead | SecretsRead => {
            (true, true, true, false)
        }
        KillSwitchSet | RoutesOperate | LimitsWrite => (true, true, false, false),
        SecretsWrite | UsersRead | UsersWrite | PluginsManage => (true, false, false, false),
        AuditSearch => (true, true, false, true),
        AuditExport | AuditVerify => (true, false, false, true),
        TokensRead | TokensCreate | TokensRevoke => (true, true, false, false),
    };
    match role {
        Role::Admin => admin,
        Role::Trader => trader,
        Role::Viewer => viewer,
        Role::Auditor => auditor,
    }
}

fn body_for(e: Endpoint, method: &str) -> Vec<u8> {
    match (e, method) {
        (Endpoint::KillSwitchSet, _) => br#"{"state":"off","reason":"table test"}"#.to_vec(),
        (Endpoint::TokensCreate, _) => br#"{"name":"made-by-test","role":"viewer"}"#.to_vec(),
        (Endpoint::LimitsWrite, _) => br#"{"max_order_quantity":"1"}"#.to_vec(),
        (Endpoint::SecretsWrite, "PUT") => br#"{"value":"table-test-value"}"#.to_vec(),
        (Endpoint::UsersWrite, "POST") => br#"{"name":"made-by-test","role":"viewer"}"#.to_vec(),
        (Endpoint::UsersWrite, _) => br#"{"disabled":true}"#.to_vec(),
        (Endpoint::RoutesOperate, _) => br#"{"overlap_s":0}"#.to_vec(),
        _ => Vec::new(),
    }
}

/// A token of `role` owned by a user of that role.
fn token_for(host: &TestHost, role: Role) -> anyhow::Result<(String, algobanana::admin::tokens::TokenInfo)> {
    let user = format!("{}-user", role.as_str());
    host.app.users.create(&user, role)?;
    Ok(host.app.tokens.create(&format!("{role:?}"), &user, role, None)?)
}

#[tokio::test]
async fn every_role_and_endpoint_is_decided_by_the_table_and_denials_are_audited() -> anyhow::Result<()> {
    let host = HostBuilder::new().vault(&[("canary-secret", "x")]).start().await?;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let (t, _) = token_for(&host, role)?;
        tokens.push((role, t));
    }
    let (_, victim) = host.app.tokens.create("to revoke", "trader-user", Role::Viewer, None)?;
    let mut covered = std::collections::BTreeSet::new();
    for route in ROUTES {
        covered.insert(format!("{:?}", route.endpoint));
        let path = route
            .path
            .replace("{id}", &victim.id)
            .replace("/routes/{name}", "/routes/default")
            .replace("/secrets/{name}", "/secrets/canary-secret")
            .replace("/plugins/{name}", "/plugins/no-such-plugin")
            .replace("/users/{name}", "/users/nobody");
        let method = route.method.to_uppercase();
        // No token: 401 everywhere.
        let anon = host
            .request(
                &method,
                &path,
                &[("content-type", "application/json")],
                body_for(route.endpoint, &method),
            )
            .await?;
        assert_eq!(anon.status, 401, "{method} {path} without a token");
        for (role, token) in &tokens {
            let auth = format!("Bearer {token}");
            let reply = host
                .request(
                    &method,
                    &path,
                    &[("authorization", auth.as_str()), ("content-type", "application/json")],
                    body_for(route.endpoint, &method),
                )
                .await?;
            if expected(*role, route.endpoint) {
                assert!(
                    reply.status < 400 || reply.status == 404 || reply.status == 409,
                    "{role:?} {method} {path}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                );
            } else {
                assert_eq!(reply.status, 403, "{role:?} {method} {path}");
                assert!(String::from_utf8_lossy(&reply.body).contains("may not use this endpoint"));
            }
        }
    }
    assert_eq!(
        covered.len(),
        Endpoint::ALL.len(),
        "every endpoint is routed and tested"
    );
    // The host's table agrees with the expectation table everywhere.
    for role in Role::ALL {
        for e in Endpoint::ALL {
            assert_eq!(
                algobanana::admin::rbac::allowed(role, *e),
                expected(role, *e),
                "{role:?} {e:?}"
            );
        }
    }
    // Every denial is on record, with no token in it: the first anonymous
    // ones from this source as events of their own, the rest counted in a
    // summary (`audit::throttle`); every token's denial one by one.
    host.app.flush_refusals().await?;
    let denied = host.audit(&Filter {
        action: Some("auth.denied".into()),
        ..Filter::default()
    })?;
    let anonymous: Vec<_> = denied.iter().filter(|d| d.actor_id == "anonymous").collect();
    let counted: u64 = anonymous.iter().map(|d| d.payload["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(counted, ROUTES.len() as u64, "one per route without a token");
    let own = anonymous.iter().filter(|d| d.payload["summary"] != true).count();
    assert_eq!(own, algobanana::audit::throttle::PER_SOURCE as usize);
    let events = anonymous.len();
    let forbidden = ROUTES.len() * Role::ALL.len()
        - ROUTES
            .iter()
            .map(|r| Role::ALL.iter().filter(|role| expected(**role, r.endpoint)).count())
            .sum::<usize>();
    assert_eq!(denied.len() - events, forbidden);
    let dump = std::fs::read(host.path().join("audit.db"))?;
    for (_, t) in &tokens {
        // `abk_<hex id>_<secret>`: the secret is URL-safe base64 and may
        // itself hold `_`, so split after the id, not at the last `_`.
        let secret = t.strip_prefix("abk_").unwrap().split_once('_').unwrap().1.as_bytes();
        assert_eq!(secret.len(), 43, "256 bits of secret in base64");
        assert!(
            !dump.windows(secret.len()).any(|w| w == secret),
            "no token in the audit log"
        );
    }
    // Unknown admin paths are 404, as before.
    let admin = format!("Bearer {}", tokens[0].1);
    let none = host
        .request("GET", "/v1/nothing", &[("authorization", admin.as_str())], Vec::new())
        .await?;
    assert_eq!(none.status, 404);
    Ok(())
}

#[tokio::test]
async fn tokens_are_revoked_and_expire_with_immediate_effect() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let (admin, _) = host.app.tokens.create("admin", "admin", Role::Admin, None)?;
    let admin = format!("Bearer {admin}");
    let created = host
        .request(
            "POST",
            "/v1/tokens",
            &[("authorization", admin.as_str()), ("content-type", "application/json")],
            br#"{"name":"dashboard","role":"viewer","expires_in_s":3600}"#.to_vec(),
        )
        .await?;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let body = created.json();
    let viewer = body["token"].as_str().unwrap().to_owned();
    assert!(viewer.starts_with("abk_"));
    let id = body["info"]["id"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {viewer}");
    let me = host
        .request("GET", "/v1/whoami", &[("authorization", bearer.as_str())], Vec::new())
        .await?;
    assert_eq!(me.json()["role"], "viewer");
    // Listing shows it without its secret, with its last use.
    let list = host
        .request("GET", "/v1/tokens", &[("authorization", admin.as_str())], Vec::new())
        .await?;
    let text = String::from_utf8_lossy(&list.body).into_owned();
    assert!(text.contains(&id) && !text.contains(&viewer), "{text}");
    assert!(
        list.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["last_used_at_ns"].is_i64())
    );
    // Revoked: refused on the very next request.
    let revoked = host
        .request(
            "DELETE",
            &format!("/v1/tokens/{id}"),
            &[("authorization", admin.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(revoked.status, 204);
    let after = host
        .request("GET", "/v1/whoami", &[("authorization", bearer.as_str())], Vec::new())
        .await?;
    assert_eq!(after.status, 401);
    assert!(String::from_utf8_lossy(&after.body).contains("revoked"));
    // Expired.
    let (old, _) = host.app.tokens.create("old", "admin", Role::Admin, Some(1))?;
    let old = format!("Bearer {old}");
    let expired = host
        .request("GET", "/v1/whoami", &[("authorization", old.as_str())], Vec::new())
        .await?;
    assert_eq!(expired.status, 401);
    assert!(String::from_utf8_lossy(&expired.body).contains("expired"));
    Ok(())
}

#[tokio::test]
async fn the_kill_switch_and_the_audit_log_over_the_admin_api() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let (trader, info) = token_for(&host, Role::Trader)?;
    let trader = format!("Bearer {trader}");
    let set = host
        .request(
            "PUT",
            "/v1/kill-switch",
            &[("authorization", trader.as_str()), ("content-type", "application/json")],
            br#"{"state":"on","reason":"news"}"#.to_vec(),
        )
        .await?;
    assert_eq!(set.status, 200, "{}", String::from_utf8_lossy(&set.body));
    let refused = host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.json();
    assert!(
        refused["orders"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("the kill switch is on"),
        "{refused}"
    );
    let read = host
        .request(
            "GET",
            "/v1/kill-switch",
            &[("authorization", trader.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(read.json()["state"], "on");
    assert_eq!(read.json()["set_by"], info.id);
    // Who did it is in the audit log, with the request's context.
    let changes = host.audit(&Filter {
        action: Some("config.changed".into()),
        ..Filter::default()
    })?;
    let kill = changes
        .iter()
        .find(|c| c.resource.as_deref() == Some("kill_switch"))
        .unwrap();
    assert_eq!(kill.actor_kind, "api_token");
    assert_eq!(kill.actor_id, info.id);
    assert_eq!(kill.source_ip.as_deref(), Some("127.0.0.1"));
    assert!(kill.request_id.is_some());

    // An auditor exports and verifies; the export verifies offline too.
    // Enough events that the streamed export spans many 64 KiB chunks.
    for i in 0..400 {
        host.app
            .audit
            .append(
                algobanana::audit::AuditEvent::new(
                    algobanana::audit::ActorKind::System,
                    "test",
                    "test.filler",
                    algobanana::audit::Outcome::Success,
                )
                .payload(json!({ "i": i, "pad": "x".repeat(1000) })),
            )
            .await?;
    }
    let (auditor, _) = token_for(&host, Role::Auditor)?;
    let auditor = format!("Bearer {auditor}");
    let verify = host
        .request(
            "GET",
            "/v1/audit/verify",
            &[("authorization", auditor.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(verify.json()["result"], "intact", "{}", verify.json());
    let export = host
        .request(
            "GET",
            "/v1/audit/export?format=jsonl",
            &[("authorization", auditor.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(export.status, 200);
    assert!(export.body.len() > 6 * 64 * 1024, "{} bytes", export.body.len());
    let file = host.path().join("api-export.jsonl");
    std::fs::write(&file, &export.body)?;
    let report =
        algobanana::audit::verify::verify_export(&file, &[], &Default::default()).map_err(anyhow::Error::msg)?;
    assert!(report.intact(), "{:#?}", report.findings);
    let search = host
        .request(
            "GET",
            "/v1/audit/events?action=risk.decision",
            &[("authorization", auditor.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(search.json()[0]["payload"]["rail"], "kill switch");
    let bad = host
        .request(
            "GET",
            "/v1/audit/events?since=yesterday",
            &[("authorization", auditor.as_str())],
            Vec::new(),
        )
        .await?;
    assert_eq!(bad.status, 422);
    assert!(String::from_utf8_lossy(&bad.body).contains("RFC 3339"));

    // A malformed body: 401 without a token (authentication first), a clear
    // 422 with one.
    let anon = host
        .request(
            "PUT",
            "/v1/kill-switch",
            &[("content-type", "application/json")],
            b"{nope".to_vec(),
        )
        .await?;
    assert_eq!(anon.status, 401);
    let malformed = host
        .request(
            "PUT",
            "/v1/kill-switch",
            &[("authorization", trader.as_str()), ("content-type", "application/json")],
            b"{nope".to_vec(),
        )
        .await?;
    assert_eq!(malformed.status, 422);
    let message = malformed.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("expected {\"state\""), "{message}");

    // The OpenAPI document lists every route with the roles that may use it.
    let doc = openapi_document();
    assert_eq!(
        doc["paths"]["/v1/kill-switch"]["put"]["x-roles"],
        json!(["admin", "trader"])
    );
    assert_eq!(
        doc["paths"]["/v1/audit/verify"]["get"]["x-roles"],
        json!(["admin", "auditor"])
    );
    Ok(())
}

#[tokio::test]
async fn orders_and_alerts_are_listed_newest_first_filtered_and_paged() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let (viewer, _) = token_for(&host, Role::Viewer)?;
    let viewer = format!("Bearer {viewer}");
    let get = |path: String| {
        let host = &host;
        let auth = viewer.clone();
        async move {
            host.request("GET", &path, &[("authorization", auth.as_str())], Vec::new())
                .await
        }
    };
    for n in 1..=5 {
        let reply = host
            .alert("default", "text/plain", &format!("buy {n} AAPL at 100"))
            .await?
            .json();
        assert_eq!(reply["orders"][0]["outcome"], "filled", "{reply}");
    }
    // A limit order far from the market rests at the paper broker: working.
    let limit = r#"{"ticker":"MSFT","action":"buy","quantity":"7","orderType":"limit","limitPrice":"90","price":"95"}"#;
    let resting = host.alert("default", "application/json", limit).await?.json();
    assert_eq!(resting["orders"][0]["outcome"], "accepted", "{resting}");
    let refused = host
        .alert("default", "text/plain", "buy 5000 AAPL at 100")
        .await?
        .json();
    assert_eq!(refused["orders"][0]["outcome"], "rejected", "{refused}");

    let all = get("/v1/orders".into()).await?;
    assert_eq!(all.status, 200, "{}", String::from_utf8_lossy(&all.body));
    let all = all.json();
    let quantities: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["intent"]["quantity"].as_str().unwrap())
        .collect();
    assert_eq!(
        quantities,
        ["5000", "7", "5", "4", "3", "2", "1"],
        "newest first: {all}"
    );
    assert_eq!(all[2]["state"], "filled");
    assert_eq!(all[2]["filled_quantity"], "5");
    assert_eq!(all[2]["average_fill_price"], "100");
    assert!(all[2]["created_at"].as_str().unwrap().ends_with('Z'));

    let page = get("/v1/orders?limit=2".into()).await?.json();
    assert_eq!(page.as_array().unwrap().len(), 2);
    let next = get(format!("/v1/orders?limit=2&before={}", page[1]["id"]))
        .await?
        .json();
    assert_eq!(next[0]["intent"]["quantity"], "5", "{next}");
    assert_eq!(next[1]["intent"]["quantity"], "4");
    let working = get("/v1/orders?state=working".into()).await?.json();
    assert_eq!(working.as_array().unwrap().len(), 1, "{working}");
    assert_eq!(working[0]["intent"]["symbol"], "MSFT");
    let rejected = get("/v1/orders?state=rejected&route=default&account=main".into())
        .await?
        .json();
    assert_eq!(
        rejected[0]["reason"].as_str().map(|r| r.contains("max_order_quantity")),
        Some(true)
    );
    assert_eq!(get("/v1/orders?route=elsewhere".into()).await?.json(), json!([]));

    let alerts = get("/v1/alerts?limit=3".into()).await?.json();
    let bodies: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["buy 5000 AAPL at 100", limit, "buy 5 AAPL at 100"]);
    let older = get(format!(
        "/v1/alerts?limit=1&before={}",
        alerts[2]["id"].as_str().unwrap()
    ))
    .await?
    .json();
    assert_eq!(older[0]["body"], "buy 4 AAPL at 100");
    let upper_cursor = get(format!(
        "/v1/alerts?limit=1&before={}",
        alerts[2]["id"].as_str().unwrap().to_uppercase()
    ))
    .await?
    .json();
    assert_eq!(upper_cursor, older, "a cursor in capitals pages the same way");
    let processed = get("/v1/alerts?status=processed&route=default".into()).await?.json();
    assert_eq!(processed.as_array().unwrap().len(), 7);
    // One alert by id: what a 202 answer's alert id leads to.
    let id = alerts[1]["id"].as_str().unwrap();
    let one = get(format!("/v1/alerts/{id}")).await?;
    assert_eq!(one.status, 200);
    let one = one.json();
    assert_eq!(one["body"], limit);
    assert_eq!(one["result"]["orders"][0]["outcome"], "accepted", "{one}");
    let upper = get(format!("/v1/alerts/{}", id.to_uppercase())).await?;
    assert_eq!(upper.json()["id"], id, "a UUID in capitals is the same alert");
    for missing in ["01a24af0-0000-7000-8000-000000000000", "not-an-id"] {
        let r = get(format!("/v1/alerts/{missing}")).await?;
        assert_eq!(r.status, 404, "{missing}");
        assert_eq!(r.json()["error"]["kind"], "not_found");
    }

    // Bad parameters: a 400 that says what was expected, after the token
    // was checked (no token: 401, whatever the query).
    for (path, says) in [
        ("/v1/orders?state=done", "expected working, intent"),
        ("/v1/orders?limit=many", "limit"),
        ("/v1/orders?symbol=AAPL", "unknown field `symbol`"),
        ("/v1/alerts?status=lost", "expected received, processed or failed"),
        ("/v1/alerts?before=yesterday", "before"),
    ] {
        let bad = get(path.into()).await?;
        assert_eq!(bad.status, 400, "{path}");
        let message = bad.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{path}: {message}");
        let anon = host.request("GET", path, &[], Vec::new()).await?;
        assert_eq!(anon.status, 401, "{path}");
    }
    // A viewer may not search the audit log: 403 before the query is read.
    let path = "/v1/audit/events?bogus=1";
    assert_eq!(get(path.into()).await?.status, 403);
    let (auditor, _) = token_for(&host, Role::Auditor)?;
    let bad = host
        .request(
            "GET",
            path,
            &[("authorization", &format!("Bearer {auditor}"))],
            Vec::new(),
        )
        .await?;
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `bogus`")
    );
    Ok(())
}
