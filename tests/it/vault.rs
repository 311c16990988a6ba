//! Zero trust beyond the first admin endpoints: vault secrets used by a
//! plugin without leaving a trace at rest, hook-token rotation with an
//! overlap window, paused routes, risk limits over the API within the
//! trader ceiling, users (Cloud mode), Local mode's loopback rule, and HTTPS.

use std::collections::HashMap;
use std::sync::Arc;

use algobanana::admin::rbac::{Endpoint, Role};
use algobanana::app::AppOptions;
use algobanana::audit::query::Filter;
use algobanana_tests::plugins::*;
use algobanana_tests::{HostBuilder, MapResolver, TestHost, Upstream};
use serde_json::{Value, json};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn admin_token(host: &TestHost) -> anyhow::Result<String> {
    Ok(format!(
        "Bearer {}",
        host.app.tokens.create("test admin", "admin", Role::Admin, None)?.0
    ))
}

async fn call(host: &TestHost, auth: &str, method: &str, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body)?
    };
    let r = host
        .request(
            method,
            path,
            &[("authorization", auth), ("content-type", "application/json")],
            body,
        )
        .await?;
    let v = if r.body.is_empty() { Value::Null } else { r.json() };
    Ok((r.status, v))
}

#[tokio::test]
async fn vault_secrets_reach_the_granted_host_and_nothing_else_anywhere() -> anyhow::Result<()> {
    const CANARY: &str = "CANARY-vault-51c0de";
    let broker = Upstream::start().await;
    let granted = format!("http://broker.test:{}", broker.addr.port());
    let map: HashMap<String, Vec<std::net::IpAddr>> =
        HashMap::from([("broker.test".to_owned(), vec![std::net::IpAddr::from([127, 0, 0, 1])])]);
    let host = HostBuilder::new()
        .plugin("thief", SECRET_THIEF, "broker")
        .grant(&format!(
            "http = [{granted:?}]\nallow_loopback = true\nsecrets = [\"canary\"]\n"
        ))
        .route("thief", "tradingview", "thief")
        .broker_settings(json!({ "granted": granted, "other": granted }))
        .toml("[secrets.canary]\nvault = true\nhosts = [\"broker.test\"]\n[secrets.vault_master]\nvault = true\n")
        .vault(&[("canary", CANARY), ("vault_master", &format!("{CANARY}-2"))])
        .options(AppOptions {
            resolver: Some(Arc::new(MapResolver(map))),
            ..AppOptions::default()
        })
        .start()
        .await?;
    let reply = host.alert("thief", "text/plain", "buy 1 AAPL at 100").await?;
    let body = String::from_utf8_lossy(&reply.body).into_owned();
    assert_eq!(reply.status, 200, "{body}");
    assert!(!body.contains(CANARY), "{body}");
    assert!(
        broker
            .requests()
            .iter()
            .any(|r| r.headers.iter().any(|(_, v)| v.contains(CANARY))),
        "the vault secret was injected for the granted host"
    );
    // The admin API lists names, never values.
    let auth = admin_token(&host)?;
    let (status, list) = call(&host, &auth, "GET", "/v1/secrets", Value::Null).await?;
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(CANARY), "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "canary" && s["source"] == "vault")
    );
    // Set and replace through the API: write-only, audited by name.
    let (status, set) = call(
        &host,
        &auth,
        "PUT",
        "/v1/secrets/new-key",
        json!({ "value": format!("{CANARY}-3") }),
    )
    .await?;
    assert_eq!((status, &set["outcome"]), (200, &json!("created")), "{set}");
    let (_, set) = call(
        &host,
        &auth,
        "PUT",
        "/v1/secrets/new-key",
        json!({ "value": format!("{CANARY}-4") }),
    )
    .await?;
    assert_eq!((&set["outcome"], &set["version"]), (&json!("replaced"), &json!(2)));
    let (status, _) = call(&host, &auth, "DELETE", "/v1/secrets/new-key", Value::Null).await?;
    assert_eq!(status, 204);
    let (status, _) = call(&host, &auth, "DELETE", "/v1/secrets/new-key", Value::Null).await?;
    assert_eq!(status, 404);
    let (status, bad) = call(&host, &auth, "PUT", "/v1/secrets/Bad%20Name", json!({ "value": "x" })).await?;
    assert_eq!(status, 422, "{bad}");
    let events = host.audit(&Filter {
        action: Some("secret.*".into()),
        ..Filter::default()
    })?;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"secret.set") && actions.contains(&"secret.deleted") && actions.contains(&"secret.used"),
        "{actions:?}"
    );

    // Nowhere at rest: every file of the data dir (databases, WAL, vault,
    // its backup, keys, cache), while running and after shutdown.
    let scan = |dir: &std::path::Path| {
        let all = files(dir);
        assert!(all.iter().any(|p| p.ends_with("vault.abv")));
        for p in &all {
            let bytes = std::fs::read(p).unwrap();
            assert!(!contains(&bytes, CANARY.as_bytes()), "{} holds the canary", p.display());
        }
        all.len()
    };
    assert!(scan(host.path()) >= 6);
    let (dir, _) = host.stop().await;
    scan(dir.path());
    Ok(())
}

