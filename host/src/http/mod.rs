//! The HTTP surface: webhook ingress (`POST /v1/hooks/{token}`),
//! `GET /healthz`, and the token-authenticated admin API ([`crate::admin`]).
//! Every other path is a 404.

pub mod error;
pub mod hooks;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, delete, get, patch, post, put};

use crate::admin;
use crate::app::App;

/// The handler of one admin route. Only routes in `admin::ROUTES` are
/// served, each with the handler its method and path name here: a route in
/// the table without a handler fails every start (and every test), and a
/// handler cannot be served without its table entry, so the OpenAPI
/// document and the role table cover every admin route by construction.
fn admin_handler(method: &str, path: &str) -> MethodRouter<Arc<App>> {
    match (method, path) {
        ("get", "/v1/whoami") => get(admin::whoami),
        ("get", "/v1/openapi.json") => get(admin::openapi),
        ("get", "/v1/kill-switch") => get(admin::kill_switch_read),
        ("put", "/v1/kill-switch") => put(admin::kill_switch_set),
        ("get", "/v1/orders") => get(admin::orders),
        ("get", "/v1/alerts") => get(admin::alerts),
        ("get", "/v1/alerts/{id}") => get(admin::alert_one),
        ("get", "/v1/routes") => get(admin::routes_list),
        ("post", "/v1/routes/{name}/pause") => post(admin::route_pause),
        ("post", "/v1/routes/{name}/resume") => post(admin::route_resume),
        ("post", "/v1/routes/{name}/hook-token") => post(admin::route_hook_token),
        ("get", "/v1/plugins") => get(admin::plugins_list),
        ("post", "/v1/plugins/{name}/disable") => post(admin::plugin_disable),
        ("post", "/v1/plugins/{name}/enable") => post(admin::plugin_enable),
        ("get", "/v1/limits") => get(admin::limits_read),
        ("patch", "/v1/limits") => patch(admin::limits_patch),
        ("get", "/v1/secrets") => get(admin::secrets_list),
        ("put", "/v1/secrets/{name}") => put(admin::secret_put),
        ("delete", "/v1/secrets/{name}") => delete(admin::secret_delete),
        ("get", "/v1/users") => get(admin::users_list),
        ("post", "/v1/users") => post(admin::users_create),
        ("patch", "/v1/users/{name}") => patch(admin::users_update),
        ("get", "/v1/audit/events") => get(admin::audit_search),
        ("get", "/v1/audit/export") => get(admin::audit_export),
        ("get", "/v1/audit/verify") => get(admin::audit_verify),
        ("get", "/v1/tokens") => get(admin::tokens_list),
        ("post", "/v1/tokens") => post(admin::tokens_create),
        ("delete", "/v1/tokens/{id}") => delete(admin::tokens_revoke),
        (m, p) => panic!("admin::ROUTES lists {m} {p}, which has no handler in http::admin_handler"),
    }
}

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/v1/hooks/{token}", post(hooks::receive))
        .route("/healthz", get(hooks::health));
    // The admin API, from its table; every handler starts at
    // `admin::authorize` with its endpoint.
    let mut by_path: Vec<(&str, MethodRouter<Arc<App>>)> = Vec::new();
    for r in admin::ROUTES {
        let h = admin_handler(r.method, r.path);
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, m)) => *m = std::mem::take(m).merge(h),
            None => by_path.push((r.path, h)),
        }
    }
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router.fallback(hooks::not_found).with_state(app)
}

/// The client's address: the peer, or, when the peer is a trusted proxy,
/// the right-most `X-Forwarded-For` entry that is not a trusted proxy
/// (entries left of it were written by the client and prove nothing).
pub(crate) fn client_ip(
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
    trusted: &[crate::config::Cidr],
) -> Option<std::net::IpAddr> {
    let peer = peer?;
    if !trusted.iter().any(|c| c.contains(peer)) {
        return Some(peer);
    }
    let forwarded: Vec<std::net::IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.iter().any(|c| c.contains(*ip)))
            .unwrap_or(peer),
    )
}
