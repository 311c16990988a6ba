//! Admin resources beyond the kill switch, orders, audit and tokens:
//! alerts, routes (pause, resume, hook-token rotation), plugins and grants,
//! risk limits, secrets (write-only) and users.

use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::OptionalExtension as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rbac::{Endpoint, Role};
use super::{
    Peer, access, authorize, error, forbid, guard, invalid, json_body, record_change, state_unavailable, users,
};
use crate::app::App;
use crate::audit::action;
use crate::domain::ids::RouteName;
use crate::http::error::ApiError;

fn route_name(app: &App, name: &str) -> Result<RouteName, ApiError> {
    RouteName::new(name)
        .ok()
        .filter(|n| app.config.routes.contains_key(n))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "there is no route `{}` (GET /v1/routes lists them)",
                    name.chars().take(64).collect::<String>()
                ),
            )
        })
}

/// `?limit=&route=&status=&before=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    limit: Option<usize>,
    route: Option<String>,
    status: Option<String>,
    before: Option<String>,
}

/// `GET /v1/alerts`: newest first (alert ids are UUIDv7s, so the primary
/// key is arrival order and a page reads only its rows), filtered by route
/// or status; `before` (the last row's `id`) pages back.
pub async fn alerts(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AlertsRead).await?;
    let q: AlertsQuery = super::query(&uri)?;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "invalid_request", m);
    if let Some(s) = q.status.as_deref()
        && !matches!(s, "received" | "processed" | "failed")
    {
        return Err(bad(format!(
            "`status`: `{s}` is not an alert status; expected received, processed or failed"
        )));
    }
    // The id as stored (lower case), so that it compares in arrival order.
    let before = q
        .before
        .as_deref()
        .map(|b| crate::domain::ids::AlertId::parse(b).map(|id| id.to_string()))
        .transpose()
        .map_err(|e| bad(format!("`before`: {e}")))?;
    access(&app, &token, &ctx, Endpoint::AlertsRead, Value::Null).await?;
    let limit = i64::try_from(q.limit.unwrap_or(100).clamp(1, 10_000)).unwrap_or(100);
    let mut conds = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (cond, v) in [("route = ?", &q.route), ("status = ?", &q.status), ("id < ?", &before)] {
        if let Some(v) = v {
            args.push(rusqlite::types::Value::Text(v.clone()));
            conds.push(cond.replace('?', &format!("?{}", args.len())));
        }
    }
    args.push(rusqlite::types::Value::Integer(limit));
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alert{} ORDER BY id DESC LIMIT ?{}",
        if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        },
        args.len()
    );
    let rows: Vec<Value> = app
        .state
        .read_aside(|c| {
            let mut s = c.prepare_cached(&sql)?;
            s.query_map(rusqlite::params_from_iter(args), alert_json)?.collect()
        })
        .map_err(state_unavailable)?;
    Ok(Json(rows).into_response())
}

/// The columns [`alert_json`] reads, in its order.
const ALERT_COLUMNS: &str = "id, route, received_at_ns, request_id, content_type, body, status, result";

/// One `alert` row as the API shows it.
fn alert_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let body: Vec<u8> = r.get(5)?;
    Ok(json!({
        "id": r.get::<_, String>(0)?, "route": r.get::<_, String>(1)?,
        "received_at": crate::audit::format_ts(r.get(2)?), "request_id": r.get::<_, String>(3)?,
        "content_type": r.get::<_, String>(4)?, "body": String::from_utf8_lossy(&body),
        "status": r.get::<_, String>(6)?,
        "result": r.get::<_, Option<String>>(7)?.and_then(|t| serde_json::from_str::<Value>(&t).ok()),
    }))
}

/// `GET /v1/alerts/{id}`: where a 202 answer's alert id leads (its status,
/// then its result with the orders, once it has finished).
pub async fn alert_one(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::AlertsRead).await?;
    access(&app, &token, &ctx, Endpoint::AlertsRead, json!({ "alert": id })).await?;
    let missing = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no alert with this id (an alert id is a UUID, as in a webhook's answer)",
        )
    };
    let id = crate::domain::ids::AlertId::parse(&id).map_err(|_| missing())?;
    let row = app
        .state
        .read_aside(|c| {
            c.prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM alert WHERE id = ?1"))?
                .query_row([id.to_string()], alert_json)
                .optional()
        })
        .map_err(state_unavailable)?;
    row.map(|v| Json(v).into_response()).ok_or_else(missing)
}

