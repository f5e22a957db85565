//! One error type for the whole API, rendered as `application/problem+json`
//! (RFC 9457). Server-side failures are logged with their cause and shown to the
//! client only as a generic message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// One invalid input field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the client named it (`limit`, `body.email`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (see docs/api.md).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Field-level errors, present for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Syntactically bad request (malformed JSON, unparsable query string).
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input that breaks a rule, with the offending fields.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// No valid credentials. `invalid_token` marks a bearer token that was
    /// presented but refused (RFC 6750 `error="invalid_token"`).
    #[error("{detail}")]
    Unauthenticated { detail: String, invalid_token: bool },
    /// Authenticated, but the role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A rate limit refused the request.
    #[error("rate limited")]
    RateLimited(crate::ratelimit::Decision),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A WebSocket handshake on a connection that cannot be upgraded.
    #[error("{0}")]
    UpgradeRequired(String),
    /// A part of a resource past its end (an upload's chunk index).
    #[error("{0}")]
    RangeNotSatisfiable(String),
    /// A dependency (database pool, primary) cannot serve right now; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("request timed out")]
    Timeout,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A missing or refused bearer token.
    pub fn unauthenticated(detail: impl Into<String>, invalid_token: bool) -> Self {
        Self::Unauthenticated {
            detail: detail.into(),
            invalid_token,
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Self::BadRequest(d) => (StatusCode::BAD_REQUEST, "bad-request", d.clone()),
            Self::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-error",
                "One or more fields are invalid.".into(),
            ),
            Self::Unauthenticated { detail, .. } => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", detail.clone())
            }
            Self::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d.clone()),
            Self::NotFound(d) => (StatusCode::NOT_FOUND, "not-found", d.clone()),
            Self::RateLimited(d) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!(
                    "Too many requests; retry in {} seconds.",
                    crate::ratelimit::ceil_secs(d.retry_after)
                ),
            ),
            Self::Conflict(d) => (StatusCode::CONFLICT, "conflict", d.clone()),
            Self::UnsupportedMediaType(d) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                d.clone(),
            ),
            Self::PayloadTooLarge(d) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                d.clone(),
            ),
            Self::UpgradeRequired(d) => {
                (StatusCode::UPGRADE_REQUIRED, "upgrade-required", d.clone())
            }
            Self::RangeNotSatisfiable(d) => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range-not-satisfiable",
                d.clone(),
            ),
            Self::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", d.clone()),
            Self::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "The request took too long and was abandoned; it is safe to retry.".into(),
            ),
            Self::Database(e) if is_unavailable(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The database is temporarily unavailable; retry shortly.".into(),
            ),
            Self::Database(e) if is_busy(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The database could not finish this in time (busy data or a slow statement); \
                 retry shortly."
                    .into(),
            ),
            Self::Database(e) if is_bad_text(e) => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "A value cannot be stored: a character such as U+0000, or a date out of range."
                    .into(),
            ),
            Self::Database(e) if is_account_gone(e) => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "This account no longer exists.".into(),
            ),
            Self::Database(_) | Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "An unexpected error occurred; it has been logged.".into(),
            ),
        }
    }
}

/// Errors that mean "the database cannot serve right now", as opposed to a bug:
/// the pool is exhausted or closed, or the connection broke.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..03: admin/crash shutdown, cannot connect now;
            // 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// Errors that mean "the database could not do it in time", where the same
/// request may well succeed when retried: a lock wait or a statement that ran
/// out of time (55P03 `lock_not_available`, 57014 `query_canceled`, which is
/// how `statement_timeout` ends a statement), a deadlock victim (40P01), or a
/// serialization failure (40001, also how a hot standby cancels a query that
/// conflicts with replay). The connection is fine, so unlike
/// [`is_unavailable`] these never take a replica out of rotation.
pub fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(code.as_ref(), "55P03" | "57014" | "40P01" | "40001"))
}

/// Errors that mean "the client sent a value Postgres cannot store": 22021
/// `character_not_in_repertoire` (a NUL in `text`), 22P05
/// `untranslatable_character` (`\u0000` in `jsonb`) and 22008
/// `datetime_field_overflow` (a timestamp out of Postgres's range). Inputs are validated
/// before they reach SQL, so this is a safety net; a hit is still logged at
/// error level (see `into_response`) because it means a validator is missing.
pub fn is_bad_text(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(code.as_ref(), "22021" | "22P05" | "22008"))
}

/// A write that refers to an account deleted while it ran (23503 on a
/// reference to `users`): the account check passed before the deletion, and
/// the deletion's lock on the account row made this write wait, then fail.
pub fn is_account_gone(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|db| {
        db.code().is_some_and(|code| code == "23503")
            && db.constraint().is_some_and(|name| {
                [
                    "_user_id_fkey",
                    "_author_id_fkey",
                    "_candidate_id_fkey",
                    "_moderator_id_fkey",
                ]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            })
    })
}

/// Builds a problem response. Used by [`AppError`] and by the middleware that
/// rewrites framework-generated errors (404, 405, 413...) into the same shape.
pub fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let problem = Problem {
        type_: format!("/problems/{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, slug, detail) = self.parts();
        if let Self::Database(e) = &self
            && is_bad_text(e)
        {
            tracing::error!(error = %e, "text reached the database unvalidated; answered 400");
        }
        if status.is_server_error() {
            match &self {
                Self::Database(e) => tracing::error!(error = %e, kind = slug, "database error"),
                Self::Internal(e) => tracing::error!(error = ?e, "internal error"),
                other => tracing::warn!(error = %other, "service unavailable"),
            }
        }
        let www_authenticate = match &self {
            Self::Unauthenticated {
                invalid_token: true,
                ..
            } => Some(r#"Bearer realm="refbackend", error="invalid_token""#),
            Self::Unauthenticated { .. } => Some(r#"Bearer realm="refbackend""#),
            _ => None,
        };
        let rate_limit = match &self {
            Self::RateLimited(decision) => Some(*decision),
            _ => None,
        };
        let errors = match self {
            Self::Validation(errors) => errors,
            _ => Vec::new(),
        };
        let mut response = problem_response(status, slug, detail, errors);
        if let Some(value) = www_authenticate {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        if let Some(decision) = rate_limit {
            crate::ratelimit::set_headers(response.headers_mut(), &decision);
        }
        response
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_503_not_500() {
        let response = AppError::Database(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn unexpected_database_errors_hide_their_details() {
        let response = AppError::Database(sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            PROBLEM_CONTENT_TYPE
        );
    }

    #[test]
    fn validation_errors_list_their_fields() {
        let problem = Problem {
            type_: "/problems/validation-error".into(),
            title: "Unprocessable Entity".into(),
            status: 422,
            detail: "x".into(),
            errors: vec![FieldError::new("limit", "must be between 1 and 100")],
        };
        let json = serde_json::to_value(&problem).expect("serializes");
        assert_eq!(json["errors"][0]["field"], "limit");
        assert_eq!(json["type"], "/problems/validation-error");
    }
}
