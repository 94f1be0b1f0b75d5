//! The one error type handlers return, with the reference's status codes and JSON bodies.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_core::{CreateError, RegistryError};
use serde_json::{Value, json};

/// An HTTP error response.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with `{"error": msg}`.
    BadRequest(String),
    /// 401 with `{"error": msg}`.
    Unauthorized(&'static str),
    /// 404 with `{"error": msg}`.
    NotFound(&'static str),
    /// 409 with `{"error": msg}`.
    Conflict(String),
    /// 413: the body is larger than the limit.
    PayloadTooLarge,
    /// Any status with a prepared JSON body (422s with `code`, 410 Gone, …).
    Custom(StatusCode, Value),
    /// 500 with a fixed public message; the cause is logged here, once.
    Internal(&'static str, Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 500 whose cause is logged but never sent.
    pub fn internal(
        public: &'static str,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        ApiError::Internal(public, Box::new(cause))
    }
}

impl ApiError {
    /// The status and JSON body this error answers with; a 500's cause is logged here, once.
    pub(crate) fn into_parts(self) -> (StatusCode, Value) {
        match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"error": m})),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, json!({"error": m})),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": m})),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, json!({"error": m})),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": "request body too large"}),
            ),
            ApiError::Custom(status, body) => (status, body),
            ApiError::Internal(public, cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "{public}");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": public}))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.into_parts();
        (status, Json(body)).into_response()
    }
}

const RUNTIME_UNRESOLVED_MSG: &str = "runtime could not be resolved from the requested template; refusing to silently provision the default runtime. Pass an explicit \"runtime\", or use a template whose config.yaml declares one.";
const MODEL_REQUIRED_MSG: &str = "model is required and has no platform-side default — pass an explicit \"model\" in the request body, or use a \"template\" whose config.yaml declares one.";

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        use CreateError as E;
        match e {
            E::InvalidPayload => ApiError::BadRequest("invalid workspace payload".into()),
            E::InvalidFields(_) => ApiError::BadRequest("invalid workspace fields".into()),
            E::InvalidTier => ApiError::BadRequest("tier must be between 1 and 4".into()),
            E::InvalidTemplate(_) => ApiError::BadRequest("invalid template".into()),
            E::RuntimeUnresolved { template } => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": RUNTIME_UNRESOLVED_MSG, "template": template, "code": "RUNTIME_UNRESOLVED"}),
            ),
            E::UnknownRuntime { runtime } => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": format!("unknown runtime {runtime:?}: use a built-in runtime or one declared by a template"), "runtime": runtime, "code": "RUNTIME_UNKNOWN"}),
            ),
            E::ModelRequired { runtime, template } => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": MODEL_REQUIRED_MSG, "runtime": runtime, "template": template, "code": "MODEL_REQUIRED"}),
            ),
            E::ExternalRuntimeMismatch { runtime } => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "external workspaces need an external-like runtime (external, kimi, kimi-cli)", "runtime": runtime, "code": "RUNTIME_NOT_EXTERNAL"}),
            ),
            E::InvalidWorkspaceDir => ApiError::BadRequest("invalid workspace directory".into()),
            E::InvalidWorkspaceAccess => ApiError::BadRequest("invalid workspace access".into()),
            E::InvalidCompute(c) => ApiError::BadRequest(c.to_string()),
            E::UnsafeUrl(s) => ApiError::BadRequest(format!("unsafe workspace URL: {s}")),
            E::InvalidDeliveryMode => {
                ApiError::BadRequest("delivery_mode must be 'push' or 'poll'".into())
            }
            e @ (E::InvalidSecret(_)
            | E::InvalidParentId
            | E::ParentNotFound
            | E::InvalidBudget) => ApiError::BadRequest(e.to_string()),
            E::NameExhausted => ApiError::Conflict(
                "workspace name already in use; please pick a different name".into(),
            ),
            E::IdempotencyMismatch => ApiError::Custom(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": "Idempotency-Key was already used with a different request", "code": "IDEMPOTENCY_KEY_REUSED"}),
            ),
            E::Store(cause) => ApiError::internal("failed to create workspace", cause),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        use RegistryError as E;
        match e {
            E::InvalidBody => ApiError::BadRequest("invalid request body".into()),
            E::InvalidDeliveryMode | E::UrlRequired | E::CardTooLarge | E::CardHasNul => {
                ApiError::BadRequest(e.to_string())
            }
            E::UnsafeUrl(reason) => ApiError::BadRequest(reason.to_string()),
            E::MissingToken => ApiError::Unauthorized("missing workspace auth token"),
            E::InvalidToken => ApiError::Unauthorized("invalid workspace auth token"),
            E::NotFound => ApiError::NotFound("workspace not found"),
            E::Removed => ApiError::Custom(StatusCode::GONE, json!({"error": "workspace removed"})),
            E::InvalidState(status) => ApiError::Custom(
                StatusCode::CONFLICT,
                json!({"error": format!("workspace is {status}"), "status": status}),
            ),
            E::TooManyTokens => ApiError::Custom(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "maximum 50 active tokens per workspace"}),
            ),
            E::NotExternal { runtime } => ApiError::Custom(
                StatusCode::BAD_REQUEST,
                json!({"error": "only valid for external/BYO-compute workspaces", "runtime": runtime}),
            ),
            E::Forbidden => ApiError::Custom(
                StatusCode::FORBIDDEN,
                json!({"error": "not authorized to discover this workspace"}),
            ),
            E::Unavailable { status } => ApiError::Custom(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "workspace not available", "status": status}),
            ),
            E::Starting => ApiError::Custom(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": e.to_string(), "status": "provisioning", "retry_after": 1}),
            ),
            E::Store { context, source } => ApiError::internal(context, source),
        }
    }
}
