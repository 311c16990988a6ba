//! The admin API under `/v1/`: API tokens ([`tokens`]), roles and the one
//! authorization table ([`rbac`]), and the endpoints below. Every request
//! is authenticated (bearer token) and authorized at one choke point
//! ([`authorize`]); every denial and every access is an audit event with
//! the token's id (never the token), request id, source IP and user agent.

pub mod rbac;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use self::rbac::{Endpoint, Role, allowed};
use self::tokens::{Refusal, TokenInfo};
use crate::app::App;
use crate::audit::query::Filter;
use crate::audit::{ActorKind, AuditEvent, Context, Outcome, action};
use crate::domain::ids::RequestId;
use crate::http::error::ApiError;
use crate::trading::risk::KillSwitch;

/// Every admin route: method, path, endpoint (the OpenAPI document and the
/// router are both made from this list, so nothing is routed without a
/// rule).
pub const ROUTES: &[(&str, &str, Endpoint, &str)] = &[
    (
        "get",
        "/v1/whoami",
        Endpoint::Whoami,
        "The calling token: id, name and role.",
    ),
    ("get", "/v1/openapi.json", Endpoint::OpenApi, "This document."),
    (
        "get",
        "/v1/kill-switch",
        Endpoint::KillSwitchRead,
        "The kill switch and who set it.",
    ),
    (
        "put",
        "/v1/kill-switch",
        Endpoint::KillSwitchSet,
        "Set the kill switch: {\"state\": \"on\"|\"reduce_only\"|\"off\", \"reason\": \"…\"}.",
    ),
    (
        "get",
        "/v1/orders",
        Endpoint::OrdersRead,
        "Orders and their states (?limit=).",
    ),
    (
        "get",
        "/v1/audit/events",
        Endpoint::AuditSearch,
        "Search the audit log (?action=&outcome=&alert=&request_id=&actor=&text=&since=&until=&limit=).",
    ),
    (
        "get",
        "/v1/audit/export",
        Endpoint::AuditExport,
        "Export the audit log (?format=jsonl|csv and the search filters); JSONL verifies offline.",
    ),
    (
        "get",
        "/v1/audit/verify",
        Endpoint::AuditVerify,
        "Verify the hash chain, checkpoints and keys.",
    ),
    (
        "get",
        "/v1/tokens",
        Endpoint::TokensRead,
        "API tokens (never their secrets).",
    ),
    (
        "post",
        "/v1/tokens",
        Endpoint::TokensCreate,
        "Create a token: {\"name\": \"…\", \"role\": \"admin\"|\"trader\"|\"viewer\"|\"auditor\", \"expires_in_s\": 86400}; the token is shown once.",
    ),
    (
        "delete",
        "/v1/tokens/{id}",
        Endpoint::TokensRevoke,
        "Revoke a token, with immediate effect.",
    ),
];

fn context(headers: &HeaderMap, peer: SocketAddr) -> Context {
    Context {
        request_id: Some(
            headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| RequestId::new(v).ok())
                .unwrap_or_else(RequestId::generate)
                .to_string(),
        ),
        correlation_id: None,
        session_id: None,
        source_ip: Some(peer.ip()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().filter(|c| !c.is_control()).take(256).collect()),
    }
}

fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        kind,
        message: message.into(),
    }
}

/// 422: the request itself is wrong; `message` says how to fix it.
fn invalid(message: impl Into<String>) -> ApiError {
    error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

/// Parses a JSON request body after the caller is authorized (so an
/// unauthenticated request is a 401, audited, whatever its body).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "the body is not what this endpoint takes ({e}); expected {expected}"
        ))
    })
}

/// 503 from a store failure.
fn state_unavailable(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", e.to_string())
}

/// 503 from an audit failure.
fn audit_unavailable(e: impl std::fmt::Display) -> ApiError {
    error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", e.to_string())
}

/// The choke point: authenticates the bearer token, decides with
/// [`allowed`], audits a denial. Returns the caller and the request context.
///
/// # Errors
/// 401 or 403 as an [`ApiError`], already audited.
pub async fn authorize(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    endpoint: Endpoint,
) -> Result<(TokenInfo, Context), ApiError> {
    let ctx = context(headers, peer);
    let deny = |actor: String, reason: &str| {
        AuditEvent::new(ActorKind::ApiToken, actor, action::AUTH_DENIED, Outcome::Deny)
            .resource(format!(
                "admin:{}",
                serde_json::to_value(endpoint)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            ))
            .context(&ctx)
            .payload(json!({ "endpoint": endpoint, "reason": reason }))
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        let _ = app.audit.record(deny("anonymous".into(), "no bearer token")).await;
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "this endpoint needs an API token: send `Authorization: Bearer abk_…` (`algobanana init` printed the first admin token)",
        ));
    };
    let verdict = app.tokens.authenticate(presented).map_err(state_unavailable)?;
    let token = match verdict {
        Ok(t) => t,
        Err(refusal) => {
            let (reason, message) = match refusal {
                Refusal::Unknown => (
                    "unknown token",
                    "the API token is not valid; check it, or ask an admin for a new one",
                ),
                Refusal::Expired => ("expired token", "the API token has expired; ask an admin for a new one"),
                Refusal::Revoked => ("revoked token", "the API token was revoked; ask an admin for a new one"),
            };
            // The presented value is never recorded: only its id part, which is not secret.
            let id = presented
                .strip_prefix(tokens::PREFIX)
                .and_then(|r| r.split_once('_'))
                .map_or_else(|| "unknown".to_owned(), |(id, _)| id.chars().take(32).collect());
            let _ = app.audit.record(deny(id, reason)).await;
            return Err(error(StatusCode::UNAUTHORIZED, "unauthenticated", message));
        }
    };
    if !allowed(token.role, endpoint) {
        let _ = app.audit.record(deny(token.id.clone(), "role")).await;
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "the `{}` role may not use this endpoint; ask an admin for a token with a role that may",
                token.role.as_str()
            ),
        ));
    }
    Ok((token, ctx))
}

