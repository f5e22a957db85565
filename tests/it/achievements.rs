//! Achievements on the real services: awarded in the attempt's transaction,
//! once, whatever retries and concurrent attempts do; listed with progress.

use serde_json::{Value, json};

use crate::support::{TestApp, send as call};

async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .unseeded()
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await
}

/// `n` right answers to conjugation exercises of `tense`.
async fn right_answers(app: &TestApp, tense: &str, n: i64) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' AND tense = $1
          ORDER BY id LIMIT $2",
    )
    .bind(tense)
    .bind(n)
    .fetch_all(app.state.db.write())
    .await
    .expect("exercises")
}

async fn attempt(app: &TestApp, token: &str, id: i64, answer: &str, key: Option<&str>) -> Value {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/exercises/{id}/attempts")))
        .bearer_auth(token)
        .json(&json!({"answer": answer}));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("attempt");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 201, "{body}");
    body
}

fn earned_ids(attempt: &Value) -> Vec<String> {
    attempt["achievements"]
        .as_array()
        .expect("achievements")
        .iter()
        .map(|a| a["id"].as_str().expect("id").to_owned())
        .collect()
}

async fn stored(app: &TestApp, user: &str) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT achievement, count(*) FROM user_achievements WHERE user_id = $1::uuid
          GROUP BY achievement ORDER BY achievement",
    )
    .bind(user)
    .fetch_all(app.state.db.write())
    .await
    .expect("stored")
}

async fn list(app: &TestApp, token: &str) -> Value {
    let (status, body) = call(
        app,
        reqwest::Method::GET,
        "/api/v1/users/me/achievements",
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn item<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list}"))
}