#[tokio::test]
async fn a_vault_secret_the_config_names_must_exist_and_a_damaged_vault_refuses_start() -> anyhow::Result<()> {
    let err = HostBuilder::new()
        .toml("[secrets.alpaca_key]\nvault = true\n")
        .vault(&[])
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("secrets.alpaca_key says `vault = true`"), "{err}");
    assert!(err.contains("algobanana secret set alpaca_key"), "{err}");
    let err = HostBuilder::new()
        .toml("[secrets.alpaca_key]\nvault = true\n")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("there is no vault"), "{err}");

    // A flipped ciphertext bit: start is refused, naming the fix.
    let (dir, tokens) = HostBuilder::new().vault(&[("k", "value")]).write()?;
    let path = dir.path().join("vault.abv");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let ct = doc["records"][0]["ciphertext"].as_str().unwrap().to_owned();
    let (first, rest) = ct.split_at(1);
    let flipped = format!("{}{rest}", if first == "A" { "B" } else { "A" });
    doc["records"][0]["ciphertext"] = json!(flipped);
    std::fs::write(&path, serde_json::to_vec(&doc)?)?;
    let err = TestHost::start_in(dir, tokens, AppOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("has been altered or damaged"), "{err}");
    assert!(err.contains("vault.abv.bak"), "{err}");
    Ok(())
}

#[tokio::test]
async fn hook_tokens_rotate_with_an_overlap_and_routes_pause() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let auth = admin_token(&host)?;
    let old = host.hook("default");
    assert_eq!(
        host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.status,
        200
    );

    // Rotate with a one-hour overlap: both work.
    let (status, r) = call(
        &host,
        &auth,
        "POST",
        "/v1/routes/default/hook-token",
        json!({ "overlap_s": 3600 }),
    )
    .await?;
    assert_eq!(status, 201, "{r}");
    let new = r["hook_path"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    for (path, n) in [(&old, 2), (&new, 3)] {
        let reply = host
            .request(
                "POST",
                path,
                &[("content-type", "text/plain")],
                format!("buy {n} AAPL at 100").into_bytes(),
            )
            .await?;
        assert_eq!(reply.status, 200, "{path}");
    }
    let (_, routes) = call(&host, &auth, "GET", "/v1/routes", Value::Null).await?;
    let listed = routes[0]["hook_tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed[1]["expires_at_ns"].is_i64() && listed[0]["expires_at_ns"].is_null(),
        "{routes}"
    );
    assert!(
        !routes.to_string().contains(new.trim_start_matches("/v1/hooks/")),
        "never the token"
    );

    // Rotate again with no overlap: only the newest works, at once.
    let (_, r) = call(
        &host,
        &auth,
        "POST",
        "/v1/routes/default/hook-token",
        json!({ "overlap_s": 0 }),
    )
    .await?;
    let newest = r["hook_path"].as_str().unwrap().to_owned();
    for (path, want) in [(&old, 404), (&new, 404), (&newest, 200)] {
        let reply = host
            .request(
                "POST",
                path,
                &[("content-type", "text/plain")],
                b"buy 4 AAPL at 100".to_vec(),
            )
            .await?;
        assert_eq!(reply.status, want, "{path}");
    }

    // Pause: refused with 409, nothing stored; resume: accepted again.
    let (status, _) = call(&host, &auth, "POST", "/v1/routes/default/pause", Value::Null).await?;
    assert_eq!(status, 200);
    let before = call(&host, &auth, "GET", "/v1/alerts", Value::Null)
        .await?
        .1
        .as_array()
        .unwrap()
        .len();
    let paused = host
        .request(
            "POST",
            &newest,
            &[("content-type", "text/plain")],
            b"buy 5 AAPL at 100".to_vec(),
        )
        .await?;
    assert_eq!(paused.status, 409);
    assert!(String::from_utf8_lossy(&paused.body).contains("/resume"));
    let after = call(&host, &auth, "GET", "/v1/alerts", Value::Null)
        .await?
        .1
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a paused route stores nothing");
    let (status, _) = call(&host, &auth, "POST", "/v1/routes/default/resume", Value::Null).await?;
    assert_eq!(status, 200);
    let (status, e) = call(&host, &auth, "POST", "/v1/routes/nope/pause", Value::Null).await?;
    assert_eq!(status, 404, "{e}");

    // Rotations and pauses survive a restart.
    let (dir, mut tokens) = host.stop().await;
    tokens.insert("default".into(), newest.trim_start_matches("/v1/hooks/").to_owned());
    let host = TestHost::start_in(dir, tokens, AppOptions::default()).await?;
    assert_eq!(
        host.alert("default", "text/plain", "buy 6 AAPL at 100").await?.status,
        200
    );
    let stale = host
        .request(
            "POST",
            &old,
            &[("content-type", "text/plain")],
            b"buy 7 AAPL at 100".to_vec(),
        )
        .await?;
    assert_eq!(stale.status, 404);
    let changes = host.audit(&Filter {
        action: Some("route.changed".into()),
        ..Filter::default()
    })?;
    assert_eq!(
        changes.len(),
        4,
        "two rotations, a pause and a resume (the 404 changed nothing): {changes:?}"
    );
    Ok(())
}

