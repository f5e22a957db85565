//! Live updates (#16, first part): events from committed writes, fanned out
//! to every instance's subscribers through one Redis Stream.
//!
//! - **Publishing** (after commit, never before): `XADD <prefix>live:log
//!   MAXLEN ~ LIVE_REPLAY_EVENTS * …`. Best effort: the database is the truth,
//!   and a failed publish is counted, not retried.
//! - **Fan-out**: each instance reads the stream with `XREAD BLOCK` on a
//!   connection of its own and hands each event to its local subscribers of
//!   that topic. One stream gives one total order (its ids), which makes
//!   resuming exact; after a Redis restart the reader reconnects and goes on
//!   from the last id it saw.
//! - **Replay**: a reconnecting client sends the last id it got
//!   (`Last-Event-ID`); it is sent what it missed from the stream (its topics
//!   only), or told `reset` when that is older than the retained window.
//! - **Backpressure**: every subscriber has a bounded queue; the reader never
//!   waits for one. A full queue marks the subscriber slow: it is dropped
//!   (`ws_dropped_slow_total`) and its client reconnects and resumes.
//! - **Coalescing**: vote counts are published at most every 200 ms per
//!   question and instance (the latest counts, read after the wait).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Value as RedisValue};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

use crate::cache::redis::Redis;

/// Events a subscriber may have queued before it counts as slow.
pub const SUBSCRIBER_QUEUE: usize = 256;
/// Most topics one connection may follow.
pub const MAX_TOPICS: usize = 20;

/// One event, as sent to clients.
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent {
    /// The stream id (`<ms>-<seq>`): the position to resume after.
    pub id: String,
    pub topic: String,
    pub event: String,
    pub data: Value,
    /// When it was published (ms since the epoch), for the fan-out latency.
    #[serde(skip)]
    pub published_ms: i64,
}

/// A parsed stream id, for ordering.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A topic a client may follow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// New questions in a city.
    City(i64),
    /// One question: its vote counts, answers, video answers.
    Question(Uuid),
    /// A user's own events (their video answers' processing); private.
    User(Uuid),
}

impl Topic {
    pub fn key(&self) -> String {
        match self {
            Self::City(id) => format!("city:{id}"),
            Self::Question(id) => format!("question:{id}"),
            Self::User(id) => format!("user:{id}"),
        }
    }

    /// Parses `city:<id>`, `question:<uuid>`, `user:<uuid>` or `user:me`
    /// (`me` resolved to `signed_in`).
    pub fn parse(raw: &str, signed_in: Option<Uuid>) -> Result<Self, TopicError> {
        let invalid = |why: &str| TopicError::Invalid(format!("{raw:?}: {why}"));
        let (kind, id) = raw
            .split_once(':')
            .ok_or_else(|| invalid("not a topic (city:<id>, question:<id>, user:me)"))?;
        match kind {
            "city" => id
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .map(Self::City)
                .ok_or_else(|| invalid("a city id is a positive integer")),
            "question" => Uuid::parse_str(id)
                .map(Self::Question)
                .map_err(|_| invalid("a question id is a UUID")),
            "user" => {
                let id = if id == "me" {
                    None
                } else {
                    Some(Uuid::parse_str(id).map_err(|_| invalid("a user id is a UUID or me"))?)
                };
                let me = signed_in.ok_or_else(|| {
                    TopicError::NeedsToken(format!("{raw:?} needs an access token"))
                })?;
                if id.is_some_and(|id| id != me) {
                    return Err(TopicError::NotYours(format!(
                        "{raw:?}: only your own user topic"
                    )));
                }
                Ok(Self::User(me))
            }
            _ => Err(invalid("unknown topic kind (city, question, user)")),
        }
    }
}

/// Why a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// Not a topic at all (422).
    Invalid(String),
    /// A private topic without a token (401).
    NeedsToken(String),
    /// Someone else's private topic (403).
    NotYours(String),
}