#[tokio::test]
async fn the_first_right_answer_earns_the_first_achievements_once_and_the_list_shows_progress() {
    let app = app().await;
    let (user, token) = app.register_member("first@example.com").await;
    let before = list(&app, &token).await;
    assert_eq!(before["earned"], 0);
    assert_eq!(item(&before, "first_attempt")["progress"], 0);
    assert!(item(&before, "first_attempt")["earned_at"].is_null());

    let exercises = right_answers(&app, "present_subjunctive", 2).await;
    let first = attempt(&app, &token, exercises[0].0, &exercises[0].1, None).await;
    assert_eq!(earned_ids(&first), ["first_attempt", "first_correct"]);
    let second = attempt(&app, &token, exercises[1].0, &exercises[1].1, None).await;
    assert!(earned_ids(&second).is_empty(), "{second}");

    let after = list(&app, &token).await;
    assert_eq!(after["earned"], 2);
    assert_eq!(
        after["total"],
        after["items"].as_array().map(Vec::len).unwrap_or(0)
    );
    assert!(item(&after, "first_correct")["earned_at"].is_string());
    let centurion = item(&after, "attempts_100");
    assert_eq!(
        (centurion["progress"].as_i64(), centurion["goal"].as_i64()),
        (Some(2), Some(100))
    );
    assert_eq!(item(&after, "present_subjunctive_100")["progress"], 2);
    assert!(
        !after["next"]
            .as_array()
            .expect("next")
            .iter()
            .any(|n| n == "first_attempt"),
        "earned ones are not next: {after}"
    );
    assert_eq!(
        stored(&app, &user).await,
        [
            ("first_attempt".to_owned(), 1),
            ("first_correct".to_owned(), 1)
        ]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_and_concurrent_attempts_award_each_achievement_once() {
    let app = app().await;
    let (user, token) = app.register_member("racer@example.com").await;
    let exercises = right_answers(&app, "present_subjunctive", 8).await;

    // Eight copies of one request (one Idempotency-Key) at once: one attempt
    // is recorded and every copy answers with its response.
    let (id, answer) = exercises[0].clone();
    let retries: Vec<_> = (0..8)
        .map(|_| {
            let (app_client, url, token, answer) = (
                app.client.clone(),
                app.url(&format!("/api/v1/exercises/{id}/attempts")),
                token.clone(),
                answer.clone(),
            );
            tokio::spawn(async move {
                let response = app_client
                    .post(url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", "first-try")
                    .json(&json!({"answer": answer}))
                    .send()
                    .await
                    .expect("attempt");
                (
                    response.status().as_u16(),
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for retry in retries {
        let (status, body) = retry.await.expect("task");
        // A copy that arrives while the first is in flight is told to retry.
        assert!(status == 201 || status == 409, "{status} {body}");
        if status == 201 {
            bodies.push(body);
        }
    }
    assert!(!bodies.is_empty());
    for body in &bodies {
        assert_eq!(body["attempt_id"], bodies[0]["attempt_id"], "one attempt");
        assert_eq!(earned_ids(body), ["first_attempt", "first_correct"]);
    }

    // Different attempts at once: the one that crosses a goal names it.
    let racing: Vec<_> = exercises[1..]
        .iter()
        .map(|(id, answer)| {
            let (app_client, url, token, answer) = (
                app.client.clone(),
                app.url(&format!("/api/v1/exercises/{id}/attempts")),
                token.clone(),
                answer.clone(),
            );
            tokio::spawn(async move {
                app_client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"answer": answer}))
                    .send()
                    .await
                    .expect("attempt")
                    .json::<Value>()
                    .await
                    .expect("json")
            })
        })
        .collect();
    for body in futures_util::future::join_all(racing).await {
        let body = body.expect("task");
        assert!(earned_ids(&body).is_empty(), "nothing new: {body}");
    }
    assert_eq!(
        stored(&app, &user).await,
        [
            ("first_attempt".to_owned(), 1),
            ("first_correct".to_owned(), 1)
        ]
    );
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM attempts WHERE user_id = $1::uuid")
            .bind(&user)
            .fetch_one(app.state.db.write())
            .await
            .expect("attempts");
    assert_eq!(attempts, 8);
    app.stop().await;
}

#[tokio::test]
async fn the_hundredth_right_answer_in_a_tense_earns_its_achievement() {
    let app = app().await;
    let (user, token) = app.register_member("tense@example.com").await;
    let exercises = right_answers(&app, "present_subjunctive", 2).await;
    attempt(&app, &token, exercises[0].0, &exercises[0].1, None).await;
    // 98 more right answers in the tense, as the aggregates would hold them.
    sqlx::query(
        "UPDATE user_skill_stats SET attempts = attempts + 98, correct = correct + 98
          WHERE user_id = $1::uuid AND dimension = 'tense' AND key = 'present_subjunctive'",
    )
    .bind(&user)
    .execute(app.state.db.write())
    .await
    .expect("stats");
    let hundredth = attempt(&app, &token, exercises[1].0, &exercises[1].1, None).await;
    assert_eq!(earned_ids(&hundredth), ["present_subjunctive_100"]);
    let wrong = attempt(&app, &token, exercises[1].0, "zzz", None).await;
    assert!(earned_ids(&wrong).is_empty());
    let listed = list(&app, &token).await;
    assert_eq!(item(&listed, "present_subjunctive_100")["progress"], 100);
    assert!(item(&listed, "present_subjunctive_100")["earned_at"].is_string());
    assert_eq!(item(&listed, "imperfect_subjunctive_100")["progress"], 0);
    app.stop().await;
}

#[tokio::test]
async fn a_goal_passed_before_its_achievement_was_recorded_is_awarded_when_listed() {
    let app = app().await;
    let (user, token) = app.register_member("veteran@example.com").await;
    let exercises = right_answers(&app, "present_subjunctive", 1).await;
    attempt(&app, &token, exercises[0].0, &exercises[0].1, None).await;
    // As if the learner had passed 100 attempts and a 7-day streak before
    // those achievements were defined.
    sqlx::query(
        "UPDATE user_progress SET attempts = 150, longest_streak = 9 WHERE user_id = $1::uuid",
    )
    .bind(&user)
    .execute(app.state.db.write())
    .await
    .expect("progress");
    let listed = list(&app, &token).await;
    for id in ["attempts_100", "streak_7"] {
        assert!(item(&listed, id)["earned_at"].is_string(), "{id}: {listed}");
    }
    assert_eq!(item(&listed, "streak_30")["progress"], 9);
    assert_eq!(listed["earned"], 4);
    assert_eq!(list(&app, &token).await["earned"], 4, "recorded once");
    assert_eq!(stored(&app, &user).await.len(), 4);
    app.stop().await;
}
