//! Making sure every error leaves as `application/problem+json`: panics,
//! timeouts, and the plain-text errors axum and tower-http produce on their own
//! (404/405 from routing, 413 from the body limit, extractor rejections).

use std::any::Any;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{AppError, problem_response};

/// Largest framework error body we read to reuse as the problem's detail.
const MAX_DETAIL_BYTES: usize = 2048;

/// Turns a caught panic into a 500 problem; the panic message goes to the log only.
pub fn panic_to_problem(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %message, "handler panicked");
    problem_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "An unexpected error occurred; it has been logged.".into(),
        Vec::new(),
    )
}

/// How long one video chunk upload may take, whatever HTTP_REQUEST_TIMEOUT says.
pub const CHUNK_UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `request` for at most `limit`. The handler's future is dropped at the
/// deadline, which releases any pooled connection it held.
pub async fn with_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::Timeout.into_response(),
    }
}

fn slug_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation-error",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Rewrites a framework-made error response (plain text or no body) into a
/// problem document; every other response passes unchanged.
pub async fn framework_error_to_problem(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Framework errors are plain text or bodiless; anything else (a problem, or a
    // deliberate JSON body such as /ready's 503 report) is left as it is.
    let framework_made = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !framework_made {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Framework errors carry a short plain-text explanation; keep it as the detail.
    let detail = if parts.headers.contains_key(header::CONTENT_ENCODING) {
        None
    } else {
        axum::body::to_bytes(body, MAX_DETAIL_BYTES)
            .await
            .ok()
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    let detail = detail.unwrap_or_else(|| match status {
        StatusCode::NOT_FOUND => "The resource does not exist.".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed on this resource.".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is too large.".to_owned(),
        s => s.canonical_reason().unwrap_or("Error").to_owned(),
    });
    let mut problem = problem_response(status, slug_for(status), detail, Vec::new());
    // Keep headers that matter to the client (Allow on 405, Retry-After, CORS...).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *problem.status_mut() = status;
    let (mut new_parts, new_body) = problem.into_parts();
    new_parts.extensions = parts.extensions;
    Response::from_parts(new_parts, new_body)
}
