//! `DELETE /users/me` on the real services: no row of the account is left in
//! any table, question counters stay exact (also against a racing vote), and
//! every token of the account stops working.

use std::time::Duration;

use serde_json::{Value, json};

use crate::chaos_proxy::ChaosProxy;
use crate::support::{TestApp, send};

const PASSWORD: &str = "correct horse battery";

/// Patient with Redis: the tests check the leaderboards, which a reply held
/// up past the 250 ms default on a loaded box would leave unwritten.
async fn app() -> TestApp {
    TestApp::builder()
        .without_replica()
        .env("REDIS_RESPONSE_TIMEOUT", "5s")
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await
}

async fn register(app: &TestApp, email: &str) -> (uuid::Uuid, String, String) {
    let response = app
        .client
        .post(app.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Alice"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    (
        body["user"]["id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("uuid"),
        body["access_token"].as_str().expect("token").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

async fn ask(app: &TestApp, token: &str, body: &str) -> String {
    let (status, created) = send(
        app,
        reqwest::Method::POST,
        "/api/v1/cities/1/questions",
        token,
        Some(json!({"body": body})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["question"]["id"].as_str().expect("id").to_owned()
}

/// One right answer to the first conjugation exercise.
async fn practise(app: &TestApp, token: &str) {
    let (exercise, answer): (i64, String) = sqlx::query_as(
        "SELECT id, answer FROM exercises WHERE kind = 'conjugation' ORDER BY id LIMIT 1",
    )
    .fetch_one(app.state.db.write())
    .await
    .expect("exercise");
    ok(
        app,
        reqwest::Method::POST,
        &format!("/api/v1/exercises/{exercise}/attempts"),
        token,
        json!({"answer": answer}),
    )
    .await;
}

/// `DELETE /users/me` with the right password, which must answer 204.
async fn delete_account(app: &TestApp, token: &str) {
    let (status, body) = send(
        app,
        reqwest::Method::DELETE,
        "/api/v1/users/me",
        token,
        Some(json!({"password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 204, "{body}");
}

async fn ok(app: &TestApp, method: reqwest::Method, path: &str, token: &str, body: Value) {
    let (status, response) = send(app, method, path, token, Some(body)).await;
    assert!((200..300).contains(&status), "{path}: {status} {response}");
}

/// Every (table, column) of type uuid in the schema holding `id`.
async fn rows_naming(app: &TestApp, id: uuid::Uuid) -> Vec<String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name, c.column_name
           FROM information_schema.columns c
           JOIN information_schema.tables t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
          WHERE c.table_schema = 'public' AND c.data_type = 'uuid'
            AND t.table_type = 'BASE TABLE'
          ORDER BY 1, 2",
    )
    .fetch_all(app.state.db.write())
    .await
    .expect("columns");
    assert!(columns.len() > 10, "{columns:?}");
    let mut found = Vec::new();
    for (table, column) in columns {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\" WHERE \"{column}\" = $1"
        )))
        .bind(id)
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
        if n > 0 {
            found.push(format!("{table}.{column}: {n}"));
        }
    }
    found
}

async fn counters(app: &TestApp, question: &str) -> (i32, i32, i32, i32, f64) {
    sqlx::query_as(
        "SELECT upvotes, downvotes, flag_count, answer_count, hot FROM questions WHERE id = $1::uuid",
    )
    .bind(question)
    .fetch_one(app.state.db.write())
    .await
    .expect("question")
}

#[tokio::test]
async fn deleting_an_account_leaves_no_row_of_it_anywhere_and_keeps_every_count_exact() {
    let app = app().await;
    let (alice, token, refresh) = register(&app, "alice@example.com").await;
    let (_, bob, _) = register(&app, "bob@example.com").await;

    // Alice practises, earns achievements, sets her settings…
    practise(&app, &token).await;
    ok(&app, reqwest::Method::PUT, "/api/v1/users/me/settings", &token, json!({"daily_new_limit": 5, "desired_retention": 0.85, "tenses": null, "accent_policy": "strict"})).await;
    // …votes on and flags Bob's questions, asks one Bob votes on…
    let bobs = ask(&app, &bob, "Will the library open on Sundays next year?").await;
    let flagged = ask(&app, &bob, "Who pays for the new stadium parking lots?").await;
    ok(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/questions/{bobs}/vote"),
        &token,
        json!({"value": 1}),
    )
    .await;
    ok(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/questions/{flagged}/flags"),
        &token,
        json!({"reason": "spam"}),
    )
    .await;
    let hers = ask(
        &app,
        &token,
        "When will the bike lanes on Elm Street be finished?",
    )
    .await;
    ok(
        &app,
        reqwest::Method::PUT,
        &format!("/api/v1/questions/{hers}/vote"),
        &bob,
        json!({"value": -1}),
    )
    .await;
    // …and, as a candidate, answers one.
    sqlx::query("UPDATE users SET role = 'candidate' WHERE id = $1")
        .bind(alice)
        .execute(app.state.db.write())
        .await
        .expect("role");
    app.state.auth.accounts.forget(alice).await;
    let contest = app.contest_in(1).await;
    let profile = app.profile_for(alice, contest).await;
    let candidate = app
        .state
        .auth
        .jwt
        .issue(alice, "candidate")
        .expect("token")
        .token;
    ok(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/questions/{bobs}/answers"),
        &candidate,
        json!({"body": "Yes, from March."}),
    )
    .await;
    assert_eq!(counters(&app, &bobs).await.0, 1);
    assert_eq!(counters(&app, &bobs).await.3, 1);
    assert_eq!(counters(&app, &flagged).await.2, 1);
    assert!(!rows_naming(&app, alice).await.is_empty());

    // A wrong password deletes nothing.
    let (status, problem) = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/users/me",
        &candidate,
        Some(json!({"password": "not it at all"})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let (status, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/api/v1/users/me",
        &candidate,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 422);
    assert!(!rows_naming(&app, alice).await.is_empty());

    delete_account(&app, &candidate).await;

    assert_eq!(rows_naming(&app, alice).await, Vec::<String>::new());
    // Counters lost exactly what she gave; hot follows the score.
    let (up, down, flags, answers, hot) = counters(&app, &bobs).await;
    assert_eq!((up, down, flags, answers), (0, 0, 0, 0));
    let created =
        refbackend::http::questions::created_at_of(bobs.parse().expect("uuid")).expect("v7");
    assert!((hot - refbackend::civic::ranking::hot(0, created)).abs() < 1e-9);
    assert_eq!(counters(&app, &flagged).await.2, 0);
    // Her candidate profile stays on the ballot, unlinked.
    let (status, kept) = app.get_json(&format!("/api/v1/candidates/{profile}")).await;
    assert_eq!(status, 200);
    assert_eq!(kept["user_id"], Value::Null, "{kept}");
    // Her question stays, asked by "Deleted user", with Bob's vote.
    let (status, question) = app.get_json(&format!("/api/v1/questions/{hers}")).await;
    assert_eq!(status, 200);
    assert_eq!(question["author_name"], "Deleted user", "{question}");
    assert_eq!(question["score"], -1);

    // Every token is dead; the email can be used again.
    for t in [&token, &candidate] {
        let (status, _) = send(&app, reqwest::Method::GET, "/api/v1/users/me", t, None).await;
        assert_eq!(status, 401);
    }
    let refreshed = app
        .client
        .post(app.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 401);
    let login = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 401);
    register(&app, "alice@example.com").await;
    // Off the leaderboards in Redis.
    assert_eq!(all_time_score(&app, alice).await, None);
    app.stop().await;
}

/// `user`'s score on the all-time leaderboard in Redis, if they are on it.
async fn all_time_score(app: &TestApp, user: uuid::Uuid) -> Option<f64> {
    let mut redis = redis::Client::open(crate::services::services().redis_url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("ZSCORE")
        .arg(format!("{}:lb:all", app.db.name))
        .arg(user.to_string())
        .query_async(&mut redis)
        .await
        .expect("zscore")
}

#[tokio::test]
async fn deleting_a_candidate_removes_their_rebuttals_and_the_rebuttals_of_their_answers() {
    let app = app().await;
    let (alice, _, _) = register(&app, "candidate-alice@example.com").await;
    let (_, bob, _) = register(&app, "bob@example.com").await;
    sqlx::query("UPDATE users SET role = 'candidate' WHERE id = $1")
        .bind(alice)
        .execute(app.state.db.write())
        .await
        .expect("role");
    app.state.auth.accounts.forget(alice).await;
    let alice_token = app
        .state
        .auth
        .jwt
        .issue(alice, "candidate")
        .expect("token")
        .token;
    let contest = app.contest_in(1).await;
    let profile = app.profile_for(alice, contest).await;
    let (carol, carol_token) = app.users_with_role(1, "candidate").await.remove(0);
    app.profile_for(carol, contest).await;
    let question = ask(&app, &bob, "Will the new tram line reach the airport?").await;
    let answer = |token: String, body: &'static str| {
        let (app, question) = (&app, &question);
        async move {
            let (status, answer) = send(
                app,
                reqwest::Method::POST,
                &format!("/api/v1/questions/{question}/answers"),
                &token,
                Some(json!({"body": body})),
            )
            .await;
            assert_eq!(status, 201, "{answer}");
            answer["id"].as_str().expect("id").to_owned()
        }
    };
    let alices = answer(alice_token.clone(), "Yes, by 2030.").await;
    let carols = answer(carol_token.clone(), "No, it cannot.").await;
    // Each rebuts the other.
    for (token, target) in [(&alice_token, &carols), (&carol_token, &alices)] {
        ok(
            &app,
            reqwest::Method::POST,
            &format!("/api/v1/answers/{target}/rebuttals"),
            token,
            json!({"body": "I disagree."}),
        )
        .await;
    }
    assert_eq!(counters(&app, &question).await.3, 2);
    let (_, linked) = app.get_json(&format!("/api/v1/candidates/{profile}")).await;
    assert_eq!(linked["user_id"], alice.to_string());

    delete_account(&app, &alice_token).await;

    assert_eq!(rows_naming(&app, alice).await, Vec::<String>::new());
    let rebuttals: i64 = sqlx::query_scalar("SELECT count(*) FROM rebuttals")
        .fetch_one(app.state.db.write())
        .await
        .expect("count");
    assert_eq!(rebuttals, 0, "hers, and Carol's of her answer");
    assert_eq!(counters(&app, &question).await.3, 1);
    let (_, answers) = app
        .get_json(&format!("/api/v1/questions/{question}/answers"))
        .await;
    assert_eq!(answers["items"][0]["id"], carols.as_str());
    assert_eq!(answers["items"][0]["rebuttal_count"], 0);
    // Her profile stays on the ballot, unlinked (and the cached ballot
    // shows it at once).
    let (_, kept) = app.get_json(&format!("/api/v1/candidates/{profile}")).await;
    assert_eq!(kept["user_id"], Value::Null, "{kept}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_racing_the_deletion_leave_the_counters_equal_to_the_votes_left() {
    let app = app().await;
    let (_, token, _) = register(&app, "racer@example.com").await;
    let (_, bob, _) = register(&app, "bob@example.com").await;
    let mut questions = Vec::new();
    for n in 0..6 {
        questions.push(
            ask(
                &app,
                &bob,
                &format!("Question number {n} about the city budget?"),
            )
            .await,
        );
    }
    for q in &questions[..3] {
        ok(
            &app,
            reqwest::Method::PUT,
            &format!("/api/v1/questions/{q}/vote"),
            &token,
            json!({"value": 1}),
        )
        .await;
    }
    let voting: Vec<_> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let (client, url, token) = (
                app.client.clone(),
                app.url(&format!("/api/v1/questions/{q}/vote")),
                token.clone(),
            );
            tokio::spawn(async move {
                let request = if i % 2 == 0 {
                    client.put(url).json(&json!({"value": -1}))
                } else {
                    client.delete(url)
                };
                let response = request.bearer_auth(token).send().await.expect("vote");
                response.status().as_u16()
            })
        })
        .collect();
    delete_account(&app, &token).await;
    for vote in voting {
        let status = vote.await.expect("task");
        assert!(status < 500, "a racing vote got {status}");
    }
    for q in &questions {
        let (up, down, ..) = counters(&app, q).await;
        let (ups, downs): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value = -1)
               FROM question_votes WHERE question_id = $1::uuid",
        )
        .bind(q)
        .fetch_one(app.state.db.write())
        .await
        .expect("votes");
        assert_eq!(
            (i64::from(up), i64::from(down)),
            (ups, downs),
            "question {q}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_deletion_interrupted_after_deactivation_is_finished_by_maintenance_and_cannot_be_undone()
{
    let app = app().await;
    let (alice, token, _) = register(&app, "interrupted@example.com").await;
    practise(&app, &token).await;
    // The request died right after its first step (deactivate and mark).
    sqlx::query(
        "UPDATE users SET is_active = false, deleting_since = now() - interval '2 minutes'
          WHERE id = $1",
    )
    .bind(alice)
    .execute(app.state.db.write())
    .await
    .expect("mark");
    app.state.auth.accounts.forget(alice).await;
    // An administrator cannot bring it back meanwhile.
    let admin = app.users_with_role(1, "admin").await;
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/admin/users/{alice}/activate"),
        &admin[0].1,
        None,
    )
    .await;
    assert!(status >= 400, "{status}");
    let active: bool = sqlx::query_scalar("SELECT is_active FROM users WHERE id = $1")
        .bind(alice)
        .fetch_one(app.state.db.write())
        .await
        .expect("active");
    assert!(!active);
    let (status, _) = send(&app, reqwest::Method::GET, "/api/v1/users/me", &token, None).await;
    assert_eq!(status, 401);

    assert!(all_time_score(&app, alice).await.is_some());

    refbackend::maintenance::run_once(&app.state).await;
    assert_eq!(rows_naming(&app, alice).await, Vec::<String>::new());
    // What the request would have done after its rows went, maintenance does
    // too: the learner is off the leaderboards.
    assert_eq!(all_time_score(&app, alice).await, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_deleted_while_redis_is_unreachable_leaves_the_leaderboards_once_it_answers() {
    // The app reaches the shared Redis through a proxy that can cut it off;
    // the test reads the boards directly, so their entries outlive the cut.
    let proxy = ChaosProxy::to_port(crate::services::services().redis_port).await;
    let app = TestApp::builder()
        .without_replica()
        .env("REDIS_URL", &format!("redis://{}", proxy.addr()))
        .env("REDIS_RESPONSE_TIMEOUT", "5s")
        .env("RATE_LIMIT_ATTEMPTS_USER", "100000/1m")
        .start()
        .await;
    let (alice, alice_token, _) = register(&app, "cut-off@example.com").await;
    let (_, bob_token, _) = register(&app, "still-here@example.com").await;
    practise(&app, &alice_token).await;
    assert!(all_time_score(&app, alice).await.is_some());

    proxy.cut();
    delete_account(&app, &alice_token).await;
    assert_eq!(rows_naming(&app, alice).await, Vec::<String>::new());
    assert!(
        all_time_score(&app, alice).await.is_some(),
        "Redis was cut off: the entry is still there"
    );

    proxy.heal();
    // Nothing in Postgres names her any more, so only the instance's memory
    // can take her off; it does once Redis answers again (here, when another
    // learner's attempt reaches it, after the circuit lets it try).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while all_time_score(&app, alice).await.is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the deleted learner is still on the all-time board after Redis came back"
        );
        practise(&app, &bob_token).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}
