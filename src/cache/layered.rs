//! The read-through cache for public data: L1 in-process (moka) over L2 Redis
//! over the loader (Postgres).
//!
//! Values are stored serialized, with their strong ETag computed once, so a hit
//! costs a hash-map lookup and a clone of a reference-counted buffer — the
//! response is written straight from it.
//!
//! **Single flight.** Concurrent misses for one key in one instance run one
//! load (moka's `try_get_with`); the others wait for its result.
//!
//! **Invalidation by generation.** Every namespace has a generation counter in
//! Redis (`<prefix>cache:gen:<ns>`). L2 keys embed it
//! (`<prefix>cache:<ns>:<generation>:<key>`), and one Lua script reads the
//! generation and the value in a single round trip, so after a bump no instance
//! can read the old generation's values from Redis, whatever happened to
//! pub/sub. L1 keys embed a *local* generation per namespace; a write bumps it
//! here at once and publishes the namespace on `<prefix>cache:invalidate`,
//! and every other instance's subscriber bumps its own. A value loaded while a
//! bump happened is stored under the old generation, where nobody looks:
//! there is no window in which a stale load can overwrite a fresh one.
//!
//! **Redis trouble never fails a request.** L2 is skipped while the Redis
//! circuit is open; a write that could not bump the Redis generation is
//! remembered and bumped as soon as Redis is back; a lost subscription drops
//! every L1 entry when it is re-established (messages may have been missed).
//! While Redis is unreachable, other instances' L1 entries go stale for at most
//! their L1 TTL.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use moka::Expiry;
use serde::Serialize;
use tokio::sync::watch;

use super::redis::Redis;
use super::{Namespace, Ttls};
use crate::auth::accounts::Accounts;
use crate::config::CacheConfig;
use crate::db::shards::{MAP_CHANGED_MESSAGE, Shards};
use crate::error::{AppError, AppResult, is_busy, is_unavailable};
use crate::http::caching::{etag_of, if_none_match_hits};
use crate::metrics::Metrics;

const NAMESPACES: usize = Namespace::ALL.len();

/// Length of a stored ETag (`"` + 32 hex digits + `"`), which prefixes the body
/// in Redis.
const ETAG_LEN: usize = 34;

/// One cached representation: the JSON body and its strong ETag.
#[derive(Debug)]
pub struct Cached {
    pub body: Bytes,
    pub etag: HeaderValue,
    l1_ttl: Duration,
    /// The L1 slot this entry was loaded for (None when the cache is off):
    /// the fast path (src/http/fast_path.rs) replays it only while that slot
    /// is current.
    origin: Option<Origin>,
    /// When it was made: with `l1_ttl`, when L1 drops it.
    created: Instant,
    /// The gzip encoding of `body` with its own ETag, made by the first
    /// request of this entry that accepts gzip (once per entry and instance;
    /// every later hit copies bytes). None when the body is below the size
    /// worth compressing.
    gzip: OnceLock<Option<Encoded>>,
    /// The brotli encoding, made the same way.
    brotli: OnceLock<Option<Encoded>>,
}

/// The L1 slot an entry was loaded for.
#[derive(Debug, Clone, Copy)]
struct Origin {
    namespace: Namespace,
    generation: u64,
}

/// Attached to a response made by [`Cached::respond_public`]: this request
/// target is answered by this entry for every caller, so the fast path may
/// answer the same target from it, without routing, while the entry is
/// current. `route` is filled in by the observe middleware.
#[derive(Debug, Clone)]
pub struct Replayable {
    pub cached: Arc<Cached>,
    pub cache_control: &'static str,
    pub route: Option<axum::extract::MatchedPath>,
}

/// One encoded variant of a cached body.
#[derive(Debug)]
struct Encoded {
    body: Bytes,
    etag: HeaderValue,
}

impl Cached {
    fn new(body: Bytes, etag: &str, l1_ttl: Duration, origin: Option<Origin>) -> AppResult<Self> {
        let etag = HeaderValue::from_str(etag).map_err(|e| AppError::Internal(e.into()))?;
        Ok(Self {
            body,
            etag,
            l1_ttl,
            origin,
            created: Instant::now(),
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
        })
    }

