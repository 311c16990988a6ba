//! Webhook ingress and health.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::app::App;
use crate::audit::{ActorKind, AuditEvent, Context, Outcome, action};
use crate::domain::ids::RequestId;
use crate::pipeline::{self, AlertStatus, IncomingAlert};

/// The request-id header, accepted from callers when valid and echoed back.
pub const REQUEST_ID: &str = "x-request-id";

/// 256 characters of `User-Agent` are kept.
const MAX_USER_AGENT: usize = 256;

fn context(headers: &HeaderMap, peer: SocketAddr, proxies: &[crate::config::Cidr]) -> Context {
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::new(v).ok())
        .unwrap_or_else(RequestId::generate);
    Context {
        request_id: Some(request_id.to_string()),
        correlation_id: None,
        session_id: None,
        source_ip: super::client_ip(Some(peer.ip()), headers, proxies),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT).collect()),
    }
}

fn with_request_id(mut response: Response, ctx: &Context) -> Response {
    if let Some(id) = ctx.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

/// `POST /v1/hooks/{token}`: authenticate by token, read the body under the
/// cap, run the route's pipeline.
pub async fn receive(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = context(&headers, peer, &app.config.server.trusted_proxies);
    let response = match receive_inner(&app, &ctx, peer, &token, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    with_request_id(response, &ctx)
}

async fn reject(app: &App, ctx: &Context, route: Option<&str>, reason: &str, status: u16) {
    let event = AuditEvent::new(
        ActorKind::WebhookSource,
        route.unwrap_or("unknown"),
        action::ALERT_REJECTED,
        Outcome::Deny,
    )
    .resource(route.map_or_else(|| "route:unknown".to_owned(), |r| format!("route:{r}")))
    .context(ctx)
    .payload(json!({ "reason": reason, "status": status }));
    if let Err(e) = app.record_refusal(event, status, reason).await {
        tracing::error!(error = %e, "cannot audit a rejected webhook");
    }
}

async fn receive_inner(
    app: &Arc<App>,
    ctx: &Context,
    peer: SocketAddr,
    token: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some(reason) = app.audit.halted() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "audit_unavailable",
            message: format!(
                "alerts are refused because the audit log is halted ({reason}); fix the cause and restart algobanana"
            ),
        });
    }
    if let Some(reason) = app.state.halted() {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "state_unavailable",
            message: format!("alerts are refused because {reason}"),
        });
    }
    let Some((route_name, route)) = app.route_for_token(token) else {
        // The presented token is never recorded: it may be a near-miss of a real one.
        reject(app, ctx, None, "unknown hook token", 404).await;
        return Err(ApiError::not_found());
    };
    // Guards beyond the token, cheapest first.
    let g = &route.guard;
    // The route's own proxies add to the server's.
    let source = if g.trusted_proxies.is_empty() {
        ctx.source_ip
    } else {
        let proxies: Vec<crate::config::Cidr> = app
            .config
            .server
            .trusted_proxies
            .iter()
            .chain(&g.trusted_proxies)
            .cloned()
            .collect();
        super::client_ip(Some(peer.ip()), headers, &proxies)
    };
    let mut ctx = ctx.clone();
    ctx.source_ip = source;
    let ctx = &ctx;
    if let Some(allowed) = &g.allowed_ips
        && !source.is_some_and(|ip| allowed.iter().any(|c| c.contains(ip)))
    {
        let shown = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        reject(
            app,
            ctx,
            Some(route_name.as_str()),
            &format!("source {shown} not allowed"),
            403,
        )
        .await;
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            kind: "forbidden_source",
            message: format!(
                "alerts from {shown} are not accepted on this hook; add the address to the route's allowed_ips (behind a proxy, list the proxy in trusted_proxies)"
            ),
        });
    }
    if let Some(per_minute) = g.rate_limit_per_minute
        && !app.hook_limits.allow(route_name.as_str(), per_minute)
    {
        reject(app, ctx, Some(route_name.as_str()), "rate limit", 429).await;
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limited",
            message: format!(
                "more than {per_minute} alerts in the last minute on this hook; wait, or raise the route's rate_limit_per_minute"
            ),
        });
    }
    let cap = app.config.server.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        reject(
            app,
            ctx,
            Some(route_name.as_str()),
            &format!("body of {} bytes over the {cap}-byte cap", declared.unwrap_or(0)),
            413,
        )
        .await;
        return Err(ApiError::too_large(cap));
    }
    let bytes = match axum::body::to_bytes(body, cap).await {
        Ok(b) => b,
        Err(_) => {
            reject(
                app,
                ctx,
                Some(route_name.as_str()),
                &format!("body over the {cap}-byte cap (or the connection failed while reading)"),
                413,
            )
            .await;
            return Err(ApiError::too_large(cap));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if let Some(secret) = &g.signature_secret
        && let Err(why) = check_signature(app, secret, headers, &bytes)
    {
        reject(app, ctx, Some(route_name.as_str()), &format!("signature: {why}"), 401).await;
        return Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "bad_signature",
            message: format!(
                "{why}; sign as X-Algobanana-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">"
            ),
        });
    }
    let bytes = match &g.passphrase_secret {
        None => bytes,
        Some(secret) => match strip_passphrase(app, secret, &bytes) {
            Ok(stripped) => stripped.into(),
            Err(why) => {
                reject(app, ctx, Some(route_name.as_str()), &format!("passphrase: {why}"), 401).await;
                return Err(ApiError {
                    status: StatusCode::UNAUTHORIZED,
                    kind: "bad_passphrase",
                    message: format!("{why}; send the route's passphrase as the JSON field \"passphrase\""),
                });
            }
        },
    };
    if let Some(response) = kill_switch_action(app, ctx, route_name.as_str(), &bytes).await? {
        return Ok(response);
    }
    // A paused route takes no alerts (a webhook kill switch still works).
    if app.routes.is_paused(route_name) {
        reject(app, ctx, Some(route_name.as_str()), "route paused", 409).await;
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "route_paused",
            message: format!(
                "route `{route_name}` is paused, so this alert was not taken; resume it with POST /v1/routes/{route_name}/resume"
            ),
        });
    }
    // A disabled (revoked) rule or broker takes no alerts either.
    if let Some(p) = [&route.rule, &route.broker]
        .into_iter()
        .find(|p| app.registry.is_disabled(p))
    {
        reject(
            app,
            ctx,
            Some(route_name.as_str()),
            &format!("plugin {p} disabled"),
            409,
        )
        .await;
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            kind: "plugin_disabled",
            message: format!(
                "route `{route_name}` uses plugin `{p}`, which an admin disabled, so this alert was not taken; enable it with POST /v1/plugins/{p}/enable"
            ),
        });
    }
    // The intake queue is bounded: past `server.max_pending_alerts` alerts
    // accepted and not yet finished, a new one is refused before it is
    // recorded, so a burst cannot grow the backlog without limit. Nothing
    // acknowledged is dropped: a 2xx means recorded. Checked after the
    // kill-switch action, which must work however full the queue is.
    let Ok(permit) = app.intake.clone().try_acquire_owned() else {
        let max = app.config.server.max_pending_alerts;
        reject(app, ctx, Some(route_name.as_str()), "intake queue full", 503).await;
        let mut response = ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "overloaded",
            message: format!(
                "{max} alerts are already waiting to be processed (server.max_pending_alerts), so this one was not taken; send it again after the Retry-After delay"
            ),
        }
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return Ok(response);
    };
    let incoming = IncomingAlert {
        route: route_name.clone(),
        content_type,
        body: bytes.to_vec(),
        context: ctx.clone(),
    };
    // Durable first: once accepted, the alert is never lost.
    let (accepted, intake) = pipeline::accept(app, &incoming).await?;
    let alert_id = accepted.alert_id;
    let request_id = accepted.ctx.request_id.clone();
    let budget = app.config.trading.response_budget;
    let task = {
        let app = app.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let report = pipeline::run(&app, &route, accepted, incoming).await;
            // The alert leaves the intake queue when it is finished, also
            // when that is after its 202. (Its notifications were queued
            // with its finish: `pipeline::finish`.)
            drop(permit);
            report
        })
    };
    match tokio::time::timeout(budget, task).await {
        Ok(Ok(report)) => {
            let report = report?;
            let status = match report.status {
                AlertStatus::Processed => StatusCode::OK,
                AlertStatus::RuleError => StatusCode::UNPROCESSABLE_ENTITY,
                AlertStatus::PluginFailed => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Ok((status, Json(report)).into_response())
        }
        Ok(Err(join)) => {
            intake.committed().await.map_err(pipeline::PipelineError::from)?;
            Err(ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "internal",
                message: format!("processing alert {alert_id} failed ({join}); it is recorded and resumes on restart"),
            })
        }
        // Still running: it finishes in the background (and resumes after a
        // crash); the sender gets its answer within its timeout, once the
        // intake is committed (a report above implies it: see `accept`).
        Err(_) => {
            intake.committed().await.map_err(pipeline::PipelineError::from)?;
            Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "alert_id": alert_id, "request_id": request_id, "route": route_name, "status": "processing",
                "message": format!("accepted and recorded; still processing after {} ms; its result: GET /v1/alerts/{alert_id} (admin API), or `algobanana audit search --alert {alert_id}`", budget.as_millis()),
            })),
        )
            .into_response())
        }
    }
}

