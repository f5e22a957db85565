//! HTTP caching for public, cacheable responses: a strong `ETag` computed from
//! the body, `If-None-Match` answered with 304 (no body), and the
//! `Cache-Control` the caller chooses. Shared caches (nginx, CDNs) and browsers
//! then revalidate for the price of a hash instead of a transfer.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};

/// `"<first 16 bytes of SHA-256, hex>"`.
pub fn etag_of(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body);
    let mut tag = String::with_capacity(34);
    tag.push('"');
    for byte in &digest[..16] {
        tag.push(char::from(HEX[usize::from(byte >> 4)]));
        tag.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    tag.push('"');
    tag
}

/// Does `If-None-Match` name `etag`? Accepts `*`, lists, and weak forms (`W/"…"`),
/// since If-None-Match uses the weak comparison (RFC 9110 §13.1.2).
pub fn if_none_match_hits(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Serializes `value` as JSON and answers 200 with an ETag, or 304 when the
/// client already has this exact representation.
pub fn json_with_etag<T: Serialize>(
    request: &HeaderMap,
    value: &T,
    cache_control: &'static str,
) -> AppResult<Response> {
    let body = serde_json::to_vec(value).map_err(|e| AppError::Internal(e.into()))?;
    let etag = etag_of(&body);
    let etag_header = HeaderValue::from_str(&etag).map_err(|e| AppError::Internal(e.into()))?;
    let cache_control = HeaderValue::from_static(cache_control);
    if if_none_match_hits(request, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().insert(header::ETAG, etag_header);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache_control);
        return Ok(response);
    }
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    response.headers_mut().insert(header::ETAG, etag_header);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, cache_control);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_etag_is_strong_stable_and_changes_with_the_body() {
        let a = etag_of(b"{\"a\":1}");
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
        assert_eq!(a, etag_of(b"{\"a\":1}"));
        assert_ne!(a, etag_of(b"{\"a\":2}"));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = etag_of(b"x");
        let list: &'static str = Box::leak(format!("\"nope\", W/{tag}").into_boxed_str());
        assert!(if_none_match_hits(&headers(list), &tag));
        assert!(if_none_match_hits(&headers("*"), &tag));
        assert!(!if_none_match_hits(&headers("\"other\""), &tag));
        assert!(!if_none_match_hits(&HeaderMap::new(), &tag));
    }

    #[test]
    fn a_matching_request_gets_304_without_a_body() {
        let value = serde_json::json!({"hello": "world"});
        let first = json_with_etag(&HeaderMap::new(), &value, "public, max-age=60").expect("200");
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG]
            .to_str()
            .expect("ascii")
            .to_owned();
        let mut request = HeaderMap::new();
        request.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&tag).expect("header"),
        );
        let second = json_with_etag(&request, &value, "public, max-age=60").expect("304");
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(second.headers()[header::ETAG], tag.as_str());
    }
}
