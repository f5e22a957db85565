//! GET /users/me/reviews/stats on the real services.

use serde_json::{Value, json};

use crate::support::TestApp;

async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .unseeded()
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await
}

async fn exercise(app: &TestApp, offset: i64) -> (i64, String) {
    sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id OFFSET $1 LIMIT 1",
    )
    .bind(offset)
    .fetch_one(app.state.db.write())
    .await
    .expect("exercise")
}

async fn attempt(app: &TestApp, token: &str, id: i64, answer: &str) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/exercises/{id}/attempts")))
        .bearer_auth(token)
        .json(&json!({"answer": answer}))
        .send()
        .await
        .expect("attempt");
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

async fn stats(app: &TestApp, token: &str, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/users/me/reviews/stats{query}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("stats");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn review_stats_count_new_items_reviews_retention_and_due_cards_by_the_learners_days() {
    let app = app().await;
    let (user, token) = app.register_member("stats@example.com").await;
    let (_, other) = app.register_member("other@example.com").await;
    let (a, a_answer) = exercise(&app, 0).await;
    let (b, b_answer) = exercise(&app, 1).await;
    // A new and right; A again, wrong (a review); B new and right.
    attempt(&app, &token, a, &a_answer).await;
    attempt(&app, &token, a, "zzz").await;
    attempt(&app, &token, b, &b_answer).await;
    // Someone else's practice is not ours.
    attempt(&app, &other, a, &a_answer).await;
    // An attempt from before reviews were recorded (was_review NULL), today.
    sqlx::query(
        "INSERT INTO attempts (user_id, created_at, id, exercise_id, answer, outcome,
                               counts_as_correct, xp)
         VALUES ($1, now(), gen_random_uuid(), $2, 'x', 'incorrect', false, 0)",
    )
    .bind(uuid::Uuid::parse_str(&user).expect("uuid"))
    .bind(b)
    .execute(app.state.db.write())
    .await
    .expect("old attempt");
    // A is due now; B next week at the latest.
    sqlx::query("UPDATE review_cards SET due = now() - interval '1 minute' WHERE exercise_id = $1 AND user_id = $2")
        .bind(a)
        .bind(uuid::Uuid::parse_str(&user).expect("uuid"))
        .execute(app.state.db.write())
        .await
        .expect("due");
    sqlx::query("UPDATE review_cards SET due = now() + interval '3 days' WHERE exercise_id = $1 AND user_id = $2")
        .bind(b)
        .bind(uuid::Uuid::parse_str(&user).expect("uuid"))
        .execute(app.state.db.write())
        .await
        .expect("due");

    let (status, body) = stats(&app, &token, "").await;
    assert_eq!(status, 200, "{body}");
    let history = body["history"].as_array().expect("history");
    assert_eq!(history.len(), 30, "every day of the default window");
    let today = &history[29];
    assert_eq!(today["day"], body["today"]);
    assert_eq!(today["attempts"], 4, "{today}");
    assert_eq!(today["correct"], 2);
    assert_eq!(today["new_items"], 2);
    assert_eq!(today["reviews"], 1);
    assert_eq!(today["reviews_correct"], 0);
    assert!(history[..29].iter().all(|d| d["attempts"] == 0), "{body}");
    assert_eq!(
        body["retention"],
        json!({"days": 30, "reviews": 1, "correct": 0, "rate": 0.0})
    );
    assert_eq!(body["cards"]["total"], 2);
    let by_state: i64 = ["new", "learning", "review", "relearning"]
        .iter()
        .map(|s| body["cards"][s].as_i64().expect("count"))
        .sum();
    assert_eq!(by_state, 2);
    assert_eq!(body["due"]["now"], 1, "{body}");
    assert_eq!(body["due"]["today"], 1);
    assert_eq!(body["due"]["this_week"], 2);
    assert_eq!(body["timezone"], "UTC");

    // A shorter window; a learner with nothing yet.
    let (status, week) = stats(&app, &token, "?days=7").await;
    assert_eq!(status, 200);
    assert_eq!(week["history"].as_array().map(Vec::len), Some(7));
    let (_, fresh) = app.register_member("fresh@example.com").await;
    let (status, empty) = stats(&app, &fresh, "").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["cards"]["total"], 0);
    assert_eq!(empty["retention"]["rate"], Value::Null);

    // Bad input is a clear 4xx.
    for (query, expected) in [
        ("?days=0", 422),
        ("?days=366", 422),
        ("?days=abc", 422),
        ("?weeks=2", 400),
    ] {
        let (status, problem) = stats(&app, &token, query).await;
        assert_eq!(status, expected, "{query}: {problem}");
    }
    let anonymous = app.get("/api/v1/users/me/reviews/stats").await;
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn review_stats_days_follow_the_learners_time_zone() {
    let app = app().await;
    let (_, token) = app.register_member("kiritimati@example.com").await;
    let response = app
        .client
        .patch(app.url("/api/v1/users/me"))
        .bearer_auth(&token)
        .json(&json!({"timezone": "Pacific/Kiritimati"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
    let (id, answer) = exercise(&app, 0).await;
    attempt(&app, &token, id, &answer).await;
    let local_today: chrono::NaiveDate =
        sqlx::query_scalar("SELECT (now() AT TIME ZONE 'Pacific/Kiritimati')::date")
            .fetch_one(app.state.db.write())
            .await
            .expect("today");
    let (status, body) = stats(&app, &token, "?days=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timezone"], "Pacific/Kiritimati");
    assert_eq!(body["today"], local_today.to_string());
    // UTC+14: the attempt is on the learner's today, whatever UTC's date is.
    assert_eq!(body["history"][1]["day"], local_today.to_string());
    assert_eq!(body["history"][1]["attempts"], 1, "{body}");
    app.stop().await;
}