    /// When L1 drops this entry (its TTL from when it was made).
    pub fn l1_expires_at(&self) -> Instant {
        self.created + self.l1_ttl
    }

    /// Bytes this entry holds or may come to hold: the body, and each encoded
    /// variant as made or, until it is made (on the first request that asks
    /// for it, after the caches weighed the entry), half the body. JSON
    /// compresses to a fifth or less, so the caches' byte bounds stay bounds.
    pub fn weight(&self) -> usize {
        let body = self.body.len();
        let compressible = body as u64 >= crate::app::COMPRESSION_MIN_BYTES;
        let variant = |v: &OnceLock<Option<Encoded>>| match v.get() {
            Some(made) => made.as_ref().map_or(0, |e| e.body.len()),
            None if compressible => body / 2,
            None => 0,
        };
        body + variant(&self.gzip) + variant(&self.brotli)
    }

    /// Like [`Cached::respond`], for a response that depends on nothing but
    /// the request target and the `Accept-Encoding` and `If-None-Match`
    /// headers (no caller identity, no per-request limit): it is marked
    /// [`Replayable`], so the fast path may answer the same target from this
    /// entry.
    pub fn respond_public(
        self: &Arc<Self>,
        request: &HeaderMap,
        cache_control: &'static str,
    ) -> Response {
        let mut response = self.respond(request, cache_control);
        if self.origin.is_some() {
            response.extensions_mut().insert(Replayable {
                cached: self.clone(),
                cache_control,
                route: None,
            });
        }
        response
    }

    /// The variant for `coding`, compressed on first use; None for identity
    /// and for bodies below the size worth compressing.
    fn variant(&self, coding: Coding) -> Option<&Encoded> {
        let slot = match coding {
            Coding::Identity => return None,
            Coding::Gzip => &self.gzip,
            Coding::Brotli => &self.brotli,
        };
        slot.get_or_init(|| {
            if (self.body.len() as u64) < crate::app::COMPRESSION_MIN_BYTES {
                return None;
            }
            let compressed = encode(coding, &self.body)?;
            // A per-encoding strong tag: `"<identity tag without its
            // closing quote>-<coding>"`.
            let identity = self.etag.to_str().ok()?;
            let tag = format!("{}-{}\"", identity.strip_suffix('"')?, coding.token());
            Some(Encoded {
                body: Bytes::from(compressed),
                etag: HeaderValue::from_str(&tag).ok()?,
            })
        })
        .as_ref()
    }

    /// 200 with the body, or 304 when `If-None-Match` already names the
    /// representation this request would get; both carry its ETag,
    /// `cache_control` and `Vary: Accept-Encoding`. A client that accepts
    /// brotli or gzip gets the stored variant it prefers (brotli on a tie:
    /// it is smaller); the compression layer leaves a response that has a
    /// `Content-Encoding` alone.
    pub fn respond(&self, request: &HeaderMap, cache_control: &'static str) -> Response {
        let coding = preferred_coding(request);
        let encoded = self.variant(coding);
        let (body, etag) = match encoded {
            Some(e) => (&e.body, &e.etag),
            None => (&self.body, &self.etag),
        };
        let hit = etag
            .to_str()
            .is_ok_and(|tag| if_none_match_hits(request, tag));
        let mut response = if hit {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body.clone(),
            )
                .into_response();
            if encoded.is_some() {
                response.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(coding.token()),
                );
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        response
    }

