//! GET /users/me/export on the real services.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::TestApp;

#[tokio::test]
async fn the_export_holds_the_learners_profile_settings_cards_and_every_attempt_in_order_across_pages()
 {
    let app = TestApp::builder()
        .without_replica()
        .unseeded()
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .env("RATE_LIMIT_EXPORTS_USER", "2/1h")
        .start()
        .await;
    let (user, token) = app.register_member("export@example.com").await;
    let (_, other) = app.register_member("not-me@example.com").await;
    let user_id = uuid::Uuid::parse_str(&user).expect("uuid");
    let settings = json!({"daily_new_limit": 7, "desired_retention": 0.85, "tenses": null, "accent_policy": "strict"});
    let response = app
        .client
        .put(app.url("/api/v1/users/me/settings"))
        .bearer_auth(&token)
        .json(&settings)
        .send()
        .await
        .expect("settings");
    assert_eq!(response.status(), 200);
    let exercises: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 2",
    )
    .fetch_all(app.state.db.write())
    .await
    .expect("exercises");
    for (token, (id, answer)) in [
        (&token, &exercises[0]),
        (&token, &exercises[1]),
        (&other, &exercises[0]),
    ] {
        let response = app
            .client
            .post(app.url(&format!("/api/v1/exercises/{id}/attempts")))
            .bearer_auth(token)
            .json(&json!({"answer": answer}))
            .send()
            .await
            .expect("attempt");
        assert_eq!(response.status(), 201);
    }
    // A long history, past two pages of the stream.
    sqlx::query(
        "INSERT INTO attempts (user_id, created_at, id, exercise_id, answer, outcome,
                               counts_as_correct, xp, was_review)
         SELECT $1, now() - (g || ' minutes')::interval, gen_random_uuid(), $2, 'x',
                'incorrect', false, 0, true
           FROM generate_series(1, 2500) g",
    )
    .bind(user_id)
    .bind(exercises[0].0)
    .execute(app.state.db.write())
    .await
    .expect("history");

    let response = app
        .client
        .get(app.url("/api/v1/users/me/export"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .expect("ascii")
            .starts_with("attachment"),
    );
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    let export: Value = response.json().await.expect("one valid JSON document");
    assert_eq!(export["profile"]["email"], "export@example.com");
    assert_eq!(export["settings"], settings);
    assert_eq!(export["progress"]["attempts"], 2);
    assert_eq!(export["review_cards"].as_array().map(Vec::len), Some(2));
    assert!(!export["weekly_xp"].as_array().expect("weeks").is_empty());
    let attempts = export["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        2502,
        "every attempt, the other learner's none"
    );
    let ids: HashSet<&str> = attempts
        .iter()
        .map(|a| a["attempt_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), attempts.len(), "no attempt twice across pages");
    let times: Vec<&str> = attempts
        .iter()
        .map(|a| a["created_at"].as_str().expect("at"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(times, sorted, "oldest first");
    assert!(
        export.get("password_hash").is_none() && export["profile"].get("password_hash").is_none()
    );

    // Limited per learner; compressed on request like any large body.
    let again = app
        .client
        .get(app.url("/api/v1/users/me/export"))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("export");
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["content-encoding"], "gzip");
    let compressed = again.bytes().await.expect("the whole compressed body");
    assert!(compressed.len() > 1000);
    let limited = app
        .client
        .get(app.url("/api/v1/users/me/export"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("export");
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let anonymous = app.get("/api/v1/users/me/export").await;
    assert_eq!(anonymous.status(), 401);
    app.stop().await;
}
