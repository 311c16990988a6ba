//! The admin API under `/v1/`: API tokens ([`tokens`]), roles and the one
//! authorization table ([`rbac`]), and the endpoints below. Every request
//! is authenticated (bearer token) and authorized at one choke point
//! ([`authorize`]); every denial and every access is an audit event with
//! the token's id (never the token), request id, source IP and user agent.

pub mod limits;
pub mod rbac;
mod resources;
pub mod routes;
pub mod tokens;
pub mod users;

pub use resources::*;

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

/// One admin route: method, path, endpoint, summary, the JSON schema of its
/// body and its query parameters (name, JSON type). The OpenAPI document is
/// made from this list and the router serves exactly these, so nothing is
/// routed without a rule.
#[derive(Debug, Clone, Copy)]
pub struct AdminRoute {
    /// `get`, `post`, `put`, `patch` or `delete`.
    pub method: &'static str,
    /// The path, with `{param}`s.
    pub path: &'static str,
    /// Its endpoint (and so its rule).
    pub endpoint: Endpoint,
    /// What it does.
    pub summary: &'static str,
    /// JSON schema of the request body, if it takes one.
    pub body: Option<&'static str>,
    /// Query parameters: name and JSON type.
    pub query: &'static [(&'static str, &'static str)],
}

const fn r(
    method: &'static str,
    path: &'static str,
    endpoint: Endpoint,
    summary: &'static str,
    body: Option<&'static str>,
    query: &'static [(&'static str, &'static str)],
) -> AdminRoute {
    AdminRoute {
        method,
        path,
        endpoint,
        summary,
        body,
        query,
    }
}

const AUDIT_QUERY: &[(&str, &str)] = &[
    ("action", "string"),
    ("outcome", "string"),
    ("actor", "string"),
    ("actor_kind", "string"),
    ("alert", "string"),
    ("request_id", "string"),
    ("text", "string"),
    ("since", "string"),
    ("until", "string"),
    ("limit", "integer"),
];