async fn access(
    app: &App,
    token: &TokenInfo,
    ctx: &Context,
    endpoint: Endpoint,
    detail: Value,
) -> Result<(), ApiError> {
    app.audit
        .record(
            AuditEvent::new(
                ActorKind::ApiToken,
                token.id.clone(),
                action::ADMIN_ACCESS,
                Outcome::Allow,
            )
            .resource(format!(
                "admin:{}",
                serde_json::to_value(endpoint)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            ))
            .context(ctx)
            .payload(json!({ "endpoint": endpoint, "role": token.role, "detail": detail })),
        )
        .await
        .map(drop)
        .map_err(audit_unavailable)
}

type Peer = ConnectInfo<SocketAddr>;

/// `GET /v1/whoami`.
pub async fn whoami(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::Whoami).await?;
    access(&app, &token, &ctx, Endpoint::Whoami, Value::Null).await?;
    Ok(Json(json!({ "id": token.id, "name": token.name, "role": token.role })).into_response())
}

/// The OpenAPI document, made from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, endpoint, summary) in ROUTES {
        let roles: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| allowed(**r, *endpoint))
            .map(|r| r.as_str())
            .collect();
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        entry[*method] = json!({
            "operationId": endpoint, "summary": summary, "x-roles": roles,
            "security": [{ "bearer": [] }],
            "responses": { "200": { "description": "OK" }, "401": { "description": "no or invalid token" }, "403": { "description": "the role may not" } },
        });
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "algobanana admin API", "version": env!("CARGO_PKG_VERSION") },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "abk_ API token" } } },
        "paths": paths,
    })
}

/// `GET /v1/openapi.json`.
pub async fn openapi(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::OpenApi).await?;
    access(&app, &token, &ctx, Endpoint::OpenApi, Value::Null).await?;
    Ok(Json(openapi_document()).into_response())
}

/// `GET /v1/kill-switch`.
pub async fn kill_switch_read(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::KillSwitchRead).await?;
    access(&app, &token, &ctx, Endpoint::KillSwitchRead, Value::Null).await?;
    let row = app
        .state
        .control(crate::trading::KILL_SWITCH)
        .map_err(state_unavailable)?;
    Ok(Json(match row {
        None => json!({ "state": "off", "set_by": null, "at": null }),
        Some((v, actor, at)) => json!({ "state": v, "set_by": actor, "at": crate::audit::format_ts(at) }),
    })
    .into_response())
}

/// Body of `PUT /v1/kill-switch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchBody {
    state: String,
    #[serde(default)]
    reason: String,
}

/// `PUT /v1/kill-switch`.
pub async fn kill_switch_set(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::KillSwitchSet).await?;
    let body: KillSwitchBody = json_body(&body, "{\"state\": \"on\"|\"reduce_only\"|\"off\", \"reason\": \"…\"}")?;
    let Some(to) = KillSwitch::parse(&body.state) else {
        return Err(invalid(format!(
            "`{}` is not a kill switch state; expected on, reduce_only or off",
            body.state
        )));
    };
    let from = crate::trading::kill::set(
        &app.state,
        &app.audit,
        to,
        ActorKind::ApiToken,
        &token.id,
        &ctx,
        &body.reason,
    )
    .await
    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "state_unavailable", format!("{e:#}")))?;
    Ok(Json(json!({ "state": to.as_str(), "previous": from.as_str() })).into_response())
}

/// `?limit=`.
#[derive(Debug, Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

/// `GET /v1/orders`.
pub async fn orders(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::OrdersRead).await?;
    access(&app, &token, &ctx, Endpoint::OrdersRead, Value::Null).await?;
    let rows = app
        .orders
        .all(q.limit.unwrap_or(500).min(10_000))
        .map_err(state_unavailable)?;
    Ok(Json(rows).into_response())
}

/// Audit filters as query parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    action: Option<String>,
    outcome: Option<String>,
    actor: Option<String>,
    actor_kind: Option<String>,
    alert: Option<String>,
    request_id: Option<String>,
    text: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    format: Option<String>,
}

