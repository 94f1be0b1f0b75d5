//! Body, query and path extraction that answers with the reference's JSON errors instead of
//! axum's plain text, and that enforces berth's one rule for client text
//! ([`berth_domain::text`]): a NUL character anywhere in a JSON body's strings and keys, or in
//! a query parameter, is a 400 naming the field before any handler runs, on both stores. Every
//! handler reads its body through [`Body`] (or, with its own size limit, checks it with
//! [`refuse_nul`]) and its query through [`ApiQuery`]; path parameters are ids and secret
//! names, which their own parsing refuses a NUL in.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use berth_domain::text::{NulCharacter, check_str, find_nul};
use serde_json::json;

use crate::ApiError;

impl From<NulCharacter> for ApiError {
    fn from(e: NulCharacter) -> Self {
        ApiError::Custom(
            StatusCode::BAD_REQUEST,
            json!({"error": e.to_string(), "field": e.field}),
        )
    }
}

/// The raw request body, bounded by the router's body limit (413 JSON past it), refused (400)
/// when it is JSON holding a NUL character.
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => {
                refuse_nul(&b)?;
                Ok(Body(b))
            }
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(_) => Err(ApiError::BadRequest("invalid request body".into())),
        }
    }
}

/// Refuses a JSON body holding a NUL (400 naming the field). JSON carries one only as the
/// escape `\u0000` (a raw control character is not JSON), so a body without that text is not
/// parsed here at all; one with it is parsed to tell a NUL from an escaped backslash
/// (`\\u0000`) and to name the field. A body that is not JSON is left to its handler. [`Body`]
/// calls this for every handler; the one handler that reads its body itself (`PATCH
/// …/config`, for its own size limit) calls it too.
pub(crate) fn refuse_nul(body: &[u8]) -> Result<(), ApiError> {
    if !body.windows(6).any(|w| w == b"\\u0000") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    match find_nul(None, &value) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `Query` whose rejection is the reference's JSON error shape.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let q = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("invalid query string".into()))?;
        // Every parameter, including those `T` ignores: the rule is about the request.
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        {
            for (name, value) in &pairs {
                check_str(name, value)?;
            }
        }
        Ok(ApiQuery(q.0))
    }
}

/// `Path` whose rejection is a JSON 400 (every path parameter of the API is an id).
pub(crate) struct ApiPath<T>(pub(crate) T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|_| ApiError::BadRequest("invalid workspace ID".into()))
    }
}