/// Every admin route.
pub const ROUTES: &[AdminRoute] = &[
    r(
        "get",
        "/v1/whoami",
        Endpoint::Whoami,
        "The calling token: id, name, user and role.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/openapi.json",
        Endpoint::OpenApi,
        "This document.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/kill-switch",
        Endpoint::KillSwitchRead,
        "The kill switch and who set it.",
        None,
        &[],
    ),
    r(
        "put",
        "/v1/kill-switch",
        Endpoint::KillSwitchSet,
        "Set the kill switch. Traders may engage it (on, reduce_only); releasing it (off) takes an admin.",
        Some(
            r#"{"type":"object","required":["state"],"additionalProperties":false,"properties":{"state":{"type":"string","enum":["on","reduce_only","off"]},"reason":{"type":"string"}}}"#,
        ),
        &[],
    ),
    r(
        "get",
        "/v1/orders",
        Endpoint::OrdersRead,
        "Orders, newest first: state (or `working`: handed to a broker and not final), route, account; `before` an id to page back. An alert's orders: its `result` in /v1/alerts.",
        None,
        &[
            ("limit", "integer"),
            ("state", "string"),
            ("route", "string"),
            ("account", "string"),
            ("before", "integer"),
        ],
    ),
    r(
        "get",
        "/v1/alerts",
        Endpoint::AlertsRead,
        "Received alerts, newest first (secrets stripped before storage): route, status (received, processed, failed); `before` an id to page back.",
        None,
        &[
            ("limit", "integer"),
            ("route", "string"),
            ("status", "string"),
            ("before", "string"),
        ],
    ),
    r(
        "get",
        "/v1/alerts/{id}",
        Endpoint::AlertsRead,
        "One alert: its body, status and result with its orders (what a 202 answer's alert id leads to).",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/routes",
        Endpoint::RoutesRead,
        "Routes: rule, broker, accounts, guards, paused, hook tokens (never the tokens).",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/routes/{name}/pause",
        Endpoint::RoutesOperate,
        "Pause a route: its alerts are refused (409) and not stored.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/routes/{name}/resume",
        Endpoint::RoutesOperate,
        "Resume a paused route.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/routes/{name}/hook-token",
        Endpoint::RoutesOperate,
        "Rotate the route's hook token: the new token is shown once; older tokens keep working for overlap_s (default 86400, 0 ends them now).",
        Some(
            r#"{"type":"object","additionalProperties":false,"properties":{"overlap_s":{"type":"integer","minimum":0,"maximum":2592000}}}"#,
        ),
        &[],
    ),
    r(
        "get",
        "/v1/plugins",
        Endpoint::PluginsRead,
        "Loaded plugins: version, digest, world, grant and manifest.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/plugins/{name}/disable",
        Endpoint::PluginsManage,
        "Disable a plugin (revoke its grant at once): every call to it is refused and audited until it is enabled.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/plugins/{name}/enable",
        Endpoint::PluginsManage,
        "Enable a disabled plugin.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/limits",
        Endpoint::LimitsRead,
        "Risk limits in force, and the config's (the ceiling for traders).",
        None,
        &[],
    ),
    r(
        "patch",
        "/v1/limits",
        Endpoint::LimitsWrite,
        "Change risk rails: decimal strings, whole numbers or null (off). Traders may tighten, and loosen only up to the config's value.",
        Some(
            r#"{"type":"object","additionalProperties":false,"minProperties":1,"properties":{"symbols":{"type":["array","null"],"items":{"type":"string"}},"max_order_quantity":{"type":["string","null"]},"max_order_notional":{"type":["string","null"]},"max_position":{"type":["string","null"]},"price_band_pct":{"type":["string","null"]},"max_daily_loss":{"type":["string","null"]},"max_orders_per_minute":{"type":["integer","null"],"minimum":1},"max_orders_per_day":{"type":["integer","null"],"minimum":1}}}"#,
        ),
        &[],
    ),
    r(
        "get",
        "/v1/secrets",
        Endpoint::SecretsRead,
        "Secret names, where each comes from and its version; never a value.",
        None,
        &[],
    ),
    r(
        "put",
        "/v1/secrets/{name}",
        Endpoint::SecretsWrite,
        "Set or replace a secret in the vault (write-only).",
        Some(
            r#"{"type":"object","required":["value"],"additionalProperties":false,"properties":{"value":{"type":"string","minLength":1}}}"#,
        ),
        &[],
    ),
    r(
        "delete",
        "/v1/secrets/{name}",
        Endpoint::SecretsWrite,
        "Delete a secret from the vault.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/audit/events",
        Endpoint::AuditSearch,
        "Search the audit log.",
        None,
        AUDIT_QUERY,
    ),
    r(
        "get",
        "/v1/audit/export",
        Endpoint::AuditExport,
        "Export the audit log (format=jsonl|csv and the search filters); JSONL verifies offline.",
        None,
        &[
            ("format", "string"),
            ("action", "string"),
            ("since", "string"),
            ("until", "string"),
            ("limit", "integer"),
        ],
    ),
    r(
        "get",
        "/v1/audit/verify",
        Endpoint::AuditVerify,
        "Verify the hash chain, checkpoints and keys.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/tokens",
        Endpoint::TokensRead,
        "API tokens (never their secrets); traders see their own.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/tokens",
        Endpoint::TokensCreate,
        "Create a token, shown once. Traders create their own, with role trader or viewer; admins for any user.",
        Some(
            r#"{"type":"object","required":["name","role"],"additionalProperties":false,"properties":{"name":{"type":"string","minLength":1,"maxLength":64},"role":{"type":"string","enum":["admin","trader","viewer","auditor"]},"user":{"type":"string"},"expires_in_s":{"type":"integer","minimum":1}}}"#,
        ),
        &[],
    ),
    r(
        "delete",
        "/v1/tokens/{id}",
        Endpoint::TokensRevoke,
        "Revoke a token, with immediate effect; traders their own.",
        None,
        &[],
    ),
    r(
        "get",
        "/v1/users",
        Endpoint::UsersRead,
        "Users and their roles.",
        None,
        &[],
    ),
    r(
        "post",
        "/v1/users",
        Endpoint::UsersWrite,
        "Create a user (Cloud mode); then create a token for it.",
        Some(
            r#"{"type":"object","required":["name","role"],"additionalProperties":false,"properties":{"name":{"type":"string","minLength":1,"maxLength":64},"role":{"type":"string","enum":["admin","trader","viewer","auditor"]}}}"#,
        ),
        &[],
    ),
    r(
        "patch",
        "/v1/users/{name}",
        Endpoint::UsersWrite,
        "Change a user's role or disable it (its tokens stop at once; tokens above the new role are revoked).",
        Some(
            r#"{"type":"object","additionalProperties":false,"minProperties":1,"properties":{"role":{"type":"string","enum":["admin","trader","viewer","auditor"]},"disabled":{"type":"boolean"}}}"#,
        ),
        &[],
    ),
];