fn time(t: Option<&str>, key: &str) -> Result<Option<i64>, ApiError> {
    t.map(|t| {
        t.parse::<jiff::Timestamp>()
            .map(|ts| i64::try_from(ts.as_nanosecond()).unwrap_or(i64::MAX))
            .map_err(|e| invalid(format!("`{key}`: {e}; expected RFC 3339 such as 2026-12-04T00:00:00Z")))
    })
    .transpose()
}

fn filter(q: &AuditQuery) -> Result<Filter, ApiError> {
    Ok(Filter {
        since_ns: time(q.since.as_deref(), "since")?,
        until_ns: time(q.until.as_deref(), "until")?,
        actor_kind: q.actor_kind.clone(),
        actor_id: q.actor.clone(),
        action: q.action.clone(),
        outcome: q.outcome.clone(),
        correlation_id: q.alert.clone(),
        request_id: q.request_id.clone(),
        text: q.text.clone(),
        after_seq: None,
        through_seq: None,
        limit: Some(q.limit.unwrap_or(1000).min(100_000)),
    })
}

/// `GET /v1/audit/events`.
pub async fn audit_search(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditSearch).await?;
    let f = filter(&q)?;
    access(
        &app,
        &token,
        &ctx,
        Endpoint::AuditSearch,
        json!({ "filter": format!("{f:?}") }),
    )
    .await?;
    let rows = crate::audit::query::search(app.audit.path(), &f).map_err(|e| invalid(e.to_string()))?;
    Ok(Json(rows).into_response())
}

/// `GET /v1/audit/export`.
pub async fn audit_export(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditExport).await?;
    let format = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => crate::audit::export::Format::Jsonl,
        "csv" => crate::audit::export::Format::Csv,
        other => {
            return Err(invalid(format!("format `{other}`: expected jsonl or csv")));
        }
    };
    let mut f = filter(&q)?;
    if q.limit.is_none() {
        f.limit = None;
    }
    access(&app, &token, &ctx, Endpoint::AuditExport, json!({ "format": q.format })).await?;
    let conn = crate::audit::query::open_read_only(app.audit.path()).map_err(audit_unavailable)?;
    let mut out = Vec::new();
    crate::audit::export::export(&conn, &f, format, &mut out)
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", format!("{e:#}")))?;
    let ct = if format == crate::audit::export::Format::Csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    Ok(([(header::CONTENT_TYPE, ct)], out).into_response())
}

/// `GET /v1/audit/verify`.
pub async fn audit_verify(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditVerify).await?;
    access(&app, &token, &ctx, Endpoint::AuditVerify, Value::Null).await?;
    let report = crate::audit::verify::verify_db(app.audit.path(), &[], &crate::audit::verify::Options::default())
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", e))?;
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    v["result"] = json!(if report.intact() { "intact" } else { "tampered" });
    Ok(Json(v).into_response())
}

/// `GET /v1/tokens`.
pub async fn tokens_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::TokensRead).await?;
    access(&app, &token, &ctx, Endpoint::TokensRead, Value::Null).await?;
    let list = app.tokens.list().map_err(state_unavailable)?;
    Ok(Json(list).into_response())
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: String,
    expires_in_s: Option<u64>,
}

/// `POST /v1/tokens`.
pub async fn tokens_create(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::TokensCreate).await?;
    let body: NewToken = json_body(
        &body,
        "{\"name\": \"…\", \"role\": \"admin|trader|viewer|auditor\", \"expires_in_s\": 86400}",
    )?;
    let Some(role) = Role::parse(&body.role) else {
        return Err(invalid(format!(
            "role `{}`: expected admin, trader, viewer or auditor",
            body.role
        )));
    };
    if body.name.trim().is_empty() || body.name.len() > 64 {
        return Err(invalid("name: 1–64 characters"));
    }
    let expires = body.expires_in_s.map(|s| {
        crate::audit::now_ns().saturating_add(i64::try_from(s).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000_000))
    });
    let (secret, info) = app
        .tokens
        .create(&body.name, role, expires)
        .map_err(state_unavailable)?;
    app.audit
        .record(
            AuditEvent::new(
                ActorKind::ApiToken,
                token.id.clone(),
                action::TOKEN_CREATED,
                Outcome::Success,
            )
            .resource(format!("token:{}", info.id))
            .context(&ctx)
            .payload(json!({ "token": info })),
        )
        .await
        .map_err(audit_unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": secret, "info": info, "note": "shown only now; store it somewhere safe" })),
    )
        .into_response())
}

/// `DELETE /v1/tokens/{id}`.
pub async fn tokens_revoke(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::TokensRevoke).await?;
    app.audit
        .record(
            AuditEvent::new(
                ActorKind::ApiToken,
                token.id.clone(),
                action::TOKEN_REVOKED,
                Outcome::Success,
            )
            .resource(format!("token:{id}"))
            .context(&ctx)
            .payload(json!({ "revoked": id })),
        )
        .await
        .map_err(audit_unavailable)?;
    let found = app.tokens.revoke(&id).map_err(state_unavailable)?;
    if found {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no token `{id}`"),
        ))
    }
}