/// `GET /v1/routes`.
pub async fn routes_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&app, &headers, peer, Endpoint::RoutesRead, Value::Null).await?;
    let list: Vec<Value> = app
        .config
        .routes
        .iter()
        .map(|(name, r)| {
            json!({
                "name": name.as_str(), "rule": r.rule.as_str(), "broker": r.broker.as_str(), "live": r.live,
                "accounts": r.accounts.iter().map(|a| json!({ "name": a.name, "broker": a.broker.as_str(), "size": a.size })).collect::<Vec<_>>(),
                "paused": app.routes.is_paused(name),
                "hook_tokens": app.routes.tokens_of(name),
                "guards": {
                    "passphrase_secret": r.guard.passphrase_secret, "signature_secret": r.guard.signature_secret,
                    "allowed_ips": r.guard.allowed_ips.as_ref().map(|v| v.iter().map(|c| format!("{}/{}", c.addr, c.bits)).collect::<Vec<_>>()),
                    "rate_limit_per_minute": r.guard.rate_limit_per_minute,
                },
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn set_paused(
    app: &App,
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
    name: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(app, headers, peer, Endpoint::RoutesOperate).await?;
    let route = route_name(app, name)?;
    record_change(
        app,
        &token,
        &ctx,
        action::ROUTE_CHANGED,
        format!("route:{route}"),
        json!({ "route": route.as_str(), "change": if paused { "pause" } else { "resume" } }),
    )
    .await?;
    let was = app
        .routes
        .set_paused(&route, paused, &token.id)
        .map_err(state_unavailable)?;
    Ok(Json(json!({ "route": route.as_str(), "paused": paused, "was_paused": was })).into_response())
}

/// `POST /v1/routes/{name}/pause`.
pub async fn route_pause(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&app, &headers, peer, &name, true).await
}

/// `POST /v1/routes/{name}/resume`.
pub async fn route_resume(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_paused(&app, &headers, peer, &name, false).await
}

/// Body of the hook-token rotation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    overlap_s: Option<u64>,
}

/// `POST /v1/routes/{name}/hook-token`.
pub async fn route_hook_token(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::RoutesOperate).await?;
    let route = route_name(&app, &name)?;
    let body: Rotation = if body.iter().all(u8::is_ascii_whitespace) {
        Rotation::default()
    } else {
        json_body(&body, "{\"overlap_s\": 86400}")?
    };
    let overlap = body.overlap_s.unwrap_or(86_400);
    if overlap > 30 * 86_400 {
        return Err(invalid("overlap_s: at most 2592000 (30 days)"));
    }
    record_change(
        &app,
        &token,
        &ctx,
        action::ROUTE_CHANGED,
        format!("route:{route}"),
        json!({ "route": route.as_str(), "change": "hook_token_rotated", "overlap_s": overlap }),
    )
    .await?;
    let overlap_ns = i64::try_from(overlap).unwrap_or(0).saturating_mul(1_000_000_000);
    let (secret, info) = app.routes.rotate(&route, overlap_ns).map_err(state_unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "hook_token": secret, "hook_path": crate::config::hook_path(&secret), "info": info,
            "older_tokens_expire_in_s": overlap,
            "note": "shown only now; update the sender (e.g. the TradingView alert URL) before the overlap ends",
        })),
    )
        .into_response())
}

/// `GET /v1/plugins`.
pub async fn plugins_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&app, &headers, peer, Endpoint::PluginsRead, Value::Null).await?;
    let list: Vec<Value> = app
        .config
        .plugins
        .keys()
        .filter_map(|n| app.registry.get(n))
        .map(|p| {
            json!({
                "name": p.name.as_str(), "version": p.version, "digest": p.digest, "world": p.world.as_str(),
                "disabled": app.registry.is_disabled(&p.name),
                "manifest": p.manifest, "grant_carried_from": p.grant_carried_from,
                "grant": {
                    "digest": p.grant.digest, "kv": p.grant.kv, "kv_max_keys": p.grant.kv_max_keys,
                    "kv_max_bytes": p.grant.kv_max_bytes,
                    "http": p.grant.http.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "allow_loopback": p.grant.allow_loopback, "allow_private": p.grant.allow_private,
                    "secrets": p.grant.secrets,
                },
                "limits": {
                    "deadline_ms": p.limits.deadline.as_millis(), "memory_bytes": p.limits.memory_bytes,
                    "fuel": p.limits.fuel, "max_output_bytes": p.limits.max_output_bytes,
                },
            })
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn set_plugin(
    app: &App,
    headers: &HeaderMap,
    peer: std::net::SocketAddr,
    name: &str,
    disabled: bool,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(app, headers, peer, Endpoint::PluginsManage).await?;
    let plugin = crate::domain::ids::PluginName::new(name)
        .ok()
        .filter(|n| app.registry.get(n).is_some())
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "there is no plugin `{}` (GET /v1/plugins lists them)",
                    name.chars().take(64).collect::<String>()
                ),
            )
        })?;
    record_change(
        app,
        &token,
        &ctx,
        action::CONFIG_CHANGED,
        format!("plugin:{plugin}"),
        json!({ "plugin": plugin.as_str(), "change": if disabled { "disable" } else { "enable" } }),
    )
    .await?;
    let was = app
        .registry
        .set_disabled(&plugin, disabled, &token.id)
        .map_err(state_unavailable)?;
    Ok(Json(json!({ "plugin": plugin.as_str(), "disabled": disabled, "was_disabled": was })).into_response())
}