/// The live layer's metrics.
#[derive(Clone)]
pub struct LiveMetrics {
    pub connections: IntGaugeVec,
    pub messages_sent_total: IntCounter,
    pub dropped_slow_total: IntCounter,
    pub refused_total: IntCounter,
    pub published_total: IntCounterVec,
    pub fanout_seconds: Histogram,
}

impl LiveMetrics {
    pub fn new() -> Self {
        let connections = IntGaugeVec::new(
            Opts::new(
                "ws_connections",
                "Open live-update connections, by transport (ws, sse)",
            ),
            &["transport"],
        )
        .expect("valid metric");
        for transport in ["ws", "sse"] {
            connections.with_label_values(&[transport]).set(0);
        }
        let messages_sent_total = IntCounter::new(
            "ws_messages_sent_total",
            "Live events written to clients (replayed ones included)",
        )
        .expect("valid metric");
        let dropped_slow_total = IntCounter::new(
            "ws_dropped_slow_total",
            "Live connections dropped because their client read too slowly",
        )
        .expect("valid metric");
        let refused_total = IntCounter::new(
            "ws_refused_total",
            "Live connections refused at the per-instance cap (LIVE_MAX_CONNECTIONS)",
        )
        .expect("valid metric");
        let published_total = IntCounterVec::new(
            Opts::new(
                "live_published_total",
                "Live events published, by outcome (ok, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in ["ok", "failed"] {
            published_total.with_label_values(&[outcome]).inc_by(0);
        }
        let fanout_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "live_fanout_seconds",
                "From an event's publication (after its commit) to its hand-off to a local subscriber",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )
        .expect("valid metric");
        Self {
            connections,
            messages_sent_total,
            dropped_slow_total,
            refused_total,
            published_total,
            fanout_seconds,
        }
    }

    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.messages_sent_total.clone()))?;
        registry.register(Box::new(self.dropped_slow_total.clone()))?;
        registry.register(Box::new(self.refused_total.clone()))?;
        registry.register(Box::new(self.published_total.clone()))?;
        registry.register(Box::new(self.fanout_seconds.clone()))?;
        Ok(())
    }
}

impl Default for LiveMetrics {
    fn default() -> Self {
        Self::new()
    }
}

struct Subscriber {
    tx: mpsc::Sender<Arc<LiveEvent>>,
    slow: Arc<AtomicBool>,
    kick: Arc<Notify>,
}

struct Inner {
    redis: Redis,
    stream_key: String,
    replay_events: usize,
    max_connections: usize,
    topics: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    pending_votes: Mutex<HashSet<Uuid>>,
    closing: watch::Sender<bool>,
    metrics: LiveMetrics,
}

/// The live hub of one process.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("stream", &self.inner.stream_key)
            .field("open", &self.inner.open.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a new subscription starts with.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<LiveEvent>>,
    /// Set (and `kick` notified) when the subscriber was dropped as slow.
    pub slow: Arc<AtomicBool>,
    pub kick: Arc<Notify>,
    /// Turns true when the process shuts down.
    pub closing: watch::Receiver<bool>,
    /// Held for its `Drop`: unregisters the subscriber.
    _guard: SubscriptionGuard,
}

/// Unregisters a subscription when its connection ends.
struct SubscriptionGuard {
    live: Live,
    id: u64,
    topics: Vec<String>,
    transport: &'static str,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.live.inner.topics.write() {
            for topic in &self.topics {
                if let Some(subs) = map.get_mut(topic) {
                    subs.remove(&self.id);
                    if subs.is_empty() {
                        map.remove(topic);
                    }
                }
            }
        }
        self.live.inner.open.fetch_sub(1, Ordering::AcqRel);
        self.live
            .inner
            .metrics
            .connections
            .with_label_values(&[self.transport])
            .dec();
    }
}