fn context(headers: &HeaderMap, peer: SocketAddr, proxies: &[crate::config::Cidr]) -> Context {
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
        source_ip: crate::http::client_ip(Some(peer.ip()), headers, proxies),
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
    let ctx = context(headers, peer, &app.config.server.trusted_proxies);
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
    // Through a trusted proxy on this machine, the client must be local too.
    let local = peer.ip().is_loopback() && ctx.source_ip.is_some_and(|ip| ip.is_loopback());
    if app.config.server.mode == crate::config::Mode::Local && !local {
        let reason = "local mode: admin API from a non-loopback address";
        let _ = app.record_refusal(deny("anonymous".into(), reason), 403, reason).await;
        return Err(error(
            StatusCode::FORBIDDEN,
            "local_mode",
            "in Local mode the admin API answers only on this machine (loopback); use it from the host, or set server.mode = \"cloud\" with HTTPS",
        ));
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        let _ = app
            .record_refusal(deny("anonymous".into(), "no bearer token"), 401, "no bearer token")
            .await;
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
                Refusal::Disabled => (
                    "disabled user",
                    "the user this API token belongs to is disabled; ask an admin",
                ),
            };
            // The presented value is never recorded: only its id part, which is not secret.
            let id = presented
                .strip_prefix(tokens::PREFIX)
                .and_then(|r| r.split_once('_'))
                .map_or_else(|| "unknown".to_owned(), |(id, _)| id.chars().take(32).collect());
            // Throttled per source (`audit::throttle`): a token that does
            // not authenticate proves nothing, and anyone can send one.
            let _ = app.record_refusal(deny(id, reason), 401, reason).await;
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

pub(crate) async fn access(
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

/// [`authorize`] then [`access`]: the prelude of every handler that needs
/// nothing from the body before it records the access.
async fn guard(
    app: &App,
    headers: &HeaderMap,
    peer: SocketAddr,
    endpoint: Endpoint,
    detail: Value,
) -> Result<(TokenInfo, Context), ApiError> {
    let (token, ctx) = authorize(app, headers, peer, endpoint).await?;
    access(app, &token, &ctx, endpoint, detail).await?;
    Ok((token, ctx))
}

/// Records an admin change by `token` (before the change is made: a change
/// that cannot be audited is not made).
async fn record_change(
    app: &App,
    token: &TokenInfo,
    ctx: &Context,
    action: &'static str,
    resource: impl Into<String>,
    payload: Value,
) -> Result<(), ApiError> {
    app.audit
        .record(
            AuditEvent::new(ActorKind::ApiToken, token.id.clone(), action, Outcome::Success)
                .resource(resource)
                .context(ctx)
                .payload(payload),
        )
        .await
        .map(drop)
        .map_err(audit_unavailable)
}

/// 403 for an object-level rule, audited like a role denial.
async fn forbid(
    app: &App,
    token: &TokenInfo,
    ctx: &Context,
    endpoint: Endpoint,
    reason: &str,
    message: String,
) -> ApiError {
    let _ = app
        .audit
        .record(
            AuditEvent::new(
                ActorKind::ApiToken,
                token.id.clone(),
                action::AUTH_DENIED,
                Outcome::Deny,
            )
            .resource(format!(
                "admin:{}",
                serde_json::to_value(endpoint)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("")
            ))
            .context(ctx)
            .payload(json!({ "endpoint": endpoint, "reason": reason, "role": token.role })),
        )
        .await;
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

pub(crate) type Peer = ConnectInfo<SocketAddr>;

/// `GET /v1/whoami`.
pub async fn whoami(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, _) = guard(&app, &headers, peer, Endpoint::Whoami, Value::Null).await?;
    Ok(Json(json!({ "id": token.id, "name": token.name, "user": token.owner, "role": token.role, "mode": app.config.server.mode })).into_response())
}

/// The OpenAPI document, made from [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = serde_json::Map::new();
    let error_schema = json!({ "$ref": "#/components/schemas/Error" });
    for route in ROUTES {
        let roles: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| allowed(**r, route.endpoint))
            .map(|r| r.as_str())
            .collect();
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({ "name": name, "in": "path", "required": true,
                        "schema": { "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9._@-]+$" } })
            })
            .collect();
        parameters.extend(route.query.iter().map(|(name, ty)| {
            let schema = if *ty == "integer" {
                json!({ "type": "integer", "minimum": 1, "maximum": 100_000 })
            } else {
                json!({ "type": *ty })
            };
            json!({ "name": name, "in": "query", "required": false, "schema": schema })
        }));
        let ok = match (route.method, route.endpoint) {
            ("post", Endpoint::TokensCreate | Endpoint::UsersWrite) => "201",
            ("delete", _) => "204",
            _ => "200",
        };
        let mut responses = json!({
            ok: { "description": "OK" },
            "401": { "description": "no, unknown, expired or revoked token", "content": { "application/json": { "schema": error_schema } } },
            "403": { "description": "the role may not", "content": { "application/json": { "schema": error_schema } } },
        });
        if route.body.is_some() || !route.query.is_empty() {
            responses["422"] = json!({ "description": "the request is wrong; the message says how", "content": { "application/json": { "schema": error_schema } } });
        }
        if route.path.contains('{') {
            responses["404"] = json!({ "description": "no such object", "content": { "application/json": { "schema": error_schema } } });
        }
        if matches!(
            route.endpoint,
            Endpoint::UsersWrite | Endpoint::RoutesOperate | Endpoint::SecretsWrite
        ) {
            responses["409"] = json!({ "description": "conflicts with the current state", "content": { "application/json": { "schema": error_schema } } });
        }
        let mut op = json!({
            "operationId": format!("{}_{}", route.method, serde_json::to_value(route.endpoint).unwrap_or_default().as_str().unwrap_or("")),
            "summary": route.summary, "x-roles": roles,
            "security": [{ "bearer": [] }],
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(schema) = route.body {
            let schema: Value = serde_json::from_str(schema).expect("route body schemas are valid JSON");
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "algobanana admin API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "abk_ API token" } },
            "schemas": { "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["kind", "message"], "properties": { "kind": { "type": "string" }, "message": { "type": "string" } } } } } },
        },
        "security": [{ "bearer": [] }],
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
    let severity = |k: KillSwitch| match k {
        KillSwitch::Off => 0,
        KillSwitch::ReduceOnly => 1,
        KillSwitch::On => 2,
    };
    let now = app.kill_switch().map_err(state_unavailable)?;
    if token.role != Role::Admin && severity(to) < severity(now) {
        return Err(forbid(
            &app,
            &token,
            &ctx,
            Endpoint::KillSwitchSet,
            "release needs an admin",
            format!(
                "the kill switch is {}; a {} may engage it but releasing it takes an admin",
                now.as_str(),
                token.role.as_str()
            ),
        )
        .await);
    }
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
    crate::trading::notify::kill_switch(
        &app,
        from,
        to,
        &format!("API token {} ({})", token.id, token.owner),
        "",
        &body.reason,
        &ctx,
    );
    Ok(Json(json!({ "state": to.as_str(), "previous": from.as_str() })).into_response())
}

/// Query parameters of `GET /v1/orders`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersQuery {
    limit: Option<usize>,
    state: Option<String>,
    route: Option<String>,
    account: Option<String>,
    before: Option<i64>,
}

/// Parses a request's query string into `T` (after the caller is
/// authorized, so a request without a valid token is a 401, audited,
/// whatever its query): a 400 that names the parameter on failure.
pub(crate) fn query<T: serde::de::DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri).map(|Query(q)| q).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "{}; see the operation's parameters in /v1/openapi.json",
                e.body_text()
                    .replace("Failed to deserialize query string", "query string")
            ),
        )
    })
}