#[tokio::test]
async fn risk_limits_change_over_the_api_within_the_trader_ceiling() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    host.app.users.create("desk", Role::Trader)?;
    let trader = format!(
        "Bearer {}",
        host.app.tokens.create("desk", "desk", Role::Trader, None)?.0
    );
    let (status, limits) = call(&host, &trader, "GET", "/v1/limits", Value::Null).await?;
    assert_eq!(status, 200);
    let ceiling = limits["config"]["max_order_quantity"].clone();
    assert!(ceiling.is_string(), "{limits}");
    // Tighten to 2: an order of 3 is refused by the rail, 2 passes.
    let (status, r) = call(
        &host,
        &trader,
        "PATCH",
        "/v1/limits",
        json!({ "max_order_quantity": "2" }),
    )
    .await?;
    assert_eq!(status, 200, "{r}");
    let refused = host.alert("default", "text/plain", "buy 3 AAPL at 100").await?.json();
    assert!(
        refused["orders"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("risk.max_order_quantity = 2"),
        "the API's limit decided: {refused}"
    );
    assert_eq!(refused["orders"][0]["outcome"], "rejected", "{refused}");
    let ok = host.alert("default", "text/plain", "buy 2 AAPL at 100").await?.json();
    assert_eq!(ok["orders"][0]["outcome"], "filled", "{ok}");
    // Back to the ceiling: allowed; past it or off: a trader may not.
    let (status, _) = call(
        &host,
        &trader,
        "PATCH",
        "/v1/limits",
        json!({ "max_order_quantity": ceiling }),
    )
    .await?;
    assert_eq!(status, 200);
    let (status, e) = call(
        &host,
        &trader,
        "PATCH",
        "/v1/limits",
        json!({ "max_order_quantity": null }),
    )
    .await?;
    assert_eq!(status, 403, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("ask an admin"));
    let (status, e) = call(
        &host,
        &trader,
        "PATCH",
        "/v1/limits",
        json!({ "max_order_quantity": "abc" }),
    )
    .await?;
    assert_eq!(status, 422, "{e}");
    // An admin may loosen; the change is audited with from and to.
    let admin = admin_token(&host)?;
    let (status, _) = call(
        &host,
        &admin,
        "PATCH",
        "/v1/limits",
        json!({ "max_orders_per_day": 100000 }),
    )
    .await?;
    assert_eq!(status, 200);
    let changes = host.audit(&Filter {
        action: Some("limits.changed".into()),
        ..Filter::default()
    })?;
    assert_eq!(changes.len(), 3);
    assert_eq!(changes[0].payload["changes"]["max_order_quantity"]["to"], "2");
    // Limits survive a restart.
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, AppOptions::default()).await?;
    assert_eq!(host.app.risk_limits().max_orders_per_day, Some(100_000));
    Ok(())
}