/// `POST /v1/plugins/{name}/disable`.
pub async fn plugin_disable(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_plugin(&app, &headers, peer, &name, true).await
}

/// `POST /v1/plugins/{name}/enable`.
pub async fn plugin_enable(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    set_plugin(&app, &headers, peer, &name, false).await
}

/// `GET /v1/limits`.
pub async fn limits_read(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&app, &headers, peer, Endpoint::LimitsRead, Value::Null).await?;
    Ok(Json(json!({ "in_force": app.risk_limits(), "config": app.config.risk })).into_response())
}

/// `PATCH /v1/limits`.
pub async fn limits_patch(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::LimitsWrite).await?;
    let body: Map<String, Value> = json_body(&body, "{\"max_order_quantity\": \"10\", …}")?;
    // One change at a time: the check and the store see the same limits.
    let _serial = app.order_lock.lock().await;
    let now = app.risk_limits();
    let outcome = super::limits::change(&app.state, &app.config.risk, &now, token.role, &token.id, &body)
        .map_err(state_unavailable)?;
    match outcome {
        Err(super::limits::Refused::Invalid(m)) => Err(invalid(m)),
        Err(super::limits::Refused::Forbidden(m)) => {
            Err(forbid(&app, &token, &ctx, Endpoint::LimitsWrite, "above the trader ceiling", m).await)
        }
        Ok((next, changes)) => {
            record_change(
                &app,
                &token,
                &ctx,
                action::LIMITS_CHANGED,
                "limits",
                json!({ "changes": changes, "role": token.role }),
            )
            .await?;
            app.set_risk_limits(next.clone());
            Ok(Json(json!({ "in_force": next, "changes": changes })).into_response())
        }
    }
}

/// `GET /v1/secrets`: names only.
pub async fn secrets_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&app, &headers, peer, Endpoint::SecretsRead, Value::Null).await?;
    let mut out: Vec<Value> = Vec::new();
    let vault: Vec<crate::vault::SecretMeta> = match &app.vault {
        Some(v) => v
            .list()
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable", e.to_string()))?
            .into_iter()
            .filter(|m| m.kind == crate::vault::RecordKind::Secret)
            .collect(),
        None => Vec::new(),
    };
    for m in &vault {
        out.push(json!({ "name": m.name, "source": "vault", "version": m.version,
                         "created_at_ns": m.created_at_ns, "updated_at_ns": m.updated_at_ns }));
    }
    for (name, (src, hosts)) in &app.config.secrets {
        let source = match src {
            crate::config::SecretSource::Env(var) => json!({ "env": var }),
            crate::config::SecretSource::Value(_) => json!("config file"),
            crate::config::SecretSource::Vault => json!("vault"),
        };
        match out.iter_mut().find(|o| o["name"] == json!(name)) {
            Some(o) => o["hosts"] = json!(hosts),
            None => out.push(json!({ "name": name, "source": source, "hosts": hosts,
                                     "missing": matches!(src, crate::config::SecretSource::Vault) })),
        }
    }
    Ok(Json(out).into_response())
}

fn vault_of(app: &App) -> Result<&Arc<crate::vault::Vault>, ApiError> {
    app.vault.as_ref().ok_or_else(|| {
        error(
            StatusCode::CONFLICT,
            "no_vault",
            "this host has no vault; create one with `algobanana vault init` and restart",
        )
    })
}

/// Body of `PUT /v1/secrets/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    value: String,
}

