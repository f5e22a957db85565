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
use crate::text;

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
        let value = axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Self(value))
            .map_err(json_rejection)?;
        // Checked after parsing, so malformed JSON stays a 400.
        if text::has_nul_escape(&bytes) {
            return Err(AppError::validation(
                "body",
                "text values must not contain the character U+0000",
            ));
        }
        Ok(value)
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
        if let Some(query) = parts.uri.query() {
            reject_control_characters(query)?;
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| AppError::BadRequest(e.body_text()))
    }
}

/// A 422 naming the first query parameter whose decoded name or value holds
/// a control character (`%00`, `%0A`, ...): no parameter of this API is
/// multi-line, and a NUL would otherwise reach Postgres.
fn reject_control_characters(query: &str) -> Result<(), AppError> {
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        // Not decodable as pairs: the typed extractor reports it.
        return Ok(());
    };
    match pairs
        .iter()
        .find(|(name, value)| !text::is_single_line(name) || !text::is_single_line(value))
    {
        Some((name, _)) => Err(AppError::validation(
            name.chars().filter(|c| !c.is_control()).collect::<String>(),
            "must not contain control characters",
        )),
        None => Ok(()),
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
        let value = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| AppError::BadRequest(e.body_text()))?;
        // Decoded segments: `%00` in a path is never part of an id or a name.
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state).await;
        if let Ok(params) = raw
            && let Some((name, _)) = params.iter().find(|(_, v)| !text::is_single_line(v))
        {
            return Err(AppError::validation(
                name.to_owned(),
                "must not contain control characters",
            ));
        }
        Ok(value)
    }
}

/// For an optional integer field of a request body: JSON Schema's `integer`
/// is any number without a fractional part (`5.0` too), which serde's integer
/// types refuse. Accepts both spellings; anything else (a fraction, out of
/// `T`'s range) is an error naming the number. Use with `#[serde(default,
/// deserialize_with = "optional_integer")]`.
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::Deserialize;
    use serde::de::Error;

    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    // Beyond 2^53 an f64 no longer tells integers apart; no field here is that large.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    let whole = number.as_i64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < EXACT)
            .map(|f| f as i64)
    });
    whole
        .and_then(|w| T::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{number} is not an integer in range")))
}

/// [`optional_integer`] for a required field: `#[serde(deserialize_with =
/// "integer")]`.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error;
    optional_integer(deserializer)?.ok_or_else(|| D::Error::custom("expected an integer, not null"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Counted {
        #[serde(deserialize_with = "integer")]
        n: i64,
    }

    #[test]
    fn a_required_integer_accepts_a_whole_float_and_refuses_fractions_and_null() {
        let n = |json: &str| serde_json::from_str::<Counted>(json).map(|c| c.n);
        assert_eq!(n(r#"{"n": 3}"#).ok(), Some(3));
        assert_eq!(n(r#"{"n": 3.0}"#).ok(), Some(3));
        assert!(n(r#"{"n": 3.5}"#).is_err());
        assert!(n(r#"{"n": null}"#).is_err());
    }

    #[derive(Debug, serde::Deserialize)]
    struct Timed {
        #[serde(default, deserialize_with = "optional_integer")]
        ms: Option<u32>,
    }

    fn ms(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<Timed>(json)
            .map(|t| t.ms)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_integer_field_takes_every_json_spelling_of_an_integer_and_nothing_else() {
        assert_eq!(ms("{}"), Ok(None));
        assert_eq!(ms(r#"{"ms": null}"#), Ok(None));
        assert_eq!(ms(r#"{"ms": 4200}"#), Ok(Some(4200)));
        assert_eq!(ms(r#"{"ms": 4200.0}"#), Ok(Some(4200)));
        assert_eq!(ms(r#"{"ms": 42e2}"#), Ok(Some(4200)));
        for bad in [
            r#"{"ms": 4.5}"#,
            r#"{"ms": -1}"#,
            r#"{"ms": 1e300}"#,
            r#"{"ms": "5"}"#,
        ] {
            assert!(ms(bad).is_err(), "{bad}");
        }
    }
}
