//! The HTTP surface: webhook ingress (`POST /v1/hooks/{token}`) and
//! `GET /healthz`. Every other path is a 404.

pub mod error;
pub mod hooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::app::App;

/// The router for `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/hooks/{token}", post(hooks::receive))
        .route("/healthz", get(hooks::health))
        .fallback(hooks::not_found)
        .with_state(app)
}
