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

fn context(headers: &HeaderMap, peer: SocketAddr) -> Context {
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::new(v).ok())
        .unwrap_or_else(RequestId::generate);
    Context {
        request_id: Some(request_id.to_string()),
        correlation_id: None,
        session_id: None,
        source_ip: Some(peer.ip()),
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
    let ctx = context(&headers, peer);
    let response = match receive_inner(&app, &ctx, &token, &headers, body).await {
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
    if let Err(e) = app.audit.record(event).await {
        tracing::error!(error = %e, "cannot audit a rejected webhook");
    }
}

async fn receive_inner(
    app: &Arc<App>,
    ctx: &Context,
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
    if let Some(response) = kill_switch_action(app, ctx, route_name.as_str(), &bytes).await? {
        return Ok(response);
    }
    let incoming = IncomingAlert {
        route: route_name.clone(),
        content_type,
        body: bytes.to_vec(),
        context: ctx.clone(),
    };
    // Durable first: once accepted, the alert is never lost.
    let accepted = pipeline::accept(app, &incoming).await?;
    let alert_id = accepted.alert_id;
    let request_id = accepted.ctx.request_id.clone();
    let budget = app.config.trading.response_budget;
    let task = {
        let app = app.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let ctx = accepted.ctx.clone();
            let report = pipeline::run(&app, &route, accepted, incoming).await;
            if let Ok(r) = &report {
                crate::trading::notify::spawn(&app, crate::trading::notify::of_report(r), ctx);
            }
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
        Ok(Err(join)) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: format!(
                "processing alert {alert_id} failed ({join}); it is recorded and resumes on restart"
            ),
        }),
        // Still running: it finishes in the background (and resumes after a
        // crash); the sender gets its answer within its timeout.
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "alert_id": alert_id, "request_id": request_id, "route": route_name, "status": "processing",
                "message": format!("accepted and recorded; still processing after {} ms, see `algobanana audit search --alert {alert_id}`", budget.as_millis()),
            })),
        )
            .into_response()),
    }
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
    let from = crate::trading::kill::set(
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
    crate::trading::notify::spawn(
        app,
        vec![crate::plugins::bindings::types::Notification {
            kind: crate::plugins::bindings::types::NotificationKind::KillSwitch,
            route: route.to_owned(),
            alert_id: String::new(),
            client_order_id: None,
            symbol: None,
            summary: format!(
                "Kill switch {} → {} from route {route}: {reason}",
                from.as_str(),
                to.as_str()
            ),
            details: json!({ "from": from.as_str(), "to": to.as_str(), "reason": reason }).to_string(),
            at: u64::try_from(crate::audit::now_ns()).unwrap_or(0),
        }],
        ctx.clone(),
    );
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