    /// The Redis representation: the ETag, then the body.
    fn to_l2(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ETAG_LEN + self.body.len());
        out.extend_from_slice(self.etag.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    fn from_l2(raw: Vec<u8>, l1_ttl: Duration, origin: Option<Origin>) -> Option<Self> {
        if raw.len() < ETAG_LEN {
            return None;
        }
        let mut body = Bytes::from(raw);
        let etag = body.split_to(ETAG_LEN);
        let etag = HeaderValue::from_maybe_shared(etag).ok()?;
        Some(Self {
            body,
            etag,
            l1_ttl,
            origin,
            created: Instant::now(),
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
        })
    }
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// Brotli at quality 5, the knee for our pages (benches/encodings.rs): a few
/// per cent smaller than gzip for twice its one-time cost, where quality 11
/// costs a hundred times more (a variant is made once per entry and instance,
/// but the questions namespace is reloaded after every vote).
fn brotli(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::with_capacity(body.len() / 4);
    {
        let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        encoder.write_all(body).ok()?;
        encoder.flush().ok()?;
    }
    Some(out)
}

/// `body` in `coding` as a cached variant stores it (None for identity, or
/// if the encoder fails). Public for `benches/encodings.rs`.
pub fn encode(coding: Coding, body: &[u8]) -> Option<Vec<u8>> {
    match coding {
        Coding::Identity => None,
        Coding::Gzip => gzip(body),
        Coding::Brotli => brotli(body),
    }
}

/// A content coding a cached body is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// Its `Content-Encoding` token (and ETag suffix).
    pub fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
        }
    }
}

/// Whether `Accept-Encoding` carries weights (`;q=`). Only weights can refuse
/// a coding, and only with them do parsers disagree on malformed input: the
/// fast path routes such requests, and the middleware asks the compression
/// layer whether it would refuse them.
pub fn has_weighted_codings(request: &HeaderMap) -> bool {
    request
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .any(|value| value.as_bytes().contains(&b';'))
}

/// The coding `Accept-Encoding` prefers among brotli and gzip: the one with
/// the higher q (an explicit entry wins over `*`; brotli on a tie), identity
/// when neither is acceptable (q=0, or not named and no `*`).
pub fn preferred_coding(request: &HeaderMap) -> Coding {
    let (mut gzip, mut brotli, mut star) = (None, None, None);
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    let p = p.trim();
                    p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))
                })
                .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
                .next()
                .unwrap_or(1.0);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(q);
            } else if coding.eq_ignore_ascii_case("br") {
                brotli = Some(q);
            } else if coding == "*" {
                star = Some(q);
            }
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    let brotli = brotli.or(star).unwrap_or(0.0);
    if brotli > 0.0 && brotli >= gzip {
        Coding::Brotli
    } else if gzip > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct L1Key {
    namespace: Namespace,
    generation: u64,
    key: Box<str>,
}

/// Each entry lives for its namespace's L1 TTL.
struct PerEntryTtl;

impl Expiry<L1Key, Arc<Cached>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &L1Key,
        value: &Arc<Cached>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.l1_ttl)
    }
}

/// The layered cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    l1: moka::future::Cache<L1Key, Arc<Cached>>,
    ttls: [Ttls; NAMESPACES],
    /// Local generation per namespace (part of every L1 key).
    l1_generations: [AtomicU64; NAMESPACES],
    /// Per namespace, invalidations whose Redis generation bump has not
    /// completed yet (in flight, or Redis was unreachable). While non-zero,
    /// this instance neither reads nor writes that namespace in L2, which may
    /// still hold the old generation's values.
    pending: [AtomicU64; NAMESPACES],
    redis: Redis,
    prefix: String,
    channel: String,
    get_script: redis::Script,
    /// cache_requests_total by [namespace][l1, l2][hit, miss, error].
    counters: [[[prometheus::IntCounter; 3]; 2]; NAMESPACES],
    metrics: Metrics,
}

/// Reads the generation and the value of the current generation in one trip.
/// KEYS[1] = generation key; ARGV[1] = value key prefix; ARGV[2] = key.
const GET_SCRIPT: &str = r"
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation .. ':' .. ARGV[2])}
";