#[tokio::test]
async fn cloud_mode_users_roles_and_the_last_admin() -> anyhow::Result<()> {
    let host = HostBuilder::new().toml("[server]\nmode = \"cloud\"\n").start().await?;
    let admin = admin_token(&host)?;
    let (status, u) = call(
        &host,
        &admin,
        "POST",
        "/v1/users",
        json!({ "name": "alice", "role": "trader" }),
    )
    .await?;
    assert_eq!(status, 201, "{u}");
    let (status, _) = call(
        &host,
        &admin,
        "POST",
        "/v1/users",
        json!({ "name": "alice", "role": "viewer" }),
    )
    .await?;
    assert_eq!(status, 409);
    // A token for alice: not above her role.
    let (status, e) = call(
        &host,
        &admin,
        "POST",
        "/v1/tokens",
        json!({ "name": "a", "role": "admin", "user": "alice" }),
    )
    .await?;
    assert_eq!(status, 422, "{e}");
    let (status, t) = call(
        &host,
        &admin,
        "POST",
        "/v1/tokens",
        json!({ "name": "a", "role": "trader", "user": "alice" }),
    )
    .await?;
    assert_eq!(status, 201, "{t}");
    let alice = format!("Bearer {}", t["token"].as_str().unwrap());
    // Alice makes her own viewer token, may not make one for someone else,
    // and sees only her own tokens.
    let (status, own) = call(
        &host,
        &alice,
        "POST",
        "/v1/tokens",
        json!({ "name": "dash", "role": "viewer" }),
    )
    .await?;
    assert_eq!(status, 201, "{own}");
    let (status, _) = call(
        &host,
        &alice,
        "POST",
        "/v1/tokens",
        json!({ "name": "x", "role": "viewer", "user": "admin" }),
    )
    .await?;
    assert_eq!(status, 403);
    let (_, mine) = call(&host, &alice, "GET", "/v1/tokens", Value::Null).await?;
    assert!(mine.as_array().unwrap().iter().all(|t| t["owner"] == "alice"), "{mine}");
    assert_eq!(mine.as_array().unwrap().len(), 2);
    // Traders engage the kill switch but do not release it.
    let (status, _) = call(&host, &alice, "PUT", "/v1/kill-switch", json!({ "state": "on" })).await?;
    assert_eq!(status, 200);
    let (status, e) = call(&host, &alice, "PUT", "/v1/kill-switch", json!({ "state": "off" })).await?;
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("releasing it takes an admin")
    );
    let (status, _) = call(&host, &admin, "PUT", "/v1/kill-switch", json!({ "state": "off" })).await?;
    assert_eq!(status, 200);
    // Demote alice to viewer: her trader token is revoked at once, the
    // viewer one stays; disable her: every token stops.
    let (status, r) = call(&host, &admin, "PATCH", "/v1/users/alice", json!({ "role": "viewer" })).await?;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["revoked_tokens"].as_array().unwrap().len(), 1);
    assert_eq!(call(&host, &alice, "GET", "/v1/whoami", Value::Null).await?.0, 401);
    let dash = format!("Bearer {}", own["token"].as_str().unwrap());
    assert_eq!(call(&host, &dash, "GET", "/v1/whoami", Value::Null).await?.0, 200);
    call(&host, &admin, "PATCH", "/v1/users/alice", json!({ "disabled": true })).await?;
    let (status, e) = call(&host, &dash, "GET", "/v1/whoami", Value::Null).await?;
    assert_eq!(status, 401);
    assert!(e["error"]["message"].as_str().unwrap().contains("disabled"), "{e}");
    // The last admin cannot lock everyone out.
    let (status, e) = call(&host, &admin, "PATCH", "/v1/users/admin", json!({ "disabled": true })).await?;
    assert_eq!(status, 409, "{e}");
    let (_, users) = call(&host, &admin, "GET", "/v1/users", Value::Null).await?;
    assert_eq!(users.as_array().unwrap().len(), 2);
    Ok(())
}

#[tokio::test]
async fn local_mode_has_one_user_and_answers_admin_calls_only_from_loopback() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let admin = admin_token(&host)?;
    let (status, e) = call(
        &host,
        &admin,
        "POST",
        "/v1/users",
        json!({ "name": "bob", "role": "viewer" }),
    )
    .await?;
    assert_eq!(status, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("cloud"));
    // The choke point itself, as a request from another machine would
    // reach it.
    let mut headers = http::HeaderMap::new();
    headers.insert("authorization", admin.parse()?);
    let far: std::net::SocketAddr = "192.0.2.7:40000".parse()?;
    let err = algobanana::admin::authorize(&host.app, &headers, far, Endpoint::Whoami)
        .await
        .unwrap_err();
    assert_eq!(err.status, 403);
    assert!(err.message.contains("Local mode"), "{}", err.message);
    let near: std::net::SocketAddr = "127.0.0.1:40000".parse()?;
    algobanana::admin::authorize(&host.app, &headers, near, Endpoint::Whoami)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let denied = host.audit(&Filter {
        action: Some("auth.denied".into()),
        ..Filter::default()
    })?;
    assert!(denied.iter().any(|d| d.source_ip.as_deref() == Some("192.0.2.7")));
    Ok(())
}

