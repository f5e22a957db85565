//! `GET /api/v1/live/sse`: live updates as Server-Sent Events (src/live.rs).
//! Public topics need no token; `user:me` needs one (the `Authorization`
//! header, or `access_token` in the query, since `EventSource` cannot send
//! headers). A reconnecting client sends `Last-Event-ID` (browsers do it by
//! themselves) and first gets what it missed.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AppQuery;
use crate::live::{LiveEvent, MAX_TOPICS, Replay, Subscription, Topic, TopicError, parse_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(live_sse))
        .routes(routes!(live_ws))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Comma-separated topics (at most 20): `city:<id>` (new questions),
    /// `question:<id>` (vote counts, answers, video answers), `user:me` (your
    /// video answers' processing; needs a token).
    #[param(
        min_length = 6,
        max_length = 2000,
        pattern = r"^(city:[1-9][0-9]{0,17}|question:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|user:(me|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}))(,(city:[1-9][0-9]{0,17}|question:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|user:(me|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}))){0,19}$"
    )]
    pub topics: String,
    /// An access token, for clients that cannot send `Authorization`.
    #[param(min_length = 1, max_length = 4096, pattern = r"^[!-~]+$")]
    pub access_token: Option<String>,
    /// WebSocket only (SSE uses the `Last-Event-ID` header): the id of the
    /// last event received, to get what was missed.
    #[param(max_length = 64, pattern = "^[0-9]+-[0-9]+$")]
    pub last_event_id: Option<String>,
}

/// Parses the topics, resolving `user:me` against the signed-in user.
fn topics(state: &AppState, query: &LiveQuery, user: Option<AuthUser>) -> AppResult<Vec<Topic>> {
    let signed_in = match (user, &query.access_token) {
        (Some(user), _) => Some(user.id),
        (None, Some(token)) => Some(
            state
                .auth
                .jwt
                .verify(token)
                .map_err(|_| {
                    AppError::unauthenticated("The access token is invalid or expired.", true)
                })?
                .sub,
        ),
        (None, None) => None,
    };
    let mut topics = Vec::new();
    for raw in query.topics.split(',') {
        let topic = Topic::parse(raw.trim(), signed_in).map_err(|e| match e {
            TopicError::Invalid(m) => AppError::validation("topics", m),
            TopicError::NeedsToken(m) => AppError::unauthenticated(m, false),
            TopicError::NotYours(m) => AppError::Forbidden(m),
        })?;
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    if topics.is_empty() || topics.len() > MAX_TOPICS {
        return Err(AppError::validation(
            "topics",
            format!("1 to {MAX_TOPICS} topics"),
        ));
    }
    Ok(topics)
}

/// Live updates as Server-Sent Events. Each event's `id` is its position:
/// reconnect with `Last-Event-ID` to get what you missed (an event `reset`
/// means too much was missed: refetch). An event `dropped` ends a stream
/// whose client read too slowly; `closing` ends it when the instance shuts
/// down; reconnect after either. Comments every 15 s keep it open.
#[utoipa::path(get, path = "/live/sse", tag = "civic",
    params(LiveQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received",
            max_length = 64, pattern = "^[0-9]+-[0-9]+$")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "An unknown query parameter or a malformed Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`user:me` without a (valid) token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's topic", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid topics", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This instance has as many live connections as it takes (retry; another instance may take it)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn live_sse(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<LiveQuery>,
) -> AppResult<Response> {
    let topics = topics(&state, &query, user)?;
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or_default().trim().to_owned());
    let last = last_event_id(header.or(query.last_event_id.clone()))?;
    let start = start(&state, &topics, last, "sse").await?;
    let stream = event_stream(state.clone(), start);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn last_event_id(raw: Option<String>) -> AppResult<Option<String>> {
    match raw {
        None => Ok(None),
        Some(text) if parse_id(&text).is_some() => Ok(Some(text)),
        Some(_) => Err(AppError::BadRequest(
            "Last-Event-ID must be an event id such as 1733500000000-0".into(),
        )),
    }
}

/// A subscription and what to send before live events.
struct Start {
    subscription: Subscription,
    backlog: Vec<Arc<LiveEvent>>,
    reset: bool,
    sent_until: Option<(u64, u64)>,
}

/// Subscribes first, then replays: nothing falls between the two (the
/// queue holds what arrives meanwhile; duplicates are skipped by id).
async fn start(
    state: &AppState,
    topics: &[Topic],
    last: Option<String>,
    transport: &'static str,
) -> AppResult<Start> {
    let subscription = state.live.subscribe(topics, transport).ok_or_else(|| {
        AppError::Unavailable(
            "This instance serves as many live connections as it may; retry.".into(),
        )
    })?;
    let mut backlog = Vec::new();
    let mut reset = false;
    if let Some(after) = &last {
        match state.live.replay(topics, after).await {
            Ok(Replay::Events(events)) => backlog = events,
            Ok(Replay::Reset) => reset = true,
            // Redis is down: the client gets live events, and a reset.
            Err(_) => reset = true,
        }
    }
    let sent_until = backlog
        .last()
        .and_then(|e| parse_id(&e.id))
        .or_else(|| last.as_deref().and_then(parse_id));
    Ok(Start {
        subscription,
        backlog,
        reset,
        sent_until,
    })
}

/// What the next thing to send is.
enum Next {
    Event(Arc<LiveEvent>),
    Reset,
    /// Dropped as a slow consumer.
    Slow,
    /// The instance is shutting down.
    Closing,
}

