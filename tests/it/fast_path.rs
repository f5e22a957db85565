//! The fast path (src/http/fast_path.rs): repeated anonymous GETs of public
//! cached pages are answered from L1 before routing. What it sends must be
//! what the router would have sent, it must never outlive the entry it
//! replays, and requests whose answer depends on the caller must not take it.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, TestAppBuilder, send};

const ORIGIN: &str = "https://civicq.example";

/// Header name → its values in order, without the ones that differ per
/// response (`date`) or per request (`x-request-id`, compared on its own).
fn header_map(response: &reqwest::Response) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in response.headers() {
        if name == "date" || name == "x-request-id" {
            continue;
        }
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().expect("ascii header").to_owned());
    }
    map
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app.client.get(app.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request")
}

async fn replays(app: &TestApp) -> f64 {
    app.metric("api_fast_path_replays_total", &[]).await
}

/// GETs `path` until the fast path answers it (a replay is counted), at most
/// three times; the response and how many reads it took. A resubscription
/// of the cache's invalidation channel (a Redis ping held up on a loaded
/// box) rightly drops every L1 entry, so one read may be routed and reload
/// the entry; the next is replayed.
async fn replayed_get_counted(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (reqwest::Response, u32) {
    for reads in 1..=3 {
        let before = replays(app).await;
        let response = get_with(app, path, headers).await;
        if replays(app).await == before + 1.0 {
            return (response, reads);
        }
    }
    panic!("{path} {headers:?} was not replayed in three reads");
}

async fn replayed_get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    replayed_get_counted(app, path, headers).await.0
}

/// An app whose Redis replies may take up to 5 s: the default 250 ms, missed
/// by a loaded CI box, resubscribes the invalidation channel and drops L1.
fn patient() -> TestAppBuilder {
    TestApp::builder()
        .without_replica()
        .env("REDIS_RESPONSE_TIMEOUT", "5s")
}

/// Two instances on one database, both with CORS configured: one routes
/// every request, the other has the fast path.
async fn routed_and_fast() -> (TestApp, TestApp) {
    let routed = patient()
        .env("CORS_ALLOWED_ORIGINS", ORIGIN)
        .env("HTTP_FAST_PATH", "false")
        .start()
        .await;
    let fast = patient()
        .unseeded()
        .env("CORS_ALLOWED_ORIGINS", ORIGIN)
        .start_on(routed.db.clone())
        .await;
    (routed, fast)
}

#[tokio::test]
async fn a_replayed_page_has_the_same_status_headers_and_body_as_a_routed_one() {
    let (routed, fast) = routed_and_fast().await;
    // Reads of /cities/1 the fast instance repeated until one was replayed,
    // by status: it answered that many more than the routed one.
    let mut extra_reads: BTreeMap<u16, f64> = BTreeMap::new();
    for path in [
        "/api/v1/exercises?limit=20",
        "/api/v1/cities/1",
        "/api/v1/cities",
        "/api/v1/cities/1/questions?sort=new",
        "/api/v1/verbs/hablar/conjugations",
    ] {
        // The first GET is routed and remembered; the ones below are replayed.
        let first = get_with(&fast, path, &[]).await;
        assert_eq!(first.status(), 200, "{path}");
        let identity_tag = first.headers()["etag"].to_str().expect("tag").to_owned();
        let zipped = get_with(&routed, path, &[("accept-encoding", "gzip")]).await;
        let gzip_tag = zipped.headers()["etag"].to_str().expect("tag").to_owned();
        let variants: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("accept-encoding", "gzip, br")],
            // Weighted codings are routed (the second refuses all we hold:
            // the router's compression layer answers 406).
            vec![("accept-encoding", "gzip;q=0, identity")],
            vec![("accept-encoding", "br, identity;q=0")],
            vec![("if-none-match", &identity_tag)],
            vec![("accept-encoding", "gzip"), ("if-none-match", &gzip_tag)],
            vec![
                ("accept-encoding", "gzip"),
                ("if-none-match", &identity_tag),
            ],
            vec![("x-request-id", "trace-me-42")],
            // CORS answers depend on the origin: a listed one, and another.
            vec![("origin", ORIGIN)],
            vec![("origin", ORIGIN), ("accept-encoding", "gzip")],
            vec![("origin", "https://elsewhere.example")],
        ];
        for headers in &variants {
            let expected = get_with(&routed, path, headers).await;
            let weighted = headers
                .iter()
                .any(|(name, value)| *name == "accept-encoding" && value.contains(';'));
            let replayed = if weighted {
                let before = replays(&fast).await;
                let response = get_with(&fast, path, headers).await;
                assert_eq!(replays(&fast).await, before, "{path} {headers:?} routed");
                response
            } else {
                let (response, reads) = replayed_get_counted(&fast, path, headers).await;
                if path == "/api/v1/cities/1" {
                    *extra_reads.entry(response.status().as_u16()).or_default() +=
                        f64::from(reads - 1);
                }
                response
            };
            assert_eq!(replayed.status(), expected.status(), "{path} {headers:?}");
            assert_eq!(
                header_map(&replayed),
                header_map(&expected),
                "{path} {headers:?}"
            );
            let allowed = replayed.headers().get("access-control-allow-origin");
            let listed = headers.contains(&("origin", ORIGIN));
            assert_eq!(allowed.is_some(), listed, "{path} {headers:?}");
            let id = replayed.headers()["x-request-id"].to_str().expect("id");
            if let Some((_, sent)) = headers.iter().find(|(name, _)| *name == "x-request-id") {
                assert_eq!(id, *sent, "a client's request id is echoed");
            } else {
                assert_eq!(id.len(), 36, "a request id is made: {id}");
            }
            assert_eq!(
                replayed.bytes().await.expect("body"),
                expected.bytes().await.expect("body"),
                "{path} {headers:?}"
            );
        }
    }
    assert_eq!(
        replays(&routed).await,
        0.0,
        "HTTP_FAST_PATH=false routes all"
    );
    // Replayed requests are counted like routed ones, under the route
    // template: both instances answered the same statuses.
    for status in [200_u16, 304] {
        let code = status.to_string();
        let labels = [
            ("method", "GET"),
            ("endpoint", "/api/v1/cities/{id}"),
            ("status", code.as_str()),
        ];
        let counted = fast.metric("api_requests_total", &labels).await;
        assert!(counted > 0.0, "{status}");
        let extra = extra_reads.get(&status).copied().unwrap_or(0.0);
        assert_eq!(
            counted,
            routed.metric("api_requests_total", &labels).await + extra
        );
    }
    routed.stop().await;
    fast.stop().await;
}