/// What a reconnecting client missed.
pub enum Replay {
    /// The events after its position, on its topics, oldest first.
    Events(Vec<Arc<LiveEvent>>),
    /// Its position is older than what the stream keeps: it must refetch.
    Reset,
}

impl Live {
    pub fn new(
        redis: Redis,
        key_prefix: &str,
        replay_events: usize,
        max_connections: usize,
        metrics: LiveMetrics,
    ) -> Self {
        let (closing, _) = watch::channel(false);
        Self {
            inner: Arc::new(Inner {
                redis,
                stream_key: format!("{key_prefix}live:log"),
                replay_events: replay_events.max(1),
                max_connections,
                topics: RwLock::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                open: AtomicUsize::new(0),
                pending_votes: Mutex::new(HashSet::new()),
                closing,
                metrics,
            }),
        }
    }

    pub fn metrics(&self) -> &LiveMetrics {
        &self.inner.metrics
    }

    /// Publishes an event on a topic (call after the write committed).
    pub async fn publish(&self, topic: &Topic, event: &str, data: &Value) {
        let mut conn = self.inner.redis.connection();
        let now = chrono::Utc::now().timestamp_millis();
        let result: Result<String, _> = redis::cmd("XADD")
            .arg(&self.inner.stream_key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.inner.replay_events)
            .arg("*")
            .arg("t")
            .arg(topic.key())
            .arg("e")
            .arg(event)
            .arg("d")
            .arg(data.to_string())
            .arg("at")
            .arg(now)
            .query_async(&mut conn)
            .await;
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => {
                tracing::debug!(error = %e, topic = %topic.key(), "publishing a live event failed");
                "failed"
            }
        };
        self.inner
            .metrics
            .published_total
            .with_label_values(&[outcome])
            .inc();
    }

    /// Publishes a question's vote counts at most every 200 ms: the first
    /// vote schedules a read of the counts after the wait; votes meanwhile
    /// ride along.
    pub fn publish_votes(
        &self,
        db: sqlx::PgPool,
        question: Uuid,
        created_at: chrono::DateTime<chrono::Utc>,
    ) {
        {
            let Ok(mut pending) = self.inner.pending_votes.lock() else {
                return;
            };
            if !pending.insert(question) {
                return;
            }
        }
        let live = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(mut pending) = live.inner.pending_votes.lock() {
                pending.remove(&question);
            }
            let counts: Result<Option<(i32, i32, i32)>, _> = sqlx::query_as(
                "SELECT upvotes, downvotes, score FROM questions WHERE created_at = $1 AND id = $2",
            )
            .bind(created_at)
            .bind(question)
            .fetch_optional(&db)
            .await;
            if let Ok(Some((up, down, score))) = counts {
                live.publish(
                    &Topic::Question(question),
                    "question.votes",
                    &serde_json::json!({"id": question, "upvotes": up, "downvotes": down, "score": score}),
                )
                .await;
            }
        });
    }

    /// Registers a subscriber to `topics`, or None at the connection cap.
    pub fn subscribe(&self, topics: &[Topic], transport: &'static str) -> Option<Subscription> {
        let open = self.inner.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.inner.max_connections {
            self.inner.open.fetch_sub(1, Ordering::AcqRel);
            self.inner.metrics.refused_total.inc();
            return None;
        }
        self.inner
            .metrics
            .connections
            .with_label_values(&[transport])
            .inc();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let slow = Arc::new(AtomicBool::new(false));
        let kick = Arc::new(Notify::new());
        let keys: Vec<String> = topics.iter().map(Topic::key).collect();
        if let Ok(mut map) = self.inner.topics.write() {
            for key in &keys {
                map.entry(key.clone()).or_default().insert(
                    id,
                    Subscriber {
                        tx: tx.clone(),
                        slow: slow.clone(),
                        kick: kick.clone(),
                    },
                );
            }
        }
        let private: Vec<Uuid> = topics
            .iter()
            .filter_map(|t| match t {
                Topic::User(id) => Some(*id),
                _ => None,
            })
            .collect();
        if !private.is_empty() {
            let live = self.clone();
            tokio::spawn(async move { live.mark_watched(&private).await });
        }
        Some(Subscription {
            rx,
            slow,
            kick,
            closing: self.inner.closing.subscribe(),
            _guard: SubscriptionGuard {
                live: self.clone(),
                id,
                topics: keys,
                transport,
            },
        })
    }

    /// The stream's newest id now ("0-0" when empty): where a reader started
    /// at start-up begins, so nothing published after it is missed.
    pub async fn newest_id(&self) -> Result<String, redis::RedisError> {
        let mut conn = self.inner.redis.connection();
        let newest: StreamRangeReply = conn
            .xrevrange_count(&self.inner.stream_key, "+", "-", 1)
            .await?;
        Ok(newest
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()))
    }

    fn watch_key(&self, user: Uuid) -> String {
        format!(
            "{}watch:{user}",
            self.inner.stream_key.trim_end_matches("log")
        )
    }

    /// Marks users followed here (`user:<id>` topics) in Redis for 90 s, so
    /// any instance knows whether publishing their private events is worth
    /// it. Called at subscribe time and every 30 s by [`Live::run_watch`].
    async fn mark_watched(&self, users: &[Uuid]) {
        if users.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.cmd("SET")
                .arg(self.watch_key(*user))
                .arg(1)
                .arg("EX")
                .arg(90)
                .ignore();
        }
        let _: Result<(), _> = pipe.query_async(&mut self.inner.redis.connection()).await;
    }

    fn watched_here(&self) -> Vec<Uuid> {
        self.inner
            .topics
            .read()
            .map(|map| {
                map.keys()
                    .filter_map(|k| k.strip_prefix("user:"))
                    .filter_map(|id| Uuid::parse_str(id).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Refreshes the watch marks of this instance's private subscribers.
    pub async fn run_watch(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(Duration::from_secs(30)) => {}
            }
            let users = self.watched_here();
            self.mark_watched(&users).await;
        }
    }

    /// Whether someone follows `user:<id>` on any instance (false when Redis
    /// cannot say: private events are a convenience).
    pub async fn is_watched(&self, user: Uuid) -> bool {
        if !self.inner.redis.available() {
            return false;
        }
        let exists: Result<bool, _> = redis::cmd("EXISTS")
            .arg(self.watch_key(user))
            .query_async(&mut self.inner.redis.connection())
            .await;
        exists.unwrap_or(false)
    }

    /// Tells every connection to close (the process is shutting down).
    pub fn close_all(&self) {
        let _ = self.inner.closing.send(true);
    }

    /// Hands one event to this instance's subscribers of its topic.
    fn dispatch(&self, event: Arc<LiveEvent>) {
        let Ok(map) = self.inner.topics.read() else {
            return;
        };
        let Some(subs) = map.get(&event.topic) else {
            return;
        };
        let latency = (chrono::Utc::now().timestamp_millis() - event.published_ms).max(0);
        for sub in subs.values() {
            if sub.slow.load(Ordering::Acquire) {
                continue;
            }
            match sub.tx.try_send(event.clone()) {
                Ok(()) => self
                    .inner
                    .metrics
                    .fanout_seconds
                    .observe(latency as f64 / 1000.0),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sub.slow.store(true, Ordering::Release);
                    sub.kick.notify_one();
                    self.inner.metrics.dropped_slow_total.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// What a client that last saw `after` missed on `topics`.
    pub async fn replay(&self, topics: &[Topic], after: &str) -> Result<Replay, redis::RedisError> {
        let after_pos = parse_id(after)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "bad id")))?;
        let mut conn = self.inner.redis.connection();
        let oldest: StreamRangeReply = conn
            .xrange_count(&self.inner.stream_key, "-", "+", 1)
            .await?;
        let keys: HashSet<String> = topics.iter().map(Topic::key).collect();
        // The client's position is before the window (trimmed, or a Redis
        // restart began a new stream): what it missed cannot be told.
        if oldest
            .ids
            .first()
            .and_then(|first| parse_id(&first.id))
            .is_some_and(|first| first > after_pos)
        {
            return Ok(Replay::Reset);
        }
        let reply: StreamRangeReply = conn
            .xrange_count(
                &self.inner.stream_key,
                format!("({after}"),
                "+",
                self.inner.replay_events,
            )
            .await?;
        Ok(Replay::Events(
            reply
                .ids
                .iter()
                .filter_map(|entry| to_event(&entry.id, &entry.map))
                .filter(|e| keys.contains(&e.topic))
                .map(Arc::new)
                .collect(),
        ))
    }

    /// Reads the stream and fans events out until `stop`; reconnects (and
    /// resumes from the last id) after errors.
    pub async fn run_reader(
        self,
        client: redis::Client,
        start_after: Option<String>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last_id = start_after;
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = self.read_session(&client, &mut last_id);
            tokio::select! {
                _ = stop.changed() => return,
                result = session => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "live stream reader lost Redis; retrying");
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

    async fn read_session(
        &self,
        client: &redis::Client,
        last_id: &mut Option<String>,
    ) -> Result<(), redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // First connection: from now on. Later: from where we were (the
        // stream keeps the window; a restarted Redis starts a new stream
        // whose ids are later than ours).
        let mut from = match last_id {
            Some(id) => id.clone(),
            None => {
                let newest: StreamRangeReply = conn
                    .xrevrange_count(&self.inner.stream_key, "+", "-", 1)
                    .await?;
                newest
                    .ids
                    .first()
                    .map_or_else(|| "0-0".to_owned(), |e| e.id.clone())
            }
        };
        let options = StreamReadOptions::default().block(5000).count(512);
        loop {
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&self.inner.stream_key], &[&from], &options)
                .await?;
            let Some(reply) = reply else { continue };
            for key in reply.keys {
                for entry in key.ids {
                    from = entry.id.clone();
                    *last_id = Some(entry.id.clone());
                    if let Some(event) = to_event(&entry.id, &entry.map) {
                        self.dispatch(Arc::new(event));
                    }
                }
            }
        }
    }
}

