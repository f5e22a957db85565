//! Leeches on the real services: suspended after 8 wrong answers, out of
//! review, listed, brought back.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::{TestApp, send as call};

async fn fail(app: &TestApp, token: &str, exercise: i64, times: usize) -> Vec<Value> {
    let mut answers = Vec::new();
    for _ in 0..times {
        let (status, body) = call(
            app,
            reqwest::Method::POST,
            &format!("/api/v1/exercises/{exercise}/attempts"),
            token,
            Some(json!({"answer": "zzz"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        answers.push(body);
    }
    answers
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["exercise"]["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn an_item_failed_eight_times_is_suspended_listed_kept_out_of_review_and_can_come_back() {
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await;
    let (user, token) = app.register_member("leech@example.com").await;
    let user = uuid::Uuid::parse_str(&user).expect("uuid");
    let exercises: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 3",
    )
    .fetch_all(app.state.db.write())
    .await
    .expect("exercises");
    let leech = exercises[0];

    let answers = fail(&app, &token, leech, 8).await;
    let flags: Vec<bool> = answers
        .iter()
        .map(|a| a["leech"].as_bool().expect("leech"))
        .collect();
    assert_eq!(
        flags,
        [false, false, false, false, false, false, false, true]
    );

    // Due or not, a leech is not offered for review.
    sqlx::query("UPDATE review_cards SET due = now() - interval '1 hour' WHERE user_id = $1")
        .bind(user)
        .execute(app.state.db.write())
        .await
        .expect("due");
    let (status, next) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/practice/next?limit=50",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{next}");
    assert!(
        next["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["exercise"]["id"] != leech),
        "{next}"
    );
    let (_, stats) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/reviews/stats?days=1",
        &token,
        None,
    )
    .await;
    assert_eq!(stats["cards"]["leeches"], 1, "{stats}");
    assert_eq!(stats["due"]["now"], 0, "a leech is not due: {stats}");

    let (status, page) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/leeches",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [leech]);
    assert_eq!(page["items"][0]["failures"], 8);
    assert!(
        page["items"][0]["exercise"].get("answer").is_none(),
        "no answers in the list"
    );

    // Two more, then pages of two.
    for &exercise in &exercises[1..] {
        fail(&app, &token, exercise, 8).await;
    }
    let (_, first) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/leeches?limit=2",
        &token,
        None,
    )
    .await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/users/me/leeches?limit=2&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    assert_eq!(second["next_cursor"], Value::Null);
    let all: HashSet<i64> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(all, exercises.iter().copied().collect::<HashSet<_>>());
    assert_eq!(ids(&first)[0], exercises[2], "newest first");

    // Brought back: due now, offered for review, its failures forgiven.
    let path = format!("/api/v1/users/me/leeches/{leech}");
    let (status, _) = call(&app, reqwest::Method::DELETE, &path, &token, None).await;
    assert_eq!(status, 204);
    let (status, problem) = call(&app, reqwest::Method::DELETE, &path, &token, None).await;
    assert_eq!(status, 404, "{problem}");
    let (_, next) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/practice/next?limit=50",
        &token,
        None,
    )
    .await;
    assert!(
        next["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["exercise"]["id"] == leech && i["reason"] == "review"),
        "{next}"
    );
    let answers = fail(&app, &token, leech, 1).await;
    assert_eq!(
        answers[0]["leech"], false,
        "one wrong answer after coming back is not a leech"
    );

    // Someone else's leech, and nonsense ids.
    let (_, other) = app.register_member("other-leech@example.com").await;
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/api/v1/users/me/leeches/{}", exercises[1]),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/users/me/leeches/abc",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
}
