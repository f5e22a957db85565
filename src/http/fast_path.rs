//! The fast path: repeated anonymous GETs of public cached pages are answered
//! from L1 before routing.
//!
//! A handler whose response depends on nothing but the request target and the
//! `Accept-Encoding` / `If-None-Match` headers answers with
//! [`Cached::respond_public`](crate::cache::Cached::respond_public), which marks
//! the response [`Replayable`]. When such a response leaves the router, this
//! service remembers that its raw request target (path and query, as sent) is
//! answered by that L1 entry. The next eligible GET of the same target is
//! answered from the entry directly while it is still current (the namespace's
//! generation has not moved and its L1 TTL has not run out), so it skips
//! routing, query parsing, the cache-key `format!`, compression, CORS and the
//! per-route middleware. Anything else (a stale entry, an unknown target)
//! goes through the router as before, and a replayable answer refreshes the
//! memo.
//!
//! What a replayed response holds is what the router would have sent: the same
//! [`Cached::respond`](crate::cache::Cached::respond) makes it, the headers the
//! CORS layer adds for the request's `Origin` (asked of the layer at start-up)
//! are added too, and it gets its own request id, access-log line and request
//! metrics under the route template. `tests/it/fast_path.rs` compares the two
//! paths header by header.
//!
//! Only GETs without `Authorization` (the caller is anonymous) and without a
//! body are eligible. The rate-limited similar-questions search is not
//! replayable: its handler must run to spend the caller's limit.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Either, Ready, ready};
use tower::{Layer, Service, ServiceExt};

use crate::cache::Cache;
use crate::cache::layered::{Cached, Replayable, has_weighted_codings};
use crate::config::CorsOrigins;
use crate::http::observe::{REQUEST_ID_HEADER, log_request, request_id};
use crate::metrics::Metrics;

/// The router behind the fast path. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct FastPath {
    router: Router,
    shared: Option<Arc<Shared>>,
}

struct Shared {
    cache: Cache,
    metrics: Metrics,
    /// Raw request target → the entry that answers it.
    memo: moka::sync::Cache<Box<str>, Arc<Memo>>,
    /// What the CORS layer adds to a GET, by its `Origin`.
    cors: CorsHeaders,
}

/// The headers the CORS layer adds to a plain GET, asked of the layer itself
/// at start-up so the two paths cannot drift apart. They depend only on
/// whether the request has an `Origin` and, with a list of origins, on which
/// listed origin it is (an unlisted one is answered like any other unlisted
/// one). All empty without CORS.
struct CorsHeaders {
    without_origin: HeaderMap,
    unlisted_origin: HeaderMap,
    listed: Vec<(HeaderValue, HeaderMap)>,
}

impl CorsHeaders {
    /// None if the layer does not answer at once (then the fast path stays off).
    fn probe(origins: &CorsOrigins) -> Option<Self> {
        let Some(layer) = crate::app::cors_layer(origins) else {
            return Some(Self {
                without_origin: HeaderMap::new(),
                unlisted_origin: HeaderMap::new(),
                listed: Vec::new(),
            });
        };
        let ask = |origin: Option<&HeaderValue>| {
            let inner = tower::service_fn(|_: Request| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            });
            let mut probe = Request::new(Body::empty());
            *probe.method_mut() = Method::GET;
            if let Some(origin) = origin {
                probe.headers_mut().insert(header::ORIGIN, origin.clone());
            }
            // Every future in this chain is ready at once (no async origin
            // predicate is configured).
            match layer.clone().layer(inner).oneshot(probe).now_or_never() {
                Some(Ok(response)) => Some(response.headers().clone()),
                _ => None,
            }
        };
        let listed = match origins {
            CorsOrigins::List(list) => list
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .map(|o| Some((o.clone(), ask(Some(&o))?)))
                .collect::<Option<Vec<_>>>()?,
            CorsOrigins::None | CorsOrigins::Any => Vec::new(),
        };
        let unlisted = HeaderValue::from_static("https://unlisted.fast-path.invalid");
        let headers = Self {
            without_origin: ask(None)?,
            unlisted_origin: ask(Some(&unlisted))?,
            listed,
        };
        Some(headers)
    }

    fn for_origin(&self, origin: Option<&HeaderValue>) -> &HeaderMap {
        let Some(origin) = origin else {
            return &self.without_origin;
        };
        self.listed
            .iter()
            .find(|(listed, _)| listed == origin)
            .map_or(&self.unlisted_origin, |(_, headers)| headers)
    }
}

