//! The HTTP surface: webhook ingress (`POST /v1/hooks/{token}`),
//! `GET /healthz`, and the token-authenticated admin API ([`crate::admin`]).
//! Every other path is a 404.

pub mod error;
pub mod hooks;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, patch, post, put};

use crate::admin;
use crate::app::App;

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/hooks/{token}", post(hooks::receive))
        .route("/healthz", get(hooks::health))
        // The admin API: every handler starts at `admin::authorize` with its
        // endpoint (listed in `admin::ROUTES`, which also makes the OpenAPI
        // document).
        .route("/v1/whoami", get(admin::whoami))
        .route("/v1/openapi.json", get(admin::openapi))
        .route(
            "/v1/kill-switch",
            get(admin::kill_switch_read).put(admin::kill_switch_set),
        )
        .route("/v1/orders", get(admin::orders))
        .route("/v1/alerts", get(admin::alerts))
        .route("/v1/routes", get(admin::routes_list))
        .route("/v1/routes/{name}/pause", post(admin::route_pause))
        .route("/v1/routes/{name}/resume", post(admin::route_resume))
        .route("/v1/routes/{name}/hook-token", post(admin::route_hook_token))
        .route("/v1/plugins", get(admin::plugins_list))
        .route("/v1/limits", get(admin::limits_read).patch(admin::limits_patch))
        .route("/v1/secrets", get(admin::secrets_list))
        .route(
            "/v1/secrets/{name}",
            put(admin::secret_put).delete(admin::secret_delete),
        )
        .route("/v1/users", get(admin::users_list).post(admin::users_create))
        .route("/v1/users/{name}", patch(admin::users_update))
        .route("/v1/audit/events", get(admin::audit_search))
        .route("/v1/audit/export", get(admin::audit_export))
        .route("/v1/audit/verify", get(admin::audit_verify))
        .route("/v1/tokens", get(admin::tokens_list).post(admin::tokens_create))
        .route("/v1/tokens/{id}", delete(admin::tokens_revoke))
        .fallback(hooks::not_found)
        .with_state(app)
}