fn secret_value(app: &App, name: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    app.registry.secrets.value(name)
}

/// Checks `X-Algobanana-Signature: t=…,v1=…` within 300 s, once.
fn check_signature(app: &App, secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    use hmac::Mac as _;
    let header = headers
        .get("x-algobanana-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Algobanana-Signature header")?;
    let (mut t, mut v1) = (None, None);
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err("the signature header is malformed".into());
    };
    let now = crate::audit::now_ns() / 1_000_000_000;
    if (now - t).abs() > SIGNATURE_WINDOW_S {
        return Err(format!(
            "the signature is {} s from now; the window is {SIGNATURE_WINDOW_S} s",
            (now - t).abs()
        ));
    }
    let key = secret_value(app, secret)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&v1)
        .map_err(|_| "the signature does not match".to_owned())?;
    if !app.hook_limits.first_use(&v1, t + SIGNATURE_WINDOW_S) {
        return Err("this signature was already used (replay)".into());
    }
    Ok(())
}

/// The window of `X-Algobanana-Signature` timestamps.
pub const SIGNATURE_WINDOW_S: i64 = 300;

/// Checks and removes the body's `passphrase`.
fn strip_passphrase(app: &App, secret: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Err("the body is not a JSON object with a passphrase".into());
    };
    let Some(serde_json::Value::String(given)) = m.remove("passphrase") else {
        return Err("the body has no passphrase".into());
    };
    let expected = secret_value(app, secret)?;
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err("the passphrase is wrong".into());
    }
    serde_json::to_vec(&serde_json::Value::Object(m)).map_err(|e| e.to_string())
}