fn field(map: &HashMap<String, RedisValue>, name: &str) -> Option<String> {
    match map.get(name)? {
        RedisValue::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        RedisValue::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn to_event(id: &str, map: &HashMap<String, RedisValue>) -> Option<LiveEvent> {
    Some(LiveEvent {
        id: id.to_owned(),
        topic: field(map, "t")?,
        event: field(map, "e")?,
        data: serde_json::from_str(&field(map, "d")?).ok()?,
        published_ms: field(map, "at").and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_parse_and_private_ones_need_their_owner() {
        let me = Uuid::now_v7();
        assert_eq!(Topic::parse("city:3", None), Ok(Topic::City(3)));
        assert!(matches!(
            Topic::parse("user:me", None),
            Err(TopicError::NeedsToken(_))
        ));
        assert!(matches!(
            Topic::parse(&format!("user:{}", Uuid::now_v7()), Some(me)),
            Err(TopicError::NotYours(_))
        ));
        assert_eq!(
            Topic::parse(&format!("question:{me}"), None),
            Ok(Topic::Question(me))
        );
        assert_eq!(Topic::parse("user:me", Some(me)), Ok(Topic::User(me)));
        assert!(Topic::parse("user:me", None).is_err());
        assert!(Topic::parse(&format!("user:{}", Uuid::now_v7()), Some(me)).is_err());
        assert!(Topic::parse("city:-1", None).is_err());
        assert!(Topic::parse("city", None).is_err());
        assert!(Topic::parse("weather:1", None).is_err());
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(parse_id("5-1") > parse_id("5-0"));
        assert!(parse_id("6-0") > parse_id("5-9"));
        assert_eq!(parse_id("nope"), None);
    }
}