/// `PUT /v1/secrets/{name}`.
pub async fn secret_put(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::SecretsWrite).await?;
    let body: SecretBody = json_body(&body, "{\"value\": \"…\"}")?;
    let value = zeroize::Zeroizing::new(body.value.into_bytes());
    crate::vault::Vault::check(&name, &value).map_err(|e| invalid(e.to_string()))?;
    let vault = vault_of(&app)?;
    // Audit before the change: a change that cannot be audited is not made.
    record_change(
        &app,
        &token,
        &ctx,
        action::SECRET_SET,
        format!("secret:{name}"),
        json!({ "secret": name, "via": "api" }),
    )
    .await?;
    let (outcome, version) = vault.set(&name, &value).map_err(|e| match e {
        crate::vault::VaultError::Invalid(m) => invalid(m),
        other => error(StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable", other.to_string()),
    })?;
    Ok(Json(json!({ "name": name, "outcome": outcome, "version": version })).into_response())
}

/// `DELETE /v1/secrets/{name}`.
pub async fn secret_delete(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::SecretsWrite).await?;
    let vault = vault_of(&app)?;
    let exists = vault
        .contains(&name)
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable", e.to_string()))?;
    if !exists || name.starts_with("algobanana.") {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "there is no secret `{}` in the vault",
                name.chars().take(64).collect::<String>()
            ),
        ));
    }
    record_change(
        &app,
        &token,
        &ctx,
        action::SECRET_DELETED,
        format!("secret:{name}"),
        json!({ "secret": name, "via": "api" }),
    )
    .await?;
    vault
        .delete(&name)
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable", e.to_string()))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/users`.
pub async fn users_list(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    guard(&app, &headers, peer, Endpoint::UsersRead, Value::Null).await?;
    Ok(Json(app.users.list().map_err(state_unavailable)?).into_response())
}

/// Body of `POST /v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    role: String,
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| invalid(format!("role `{role}`: expected admin, trader, viewer or auditor")))
}

/// `POST /v1/users`.
pub async fn users_create(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::UsersWrite).await?;
    let body: NewUser = json_body(&body, "{\"name\": \"…\", \"role\": \"trader\"}")?;
    let role = parse_role(&body.role)?;
    if !users::valid_name(&body.name) {
        return Err(invalid("name: 1–64 lowercase letters, digits, '-', '_', '.' or '@'"));
    }
    if app.config.server.mode == crate::config::Mode::Local {
        return Err(error(
            StatusCode::CONFLICT,
            "local_mode",
            "Local mode has one user (admin); set server.mode = \"cloud\" (with HTTPS) for several users",
        ));
    }
    record_change(
        &app,
        &token,
        &ctx,
        action::USER_CHANGED,
        format!("user:{}", body.name),
        json!({ "change": "create", "user": body.name, "role": role }),
    )
    .await?;
    if !app.users.create(&body.name, role).map_err(state_unavailable)? {
        return Err(error(
            StatusCode::CONFLICT,
            "exists",
            format!(
                "user `{}` already exists; change it with PATCH /v1/users/{}",
                body.name, body.name
            ),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(app.users.get(&body.name).map_err(state_unavailable)?),
    )
        .into_response())
}

/// Body of `PATCH /v1/users/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    role: Option<String>,
    disabled: Option<bool>,
}

/// `PATCH /v1/users/{name}`.
pub async fn users_update(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (token, ctx) = authorize(&app, &headers, peer, Endpoint::UsersWrite).await?;
    let change: UserChange = json_body(&body, "{\"role\": \"viewer\", \"disabled\": true}")?;
    if change.role.is_none() && change.disabled.is_none() {
        return Err(invalid("nothing to change: give `role` and/or `disabled`"));
    }
    let role = change.role.as_deref().map(parse_role).transpose()?;
    let Some(user) = app.users.get(&name).map_err(state_unavailable)? else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no user `{}`", name.chars().take(64).collect::<String>()),
        ));
    };
    let loses_admin = user.role == Role::Admin
        && user.disabled_at_ns.is_none()
        && (change.disabled == Some(true) || role.is_some_and(|r| r != Role::Admin));
    if loses_admin && app.users.active_admins().map_err(state_unavailable)? <= 1 {
        return Err(error(
            StatusCode::CONFLICT,
            "last_admin",
            "this is the last enabled admin; make another admin first",
        ));
    }
    record_change(
        &app,
        &token,
        &ctx,
        action::USER_CHANGED,
        format!("user:{name}"),
        json!({ "change": "update", "user": name, "role": role, "disabled": change.disabled }),
    )
    .await?;
    let revoked = app
        .users
        .update(&name, role, change.disabled)
        .map_err(state_unavailable)?;
    Ok(
        Json(json!({ "user": app.users.get(&name).map_err(state_unavailable)?, "revoked_tokens": revoked }))
            .into_response(),
    )
}