#[tokio::test]
async fn a_question_asked_after_a_replay_is_in_the_next_anonymous_read() {
    let app = patient().start().await;
    let path = "/api/v1/cities/1/questions?sort=new";
    let (_, before) = app.get_json(path).await;
    let second = replayed_get(&app, path, &[]).await;
    assert_eq!(second.json::<Value>().await.expect("json"), before);
    let replayed = replays(&app).await;

    let (_, token) = app.register_member("fast-path-asker@example.com").await;
    let (status, created) = send(
        &app,
        Method::POST,
        "/api/v1/cities/1/questions",
        &token,
        Some(json!({"body": "Will the fast path ever serve a stale page of questions?"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["question"]["id"].clone();

    let (status, after) = app.get_json(path).await;
    assert_eq!(status, 200);
    assert_eq!(after["items"][0]["id"], id, "the new question is first");
    assert_ne!(after, before);
    assert_eq!(
        replays(&app).await,
        replayed,
        "the read after the write was routed, not replayed"
    );
    // And the fresh page is what the following reads replay.
    let again = replayed_get(&app, path, &[]).await;
    assert_eq!(again.json::<Value>().await.expect("json"), after);
    app.stop().await;
}

#[tokio::test]
async fn a_replay_ends_with_the_l1_ttl_of_its_entry() {
    // Long enough that a loaded box still reads the page within it.
    let app = patient().env("CACHE_TTL_CITIES", "3s,0s").start().await;
    let path = "/api/v1/cities/1";
    let (_, city) = app.get_json(path).await;
    // Changed behind the application's back: no invalidation is sent.
    let pool = sqlx::PgPool::connect(&app.db.primary_url)
        .await
        .expect("connect");
    sqlx::query("UPDATE cities SET name = 'Renamed Quietly' WHERE id = 1")
        .execute(&pool)
        .await
        .expect("rename");
    let cached: Value = replayed_get(&app, path, &[])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        cached["name"], city["name"],
        "within the TTL: the cached page, replayed"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (_, fresh) = app.get_json(path).await;
    assert_eq!(fresh["name"], "Renamed Quietly", "after the TTL: reloaded");
    app.stop().await;
}

#[tokio::test]
async fn credentials_and_the_rate_limited_search_are_never_replayed() {
    let app = patient().env("RATE_LIMIT_SIMILAR_IP", "3/1m").start().await;
    let path = "/api/v1/cities/1";
    // Remembered by an anonymous GET first: what follows could be replayed.
    app.get(path).await;
    let (_, token) = app.register_member("fast-path-member@example.com").await;
    let bearer = format!("Bearer {token}");
    for _ in 0..3 {
        let response = get_with(&app, path, &[("authorization", &bearer)]).await;
        assert_eq!(response.status(), 200);
    }
    let response = get_with(&app, path, &[("authorization", "Bearer not-a-token")]).await;
    assert_eq!(response.status(), 200, "a public page ignores credentials");
    assert_eq!(replays(&app).await, 0.0);

    // Every search spends the address's limit, cached or not.
    let search = "/api/v1/questions/similar?city_id=1&q=parking%20downtown";
    for _ in 0..3 {
        assert_eq!(app.get(search).await.status(), 200);
    }
    let limited = app.get(search).await;
    assert_eq!(limited.status(), 429, "the fourth search is limited");
    assert_eq!(replays(&app).await, 0.0);

    // The anonymous GET of the page is replayed.
    assert_eq!(replayed_get(&app, path, &[]).await.status(), 200);
    app.stop().await;
}
