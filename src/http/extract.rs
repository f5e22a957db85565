//! Extractors that fail with the API's own problem documents instead of axum's
//! plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A JSON request body whose rejections are problem+json: a missing or wrong
/// content type is a 415, a body over the limit a 413, malformed JSON a 400,
/// and JSON of the wrong shape a 422. Every request body of this API is a JSON
/// object; anything else (an array, which serde would happily read as a
/// struct's fields in order, or a bare value) is a 422.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

/// `application/json` or any `application/*+json`, parameters allowed.
fn is_json_content_type(req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(&req) {
            return Err(AppError::UnsupportedMediaType(
                "Expected a body with Content-Type: application/json".into(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge("The request body is too large.".into())
                } else {
                    AppError::BadRequest(rejection.body_text())
                }
            })?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some()
            && first != Some(&b'{')
            && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
        {
            return Err(AppError::validation("body", "must be a JSON object"));
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Self(value))
            .map_err(json_rejection)
    }
}

impl<T: Serialize> IntoResponse for AppJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    let text = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => AppError::validation("body", text),
        JsonRejection::JsonSyntaxError(_) => AppError::BadRequest(text),
        // Content type and body size were checked before parsing.
        _ => AppError::BadRequest(text),
    }
}

/// `Query<T>` whose rejections are problem+json (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| AppError::BadRequest(e.body_text()))
    }
}

/// `Path<T>` whose rejections are problem+json (400 for a malformed segment).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| AppError::BadRequest(e.body_text()))
    }
}