/// One remembered answer, with its metric handles resolved once.
struct Memo {
    cached: Arc<Cached>,
    cache_control: &'static str,
    route: Box<str>,
    ok_total: prometheus::IntCounter,
    not_modified_total: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

impl FastPath {
    /// `enabled` is `HTTP_FAST_PATH` (with the cache off there is nothing to
    /// replay, and the fast path is off too). The memo may hold a quarter of
    /// `CACHE_L1_MAX_BYTES` in entries: they are mostly the very entries L1
    /// holds (shared, not copied); only those L1 has already evicted cost
    /// memory of their own, until their TTL ends.
    pub fn new(
        router: Router,
        enabled: bool,
        cache: Cache,
        metrics: Metrics,
        cors: &CorsOrigins,
    ) -> Self {
        let cors = if enabled && cache.enabled() {
            // Without the CORS headers the two paths could not answer alike.
            let probed = CorsHeaders::probe(cors);
            if probed.is_none() {
                tracing::warn!("could not read the CORS headers; the fast path is off");
            }
            probed
        } else {
            None
        };
        let shared = cors.map(|cors| {
            let memo = moka::sync::Cache::<Box<str>, Arc<Memo>>::builder()
                .max_capacity(cache.l1_max_bytes() / 4)
                .weigher(|target, memo| {
                    let bytes = target.len() + memo.cached.weight() + 256;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .expire_after(UntilL1Drops)
                .build();
            Arc::new(Shared {
                cache,
                metrics,
                memo,
                cors,
            })
        });
        Self { router, shared }
    }
}

/// A memo entry lives no longer than L1 keeps its entry, so a target that is
/// never asked again does not keep a stale body alive.
struct UntilL1Drops;

impl moka::Expiry<Box<str>, Arc<Memo>> for UntilL1Drops {
    fn expire_after_create(
        &self,
        _: &Box<str>,
        memo: &Arc<Memo>,
        now: Instant,
    ) -> Option<Duration> {
        Some(memo.cached.l1_expires_at().saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &Box<str>,
        memo: &Arc<Memo>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(memo.cached.l1_expires_at().saturating_duration_since(now))
    }
}

/// A GET without credentials or body, whose `Accept-Encoding` (if any) has no
/// weights. Weights can refuse every coding we hold (`identity;q=0`, `*;q=0`):
/// the router's compression layer answers those 406, and parses malformed
/// weights its own way. Such requests are rare (browsers send plain lists),
/// so they are routed rather than negotiated twice.
fn eligible(request: &Request) -> bool {
    let headers = request.headers();
    request.method() == Method::GET
        && !headers.contains_key(header::AUTHORIZATION)
        && !headers.contains_key(header::CONTENT_LENGTH)
        && !headers.contains_key(header::TRANSFER_ENCODING)
        && !has_weighted_codings(headers)
}

impl Shared {
    /// The remembered answer for this request's target, if it is current.
    fn replay(&self, request: &Request) -> Option<Response> {
        let target = request.uri().path_and_query()?.as_str();
        let memo = self.memo.get(target)?;
        let started = Instant::now();
        if !self.cache.replay_current(&memo.cached, started) {
            self.memo.invalidate(target);
            return None;
        }
        let id = request_id(request.headers().get(REQUEST_ID_HEADER));
        let mut response = memo.cached.respond(request.headers(), memo.cache_control);
        let headers = response.headers_mut();
        let cors = self.cors.for_origin(request.headers().get(header::ORIGIN));
        for (name, value) in cors {
            headers.append(name, value.clone());
        }
        headers.insert(REQUEST_ID_HEADER, id.clone());
        let status = response.status();
        self.metrics.fast_path_replays_total.inc();
        if status == StatusCode::NOT_MODIFIED {
            memo.not_modified_total.inc();
        } else {
            memo.ok_total.inc();
        }
        let elapsed = started.elapsed();
        memo.duration.observe(elapsed.as_secs_f64());
        log_request(
            id.to_str().unwrap_or("invalid-request-id"),
            "GET",
            &memo.route,
            status,
            elapsed,
        );
        Some(response)
    }

    /// Remembers a replayable answer from the router for `target`.
    fn remember(&self, target: &Uri, response: &mut Response) {
        let Some(replayable) = response.extensions_mut().remove::<Replayable>() else {
            return;
        };
        let status = response.status();
        let (Some(route), Some(target), true) = (
            replayable.route,
            target.path_and_query(),
            status == StatusCode::OK || status == StatusCode::NOT_MODIFIED,
        ) else {
            return;
        };
        let route = route.as_str();
        let metrics = &self.metrics;
        let memo = Memo {
            cached: replayable.cached,
            cache_control: replayable.cache_control,
            route: route.into(),
            ok_total: metrics.requests_total.with_label_values(&[
                "GET",
                route,
                StatusCode::OK.as_str(),
            ]),
            not_modified_total: metrics.requests_total.with_label_values(&[
                "GET",
                route,
                StatusCode::NOT_MODIFIED.as_str(),
            ]),
            duration: metrics.request_duration.with_label_values(&[route]),
        };
        self.memo.insert(target.as_str().into(), Arc::new(memo));
    }
}

type Answer = Result<Response, Infallible>;

impl Service<Request> for FastPath {
    type Response = Response;
    type Error = Infallible;
    type Future =
        Either<Ready<Answer>, Either<RouteFuture<Infallible>, BoxFuture<'static, Answer>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A Router is always ready; a replayed answer never reaches it.
        Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let shared = match &self.shared {
            Some(shared) if eligible(&request) => shared,
            _ => return Either::Right(Either::Left(self.router.call(request))),
        };
        if let Some(response) = shared.replay(&request) {
            return Either::Left(ready(Ok(response)));
        }
        let shared = shared.clone();
        let target = request.uri().clone();
        let routed = self.router.call(request);
        Either::Right(Either::Right(Box::pin(async move {
            let mut response = routed.await?;
            shared.remember(&target, &mut response);
            Ok(response)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &[(&'static str, &'static str)]) -> Request {
        let mut request = Request::new(Body::empty());
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        request
    }

    #[test]
    fn a_plain_anonymous_get_is_eligible_whatever_codings_it_lists() {
        assert!(eligible(&get(&[])));
        assert!(eligible(&get(&[(
            "accept-encoding",
            "gzip, deflate, br, zstd"
        )])));
        assert!(eligible(&get(&[("origin", "https://a.example")])));
    }

    #[test]
    fn credentials_a_body_other_methods_or_weighted_codings_are_routed() {
        assert!(!eligible(&get(&[("authorization", "Bearer x")])));
        assert!(!eligible(&get(&[("content-length", "0")])));
        assert!(!eligible(&get(&[("transfer-encoding", "chunked")])));
        for weighted in ["identity;q=0", "br, *;q=0", "gzip;q=bogus, br", "gzip; q=1"] {
            assert!(
                !eligible(&get(&[("accept-encoding", weighted)])),
                "{weighted}"
            );
        }
        let mut head = get(&[]);
        *head.method_mut() = Method::HEAD;
        assert!(!eligible(&head));
    }

    fn allowed(headers: &HeaderMap) -> Option<&str> {
        headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok())
    }

    #[test]
    fn without_cors_no_header_is_added_for_any_origin() {
        let cors = CorsHeaders::probe(&CorsOrigins::None).expect("probed");
        let origin = HeaderValue::from_static("https://a.example");
        assert!(cors.for_origin(None).is_empty());
        assert!(cors.for_origin(Some(&origin)).is_empty());
    }

    #[test]
    fn with_a_list_only_a_listed_origin_is_allowed() {
        let list = CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()]);
        let cors = CorsHeaders::probe(&list).expect("probed");
        let b = HeaderValue::from_static("https://b.example");
        let other = HeaderValue::from_static("https://c.example");
        assert_eq!(
            allowed(cors.for_origin(Some(&b))),
            Some("https://b.example")
        );
        assert_eq!(allowed(cors.for_origin(Some(&other))), None);
        assert_eq!(allowed(cors.for_origin(None)), None);
        assert!(
            cors.for_origin(None).get(header::VARY).is_some(),
            "Vary: Origin even without one"
        );
    }

    #[test]
    fn with_any_origin_every_origin_gets_the_star() {
        let cors = CorsHeaders::probe(&CorsOrigins::Any).expect("probed");
        let origin = HeaderValue::from_static("https://anywhere.example");
        assert_eq!(allowed(cors.for_origin(Some(&origin))), Some("*"));
    }
}
