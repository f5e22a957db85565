//! The outermost middleware: gives every request an id, wraps its handling in a
//! tracing span carrying that id, turns framework-made errors into problem
//! documents, writes one access-log line, and records the request metrics
//! labelled by the matched route template (never the raw path, so label
//! cardinality stays bounded).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::cache::layered::Replayable;
use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The client's id if it is short and printable; otherwise a new one, so log
/// lines cannot be forged or bloated through this header.
pub(crate) fn request_id(incoming: Option<&HeaderValue>) -> HeaderValue {
    incoming
        .filter(|id| {
            let id = id.as_bytes();
            !id.is_empty()
                && id.len() <= 128
                && id
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b))
        })
        .cloned()
        .unwrap_or_else(new_request_id)
}

/// A UUIDv7, formatted on the stack: one allocation, the header's own.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Decrements the in-flight gauge even if the request future is dropped
/// (client gone, timeout), so the gauge cannot drift upwards.
struct InFlight(prometheus::IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub async fn observe(State(metrics): State<Metrics>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(req.headers().get(REQUEST_ID_HEADER));
    req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    // The route template (an Arc inside: cloning it copies no string).
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let endpoint = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = method_label(req.method());
    // Both the header and the template are printable ASCII (checked above, or
    // made here; axum's templates are the router's own strings).
    let id_text = id.to_str().unwrap_or("invalid-request-id");
    let span = tracing::info_span!("request", request_id = id_text, method, route = endpoint);

    metrics.requests_in_flight.inc();
    let guard = InFlight(metrics.requests_in_flight.clone());
    // Framework-made errors (404/405 from routing, extractor rejections)
    // leave as problem documents, like the API's own.
    let response = next.run(req).instrument(span).await;
    let mut response = crate::http::problems::framework_error_to_problem(response).await;
    drop(guard);

    // A public cached page learns its route here, for the fast path.
    if let Some(replayable) = response.extensions_mut().get_mut::<Replayable>() {
        replayable.route = matched.clone();
    }

    let elapsed = started.elapsed();
    let status = response.status();
    metrics.record_request(method, endpoint, status, elapsed);
    response.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    log_request(id_text, method, endpoint, status, elapsed);
    response
}

/// The access log line. It repeats the span's fields so each line stands alone.
pub(crate) fn log_request(
    id: &str,
    method: &str,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let status_code = status.as_u16();
    if status.is_server_error() {
        tracing::error!(
            request_id = id,
            method,
            route,
            status = status_code,
            latency_ms,
            "request failed"
        );
    } else {
        tracing::info!(
            request_id = id,
            method,
            route,
            status = status_code,
            latency_ms,
            "request"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_client_request_id_is_kept() {
        let v = HeaderValue::from_static("abc-123_XYZ");
        assert_eq!(request_id(Some(&v)), "abc-123_XYZ");
    }

    #[test]
    fn an_oversized_or_odd_request_id_is_replaced() {
        let long = HeaderValue::from_str(&"a".repeat(500)).expect("valid header");
        assert_ne!(request_id(Some(&long)).len(), 500);
        let odd = HeaderValue::from_static("id with spaces");
        assert_ne!(request_id(Some(&odd)), "id with spaces");
        assert_eq!(request_id(None).len(), 36);
        assert_ne!(request_id(None), request_id(None), "each made id is new");
    }
}
