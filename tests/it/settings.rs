//! GET/PUT /users/me/settings, and /practice/next and attempts honouring them.

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

#[tokio::test]
async fn settings_start_at_the_defaults_and_are_replaced_whole_with_every_bad_field_named() {
    let app = app().await;
    let (_, token) = app.register_member("settings@example.com").await;
    let (status, settings) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/settings",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"daily_new_limit": 20, "desired_retention": 0.9, "tenses": null, "accent_policy": null})
    );
    let wanted = json!({
        "daily_new_limit": 3,
        "desired_retention": 0.95,
        "tenses": ["present_subjunctive", "imperfect_subjunctive_ra"],
        "accent_policy": "strict",
    });
    let (status, stored) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &token,
        Some(wanted.clone()),
    )
    .await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored, wanted);
    let (_, read) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/settings",
        &token,
        None,
    )
    .await;
    assert_eq!(
        read, wanted,
        "read back at once (the cached account was dropped)"
    );

    let (status, problem) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &token,
        Some(json!({"daily_new_limit": 501, "desired_retention": 0.5, "tenses": ["future"], "accent_policy": "lenient"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        [
            "daily_new_limit",
            "desired_retention",
            "tenses",
            "accent_policy"
        ]
    );
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &token,
        Some(json!({"daily_new_limit": 5, "desired_retention": 0.9, "colour": "blue"})),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused");
    let (_, read) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/users/me/settings",
        &token,
        None,
    )
    .await;
    assert_eq!(read, wanted, "a refused update changes nothing");
    // Back to the defaults: nulls mean "all tenses" and "the server's policy".
    let defaults = json!({"daily_new_limit": 20, "desired_retention": 0.9, "tenses": null, "accent_policy": null});
    let (status, stored) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &token,
        Some(defaults.clone()),
    )
    .await;
    assert_eq!((status, stored), (200, defaults));
    app.stop().await;
}

#[tokio::test]
async fn practice_next_offers_only_the_chosen_tenses_and_no_more_new_items_than_the_daily_limit() {
    let app = app().await;
    let (_, token) = app.register_member("limits@example.com").await;
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &token,
        Some(json!({"daily_new_limit": 3, "desired_retention": 0.9, "tenses": ["present_subjunctive"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, next) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/practice/next?limit=10",
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{next}");
    let items = next["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "three new items a day: {next}");
    for item in items {
        let exercise = &item["exercise"];
        if let Some(tense) = exercise.get("tense").and_then(Value::as_str) {
            assert_eq!(tense, "present_subjunctive", "{exercise}");
        }
    }
    // Meet those three: nothing new is left for today.
    for item in items {
        let id = item["exercise"]["id"].as_i64().expect("id");
        let (status, body) = call(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/exercises/{id}/attempts"),
            &token,
            Some(json!({"answer": "zzz"})),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, next) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/practice/next?limit=10",
        &token,
        None,
    )
    .await;
    assert!(
        next["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["reason"] == "review"),
        "no new items past the limit: {next}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_learners_strict_accent_policy_counts_an_accent_slip_wrong_while_the_default_accepts_it()
{
    let app = app().await;
    let (_, strict) = app.register_member("strict@example.com").await;
    let (_, lenient) = app.register_member("lenient@example.com").await;
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        "/api/v1/users/me/settings",
        &strict,
        Some(json!({"daily_new_limit": 20, "desired_retention": 0.9, "accent_policy": "strict"})),
    )
    .await;
    assert_eq!(status, 200);
    // A conjugation whose answer carries an accent, typed without it.
    let (id, answer): (i64, String) = sqlx::query_as(
        "SELECT id, answer FROM exercises
          WHERE kind = 'conjugation' AND answer ~ '[áéíóú]' AND array_length(accepted, 1) = 1
          ORDER BY id LIMIT 1",
    )
    .fetch_one(app.state.db.write())
    .await
    .expect("accented exercise");
    let plain: String = answer
        .chars()
        .map(|c| match c {
            'á' => 'a',
            'é' => 'e',
            'í' => 'i',
            'ó' => 'o',
            'ú' => 'u',
            other => other,
        })
        .collect();
    let path = format!("/api/v1/exercises/{id}/attempts");
    let (_, warned) = call(
        &app,
        reqwest::Method::POST,
        &path,
        &lenient,
        Some(json!({"answer": plain})),
    )
    .await;
    assert_eq!(warned["result"], "accent_mismatch", "{warned}");
    assert_eq!(warned["counts_as_correct"], true);
    let (_, refused) = call(
        &app,
        reqwest::Method::POST,
        &path,
        &strict,
        Some(json!({"answer": plain})),
    )
    .await;
    assert_eq!(refused["result"], "accent_mismatch", "{refused}");
    assert_eq!(
        refused["counts_as_correct"], false,
        "strict for this learner only"
    );
    app.stop().await;
}