/// `{"kill_switch": "on" | "reduce_only", "reason": "…"}` on an
/// authenticated hook throws the kill switch. Releasing it (`off`) is not a
/// webhook action: it needs the command line (or the admin API).
async fn kill_switch_action(
    app: &Arc<App>,
    ctx: &Context,
    route: &str,
    body: &[u8],
) -> Result<Option<Response>, ApiError> {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    let Some(to) = m.get("kill_switch") else {
        return Ok(None);
    };
    if m.keys().any(|k| k != "kill_switch" && k != "reason") {
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "invalid_alert",
            message: "a kill-switch action has only `kill_switch` and an optional `reason`".into(),
        });
    }
    let to = match to.as_str().and_then(crate::trading::risk::KillSwitch::parse) {
        Some(k @ (crate::trading::risk::KillSwitch::On | crate::trading::risk::KillSwitch::ReduceOnly)) => k,
        _ => {
            return Err(ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                kind: "invalid_alert",
                message: "`kill_switch` can be \"on\" or \"reduce_only\" from a webhook; turning it off needs `algobanana kill-switch off`".into(),
            });
        }
    };
    let reason = m
        .get("reason")
        .and_then(|r| r.as_str())
        .unwrap_or("webhook")
        .chars()
        .take(256)
        .collect::<String>();
    // A webhook throws it and never loosens it: `reduce_only` while it is
    // `on` changes nothing (and says so).
    let (from, changed) = crate::trading::kill::escalate(
        &app.state,
        &app.audit,
        to,
        ActorKind::WebhookSource,
        route,
        ctx,
        &reason,
    )
    .await
    .map_err(|e| ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "state_unavailable",
        message: format!("the kill switch could not be set: {e:#}"),
    })?;
    if !changed {
        return Ok(Some(
            (
                StatusCode::OK,
                Json(json!({
                    "kill_switch": from.as_str(), "previous": from.as_str(),
                    "unchanged": format!(
                        "the kill switch is {} already, at least as strict as {}; a webhook cannot loosen it (use `algobanana kill-switch` or the admin API)",
                        from.as_str(), to.as_str()
                    ),
                })),
            )
                .into_response(),
        ));
    }
    crate::trading::notify::kill_switch(app, from, to, &format!("route {route}"), route, &reason, ctx);
    Ok(Some(
        (
            StatusCode::OK,
            Json(json!({ "kill_switch": to.as_str(), "previous": from.as_str() })),
        )
            .into_response(),
    ))
}

/// `GET /healthz`: 200 when serving, 503 with the reason when halted.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    match app.halted() {
        None => (
            StatusCode::OK,
            Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })),
        )
            .into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "halted", "reason": reason, "version": env!("CARGO_PKG_VERSION") })),
        )
            .into_response(),
    }
}

/// Any other path.
pub async fn not_found() -> Response {
    ApiError::not_found().into_response()
}
