//! The client's one error type.

use serde_json::Value;

/// What went wrong talking to berth.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status. `body` is its JSON error body as sent
    /// (`{"error": "…"}`, plus fields such as `code`, `status` or `hint` on some routes; `null`
    /// when the body was not JSON).
    #[error("{status}: {}", message_of(body, *status))]
    Api {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The server's JSON error body.
        body: Value,
        /// The machine-readable code the body carries (`code`, e.g. `MODEL_REQUIRED`, or
        /// `failure_code`), when it has one.
        code: Option<String>,
    },
    /// A workspace this client waited for ended `failed` (see
    /// [`Client::wait_until_settled`](crate::Client::wait_until_settled)).
    #[error("workspace {id} failed ({}): {message}", failure_code.as_deref().unwrap_or("no failure code"))]
    WorkspaceFailed {
        /// The workspace.
        id: berth_domain::WorkspaceId,
        /// Its `failure_code` (`START_FAILED`, `NO_BACKEND`, `TIMEOUT`, …).
        failure_code: Option<String>,
        /// What the server recorded about the failure (`last_sample_error`), or a generic text.
        message: String,
    },
    /// A workspace this client waited for was paused, hibernated or removed meanwhile: it will
    /// not come online without another action.
    #[error("workspace {id} is {}: it will not come online without another action", status.as_str())]
    Stopped {
        /// The workspace.
        id: berth_domain::WorkspaceId,
        /// Its status.
        status: berth_domain::WorkspaceStatus,
    },
    /// The agent answered an A2A request with a JSON-RPC error (HTTP 200 with `error`).
    #[error("the agent answered with JSON-RPC error{}: {message}", code.map(|c| format!(" {c}")).unwrap_or_default())]
    Rpc {
        /// The JSON-RPC error code.
        code: Option<i64>,
        /// The JSON-RPC error message.
        message: String,
        /// The whole JSON-RPC answer.
        body: Value,
    },
    /// The request never got an answer: connection refused, reset, timed out, TLS failure.
    #[error("cannot reach the berth server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The server's answer was not the JSON this client expected.
    #[error("unexpected response from {what}: {source}")]
    Decode {
        /// The request whose answer did not decode.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The event stream broke in a way a reconnect cannot fix (for example the server closed
    /// every reconnect at once).
    #[error("event stream: {0}")]
    Stream(String),
    /// The server URL does not parse, or is not `http://` / `https://`.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// The HTTP client could not be built (e.g. the system's TLS roots could not be loaded).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's human message of an [`Error::Api`] (`error`, else `message`, of its body).
    pub fn server_message(&self) -> Option<String> {
        match self {
            Error::Api { status, body, .. } => Some(message_of(body, *status)),
            _ => None,
        }
    }

    /// The body of an [`Error::Api`] as the API's typed error body, when it has that shape
    /// (every error answer but a few with a shape of their own, such as the 409
    /// `confirmation_required` of a delete).
    pub fn error_body(&self) -> Option<berth_api::ErrorBody> {
        match self {
            Error::Api { body, .. } => serde_json::from_value(body.clone()).ok(),
            _ => None,
        }
    }

    /// An [`Error::Api`] from a status and the raw body bytes.
    pub(crate) fn api(status: reqwest::StatusCode, bytes: &[u8]) -> Error {
        let body: Value = serde_json::from_slice(bytes).unwrap_or_else(|_| {
            let text = String::from_utf8_lossy(bytes).trim().to_owned();
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::json!({ "error": text })
            }
        });
        let code = ["code", "failure_code"]
            .iter()
            .find_map(|k| body.get(k).and_then(Value::as_str))
            .map(str::to_owned);
        Error::Api { status, body, code }
    }
}

/// The message of an error body: `error`, else `message`, else the status's reason.
fn message_of(body: &Value, status: reqwest::StatusCode) -> String {
    ["error", "message"]
        .iter()
        .find_map(|k| body.get(k).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_keeps_status_body_and_code() {
        let e = Error::api(
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            br#"{"error":"model is required","code":"MODEL_REQUIRED","runtime":"x"}"#,
        );
        assert_eq!(e.status(), Some(reqwest::StatusCode::UNPROCESSABLE_ENTITY));
        assert_eq!(e.to_string(), "422 Unprocessable Entity: model is required");
        let Error::Api { body, code, .. } = e else {
            panic!("not an API error")
        };
        assert_eq!(code.as_deref(), Some("MODEL_REQUIRED"));
        assert_eq!(body["runtime"], "x");
    }

    #[test]
    fn a_body_that_is_not_json_is_kept_as_text() {
        let e = Error::api(reqwest::StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(e.server_message().as_deref(), Some("upstream down"));
        let e = Error::api(reqwest::StatusCode::NOT_FOUND, b"");
        assert_eq!(e.to_string(), "404 Not Found: Not Found");
        let e = Error::api(
            reqwest::StatusCode::CONFLICT,
            br#"{"status":"confirmation_required","message":"has children"}"#,
        );
        assert_eq!(e.server_message().as_deref(), Some("has children"));
    }
}
