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
    app: &App,
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
    let incoming = IncomingAlert {
        route: route_name.clone(),
        content_type,
        body: bytes.to_vec(),
        context: ctx.clone(),
    };
    let report = pipeline::process(app, route, incoming).await?;
    let status = match report.status {
        AlertStatus::Processed => StatusCode::OK,
        AlertStatus::RuleError => StatusCode::UNPROCESSABLE_ENTITY,
        AlertStatus::PluginFailed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Ok((status, Json(report)).into_response())
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