/// `GET /v1/orders`: newest first, filtered by state (`working`: not
/// final at a broker), route or account; `before` (the last row's `id`)
/// pages back. Read beside the alerts' connection, so a long scan does not
/// hold them up.
pub async fn orders(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::OrdersRead).await?;
    let q: OrdersQuery = query(&uri)?;
    let state = q
        .state
        .as_deref()
        .map(crate::trading::orders::StateFilter::parse)
        .transpose()
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_request", format!("`state`: {e}")))?;
    access(&app, &token, &ctx, Endpoint::OrdersRead, Value::Null).await?;
    let rows = app
        .orders
        .list_aside(&crate::trading::orders::OrderQuery {
            state,
            route: q.route,
            account: q.account,
            before_id: q.before,
            limit: Some(q.limit.unwrap_or(500).clamp(1, 10_000)),
        })
        .map_err(state_unavailable)?;
    Ok(Json(
        rows.iter()
            .map(crate::trading::orders::OrderRow::to_json)
            .collect::<Vec<_>>(),
    )
    .into_response())
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
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditSearch).await?;
    let q: AuditQuery = query(&uri)?;
    let f = filter(&q)?;
    access(
        &app,
        &token,
        &ctx,
        Endpoint::AuditSearch,
        json!({ "filter": format!("{f:?}") }),
    )
    .await?;
    // Off the tokio workers: a search can read a large log.
    let path = app.audit.path().to_owned();
    let rows = tokio::task::spawn_blocking(move || crate::audit::query::search(&path, &f))
        .await
        .map_err(|e| audit_unavailable(format!("the search stopped: {e}")))?
        .map_err(|e| invalid(e.to_string()))?;
    Ok(Json(rows).into_response())
}

