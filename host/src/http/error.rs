//! The one place that maps errors to HTTP statuses and JSON bodies:
//! `{"error": {"kind": "...", "message": "..."}}`, where the message says
//! what was wrong and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::pipeline::PipelineError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Machine-readable kind.
    pub kind: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// A 404 that gives no hint about which tokens exist.
    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: "not found".into(),
        }
    }

    /// A 413 for a body over `cap` bytes.
    pub fn too_large(cap: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "payload_too_large",
            message: format!(
                "the alert body is larger than the {cap}-byte cap; send a smaller alert or raise server.max_body_bytes"
            ),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Audit(a) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "audit_unavailable",
                message: a.to_string(),
            },
            PipelineError::Store(s) => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                kind: "state_unavailable",
                message: format!("{s}; the alert was not processed: resend it once algobanana is healthy again"),
            },
            PipelineError::PluginDisabled(d) => Self {
                status: StatusCode::CONFLICT,
                kind: "plugin_disabled",
                message: d.to_string(),
            },
            PipelineError::MissingPlugin(..) => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "internal",
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "error": { "kind": self.kind, "message": self.message } })),
        )
            .into_response()
    }
}