impl Cache {
    pub fn new(config: &CacheConfig, redis: Redis, prefix: &str, metrics: Metrics) -> Self {
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_max_bytes)
            .weigher(|key: &L1Key, value: &Arc<Cached>| {
                let bytes = key.key.len() + value.weight() + 128;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        // Every series exists from the start (at zero) for dashboards/alerts.
        let counters = Namespace::ALL.map(|namespace| {
            ["l1", "l2"].map(|layer| {
                ["hit", "miss", "error"].map(|result| {
                    metrics.cache_requests_total.with_label_values(&[
                        layer,
                        namespace.key(),
                        result,
                    ])
                })
            })
        });
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                l1,
                ttls: config.ttls,
                l1_generations: std::array::from_fn(|_| AtomicU64::new(0)),
                pending: std::array::from_fn(|_| AtomicU64::new(0)),
                redis,
                prefix: format!("{prefix}cache:"),
                channel: format!("{prefix}cache:invalidate"),
                get_script: redis::Script::new(GET_SCRIPT),
                counters,
                metrics,
            }),
        }
    }

    pub fn ttls(&self, namespace: Namespace) -> Ttls {
        self.inner.ttls[namespace.index()]
    }

    /// Counts a lookup on a pre-resolved counter: a hit is on the hot path,
    /// and resolving labels (hashing three strings) would cost more than it.
    fn count(&self, layer: &str, namespace: Namespace, result: &str) {
        let layer = usize::from(layer == "l2");
        let result = match result {
            "hit" => 0,
            "miss" => 1,
            _ => 2,
        };
        self.inner.counters[namespace.index()][layer][result].inc();
    }

    /// Is `cached` still what L1 would answer for its key: loaded under the
    /// namespace's current generation and not past its L1 TTL? Counts an L1
    /// hit when it is (the fast path's lookups are L1 hits by another route).
    pub fn replay_current(&self, cached: &Cached, now: Instant) -> bool {
        let Some(origin) = cached.origin else {
            return false;
        };
        let current = self.inner.enabled
            && self.inner.l1_generations[origin.namespace.index()].load(Ordering::Acquire)
                == origin.generation
            && now.saturating_duration_since(cached.created) < cached.l1_ttl;
        if current {
            self.count("l1", origin.namespace, "hit");
        }
        current
    }

    /// `CACHE_ENABLED`.
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Bytes L1 may hold (`CACHE_L1_MAX_BYTES`).
    pub fn l1_max_bytes(&self) -> u64 {
        self.inner.l1.policy().max_capacity().unwrap_or(0)
    }

    /// The cached representation of `key`, or the value `load` produces,
    /// serialized and stored in both layers. Concurrent misses for one key in
    /// this instance share one load. Errors are never cached.
    pub async fn get_or_load<T, F, Fut>(
        &self,
        namespace: Namespace,
        key: &str,
        load: F,
    ) -> AppResult<Arc<Cached>>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let inner = &self.inner;
        let l1_ttl = self.ttls(namespace).l1;
        if !inner.enabled {
            return Ok(Arc::new(serialize(&load().await?, l1_ttl, None)?));
        }
        let generation = inner.l1_generations[namespace.index()].load(Ordering::Acquire);
        let l1_key = L1Key {
            namespace,
            generation,
            key: key.into(),
        };
        if let Some(hit) = inner.l1.get(&l1_key).await {
            self.count("l1", namespace, "hit");
            return Ok(hit);
        }
        self.count("l1", namespace, "miss");
        inner
            .l1
            .try_get_with(
                l1_key,
                self.load_through_l2(namespace, generation, key, load),
            )
            .await
            .map_err(unshare)
    }

    async fn load_through_l2<T, F, Fut>(
        &self,
        namespace: Namespace,
        l1_generation: u64,
        key: &str,
        load: F,
    ) -> AppResult<Arc<Cached>>
    where
        T: Serialize,
        F: FnOnce() -> Fut,
        Fut: Future<Output = AppResult<T>>,
    {
        let ttls = self.ttls(namespace);
        let origin = Some(Origin {
            namespace,
            generation: l1_generation,
        });
        if ttls.l2.is_zero() {
            return Ok(Arc::new(serialize(&load().await?, ttls.l1, origin)?));
        }
        let generation = match self.l2_get(namespace, key).await {
            L2Lookup::Hit(raw) => {
                if let Some(cached) = Cached::from_l2(raw, ttls.l1, origin) {
                    self.count("l2", namespace, "hit");
                    return Ok(Arc::new(cached));
                }
                // Unreadable (written by an incompatible version): reload it.
                self.count("l2", namespace, "error");
                None
            }
            L2Lookup::Miss(generation) => {
                self.count("l2", namespace, "miss");
                Some(generation)
            }
            L2Lookup::Unavailable => {
                self.count("l2", namespace, "error");
                None
            }
            L2Lookup::Bypassed => None,
        };
        let cached = serialize(&load().await?, ttls.l1, origin)?;
        if let Some(generation) = generation {
            self.l2_set(namespace, generation, key, &cached, ttls.l2)
                .await;
        }
        Ok(Arc::new(cached))
    }

    async fn l2_get(&self, namespace: Namespace, key: &str) -> L2Lookup {
        let inner = &self.inner;
        if inner.pending[namespace.index()].load(Ordering::Acquire) > 0 {
            return L2Lookup::Bypassed;
        }
        if !inner.redis.available() {
            return L2Lookup::Unavailable;
        }
        let mut conn = inner.redis.connection();
        let result: Result<(String, Option<Vec<u8>>), _> = inner
            .get_script
            .key(self.generation_key(namespace))
            .arg(format!("{}{}:", inner.prefix, namespace.key()))
            .arg(key)
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok((generation, value)) => {
                inner.redis.report_success();
                match value {
                    Some(raw) => L2Lookup::Hit(raw),
                    None => L2Lookup::Miss(generation),
                }
            }
            Err(e) => {
                inner.redis.report_failure(&e);
                L2Lookup::Unavailable
            }
        }
    }

    async fn l2_set(
        &self,
        namespace: Namespace,
        generation: String,
        key: &str,
        cached: &Cached,
        ttl: Duration,
    ) {
        let inner = &self.inner;
        if !inner.redis.available() {
            return;
        }
        let redis_key = format!("{}{}:{generation}:{key}", inner.prefix, namespace.key());
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = inner.redis.connection();
        let result: Result<(), _> = redis::cmd("SET")
            .arg(redis_key)
            .arg(cached.to_l2())
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(()) => inner.redis.report_success(),
            Err(e) => inner.redis.report_failure(&e),
        }
    }

    fn generation_key(&self, namespace: Namespace) -> String {
        format!("{}gen:{}", self.inner.prefix, namespace.key())
    }

    /// Drops every cached value of `namespace`, here at once and on every other
    /// instance through Redis (generation bump + pub/sub). Call it after the
    /// write's transaction has committed. Never fails: if Redis is unreachable
    /// the bump is retried when it is back.
    pub async fn invalidate(&self, namespace: Namespace) {
        self.invalidate_all(&[namespace]).await;
    }

    /// [`Cache::invalidate`] for several namespaces, with one Redis
    /// round trip for all of them.
    pub async fn invalidate_all(&self, namespaces: &[Namespace]) {
        let inner = &self.inner;
        for &namespace in namespaces {
            inner.pending[namespace.index()].fetch_add(1, Ordering::AcqRel);
            self.bump_local(namespace, "local");
        }
        if inner.redis.available() {
            self.flush_pending().await;
        }
    }

    /// Tells every other instance that an account's role or state changed
    /// (they drop their cached copy). Best effort: if Redis is unreachable
    /// the other instances' copies expire within `ACCOUNT_CACHE_TTL`.
    pub async fn announce_account_change(&self, id: uuid::Uuid) {
        let inner = &self.inner;
        if !inner.redis.available() {
            return;
        }
        let mut conn = inner.redis.connection();
        let published: Result<i64, _> = redis::cmd("PUBLISH")
            .arg(&inner.channel)
            .arg(format!("{ACCOUNT_PREFIX}{id}"))
            .query_async(&mut conn)
            .await;
        match published {
            Ok(_) => inner.redis.report_success(),
            Err(e) => inner.redis.report_failure(&e),
        }
    }

    fn bump_local(&self, namespace: Namespace, origin: &str) {
        self.inner.l1_generations[namespace.index()].fetch_add(1, Ordering::AcqRel);
        self.inner
            .metrics
            .cache_invalidations_total
            .with_label_values(&[namespace.key(), origin])
            .inc();
    }

    /// Bumps the Redis generation of every namespace written while Redis was
    /// unreachable, and tells the other instances. Returns false if Redis failed.
    async fn flush_pending(&self) -> bool {
        let inner = &self.inner;
        let mut pipe = redis::pipe();
        let mut flushed = Vec::new();
        for namespace in Namespace::ALL {
            let seen = inner.pending[namespace.index()].load(Ordering::Acquire);
            if seen == 0 {
                continue;
            }
            pipe.cmd("INCR")
                .arg(self.generation_key(namespace))
                .ignore()
                .cmd("PUBLISH")
                .arg(&inner.channel)
                .arg(namespace.key())
                .ignore();
            flushed.push((namespace, seen));
        }
        if flushed.is_empty() {
            return true;
        }
        let mut conn = inner.redis.connection();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                inner.redis.report_success();
                for (namespace, seen) in flushed {
                    // Invalidations that arrived during the bump need another.
                    let _ = inner.pending[namespace.index()].compare_exchange(
                        seen,
                        0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                true
            }
            Err(e) => {
                inner.redis.report_failure(&e);
                false
            }
        }
    }

    /// Listens for other instances' invalidations until `stop` turns true,
    /// resubscribing after any failure. Each (re)subscription drops every L1
    /// entry (messages may have been missed meanwhile) and flushes pending
    /// generation bumps.
    pub async fn run_subscriber(
        self,
        client: redis::Client,
        response_timeout: Duration,
        accounts: Accounts,
        shards: Option<Arc<Shards>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut connected_before = false;
        loop {
            let session = self.subscribe_once(
                &client,
                response_timeout,
                &accounts,
                shards.as_deref(),
                &mut connected_before,
            );
            tokio::select! {
                _ = stop.changed() => return,
                outcome = session => {
                    if let Err(e) = outcome {
                        tracing::debug!(error = %e, "cache invalidation subscription lost; retrying");
                    }
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn subscribe_once(
        &self,
        client: &redis::Client,
        response_timeout: Duration,
        accounts: &Accounts,
        shards: Option<&Shards>,
        connected_before: &mut bool,
    ) -> Result<(), redis::RedisError> {
        let inner = &self.inner;
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&inner.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(response_timeout * 4, connect)
            .await
            .map_err(|_| timeout_error("subscribing"))??;
        if *connected_before {
            // We may have missed invalidations while disconnected.
            for namespace in Namespace::ALL {
                self.bump_local(namespace, "resync");
            }
            accounts.forget_all();
            if let Some(shards) = shards {
                shards.request_reload();
            }
        }
        *connected_before = true;
        self.flush_pending().await;

        let (mut sink, mut stream) = pubsub.split();
        // A half-open connection (a partition, a blackholed host) never ends the
        // stream: ping it so such a subscription is noticed and replaced.
        let mut heartbeat = tokio::time::interval(Duration::from_secs(2));
        heartbeat.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(timeout_error("subscription closed"));
                    };
                    let payload: String = message.get_payload().unwrap_or_default();
                    if payload == MAP_CHANGED_MESSAGE {
                        if let Some(shards) = shards {
                            shards.request_reload();
                        }
                    } else if let Some(id) = payload.strip_prefix(ACCOUNT_PREFIX) {
                        if let Ok(id) = id.parse() {
                            accounts.forget(id).await;
                        }
                    } else if let Ok(namespace) = payload.parse::<Namespace>() {
                        self.bump_local(namespace, "remote");
                    }
                }
                _ = heartbeat.tick() => {
                    let ping = sink.ping::<String>();
                    match tokio::time::timeout(response_timeout * 4, ping).await {
                        Ok(Ok(_)) => {
                            if inner.pending.iter().any(|p| p.load(Ordering::Acquire) > 0) {
                                self.flush_pending().await;
                            }
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(timeout_error("subscription ping")),
                    }
                }
            }
        }
    }
}

