//! Live updates (src/live.rs, src/http/live.rs): events from committed
//! writes reach Server-Sent-Events subscribers on every instance through
//! Redis; a reconnecting client catches up with `Last-Event-ID`; subscribers
//! survive a Redis restart; a slow consumer is dropped; the cap refuses.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::services::services;
use crate::support::{TestApp, send};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A raw SSE reader over a streaming response.
struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn open(app: &TestApp, topics: &str, last: Option<&str>) -> SseClient {
        Self::open_with(app, &format!("/api/v1/live/sse?topics={topics}"), last).await
    }

    async fn open_path(app: &TestApp, path: &str) -> SseClient {
        Self::open_with(app, path, None).await
    }

    async fn open_with(app: &TestApp, path: &str, last: Option<&str>) -> SseClient {
        let mut request = reqwest::Client::new().get(app.url(path));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        let response = request.send().await.expect("sse request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseClient {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                        any = true;
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Skips events until one named `name`.
    async fn until(&mut self, name: &str, within: Duration) -> Sse {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no {name} event within {within:?}"));
            if event.event == name {
                return event;
            }
        }
    }
}

async fn ask(app: &TestApp, token: &str, body: &str) -> String {
    let (status, created) = send(
        app,
        Method::POST,
        "/api/v1/cities/1/questions",
        token,
        Some(json!({ "body": body })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["question"]["id"].as_str().expect("id").to_owned()
}

async fn vote(app: &TestApp, token: &str, question: &str, value: i64) {
    let (status, body) = send(
        app,
        Method::PUT,
        &format!("/api/v1/questions/{question}/vote"),
        token,
        Some(json!({ "value": value })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Both instances' stream readers are running once an event published by
/// one arrives at a subscriber of the other (warm-up).
const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_vote_through_one_instance_reaches_a_subscriber_on_another_coalesced() {
    let a = TestApp::builder().without_replica().start().await;
    let b = TestApp::builder()
        .without_replica()
        .unseeded()
        .start_on(a.db.clone())
        .await;
    let (_, author) = a.users_with_role(1, "member").await.remove(0);
    let voters = a.users_with_role(5, "member").await;

    let mut city = SseClient::open(&b, "city:1", None).await;
    let question = ask(
        &a,
        &author,
        "Will the night buses run past midnight on weekends?",
    )
    .await;
    let created = city.until("question.created", WITHIN).await;
    assert_eq!(created.data["topic"], "city:1");
    assert_eq!(created.data["data"]["id"], json!(question));

    let mut follower = SseClient::open(&b, &format!("question:{question}"), None).await;
    // Five votes in a burst: fewer updates than votes, the last with every vote.
    for (_, token) in &voters {
        vote(&a, token, &question, 1).await;
    }
    let mut updates = 0;
    loop {
        let event = follower.until("question.votes", WITHIN).await;
        updates += 1;
        if event.data["data"]["upvotes"] == 5 {
            assert_eq!(event.data["data"]["score"], 5);
            break;
        }
    }
    assert!(updates < 5, "{updates} updates for 5 votes in a burst");
    assert!(b.metric("ws_messages_sent_total", &[]).await >= 2.0);
    assert_eq!(
        b.metric("ws_connections", &[("transport", "sse")]).await,
        2.0
    );
    drop(city);
    drop(follower);
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_and_nothing_twice() {
    let app = TestApp::builder().without_replica().start().await;
    let (_, author) = app.users_with_role(1, "member").await.remove(0);
    let mut client = SseClient::open(&app, "city:1", None).await;
    let first = ask(
        &app,
        &author,
        "First: when does the library extend its hours?",
    )
    .await;
    let seen = client.until("question.created", WITHIN).await;
    assert_eq!(seen.data["data"]["id"], json!(first));
    let last_id = seen.id.clone().expect("an id");
    drop(client);

    // Missed while away: two questions here, one in another city.
    let second = ask(&app, &author, "Second: will the pool reopen this summer?").await;
    let (status, _) = send(
        &app,
        Method::POST,
        "/api/v1/cities/2/questions",
        &author,
        Some(json!({"body": "Elsewhere: is the bridge closing for repairs?"})),
    )
    .await;
    assert_eq!(status, 201);
    let third = ask(
        &app,
        &author,
        "Third: what about the potholes on Elm Street?",
    )
    .await;

    let mut back = SseClient::open(&app, "city:1", Some(&last_id)).await;
    let one = back.until("question.created", WITHIN).await;
    let two = back.until("question.created", WITHIN).await;
    assert_eq!(one.data["data"]["id"], json!(second));
    assert_eq!(two.data["data"]["id"], json!(third));
    // And then live ones, without repeats.
    let fourth = ask(
        &app,
        &author,
        "Fourth: any plans for more bike racks downtown?",
    )
    .await;
    let next = back.until("question.created", WITHIN).await;
    assert_eq!(next.data["data"]["id"], json!(fourth));

    // A position the stream no longer holds: told to refetch.
    let mut stale = SseClient::open(&app, "city:1", Some("1-0")).await;
    stale.until("reset", WITHIN).await;
    // Malformed ids are a 400.
    let response = reqwest::Client::new()
        .get(app.url("/api/v1/live/sse?topics=city:1"))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_recover_after_a_redis_restart_without_restarting_the_api() {
    let redis = services().dedicated_redis();
    let a = TestApp::builder()
        .without_replica()
        .env("REDIS_URL", &redis.url())
        .start()
        .await;
    let b = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("REDIS_URL", &redis.url())
        .start_on(a.db.clone())
        .await;
    let (_, author) = a.users_with_role(1, "member").await.remove(0);
    let mut client = SseClient::open(&b, "city:1", None).await;
    ask(
        &a,
        &author,
        "Before the restart: is the market open on Sundays?",
    )
    .await;
    client.until("question.created", WITHIN).await;

    tokio::task::block_in_place(|| redis.kill());
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis.start());

    // The same connection keeps working once both readers are back: keep
    // asking until one arrives (writes during the outage publish nothing).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = ask(
            &a,
            &author,
            "After the restart: will the farmers market stay open late?",
        )
        .await;
        if let Some(event) = client.next(Duration::from_secs(2)).await
            && event.event == "question.created"
        {
            let _ = id;
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after the restart"
        );
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_dropped_not_buffered() {
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .start()
        .await;
    let live = &app.state.live;
    let topic = refbackend::live::Topic::City(7);
    let subscription = live
        .subscribe(std::slice::from_ref(&topic), "sse")
        .expect("under the cap");
    let before = app.metric("ws_dropped_slow_total", &[]).await;
    for i in 0..(refbackend::live::SUBSCRIBER_QUEUE + 50) {
        live.publish(&topic, "test", &json!({ "i": i })).await;
    }
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !subscription.slow.load(std::sync::atomic::Ordering::Acquire) {
        assert!(tokio::time::Instant::now() < deadline, "never marked slow");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metric("ws_dropped_slow_total", &[]).await, before + 1.0);
    assert_eq!(
        subscription.rx.len(),
        refbackend::live::SUBSCRIBER_QUEUE,
        "bounded"
    );
    app.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_a_client_is_refused_with_a_503() {
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("LIVE_MAX_CONNECTIONS", "1")
        .start()
        .await;
    let _first = SseClient::open(&app, "city:1", None).await;
    let second = reqwest::Client::new()
        .get(app.url("/api/v1/live/sse?topics=city:2"))
        .send()
        .await
        .expect("request");
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["content-type"], "application/problem+json");
    // Private topics need a token; unknown ones are a 422.
    let private = app.get("/api/v1/live/sse?topics=user:me").await;
    assert_eq!(private.status(), 401);
    let unknown = app.get("/api/v1/live/sse?topics=weather:1").await;
    assert_eq!(unknown.status(), 422);
    app.stop().await;
}

#[tokio::test]
async fn a_websocket_resumes_from_last_event_id_and_is_closed_with_1012_on_shutdown() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let app = TestApp::builder()
        .without_replica()
        .env("SHUTDOWN_READINESS_DELAY", "0s")
        .start()
        .await;
    let (_, author) = app.users_with_role(1, "member").await.remove(0);
    let mut city = SseClient::open(&app, "city:1", None).await;
    ask(&app, &author, "One: will the stadium get a new roof?").await;
    let first = city.until("question.created", WITHIN).await.id.expect("id");
    let second = ask(&app, &author, "Two: when is the next council meeting?").await;
    city.until("question.created", WITHIN).await;
    drop(city);

    let url = format!(
        "ws://{}/api/v1/live?topics=city:1&last_event_id={first}",
        app.addr
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("websocket");
    let replayed = tokio::time::timeout(WITHIN, socket.next())
        .await
        .expect("a frame")
        .expect("open")
        .expect("frame");
    let Message::Text(text) = replayed else {
        panic!("{replayed:?}")
    };
    let event: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(event["event"], "question.created");
    assert_eq!(
        event["data"]["id"],
        json!(second),
        "the one missed, not the one seen"
    );

    // Shutdown: the socket is closed with 1012 so the client reconnects elsewhere.
    let stopping = tokio::spawn(app.stop());
    let close = tokio::time::timeout(WITHIN, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed within the drain");
    assert_eq!(close.expect("a close frame").code, CloseCode::Restart);
    stopping.await.expect("stopped");
}

#[tokio::test]
async fn a_learner_following_user_me_sees_their_rank_after_an_attempt_and_no_one_else_can() {
    let app = TestApp::builder().without_replica().start().await;
    let (_, token) = app.users_with_role(1, "member").await.remove(0);
    let (other, _) = app.users_with_role(1, "member").await.remove(0);
    // Someone else's private topic is refused, with or without a token.
    let response = app
        .get(&format!(
            "/api/v1/live/sse?topics=user:{other}&access_token={token}"
        ))
        .await;
    assert_eq!(response.status(), 403);

    let mut client = SseClient::open_path(
        &app,
        &format!("/api/v1/live/sse?topics=user:me&access_token={token}"),
    )
    .await;
    // The watch mark is set when the subscription starts (asynchronously).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (exercise, answer): (i64, String) = sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 1",
    )
    .fetch_one(app.state.db.write())
    .await
    .expect("exercise");
    let (status, body) = send(
        &app,
        Method::POST,
        &format!("/api/v1/exercises/{exercise}/attempts"),
        &token,
        Some(json!({ "answer": answer })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let rank = client.until("leaderboard.rank", WITHIN).await;
    assert_eq!(rank.data["data"]["weekly"]["rank"], 1, "{:?}", rank.data);
    assert!(rank.data["data"]["weekly"]["xp"].as_i64().expect("xp") > 0);
    app.stop().await;
}
