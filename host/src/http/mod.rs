//! The HTTP surface: webhook ingress (`POST /v1/hooks/{token}`),
//! `GET /healthz`, and the token-authenticated admin API ([`crate::admin`]).
//! Every other path is a 404.

pub mod error;
pub mod hooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};

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
        .route("/v1/audit/events", get(admin::audit_search))
        .route("/v1/audit/export", get(admin::audit_export))
        .route("/v1/audit/verify", get(admin::audit_verify))
        .route("/v1/tokens", get(admin::tokens_list).post(admin::tokens_create))
        .route("/v1/tokens/{id}", delete(admin::tokens_revoke))
        .fallback(hooks::not_found)
        .with_state(app)
}