/// Invalidation messages about an account are `account:<uuid>`; every other
/// message is a namespace name.
const ACCOUNT_PREFIX: &str = "account:";

/// For commands that change data outside a running server (`seed`, `admin`):
/// bumps the Redis generation of `namespaces` and tells every running
/// instance, through the same channel they listen on, to drop those
/// namespaces and the cached state of `accounts`.
pub async fn announce_from_outside(
    redis_url: &str,
    key_prefix: &str,
    namespaces: &[Namespace],
    accounts: &[uuid::Uuid],
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let channel = format!("{key_prefix}cache:invalidate");
    let mut pipe = redis::pipe();
    for namespace in namespaces {
        pipe.cmd("INCR")
            .arg(format!("{key_prefix}cache:gen:{}", namespace.key()))
            .ignore()
            .cmd("PUBLISH")
            .arg(&channel)
            .arg(namespace.key())
            .ignore();
    }
    for id in accounts {
        pipe.cmd("PUBLISH")
            .arg(&channel)
            .arg(format!("{ACCOUNT_PREFIX}{id}"))
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await
}

/// Tells every running instance to reload the shard map (after a bucket
/// move flipped it), on the channel they listen on for invalidations.
pub async fn announce_shard_map(
    redis_url: &str,
    key_prefix: &str,
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PUBLISH")
        .arg(format!("{key_prefix}cache:invalidate"))
        .arg(crate::db::shards::MAP_CHANGED_MESSAGE)
        .query_async::<()>(&mut conn)
        .await
}

enum L2Lookup {
    Hit(Vec<u8>),
    /// Not in Redis; the current generation, to store the loaded value under.
    Miss(String),
    Unavailable,
    /// Skipped: an invalidation of the namespace is not yet in Redis.
    Bypassed,
}

fn timeout_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "timed out", what.to_owned()))
}