/// `GET /v1/audit/export`.
pub async fn audit_export(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditExport).await?;
    let q: AuditQuery = query(&uri)?;
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
    // Opened here, so that a log that cannot be read is a clear 503 before
    // any of the answer is sent.
    let conn = crate::audit::query::open_read_only(app.audit.path()).map_err(audit_unavailable)?;
    let ct = if format == crate::audit::export::Format::Csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    // Streamed from a blocking thread in 64 KiB chunks: a whole log's
    // export held in memory, written by a tokio worker, grew with the log
    // and stalled alerts on that worker for as long as it took. A failure
    // midway ends the response without its final chunk, which clients
    // report as a truncated transfer (and `audit verify --export` as a
    // short log).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let done = crate::audit::export::export(&conn, &f, format, &mut out)
            .and_then(|_| std::io::Write::flush(&mut out).map_err(Into::into));
        if let Err(e) = done {
            tracing::error!(error = %format!("{e:#}"), "audit export over the API failed midway");
            let _ = out.tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
        }
    });
    let body = axum::body::Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    Ok(([(header::CONTENT_TYPE, ct)], body).into_response())
}

const CHUNK: usize = 64 * 1024;

/// A writer that sends what it is given, in chunks, to a response body.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        // The client went away: stop exporting.
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client closed the connection"))
    }
}