#[tokio::test]
async fn cloud_mode_serves_https_and_refuses_plain_http_off_loopback() -> anyhow::Result<()> {
    // Plain HTTP on a non-loopback address in Cloud mode: refused at start.
    let err = HostBuilder::new()
        .toml("[server]\nmode = \"cloud\"\nlisten = \"0.0.0.0:8700\"\n")
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without HTTPS"), "{err}");

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (dir, _) = HostBuilder::new()
        .toml("[server]\nmode = \"cloud\"\ntls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n")
        .write()?;
    std::fs::create_dir_all(dir.path().join("tls"))?;
    std::fs::write(dir.path().join("tls/cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.path().join("tls/key.pem"), cert.signing_key.serialize_pem())?;
    let ca = dir.path().join("tls/cert.pem");
    let app = algobanana::app::App::open(dir.path(), AppOptions::default()).await?;
    let server = app.serve("127.0.0.1:0".parse()?).await?;
    assert!(server.https);
    let (token, _) = app.tokens.create("tls", "admin", Role::Admin, None)?;
    // The CLI's client, over TLS, trusting the self-signed certificate.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token)?;
    let client = algobanana::cli::client::ServerArgs {
        server: Some(format!("https://localhost:{}", server.addr.port())),
        token_file: Some(token_file.clone()),
        ca_cert: Some(ca),
    }
    .client()?
    .unwrap();
    let me = client.call("GET", "/v1/whoami", None).await?;
    assert_eq!(me["mode"], "cloud");
    assert_eq!(me["role"], "admin");
    // Without trusting the certificate: the handshake fails.
    let untrusted = algobanana::cli::client::ServerArgs {
        server: Some(format!("https://localhost:{}", server.addr.port())),
        token_file: Some(token_file),
        ca_cert: None,
    }
    .client()?
    .unwrap();
    let err = untrusted.call("GET", "/v1/whoami", None).await.unwrap_err();
    assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(server.addr).await?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await?;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
    server.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_admin_disables_a_plugin_and_every_call_to_it_is_refused() -> anyhow::Result<()> {
    let host = TestHost::start().await?;
    let admin = admin_token(&host)?;
    let (status, r) = call(&host, &admin, "POST", "/v1/plugins/paper/disable", Value::Null).await?;
    assert_eq!(status, 200, "{r}");
    let (_, list) = call(&host, &admin, "GET", "/v1/plugins", Value::Null).await?;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "paper" && p["disabled"] == true),
        "{list}"
    );
    // The webhook refuses the route's alerts (nothing stored)…
    let refused = host.alert("default", "text/plain", "buy 1 AAPL at 100").await?;
    assert_eq!(refused.status, 409);
    assert!(String::from_utf8_lossy(&refused.body).contains("/v1/plugins/paper/enable"));
    // …and the call path itself refuses, audited, whoever calls.
    let paper = host
        .app
        .registry
        .get(&algobanana::domain::ids::PluginName::new("paper")?)
        .unwrap();
    let err = host
        .app
        .registry
        .call_broker(
            &paper,
            algobanana::plugins::invoke::BrokerCall::Positions { settings: "{}".into() },
            &host.app.audit,
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disabled by an admin"), "{err}");
    let denied = host.audit(&Filter {
        action: Some("plugin.call".into()),
        outcome: Some("deny".into()),
        ..Filter::default()
    })?;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].payload["refused"], "plugin disabled");
    // A trader may not; it survives a restart; enabling restores service.
    host.app.users.create("desk", Role::Trader)?;
    let trader = format!(
        "Bearer {}",
        host.app.tokens.create("desk", "desk", Role::Trader, None)?.0
    );
    assert_eq!(
        call(&host, &trader, "POST", "/v1/plugins/paper/enable", Value::Null)
            .await?
            .0,
        403
    );
    let (dir, tokens) = host.stop().await;
    let host = TestHost::start_in(dir, tokens, AppOptions::default()).await?;
    assert_eq!(
        host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.status,
        409
    );
    let (status, _) = call(&host, &admin, "POST", "/v1/plugins/paper/enable", Value::Null).await?;
    assert_eq!(status, 200);
    assert_eq!(
        host.alert("default", "text/plain", "buy 1 AAPL at 100").await?.status,
        200
    );
    let (status, _) = call(&host, &admin, "POST", "/v1/plugins/nope/disable", Value::Null).await?;
    assert_eq!(status, 404);
    Ok(())
}
