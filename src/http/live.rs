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
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::{AppError, AppResult, Problem};
use crate::http::extract::AppQuery;
use crate::live::{LiveEvent, MAX_TOPICS, Replay, Subscription, Topic, parse_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live_sse))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LiveQuery {
    /// Comma-separated topics (at most 20): `city:<id>` (new questions),
    /// `question:<id>` (vote counts, answers, video answers), `user:me` (your
    /// video answers' processing; needs a token).
    #[param(
        min_length = 1,
        max_length = 2000,
        pattern = r"^[a-z]+:[0-9A-Za-z-]+(,[a-z]+:[0-9A-Za-z-]+)*$"
    )]
    pub topics: String,
    /// An access token, for clients that cannot send `Authorization`.
    #[param(min_length = 1, max_length = 4096, pattern = r"^[!-~]+$")]
    pub access_token: Option<String>,
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
        let topic = Topic::parse(raw.trim(), signed_in).map_err(|m| {
            if signed_in.is_none() && raw.starts_with("user:") {
                AppError::unauthenticated(m, false)
            } else {
                AppError::validation("topics", m)
            }
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
    let last = match headers.get("last-event-id") {
        None => None,
        Some(value) => {
            let text = value.to_str().unwrap_or_default().trim();
            if parse_id(text).is_none() {
                return Err(AppError::BadRequest(
                    "Last-Event-ID must be an event id such as 1733500000000-0".into(),
                ));
            }
            Some(text.to_owned())
        }
    };
    // Subscribe first, then replay: nothing falls between the two (the
    // queue holds what arrives meanwhile; duplicates are skipped by id).
    let subscription = state.live.subscribe(&topics, "sse").ok_or_else(|| {
        AppError::Unavailable(
            "This instance serves as many live connections as it may; retry.".into(),
        )
    })?;
    let mut backlog = Vec::new();
    let mut reset = false;
    if let Some(after) = &last {
        match state.live.replay(&topics, after).await {
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
    let stream = event_stream(state.clone(), subscription, backlog, reset, sent_until);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct StreamState {
    state: AppState,
    subscription: Subscription,
    backlog: std::vec::IntoIter<Arc<LiveEvent>>,
    reset: bool,
    sent_until: Option<(u64, u64)>,
    done: bool,
}

fn to_sse(event: &LiveEvent) -> Event {
    Event::default()
        .id(event.id.clone())
        .event(event.event.clone())
        .data(serde_json::json!({"topic": event.topic, "data": event.data}).to_string())
}

fn event_stream(
    state: AppState,
    subscription: Subscription,
    backlog: Vec<Arc<LiveEvent>>,
    reset: bool,
    sent_until: Option<(u64, u64)>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let start = StreamState {
        state,
        subscription,
        backlog: backlog.into_iter(),
        reset,
        sent_until,
        done: false,
    };
    stream::unfold(start, |mut s| async move {
        if s.done {
            return None;
        }
        if s.reset {
            s.reset = false;
            return Some((Ok(Event::default().event("reset").data("{}")), s));
        }
        if let Some(event) = s.backlog.next() {
            s.state.live.metrics().messages_sent_total.inc();
            return Some((Ok(to_sse(&event)), s));
        }
        loop {
            tokio::select! {
                received = s.subscription.rx.recv() => {
                    let Some(event) = received else {
                        s.done = true;
                        return Some((Ok(Event::default().event("closing").data("{}")), s));
                    };
                    let position = parse_id(&event.id);
                    if position.is_some() && position <= s.sent_until {
                        continue; // already sent in the backlog
                    }
                    s.sent_until = position.or(s.sent_until);
                    s.state.live.metrics().messages_sent_total.inc();
                    return Some((Ok(to_sse(&event)), s));
                }
                () = s.subscription.kick.notified() => {
                    if s.subscription.slow.load(Ordering::Acquire) {
                        s.done = true;
                        return Some((Ok(Event::default().event("dropped").data(r#"{"reason":"slow consumer"}"#)), s));
                    }
                }
                _ = s.subscription.closing.changed() => {
                    s.done = true;
                    return Some((Ok(Event::default().event("closing").retry(Duration::from_secs(1)).data("{}")), s));
                }
            }
        }
    })
}
