//! The outermost middleware: gives every request an id, wraps its handling in a
//! tracing span carrying that id, writes one access-log line, and records the
//! request metrics labelled by the matched route template (never the raw path,
//! so label cardinality stays bounded).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Accepts a client's id only if it is short and printable; otherwise makes one,
/// so log lines cannot be forged or bloated through this header.
fn request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
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
    let header_value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &header_value {
        req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    }
    req.extensions_mut().insert(RequestId(id.clone()));
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, method, route = %endpoint);

    metrics.requests_in_flight.inc();
    let guard = InFlight(metrics.requests_in_flight.clone());
    let mut response = next.run(req).instrument(span).await;
    drop(guard);

    let elapsed = started.elapsed();
    let status = response.status();
    metrics
        .requests_total
        .with_label_values(&[method, endpoint.as_str(), status.as_str()])
        .inc();
    metrics
        .request_duration
        .with_label_values(&[endpoint.as_str()])
        .observe(elapsed.as_secs_f64());
    if let Some(value) = header_value {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // The access log line repeats the span's fields so each line stands alone.
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    let status_code = status.as_u16();
    if status.is_server_error() {
        tracing::error!(request_id = %id, method, route = %endpoint, status = status_code, latency_ms, "request failed");
    } else {
        tracing::info!(request_id = %id, method, route = %endpoint, status = status_code, latency_ms, "request");
    }
    response
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
    }
}