fn serialize<T: Serialize>(
    value: &T,
    l1_ttl: Duration,
    origin: Option<Origin>,
) -> AppResult<Cached> {
    let body = serde_json::to_vec(value).map_err(|e| AppError::Internal(e.into()))?;
    let etag = etag_of(&body);
    Cached::new(Bytes::from(body), &etag, l1_ttl, origin)
}

/// The error of a load shared by several waiters: the original when this
/// caller was the last holder, otherwise an equivalent that keeps the status.
fn unshare(error: Arc<AppError>) -> AppError {
    match Arc::try_unwrap(error) {
        Ok(error) => error,
        Err(shared) => match shared.as_ref() {
            AppError::NotFound(d) => AppError::NotFound(d.clone()),
            AppError::Validation(v) => AppError::Validation(v.clone()),
            AppError::BadRequest(d) => AppError::BadRequest(d.clone()),
            AppError::Unavailable(d) => AppError::Unavailable(d.clone()),
            AppError::Timeout => AppError::Timeout,
            AppError::Database(e) if is_unavailable(e) || is_busy(e) => AppError::Unavailable(
                "The database is temporarily unavailable; retry shortly.".into(),
            ),
            other => AppError::Internal(anyhow::anyhow!("shared cache load failed: {other}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn request(accept: Option<&'static str>, if_none_match: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(a));
        }
        if let Some(tag) = if_none_match {
            headers.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(tag).expect("tag"),
            );
        }
        headers
    }

    fn entry(len: usize) -> Cached {
        let body = format!("[{}]", "1,".repeat(len / 2).trim_end_matches(','));
        serialize(
            &serde_json::from_str::<serde_json::Value>(&body).expect("json"),
            Duration::from_secs(1),
            None,
        )
        .expect("entry")
    }

    async fn bytes(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec()
    }

    #[test]
    fn an_entry_weighs_its_unmade_variants_as_half_its_body_then_as_made() {
        let small = entry(100);
        assert_eq!(small.weight(), small.body.len(), "too small to compress");
        let page = entry(8000);
        let body = page.body.len();
        assert_eq!(page.weight(), body + body / 2 + body / 2);
        let gzip = page.variant(Coding::Gzip).expect("gzip").body.len();
        assert!(
            gzip < body / 2,
            "a JSON page compresses well: {gzip} of {body}"
        );
        assert_eq!(page.weight(), body + gzip + body / 2);
        let brotli = page.variant(Coding::Brotli).expect("brotli").body.len();
        assert_eq!(page.weight(), body + gzip + brotli);
    }

    #[test]
    fn accept_encoding_is_read_with_its_q_values() {
        let preferred = |v| preferred_coding(&request(Some(v), None));
        assert_eq!(preferred("gzip"), Coding::Gzip);
        assert_eq!(preferred("GZIP"), Coding::Gzip);
        assert_eq!(preferred("x-gzip, deflate"), Coding::Gzip);
        assert_eq!(preferred("br, gzip;q=0.5, deflate"), Coding::Brotli);
        assert_eq!(
            preferred("gzip, deflate, br, zstd"),
            Coding::Brotli,
            "a tie"
        );
        assert_eq!(preferred("br;q=0.4, gzip;q=0.9"), Coding::Gzip);
        assert_eq!(preferred("*"), Coding::Brotli);
        assert_eq!(preferred("*, br;q=0"), Coding::Gzip);
        assert_eq!(preferred("br;q=0, gzip;q=0"), Coding::Identity);
        assert_eq!(preferred("*, gzip;q=0, br;q=0"), Coding::Identity);
        assert_eq!(preferred("deflate, zstd"), Coding::Identity);
        assert_eq!(preferred("identity"), Coding::Identity);
        assert_eq!(preferred("gzip;q=bogus"), Coding::Identity);
        assert_eq!(preferred_coding(&HeaderMap::new()), Coding::Identity);
    }

    #[tokio::test]
    async fn a_brotli_client_gets_the_stored_brotli_variant_with_its_own_tag() {
        let cached = entry(4000);
        let plain = cached.respond(&request(None, None), "public, max-age=60");
        let identity = bytes(plain).await;
        let compressed = cached.respond(&request(Some("gzip, br"), None), "public, max-age=60");
        assert_eq!(compressed.headers()[header::CONTENT_ENCODING], "br");
        assert_eq!(compressed.headers()[header::VARY], "accept-encoding");
        let tag = compressed.headers()[header::ETAG]
            .to_str()
            .expect("tag")
            .to_owned();
        assert!(tag.ends_with("-br\""), "{tag}");
        let body = bytes(compressed).await;
        assert!(body.len() < identity.len());
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&body[..], 4096)
            .read_to_end(&mut decoded)
            .expect("brotli");
        assert_eq!(decoded, identity);
        let again = cached.respond(&request(Some("br"), Some(&tag)), "public, max-age=60");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let gzip_only = cached.respond(&request(Some("gzip"), Some(&tag)), "public, max-age=60");
        assert_eq!(gzip_only.status(), StatusCode::OK, "another representation");
        assert_eq!(gzip_only.headers()[header::CONTENT_ENCODING], "gzip");
    }

    #[tokio::test]
    async fn a_gzip_client_gets_the_stored_gzip_variant_with_its_own_tag() {
        let cached = entry(4000);
        let plain = cached.respond(&request(None, None), "public, max-age=60");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let identity_tag = plain.headers()[header::ETAG].clone();
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        let identity = bytes(plain).await;

        let zipped = cached.respond(&request(Some("gzip, deflate"), None), "public, max-age=60");
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::VARY], "accept-encoding");
        let tag = zipped.headers()[header::ETAG]
            .to_str()
            .expect("tag")
            .to_owned();
        assert_ne!(tag, identity_tag.to_str().expect("tag"));
        assert!(tag.ends_with("-gzip\""), "{tag}");
        let compressed = bytes(zipped).await;
        assert!(compressed.len() < identity.len());
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut decoded)
            .expect("gunzip");
        assert_eq!(decoded, identity);

        // Each variant revalidates with its own tag.
        let again = cached.respond(&request(Some("gzip"), Some(&tag)), "public, max-age=60");
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag.as_str());
        let plain_again = cached.respond(
            &request(None, Some(identity_tag.to_str().expect("tag"))),
            "public, max-age=60",
        );
        assert_eq!(plain_again.status(), StatusCode::NOT_MODIFIED);
        let crossed = cached.respond(&request(None, Some(&tag)), "public, max-age=60");
        assert_eq!(
            crossed.status(),
            StatusCode::OK,
            "the gzip tag names another representation"
        );
    }

    #[tokio::test]
    async fn a_small_body_is_never_compressed() {
        let cached = entry(100);
        let response = cached.respond(&request(Some("gzip"), None), "public, max-age=60");
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(response.headers()[header::ETAG], cached.etag);
    }
}