struct StreamState {
    state: AppState,
    subscription: Subscription,
    backlog: std::vec::IntoIter<Arc<LiveEvent>>,
    reset: bool,
    sent_until: Option<(u64, u64)>,
    done: bool,
}

impl StreamState {
    fn new(state: AppState, start: Start) -> Self {
        Self {
            state,
            subscription: start.subscription,
            backlog: start.backlog.into_iter(),
            reset: start.reset,
            sent_until: start.sent_until,
            done: false,
        }
    }

    /// Waits for the next thing to send (the backlog first).
    async fn next(&mut self) -> Next {
        if self.reset {
            self.reset = false;
            return Next::Reset;
        }
        if let Some(event) = self.backlog.next() {
            return Next::Event(event);
        }
        loop {
            tokio::select! {
                received = self.subscription.rx.recv() => {
                    let Some(event) = received else { return Next::Closing };
                    let position = parse_id(&event.id);
                    if position.is_some() && position <= self.sent_until {
                        continue; // already sent in the backlog
                    }
                    self.sent_until = position.or(self.sent_until);
                    return Next::Event(event);
                }
                () = self.subscription.kick.notified() => {
                    if self.subscription.slow.load(Ordering::Acquire) {
                        return Next::Slow;
                    }
                }
                _ = self.subscription.closing.changed() => return Next::Closing,
            }
        }
    }
}

fn to_sse(event: &LiveEvent) -> Event {
    Event::default()
        .id(event.id.clone())
        .event(event.event.clone())
        .data(
            serde_json::json!({"topic": event.topic, "data": event.data, "at": event.published_ms})
                .to_string(),
        )
}

fn event_stream(state: AppState, start: Start) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(StreamState::new(state, start), |mut s| async move {
        if s.done {
            return None;
        }
        let event = match s.next().await {
            Next::Event(event) => {
                s.state.live.metrics().messages_sent_total.inc();
                to_sse(&event)
            }
            Next::Reset => Event::default().event("reset").data("{}"),
            Next::Slow => {
                s.done = true;
                Event::default()
                    .event("dropped")
                    .data(r#"{"reason":"slow consumer"}"#)
            }
            Next::Closing => {
                s.done = true;
                Event::default()
                    .event("closing")
                    .retry(Duration::from_secs(1))
                    .data("{}")
            }
        };
        Some((Ok(event), s))
    })
}

/// Close codes: the instance restarts (reconnect elsewhere), a client too
/// slow to keep up (reconnect and resume), no pong in time.
const CLOSE_RESTART: u16 = 1012;
const CLOSE_SLOW: u16 = 4008;
const CLOSE_IDLE: u16 = 4009;
/// Pings every 20 s; a client silent for 60 s is gone.
const PING_EVERY: Duration = Duration::from_secs(20);
const SILENT_FOR: Duration = Duration::from_secs(60);
/// A write that takes longer than this means the client stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Live updates over a WebSocket: the same topics, events and replay as the
/// SSE endpoint (`last_event_id` in the query), each event a text frame
/// `{"id","topic","event","data"}`; `{"event":"reset"}` means refetch. The
/// server pings every 20 s. Close codes: 1012 (the instance restarts:
/// reconnect), 4008 (too slow to keep up: reconnect and resume), 4009 (no
/// pong for 60 s).
#[utoipa::path(get, path = "/live", tag = "civic",
    params(LiveQuery),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket handshake, an unknown query parameter or a malformed last_event_id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`user:me` without a (valid) token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's topic", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid topics", body = Problem, content_type = "application/problem+json"),
        (status = 426, description = "The connection cannot be upgraded", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This instance has as many live connections as it takes (retry; another instance may take it)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn live_ws(
    State(state): State<AppState>,
    user: Option<AuthUser>,
    AppQuery(query): AppQuery<LiveQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> AppResult<Response> {
    let topics = topics(&state, &query, user)?;
    let last = last_event_id(query.last_event_id.clone())?;
    let upgrade = upgrade.map_err(|rejection| {
        if rejection.status() == StatusCode::UPGRADE_REQUIRED {
            AppError::UpgradeRequired(rejection.body_text())
        } else {
            AppError::BadRequest(format!(
                "Not a WebSocket handshake: {}",
                rejection.body_text()
            ))
        }
    })?;
    let start = start(&state, &topics, last, "ws").await?;
    // Small buffers: a client sends nothing but pongs, and events are small.
    // tungstenite's defaults (128 KiB each way) would cost ~90 KiB of RSS per
    // idle connection; with these, 10,000 connections fit in a few hundred MB.
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(256 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| serve_socket(socket, StreamState::new(state, start))))
}

async fn serve_socket(socket: WebSocket, mut s: StreamState) {
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let close = loop {
        tokio::select! {
            next = s.next() => {
                let frame = match next {
                    Next::Event(event) => {
                        s.state.live.metrics().messages_sent_total.inc();
                        serde_json::json!({"id": event.id, "topic": event.topic, "event": event.event, "data": event.data, "at": event.published_ms}).to_string()
                    }
                    Next::Reset => r#"{"event":"reset"}"#.to_owned(),
                    Next::Slow => break Some((CLOSE_SLOW, "slow consumer")),
                    Next::Closing => break Some((CLOSE_RESTART, "server restarting")),
                };
                match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(frame.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        s.state.live.metrics().dropped_slow_total.inc();
                        break Some((CLOSE_SLOW, "slow consumer"));
                    }
                }
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
            },
            _ = ping.tick() => {
                if heard.elapsed() > SILENT_FOR {
                    break Some((CLOSE_IDLE, "no pong"));
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
}