/// `GET /v1/audit/verify`.
pub async fn audit_verify(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AuditVerify).await?;
    access(&app, &token, &ctx, Endpoint::AuditVerify, Value::Null).await?;
    // Off the tokio workers: verifying reads and hashes the whole log.
    let path = app.audit.path().to_owned();
    let report = tokio::task::spawn_blocking(move || {
        crate::audit::verify::verify_db(&path, &[], &crate::audit::verify::Options::default())
    })
    .await
    .map_err(|e| audit_unavailable(format!("verification stopped: {e}")))?
    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", e))?;
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    v["result"] = json!(if report.intact() { "intact" } else { "tampered" });
    Ok(Json(v).into_response())
}

/// `GET /v1/tokens`: all for an admin, their own for others.
pub async fn tokens_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, _) = guard(&app, &headers, peer, Endpoint::TokensRead, Value::Null).await?;
    let owner = (token.role != Role::Admin).then_some(token.owner.as_str());
    let list = app.tokens.list(owner).map_err(state_unavailable)?;
    Ok(Json(list).into_response())
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    role: String,
    user: Option<String>,
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
        "{\"name\": \"…\", \"role\": \"admin|trader|viewer|auditor\", \"user\": \"…\", \"expires_in_s\": 86400}",
    )?;
    let Some(role) = Role::parse(&body.role) else {
        return Err(invalid(format!(
            "role `{}`: expected admin, trader, viewer or auditor",
            body.role
        )));
    };
    if body.name.trim().is_empty() || body.name.chars().count() > 64 || body.name.chars().any(char::is_control) {
        return Err(invalid("name: 1–64 printable characters"));
    }
    let owner_name = body.user.clone().unwrap_or_else(|| token.owner.clone());
    if token.role != Role::Admin && owner_name != token.owner {
        return Err(forbid(
            &app,
            &token,
            &ctx,
            Endpoint::TokensCreate,
            "token for another user",
            format!("a {} may create tokens only for itself", token.role.as_str()),
        )
        .await);
    }
    let Some(owner) = app.users.get(&owner_name).map_err(state_unavailable)? else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no user `{owner_name}` (GET /v1/users lists them)"),
        ));
    };
    if owner.disabled_at_ns.is_some() {
        return Err(error(
            StatusCode::CONFLICT,
            "user_disabled",
            format!("user `{owner_name}` is disabled; enable it first"),
        ));
    }
    if !users::may_hold(owner.role, role) {
        let message = format!(
            "user `{owner_name}` has role {}, which may not hold a {} token",
            owner.role.as_str(),
            role.as_str()
        );
        return Err(if token.role == Role::Admin {
            invalid(message)
        } else {
            forbid(
                &app,
                &token,
                &ctx,
                Endpoint::TokensCreate,
                "role above the user's",
                message,
            )
            .await
        });
    }
    let expires = body.expires_in_s.map(|s| {
        crate::audit::now_ns().saturating_add(i64::try_from(s).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000_000))
    });
    let (secret, info) = app
        .tokens
        .create(&body.name, &owner.name, role, expires)
        .map_err(state_unavailable)?;
    record_change(
        &app,
        &token,
        &ctx,
        action::TOKEN_CREATED,
        format!("token:{}", info.id),
        json!({ "token": info }),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": secret, "info": info, "note": "shown only now; store it somewhere safe" })),
    )
        .into_response())
}

/// `DELETE /v1/tokens/{id}`: any for an admin, their own for others.
pub async fn tokens_revoke(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::TokensRevoke).await?;
    let target = app.tokens.get(&id).map_err(state_unavailable)?;
    let Some(target) = target else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no token `{id}`"),
        ));
    };
    if token.role != Role::Admin && target.owner != token.owner {
        // Same answer as a missing token: no probing of other users' ids.
        let _ = forbid(
            &app,
            &token,
            &ctx,
            Endpoint::TokensRevoke,
            "another user's token",
            String::new(),
        )
        .await;
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no token `{id}`"),
        ));
    }
    record_change(
        &app,
        &token,
        &ctx,
        action::TOKEN_REVOKED,
        format!("token:{id}"),
        json!({ "revoked": id, "owner": target.owner }),
    )
    .await?;
    app.tokens.revoke(&id).map_err(state_unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
